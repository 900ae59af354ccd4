//! Starting and stopping the real binary, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INGEST_TOKEN: &str = "e2e-ingest-token-7f3a";
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vouch-under-test")
}

pub fn repository_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The backend the suite runs on: sled, or PostgreSQL with `VOUCH_E2E_BACKEND=postgres` (each
/// workspace then gets a database of its own on one server the suite starts).
pub fn on_postgres() -> bool {
    std::env::var("VOUCH_E2E_BACKEND").as_deref() == Ok("postgres")
}

/// The `[storage]` table of a new workspace in `folder`.
fn storage_settings(folder: &Path) -> String {
    if on_postgres() && vouch_tests::postgres_server::available() {
        let url = vouch_tests::postgres_server::fresh_database();
        std::fs::write(folder.join("database_url"), url).expect("write");
        return "[storage]\nbackend = \"postgres\"\nurl = { file = \"database_url\" }\npool_size = 4\n".to_string();
    }
    "[storage]\ndata_dir = \"data\"\ncache_capacity_mib = 8\n".to_string()
}

/// A temporary folder holding `vouch.toml`, the example directory and the store.
pub struct Workspace {
    pub folder: tempfile::TempDir,
}

/// The directory the Discord tests use: every person has a Discord id.
pub const DISCORD_DIRECTORY: &str = r#"
[[people]]
id = "alice"
name = "Alice Martin"
discord_id = "100000000000000001"
manager = "dana"
roles = ["helpdesk"]
workstations = ["WS-17"]
accounts = ["alice"]

[[people]]
id = "bob"
name = "Bob Stone"
discord_id = "100000000000000002"
manager = "dana"
roles = ["admin"]
workstations = ["WS-02"]
accounts = ["bob"]
delegates = ["carol"]

[[people]]
id = "carol"
name = "Carol Diaz"
discord_id = "100000000000000003"
manager = "dana"
roles = ["developer"]
workstations = ["WS-42"]
accounts = ["carol"]

[[people]]
id = "dana"
name = "Dana Kim"
discord_id = "100000000000000005"
roles = ["manager"]

[[people]]
id = "sam"
name = "Sam Okafor"
discord_id = "100000000000000004"
roles = ["soc"]

[[assets]]
hostname = "WS-17"
ips = ["10.0.0.17"]
kind = "workstation"
owner = "alice"
criticality = "low"

[[assets]]
hostname = "WS-42"
ips = ["10.0.0.42"]
kind = "workstation"
owner = "carol"
criticality = "low"

[[assets]]
hostname = "SRV-DB-01"
ips = ["10.0.5.1"]
kind = "server"
owner = "bob"
criticality = "high"
edr_ids = { crowdstrike = "aid-srv-db-01" }

[[assets]]
hostname = "DC-01"
ips = ["10.0.1.1"]
kind = "domain_controller"
owner = "bob"
edr_ids = { crowdstrike = "aid-dc-01" }
"#;

pub const WEBHOOK_SECRET: &str = "whsec_QmVlcy1uZWVzLWtub3ctYmVzdC0yMDI2LWUyZQ==";

/// The client secret of Vouch's app registration in the simulated Entra tenant.
pub const GRAPH_SECRET: &str = "e2e-graph-client-secret~9Qv";
/// The bearer token the simulated identity provider presents to Vouch's SCIM server.
pub const SCIM_TOKEN: &str = "e2e-scim-token-from-the-idp-5d21";
pub const DISCORD_TOKEN: &str = "e2e-discord-bot-token-41c9";
pub const TRIAGE_CHANNEL: u64 = 800_000_000_000_000_001;
pub const SOC_ROLE: u64 = 800_000_000_000_000_010;
pub const ONCALL_ROLE: u64 = 800_000_000_000_000_011;

impl Workspace {
    /// A workspace whose Vouch talks to the given simulator (over TLS when it serves TLS).
    pub fn discord(simulator: &discord_simulator::Simulator) -> Workspace {
        let workspace = Workspace::new("");
        let folder = workspace.folder.path();
        std::fs::write(folder.join("directory.toml"), DISCORD_DIRECTORY).expect("write");
        let mut discord = format!(
            "\n[discord]\napi_base = \"{}\"\ntoken = {{ env = \"DISCORD_TOKEN\" }}\nguild_id = \"{}\"\n\
             triage_channel_id = \"{TRIAGE_CHANNEL}\"\nsoc_role_id = \"{SOC_ROLE}\"\noncall_role_id = \"{ONCALL_ROLE}\"\n",
            simulator.api_base(),
            discord_simulator::GUILD_ID
        );
        if let Some(pem) = simulator.ca_pem() {
            std::fs::write(folder.join("ca.pem"), pem).expect("write");
            discord.push_str("ca_file = \"ca.pem\"\n");
        }
        let mut settings = std::fs::read_to_string(workspace.config()).expect("read");
        settings.push_str(&discord);
        std::fs::write(workspace.config(), settings).expect("write");
        workspace
    }

    /// Adds settings (whole tables) to `vouch.toml`.
    pub fn append_settings(&self, text: &str) {
        let mut settings = std::fs::read_to_string(self.config()).expect("read");
        settings.push('\n');
        settings.push_str(text);
        std::fs::write(self.config(), settings).expect("write");
    }

    pub fn new(extra_ingest: &str) -> Workspace {
        let folder = tempfile::tempdir().expect("temp dir");
        let directory = std::fs::read_to_string(repository_file("config/directory.example.toml")).expect("example");
        std::fs::write(folder.path().join("directory.toml"), directory).expect("write");
        let storage = storage_settings(folder.path());
        let settings = format!(
            "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = {{ env = \"VOUCH_INGEST_TOKEN\" }}\ngrouping_window_minutes = 30\n{extra_ingest}\n\
             {storage}\n[directory]\nfile = \"directory.toml\"\n"
        );
        std::fs::write(folder.path().join("vouch.toml"), settings).expect("write");
        Workspace { folder }
    }

    /// Keeps the store in this PostgreSQL database instead (a server the test owns).
    pub fn use_database(&self, url: &str) {
        std::fs::write(self.folder.path().join("database_url"), url).expect("write");
        let storage = "[storage]\nbackend = \"postgres\"\nurl = { file = \"database_url\" }\npool_size = 4\n";
        self.write_settings_with_storage("vouch.toml", storage);
    }

    /// Keeps the store in sled in `data/`, whatever backend the suite runs on.
    pub fn use_sled(&self) {
        self.write_settings_with_storage("vouch.toml", "[storage]\ndata_dir = \"data\"\ncache_capacity_mib = 8\n");
    }

    /// Writes `name` in the workspace: this workspace's settings with `storage` as its
    /// `[storage]` table. Returns its path.
    pub fn write_settings_with_storage(&self, name: &str, storage: &str) -> PathBuf {
        let settings = std::fs::read_to_string(self.config()).expect("read");
        let start = settings.find("[storage]").expect("a [storage] table");
        let end = settings[start..].find("\n[directory]").map(|end| start + end).expect("[directory] follows");
        let path = self.folder.path().join(name);
        std::fs::write(&path, format!("{}{storage}{}", &settings[..start], &settings[end..])).expect("write");
        path
    }

    pub fn config(&self) -> PathBuf {
        self.folder.path().join("vouch.toml")
    }

    pub fn command(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(arguments)
            .current_dir(self.folder.path())
            .env("VOUCH_INGEST_TOKEN", INGEST_TOKEN)
            .env("VOUCH_INGEST_SIGNING_SECRET", SIGNING_SECRET)
            .env("DISCORD_TOKEN", DISCORD_TOKEN)
            .env("VOUCH_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("VOUCH_LDAP_PASSWORD", vouch_tests::slapd::ADMIN_PASSWORD)
            .env("VOUCH_SCIM_TOKEN", SCIM_TOKEN)
            .env("VOUCH_GRAPH_SECRET", GRAPH_SECRET)
            .env("VOUCH_LOG", "info");
        command
    }

    /// Runs a one-shot subcommand and returns (exit code, stdout, stderr).
    pub fn run_command(&self, arguments: &[&str]) -> (i32, String, String) {
        let output = self.command(arguments).output().expect("vouch runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Runs `vouch audit verify` on this workspace's store, fails the test unless the chain is
    /// intact, and returns what the command printed.
    pub fn assert_audit_intact(&self) -> String {
        let config = self.config();
        let (code, stdout, stderr) = self.run_command(&["audit", "verify", "--config", config.to_str().expect("path")]);
        assert_eq!(code, 0, "the audit chain does not verify: {stdout}{stderr}");
        stdout
    }

    /// The kinds of the audit records starting with `prefix`, in order, as `vouch audit export`
    /// prints them (Vouch must be stopped).
    pub fn audit_kinds(&self, prefix: &str) -> Vec<String> {
        let config = self.config();
        let (code, export, stderr) = self.run_command(&["audit", "export", "--config", config.to_str().expect("path")]);
        assert_eq!(code, 0, "{stderr}");
        export
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|record| record["kind"].as_str().map(str::to_string))
            .filter(|kind| kind.starts_with(prefix))
            .collect()
    }

    /// Starts `vouch run` and waits for it to say where it listens.
    pub fn start(&self) -> Running {
        let config = self.config();
        self.start_command(self.command(&["run", "--config", config.to_str().expect("utf-8 path")]))
    }

    /// Starts a prepared `vouch run` command (say, with resource limits).
    pub fn start_command(&self, mut command: Command) -> Running {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("vouch starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        let mut first_line = String::new();
        BufReader::new(stdout).read_line(&mut first_line).expect("vouch prints its address");
        let address = first_line
            .trim()
            .strip_prefix("vouch: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first_line:?}; log: {}", log.lock().expect("log")))
            .to_string();
        Running { child, base: format!("http://{address}"), log }
    }
}

/// A running `vouch run`; killed when dropped so a failing test leaves nothing behind.
pub struct Running {
    child: Child,
    pub base: String,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill_hard(mut self) {
        // SIGKILL: no destructor, no flush, no goodbye.
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn terminate(self) -> i32 {
        self.terminate_within(Duration::from_secs(20)).0
    }

    /// SIGTERM, then waits for the exit, failing the test past `limit`; returns the exit code and
    /// how long the exit took.
    pub fn terminate_within(mut self, limit: Duration) -> (i32, Duration) {
        let pid = self.child.id() as libc::pid_t;
        let sent = Instant::now();
        // SAFETY: sending a signal to our own child process, whose pid we hold.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), sent.elapsed());
            }
            assert!(sent.elapsed() < limit, "vouch did not stop within {limit:?} of SIGTERM; log: {}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Waits (at most 10 s) until the log holds `fragment` at least `times` times: the log
    /// arrives through a pipe the test reads on a thread of its own, a moment after Vouch wrote
    /// it. The log as it then is.
    pub async fn log_once_it_says(&self, fragment: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches(fragment).count() >= times || Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// POSTs a JSON alert with the right token; returns (status, body).
pub async fn post_alert(base: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = client()
        .post(format!("{base}/api/v1/alerts"))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

pub async fn get_json(base: &str, path: &str) -> (u16, serde_json::Value) {
    let response = client().get(format!("{base}{path}")).bearer_auth(INGEST_TOKEN).send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

/// Reads a case from the API until `ready` says it shows what the test waits for; fails, naming
/// `what` and the case as last read, when that takes longer than `within`.
pub async fn case_until(
    base: &str,
    case_id: &str,
    within: Duration,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, case) = get_json(base, &format!("/api/v1/cases/{case_id}")).await;
        if ready(&case) {
            return case;
        }
        assert!(Instant::now() < deadline, "{what}; the case: {case}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The secrets `vouch.toml` names, for a Vouch started in the test's own process.
pub struct TestEnvironment;

impl vouch_config::Environment for TestEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "VOUCH_INGEST_TOKEN" => Some(INGEST_TOKEN.to_string()),
            "DISCORD_TOKEN" => Some(DISCORD_TOKEN.to_string()),
            "VOUCH_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_string()),
            _ => None,
        }
    }
}

/// A native alert for a movement from `source` to `target` by `account`.
pub fn native_alert(id: &str, source: &str, target: &str, account: &str) -> serde_json::Value {
    serde_json::json!({
        "vouch_alert": 1, "id": id, "product": "e2e",
        "source": {"hostname": source}, "target": {"hostname": target},
        "account": account, "protocol": "rdp", "mitre": ["T1021.001"], "severity": "high"
    })
}

/// The card of the case with this id in the triage channel, once posted.
/// Also waits until a bot has identified on the gateway: cards are posted over REST, but a click
/// reaches only a connected bot (as on Discord), so a test clicks on a card only once both hold.
/// How many cards the triage channel holds, and for how many different cases: equal when no
/// card was posted twice.
pub fn cards_posted_and_distinct(world: &discord_simulator::World) -> (usize, usize) {
    let mut titles = world.embed_titles(TRIAGE_CHANNEL);
    let posted = titles.len();
    titles.sort();
    titles.dedup();
    (posted, titles.len())
}

pub async fn card(simulator: &discord_simulator::Simulator, case_id: &str) -> discord_simulator::StoredMessage {
    let prefix = format!("{case_id} ");
    simulator
        .wait_for(&format!("the card of {case_id} and a connected bot"), std::time::Duration::from_secs(30), |world| {
            if world.gateway_identifies == 0 {
                return None;
            }
            world
                .channel_messages(TRIAGE_CHANNEL)
                .into_iter()
                .find(|message| {
                    message.json["embeds"][0]["title"].as_str().is_some_and(|title| title.starts_with(&prefix))
                })
                .cloned()
        })
        .await
}

/// A simulated guild with the triage channel and these members (id, name, roles).
pub async fn guild(tls: bool, members: &[(u64, &str, &[u64])]) -> discord_simulator::Simulator {
    let spec = discord_simulator::bundled_spec_path();
    let options = discord_simulator::SimulatorOptions { tls, spec_path: &spec, bot_token: DISCORD_TOKEN };
    let simulator = discord_simulator::Simulator::start(options).await.expect("the simulator starts");
    simulator.add_text_channel(TRIAGE_CHANNEL, "triage");
    for (id, name, roles) in members {
        simulator.add_member(*id, name, roles);
    }
    simulator
}

/// A small deterministic generator, so a failing round can be replayed from its seed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// Vouch in this process, reading time from `clock`, with its real Discord client, store and
/// timers (for tests that move time instead of waiting for it).
pub async fn start_in_process(
    workspace: &Workspace,
    clock: &std::sync::Arc<vouch::ManualClock>,
) -> vouch::app::Running {
    let config = vouch_config::load(&workspace.config(), &TestEnvironment).unwrap_or_else(|error| panic!("{error}"));
    let clock: std::sync::Arc<dyn vouch::Clock> = std::sync::Arc::clone(clock) as std::sync::Arc<dyn vouch::Clock>;
    vouch::app::start_with_clock(config, clock).await.expect("vouch starts")
}

/// Moves the clock and lets the timers and the dispatcher look at once.
pub fn advance(clock: &vouch::ManualClock, running: &vouch::app::Running, minutes: u32) {
    clock.advance_minutes(minutes);
    running.service.timers_ready.notify_one();
    running.service.effects_ready.notify_one();
}
