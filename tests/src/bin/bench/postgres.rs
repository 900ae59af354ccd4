//! The PostgreSQL backend's benchmarks, against a real server started for the run (fsync on, as
//! in production): durable ingest compared with the same transactions issued straight through
//! the driver, and how long a standby takes to lead after the leader is killed.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vouch_tests::postgres_server::{self, PostgresServer};

use crate::{keep_faster, post_alerts, records_of_one_case, start_vouch_with, RecordSet, Stats, INGEST_TOKEN};

/// The reads Vouch makes inside a new case's transaction, by key: the sender's alert id, the
/// movement's open case, its history and its source's count, the case counter, the audit head,
/// the effect counter and the notice counter (the vouches given in advance are one range scan).
const READS_PER_CHANGE: usize = 8;

/// The `[storage]` table of a Vouch in `folder` on the database at `url`, which it keeps in a
/// file beside the configuration (a secret is never written in it).
fn storage(folder: &Path, url: &str) -> &'static str {
    std::fs::write(folder.join("database_url"), url).expect("write");
    "[storage]\nbackend = \"postgres\"\nurl = { file = \"database_url\" }\npool_size = 8\n"
}

/// Vouch's side: the best of three rounds, like the baseline.
async fn best_vouch_round(base: &str, senders: usize, count: usize, distinct: bool) -> Stats {
    let mut best: Option<Stats> = None;
    for round in 0..3 {
        let tag = format!("pg{}{senders}-{round}", if distinct { "d" } else { "g" });
        let run = post_alerts(base, senders, count, distinct, &tag).await;
        keep_faster(&mut best, run, Stats::rate);
    }
    best.expect("three rounds")
}

/// The baseline: for each alert, one transaction shaped like Vouch's for a new case, issued
/// straight through the driver by `writers` threads with a connection each: the writer lock,
/// the reads, the records of one case (unique keys per alert, shared counters overwritten) in one
/// upsert, commit.
fn driver_transactions(url: &str, writers: usize, count: usize, records: &RecordSet) -> Stats {
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let (url, records) = (url.to_string(), Arc::clone(records));
            std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
                let get = client.prepare("SELECT v FROM vouch_kv WHERE k = $1").expect("prepare");
                let scan =
                    client.prepare("SELECT k FROM vouch_kv WHERE k >= $1 AND k < $2 ORDER BY k").expect("prepare");
                let upsert = client
                    .prepare(
                        "INSERT INTO vouch_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    )
                    .expect("prepare");
                let mut latencies = Vec::new();
                for index in (writer..count).step_by(writers) {
                    let sent = Instant::now();
                    let keyed = |key: &[u8], shared: bool| crate::record_key(key, shared, index);
                    let mut transaction = client.transaction().expect("begin");
                    transaction.execute("SELECT pg_advisory_xact_lock(1)", &[]).expect("lock");
                    for (key, _, shared) in records.iter().take(READS_PER_CHANGE) {
                        transaction.query_opt(&get, &[&keyed(key, *shared)]).expect("read");
                    }
                    transaction.query(&scan, &[&b"t/".to_vec(), &b"t0".to_vec()]).expect("scan");
                    let keys: Vec<Vec<u8>> = records.iter().map(|(key, _, shared)| keyed(key, *shared)).collect();
                    let values: Vec<Vec<u8>> = records.iter().map(|(_, value, _)| value.clone()).collect();
                    transaction.execute(&upsert, &[&keys, &values]).expect("write");
                    transaction.commit().expect("commit");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let latencies = crate::joined(threads);
    Stats { count, elapsed: started.elapsed(), latencies }
}

pub async fn bench_ingest_postgres() {
    println!("== ingest on PostgreSQL: durable POST /api/v1/alerts vs the same transactions through the driver");
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start_durable();
    let records = records_of_one_case().await;
    let folder = tempfile::tempdir().expect("temp dir");
    let url = server.database("vouch");
    let running = start_vouch_with(folder.path(), None, storage(folder.path(), &url)).await;
    let base = format!("http://{}", running.address);
    let baseline_url = server.database("baseline");
    // The baseline's table, as Vouch's migrations make it.
    server.sql("baseline", "CREATE TABLE vouch_kv (k bytea PRIMARY KEY, v bytea NOT NULL)");
    for senders in [1usize, 8, 64] {
        let count = if senders == 1 { 500 } else { 2000 };
        let mut baseline: Option<Stats> = None;
        for _ in 0..3 {
            let (url, records) = (baseline_url.clone(), Arc::clone(&records));
            let run = tokio::task::spawn_blocking(move || driver_transactions(&url, senders, count, &records))
                .await
                .expect("baseline");
            keep_faster(&mut baseline, run, Stats::rate);
        }
        let baseline = baseline.expect("three runs");
        let distinct = best_vouch_round(&base, senders, count, true).await;
        let grouped = best_vouch_round(&base, senders, count, false).await;
        println!("  {senders:>2} sender(s)  driver, one transaction per alert: {}", baseline.line());
        println!(
            "              Vouch, distinct cases             : {}  = {:.2}x the driver",
            distinct.line(),
            distinct.rate() / baseline.rate()
        );
        println!(
            "              Vouch, one grouped case           : {}  = {:.2}x the driver",
            grouped.line(),
            grouped.rate() / baseline.rate()
        );
    }
    running.stop().await.expect("stops");
}

/// One replica of the failover bench: Vouch from the configuration in the folder given, in a
/// process of its own so it can be killed; prints its address.
pub async fn serve_replica() {
    let folder = std::env::args().nth(2).expect("the replica's folder");
    let config = vouch_config::load(&Path::new(&folder).join("vouch.toml"), &crate::Environment)
        .unwrap_or_else(|error| panic!("{error}"));
    let running = vouch::app::start(config).await.expect("vouch starts");
    println!("{}", running.address);
    std::future::pending::<()>().await;
}

struct Replica {
    child: std::process::Child,
    base: String,
}

fn start_replica(folder: &Path) -> Replica {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("this program"))
        .arg("replica")
        .arg(folder)
        .env("VOUCH_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("replica starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address");
    Replica { child, base: format!("http://{}", line.trim()) }
}

async fn role(client: &reqwest::Client, base: &str) -> Option<String> {
    let health: serde_json::Value = client.get(format!("{base}/healthz")).send().await.ok()?.json().await.ok()?;
    health["role"].as_str().map(str::to_string)
}

async fn until_role(client: &reqwest::Client, base: &str, wanted: &str) -> Duration {
    let started = Instant::now();
    while role(client, base).await.as_deref() != Some(wanted) {
        assert!(started.elapsed() < Duration::from_secs(60), "{base} did not become {wanted}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Two replicas on one database; the leader is killed (SIGKILL) ten times, and each time the
/// time until the other one says it leads is measured; the killed one comes back as a standby.
pub async fn bench_failover() {
    println!("== failover: SIGKILL the leader of two replicas, time until the standby leads");
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start_durable();
    let folder = tempfile::tempdir().expect("temp dir");
    crate::write_config(folder.path(), storage(folder.path(), &server.database("vouch")));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().expect("client");
    let mut leader = start_replica(folder.path());
    until_role(&client, &leader.base, "leader").await;
    let mut standby = start_replica(folder.path());
    until_role(&client, &standby.base, "standby").await;
    let mut takeovers = Vec::new();
    for _ in 0..10 {
        // Alerts keep coming to the standby meanwhile: it takes them whoever leads.
        let (status, _) = post(&client, &standby.base).await;
        assert_eq!(status, 202);
        leader.child.kill().expect("kill");
        leader.child.wait().expect("reaped");
        takeovers.push(until_role(&client, &standby.base, "leader").await);
        leader = start_replica(folder.path());
        until_role(&client, &leader.base, "standby").await;
        std::mem::swap(&mut leader, &mut standby);
    }
    takeovers.sort();
    println!(
        "  10 takeovers after SIGKILL: median {:.2} s, max {:.2} s (all: {:?})",
        takeovers[takeovers.len() / 2].as_secs_f64(),
        takeovers[takeovers.len() - 1].as_secs_f64(),
        takeovers.iter().map(|taken| (taken.as_secs_f64() * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    for mut replica in [leader, standby] {
        let _ = replica.child.kill();
        let _ = replica.child.wait();
    }
}

async fn post(client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let index = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let response = client
        .post(format!("{base}/api/v1/alerts"))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/json")
        .body(crate::alert(&format!("failover-{index}"), "WS-17", &format!("SRV-F-{index}")))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
