//! Durability: whatever Vouch answered 202 to survives SIGKILL at any moment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::support::{get_json, native_alert, post_alert, Lcg, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_alerts_survive_sigkill() {
    let rounds: u64 = std::env::var("VOUCH_E2E_CRASH_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(6);
    let seed = 0x5eed_0001;
    let mut random = Lcg(seed);
    let workspace = Workspace::new("");
    // Alert id → case id, for every alert answered 202.
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    for round in 0..rounds {
        let vouch = workspace.start();
        let kill_after = 5 + random.next(40) as usize;
        let senders = 6;
        let (progress_sender, mut progress) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut tasks = Vec::new();
        for sender in 0..senders {
            let base = vouch.base.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let progress_sender = progress_sender.clone();
            let targets = 1 + random.next(4);
            tasks.push(tokio::spawn(async move {
                for index in 0..40 {
                    let id = format!("r{round}-s{sender}-{index}");
                    // A few movements repeat, so crashes also hit grouping.
                    let alert =
                        native_alert(&id, &format!("WS-{sender}"), &format!("SRV-{}", index as u64 % targets), "alice");
                    let response = tokio::time::timeout(std::time::Duration::from_secs(20), async {
                        let request = crate::support::client()
                            .post(format!("{base}/api/v1/alerts"))
                            .bearer_auth(crate::support::INGEST_TOKEN)
                            .header("content-type", "application/json")
                            .body(alert.to_string());
                        request.send().await
                    })
                    .await;
                    let Ok(Ok(response)) = response else { return };
                    if response.status().as_u16() != 202 {
                        return;
                    }
                    let Ok(body) = response.json::<serde_json::Value>().await else { return };
                    let case_id = body["case_id"].as_str().unwrap_or_default().to_string();
                    acknowledged.lock().expect("lock").insert(id, case_id);
                    let _ = progress_sender.send(());
                }
            }));
        }
        drop(progress_sender);
        let mut seen = 0;
        while seen < kill_after && progress.recv().await.is_some() {
            seen += 1;
        }
        vouch.kill_hard();
        for task in tasks {
            let _ = task.await;
        }
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() as u64 >= rounds * 5, "each round acknowledged alerts before the kill");
    let vouch = workspace.start();
    let mut per_case: BTreeMap<String, u64> = BTreeMap::new();
    for case_id in acknowledged.values() {
        *per_case.entry(case_id.clone()).or_default() += 1;
    }
    for (case_id, count) in &per_case {
        let (status, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "case {case_id} was acknowledged but is gone (seed {seed:#x})");
        let stored = case["alert_count"].as_u64().expect("count");
        assert!(stored >= *count, "case {case_id}: {count} alerts acknowledged, {stored} stored (seed {seed:#x})");
    }
    // The idempotency index survived too: every acknowledged alert is now a duplicate.
    for (alert_id, case_id) in acknowledged.iter().take(50) {
        let (status, body) =
            post_alert(&vouch.base, &native_alert(alert_id, "ignored-source", "ignored-target", "ignored")).await;
        assert_eq!(status, 202);
        assert_eq!(body["status"], "duplicate", "{alert_id}");
        assert_eq!(body["case_id"].as_str(), Some(case_id.as_str()));
    }
    assert_eq!(vouch.terminate(), 0, "a clean SIGTERM exits 0");
    let stdout = workspace.assert_audit_intact();
    assert!(stdout.contains("audit log intact"), "{stdout}");
}

/// With Discord: SIGKILL while cards are posted and clicks answered. Every click Discord got an
/// answer for is in the audit log, every case gets exactly one card, the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_clicks_survive_sigkill_and_cards_are_never_doubled() {
    use crate::support::{SOC_ROLE, TRIAGE_CHANNEL};

    const SAM: u64 = 100_000_000_000_000_004;
    let rounds: u64 = std::env::var("VOUCH_E2E_CRASH_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(6);
    let seed = 0x5eed_0002;
    let mut random = Lcg(seed);
    let simulator =
        crate::support::guild(true, &[(SAM, "sam", &[SOC_ROLE]), (100_000_000_000_000_002, "bob", &[])]).await;
    let workspace = Workspace::discord(&simulator);
    let mut clicks: Vec<u64> = Vec::new();
    let mut posted = 0;
    for round in 0..rounds {
        let vouch = workspace.start();
        for index in 0..3 {
            let (status, _) = post_alert(
                &vouch.base,
                &native_alert(&format!("c{round}-{index}"), "WS-17", &format!("SRV-{round}-{index}"), "alice"),
            )
            .await;
            assert_eq!(status, 202);
            posted += 1;
        }
        // Click answers on whatever cards exist, and kill after a seeded number of answers.
        let answers_before_kill = 1 + random.next(6) as usize;
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while answered < answers_before_kill && tokio::time::Instant::now() < deadline {
            let cards: Vec<discord_simulator::StoredMessage> = simulator.with_world(|world| {
                world
                    .channel_messages(TRIAGE_CHANNEL)
                    .into_iter()
                    .filter(|message| message.ephemeral_for.is_none())
                    .cloned()
                    .collect()
            });
            if cards.is_empty() {
                simulator
                    .wait_for("a card", std::time::Duration::from_secs(30), |world| {
                        (!world.channel_messages(TRIAGE_CHANNEL).is_empty()).then_some(())
                    })
                    .await;
                continue;
            }
            let card = &cards[random.next(cards.len() as u64) as usize];
            let buttons: Vec<String> = card
                .buttons()
                .into_iter()
                .filter(|(label, _, disabled)| !disabled && (label.contains("normal use") || label.contains("fit")))
                .map(|(_, id, _)| id)
                .collect();
            let Some(custom_id) = buttons.get(random.next(buttons.len().max(1) as u64) as usize) else { continue };
            let interaction = simulator.click(SAM, card.id, custom_id);
            clicks.push(interaction);
            simulator.response(interaction, std::time::Duration::from_secs(30)).await;
            answered += 1;
        }
        // A few more clicks in flight as the process dies.
        for _ in 0..random.next(3) {
            if let Some(card) = simulator.with_world(|world| {
                world
                    .channel_messages(TRIAGE_CHANNEL)
                    .into_iter()
                    .find(|message| message.ephemeral_for.is_none())
                    .cloned()
            }) {
                if let Some((_, custom_id, _)) = card.buttons().into_iter().find(|(label, _, _)| label.contains("fit"))
                {
                    clicks.push(simulator.click(SAM, card.id, &custom_id));
                }
            }
        }
        vouch.kill_hard();
    }

    let vouch = workspace.start();
    simulator
        .wait_for(&format!("{posted} cards"), std::time::Duration::from_secs(120), |world| {
            (world
                .channel_messages(TRIAGE_CHANNEL)
                .into_iter()
                .filter(|message| message.ephemeral_for.is_none())
                .count()
                >= posted)
                .then_some(())
        })
        .await;
    let mut recorded_clicks = 0;
    for number in 1..=posted {
        let (status, case) = get_json(&vouch.base, &format!("/api/v1/cases/LM-{number}")).await;
        assert_eq!(status, 200, "every acknowledged alert has its case (seed {seed:#x})");
        recorded_clicks +=
            case["events"].as_array().expect("events").iter().filter(|event| event["kind"] == "click.answer").count();
    }
    let acknowledged = simulator.with_world(|world| {
        clicks.iter().filter(|id| world.interactions.get(id).is_some_and(|record| record.response.is_some())).count()
    });
    assert!(
        recorded_clicks >= acknowledged,
        "{acknowledged} clicks answered but {recorded_clicks} recorded (seed {seed:#x})"
    );
    eprintln!("crash with Discord: {rounds} rounds, {posted} cases, {} clicks, {acknowledged} answered, {recorded_clicks} recorded", clicks.len());
    simulator.with_world(|world| {
        let cards = crate::support::cards_posted_and_distinct(world);
        assert_eq!(cards, (posted, posted), "one card per case, none twice (seed {seed:#x})");
    });
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}

/// A full disk: writes fail, the ingest answers 503 (never a 202 it cannot keep), and after a
/// restart with room again every acknowledged alert is there and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_recovers_without_a_restart_and_loses_nothing_acknowledged() {
    use std::os::unix::process::CommandExt;
    if crate::support::on_postgres() {
        // A file-size limit fills sled's files; PostgreSQL's outage is `postgres::the_database_killed_mid_burst_…`.
        eprintln!("skipped on PostgreSQL: the full disk is sled's files");
        return;
    }
    let workspace = Workspace::new("");
    let config = workspace.config();
    let mut command = workspace.command(&["run", "--config", config.to_str().expect("path")]);
    // The data files may not grow past this size: past it, writes fail as on a full disk.
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 6 * 1024 * 1024, rlim_max: libc::RLIM_INFINITY };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let vouch = workspace.start_command(command);
    let mut acknowledged = Vec::new();
    let mut unavailable = 0;
    for index in 0..4000 {
        let mut alert = native_alert(&format!("full-{index}"), "WS-17", &format!("SRV-{index}"), "alice");
        alert["program"] = serde_json::json!({"command_line": "x".repeat(3000)});
        let (status, body) = post_alert(&vouch.base, &alert).await;
        match status {
            202 => acknowledged.push(body["case_id"].as_str().expect("id").to_string()),
            503 => {
                unavailable += 1;
                if unavailable >= 3 {
                    break;
                }
            }
            other => panic!("a full disk must answer 202 or 503, not {other}: {body}"),
        }
    }
    assert!(unavailable >= 3, "the disk never filled up ({} acknowledged)", acknowledged.len());
    assert!(!acknowledged.is_empty());
    eprintln!("full disk: {} alerts acknowledged, then 503", acknowledged.len());
    let log = vouch.log_once_it_says("the store refused a write", 1).await;
    assert!(log.contains("the store refused a write"), "the failure is logged:\n{log}");
    let (status, health) = get_json(&vouch.base, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (503, Some("store_failed")), "health shows the failure");

    // Make room: lift the running process's file-size limit. Vouch reopens its store by itself
    // and takes alerts again, without a restart.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: prlimit on our own child process, with a valid limit and no old-limit pointer.
    let lifted =
        unsafe { libc::prlimit(vouch.pid() as libc::pid_t, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
    assert_eq!(lifted, 0, "cannot lift the limit: {}", std::io::Error::last_os_error());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut attempt = 0;
    let recovered_case = loop {
        attempt += 1;
        let alert = native_alert(&format!("after-room-{attempt}"), "WS-17", "SRV-ROOM", "alice");
        let (status, body) = post_alert(&vouch.base, &alert).await;
        match status {
            202 => break body["case_id"].as_str().expect("id").to_string(),
            503 if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => panic!("with room again Vouch must take alerts, got {other}: {body}\n{}", vouch.log()),
        }
    };
    let log = vouch.log_once_it_says("the store was reopened after a failure", 1).await;
    assert!(log.contains("the store was reopened after a failure"), "{log}");
    let (status, health) = get_json(&vouch.base, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    for case_id in acknowledged.iter().chain([&recovered_case]) {
        let (status, _) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "{case_id} was acknowledged; the reopened store has it");
    }

    // And everything acknowledged, before and after, survives a hard kill.
    vouch.kill_hard();
    let vouch = workspace.start();
    for case_id in acknowledged.iter().chain([&recovered_case]) {
        let (status, _) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "{case_id} was acknowledged");
    }
    let (status, _) = post_alert(&vouch.base, &native_alert("after-full", "WS-17", "SRV-X", "alice")).await;
    assert_eq!(status, 202, "after a restart, Vouch takes alerts");
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}
