//! Retention end to end: closed cases past the limit move to archive files and leave the store,
//! open and newer ones stay, `vouch audit verify --archive` checks archives and store together
//! and catches one changed byte, and a SIGKILL in the middle of a run loses nothing and archives
//! nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vouch::{Clock, ManualClock};
use vouch_playbook::{Actor, CaseEvent, CaseId, EventKind, PersonId, Timestamp};

use crate::support::{advance, get_json, native_alert, post_alert, start_in_process, Workspace};

const DAY_MINUTES: u32 = 24 * 60;

/// Closes a case as the SOC does, through the service.
async fn close(running: &vouch::app::Running, case_id: &str, now: Timestamp) {
    let sam = Actor {
        discord_id: None,
        person: Some(PersonId::parse("sam").expect("id")),
        name: "Sam Okafor".to_string(),
        soc: true,
        roles: Vec::new(),
        linked: false,
    };
    let case_id: CaseId = case_id.parse().expect("a case id");
    let event = CaseEvent::Close { by: sam.clone(), justification: "the quarterly patch run".to_string() };
    let request = vouch::service::CaseRequest::new(case_id, EventKind::FormClose, &sam, json!({}), event);
    let change = running.service.apply_durably(request, now).await.expect("written");
    assert!(matches!(change, vouch::service::Change::Applied { .. }), "{change:?}");
}

/// Opens `count` cases, each a movement of its own, with a repeat each; their ids.
async fn open_cases(base: &str, tag: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..count {
        let source = format!("WS-{tag}-{index}");
        for copy in 0..2 {
            let (status, body) =
                post_alert(base, &native_alert(&format!("{tag}-{index}-{copy}"), &source, "SRV-DB-01", "alice")).await;
            assert_eq!(status, 202, "{body}");
            if copy == 0 {
                ids.push(body["case_id"].as_str().expect("id").to_string());
            }
        }
    }
    ids
}

/// Every case id in the archive folder's files, with how many times each appears.
fn archived_case_ids(folder: &std::path::Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for archive in vouch::retention::read_archives(folder).expect("archives read back") {
        for case in archive.cases {
            *seen.entry(case.id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

fn verify(workspace: &Workspace, archive: &std::path::Path) -> (i32, String) {
    let config = workspace.config();
    let (code, stdout, stderr) = workspace.run_command(&[
        "audit",
        "verify",
        "--config",
        config.to_str().expect("path"),
        "--archive",
        archive.to_str().expect("path"),
    ]);
    (code, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_cases_past_the_limit_are_archived_verifiably_and_a_kill_mid_run_loses_and_doubles_nothing() {
    let workspace = Workspace::new("");
    let archive = workspace.folder.path().join("archive");
    workspace.append_settings(
        "[retention]\nclosed_for_days = 30\narchive_dir = \"archive\"\ncheck_every_seconds = 86400\nmost_cases_per_run = 5000\n",
    );
    // A hundred days ago, so that what the test does with its clock is in the past for the
    // binary, which reads the real one.
    let start = Timestamp::from_unix_millis(vouch::SystemClock.now().unix_millis() - 100 * 24 * 60 * 60 * 1000);
    let clock = Arc::new(ManualClock::new(start));
    let running = start_in_process(&workspace, &clock).await;
    let base = format!("http://{}", running.address);

    // 40 cases: 25 closed now, 5 closed twenty days later, 10 left open.
    let ids = open_cases(&base, "r", 40).await;
    for id in &ids[..25] {
        close(&running, id, clock.now()).await;
    }
    // The digest counts the day's closings from the index of finished cases by time.
    let digest = vouch::timers::digest(&running.service).expect("digest");
    assert_eq!((digest.closed_expected, digest.open.len()), (25, 15));
    advance(&clock, &running, 20 * DAY_MINUTES);
    for id in &ids[25..30] {
        close(&running, id, clock.now()).await;
    }
    let digest = vouch::timers::digest(&running.service).expect("digest");
    assert_eq!((digest.closed_expected, digest.open.len()), (5, 10), "only the last day's closings");
    advance(&clock, &running, 11 * DAY_MINUTES);

    // One run: the 25 closed for 31 days go; those closed for 11 days, and the open ones, stay.
    let config = vouch_config::load(&workspace.config(), &crate::support::TestEnvironment).expect("config");
    let settings = config.settings.retention.clone().expect("[retention]");
    let ran = tokio::task::spawn_blocking({
        let service = Arc::clone(&running.service);
        let now = clock.now();
        move || vouch::retention::archive_due_cases(&service.store, &settings, now)
    })
    .await
    .expect("ran")
    .expect("archived");
    assert!(matches!(ran, vouch::retention::ArchiveRun::Archived { run: 1, cases: 25, .. }), "{ran:?}");
    for id in &ids[..25] {
        assert_eq!(get_json(&base, &format!("/api/v1/cases/{id}")).await.0, 404, "{id} left the store");
    }
    for id in &ids[25..] {
        assert_eq!(get_json(&base, &format!("/api/v1/cases/{id}")).await.0, 200, "{id} stays");
    }
    let (_, closed) = get_json(&base, "/api/v1/cases?state=closed").await;
    assert_eq!(closed["cases"].as_array().map(Vec::len), Some(5));
    // A redelivered copy of an archived alert is a new case now (its index went with it), not a 5xx.
    let (status, copy) = post_alert(&base, &native_alert("r-0-0", "WS-r-0", "SRV-DB-01", "alice")).await;
    assert_eq!((status, copy["status"].as_str()), (202, Some("new")), "{copy}");
    let copy = copy["case_id"].as_str().expect("id").to_string();
    running.stop().await.expect("stops");

    let archived = archived_case_ids(&archive);
    assert_eq!(archived.len(), 25);
    assert!(archived.values().all(|times| *times == 1));
    // The store alone verifies across the cut, and so do the archives with it.
    workspace.assert_audit_intact();
    let (code, said) = verify(&workspace, &archive);
    assert_eq!(code, 0, "{said}");
    // One changed byte of an archive is found out.
    let file = archive.join(vouch::retention::archive_file_name(1));
    let original = std::fs::read(&file).expect("read");
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(&file, &tampered).expect("write");
    let (code, said) = verify(&workspace, &archive);
    assert_ne!(code, 0, "a changed archive must not verify: {said}");
    assert!(said.contains("archive-000001.jsonl.lz4"), "{said}");
    std::fs::write(&file, &original).expect("restore");

    // `vouch cases export` streams the cases left in the store, in a time range.
    let config = workspace.config();
    let since = start.plus_millis(i64::from(DAY_MINUTES) * 60_000).to_rfc3339();
    let (code, exported, stderr) = workspace.run_command(&[
        "cases",
        "export",
        "--config",
        config.to_str().expect("path"),
        "--since",
        start.to_rfc3339().as_str(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(exported.lines().count(), 16, "15 kept and the redelivered copy: {exported}");
    let (code, exported, _) = workspace.run_command(&[
        "cases",
        "export",
        "--config",
        config.to_str().expect("path"),
        "--since",
        since.as_str(),
    ]);
    assert_eq!((code, exported.lines().count()), (0, 1), "only the copy came after the first day");

    // Many more closed cases, then a run killed while it writes its file.
    let running = start_in_process(&workspace, &clock).await;
    let base = format!("http://{}", running.address);
    let more = open_cases(&base, "k", 1_500).await;
    for id in ids[30..].iter().chain(&more).chain([&copy]) {
        close(&running, id, clock.now()).await;
    }
    running.stop().await.expect("stops");
    // The binary reads the real clock: every case closed above is 60-odd days old to it.
    let config_text = std::fs::read_to_string(workspace.config()).expect("read");
    std::fs::write(workspace.config(), config_text.replace("check_every_seconds = 86400", "check_every_seconds = 1"))
        .expect("write");
    let partial = archive.join(format!("{}.partial", vouch::retention::archive_file_name(2)));
    let vouch = workspace.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "the run never started: {}", vouch.log());
        std::thread::sleep(Duration::from_micros(200));
    }
    vouch.kill_hard();
    // Killed while the second run was writing its file: nothing of it counts as archived.
    let before_restart = archived_case_ids(&archive);
    assert_eq!(before_restart.len(), 25, "the killed run archived nothing");

    // Restarted, the run is done again, whole, once.
    let vouch = workspace.start();
    let finished = archive.join(vouch::retention::archive_file_name(2));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, open) = get_json(&vouch.base, "/api/v1/cases?state=closed&limit=1000").await;
        if finished.exists() && open["cases"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "the second run never finished: {}", vouch.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(vouch.terminate(), 0);
    assert!(!partial.exists());
    let archived = archived_case_ids(&archive);
    assert_eq!(archived.len(), 25 + 15 + 1 + 1_500, "every closed case, archived");
    assert!(archived.values().all(|times| *times == 1), "none twice");
    workspace.assert_audit_intact();
    let (code, said) = verify(&workspace, &archive);
    assert_eq!(code, 0, "{said}");
}
