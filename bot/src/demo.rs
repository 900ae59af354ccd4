//! `vouch demo`: Vouch against the Discord simulator, fed sample alerts, with a transcript of
//! the triage channel as people click. For a look at the whole flow without a Discord server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use discord_simulator::{Simulator, SimulatorOptions, StoredMessage};
use serde_json::{json, Value};

const TOKEN: &str = "demo-discord-token";
const INGEST_TOKEN: &str = "demo-ingest-token";
const TRIAGE: u64 = 800_000_000_000_000_001;
const SOC_ROLE: u64 = 800_000_000_000_000_010;
const ONCALL_ROLE: u64 = 800_000_000_000_000_011;
const WAIT: Duration = Duration::from_secs(20);

const PEOPLE: [(u64, &str, &str); 5] = [
    (100_000_000_000_000_001, "alice", "Alice Martin"),
    (100_000_000_000_000_002, "bob", "Bob Stone"),
    (100_000_000_000_000_003, "carol", "Carol Diaz"),
    (100_000_000_000_000_004, "sam", "Sam Okafor"),
    (100_000_000_000_000_666, "mallory", "Mallory (not in the directory)"),
];

struct DemoEnvironment;

impl vouch_config::Environment for DemoEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "DEMO_DISCORD_TOKEN" => Some(TOKEN.to_string()),
            "DEMO_INGEST_TOKEN" => Some(INGEST_TOKEN.to_string()),
            _ => None,
        }
    }
}

pub fn main() -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(demo())?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what appeared in the simulated guild since the last call.
struct Transcript {
    seen: BTreeMap<u64, u32>,
    names: BTreeMap<String, String>,
}

impl Transcript {
    fn readable(&self, text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars().peekable();
        while let Some(character) = chars.next() {
            match character {
                '\\' if chars.peek().is_some_and(|next| next.is_ascii_punctuation()) => {}
                '\u{200b}' => {}
                character => out.push(character),
            }
        }
        for (mention, name) in &self.names {
            out = out.replace(mention, name);
        }
        out
    }

    fn print_new(&mut self, simulator: &Simulator) {
        let messages: Vec<StoredMessage> = simulator.with_world(|world| world.messages.clone());
        for message in messages {
            let previous = self.seen.insert(message.id, message.edits);
            if previous == Some(message.edits) {
                continue;
            }
            let place = if message.channel_id == TRIAGE { "#triage".to_string() } else { "  thread".to_string() };
            let private =
                message.ephemeral_for.map(|user| format!(" (only {} sees this)", self.readable(&format!("<@{user}>"))));
            if let Some(embed) = message.json["embeds"].as_array().and_then(|embeds| embeds.first()) {
                let verb = if previous.is_some() { "card updated" } else { "card" };
                println!("  {place}  [{verb}] {}", self.readable(embed["title"].as_str().unwrap_or("")));
                println!("            {}", self.readable(embed["description"].as_str().unwrap_or("")));
                for field in embed["fields"].as_array().into_iter().flatten() {
                    let name = field["name"].as_str().unwrap_or("");
                    if ["Known harmless scenarios", "Concerns", "Alerts"].contains(&name) && previous.is_none()
                        || name == "Alerts"
                    {
                        for line in self.readable(field["value"].as_str().unwrap_or("")).lines().take(4) {
                            println!("            {name}: {line}");
                        }
                    }
                }
            } else {
                println!("  {place}  {}{}", self.readable(message.content()), private.unwrap_or_default());
            }
            let live: Vec<String> = message
                .buttons()
                .into_iter()
                .filter(|(_, _, disabled)| !disabled)
                .map(|(label, _, _)| format!("[{label}]"))
                .collect();
            if !live.is_empty() && previous.is_none() {
                println!("            {}", live.join(" "));
            }
        }
    }
}

fn find_button(message: &StoredMessage, label: &str) -> anyhow::Result<String> {
    message
        .buttons()
        .into_iter()
        .find(|(text, _, _)| text == label)
        .map(|(_, id, _)| id)
        .with_context(|| format!("no {label} button"))
}

async fn demo() -> anyhow::Result<()> {
    let folder = std::env::temp_dir().join(format!("vouch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&folder)?;
    let result = run(&folder).await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn run(folder: &std::path::Path) -> anyhow::Result<()> {
    let spec = discord_simulator::bundled_spec_path();
    let simulator = Simulator::start(SimulatorOptions { tls: true, spec_path: &spec, bot_token: TOKEN })
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot start the Discord simulator (run the demo from a clone of the repository)")?;
    simulator.add_text_channel(TRIAGE, "triage");
    let mut names = BTreeMap::new();
    for (id, _, name) in PEOPLE {
        let roles: Vec<u64> = if name.starts_with("Sam") { vec![SOC_ROLE] } else { Vec::new() };
        simulator.add_member(id, name, &roles);
        names.insert(format!("<@{id}>"), format!("@{name}"));
    }
    names.insert(format!("<@&{SOC_ROLE}>"), "@SOC".to_string());
    names.insert(format!("<@&{ONCALL_ROLE}>"), "@on-call".to_string());
    let mut transcript = Transcript { seen: BTreeMap::new(), names };

    std::fs::write(folder.join("directory.toml"), include_str!("../../config/directory.example.toml"))?;
    std::fs::write(folder.join("ca.pem"), simulator.ca_pem().unwrap_or_default())?;
    let settings = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = {{ env = \"DEMO_INGEST_TOKEN\" }}\n\n[storage]\ndata_dir = \"data\"\n\n\
         [directory]\nfile = \"directory.toml\"\n\n[discord]\napi_base = \"{}\"\nca_file = \"ca.pem\"\n\
         token = {{ env = \"DEMO_DISCORD_TOKEN\" }}\nguild_id = \"{}\"\ntriage_channel_id = \"{TRIAGE}\"\n\
         soc_role_id = \"{SOC_ROLE}\"\noncall_role_id = \"{ONCALL_ROLE}\"\n",
        simulator.api_base(),
        discord_simulator::GUILD_ID
    );
    let config_path: PathBuf = folder.join("vouch.toml");
    std::fs::write(&config_path, settings)?;
    let config = vouch_config::load(&config_path, &DemoEnvironment).map_err(|error| anyhow::anyhow!("{error}"))?;
    let running = crate::app::start(config).await?;
    let base = format!("http://{}", running.address);
    let client = reqwest::Client::new();
    println!("Vouch demo: Vouch is talking to a simulated Discord guild over HTTPS (serenity, rate limiter on).\n");

    let send = |alert: Value| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let response = client
                .post(format!("{base}/api/v1/alerts"))
                .bearer_auth(INGEST_TOKEN)
                .header("content-type", "application/json")
                .body(alert.to_string())
                .send()
                .await?;
            let body: Value = response.json().await?;
            anyhow::Ok(body)
        }
    };
    let wait_card_and_ping = |case_id: String, mention: Option<u64>| {
        let simulator = &simulator;
        async move {
            let card = simulator
                .wait_for("the card", WAIT, |world| {
                    world
                        .channel_messages(TRIAGE)
                        .into_iter()
                        .find(|message| {
                            message.json["embeds"][0]["title"]
                                .as_str()
                                .is_some_and(|title| title.starts_with(&format!("{case_id} ")))
                        })
                        .cloned()
                })
                .await;
            let needle = match mention {
                Some(user) => format!("<@{user}>"),
                None => format!("<@&{SOC_ROLE}>"),
            };
            let ping = simulator
                .wait_for("the ping", WAIT, |world| {
                    world
                        .channel_messages(card.id)
                        .into_iter()
                        .find(|message| message.content().contains(&needle))
                        .cloned()
                })
                .await;
            (card, ping)
        }
    };

    println!("1. A SIEM reports: alice RDPs from her workstation WS-17 to Carol's workstation WS-42.");
    let body = send(json!({"vouch_alert": 1, "id": "demo-1", "product": "SIEM", "source": {"hostname": "WS-17"},
        "target": {"hostname": "WS-42"}, "account": "CORP\\alice", "protocol": "rdp", "logon_type": 10,
        "program": {"path": "C:\\Windows\\System32\\mstsc.exe"}, "mitre": ["T1021.001"], "severity": "medium",
        "rule": {"name": "RDP between workstations"}}))
    .await?;
    let first = body["case_id"].as_str().unwrap_or_default().to_string();
    let (first_card, ping) = wait_card_and_ping(first.clone(), Some(PEOPLE[2].0)).await;
    transcript.print_new(&simulator);
    println!("\n2. Carol, who owns WS-42, clicks Expected.");
    let clicked = simulator.click(PEOPLE[2].0, ping.id, &find_button(&ping, "Expected")?);
    simulator.response(clicked, WAIT).await;
    simulator
        .wait_for("the card to close", WAIT, |world| {
            world
                .message(first_card.id)
                .filter(|card| {
                    card.json["embeds"][0]["description"].as_str().is_some_and(|text| text.starts_with("Closed"))
                })
                .map(|_| ())
        })
        .await;
    transcript.print_new(&simulator);

    println!("\n3. The EDR reports: the SCCM service account runs mstsc.exe from SCCM-01 to SRV-DB-01.");
    let body = send(json!({"vouch_alert": 1, "id": "demo-2", "product": "EDR", "source": {"hostname": "SCCM-01"},
        "target": {"hostname": "SRV-DB-01"}, "account": "CORP\\svc-sccm", "protocol": "rdp",
        "program": {"path": "C:\\Windows\\System32\\mstsc.exe", "command_line": "mstsc.exe /v:SRV-DB-01"},
        "mitre": ["T1021.001"], "severity": "high", "rule": {"name": "Service account interactive logon"}}))
    .await?;
    let second = body["case_id"].as_str().unwrap_or_default().to_string();
    let (card, ping) = wait_card_and_ping(second.clone(), Some(PEOPLE[1].0)).await;
    transcript.print_new(&simulator);
    println!("\n4. Mallory, who was not asked, tries to vouch for it.");
    let refused = simulator.click(PEOPLE[4].0, ping.id, &find_button(&ping, "Expected")?);
    simulator.response(refused, WAIT).await;
    transcript.print_new(&simulator);
    println!("\n5. Bob, who owns SRV-DB-01, clicks Not expected: the case is escalated and on-call paged.");
    let clicked = simulator.click(PEOPLE[1].0, ping.id, &find_button(&ping, "Not expected")?);
    simulator.response(clicked, WAIT).await;
    simulator
        .wait_for("on-call to be paged", WAIT, |world| {
            world
                .channel_messages(card.id)
                .into_iter()
                .any(|message| message.content().contains(&format!("<@&{ONCALL_ROLE}>")))
                .then_some(())
        })
        .await;
    transcript.print_new(&simulator);
    println!("\n6. Sam (SOC) clicks Isolate target on the card.");
    let escalated = simulator
        .wait_for("the card to offer isolation", WAIT, |world| {
            world.message(card.id).filter(|card| find_button(card, "Isolate target").is_ok()).cloned()
        })
        .await;
    let clicked = simulator.click(PEOPLE[3].0, card.id, &find_button(&escalated, "Isolate target")?);
    simulator.response(clicked, WAIT).await;
    simulator
        .wait_for("the isolation notice", WAIT, |world| {
            world
                .channel_messages(card.id)
                .into_iter()
                .any(|message| message.content().contains("Isolation of"))
                .then_some(())
        })
        .await;
    transcript.print_new(&simulator);

    println!("\n7. A raw Windows event arrives (PsExec-style service install, from the OTRF lab capture).");
    let event: Value = include_str!("../../tests/data/otrf/empire_psexec_dcerpc_tcp_svcctl.jsonl")
        .lines()
        .nth(19)
        .and_then(|line| serde_json::from_str(line).ok())
        .context("the sample event")?;
    let body = send(event).await?;
    let third = body["case_id"].as_str().unwrap_or_default().to_string();
    wait_card_and_ping(third, None).await;
    transcript.print_new(&simulator);

    println!("\n7b. Alice logs on at WS-17's own keyboard: a local logon, answered without a case.");
    let body = send(json!({"EventID": 4624, "Hostname": "WS-17", "Channel": "Security", "LogonType": 2,
        "TargetUserName": "alice", "TargetDomainName": "CORP", "IpAddress": "127.0.0.1"}))
    .await?;
    println!("  {} ({}): {}", body["status"], body["why"], body["reason"]);

    println!("\n8. The escalated movement goes on: five more alerts of it join its open case.");
    for index in 0..5 {
        send(json!({"vouch_alert": 1, "id": format!("demo-2-{index}"), "source": {"hostname": "SCCM-01"},
            "target": {"hostname": "SRV-DB-01"}, "account": "CORP\\svc-sccm", "protocol": "rdp", "mitre": ["T1021.001"]}))
        .await?;
    }
    let case: Value =
        client.get(format!("{base}/api/v1/cases/{second}")).bearer_auth(INGEST_TOKEN).send().await?.json().await?;
    println!("  {second}: {} alerts, state {}", case["alert_count"], case["state"]);
    let violations = simulator.violations();
    println!(
        "\nEvery click above is in the audit log. Requests the bot sent that Discord's API description rejects: {}.",
        violations.len()
    );
    running.stop().await?;
    anyhow::ensure!(violations.is_empty(), "the simulator rejected requests: {violations:#?}");
    Ok(())
}
