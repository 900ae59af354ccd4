//! The PostgreSQL backend against a real server (Debian's `postgresql`) the test owns: the
//! database dies in the middle of a burst, and a database written by a newer Vouch. (The rest
//! of the suite runs on PostgreSQL too with `VOUCH_E2E_BACKEND=postgres`.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vouch_tests::postgres_server::{self, PostgresServer};

use crate::support::{get_json, native_alert, post_alert, Workspace};

/// Waits until `done` holds, failing the test with `what` after `limit`.
async fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PostgreSQL killed (SIGKILL, as a crash) while four senders keep posting: every 202 was
/// committed before it was sent, the requests meanwhile get 503 (never a 202 that is lost, never
/// anything else), Vouch takes alerts again by itself once the database is back, and the audit
/// chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_killed_mid_burst_loses_no_acknowledged_alert_and_vouch_comes_back_by_itself() {
    if !postgres_server::available() {
        return;
    }
    let mut server = PostgresServer::start();
    let workspace = Workspace::new("");
    workspace.use_database(&server.database("vouch"));
    let vouch = workspace.start();
    let base = vouch.base.clone();

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (base, acknowledged, unavailable, stop) =
            (base.clone(), Arc::clone(&acknowledged), Arc::clone(&unavailable), Arc::clone(&stop));
        senders.push(tokio::spawn(async move {
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) {
                index += 1;
                let alert = native_alert(&format!("burst-{sender}-{index}"), "WS-17", &format!("SRV-{index}"), "alice");
                let (status, body) = post_alert(&base, &alert).await;
                match status {
                    202 => acknowledged.lock().unwrap().push(body["case_id"].as_str().expect("id").to_string()),
                    503 => {
                        unavailable.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("with the database down an alert gets 202 or 503, not {other}: {body}"),
                }
            }
        }));
    }
    let count = || acknowledged.lock().unwrap().len();
    until(Duration::from_secs(60), "200 alerts acknowledged", || count() >= 200).await;
    server.kill();
    let at_the_kill = count();
    until(Duration::from_secs(30), "alerts refused with 503 while the database is down", || {
        unavailable.load(Ordering::Relaxed) >= 20
    })
    .await;
    let (status, health) = get_json(&base, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("store_failed")), "health shows the outage");
    // In flight at the kill, a few may have been committed and answered; none after.
    let during_the_outage = count();
    assert!(during_the_outage <= at_the_kill + 4, "no 202 while the database is down");

    server.run();
    until(Duration::from_secs(60), "alerts acknowledged again once the database is back", || {
        count() >= during_the_outage + 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.expect("sender");
    }
    let log = vouch.log_once_it_says("the store was reopened after a failure", 1).await;
    assert!(log.contains("the store was reopened after a failure"), "{log}");
    let (status, health) = get_json(&base, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let acknowledged = acknowledged.lock().unwrap().clone();
    eprintln!(
        "database killed mid-burst: {} acknowledged, {} refused with 503",
        acknowledged.len(),
        unavailable.load(Ordering::Relaxed)
    );
    for case_id in &acknowledged {
        let (status, _) = get_json(&base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "{case_id} was acknowledged, so it was committed");
    }
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}

/// A database whose schema a newer Vouch wrote is refused at start, saying so, and left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_written_by_a_newer_vouch_is_refused_at_start() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    let workspace = Workspace::new("");
    workspace.use_database(&server.database("vouch"));
    let vouch = workspace.start();
    assert_eq!(vouch.terminate(), 0);
    let applied = server.sql("vouch", "SELECT string_agg(version::text, ',' ORDER BY version) FROM vouch_migrations");
    assert!(applied.starts_with("1,2"), "the migrations ran in order: {applied}");

    server.sql("vouch", "INSERT INTO vouch_migrations (version, purpose) VALUES (999, 'from the future')");
    let config = workspace.config();
    let (code, _, stderr) = workspace.run_command(&["run", "--config", config.to_str().expect("path")]);
    assert_ne!(code, 0, "a newer schema must stop Vouch");
    assert!(stderr.contains("schema is version 999, newer than this Vouch knows"), "{stderr}");
    let tables = server.sql("vouch", "SELECT count(*) FROM vouch_migrations");
    assert_eq!(tables, applied.split(',').count().saturating_add(1).to_string(), "nothing was changed");
}

/// `vouch migrate` copies a sled store into an empty PostgreSQL database whole (cases, the audit
/// chain, counters), verifies the chain on arrival, and Vouch carries on from it; into a
/// database in use it refuses and copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_migrates_into_postgres_whole_and_never_into_a_database_in_use() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    let workspace = Workspace::new("");
    workspace.use_sled();
    let vouch = workspace.start();
    for (index, target) in ["SRV-DB-01", "SRV-APP-02", "SRV-DB-01"].iter().enumerate() {
        let (status, body) =
            post_alert(&vouch.base, &native_alert(&format!("m-{index}"), "WS-17", target, "alice")).await;
        assert_eq!((status, body["case_id"].as_str()), (202, Some(["LM-1", "LM-2", "LM-1"][index])));
    }
    let mut cases = Vec::new();
    for case_id in ["LM-1", "LM-2"] {
        cases.push(get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await.1);
    }
    assert_eq!(vouch.terminate(), 0);
    let sled_audit = workspace.assert_audit_intact();

    std::fs::write(workspace.folder.path().join("database_url"), server.database("vouch")).expect("write");
    let postgres = workspace.write_settings_with_storage(
        "postgres.toml",
        "[storage]\nbackend = \"postgres\"\nurl = { file = \"database_url\" }\npool_size = 2\n",
    );
    let sled = workspace.config();
    let (from, to) = (sled.to_str().expect("path"), postgres.to_str().expect("path"));
    let (code, stdout, stderr) = workspace.run_command(&["migrate", "--from-config", from, "--to-config", to]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("the audit chain verifies on arrival"), "{stdout}");
    let rows = server.sql("vouch", "SELECT count(*) FROM vouch_kv");
    assert!(stdout.contains(&format!("copied {rows} records")), "every record arrived ({rows} rows): {stdout}");
    let (code, postgres_audit, stderr) = workspace.run_command(&["audit", "verify", "--config", to]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(postgres_audit, sled_audit, "the same chain, to the same head");

    let vouch = workspace.start_command(workspace.command(&["run", "--config", to]));
    for (case_id, case) in ["LM-1", "LM-2"].iter().zip(&cases) {
        let (status, copied) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!((status, &copied), (200, case), "{case_id} is as it was");
    }
    let (_, body) = post_alert(&vouch.base, &native_alert("m-after", "WS-17", "SRV-FILE-03", "alice")).await;
    assert_eq!(body["case_id"], "LM-3", "numbering carries on");
    assert_eq!(vouch.terminate(), 0);

    // Into a database in use: refused, nothing copied.
    let rows = server.sql("vouch", "SELECT count(*) FROM vouch_kv");
    let (code, _, stderr) = workspace.run_command(&["migrate", "--from-config", from, "--to-config", to]);
    assert_ne!(code, 0);
    assert!(stderr.contains("the target store is not empty"), "{stderr}");
    assert_eq!(server.sql("vouch", "SELECT count(*) FROM vouch_kv"), rows, "nothing was copied");
}

/// With `tls = "require"`, Vouch talks to PostgreSQL over TLS only, and checks the server's
/// certificate against the CA it was given: a server whose certificate another CA signed is
/// refused at start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_and_the_servers_certificate_checked_against_the_configured_ca() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start_with_tls();
    let workspace = Workspace::new("");
    std::fs::write(workspace.folder.path().join("database_url"), server.database("vouch")).expect("write");
    std::fs::write(workspace.folder.path().join("db-ca.pem"), server.tls_ca_pem.as_deref().expect("CA"))
        .expect("write");
    let storage = "[storage]\nbackend = \"postgres\"\nurl = { file = \"database_url\" }\ntls = \"require\"\nca_file = \"db-ca.pem\"\n";
    workspace.write_settings_with_storage("vouch.toml", storage);
    let vouch = workspace.start();
    let (status, _) = post_alert(&vouch.base, &native_alert("tls-1", "WS-17", "SRV-DB-01", "alice")).await;
    assert_eq!(status, 202);
    let encrypted = server.sql(
        "vouch",
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'vouch'",
    );
    assert_eq!(encrypted, "t", "every connection of Vouch's is encrypted");
    assert_eq!(vouch.terminate(), 0);

    // Another CA: the certificate does not check out, and Vouch does not start.
    let (other_ca, _, _) = postgres_server::test_certificate("127.0.0.1");
    std::fs::write(workspace.folder.path().join("db-ca.pem"), other_ca).expect("write");
    let config = workspace.config();
    let (code, _, stderr) = workspace.run_command(&["run", "--config", config.to_str().expect("path")]);
    assert_ne!(code, 0, "an unknown certificate must stop Vouch");
    assert!(stderr.contains("cannot open the store in PostgreSQL") && stderr.contains("certificate"), "{stderr}");
}

/// A change that leaves work for the leader (a queued effect, a notice) wakes a listener on
/// another connection, as another replica's would be; a change that leaves none does not.
#[test]
fn a_change_that_leaves_work_wakes_the_replicas_listening() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    let options = vouch_storage::PostgresOptions {
        url: server.database("vouch"),
        pool_size: 2,
        tls: vouch_storage::PostgresTls::Disabled,
    };
    let (writer, leader) = (
        vouch_storage::Store::open_postgres(&options).expect("opens"),
        vouch_storage::Store::open_postgres(&options).expect("opens"),
    );
    let listener = leader.listen_for_work().expect("listens").expect("a PostgreSQL store listens");
    let quiet = |transaction: &mut dyn vouch_storage::Transaction| {
        transaction.set_marker("quiet", vouch_playbook::Timestamp::from_unix_millis(1));
        Ok(())
    };
    writer.write(quiet).expect("written").wait().expect("durable");
    assert!(!listener.wait(Duration::from_millis(300)).expect("waits"), "a change that leaves no work wakes nobody");
    writer
        .write(|transaction| transaction.queue_notice("a notice for the SOC channel"))
        .expect("written")
        .wait()
        .expect("durable");
    assert!(listener.wait(Duration::from_secs(10)).expect("waits"), "a queued notice wakes the leader");
    assert_eq!(leader.notices().expect("read").len(), 1);
}
