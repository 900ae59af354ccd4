//! The ingest API of the real binary, over HTTP on 127.0.0.1.

use serde_json::{json, Value};

use crate::support::{client, get_json, native_alert, Workspace, INGEST_TOKEN, SIGNING_SECRET};

/// One request and what must come back.
struct Exchange {
    name: &'static str,
    token: Option<&'static str>,
    content_type: &'static str,
    query: &'static str,
    body: Vec<u8>,
    status: u16,
    /// A fragment the response body must contain.
    answer: &'static str,
}

fn exchange(name: &'static str, body: Value, status: u16, answer: &'static str) -> Exchange {
    Exchange {
        name,
        token: Some(INGEST_TOKEN),
        content_type: "application/json",
        query: "",
        body: body.to_string().into_bytes(),
        status,
        answer,
    }
}

async fn send(base: &str, exchange: &Exchange) -> (u16, String) {
    let mut request = client()
        .post(format!("{base}/api/v1/alerts{}", exchange.query))
        .header("content-type", exchange.content_type)
        .body(exchange.body.clone());
    if let Some(token) = exchange.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

fn otrf_line(file: &str, line: usize) -> Value {
    let text = std::fs::read_to_string(crate::support::repository_file(&format!("tests/data/otrf/{file}.jsonl")))
        .expect("data");
    serde_json::from_str(text.lines().nth(line - 1).expect("line")).expect("json")
}

#[tokio::test]
async fn alerts_are_accepted_grouped_deduplicated_or_refused_with_reasons() {
    let workspace = Workspace::new("");
    let vouch = workspace.start();
    let base = vouch.base.clone();
    let oversize = json!({"vouch_alert": 1, "target": {"hostname": "X"}, "padding": "A".repeat(1_100_000)});
    let exchanges = vec![
        exchange(
            "a new movement",
            native_alert("edr-1", "WS-17", "SRV-DB-01", "alice"),
            202,
            r#"{"case_id":"LM-1","status":"new"}"#,
        ),
        exchange(
            "the same alert again",
            native_alert("edr-1", "WS-17", "SRV-DB-01", "alice"),
            202,
            r#"{"case_id":"LM-1","status":"duplicate"}"#,
        ),
        exchange(
            "the same movement again",
            native_alert("edr-2", "ws-17.corp.example", "SRV-DB-01", "CORP\\alice"),
            202,
            r#"{"case_id":"LM-1","status":"grouped"}"#,
        ),
        exchange(
            "another movement",
            native_alert("edr-3", "WS-17", "WS-42", "alice"),
            202,
            r#"{"case_id":"LM-2","status":"new"}"#,
        ),
        exchange(
            "a raw Windows event from the OTRF lab",
            otrf_line("empire_psremoting_stager", 13),
            202,
            r#""status":"new""#,
        ),
        Exchange {
            query: "?format=windows",
            ..exchange(
                "a Winlogbeat document as a Windows event",
                json!({"@timestamp": "2026-11-30T09:12:00Z", "winlog": {
                    "event_id": "4624", "computer_name": "SRV-APP-09.corp.example", "channel": "Security",
                    "provider_name": "Microsoft-Windows-Security-Auditing", "record_id": 88121,
                    "event_data": {"TargetUserName": "alice", "TargetDomainName": "CORP", "LogonType": "10",
                                   "IpAddress": "10.0.0.17", "IpPort": "0", "WorkstationName": "WS-17"}}}),
                202,
                r#""status":"new""#,
            )
        },
        Exchange { token: None, ..exchange("no token", native_alert("edr-9", "A", "B", "c"), 401, "bearer token") },
        Exchange {
            token: Some("wrong-token-of-another-length"),
            ..exchange("wrong token", native_alert("edr-9", "A", "B", "c"), 401, "bearer token")
        },
        Exchange {
            token: Some("e2e-ingest-token-7f3b"),
            ..exchange("wrong token of the same length", native_alert("edr-9", "A", "B", "c"), 401, "bearer token")
        },
        exchange("over 1 MiB", oversize, 413, ""),
        Exchange {
            content_type: "text/plain",
            ..exchange("not JSON by type", native_alert("edr-9", "A", "B", "c"), 415, "application/json")
        },
        Exchange {
            body: b"{\"vouch_alert\": 1, \"target\": ".to_vec(),
            ..exchange("broken JSON", json!(null), 400, "not valid JSON")
        },
        Exchange {
            body: vec![0xff, 0xfe, 0x00, 0x7b],
            ..exchange("invalid UTF-8", json!(null), 400, "not valid JSON")
        },
        exchange(
            "wrong field types",
            json!({"vouch_alert": 1, "target": {"hostname": ["x"]}, "port": "22"}),
            400,
            r#""pointer":"/target/hostname""#,
        ),
        exchange(
            "unknown fields",
            json!({"vouch_alert": 1, "target": {"hostname": "x"}, "sneaky": 1}),
            400,
            r#""pointer":"/sneaky""#,
        ),
        exchange("no systems at all", json!({"EventID": 4624, "LogonType": "3"}), 400, "neither a source nor a target"),
        Exchange {
            query: "?format=cef",
            ..exchange("unknown format", native_alert("edr-9", "A", "B", "c"), 400, "format must be one of")
        },
        exchange(
            "special privileges alone (4672)",
            otrf_line("covenant_copy_smb_CreateRequest", 1),
            200,
            r#""status":"not_lateral_movement","why":"event_records_none""#,
        ),
        exchange(
            "a keyboard logon from the loopback address",
            json!({"EventID": 4624, "Hostname": "WS-17", "LogonType": 2, "IpAddress": "127.0.0.1",
                   "TargetUserName": "alice", "WorkstationName": "WS-17"}),
            200,
            r#""why":"local_logon""#,
        ),
        exchange(
            "a network logon from the machine itself",
            json!({"EventID": 4624, "Hostname": "WS-17", "LogonType": 3, "IpAddress": "-",
                   "TargetUserName": "alice", "WorkstationName": "ws-17"}),
            200,
            r#""why":"same_system""#,
        ),
        exchange(
            "an event Vouch does not read",
            json!({"EventID": 4663, "Hostname": "WS-17", "ObjectName": "C:\\secret.txt"}),
            400,
            "event 4663 is not one Vouch reads",
        ),
    ];
    for step in &exchanges {
        let (status, body) = send(&base, step).await;
        assert_eq!(status, step.status, "{}: {body}", step.name);
        assert!(body.contains(step.answer), "{}: expected {:?} in {body}", step.name, step.answer);
    }
    let metrics = client().get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("text");
    for why in ["event_records_none", "local_logon", "same_system"] {
        assert!(
            metrics.contains(&format!("vouch_alerts_not_movement_total{{format=\"windows\",why=\"{why}\"}} 1")),
            "{why} is counted: {metrics}"
        );
    }

    // Bad requests and events that are no movement changed nothing: four cases, the first with
    // two alerts.
    let (status, listing) = get_json(&base, "/api/v1/cases?state=open").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> =
        listing["cases"].as_array().expect("list").iter().filter_map(|case| case["id"].as_str()).collect();
    assert_eq!(ids, ["LM-4", "LM-3", "LM-2", "LM-1"], "newest first");

    let (status, case) = get_json(&base, "/api/v1/cases/LM-1").await;
    assert_eq!(status, 200);
    assert_eq!(case["alert_count"], 2);
    assert_eq!(case["playbook_version"], 1);
    assert_eq!(case["state"], "awaiting_confirmation", "Bob owns SRV-DB-01 and is asked");
    assert_eq!(case["confirmers"][0]["person"]["id"], "bob");
    assert_eq!(case["confirmers"][0]["status"], "asked");
    assert_eq!(case["account_kind"], "user");
    let scenario_ids: Vec<&str> = case["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter_map(|scenario| scenario["id"].as_str())
        .collect();
    assert_eq!(
        scenario_ids,
        ["helpdesk-remote-support", "management-server", "admin-file-share", "developer-to-dev-server"]
    );
    // Alice is helpdesk, at her own workstation, but SRV-DB-01 is a server, not a user's workstation.
    assert_eq!(case["scenarios"][0]["matched"], false);
    assert!(case["scenarios"][0]["evidence"].to_string().contains("target system kind: server"));
    assert!(case["hints"]["interactive"]["evidence"].is_array());
    let kinds: Vec<&str> =
        case["events"].as_array().expect("events").iter().filter_map(|event| event["kind"].as_str()).collect();
    assert_eq!(kinds, ["alert.new", "alert.grouped"]);
    assert_eq!(case["alert"]["raw"]["id"], "edr-1", "the raw payload is kept verbatim");

    // The Winlogbeat document meant what its event means: an RDP session on 3389, by alice.
    let (status, winlogbeat) = get_json(&base, "/api/v1/cases/LM-4").await;
    assert_eq!(status, 200);
    let alert = &winlogbeat["alert"];
    assert_eq!(
        (alert["format"].as_str(), alert["protocol"].as_str(), alert["port"].as_u64(), alert["outcome"].as_str()),
        (Some("windows"), Some("rdp"), Some(3389), Some("success")),
        "{alert}"
    );
    assert_eq!(alert["account"]["name"], "alice");

    let (status, _) = get_json(&base, "/api/v1/cases/LM-99").await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&base, "/api/v1/cases/nonsense").await;
    assert_eq!(status, 400);
    let unauthenticated = client().get(format!("{base}/api/v1/cases/LM-1")).send().await.expect("sent");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let health = client().get(format!("{base}/healthz")).send().await.expect("sent");
    assert_eq!(health.status().as_u16(), 200);
    let metrics = client().get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("text");
    for line in [
        "vouch_alerts_accepted_total{format=\"native\",status=\"new\"} 2",
        "vouch_alerts_accepted_total{format=\"native\",status=\"duplicate\"} 1",
        "vouch_alerts_accepted_total{format=\"windows\",status=\"new\"} 2",
        // Three alerts with bad tokens and one case query without a token; seven bad alerts (an
        // event Vouch does not read among them; 4672 is now answered as no movement) and one
        // bad case id.
        "vouch_requests_refused_total{status=\"401\"} 4",
        "vouch_requests_refused_total{status=\"400\"} 8",
        "vouch_requests_refused_total{status=\"404\"} 1",
        "vouch_requests_refused_total{status=\"413\"} 1",
        "vouch_requests_refused_total{status=\"415\"} 1",
        "vouch_cases{state=\"awaiting_confirmation\"}",
        "vouch_store_flush_seconds_count",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    // The heap's figures are the allocator's own: some bytes are live, and no more are live than
    // the allocator keeps resident.
    let gauge = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("metrics lack {name}:\n{metrics}"));
        line[name.len() + 1..].parse().unwrap_or_else(|_| panic!("{name} is not a number: {line}"))
    };
    let (allocated, resident) = (gauge("vouch_memory_allocated_bytes"), gauge("vouch_memory_resident_bytes"));
    assert!(allocated > 0 && allocated <= resident, "allocated {allocated}, resident {resident}");
    assert!(!vouch.log().contains(INGEST_TOKEN), "the token must never be logged");
}

#[tokio::test]
async fn signed_ingest_refuses_unsigned_stale_and_forged_requests() {
    let workspace = Workspace::new("signing_secrets = [{ env = \"VOUCH_INGEST_SIGNING_SECRET\" }]");
    let vouch = workspace.start();
    let secret = vouch_config::Secret::new(SIGNING_SECRET.to_string(), "test".to_string());
    let body = native_alert("sig-1", "WS-17", "WS-42", "alice").to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    // (name, webhook-id, timestamp, signed body, sent body, expected status, answer fragment)
    let cases: Vec<(&str, &str, i64, String, String, u16, &str)> = vec![
        ("unsigned", "", now, String::new(), body.clone(), 401, "webhook-id"),
        ("stale", "msg_1", now - 600, body.clone(), body.clone(), 401, "more than 5 minutes"),
        (
            "body changed after signing",
            "msg_2",
            now,
            body.clone(),
            body.replace("WS-42", "DC-01"),
            401,
            "no webhook-signature matches",
        ),
        ("valid", "msg_3", now, body.clone(), body.clone(), 202, "\"status\":\"new\""),
        ("the same signed request replayed", "msg_3", now, body.clone(), body.clone(), 401, "replayed"),
    ];
    for (name, id, timestamp, signed, sent, status, answer) in cases {
        let mut request = client()
            .post(format!("{}/api/v1/alerts", vouch.base))
            .bearer_auth(INGEST_TOKEN)
            .header("content-type", "application/json")
            .body(sent);
        if !id.is_empty() {
            let signature = vouch::auth::sign(&secret, id, timestamp, signed.as_bytes());
            request = request
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature);
        }
        let response = request.send().await.expect("sent");
        let got = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(got, status, "{name}: {text}");
        assert!(text.contains(answer), "{name}: expected {answer:?} in {text}");
    }
    let (_, listing) = get_json(&vouch.base, "/api/v1/cases").await;
    assert_eq!(listing["cases"].as_array().map(Vec::len), Some(1), "only the valid request was stored");
}

#[tokio::test]
async fn a_slow_body_is_cut_off_with_408_and_stores_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let workspace = Workspace::new("");
    let vouch = workspace.start();
    let address = vouch.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {INGEST_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"vouch_alert\": 1,"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    // The rest of the body never comes. Vouch must answer on its own, within its timeout.
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (_, listing) = get_json(&vouch.base, "/api/v1/cases").await;
    assert_eq!(listing["cases"].as_array().map(Vec::len), Some(0));
}
