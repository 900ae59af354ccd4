//! Escalation to containment: isolation requests leave through the outbox to a real HTTP
//! receiver on 127.0.0.1, signed, retried under one id, across a SIGKILL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use discord_simulator::Simulator;
use serde_json::Value;

use vouch::service::CaseRequest;

use crate::support::{card, case_until, get_json, native_alert, post_alert, Lcg, Workspace, SOC_ROLE, WEBHOOK_SECRET};

const SAM: u64 = 100_000_000_000_000_004;
const TESS: u64 = 100_000_000_000_000_009;
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: Instant,
    pub(crate) answered: u16,
}

pub(crate) struct Receiver {
    /// Statuses to answer with, in order; 200 once they run out.
    script: Vec<u16>,
    pub(crate) received: Vec<Received>,
    arrived: Arc<tokio::sync::Notify>,
}

async fn receive(State(receiver): State<Arc<Mutex<Receiver>>>, headers: HeaderMap, body: String) -> StatusCode {
    let mut receiver = receiver.lock().expect("receiver");
    let answered = if receiver.script.is_empty() { 200 } else { receiver.script.remove(0) };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("").to_string();
    receiver.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        at: Instant::now(),
        answered,
    });
    receiver.arrived.notify_waiters();
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// Waits (bounded) until the receiver has seen `count` requests.
pub(crate) async fn wait_for_requests(receiver: &Arc<Mutex<Receiver>>, count: usize) {
    let arrived = Arc::clone(&receiver.lock().expect("receiver").arrived);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let notified = arrived.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if receiver.lock().expect("receiver").received.len() >= count {
            return;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "the receiver saw fewer than {count} requests"
        );
    }
}

async fn start_receiver(script: Vec<u16>) -> (String, Arc<Mutex<Receiver>>) {
    let receiver = Arc::new(Mutex::new(Receiver { script, received: Vec::new(), arrived: Arc::default() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().route("/isolate", axum::routing::post(receive)).with_state(Arc::clone(&receiver));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/isolate"), receiver)
}

pub(crate) async fn setup(script: Vec<u16>) -> (Simulator, Workspace, Arc<Mutex<Receiver>>) {
    let members: [(u64, &str, &[u64]); 3] =
        [(SAM, "sam", &[SOC_ROLE]), (TESS, "tess", &[SOC_ROLE]), (100_000_000_000_000_002, "bob", &[])];
    let simulator = crate::support::guild(true, &members).await;
    let (url, receiver) = start_receiver(script).await;
    let workspace = Workspace::discord(&simulator);
    workspace.append_settings(&format!(
        "[[webhooks]]\nname = \"edr\"\nurl = \"{url}\"\npreset = \"generic\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n\n\
         [delivery]\nmax_attempts = 6\nfirst_retry_ms = 400\nmax_retry_ms = 5000\ntimeout_ms = 5000\n"
    ));
    (simulator, workspace, receiver)
}

/// Clicks a card button by label once the card shows it, and waits for the answer.
pub(crate) async fn click_card(simulator: &Simulator, user: u64, card_id: u64, label: &str) -> Value {
    let custom_id = simulator
        .wait_for(&format!("a {label} button"), WAIT, |world| {
            world
                .message(card_id)
                .and_then(|card| card.buttons().into_iter().find(|(text, _, disabled)| text == label && !disabled))
                .map(|(_, id, _)| id)
        })
        .await;
    let clicked = simulator.click(user, card_id, &custom_id);
    simulator.response(clicked, WAIT).await
}

pub(crate) async fn thread_says(simulator: &Simulator, thread: u64, fragment: &str) -> String {
    simulator
        .wait_for(&format!("the thread to say {fragment:?}"), WAIT, |world| {
            world
                .channel_messages(thread)
                .into_iter()
                .find(|message| message.content().contains(fragment))
                .map(|message| message.content().to_string())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_is_signed_retried_under_one_id_and_survives_sigkill() {
    let (simulator, workspace, receiver) = setup(vec![500, 500, 500]).await;
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("iso-1", "WS-17", "SRV-DB-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    assert_eq!(click_card(&simulator, SAM, card.id, "Escalate").await["type"], 7);
    assert_eq!(click_card(&simulator, SAM, card.id, "Isolate target").await["type"], 7);

    // Kill Vouch in the middle of the retries; the restarted one finishes the delivery.
    wait_for_requests(&receiver, 2).await;
    vouch.kill_hard();
    let vouch = workspace.start();
    thread_says(&simulator, card.id, "The edr webhook accepted the request to isolate SRV").await;

    let received = receiver.lock().expect("receiver").received.clone();
    assert!(received.len() >= 4, "three failures then success: {} attempts", received.len());
    let first = &received[0];
    assert!(received.iter().all(|attempt| attempt.id == first.id), "one webhook-id for every attempt: {received:#?}");
    assert_eq!(first.id, format!("{case_id}-target-isolate-1:edr"));
    assert_eq!(received.iter().filter(|attempt| attempt.answered == 200).count(), 1, "isolated exactly once");
    // Backoff between attempts (first retry after 400 ms ± 20%, then doubling). The gap that spans
    // the kill is the restarted process retrying an attempt whose answer was never recorded.
    let gaps: Vec<Duration> = received.windows(2).map(|pair| pair[1].at.duration_since(pair[0].at)).collect();
    let backoffs: Vec<Duration> =
        gaps.iter().enumerate().filter(|(index, _)| *index != 1).map(|(_, gap)| *gap).collect();
    assert!(backoffs.iter().all(|gap| *gap >= Duration::from_millis(300)), "backoff between attempts: {gaps:?}");
    assert!(
        gaps.iter().all(|gap| *gap < Duration::from_secs(4)),
        "retries come when due, not on a slow poll: {gaps:?}"
    );
    let secret = vouch_config::Secret::new(WEBHOOK_SECRET.to_string(), "test".to_string());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    for attempt in &received {
        vouch::auth::verify_signature(
            std::slice::from_ref(&secret),
            Some(&attempt.id),
            Some(&attempt.timestamp),
            Some(&attempt.signature),
            attempt.body.as_bytes(),
            now,
        )
        .unwrap_or_else(|error| panic!("the signature of {} does not verify: {error}", attempt.id));
        let body: Value = serde_json::from_str(&attempt.body).expect("JSON body");
        assert_eq!(body["action"], "isolate");
        assert_eq!(body["target"]["edr_ids"]["crowdstrike"], "aid-srv-db-01", "the target's EDR id from the directory");
        assert_eq!(body["requested_by"]["name"], "Sam Okafor");
        assert_eq!(body["case_id"], case_id);
    }
    assert!(received.windows(2).all(|pair| pair[0].body == pair[1].body), "every attempt sends the same body");

    let (_, case) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    let kinds: Vec<&str> =
        case["events"].as_array().expect("events").iter().filter_map(|event| event["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"outbox.enqueued") && kinds.contains(&"outbox.attempt") && kinds.contains(&"outbox.delivered"),
        "{kinds:?}"
    );
    let leaked = case.to_string().contains(WEBHOOK_SECRET) || vouch.log().contains(WEBHOOK_SECRET);
    assert!(!leaked, "the webhook secret never appears in the case API or the log");
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_system_needs_a_second_soc_member() {
    let (simulator, workspace, receiver) = setup(Vec::new()).await;
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("iso-2", "WS-17", "DC-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    click_card(&simulator, SAM, card.id, "Escalate").await;
    click_card(&simulator, SAM, card.id, "Isolate target").await;
    thread_says(&simulator, card.id, "a second SOC member must approve").await;
    let again = click_card(&simulator, SAM, card.id, "Approve isolating target").await;
    assert_eq!(again["data"]["flags"], 64, "the same member cannot approve: {again}");
    assert!(again.to_string().contains("second SOC member"), "{again}");
    assert!(receiver.lock().expect("receiver").received.is_empty(), "nothing was sent before approval");
    click_card(&simulator, TESS, card.id, "Approve isolating target").await;
    thread_says(&simulator, card.id, "The edr webhook accepted the request to isolate DC").await;
    let received = receiver.lock().expect("receiver").received.clone();
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_str(&received[0].body).expect("JSON");
    assert_eq!(body["approved_by"]["discord_id"], TESS.to_string());
    assert_eq!(body["target"]["edr_ids"]["crowdstrike"], "aid-dc-01");

    // Release goes through the same path, under its own id.
    click_card(&simulator, SAM, card.id, "Release target").await;
    thread_says(&simulator, card.id, "accepted the request to release DC").await;
    let received = receiver.lock().expect("receiver").received.clone();
    assert_eq!(received.len(), 2);
    assert_eq!(serde_json::from_str::<Value>(&received[1].body).expect("JSON")["action"], "release");
    assert_ne!(received[0].id, received[1].id);
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    drop(vouch);
}

/// One request as an EDR API received it.
#[derive(Clone, Debug)]
struct ApiCall {
    path: String,
    authorization: String,
    body: String,
}

async fn edr_api(
    State(calls): State<Arc<Mutex<Vec<ApiCall>>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or("").to_string();
    let path = uri.path_and_query().map(ToString::to_string).unwrap_or_default();
    calls.lock().expect("calls").push(ApiCall { path: path.clone(), authorization, body });
    if path.starts_with("/crowdstrike/oauth2/token") {
        return (
            StatusCode::CREATED,
            r#"{"access_token": "cs-token", "expires_in": 1799, "token_type": "bearer"}"#.to_string(),
        );
    }
    (StatusCode::OK, "{}".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_preset_sends_its_vendors_request() {
    let (simulator, workspace, _receiver) = setup(Vec::new()).await;
    let calls: Arc<Mutex<Vec<ApiCall>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new().fallback(edr_api).with_state(Arc::clone(&calls));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Replace the generic webhook by the four EDR presets, all pointing at the fake APIs.
    let settings = std::fs::read_to_string(workspace.config()).expect("read");
    let settings = settings[..settings.find("[[webhooks]]").expect("webhooks")].to_string();
    std::fs::write(workspace.config(), settings).expect("write");
    workspace.append_settings(&format!(
        "[[webhooks]]\nname = \"falcon\"\nurl = \"{base}/crowdstrike\"\npreset = \"crowdstrike\"\nclient_id = \"cs-client\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n\n\
         [[webhooks]]\nname = \"mde\"\nurl = \"{base}/defender\"\npreset = \"defender\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n\n\
         [[webhooks]]\nname = \"s1\"\nurl = \"{base}/s1\"\npreset = \"sentinelone\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n\n\
         [[webhooks]]\nname = \"elastic\"\nurl = \"{base}/elastic\"\npreset = \"elastic\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n"
    ));
    let directory = std::fs::read_to_string(workspace.folder.path().join("directory.toml")).expect("read").replace(
        "edr_ids = { crowdstrike = \"aid-srv-db-01\" }",
        "edr_ids = { crowdstrike = \"aid-srv-db-01\", defender = \"mde-srv-db-01\", sentinelone = \"s1-srv-db-01\", elastic = \"el-srv-db-01\" }",
    );
    std::fs::write(workspace.folder.path().join("directory.toml"), directory).expect("write");
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("iso-3", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    click_card(&simulator, SAM, card.id, "Escalate").await;
    click_card(&simulator, SAM, card.id, "Isolate target").await;
    for webhook in ["falcon", "mde", "s1", "elastic"] {
        thread_says(&simulator, card.id, &format!("The {webhook} webhook accepted the request to isolate")).await;
    }
    let calls = calls.lock().expect("calls").clone();
    let find = |prefix: &str| {
        calls
            .iter()
            .find(|call| call.path.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no call to {prefix}: {calls:#?}"))
    };
    let token = find("/crowdstrike/oauth2/token");
    assert!(token.body.contains("client_id=cs-client"), "{}", token.body);
    let contain = find("/crowdstrike/devices/entities/devices-actions/v2?action_name=contain");
    assert_eq!(
        (contain.authorization.as_str(), serde_json::from_str::<Value>(&contain.body).expect("JSON")),
        ("Bearer cs-token", serde_json::json!({"ids": ["aid-srv-db-01"]}))
    );
    let defender = find("/defender/api/machines/mde-srv-db-01/isolate");
    assert_eq!(defender.authorization, format!("Bearer {WEBHOOK_SECRET}"));
    assert_eq!(serde_json::from_str::<Value>(&defender.body).expect("JSON")["IsolationType"], "Full");
    let s1 = find("/s1/web/api/v2.1/agents/actions/disconnect");
    assert_eq!(s1.authorization, format!("ApiToken {WEBHOOK_SECRET}"));
    assert_eq!(
        serde_json::from_str::<Value>(&s1.body).expect("JSON"),
        serde_json::json!({"filter": {"ids": ["s1-srv-db-01"]}})
    );
    let elastic = find("/elastic/api/endpoint/action/isolate");
    assert_eq!(elastic.authorization, format!("ApiKey {WEBHOOK_SECRET}"));
    assert_eq!(
        serde_json::from_str::<Value>(&elastic.body).expect("JSON")["endpoint_ids"],
        serde_json::json!(["el-srv-db-01"])
    );
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_is_reported_to_the_soc_and_not_retried() {
    let (simulator, workspace, receiver) = setup(vec![403]).await;
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("iso-4", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    click_card(&simulator, SAM, card.id, "Escalate").await;
    click_card(&simulator, SAM, card.id, "Isolate target").await;
    let notice = thread_says(&simulator, card.id, "could not be delivered to edr").await;
    assert!(notice.contains(&format!("<@&{SOC_ROLE}>")) && notice.contains("HTTP 403"), "{notice}");
    assert_eq!(receiver.lock().expect("receiver").received.len(), 1, "a 403 is final: no retry");
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
}

/// A receiver that misbehaves at the TCP level: the first connection is closed without an
/// answer, the second gets no answer before the client's timeout, the third is accepted.
async fn flaky_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/isolate", listener.local_addr().expect("address"));
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&ids);
    tokio::spawn(async move {
        let mut connection = 0;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            connection += 1;
            let mut request = vec![0u8; 16 * 1024];
            let read = stream.read(&mut request).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&request[..read]).to_string();
            if let Some(line) = text.lines().find(|line| line.to_ascii_lowercase().starts_with("webhook-id:")) {
                seen.lock().expect("ids").push(line[11..].trim().to_string());
            }
            match connection {
                1 => drop(stream),
                2 => {
                    // Hold the connection without answering until the client gives up.
                    let mut rest = [0u8; 1];
                    let _ = stream.read(&mut rest).await;
                }
                _ => {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                }
            }
        }
    });
    (url, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_and_timeouts_are_retried_under_the_same_id() {
    let (simulator, workspace, _unused) = setup(Vec::new()).await;
    let (url, ids) = flaky_receiver().await;
    let settings = std::fs::read_to_string(workspace.config()).expect("read");
    let settings = settings[..settings.find("[[webhooks]]").expect("webhooks")].to_string();
    std::fs::write(workspace.config(), settings).expect("write");
    workspace.append_settings(&format!(
        "[[webhooks]]\nname = \"edr\"\nurl = \"{url}\"\npreset = \"generic\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n\n\
         [delivery]\nmax_attempts = 5\nfirst_retry_ms = 200\nmax_retry_ms = 2000\ntimeout_ms = 500\n"
    ));
    let vouch = workspace.start();
    let (_, body) = post_alert(&vouch.base, &native_alert("iso-5", "WS-17", "SRV-DB-01", "alice")).await;
    let card = card(&simulator, body["case_id"].as_str().expect("id")).await;
    click_card(&simulator, SAM, card.id, "Escalate").await;
    click_card(&simulator, SAM, card.id, "Isolate target").await;
    thread_says(&simulator, card.id, "The edr webhook accepted the request to isolate SRV").await;
    let ids = ids.lock().expect("ids").clone();
    assert_eq!(ids.len(), 3, "reset, timeout, success: {ids:?}");
    assert!(ids.iter().all(|id| id == &ids[0]), "one webhook-id throughout: {ids:?}");
    let log = vouch.log();
    assert!(
        log.contains("could not connect") || log.contains("request failed"),
        "the reset is logged as a network error"
    );
    assert!(log.contains("timed out"), "the timeout is logged");
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
}

/// Everything at once, from a seed: Discord refusing message posts and edits with 5xx and
/// dropping the gateway, the EDR receiver failing, and Vouch killed hard at a random moment after
/// each round of alerts and escalations. Afterwards nothing acknowledged is lost and nothing is
/// doubled: every accepted alert has its case, every case one card, every isolation request one
/// id and one accepted delivery per life of Vouch, and the audit chain verifies. (A kill between
/// the receiver's 200 and Vouch recording it sends the request again under the same id, which a
/// receiver deduplicating on `webhook-id` ignores: Standard Webhooks' at-least-once contract.
/// Any second acceptance without a kill in between is a double.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_faults_lose_nothing_and_double_nothing() {
    let seed: u64 = std::env::var("VOUCH_E2E_SOAK_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(0x50a4);
    let mut random = Lcg(seed);
    // At most four failures in all, so every request is accepted within its six attempts.
    let script: Vec<u16> = (0..4).map(|_| [500, 503, 200][random.next(3) as usize]).collect();
    let (simulator, workspace, receiver) = setup(script.clone()).await;
    let mut acknowledged = Vec::new();
    let mut isolated = Vec::new();
    let mut kills = Vec::new();
    for round in 0..3 {
        let vouch = workspace.start();
        for index in 0..4 {
            let source = format!("WS-SOAK-{round}-{index}");
            let (status, body) =
                post_alert(&vouch.base, &native_alert(&format!("soak-{round}-{index}"), &source, "SRV-DB-01", "alice"))
                    .await;
            assert_eq!(status, 202, "{body}");
            acknowledged.push(body["case_id"].as_str().expect("id").to_string());
        }
        // Discord refuses the next few posts and edits, and perhaps drops the gateway.
        let status = [500, 502, 503][random.next(3) as usize];
        simulator.refuse_path("/messages", status, 1 + random.next(3) as usize);
        if random.next(2) == 0 {
            simulator.drop_gateway();
        }
        // One case of the round is escalated and its target isolated.
        let escalated = acknowledged[acknowledged.len() - 1 - random.next(4) as usize].clone();
        let card = card(&simulator, &escalated).await;
        assert_eq!(click_card(&simulator, SAM, card.id, "Escalate").await["type"], 7);
        assert_eq!(click_card(&simulator, SAM, card.id, "Isolate target").await["type"], 7);
        isolated.push(escalated);
        // Killed at a random moment while cards, pings, pages and deliveries are under way.
        tokio::time::sleep(Duration::from_millis(random.next(400))).await;
        vouch.kill_hard();
        kills.push(Instant::now());
    }
    let vouch = workspace.start();
    for case_id in &acknowledged {
        let (status, _) = get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
        assert_eq!(status, 200, "{case_id} was acknowledged (seed {seed})");
    }
    let cards = simulator
        .wait_for("every case's card", Duration::from_secs(60), |world| {
            let titles = world.embed_titles(crate::support::TRIAGE_CHANNEL);
            let counts: Vec<usize> = acknowledged
                .iter()
                .map(|case_id| titles.iter().filter(|title| title.starts_with(&format!("{case_id} "))).count())
                .collect();
            counts.iter().all(|count| *count >= 1).then_some(counts)
        })
        .await;
    assert!(cards.iter().all(|count| *count == 1), "one card per case, none twice: {cards:?} (seed {seed})");
    let expected_ids: Vec<String> = isolated.iter().map(|case_id| format!("{case_id}-target-isolate-1:edr")).collect();
    let deliveries = {
        let arrived = Arc::clone(&receiver.lock().expect("receiver").arrived);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let received = receiver.lock().expect("receiver").received.clone();
            let accepted =
                |id: &String| received.iter().filter(|attempt| &attempt.id == id && attempt.answered == 200).count();
            if expected_ids.iter().all(|id| accepted(id) >= 1) {
                break received;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "not every isolation was delivered (seed {seed}): {received:#?}"
            );
        }
    };
    for id in &expected_ids {
        let accepted: Vec<Instant> = deliveries
            .iter()
            .filter(|attempt| &attempt.id == id && attempt.answered == 200)
            .map(|attempt| attempt.at)
            .collect();
        for pair in accepted.windows(2) {
            assert!(
                kills.iter().any(|killed| pair[0] < *killed && *killed < pair[1]),
                "{id} accepted twice by one life of Vouch (seed {seed}): {deliveries:#?}"
            );
        }
    }
    assert!(
        deliveries.iter().all(|attempt| expected_ids.contains(&attempt.id)),
        "every attempt carries its request's one id (seed {seed}): {deliveries:#?}"
    );
    // The faults were met, not dodged.
    let (refused, reconnects) = simulator.with_world(|world| {
        (world.requests.iter().filter(|request| request.status >= 500).count(), world.gateway_identifies)
    });
    assert!(refused > 0, "Discord's refusals were met (seed {seed})");
    eprintln!(
        "soak seed {seed}: {} cases, {} isolations, {refused} Discord refusals, {reconnects} identifies, \
         {} webhook attempts (script {script:?})",
        acknowledged.len(),
        isolated.len(),
        deliveries.len()
    );
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}

/// Without a `[discord]` table nobody can be pinged, but an isolation the engine decided still
/// reaches the EDR: its outbox entry is written with the change, not by the chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discord_an_isolation_still_reaches_the_webhook_and_chat_effects_are_kept_as_undelivered() {
    let (url, receiver) = start_receiver(Vec::new()).await;
    let workspace = Workspace::new("");
    workspace.append_settings(&format!(
        "[[webhooks]]\nname = \"edr\"\nurl = \"{url}\"\npreset = \"generic\"\nsecret = {{ env = \"VOUCH_WEBHOOK_SECRET\" }}\n"
    ));
    let config = vouch_config::load(&workspace.config(), &crate::support::TestEnvironment)
        .unwrap_or_else(|error| panic!("{error}"));
    let running = vouch::app::start(config).await.expect("vouch starts");
    let base = format!("http://{}", running.address);
    let (status, body) = post_alert(&base, &native_alert("nd-1", "WS-17", "SRV-DB-01", "alice")).await;
    assert_eq!(status, 202, "{body}");
    let case_id: vouch_playbook::CaseId = body["case_id"].as_str().expect("id").parse().expect("case id");

    let sam = vouch_playbook::Actor {
        discord_id: None,
        person: None,
        name: "Sam Okafor".to_string(),
        soc: true,
        roles: Vec::new(),
        linked: false,
    };
    let service = &running.service;
    for (kind, event) in [
        (
            vouch_playbook::EventKind::ClickEscalate,
            vouch_playbook::CaseEvent::Escalate { by: sam.clone(), reason: None },
        ),
        (
            vouch_playbook::EventKind::ClickIsolate,
            vouch_playbook::CaseEvent::Isolate { side: vouch_playbook::engine::Side::Target, by: sam.clone() },
        ),
    ] {
        let change = service
            .apply_durably(CaseRequest::new(case_id, kind, &sam, serde_json::json!({}), event), service.clock.now())
            .await;
        assert!(matches!(change, Ok(vouch::service::Change::Applied { .. })), "{change:?}");
    }
    wait_for_requests(&receiver, 1).await;
    let received = receiver.lock().expect("receiver").received.clone();
    assert_eq!(received[0].id, format!("{case_id}-target-isolate-1:edr"));

    // The card, the page and the isolation notice had nowhere to go: the case says so.
    case_until(&base, &case_id.to_string(), WAIT, "chat effects not kept as undelivered", |case| {
        let undelivered: Vec<&str> = case["undelivered_effects"]
            .as_array()
            .map(|items| items.iter().filter_map(|item| item["effect"]["effect"].as_str()).collect())
            .unwrap_or_default();
        ["post_card", "page_on_call", "call_isolation_webhook"].iter().all(|effect| undelivered.contains(effect))
    })
    .await;
    running.stop().await.expect("stops");
}
