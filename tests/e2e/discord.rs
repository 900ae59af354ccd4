//! The triage conversation: the real `vouch` binary, through serenity with its rate limiter
//! on, against the Discord simulator over HTTPS on 127.0.0.1. Every request body the bot sends
//! is checked against Discord's official API description; each test ends by asserting that no
//! request was rejected.

use std::time::Duration;

use discord_simulator::{Simulator, StoredMessage, World};
use serde_json::{json, Value};

use crate::support::{
    card, get_json, native_alert, post_alert, Running, Workspace, DISCORD_TOKEN, ONCALL_ROLE, SOC_ROLE, TRIAGE_CHANNEL,
};

const ALICE: u64 = 100_000_000_000_000_001;
const BOB: u64 = 100_000_000_000_000_002;
const CAROL: u64 = 100_000_000_000_000_003;
const SAM: u64 = 100_000_000_000_000_004;
const DANA: u64 = 100_000_000_000_000_005;
const MALLORY: u64 = 100_000_000_000_000_777;
const WAIT: Duration = Duration::from_secs(30);

async fn simulator(tls: bool) -> Simulator {
    let members: [(u64, &str, &[u64]); 6] = [
        (ALICE, "alice", &[]),
        (BOB, "bob", &[]),
        (CAROL, "carol", &[]),
        (DANA, "dana", &[]),
        (SAM, "sam", &[SOC_ROLE]),
        (MALLORY, "mallory", &[]),
    ];
    crate::support::guild(tls, &members).await
}

/// The newest message in the card's thread that mentions `user`.
pub(crate) async fn ping_for(simulator: &Simulator, card: &StoredMessage, user: u64) -> StoredMessage {
    let mention = format!("<@{user}>");
    let thread = card.id;
    simulator
        .wait_for(&format!("a ping for {user} in thread {thread}"), WAIT, |world| {
            world
                .channel_messages(thread)
                .into_iter()
                .rev()
                .find(|message| message.content().contains(&mention))
                .cloned()
        })
        .await
}

/// Cards in the triage channel (ephemeral answers to clicks are not cards).
fn cards_in(world: &World) -> usize {
    world.channel_messages(TRIAGE_CHANNEL).into_iter().filter(|message| message.ephemeral_for.is_none()).count()
}

pub(crate) fn button(message: &StoredMessage, label: &str) -> String {
    message
        .buttons()
        .into_iter()
        .find(|(text, _, _)| text.trim_start_matches("✓ ") == label)
        .map(|(_, id, _)| id)
        .unwrap_or_else(|| panic!("no button {label:?} on {:?}", message.buttons()))
}

fn assert_ephemeral_refusal(response: &Value, fragment: &str) {
    assert_eq!(response["type"], 4, "{response}");
    assert_eq!(
        response["data"]["flags"].as_u64().map(|flags| flags & 64),
        Some(64),
        "refusals are ephemeral: {response}"
    );
    let content = response["data"]["content"].as_str().unwrap_or("");
    assert!(content.contains(fragment), "expected {fragment:?} in {content:?}");
}

pub(crate) fn assert_conformant(simulator: &Simulator, vouch: &Running) {
    let log = vouch.log();
    for secret in [DISCORD_TOKEN, crate::support::INGEST_TOKEN, crate::support::WEBHOOK_SECRET] {
        assert!(!log.contains(secret), "a secret appears in Vouch's output");
    }
    let violations = simulator.violations();
    assert!(
        violations.is_empty(),
        "requests rejected by Discord's API description: {violations:#?}\nlog:\n{}",
        vouch.log()
    );
}

fn requests_to(world: &World, path_fragment: &str) -> Vec<Value> {
    world
        .requests
        .iter()
        .filter(|request| request.path.contains(path_fragment))
        .filter_map(|request| request.body.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_card_asks_the_owner_who_vouches_and_only_the_right_people_count() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();

    // Alice (helpdesk) reaches Bob's database server from her own workstation.
    let mut alert = native_alert("edr-100", "WS-17", "SRV-DB-01", "CORP\\alice");
    alert["program"] = json!({"path": "C:\\Windows\\System32\\mstsc.exe", "command_line": "mstsc.exe /v:SRV-DB-01"});
    alert["logon_type"] = json!(10);
    let (status, body) = post_alert(&vouch.base, &alert).await;
    assert_eq!(status, 202, "{body}");
    let case_id = body["case_id"].as_str().expect("case id").to_string();

    // 1. One card with the whole context, the question buttons and a thread; Bob is pinged in
    //    the thread and is the only one who could be.
    let card = card(&simulator, &case_id).await;
    let embed = &card.json["embeds"][0];
    let fields: Vec<String> = embed["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|field| field["name"].as_str().unwrap_or("").to_string())
        .collect();
    for name in [
        "Source",
        "Target",
        "Account",
        "Connection",
        "Program",
        "Detection",
        "Alerts",
        "Known harmless scenarios",
        "History",
        "Who vouches",
    ] {
        assert!(fields.iter().any(|field| field == name), "the card lacks {name}: {fields:?}");
    }
    let text = embed.to_string();
    for fragment in [
        "WS\\\\-17",
        "SRV\\\\-DB\\\\-01",
        "helpdesk",
        "remote access over RDP",
        "mstsc.exe",
        "Bob Stone",
        "T1021.001",
        "Helpdesk remote support",
    ] {
        assert!(text.contains(fragment), "the card lacks {fragment:?}: {text}");
    }
    let labels: Vec<String> = card.buttons().into_iter().map(|(label, _, _)| label).collect();
    for label in [
        "Fits normal use",
        "Does not fit",
        "A person, interactively",
        "A program or script",
        "Ask owner",
        "Escalate",
        "Close as expected",
    ] {
        assert!(labels.iter().any(|existing| existing == label), "no {label:?} button: {labels:?}");
    }
    assert!(card.custom_ids().iter().all(|id| id.len() <= 100));
    let ping = ping_for(&simulator, &card, BOB).await;
    simulator.with_world(|world| {
        assert!(
            world.channels.get(&card.id).is_some_and(|thread| thread.kind == 11),
            "a thread was opened on the card"
        );
        assert_eq!(cards_in(world), 1, "exactly one card");
        let posted = requests_to(world, &format!("/channels/{}/messages", card.id));
        let ping_request = posted
            .iter()
            .find(|body| body["content"].as_str().is_some_and(|content| content.contains(&format!("<@{BOB}>"))))
            .expect("ping request");
        assert_eq!(
            ping_request["allowed_mentions"]["users"],
            json!([BOB.to_string()]),
            "only Bob may be pinged: {ping_request}"
        );
        assert_eq!(ping_request["allowed_mentions"]["parse"], json!([]));
        assert!(ping_request["allowed_mentions"]["roles"].as_array().is_none_or(Vec::is_empty));
        let card_request = requests_to(world, &format!("/channels/{TRIAGE_CHANNEL}/messages")).remove(0);
        assert_eq!(card_request["allowed_mentions"]["parse"], json!([]), "the card pings nobody");
    });

    // 3. Mallory clicks Bob's button, Alice (not SOC) clicks Escalate: refused, recorded, no change.
    let refused = simulator.click(MALLORY, ping.id, &button(&ping, "Expected"));
    assert_ephemeral_refusal(&simulator.response(refused, WAIT).await, "asked of Bob Stone");
    let refused = simulator.click(ALICE, card.id, &button(&card, "Escalate"));
    assert_ephemeral_refusal(&simulator.response(refused, WAIT).await, "only members of the SOC escalate");
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["state"], "awaiting_confirmation");
    let kinds: Vec<&str> =
        case["events"].as_array().expect("events").iter().filter_map(|event| event["kind"].as_str()).collect();
    assert!(kinds.contains(&"refused.click.confirm") && kinds.contains(&"refused.click.escalate"), "{kinds:?}");

    // A SOC member answers a question on the card: the card itself is updated in the answer.
    let answered = simulator.click(SAM, card.id, &button(&card, "A person, interactively"));
    let response = simulator.response(answered, WAIT).await;
    assert_eq!(response["type"], 7, "{response}");
    assert!(response.to_string().contains("Answered **A person, interactively** by Sam Okafor"), "{response}");

    // 2. Bob clicks Expected: on disk before the answer (it survives a SIGKILL right after),
    //    the card shows it, and the case records it with the playbook version.
    let clicked = simulator.click(BOB, ping.id, &button(&ping, "Expected"));
    let response = simulator.response(clicked, WAIT).await;
    assert_eq!(response["type"], 7, "the confirmation message is updated: {response}");
    vouch.kill_hard();
    let vouch = workspace.start();
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["state"], "closed_expected", "{case}");
    let answer = &case["confirmers"][0]["answers"][0];
    assert_eq!(answer["verdict"], "expected");
    assert_eq!(answer["by"]["person"], "bob");
    assert_eq!(case["playbook_version"], 1);
    let confirm_event = case["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|event| event["kind"] == "click.confirm")
        .expect("recorded")
        .clone();
    assert_eq!(confirm_event["playbook_version"], 1);
    assert_eq!(confirm_event["actor"]["discord_id"], BOB.to_string());
    simulator
        .wait_for("the card to show the case closed", WAIT, |world| {
            world
                .message(card.id)
                .filter(|message| {
                    message.json["embeds"][0]["description"]
                        .as_str()
                        .is_some_and(|text| text.contains("Closed as expected by Bob Stone"))
                })
                .map(|_| ())
        })
        .await;
    // 5. After the restart, clicks on the old card still work (and a closed case refuses them).
    //    A click reaches only a bot that is connected (as on Discord): wait for the restarted
    //    Vouch to identify before clicking.
    simulator
        .wait_for("the restarted Vouch to identify", WAIT, |world| (world.gateway_identifies >= 2).then_some(()))
        .await;
    let late = simulator.click(SAM, card.id, &button(&card, "Escalate"));
    assert_ephemeral_refusal(&simulator.response(late, WAIT).await, "already closed");
    assert_eq!(simulator.with_world(cards_in), 1, "no second card after the restart");
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_me_goes_to_the_manager_and_not_expected_pages_on_call() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-200", "WS-17", "SRV-DB-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    let ping = ping_for(&simulator, &card, BOB).await;

    let clicked = simulator.click(BOB, ping.id, &button(&ping, "Not me / wrong person"));
    assert_eq!(simulator.response(clicked, WAIT).await["type"], 7);
    let manager_ping = ping_for(&simulator, &card, DANA).await;
    assert!(manager_ping.content().contains("manager of the account's holder"), "{}", manager_ping.content());

    let clicked = simulator.click(DANA, manager_ping.id, &button(&manager_ping, "Not expected"));
    assert_eq!(simulator.response(clicked, WAIT).await["type"], 7);
    let page = simulator
        .wait_for("on-call to be paged in the thread", WAIT, |world| {
            world
                .channel_messages(card.id)
                .into_iter()
                .find(|message| message.content().contains(&format!("<@&{ONCALL_ROLE}>")))
                .cloned()
        })
        .await;
    assert!(page.content().contains("did not expect"), "{}", page.content());
    simulator.with_world(|world| {
        let page_request = requests_to(world, &format!("/channels/{}/messages", card.id))
            .into_iter()
            .find(|body| {
                body["content"].as_str().is_some_and(|content| content.contains(&format!("<@&{ONCALL_ROLE}>")))
            })
            .expect("page request");
        assert_eq!(page_request["allowed_mentions"]["roles"], json!([ONCALL_ROLE.to_string()]));
    });
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["state"], "escalated");
    // The card now offers isolation to the SOC.
    let escalated_card = simulator
        .wait_for("the card to offer isolation", WAIT, |world| {
            world
                .message(card.id)
                .filter(|message| message.buttons().iter().any(|(label, _, _)| label == "Isolate target"))
                .cloned()
        })
        .await;
    let isolate = simulator.click(SAM, escalated_card.id, &button(&escalated_card, "Isolate target"));
    assert_eq!(simulator.response(isolate, WAIT).await["type"], 7);
    let _ = SOC_ROLE;
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_is_posted_once_even_when_vouch_dies_before_posting_it() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    // Discord fails every request for a while: the alert is accepted but no card gets out.
    simulator.inject_failures(&[503; 400]);
    let (status, body) = post_alert(&vouch.base, &native_alert("edr-300", "WS-17", "SRV-DB-01", "alice")).await;
    assert_eq!(status, 202);
    let case_id = body["case_id"].as_str().expect("id").to_string();
    simulator
        .wait_for("a failed attempt to post the card", WAIT, |world| {
            world
                .requests
                .iter()
                .any(|request| request.path == format!("/channels/{TRIAGE_CHANNEL}/messages") && request.status == 503)
                .then_some(())
        })
        .await;
    vouch.kill_hard();
    simulator.with_world(|_| ());
    // Discord recovers; Vouch restarts and posts the card exactly once.
    simulator.clear_failures();
    let vouch = workspace.start();
    let card = card(&simulator, &case_id).await;
    let ping = ping_for(&simulator, &card, BOB).await;
    let clicked = simulator.click(BOB, ping.id, &button(&ping, "Expected"));
    assert_eq!(simulator.response(clicked, WAIT).await["type"], 7);
    // A second restart re-runs startup (`ready`) and must not post anything twice.
    assert_eq!(vouch.terminate(), 0);
    let vouch = workspace.start();
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["state"], "closed_expected");
    simulator.wait_for("the second run to connect", WAIT, |world| (world.gateway_identifies >= 3).then_some(())).await;
    simulator.with_world(|world| {
        assert_eq!(cards_in(world), 1, "one card");
        let pings = world
            .channel_messages(card.id)
            .into_iter()
            .filter(|message| message.content().contains(&format!("<@{BOB}>")))
            .count();
        assert_eq!(pings, 1, "one ping");
    });
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_text_stays_inert() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let mut alert = native_alert("edr-400", "@everyone", "SRV-DB-01", "<@100000000000000004>");
    alert["program"] = json!({"path": "C:\\tools\\`tick`.exe", "command_line": "run **bold** <@&800000000000000010> @here [x](http://evil)"});
    let (_, body) = post_alert(&vouch.base, &alert).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    let text = card.json["embeds"][0].to_string();
    assert!(!text.contains("@everyone") && !text.contains("@here"), "mentions stay broken: {text}");
    assert!(!text.contains("<@100000000000000004>") && !text.contains("<@&800000000000000010>"), "{text}");
    assert!(text.contains("\\\\*\\\\*bold\\\\*\\\\*"), "markdown is escaped: {text}");
    ping_for(&simulator, &card, BOB).await;
    simulator.with_world(|world| {
        for request in
            world.requests.iter().filter(|request| request.method == "POST" && request.path.ends_with("/messages"))
        {
            let body = request.body.as_ref().expect("a body");
            let allowed = &body["allowed_mentions"];
            assert_eq!(allowed["parse"], json!([]), "no message may ping by parsing: {body}");
            let users = allowed["users"].as_array().cloned().unwrap_or_default();
            assert!(users.iter().all(|user| user == &json!(BOB.to_string())), "only the asked owner: {body}");
        }
    });
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_answered_after_the_gateway_drops() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-500", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    simulator.wait_for("the bot to identify", WAIT, |world| (world.gateway_identifies >= 1).then_some(())).await;
    simulator.drop_gateway();
    let clicked = simulator.click(SAM, card.id, &button(&card, "Fits normal use"));
    let response = simulator.response(clicked, Duration::from_secs(60)).await;
    assert_eq!(response["type"], 7, "{response}");
    simulator.with_world(|world| {
        assert!(
            world.gateway_resumes + world.gateway_identifies >= 2,
            "the bot came back (resumed or identified again)"
        );
    });
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands_answer_privately() {
    let simulator = simulator(false).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-600", "WS-17", "SRV-DB-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    ping_for(&simulator, &card, BOB).await;
    simulator.wait_for("the commands to be registered", WAIT, |world| (world.commands.len() == 3).then_some(())).await;
    let asked =
        simulator.slash_command(SAM, TRIAGE_CHANNEL, "case", json!([{"name": "id", "type": 3, "value": case_id}]));
    let response = simulator.response(asked, WAIT).await;
    assert_eq!(response["data"]["flags"], 64);
    assert!(
        response["data"]["content"].as_str().is_some_and(|content| content.contains("https://discord.com/channels/")),
        "{response}"
    );
    // /cases pages: ten open cases a page, newest first, a button for the older ones.
    let mut newest_first = vec![case_id.clone()];
    for index in 0..11 {
        let alert = native_alert(&format!("edr-page-{index:02}"), &format!("WS-{index:02}"), "SRV-DB-01", "alice");
        let (status, body) = post_alert(&vouch.base, &alert).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("new")), "{body}");
        newest_first.insert(0, body["case_id"].as_str().expect("id").to_string());
    }
    let shown = |content: &str, case: &str| content.contains(&format!("**{case}** "));
    let listed = simulator.slash_command(SAM, TRIAGE_CHANNEL, "cases", json!([]));
    let first_page = simulator.response(listed, WAIT).await;
    assert_eq!(first_page["data"]["flags"], 64);
    let content = first_page["data"]["content"].as_str().expect("content");
    assert_eq!(content.lines().filter(|line| line.starts_with("**LM-")).count(), 10, "{content}");
    assert!(newest_first[..10].iter().all(|case| shown(content, case)), "{newest_first:?}: {content}");
    let older = first_page["data"]["components"][0]["components"][0]["custom_id"].as_str().expect("a button");
    let interaction = listed.to_string();
    let page_message = simulator
        .wait_for("the /cases page", WAIT, |world| {
            world.messages.iter().find(|message| message.json["interaction_id"].as_str() == Some(&interaction)).cloned()
        })
        .await;
    let turned = simulator.response(simulator.click(SAM, page_message.id, older), WAIT).await;
    assert_eq!(turned["type"], 7, "the page turns in place: {turned}");
    let content = turned["data"]["content"].as_str().expect("content");
    assert!(newest_first[10..].iter().all(|case| shown(content, case)), "{newest_first:?}: {content}");
    assert_eq!(content.lines().filter(|line| line.starts_with("**LM-")).count(), 2, "{content}");
    assert_eq!(turned["data"]["components"], json!([]), "the last page has no button: {turned}");
    let oncall = simulator.slash_command(SAM, TRIAGE_CHANNEL, "oncall", json!([]));
    assert!(simulator.response(oncall, WAIT).await.to_string().contains(&ONCALL_ROLE.to_string()));
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_and_vouching_for_a_critical_system_ask_for_a_justification() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-700", "WS-17", "SRV-DB-01", "alice")).await;
    let first = body["case_id"].as_str().expect("id").to_string();
    let first_card = card(&simulator, &first).await;
    let close = button(&first_card, "Close as expected");
    let clicked = simulator.click(SAM, first_card.id, &close);
    let form = simulator.response(clicked, WAIT).await;
    assert_eq!(form["type"], 9, "a form opens: {form}");
    assert_eq!(form["data"]["custom_id"], close);
    let submitted = simulator.submit_modal(
        SAM,
        TRIAGE_CHANNEL,
        Some(first_card.id),
        &close,
        &[("justification", "Change CHG-1042: DB patching")],
    );
    let answer = simulator.response(submitted, WAIT).await;
    assert!(
        answer["data"]["content"].as_str().is_some_and(|text| text.contains("Closed as expected by Sam Okafor")),
        "{answer}"
    );
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{first}")).await;
    assert_eq!(case["state"], "closed_expected");
    assert_eq!(case["resolution"]["text"], "Change CHG-1042: DB patching");

    // Bob vouching for movement onto a domain controller must say why.
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-701", "WS-17", "DC-01", "alice")).await;
    let second = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &second).await;
    let ping = ping_for(&simulator, &card, BOB).await;
    let expected = button(&ping, "Expected");
    let clicked = simulator.click(BOB, ping.id, &expected);
    assert_eq!(simulator.response(clicked, WAIT).await["type"], 9);
    let submitted =
        simulator.submit_modal(BOB, card.id, Some(ping.id), &expected, &[("justification", "Planned DC maintenance")]);
    simulator.response(submitted, WAIT).await;
    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{second}")).await;
    let verdict = &case["confirmers"][0]["answers"][0];
    assert_eq!(verdict["verdict"], "expected");
    assert_eq!(verdict["justification"], "Planned DC maintenance");
    assert_eq!(case["state"], "open", "a critical target is a concern: the SOC still decides");
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_cases_stays_within_the_channel_limit() {
    let cases: usize = std::env::var("VOUCH_E2E_STORM_CASES").ok().and_then(|text| text.parse().ok()).unwrap_or(30);
    let simulator = simulator(true).await;
    simulator.limit_channel_posts(5, Duration::from_secs(5));
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    for index in 0..cases {
        let (status, _) = post_alert(
            &vouch.base,
            &native_alert(&format!("storm-{index}"), "WS-17", &format!("SRV-{index}"), "alice"),
        )
        .await;
        assert_eq!(status, 202);
    }
    // Five cards per five seconds at best, plus slack for a loaded machine.
    let patience = Duration::from_secs(cases as u64 + 60);
    simulator.wait_for(&format!("{cases} cards"), patience, |world| (cards_in(world) >= cases).then_some(())).await;
    simulator.with_world(|world| {
        let cards = crate::support::cards_posted_and_distinct(world);
        assert_eq!(cards, (cases, cases), "every card once, none twice");
        let posts = world.message_posts(TRIAGE_CHANNEL);
        let limited = posts.iter().filter(|request| request.status == 429).count();
        assert_eq!(posts.len() - limited, cases, "each rate-limited post was retried until it went through");
        eprintln!("storm: {cases} cards, {limited} answered 429 and retried");
    });
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_discord_keeps_refusing_is_given_up_without_blocking_the_case() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-800", "WS-17", "SRV-DB-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    let ping = ping_for(&simulator, &card, BOB).await;
    // The card's edits are refused from now on (say, someone removed the bot's permission).
    simulator.refuse_path(&format!("/channels/{TRIAGE_CHANNEL}/messages/{}", card.id), 403, 3);
    // The owner answers in the thread, so the card has to be edited by the bot itself.
    let clicked = simulator.click(BOB, ping.id, &button(&ping, "Not expected"));
    simulator.response(clicked, WAIT).await;
    // The later effects of the case (the page in the thread) still go out.
    simulator
        .wait_for("on-call to be paged despite the refused card edit", Duration::from_secs(60), |world| {
            world
                .channel_messages(card.id)
                .into_iter()
                .any(|message| message.content().contains("you are paged"))
                .then_some(())
        })
        .await;
    // The card's redraw waits for nothing but itself: it is given up after its refusals (with
    // backoff between them), which may come after the page.
    crate::support::case_until(
        &vouch.base,
        &case_id,
        Duration::from_secs(60),
        "giving up is recorded in the audit log",
        |case| {
            case["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|event| event["kind"] == "effect.abandoned"))
        },
    )
    .await;
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_are_answered_after_a_failed_resume() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-900", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    simulator.wait_for("the bot to identify", WAIT, |world| (world.gateway_identifies >= 1).then_some(())).await;
    // The session is gone on the gateway's side: the resume fails and the bot must identify anew.
    simulator.invalidate_sessions();
    simulator.drop_gateway();
    simulator
        .wait_for("a second identify", Duration::from_secs(60), |world| (world.gateway_identifies >= 2).then_some(()))
        .await;
    let clicked = simulator.click(SAM, card.id, &button(&card, "Fits normal use"));
    assert_eq!(simulator.response(clicked, Duration::from_secs(60)).await["type"], 7);
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_the_card_redraws_it_in_its_answer_without_a_second_edit() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-950", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    let clicked = simulator.click(SAM, card.id, &button(&card, "Escalate"));
    let answer = simulator.response(clicked, WAIT).await;
    assert_eq!(answer["type"], 7, "the answer itself redraws the card");
    assert!(answer.to_string().contains("Escalated"), "{answer}");
    // The escalation's other effects come after the card update in the case's queue; once the
    // page is out, a card edit would have been made before it.
    let card_path = format!("/channels/{TRIAGE_CHANNEL}/messages/{}", card.id);
    let edits = simulator
        .wait_for("on-call to be paged", WAIT, |world| {
            let paged =
                world.channel_messages(card.id).into_iter().any(|message| message.content().contains("you are paged"));
            paged.then(|| {
                world.requests.iter().filter(|request| request.method == "PATCH" && request.path == card_path).count()
            })
        })
        .await;
    assert_eq!(edits, 0, "the click's answer already showed the escalation; an edit would only spend the rate limit");
    assert_conformant(&simulator, &vouch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_case_that_does_not_exist_is_refused_privately_and_audited() {
    let simulator = simulator(true).await;
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("edr-404", "WS-17", "SRV-DB-01", "CORP\\alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("case id")).await;

    let clicked = simulator.click(SAM, card.id, "v1:999999:esc");
    assert_ephemeral_refusal(&simulator.response(clicked, WAIT).await, "There is no case LM-999999");
    assert!(!vouch.log().contains("the store refused a click"), "a refusal, not a failure: {}", vouch.log());
    assert_eq!(vouch.terminate(), 0);

    let config = workspace.config();
    let (code, exported, stderr) =
        workspace.run_command(&["audit", "export", "--config", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    let refusal: Value = exported
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a record"))
        .find(|record| record["kind"] == "refused.click.escalate")
        .unwrap_or_else(|| panic!("no refusal in the audit log: {exported}"));
    assert_eq!(refusal["detail"]["reason"], "there is no case LM-999999");
    assert_eq!(refusal["detail"]["request"]["custom_id"], "v1:999999:esc");
    assert_eq!(refusal["actor"]["discord_id"], SAM.to_string());
    assert!(refusal.get("case_id").is_none(), "filed under no case, as that number may come later: {refusal}");
    workspace.assert_audit_intact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_vouch_cleanly_within_two_seconds() {
    for tls in [true, false] {
        let simulator = simulator(tls).await;
        let workspace = Workspace::discord(&simulator);
        let vouch = workspace.start();
        // Even when the gateway never answers the close frame (serenity would wait 5 s for it).
        simulator.leave_close_frames_unanswered();
        // Idle, but connected: a card is posted, so the gateway and the dispatcher are up.
        let (_, body) = post_alert(&vouch.base, &native_alert("edr-term", "WS-17", "SRV-DB-01", "CORP\\alice")).await;
        card(&simulator, body["case_id"].as_str().expect("case id")).await;
        let (code, took) = vouch.terminate_within(Duration::from_secs(2));
        assert_eq!(code, 0, "a clean stop exits 0 (tls {tls}, took {took:?})");
        // What was acknowledged is still there, and the chain is whole.
        workspace.assert_audit_intact();
    }
}
