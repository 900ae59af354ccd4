//! The paged case API against the real binary: thousands of cases listed page by page with
//! every filter while alerts keep arriving, bad queries refused with why, and a storm case's
//! audit trail paged.

use std::collections::HashSet;

use serde_json::{json, Value};
use vouch_playbook::Timestamp;

use crate::support::{get_json, post_alert, Workspace};

const CASES: usize = 2_000;

/// The alert that opens case number `index` of the test: every one a movement of its own.
fn distinct_alert(index: usize) -> Value {
    // Cases to SRV-DB-01 ask its owner (awaiting confirmation); the rest wait for the SOC (open).
    let target = if index.is_multiple_of(4) { "SRV-DB-01".to_string() } else { format!("SRV-{:02}", index % 25) };
    json!({
        "vouch_alert": 1, "id": format!("page-{index}"), "product": "e2e",
        "source": {"hostname": format!("WS-{:03}", index / 4)}, "target": {"hostname": target},
        "account": format!("CORP\\user{}", index % 10), "protocol": "rdp", "mitre": ["T1021.001"],
        "severity": "high", "rule": {"id": format!("R-{}", index % 3), "name": "Lateral RDP"}
    })
}

/// Every case a query lists, following `next` links, with the page sizes seen.
async fn list_all(base: &str, first: &str) -> (Vec<Value>, Vec<usize>) {
    let mut cases = Vec::new();
    let mut sizes = Vec::new();
    let mut path = first.to_string();
    loop {
        let (status, page) = get_json(base, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        let listed = page["cases"].as_array().expect("cases");
        sizes.push(listed.len());
        cases.extend(listed.iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.to_string(),
            None => return (cases, sizes),
        }
    }
}

fn number(case: &Value) -> u64 {
    case["id"].as_str().and_then(|id| id.strip_prefix("LM-")).and_then(|id| id.parse().ok()).expect("an LM-n id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_cases_list_page_by_page_with_every_filter_while_alerts_keep_arriving() {
    let workspace = Workspace::new("");
    let vouch = workspace.start();
    let base = vouch.base.clone();
    // The alerts, eight at a time.
    let mut opened: Vec<(usize, u64)> = Vec::new();
    for chunk in (0..CASES).collect::<Vec<_>>().chunks(8) {
        let mut posts = tokio::task::JoinSet::new();
        for index in chunk.iter().copied() {
            let base = base.clone();
            posts.spawn(async move { (index, post_alert(&base, &distinct_alert(index)).await) });
        }
        while let Some(posted) = posts.join_next().await {
            let (index, (status, body)) = posted.expect("posted");
            assert_eq!((status, body["status"].as_str()), (202, Some("new")), "{body}");
            opened.push((index, number(&json!({"id": body["case_id"]}))));
        }
    }
    let newest_before_listing = opened.iter().map(|(_, number)| *number).max().expect("cases");

    // Alerts keep arriving while the listings run.
    let arriving = {
        let base = base.clone();
        tokio::spawn(async move {
            for index in CASES..CASES + 400 {
                let (status, body) = post_alert(&base, &distinct_alert(index)).await;
                assert_eq!(status, 202, "{body}");
            }
        })
    };

    // Everything, newest first, each case exactly once (those arriving meanwhile may lead).
    let (all, sizes) = list_all(&base, "/api/v1/cases?limit=100").await;
    assert!(sizes.iter().all(|size| *size <= 100), "{sizes:?}");
    let numbers: Vec<u64> = all.iter().map(number).collect();
    assert!(numbers.windows(2).all(|pair| pair[0] > pair[1]), "newest first, none twice");
    let before: Vec<&Value> = all.iter().filter(|case| number(case) <= newest_before_listing).collect();
    assert_eq!(before.len(), CASES, "every case there before the listing, once");
    let index_of = |case: &Value| opened.iter().find(|(_, number_of)| *number_of == number(case)).expect("ours").0;

    // Each filter: the cases it names among those there before, in order, each once, whatever
    // the page size.
    let time =
        |case: &Value, field: &str| Timestamp::parse(case[field].as_str().expect("a time")).expect("an RFC 3339 time");
    let (newer_bound, older_bound) = (time(before[300], "opened_at"), time(before[1_500], "opened_at"));
    let (newer_text, older_text) = (newer_bound.to_rfc3339(), older_bound.to_rfc3339());
    type Filter = (String, Box<dyn Fn(usize, &Value) -> bool>);
    let filters: Vec<Filter> = vec![
        ("state=awaiting_confirmation".to_string(), Box::new(|index, _| index.is_multiple_of(4))),
        ("state=open".to_string(), Box::new(|_, _| true)),
        ("state=closed".to_string(), Box::new(|_, _| false)),
        ("target=srv-db-01.corp.example".to_string(), Box::new(|index, _| index.is_multiple_of(4))),
        ("source=WS-007".to_string(), Box::new(|index, _| index / 4 == 7)),
        ("account=user3".to_string(), Box::new(|index, _| index % 10 == 3)),
        ("rule=r-1&account=CORP%5Cuser4".to_string(), Box::new(|index, _| index % 3 == 1 && index % 10 == 4)),
        (
            "rule=Lateral%20RDP&target=SRV-07".to_string(),
            Box::new(|index, _| !index.is_multiple_of(4) && index % 25 == 7),
        ),
        (
            format!("opened_since={older_text}&opened_until={newer_text}"),
            Box::new(move |_, case: &Value| {
                let at = time(case, "opened_at");
                at >= older_bound && at < newer_bound
            }),
        ),
        (
            format!("updated_since={newer_text}&state=open"),
            Box::new(move |_, case: &Value| time(case, "updated_at") >= newer_bound),
        ),
    ];
    for (query, admits) in &filters {
        let wanted: Vec<u64> =
            before.iter().filter(|case| admits(index_of(case), case)).map(|case| number(case)).collect();
        for limit in [7, 1000] {
            let (listed, _) = list_all(&base, &format!("/api/v1/cases?{query}&limit={limit}")).await;
            let listed: Vec<u64> =
                listed.iter().map(number).filter(|listed| *listed <= newest_before_listing).collect();
            assert_eq!(listed, wanted, "{query} in pages of {limit}");
            let unique: HashSet<u64> = listed.iter().copied().collect();
            assert_eq!(unique.len(), listed.len(), "{query}: none twice");
        }
    }
    arriving.await.expect("the alerts kept arriving");
    let (everything, _) = list_all(&base, "/api/v1/cases?limit=1000").await;
    assert_eq!(everything.len(), CASES + 400);

    // Bad queries: a 400 naming each problem, nothing listed.
    for (query, pointers) in [
        ("limit=0", vec!["/limit"]),
        ("limit=1001", vec!["/limit"]),
        ("limit=ten&cursor=not-ours", vec!["/limit", "/cursor"]),
        ("state=shut&opened_since=yesterday", vec!["/state", "/opened_since"]),
    ] {
        let (status, answer) = get_json(&base, &format!("/api/v1/cases?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        let named: Vec<&str> =
            answer["problems"].as_array().expect("problems").iter().filter_map(|p| p["pointer"].as_str()).collect();
        assert_eq!(named, pointers, "{query}: {answer}");
        assert!(answer["problems"][0]["message"].as_str().is_some_and(|message| !message.is_empty()));
    }

    // A storm case: its view carries the first page of its trail, the rest pages on.
    for repeat in 0..260 {
        let mut alert = distinct_alert(0);
        alert["id"] = json!(format!("storm-{repeat}"));
        let (status, _) = post_alert(&base, &alert).await;
        assert_eq!(status, 202);
    }
    let storm_case = format!("LM-{}", opened.iter().find(|(index, _)| *index == 0).expect("first").1);
    let (_, case) = get_json(&base, &format!("/api/v1/cases/{storm_case}")).await;
    assert_eq!(case["events"].as_array().map(Vec::len), Some(200));
    let mut events: Vec<Value> = case["events"].as_array().expect("events").clone();
    let mut next = case["events_next"].as_str().map(str::to_string);
    while let Some(path) = next {
        let (status, page) = get_json(&base, &path).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["events"].as_array().expect("events").iter().cloned());
        next = page["next"].as_str().map(str::to_string);
    }
    let sequences: Vec<u64> = events.iter().filter_map(|event| event["seq"].as_u64()).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "in order, none twice");
    // The first alert, and its 260 repeats (those written together share a record).
    let opened = events.iter().filter(|event| event["kind"] == "alert.new").count();
    let repeats: usize = events
        .iter()
        .filter(|event| event["kind"] == "alert.grouped")
        .map(|event| event["detail"]["repeats"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!((opened, repeats), (1, 260));
    let (status, _) = get_json(&base, &format!("/api/v1/cases/{storm_case}/events?cursor=%2F%2F")).await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&base, "/api/v1/cases/LM-999999/events").await;
    assert_eq!(status, 404);
    assert_eq!(vouch.terminate(), 0);
}
