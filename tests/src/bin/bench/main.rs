//! Vouch's benchmarks. Each compares Vouch with a baseline measured in the same run, because
//! absolute numbers on a shared 2-core machine drift. Loopback only; bounded in count and time.
//!
//!     cargo run --release -p vouch-tests --bin bench -- ingest|click|card|storm|footprint|directory|ingest-postgres|failover|all
//!
//! BENCHMARKS.md documents each, with the latest numbers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod postgres;

use discord_simulator::{Simulator, SimulatorOptions};
use serde_json::{json, Value};

const INGEST_TOKEN: &str = "bench-ingest-token";
const DISCORD_TOKEN: &str = "bench-discord-token";
const TRIAGE: u64 = 800_000_000_000_000_001;
const SOC_ROLE: u64 = 800_000_000_000_000_010;
const SAM: u64 = 100_000_000_000_000_004;

struct Environment;

impl vouch_config::Environment for Environment {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "VOUCH_INGEST_TOKEN" => Some(INGEST_TOKEN.to_string()),
            "DISCORD_TOKEN" => Some(DISCORD_TOKEN.to_string()),
            "VOUCH_LDAP_PASSWORD" => Some(vouch_tests::slapd::ADMIN_PASSWORD.to_string()),
            _ => None,
        }
    }
}

fn repository_file(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// Writes a configuration into `folder` (Discord when a simulator is given) and starts Vouch in
/// this process.
async fn start_vouch(folder: &Path, simulator: Option<&Simulator>) -> vouch::app::Running {
    // BENCH_CACHE_MIB sets sled's cache (the default configuration's otherwise), to weigh it.
    let storage = match std::env::var("BENCH_CACHE_MIB") {
        Ok(mib) => format!("{SLED_STORAGE}cache_capacity_mib = {mib}\n"),
        Err(_) => SLED_STORAGE.to_string(),
    };
    start_vouch_with(folder, simulator, &storage).await
}

const SLED_STORAGE: &str = "[storage]\ndata_dir = \"data\"\n";

/// Writes `vouch.toml` into `folder` with `storage` as its `[storage]` table.
fn write_config(folder: &Path, storage: &str) {
    let directory =
        std::fs::read_to_string(repository_file("config/directory.example.toml")).expect("example directory");
    std::fs::write(folder.join("directory.toml"), directory).expect("write");
    let settings = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = {{ env = \"VOUCH_INGEST_TOKEN\" }}\n\n{storage}\n\
         [directory]\nfile = \"directory.toml\"\n"
    );
    std::fs::write(folder.join("vouch.toml"), settings).expect("write");
}

/// [`start_vouch`] with its store as `storage` says (a `[storage]` table).
async fn start_vouch_with(folder: &Path, simulator: Option<&Simulator>, storage: &str) -> vouch::app::Running {
    write_config(folder, storage);
    let mut settings = std::fs::read_to_string(folder.join("vouch.toml")).expect("read");
    if let Some(simulator) = simulator {
        std::fs::write(folder.join("ca.pem"), simulator.ca_pem().unwrap_or_default()).expect("write");
        settings.push_str(&format!(
            "\n[discord]\napi_base = \"{}\"\nca_file = \"ca.pem\"\ntoken = {{ env = \"DISCORD_TOKEN\" }}\nguild_id = \"{}\"\n\
             triage_channel_id = \"{TRIAGE}\"\nsoc_role_id = \"{SOC_ROLE}\"\n",
            simulator.api_base(),
            discord_simulator::GUILD_ID
        ));
    }
    std::fs::write(folder.join("vouch.toml"), settings).expect("write");
    let config = vouch_config::load(&folder.join("vouch.toml"), &Environment).unwrap_or_else(|error| panic!("{error}"));
    vouch::app::start(config).await.expect("vouch starts")
}

async fn simulator() -> Simulator {
    let spec = discord_simulator::bundled_spec_path();
    let simulator = Simulator::start(SimulatorOptions { tls: true, spec_path: &spec, bot_token: DISCORD_TOKEN })
        .await
        .expect("simulator");
    simulator.add_text_channel(TRIAGE, "triage");
    simulator.add_member(SAM, "sam", &[SOC_ROLE]);
    simulator
}

fn alert(id: &str, source: &str, target: &str) -> String {
    json!({"vouch_alert": 1, "id": id, "source": {"hostname": source}, "target": {"hostname": target},
           "account": "CORP\\alice", "protocol": "rdp", "mitre": ["T1021.001"], "severity": "high",
           "program": {"path": "C:\\Windows\\System32\\mstsc.exe", "command_line": "mstsc.exe /v:SRV-DB-01 /admin"}})
    .to_string()
}

struct Stats {
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * fraction).round() as usize).copied().unwrap_or_default()
    }

    fn line(&self) -> String {
        format!(
            "{:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} in {:.2} s)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1000.0,
            self.percentile(0.99).as_secs_f64() * 1000.0,
            self.count,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Posts `count` alerts from `senders` concurrent clients; `distinct` makes every alert its own
/// case, otherwise they are one movement (a grouped storm).
async fn post_alerts(base: &str, senders: usize, count: usize, distinct: bool, tag: &str) -> Stats {
    let tag = tag.to_string();
    post_bodies(base, senders, count, move |index| {
        let target = if distinct { format!("SRV-{tag}-{index}") } else { "SRV-DB-01".to_string() };
        alert(&format!("{tag}-{index}"), "WS-17", &target)
    })
    .await
}

/// Posts the alerts `make` writes for 0..`count` from `senders` concurrent clients, each
/// accepted (202) before the sender's next.
async fn post_bodies(
    base: &str,
    senders: usize,
    count: usize,
    make: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Stats {
    let client = reqwest::Client::builder().pool_max_idle_per_host(senders).build().expect("client");
    let make = Arc::new(make);
    let started = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|sender| {
            let client = client.clone();
            let url = format!("{base}/api/v1/alerts");
            let make = Arc::clone(&make);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for index in (sender..count).step_by(senders) {
                    let body = make(index);
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(INGEST_TOKEN)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("sent");
                    assert_eq!(response.status().as_u16(), 202, "every alert is accepted");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("sender"));
    }
    Stats { count, elapsed: started.elapsed(), latencies }
}

/// A set of sled records written for each alert by the baseline: (key, value, shared). A shared
/// key (a counter or a head) is overwritten by every alert, the others are made unique per alert.
type RecordSet = Arc<Vec<(Vec<u8>, Vec<u8>, bool)>>;

/// The records one new case writes in Vouch's store, read straight from sled in their stored
/// encoding: the case, its audit record, indexes, history and counters. Taken from the second
/// case of a store: the first also leaves the dictionaries later values are compressed with,
/// which a store writes once, not per case.
async fn records_of_one_case() -> RecordSet {
    let folder = tempfile::tempdir().expect("temp dir");
    let before = records_after_alert(folder.path(), alert("records-1", "WS-17", "SRV-DB-01")).await;
    let after = records_after_alert(folder.path(), alert("records-2", "WS-23", "SRV-APP-07")).await;
    let records: Vec<_> = after
        .into_iter()
        .filter(|(key, value)| before.get(key) != Some(value))
        .map(|(key, value)| {
            let shared = key.starts_with(b"m/");
            (key, value, shared)
        })
        .collect();
    Arc::new(records)
}

/// Starts Vouch on the store in `folder`, posts `body`, stops it, and reads every record.
async fn records_after_alert(folder: &Path, body: String) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let running = start_vouch(folder, None).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/alerts", running.address))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 202);
    running.stop().await.expect("stops");
    let path = folder.join("data");
    // sled lets go of its lock file a moment after the store is dropped.
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match sled::Config::new().path(&path).open() {
            Ok(db) => break db,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("cannot reopen the store: {error}"),
        }
    };
    db.iter()
        .map(|entry| {
            let (key, value) = entry.expect("readable");
            (key.to_vec(), value.to_vec())
        })
        .collect()
}

/// The latencies each writer thread measured, all together.
fn joined(threads: Vec<std::thread::JoinHandle<Vec<Duration>>>) -> Vec<Duration> {
    threads.into_iter().flat_map(|thread| thread.join().expect("writer")).collect()
}

/// A baseline record's key for alert `index`: made unique per alert, unless it is shared (a
/// counter or a head, overwritten by every alert).
fn record_key(key: &[u8], shared: bool, index: usize) -> Vec<u8> {
    let mut key = key.to_vec();
    if !shared {
        key.extend_from_slice(&(index as u64).to_be_bytes());
    }
    key
}

/// The baseline for durable ingest: `records` written straight into sled for each alert, one
/// atomic batch per alert, by `writers` threads, each acknowledged only after a flush covering
/// it, flushes shared as well as sled allows (one flusher thread, group commit).
fn raw_sled(writers: usize, count: usize, records: &RecordSet) -> Stats {
    let folder = tempfile::tempdir().expect("temp dir");
    let db =
        sled::Config::new().path(folder.path()).flush_every_ms(None).cache_capacity(16 << 20).open().expect("sled");
    let state = Arc::new((std::sync::Mutex::new((0u64, 0u64)), std::sync::Condvar::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let (db, state, stop) = (db.clone(), Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || loop {
            let target = {
                let (lock, changed) = &*state;
                let mut guard = lock.lock().expect("lock");
                while guard.0 == guard.1 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    guard = changed.wait(guard).expect("wait");
                }
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                guard.0
            };
            db.flush().expect("flush");
            let (lock, changed) = &*state;
            lock.lock().expect("lock").1 = target;
            changed.notify_all();
        })
    };
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let (db, state, records) = (db.clone(), Arc::clone(&state), Arc::clone(records));
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                for index in (writer..count).step_by(writers) {
                    let sent = Instant::now();
                    let key = |key: &[u8], shared: bool| record_key(key, shared, index);
                    if let [(only_key, value, shared)] = records.as_slice() {
                        // One record needs no batch (sled's batches take a lock of their own).
                        db.insert(key(only_key, *shared), value.clone()).expect("insert");
                    } else {
                        // Several records are one atomic batch, as Vouch writes them.
                        let mut batch = sled::Batch::default();
                        for (record_key, value, shared) in records.iter() {
                            batch.insert(key(record_key, *shared), value.clone());
                        }
                        db.apply_batch(batch).expect("insert");
                    }
                    let (lock, changed) = &*state;
                    let mut guard = lock.lock().expect("lock");
                    guard.0 += 1;
                    let ticket = guard.0;
                    changed.notify_all();
                    while guard.1 < ticket {
                        guard = changed.wait(guard).expect("wait");
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let latencies = joined(threads);
    let elapsed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    state.1.notify_all();
    let _ = flusher.join();
    Stats { count, elapsed, latencies }
}

/// The fastest of three raw-sled runs: a baseline of a fraction of a second is at the mercy of
/// the shared machine, and its best run is the fairest (and hardest) thing to compare with.
async fn best_raw_sled(writers: usize, count: usize, records: &RecordSet) -> Stats {
    let mut best: Option<Stats> = None;
    for _ in 0..3 {
        let records = Arc::clone(records);
        let run = tokio::task::spawn_blocking(move || raw_sled(writers, count, &records)).await.expect("baseline");
        keep_faster(&mut best, run, Stats::rate);
    }
    best.expect("three runs")
}

/// One round of Vouch's side of a comparison. `distinct` makes every alert its own case;
/// otherwise every round is the one movement (to SRV-DB-01).
async fn vouch_round(
    running: &vouch::app::Running,
    base: &str,
    senders: usize,
    count: usize,
    distinct: bool,
    tag: &str,
) -> VouchRound {
    let flushes_before = running.service.store.flush_stats();
    let cpu_before = cpu_time();
    let stats = post_alerts(base, senders, count, distinct, tag).await;
    let flushed = running.service.store.flush_stats();
    let flushes = (flushed.flushes - flushes_before.flushes).max(1);
    let cpu = cpu_time() - cpu_before;
    VouchRound {
        per_flush: count as f64 / flushes as f64,
        flush_millis: (flushed.total_micros - flushes_before.total_micros) as f64 / 1000.0 / flushes as f64,
        cpu_per_alert: cpu.as_secs_f64() * 1e6 / count as f64,
        stats,
    }
}

/// Keeps `run` in `best` when it was faster.
pub(crate) fn keep_faster<T>(best: &mut Option<T>, run: T, rate: impl Fn(&T) -> f64) {
    if best.as_ref().is_none_or(|best| rate(&run) > rate(best)) {
        *best = Some(run);
    }
}

/// A round of Vouch's side: its stats, alerts per flush, how long a flush took on average (what
/// every sender waits on, once its alerts are recorded) and CPU µs per alert.
struct VouchRound {
    stats: Stats,
    per_flush: f64,
    flush_millis: f64,
    cpu_per_alert: f64,
}

async fn bench_ingest() {
    println!("== ingest: durable POST /api/v1/alerts vs raw sled with the same durability");
    let alert_only: RecordSet =
        Arc::new(vec![(b"alert/".to_vec(), alert("baseline", "WS-17", "SRV-DB-01").into_bytes(), false)]);
    let vouch_records = records_of_one_case().await;
    println!(
        "  a new case is {} records, {} bytes in Vouch's store; the alert alone is {} bytes",
        vouch_records.len(),
        vouch_records.iter().map(|(key, value, _)| key.len() + value.len()).sum::<usize>(),
        alert_only[0].1.len()
    );
    let folder = tempfile::tempdir().expect("temp dir");
    let running = start_vouch(folder.path(), None).await;
    let base = format!("http://{}", running.address);
    let endpoint = vouch_tests::raw_sled_endpoint::RawSledEndpoint::start(INGEST_TOKEN).await;
    let endpoint_base = format!("http://{}", endpoint.address);
    // BENCH_SENDERS=64 runs one sender count alone (for profiling it).
    let only: Option<usize> = std::env::var("BENCH_SENDERS").ok().and_then(|value| value.parse().ok());
    for senders in [1usize, 8, 64].into_iter().filter(|senders| only.is_none_or(|only| only == *senders)) {
        // At 64 senders a round of 4 000 alerts lasted a third of a second, and the same build's
        // ratio spread from 0.33x to 0.60x within half an hour: rounds of 16 000 are steadier.
        let count = match senders {
            1 => 1000,
            8 => 4000,
            _ => 16_000,
        };
        let baseline = best_raw_sled(senders, count, &alert_only).await;
        let same_records = best_raw_sled(senders, count, &vouch_records).await;
        // The same HTTP stack making the alert alone durable, and Vouch: the best of three
        // rounds each, taken in turn (the baseline, distinct, grouped; three times) so that a
        // slow spell of this shared two-core machine falls on all three alike, not on whichever
        // ran through it (run one after the other, the ratio of one build spread 0.17x-0.23x).
        let (mut http_baseline, mut distinct, mut grouped) = (None, None, None);
        for round in 0..3 {
            let run = post_alerts(&endpoint_base, senders, count, true, &format!("h{senders}-{round}")).await;
            keep_faster(&mut http_baseline, run, Stats::rate);
            let run = vouch_round(&running, &base, senders, count, true, &format!("d{senders}-{round}")).await;
            keep_faster(&mut distinct, run, |round| round.stats.rate());
            let run = vouch_round(&running, &base, senders, count, false, &format!("g{senders}-{round}")).await;
            keep_faster(&mut grouped, run, |round| round.stats.rate());
        }
        let (http_baseline, distinct, grouped) =
            (http_baseline.expect("three rounds"), distinct.expect("three rounds"), grouped.expect("three rounds"));
        println!("  {senders:>2} sender(s)  raw sled, the alert alone  : {}", baseline.line());
        println!("              raw sled, Vouch's records : {}", same_records.line());
        println!("              HTTP + raw sled, the alert: {}", http_baseline.line());
        for (what, round) in [("distinct cases  ", &distinct), ("one grouped case", &grouped)] {
            println!(
                "              Vouch, {what}   : {}  = {:.2}x HTTP + raw sled, {:.2}x Vouch's records, {:.2}x the alert alone, {:.1} alerts/flush, {:.1} ms/flush, {:.0} µs CPU/alert",
                round.stats.line(),
                round.stats.rate() / http_baseline.rate(),
                round.stats.rate() / same_records.rate(),
                round.stats.rate() / baseline.rate(),
                round.per_flush,
                round.flush_millis,
                round.cpu_per_alert
            );
        }
    }
    // The p99 target is stated at a steady 1 000 alerts/s: paced senders, not a flood.
    let paced = paced(&base, 5000, Duration::from_millis(1), |index| {
        alert(&format!("paced-{index}"), "WS-17", &format!("SRV-P-{index}"))
    })
    .await;
    println!("  paced 1 000/s for 5 s   : {}", paced.line());
    running.stop().await.expect("stops");
    // The same on the PostgreSQL backend, against its own baseline.
    postgres::bench_ingest_postgres().await;
}

/// Sends `total` alerts one every `interval`, each on its own task so a slow answer does not
/// slow the rate; `make` builds the alert body from its index.
async fn paced(base: &str, total: usize, interval: Duration, make: fn(usize) -> String) -> Stats {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut ticker = tokio::time::interval(interval);
    for index in 0..total {
        ticker.tick().await;
        let client = client.clone();
        let url = format!("{base}/api/v1/alerts");
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(INGEST_TOKEN)
                .header("content-type", "application/json")
                .body(make(index))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status().as_u16(), 202);
            sent.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.push(task.await.expect("sender"));
    }
    Stats { count: total, elapsed: started.elapsed(), latencies }
}

async fn bench_card() {
    println!("== card: ingest → card posted in the simulator (no simulator rate limit), one alert a second");
    let simulator = simulator().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let running = start_vouch(folder.path(), Some(&simulator)).await;
    let base = format!("http://{}", running.address);
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    // One a second stays inside the 5 posts / 5 s Vouch allows itself per channel, so this
    // measures the path (store, worker, serenity, TLS, simulator), not the pacing.
    let count = 30;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for index in 0..count {
        ticker.tick().await;
        let sent = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/alerts"))
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(alert(&format!("card-{index}"), "WS-17", &format!("SRV-C-{index}")))
            .send()
            .await
            .expect("sent");
        let body: Value = response.json().await.expect("json");
        let prefix = format!("{} ", body["case_id"].as_str().expect("id"));
        simulator
            .wait_for("the card", Duration::from_secs(30), |world| {
                world
                    .channel_messages(TRIAGE)
                    .into_iter()
                    .any(|message| {
                        message.json["embeds"][0]["title"].as_str().is_some_and(|title| title.starts_with(&prefix))
                    })
                    .then_some(())
            })
            .await;
        latencies.push(sent.elapsed());
    }
    let stats = Stats { count, elapsed: started.elapsed(), latencies };
    println!("  alert → card : {}", stats.line());
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    running.stop().await.expect("stops");
}

/// A bare serenity bot: answers every button at once, records nothing. The click baseline.
struct BareBot;

#[serenity::async_trait]
impl serenity::all::EventHandler for BareBot {
    async fn interaction_create(&self, ctx: serenity::all::Context, interaction: serenity::all::Interaction) {
        if let serenity::all::Interaction::Component(component) = interaction {
            let _ = component.create_response(&ctx.http, serenity::all::CreateInteractionResponse::Acknowledge).await;
        }
    }
}

/// Clicks `count` buttons on `message` one after another; returns dispatch → answer times.
/// Clicks `count` times, three rounds, and keeps the round with the lowest p99: a stall of the
/// shared machine lands on either side of the comparison at random, and the best round of each
/// side is what the code itself costs.
async fn click_times(simulator: &Simulator, message: u64, buttons: &[String], count: usize) -> Stats {
    let mut best: Option<Stats> = None;
    for _ in 0..3 {
        let round = click_round(simulator, message, buttons, count).await;
        if best.as_ref().is_none_or(|best| round.percentile(0.99) < best.percentile(0.99)) {
            best = Some(round);
        }
    }
    best.expect("three rounds")
}

async fn click_round(simulator: &Simulator, message: u64, buttons: &[String], count: usize) -> Stats {
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for index in 0..count {
        let interaction = simulator.click(SAM, message, &buttons[index % buttons.len()]);
        simulator.response(interaction, Duration::from_secs(30)).await;
        let took = simulator.with_world(|world| {
            world
                .interactions
                .get(&interaction)
                .and_then(|record| record.response.as_ref().map(|(_, at)| at.duration_since(record.dispatched_at)))
        });
        latencies.push(took.unwrap_or_default());
    }
    Stats { count, elapsed: started.elapsed(), latencies }
}

async fn bench_click() {
    println!("== click: INTERACTION_CREATE dispatched → callback received, 1 000 clicks, best of 3 rounds");
    let count = 1000;
    let simulator = simulator().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let running = start_vouch(folder.path(), Some(&simulator)).await;
    let base = format!("http://{}", running.address);
    reqwest::Client::new()
        .post(format!("{base}/api/v1/alerts"))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(alert("click-1", "WS-17", "SRV-DB-01"))
        .send()
        .await
        .expect("sent");
    let card = simulator
        .wait_for("the card", Duration::from_secs(30), |world| {
            world.channel_messages(TRIAGE).into_iter().find(|message| !message.buttons().is_empty()).cloned()
        })
        .await;
    let buttons: Vec<String> = card
        .buttons()
        .into_iter()
        .filter(|(label, _, _)| label.contains("normal use") || label == "Does not fit")
        .map(|(_, id, _)| id)
        .collect();
    let vouch = click_times(&simulator, card.id, &buttons, count).await;
    let baseline = bare_bot_click_times(&card, &buttons, count).await;
    // The floor a durable click cannot go under: one small record made durable in the same
    // store, one after another, with nothing else running.
    let store_service = Arc::clone(&running.service);
    let durable_write = tokio::task::spawn_blocking(move || {
        let round = || {
            let started = Instant::now();
            let latencies = (0..count)
                .map(|index| {
                    let sent = Instant::now();
                    let detail = json!({"index": index});
                    store_service.record(vouch_playbook::AuditKind::StoreProbe, None, None, detail).expect("recorded");
                    sent.elapsed()
                })
                .collect();
            Stats { count, elapsed: started.elapsed(), latencies }
        };
        (0..3).map(|_| round()).min_by_key(|round| round.percentile(0.99)).expect("three rounds")
    })
    .await
    .expect("floor");
    println!("  bare serenity bot, no recording : {}", baseline.line());
    println!("  Vouch, click recorded durably   : {}", vouch.line());
    println!("  one durable write alone (floor) : {}", durable_write.line());
    println!(
        "  p50 {:.2}x, p99 {:.2}x the baseline; the bare bot plus the durable write alone would be p50 {:.2}x, p99 {:.2}x",
        vouch.percentile(0.5).as_secs_f64() / baseline.percentile(0.5).as_secs_f64(),
        vouch.percentile(0.99).as_secs_f64() / baseline.percentile(0.99).as_secs_f64(),
        (baseline.percentile(0.5) + durable_write.percentile(0.5)).as_secs_f64()
            / baseline.percentile(0.5).as_secs_f64(),
        (baseline.percentile(0.99) + durable_write.percentile(0.99)).as_secs_f64()
            / baseline.percentile(0.99).as_secs_f64()
    );
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    running.stop().await.expect("stops");
}

/// The click baseline: a bare serenity bot clicked on a copy of Vouch's card.
async fn bare_bot_click_times(card: &discord_simulator::StoredMessage, buttons: &[String], count: usize) -> Stats {
    let bare_simulator = simulator().await;
    // Baseline: a bare serenity bot with the same HTTP client set-up, answering the same clicks
    // on the same card at once.
    bare_simulator.add_text_channel(TRIAGE, "triage");
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("ca.pem"), bare_simulator.ca_pem().unwrap_or_default()).expect("write");
    let settings = vouch_config::DiscordSettings {
        api_base: bare_simulator.api_base(),
        ca_file: Some(folder.path().join("ca.pem")),
        token: vouch_config::Secret::new(DISCORD_TOKEN.to_string(), "bench".to_string()),
        guild_id: vouch_playbook::Snowflake::parse(&discord_simulator::GUILD_ID.to_string()).expect("id"),
        triage_channel_id: vouch_playbook::Snowflake::parse(&TRIAGE.to_string()).expect("id"),
        soc_role_id: vouch_playbook::Snowflake::parse(&SOC_ROLE.to_string()).expect("id"),
        oncall_role_id: None,
        dm_confirmers: false,
    };
    let http = vouch::discord::build_http(&settings).await.expect("http");
    let mut client = serenity::all::ClientBuilder::new_with_http(http, serenity::all::GatewayIntents::GUILDS)
        .event_handler(BareBot)
        .await
        .expect("client");
    let shards = std::sync::Arc::clone(&client.shard_manager);
    tokio::spawn(async move {
        let _ = client.start().await;
    });
    bare_simulator
        .wait_for("the bare bot to connect", Duration::from_secs(30), |world| {
            (world.gateway_identifies > 0).then_some(())
        })
        .await;
    // The same message as Vouch's card, so Discord sends the same interaction to both bots.
    let same_card =
        json!({"content": card.json["content"], "embeds": card.json["embeds"], "components": card.json["components"]});
    let message = bare_simulator.post_message(TRIAGE, &same_card);
    let baseline = click_times(&bare_simulator, message, buttons, count).await;
    shards.shutdown_all().await;

    baseline
}

async fn bench_storm() {
    let grouped: usize = 10_000;
    let distinct: usize = std::env::var("STORM_DISTINCT").ok().and_then(|text| text.parse().ok()).unwrap_or(100);
    println!(
        "== storm: {grouped} alerts of one movement in 60 s plus {distinct} distinct, channel limited to 5 posts / 5 s"
    );
    let simulator = simulator().await;
    simulator.limit_channel_posts(5, Duration::from_secs(5));
    let folder = tempfile::tempdir().expect("temp dir");
    let running = start_vouch(folder.path(), Some(&simulator)).await;
    let base = format!("http://{}", running.address);
    let started = Instant::now();
    let storm = {
        let base = base.clone();
        let interval = Duration::from_secs(60) / grouped as u32;
        tokio::spawn(async move {
            paced(&base, grouped, interval, |index| alert(&format!("storm-one-{index}"), "WS-66", "SRV-DB-01")).await
        })
    };
    let spread = post_alerts(&base, 8, distinct, true, "storm").await;
    let storm = storm.await.expect("storm");
    println!("  storm of one movement : {}", storm.line());
    println!("  distinct movements    : {}", spread.line());
    let cases = distinct + 1;
    simulator
        .wait_for("every card", Duration::from_secs(distinct as u64 * 2 + 120), |world| {
            (world.channel_messages(TRIAGE).into_iter().filter(|message| message.ephemeral_for.is_none()).count()
                >= cases)
                .then_some(())
        })
        .await;
    let last_card = started.elapsed();
    let floor = Duration::from_secs(((cases.saturating_sub(5)) as u64).div_ceil(5) * 5);
    let all_cases = running.service.store.cases(None).expect("cases");
    let storm_case = all_cases
        .iter()
        .find(|case| case.alert().source.hostname.as_deref() == Some("WS-66"))
        .expect("the storm's case")
        .clone();
    let counted: u64 = all_cases.iter().map(|case| case.alert_count).sum();
    assert_eq!(counted, (grouped + distinct) as u64, "every alert is counted in a case");
    simulator.with_world(|world| {
        let mut titles = world.embed_titles(TRIAGE);
        let posted = titles.len();
        titles.sort();
        titles.dedup();
        assert_eq!((posted, titles.len()), (cases, cases), "every case posted once");
        let posts = world.message_posts(TRIAGE);
        let mut early = 0;
        for (index, request) in posts.iter().enumerate() {
            if let Some(wait) = request.retry_after {
                early += posts[index + 1..].iter().filter(|later| later.at < request.at + wait).count();
            }
        }
        let limited = posts.iter().filter(|request| request.status == 429).count();
        println!("  429 answers: {limited}; requests sent before a 429's retry_after ran out: {early}");
    });
    println!(
        "  the storm's case counted {} alerts (sent {grouped}); all cases together {counted}",
        storm_case.alert_count
    );
    println!(
        "  last card after {:.1} s; the 5 / 5 s floor for {cases} cards is {:.0} s ({:.2}x)",
        last_card.as_secs_f64(),
        floor.as_secs_f64(),
        last_card.as_secs_f64() / floor.as_secs_f64().max(1.0)
    );
    running.stop().await.expect("stops");
}

async fn bench_footprint() {
    let cases: usize =
        std::env::var("BENCH_FOOTPRINT_CASES").ok().and_then(|text| text.parse().ok()).unwrap_or(100_000);
    let repeats_per_case = 9;
    let repeats = cases * repeats_per_case;
    let alerts = cases + repeats;
    println!("== footprint: {alerts} alerts in {cases} cases ({repeats_per_case} repeats each)");
    let new_alert = |index: usize| alert(&format!("fp-{index}"), "WS-17", &format!("SRV-fp-{index}"));
    let repeat_alert =
        move |index: usize| alert(&format!("fp-repeat-{index}"), "WS-17", &format!("SRV-fp-{}", index % cases));

    // Baseline, the same run: raw sled holding the same alert payloads alone, one per key.
    let baseline_folder = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let baseline_size = {
        let db = sled::Config::new().path(baseline_folder.path()).flush_every_ms(None).open().expect("sled");
        for index in 0..alerts {
            let body = if index < cases { new_alert(index) } else { repeat_alert(index - cases) };
            db.insert((index as u64).to_be_bytes(), body.into_bytes()).expect("insert");
        }
        db.flush().expect("flush");
        drop(db);
        let db = sled::Config::new().path(baseline_folder.path()).open().expect("sled reopens");
        db.size_on_disk().expect("size")
    };
    let baseline_per_alert = baseline_size as f64 / alerts as f64;
    println!(
        "  baseline, raw sled      : {:.1} MiB = {baseline_per_alert:.0} bytes per alert ({:.1} s to write)",
        baseline_size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let folder = tempfile::tempdir().expect("temp dir");
    // BENCH_FOOTPRINT_KEEP=1 keeps the store afterwards (for profiling what it holds).
    let folder = if std::env::var_os("BENCH_FOOTPRINT_KEEP").is_some() {
        let kept = folder.keep();
        println!("  the store is kept in {}", kept.display());
        Kept::Folder(kept)
    } else {
        Kept::Temporary(folder)
    };
    let running = start_vouch(folder.path(), None).await;
    let base = format!("http://{}", running.address);
    let opened = post_bodies(&base, 32, cases, new_alert).await;
    println!("  {cases} new cases       : {}", opened.line());
    running.stop().await.expect("stops");
    // Settled: written, flushed, closed and opened again.
    let running = start_vouch(folder.path(), None).await;
    let after_cases = running.service.store.size_on_disk().unwrap_or(0);
    let per_case = after_cases as f64 / cases as f64;
    let base = format!("http://{}", running.address);
    let grouped = post_bodies(&base, 32, repeats, repeat_alert).await;
    println!("  {repeats} repeats        : {}", grouped.line());
    running.stop().await.expect("stops");
    let started = Instant::now();
    let running = start_vouch(folder.path(), None).await;
    let reopened = started.elapsed();
    let after_repeats = running.service.store.size_on_disk().unwrap_or(0);
    let per_repeat = after_repeats.saturating_sub(after_cases) as f64 / repeats as f64;
    println!(
        "  on disk: {:.1} MiB after the cases = {per_case:.0} bytes per new case ({:.1}x the raw alert); {:.1} MiB after the repeats = {per_repeat:.0} bytes per grouped alert ({:.1}x)",
        after_cases as f64 / 1048576.0,
        per_case / baseline_per_alert,
        after_repeats as f64 / 1048576.0,
        per_repeat / baseline_per_alert
    );
    println!("  reopen and ready        : {:.0} ms", reopened.as_secs_f64() * 1000.0);

    running.stop().await.expect("stops");
    // What the store holds live, by key prefix, against its size on disk.
    {
        // sled lets go of its file lock a moment after the store closes.
        let opened_at = Instant::now();
        let db = loop {
            match sled::Config::new().path(folder.path().join("data")).cache_capacity(64 << 20).open() {
                Ok(db) => break db,
                Err(error) if opened_at.elapsed() < Duration::from_secs(5) => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("the store, read raw: {error}"),
            }
        };
        let mut by_prefix: std::collections::BTreeMap<String, (u64, u64)> = std::collections::BTreeMap::new();
        for entry in db.iter() {
            let (key, value) = entry.expect("entry");
            let prefix = String::from_utf8_lossy(&key[..key.len().min(2)]).to_string();
            let slot = by_prefix.entry(prefix).or_default();
            slot.0 += 1;
            slot.1 += (key.len() + value.len()) as u64;
        }
        let live: u64 = by_prefix.values().map(|(_, bytes)| bytes).sum();
        let parts: Vec<String> = by_prefix
            .iter()
            .map(|(prefix, (count, bytes))| format!("{prefix} {count}×{:.0}", *bytes as f64 / *count as f64))
            .collect();
        println!("  live keys and values    : {:.1} MiB ({})", live as f64 / 1048576.0, parts.join(", "));
    }

    // Reading the history: a Vouch of its own (this process has held a million alerts' worth of
    // clients and buffers) serves 1 000 pages of 100 cases, following `next` links.
    let mut server = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .args(["footprint-serve", folder.path().to_str().expect("utf-8 path")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the serving Vouch starts");
    let mut address = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.stdout.take().expect("stdout")), &mut address)
        .expect("it says where it listens");
    let base = format!("http://{}", address.trim());
    let server_status = format!("/proc/{}/status", server.id());
    let memory = |field: &str| status_mib(&server_status, field);
    let resident_before = memory("VmRSS:");
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let first = "/api/v1/cases?state=open&limit=100";
    let mut path = first.to_string();
    let mut listed = 0;
    while latencies.len() < 1_000 {
        let sent = Instant::now();
        let page: serde_json::Value = client
            .get(format!("{base}{path}"))
            .bearer_auth(INGEST_TOKEN)
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("a page");
        latencies.push(sent.elapsed());
        listed += page["cases"].as_array().map_or(0, Vec::len);
        path = page["next"].as_str().unwrap_or(first).to_string();
    }
    let pages = Stats { count: latencies.len(), elapsed: latencies.iter().sum(), latencies };
    // The serving Vouch's own account of its heap: how much of its RSS is live allocations.
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("metrics");
    let allocated = metrics
        .lines()
        .find_map(|line| line.strip_prefix("vouch_memory_allocated_bytes "))
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0.0, |bytes| bytes / 1048576.0);
    println!(
        "  1 000 pages of 100 cases: p50 {:.1} ms, p99 {:.1} ms ({listed} cases listed); the serving Vouch's RSS {resident_before:.1} MiB before, {:.1} MiB after ({allocated:.1} MiB of live allocations), peak {:.1} MiB",
        pages.percentile(0.50).as_secs_f64() * 1000.0,
        pages.percentile(0.99).as_secs_f64() * 1000.0,
        memory("VmRSS:"),
        memory("VmHWM:")
    );
    let _ = server.kill();
    let _ = server.wait();

    // Baseline for that memory, the same store: raw sled, opened with Vouch's cache setting and
    // its freed memory handed back as Vouch does, then reading every key a listing of open cases
    // reads (the open-case index, the summaries, the latest activities), each once.
    let raw = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .args(["footprint-raw-sled", folder.path().to_str().expect("utf-8 path")])
        .output()
        .expect("the raw sled reader runs");
    println!("  raw sled on the same store: {}", String::from_utf8_lossy(&raw.stdout).trim());
}

/// The footprint bench's store folder: removed at the end, or kept for a later look.
enum Kept {
    Temporary(tempfile::TempDir),
    Folder(std::path::PathBuf),
}

impl Kept {
    fn path(&self) -> &Path {
        match self {
            Kept::Temporary(folder) => folder.path(),
            Kept::Folder(path) => path,
        }
    }
}

/// Opens the footprint bench's store with raw sled and reads what a listing reads: the RSS of
/// sled alone on that store, idle and after reading.
fn read_footprint_store_raw() {
    let folder = std::env::args().nth(2).expect("the store's folder");
    // Vouch's cache setting, read from the configuration the serving Vouch started with.
    let config = vouch_config::load(&Path::new(&folder).join("vouch.toml"), &Environment)
        .unwrap_or_else(|error| panic!("{error}"));
    let vouch_config::StorageBackend::Sled { cache_capacity_mib, .. } = config.settings.storage.backend else {
        panic!("the footprint bench runs on sled");
    };
    let db = sled::Config::new()
        .path(Path::new(&folder).join("data"))
        .cache_capacity(cache_capacity_mib << 20)
        .open()
        .expect("the store opens raw");
    vouch::memory::return_freed_memory();
    let idle = rss_mib();
    let mut bytes = 0;
    for prefix in [&b"p/"[..], b"j/", b"v/"] {
        for entry in db.scan_prefix(prefix) {
            let (key, value) = entry.expect("an entry");
            bytes += key.len() + value.len();
        }
    }
    let allocated = vouch::memory::allocator_statistics().map_or(0.0, |memory| memory.allocated as f64 / 1048576.0);
    println!(
        "RSS {idle:.1} MiB opened, {:.1} MiB after reading the listing's keys once ({:.1} MiB of them; {allocated:.1} MiB of live allocations)",
        rss_mib(),
        bytes as f64 / 1048576.0
    );
}

/// Serves the footprint bench's store from this process until it is killed; prints where.
async fn serve_footprint_store() {
    let folder = std::env::args().nth(2).expect("the store's folder");
    let running = start_vouch(Path::new(&folder), None).await;
    println!("{}", running.address);
    std::future::pending::<()>().await;
}

/// CPU time used by this whole process (Vouch and the bench's clients together), user and system.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |value: libc::timeval| Duration::new(value.tv_sec as u64, value.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Resident set size of this process, from /proc.
fn rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmRSS:")
}

/// A memory figure from a process's status file (`/proc/<pid>/status`, in KiB there), in MiB.
fn status_mib(status: &str, field: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with(field)).map(str::to_string))
        .and_then(|line| line.split_whitespace().nth(1).and_then(|kib| kib.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        match which.as_str() {
            "ingest" => bench_ingest().await,
            "card" => bench_card().await,
            "footprint" => bench_footprint().await,
            "click" => bench_click().await,
            "storm" => bench_storm().await,
            "directory" => bench_directory().await,
            // Internal: the footprint bench's Vouch in a process of its own, so its memory is
            // measured alone.
            "footprint-serve" => serve_footprint_store().await,
            // Internal: the footprint bench's memory baseline, raw sled on the same store.
            "footprint-raw-sled" => read_footprint_store_raw(),
            "ingest-postgres" => postgres::bench_ingest_postgres().await,
            "failover" => postgres::bench_failover().await,
            // Internal: one replica of the failover bench, in a process of its own.
            "replica" => postgres::serve_replica().await,
            "all" => {
                bench_ingest().await;
                bench_click().await;
                bench_card().await;
                bench_storm().await;
                bench_footprint().await;
                bench_directory().await;
                postgres::bench_failover().await;
            }
            other => {
                eprintln!(
                    "unknown benchmark {other}: ingest, click, card, storm, footprint, directory, ingest-postgres, failover or all"
                );
                std::process::exit(2);
            }
        }
    });
}

/// One sync, with its peak measured from a reset just before it: (changes applied, seconds,
/// peak RSS in MiB). `what` names it if it was not applied.
async fn measured_sync(
    keeper: &vouch::directory_sync::DirectoryKeeper,
    request: vouch::directory_sync::SyncRequest<'_>,
    at: vouch_playbook::Timestamp,
    what: &str,
) -> (usize, f64, f64) {
    reset_peak_rss();
    let started = Instant::now();
    let outcome = keeper.sync(request, at).await;
    let seconds = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    match &outcome[0].1 {
        vouch::directory_sync::SyncOutcome::Applied(changes) => (changes.len(), seconds, peak),
        other => panic!("{what} did not apply: {other:?}"),
    }
}

/// Peak resident memory since the last reset, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
}

/// Resets the peak to the current resident memory, so the next phase's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The raw paged LDAP searches a sync makes, alone (entries counted and dropped): the floor of
/// any sync.
async fn raw_ldap_search(url: &str, page_size: i32, searches: Vec<(String, Vec<&str>)>) -> usize {
    use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
    let (connection, mut ldap) = ldap3::LdapConnAsync::new(url).await.expect("connect");
    ldap3::drive!(connection);
    ldap.simple_bind(vouch_tests::slapd::ADMIN_DN, vouch_tests::slapd::ADMIN_PASSWORD)
        .await
        .and_then(|result| result.success())
        .expect("bind");
    let mut entries = 0;
    for (filter, attributes) in searches {
        let adapters: Vec<Box<dyn Adapter<_, _>>> =
            vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(page_size))];
        let mut stream = ldap
            .streaming_search_with(adapters, vouch_tests::slapd::SUFFIX, ldap3::Scope::Subtree, &filter, attributes)
            .await
            .expect("search");
        while stream.next().await.expect("entry").is_some() {
            entries += 1;
        }
        stream.finish().await.success().expect("search finished");
    }
    entries
}

/// The searches a sync makes, everything or (with a cursor, an entryCSN) what changed since.
fn sync_searches(changed_since: Option<&str>) -> Vec<(String, Vec<&'static str>)> {
    let changed = |filter: &str| match changed_since {
        Some(cursor) => format!("(&{filter}(entryCSN>={cursor}))"),
        None => filter.to_string(),
    };
    vec![
        (
            changed("(objectClass=inetOrgPerson)"),
            vec!["sAMAccountName", "userPrincipalName", "displayName", "cn", "manager", "memberOf", "department"],
        ),
        (
            changed("(objectClass=msDS-GroupManagedServiceAccount)"),
            vec!["sAMAccountName", "managedBy", "description", "memberOf"],
        ),
        (changed("(objectClass=computer)"), vec!["cn", "dNSHostName", "managedBy", "memberOf"]),
        ("(objectClass=groupOfNames)".to_string(), vec!["member"]),
    ]
}

/// A full directory sync from LDAP of a large organisation, against the raw search alone.
async fn bench_directory() {
    if !vouch_tests::slapd::available() {
        return;
    }
    let size =
        |name: &str, default: usize| std::env::var(name).ok().and_then(|text| text.parse().ok()).unwrap_or(default);
    let people = size("BENCH_DIRECTORY_PEOPLE", 50_000);
    let computers = size("BENCH_DIRECTORY_COMPUTERS", 100_000);
    let suffix = vouch_tests::slapd::SUFFIX;
    println!(
        "== directory: a full LDAP sync of {people} people and {computers} computers vs the raw paged search alone"
    );
    let mut ldif = String::with_capacity((people + computers) * 260);
    for index in 0..people {
        // A management tree: everyone but the first ten reports to someone ten times earlier.
        let manager =
            if index >= 10 { format!("manager: cn=p{:06},ou=People,{suffix}\n", index / 10) } else { String::new() };
        ldif.push_str(&format!(
            "dn: cn=p{index:06},ou=People,{suffix}\nobjectClass: inetOrgPerson\nobjectClass: vouchTestAdUser\ncn: p{index:06}\n\
             sn: Person {index}\ndisplayName: Person {index}\nsAMAccountName: p{index:06}\nuserPrincipalName: p{index:06}@corp.example\n{manager}\n"
        ));
    }
    for index in 0..computers {
        let (name, ou) = if index % 4 == 0 {
            (format!("srv{index:07}"), "Servers")
        } else {
            (format!("ws{index:07}"), "Workstations")
        };
        ldif.push_str(&format!(
            "dn: cn={name},ou={ou},{suffix}\nobjectClass: computer\ncn: {name}\ndNSHostName: {name}.corp.example\n\
             managedBy: cn=p{:06},ou=People,{suffix}\n\n",
            index % people.max(1)
        ));
    }
    ldif.push_str(&format!("dn: cn=Helpdesk,ou=Groups,{suffix}\nobjectClass: groupOfNames\ncn: Helpdesk\n"));
    for index in (0..people).step_by(50) {
        ldif.push_str(&format!("member: cn=p{index:06},ou=People,{suffix}\n"));
    }
    ldif.push('\n');
    let loading = Instant::now();
    let slapd = vouch_tests::slapd::Slapd::start_loaded(&ldif);
    drop(ldif);
    println!("  slapadd of {} entries: {:.1} s", people + computers + 1, loading.elapsed().as_secs_f64());

    let page_size = 500;
    let started = Instant::now();
    let entries = raw_ldap_search(&slapd.url(), page_size, sync_searches(None)).await;
    let raw_seconds = started.elapsed().as_secs_f64();
    println!("  raw paged search alone        : {entries} entries in {raw_seconds:.2} s");

    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("directory.toml"), "# nothing local\n").expect("write");
    let settings = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = {{ env = \"VOUCH_INGEST_TOKEN\" }}\n[storage]\ndata_dir = \"data\"\n\
         [directory]\nfile = \"directory.toml\"\n{}",
        vouch_tests::slapd::source_settings(&slapd).replace("page_size = 2", &format!("page_size = {page_size}"))
    );
    std::fs::write(folder.path().join("vouch.toml"), settings).expect("write");
    let config =
        vouch_config::load(&folder.path().join("vouch.toml"), &Environment).unwrap_or_else(|error| panic!("{error}"));
    std::fs::create_dir_all(folder.path().join("data")).expect("data dir");
    let store = Arc::new(
        vouch_storage::Store::open(&folder.path().join("data"), &vouch_storage::StoreOptions::default())
            .expect("store"),
    );
    let keeper = vouch::directory_sync::DirectoryKeeper::open(config.settings.directory.clone(), Arc::clone(&store))
        .expect("keeper");
    let resident_before = rss_mib();
    let now = vouch_playbook::Timestamp::from_unix_millis(1_764_500_000_000);
    let (changes, full_seconds, peak) =
        measured_sync(&keeper, vouch::directory_sync::SyncRequest::default(), now, "the sync").await;
    println!(
        "  Vouch full sync               : {changes} changes audited in {full_seconds:.2} s = {:.1}x the raw search; \
         peak RSS {peak:.0} MiB (resident before {resident_before:.0} MiB, after {:.0} MiB)",
        full_seconds / raw_seconds,
        rss_mib()
    );

    // A hundred managers change; the next sync reads everything again and audits the hundred.
    let mut modify = String::new();
    for index in 0..100.min(people.saturating_sub(20)) {
        let person = 20 + index;
        modify.push_str(&format!(
            "dn: cn=p{person:06},ou=People,{suffix}\nchangetype: modify\nreplace: manager\nmanager: cn=p{:06},ou=People,{suffix}\n\n",
            (person + 1) % 10
        ));
    }
    slapd.modify(&modify);
    let started = Instant::now();
    let cursor = {
        let snapshots = store.directory_snapshots().expect("snapshots");
        // Only the cursor is parsed: a whole `Value` of the snapshot would leave the bench's
        // own hundred MiB in the resident size the next sync's peak is measured from.
        #[derive(serde::Deserialize)]
        struct Cursor {
            cursor: Option<String>,
        }
        let snapshot: Cursor = serde_json::from_slice(&snapshots[0]).expect("a snapshot");
        snapshot.cursor.expect("the full sync kept a cursor")
    };
    let changed = raw_ldap_search(&slapd.url(), page_size, sync_searches(Some(&cursor))).await;
    println!("  raw search of what changed    : {changed} entries in {:.3} s", started.elapsed().as_secs_f64());
    let later = vouch_playbook::Timestamp::from_unix_millis(now.unix_millis() + 600_000);
    let (changes, again_seconds, peak) =
        measured_sync(&keeper, vouch::directory_sync::SyncRequest::default(), later, "the second sync").await;
    println!(
        "  Vouch sync after 100 changes  : {changes} changes in {again_seconds:.2} s (incremental: only what changed is \
         read); peak RSS {peak:.0} MiB, after {:.0} MiB",
        rss_mib()
    );

    // The scheduled full resync: read whole again while the directory in use stays in memory
    // beside the one being compiled (the first load had nothing beside it).
    let resident_before = rss_mib();
    let resync_at = vouch_playbook::Timestamp::from_unix_millis(now.unix_millis() + 1_200_000);
    let request = vouch::directory_sync::SyncRequest { full: true, ..Default::default() };
    let (changes, resync_seconds, peak) = measured_sync(&keeper, request, resync_at, "the full resync").await;
    println!(
        "  Vouch full resync             : {changes} changes in {resync_seconds:.2} s; \
         peak RSS {peak:.0} MiB (resident before {resident_before:.0} MiB, after {:.0} MiB)",
        rss_mib()
    );
    let directory = keeper.shared().get();
    let lookups = Instant::now();
    let alert_count = 100_000;
    for index in 0..alert_count {
        let alert = vouch_playbook::model::System {
            hostname: Some(format!("ws{:07}", (index * 4 + 1) % computers.max(1))),
            ..Default::default()
        };
        std::hint::black_box(directory.asset_for(&alert));
    }
    println!(
        "  directory lookup on ingest    : {:.2} µs per machine lookup among {} machines",
        lookups.elapsed().as_secs_f64() * 1e6 / alert_count as f64,
        directory.assets().count()
    );
}
