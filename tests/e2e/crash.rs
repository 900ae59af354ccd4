//! Durability: whatever Vouch answered 202 to survives SIGKILL at any moment.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::support::{get_json, native_alert, post_alert, Workspace};

/// A small deterministic generator, so a failing round can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

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
        let (status, body) = post_alert(&vouch.base, &native_alert(alert_id, "ignored", "ignored", "ignored")).await;
        assert_eq!(status, 202);
        assert_eq!(body["status"], "duplicate", "{alert_id}");
        assert_eq!(body["case_id"].as_str(), Some(case_id.as_str()));
    }
    assert_eq!(vouch.terminate(), 0, "a clean SIGTERM exits 0");
    let config = workspace.config();
    let (code, stdout, stderr) =
        workspace.run_command(&["audit", "verify", "--config", config.to_str().expect("path")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");
}
