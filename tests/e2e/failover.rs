//! Several Vouch processes on one PostgreSQL (a real server the test owns), the Discord simulator
//! and an EDR webhook receiver: the leader killed (after a click was answered, between an
//! isolation request's retries, in the middle of a 2 000-alert burst) or paused, and a standby
//! taking over. Nothing acknowledged is lost, nothing is done twice, the audit chain verifies.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vouch_tests::postgres_server::{self, PostgresServer};

use crate::isolation::{click_card, setup, thread_says, wait_for_requests};
use crate::support::{
    card, cards_posted_and_distinct, get_json, native_alert, post_alert, Running, Workspace, TRIAGE_CHANNEL,
};

const SAM: u64 = 100_000_000_000_000_004;
/// The bound on a takeover; the leadership's own is about 12 s for a stuck leader.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(15);

/// What `/healthz` says this replica is (`leader`, `standby`), `None` when it does not answer.
async fn role(base: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let response = client.get(format!("{base}/healthz")).send().await.ok()?;
    let health: serde_json::Value = response.json().await.ok()?;
    health["role"].as_str().map(str::to_string)
}

/// Waits until the replica at `base` says it is `wanted`; how long that took.
async fn until_role(base: &str, wanted: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if role(base).await.as_deref() == Some(wanted) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{base} did not become {wanted} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts one more replica and waits until it stands by.
async fn standby(workspace: &Workspace) -> Running {
    let replica = workspace.start();
    until_role(&replica.base, "standby", Duration::from_secs(30)).await;
    replica
}

fn case_kinds(case: &serde_json::Value) -> Vec<String> {
    case["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| event["kind"].as_str())
        .map(str::to_string)
        .collect()
}

/// (c) SIGKILL right after a click was answered, (b) between an isolation request's retries and
/// (a) in the middle of a 2 000-alert burst sent to two replicas: each time a standby leads
/// within the limit; afterwards every acknowledged alert and click is there, every case has one
/// card, the isolation request one webhook-id and one accepted delivery, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_from_a_killed_leader_and_nothing_acknowledged_is_lost_or_doubled() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    // The receiver fails the first three attempts, then accepts.
    let (simulator, workspace, receiver) = setup(vec![500, 500, 500]).await;
    workspace.use_database(&server.database("vouch"));
    let first = workspace.start();
    until_role(&first.base, "leader", Duration::from_secs(30)).await;
    let second = standby(&workspace).await;
    let mut takeovers = Vec::new();

    // (c) A standby takes alerts; the leader posts the card and answers a click, then dies.
    let (status, body) = post_alert(&second.base, &native_alert("fo-1", "WS-17", "SRV-DB-01", "alice")).await;
    assert_eq!(status, 202, "a standby takes alerts: {body}\n{}", second.log());
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card_message = card(&simulator, &case_id).await;
    assert_eq!(click_card(&simulator, SAM, card_message.id, "Escalate").await["type"], 7);
    first.kill_hard();
    takeovers.push(until_role(&second.base, "leader", TAKEOVER_LIMIT).await);
    let (_, case) = get_json(&second.base, &format!("/api/v1/cases/{case_id}")).await;
    assert!(case_kinds(&case).iter().any(|kind| kind == "click.escalate"), "the answered click is recorded: {case}");

    // (b) The new leader delivers an isolation with retries, and dies between two of them.
    let third = standby(&workspace).await;
    assert_eq!(click_card(&simulator, SAM, card_message.id, "Isolate target").await["type"], 7);
    wait_for_requests(&receiver, 2).await;
    second.kill_hard();
    takeovers.push(until_role(&third.base, "leader", TAKEOVER_LIMIT).await);
    thread_says(&simulator, card_message.id, "The edr webhook accepted the request to isolate SRV").await;
    let received = receiver.lock().expect("receiver").received.clone();
    assert!(received.iter().all(|attempt| attempt.id == received[0].id), "one webhook-id for every attempt");
    assert_eq!(received.iter().filter(|attempt| attempt.answered == 200).count(), 1, "isolated exactly once");

    // (a) 2 000 alerts of 20 movements, sent to two replicas, the leader killed midway: an alert
    // its replica could not answer is sent to the other one, as a sender retries.
    let fourth = standby(&workspace).await;
    let bases = [third.base.clone(), fourth.base.clone()];
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..4_usize {
        let (bases, acknowledged, answered) = (bases.clone(), Arc::clone(&acknowledged), Arc::clone(&answered));
        senders.push(tokio::spawn(async move {
            for index in (sender..2_000).step_by(4) {
                let alert = native_alert(&format!("burst-{index}"), "WS-17", &format!("SRV-B{}", index % 20), "alice");
                let mut attempt = index;
                let deadline = Instant::now() + Duration::from_secs(60);
                let case_id = loop {
                    let base = &bases[attempt % 2];
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
                    let sent = client
                        .post(format!("{base}/api/v1/alerts"))
                        .bearer_auth(crate::support::INGEST_TOKEN)
                        .header("content-type", "application/json")
                        .body(alert.to_string())
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        let status = response.status().as_u16();
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        match status {
                            202 => break body["case_id"].as_str().expect("id").to_string(),
                            503 => {}
                            other => panic!("an alert gets 202 or 503 during a takeover, not {other}: {body}"),
                        }
                    }
                    assert!(Instant::now() < deadline, "alert {index} was never acknowledged");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                acknowledged.lock().expect("acknowledged").insert(case_id);
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let midway = Instant::now() + Duration::from_secs(60);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 700 {
        assert!(Instant::now() < midway, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    third.kill_hard();
    takeovers.push(until_role(&fourth.base, "leader", TAKEOVER_LIMIT).await);
    for sender in senders {
        sender.await.expect("sender");
    }
    let burst_cases = acknowledged.lock().expect("acknowledged").clone();
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 2_000, "every alert acknowledged once");
    assert_eq!(burst_cases.len(), 20, "20 movements, 20 cases: {burst_cases:?}");
    let mut alerts = 0;
    for case_id in &burst_cases {
        let (status, case) = get_json(&fourth.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "{case_id} was acknowledged");
        alerts += case["alert_count"].as_u64().expect("alert count");
    }
    assert_eq!(alerts, 2_000, "every acknowledged alert is counted on its case");

    // Every case gets exactly one card, whoever led when it opened.
    let cases = burst_cases.len() + 1;
    simulator
        .wait_for(&format!("{cases} cards"), Duration::from_secs(120), |world| {
            (world.embed_titles(TRIAGE_CHANNEL).len() >= cases).then_some(())
        })
        .await;
    simulator.with_world(|world| {
        assert_eq!(cards_posted_and_distinct(world), (cases, cases), "one card per case, none twice");
    });
    let (_, metrics) = get_text(&fourth.base, "/metrics").await;
    assert!(metrics.contains("vouch_leadership_takeovers_total 1"), "{metrics}");
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    eprintln!("failover: takeovers after SIGKILL took {takeovers:?}");
    assert_eq!(fourth.terminate(), 0);
    workspace.assert_audit_intact();
}

async fn get_text(base: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{base}{path}")).await.expect("request sent");
    (response.status().as_u16(), response.text().await.expect("text"))
}

/// A leader paused with SIGSTOP keeps its database session, but stops renewing its lease: a
/// standby ends that session and leads within the limit. Resumed, the old leader's first change
/// finds a newer epoch (or its lease gone) and it stands by, having changed nothing: the new
/// leader's cards and answers are the only ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_leader_is_replaced_and_once_resumed_changes_nothing_and_stands_by() {
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    let (simulator, workspace, _receiver) = setup(Vec::new()).await;
    workspace.use_database(&server.database("vouch"));
    let first = workspace.start();
    until_role(&first.base, "leader", Duration::from_secs(30)).await;
    let second = standby(&workspace).await;
    let (_, body) = post_alert(&second.base, &native_alert("pause-1", "WS-17", "SRV-DB-01", "alice")).await;
    let first_case = body["case_id"].as_str().expect("id").to_string();
    let first_card = card(&simulator, &first_case).await;

    // SAFETY: signals to our own child process.
    unsafe { libc::kill(first.pid() as libc::pid_t, libc::SIGSTOP) };
    let takeover = until_role(&second.base, "leader", TAKEOVER_LIMIT).await;
    let (_, body) = post_alert(&second.base, &native_alert("pause-2", "WS-17", "SRV-APP-02", "alice")).await;
    let second_case = body["case_id"].as_str().expect("id").to_string();
    let second_card = card(&simulator, &second_case).await;
    assert_eq!(click_card(&simulator, SAM, second_card.id, "Escalate").await["type"], 7);

    // SAFETY: as above.
    unsafe { libc::kill(first.pid() as libc::pid_t, libc::SIGCONT) };
    until_role(&first.base, "standby", Duration::from_secs(10)).await;
    // The new leader alone answers what comes next.
    assert_eq!(click_card(&simulator, SAM, first_card.id, "Escalate").await["type"], 7);
    let (_, case) = get_json(&second.base, &format!("/api/v1/cases/{first_case}")).await;
    let escalations = case_kinds(&case).iter().filter(|kind| kind.as_str() == "click.escalate").count();
    assert_eq!(escalations, 1, "one answer recorded for one click: {case}");
    simulator.with_world(|world| assert_eq!(cards_posted_and_distinct(world), (2, 2), "one card per case"));
    let log = first.log_once_it_says("stepping down", 1).await;
    assert!(log.contains("stepping down"), "the resumed leader says why it stands by: {log}");
    assert_eq!(role(&first.base).await.as_deref(), Some("standby"));
    eprintln!("failover: a paused leader was replaced after {takeover:?}");
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    assert_eq!(first.terminate(), 0);
    assert_eq!(second.terminate(), 0);
    workspace.assert_audit_intact();
}

/// Replicas see the directory one another keep: people an identity provider pushed over SCIM to
/// a standby are asked by the leader's cases, and what was pushed to the leader is listed by the
/// standby; a push based on a directory another replica changed meanwhile is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_see_the_directory_one_another_keep() {
    use crate::scim::{scim, user, ENTERPRISE};
    use crate::support::SCIM_TOKEN;
    if !postgres_server::available() {
        return;
    }
    let server = PostgresServer::start();
    let workspace = Workspace::new("");
    std::fs::write(workspace.config().with_file_name("directory.toml"), "# nothing local\n").expect("write");
    workspace.append_settings(&format!(
        "[[directory.sources]]\nname = \"okta\"\nkind = \"scim\"\ntoken = {{ env = \"VOUCH_SCIM_TOKEN\" }}\n\
         discord_id_attribute = \"{ENTERPRISE}:employeeNumber\"\n"
    ));
    workspace.use_database(&server.database("vouch"));
    let leader = workspace.start();
    until_role(&leader.base, "leader", Duration::from_secs(30)).await;
    let standby = standby(&workspace).await;
    let post = reqwest::Method::POST;

    // Bob to the standby, then Alice (managed by Bob) to the leader, then Carol to the standby.
    let (status, bob) =
        scim(&standby.base, post.clone(), "/Users", SCIM_TOKEN, Some(&user("bob@corp.example", "Bob Stone", None)))
            .await;
    assert_eq!(status, 201, "{bob}");
    let bob_id = bob["id"].as_str().expect("id").to_string();
    let alice = user("alice@corp.example", "Alice Martin", Some(&bob_id));
    let (status, answer) = scim(&leader.base, post.clone(), "/Users", SCIM_TOKEN, Some(&alice)).await;
    assert_eq!(status, 201, "the leader knows Bob, whom the standby was told of: {answer}");
    let carol = user("carol@corp.example", "Carol Diaz", None);
    let (status, answer) = scim(&standby.base, post.clone(), "/Users", SCIM_TOKEN, Some(&carol)).await;
    assert_eq!(status, 201, "{answer}");

    for base in [&leader.base, &standby.base] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, listed) = scim(base, reqwest::Method::GET, "/Users", SCIM_TOKEN, None).await;
            if listed["totalResults"] == 3 {
                break;
            }
            assert!(Instant::now() < deadline, "{base} lists every pushed user: {listed}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A case opened on either replica asks Alice's manager, whichever replica heard of whom.
    for (index, base) in [&leader.base, &standby.base].into_iter().enumerate() {
        let alert = native_alert(&format!("dir-{index}"), "WS-17", &format!("SRV-DIR-{index}"), "CORP\\alice");
        let (status, body) = post_alert(base, &alert).await;
        assert_eq!(status, 202, "{body}");
        let (_, case) = get_json(base, &format!("/api/v1/cases/{}", body["case_id"].as_str().expect("id"))).await;
        assert_eq!(case["confirmers"][0]["person"]["id"], "bob", "{case}");
    }
    assert_eq!(standby.terminate(), 0);
    assert_eq!(leader.terminate(), 0);
    workspace.assert_audit_intact();
}
