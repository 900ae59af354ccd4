//! Hostile input: whatever arrives, normalization answers with an alert or with problems, never
//! a panic, and in bounded time.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use vouch_playbook::normalize::normalize;
use vouch_playbook::{AlertFormat, Timestamp};

/// Field names the parsers look at, so random payloads reach deep into them.
const KEYS: [&str; 42] = [
    "vouch_alert",
    "id",
    "source",
    "target",
    "account",
    "hostname",
    "ips",
    "EventID",
    "LogonType",
    "Hostname",
    "IpAddress",
    "TargetUserName",
    "Image",
    "CommandLine",
    "ParentImage",
    "class_uid",
    "evidences",
    "src_endpoint",
    "result",
    "sid",
    "kibana.alert.uuid",
    "destination",
    "user",
    "process",
    "port",
    "mitre",
    "program",
    "ShareName",
    "winlog",
    "event_id",
    "event_data",
    "Event",
    "System",
    "EventData",
    "Data",
    "@Name",
    "#text",
    "unmapped",
    "EventCode",
    "Account_Name",
    "Logon_Type",
    "ServiceName",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| json!(number)),
        any::<f64>().prop_filter("finite", |number| number.is_finite()).prop_map(|number| json!(number)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("4624")),
        Just(json!("4769")),
        Just(json!("cifs/")),
        Just(json!("\\\\srv\\share$\\f")),
        Just(json!(2004)),
        Just(json!("A".repeat(10_000))),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs.into_iter().map(|(key, value)| (key.to_string(), value)).collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn normalization_never_panics(payload in json_value(), format in prop::option::of(prop::sample::select(AlertFormat::ALL.to_vec()))) {
        let started = std::time::Instant::now();
        match normalize(&payload, format, Timestamp::from_unix_millis(0)) {
            Ok(alert) => prop_assert!(
                alert.not_a_movement.is_some() || !(alert.source.is_unknown() && alert.target.is_unknown())
            ),
            Err(problems) => prop_assert!(!problems.is_empty()),
        }
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
