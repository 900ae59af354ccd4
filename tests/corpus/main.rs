//! The labeled regression corpus (`corpus.toml`): every event in every shape Vouch accepts (and
//! in Vouch's native format, as a sender that already knows what the event means writes it), read
//! and judged as Vouch does, scored label by label. Prints a score table per shape and label;
//! fails on any benign hint on a malicious movement, on any label that is wrong and not a
//! documented known miss, on a known miss that is now right (the file must say so), below 98%
//! right, and when one event reads as different movements in different shapes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};
use vouch_config::Environment;
use vouch_playbook::definition::Leaning;
use vouch_playbook::engine::ScenarioVerdict;
use vouch_playbook::facts::History;
use vouch_playbook::model::{Account, Alert, AlertFormat};
use vouch_playbook::movement::judge_movement;
use vouch_playbook::normalize::normalize;
use vouch_playbook::{open_case, Playbook, Timestamp};
use vouch_tests::wrappers::{render, Shape};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    id: String,
    /// `file:line` in `tests/data/otrf`.
    otrf: Option<String>,
    /// A flat event, as JSON.
    event: Option<String>,
    reason: String,
    malicious: bool,
    movement: String,
    interactive: Option<String>,
    account_kind: Option<String>,
    second_account: Option<String>,
    scenario: Option<String>,
    #[serde(default)]
    known_misses: Vec<KnownMiss>,
}

/// A label the corpus knows Vouch gets wrong in one shape, and why; counted as wrong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownMiss {
    shape: String,
    label: String,
    why: String,
}

struct NoSecrets;

impl Environment for NoSecrets {
    fn var(&self, name: &str) -> Option<String> {
        (name == "VOUCH_INGEST_TOKEN").then(|| "corpus-token".to_string())
    }
}

fn corpus_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn load_corpus() -> Corpus {
    let text = std::fs::read_to_string(corpus_folder().join("corpus.toml")).expect("corpus.toml");
    toml::from_str(&text).unwrap_or_else(|error| panic!("corpus.toml: {error}"))
}

/// The corpus's directory, loaded through Vouch's own configuration loader.
fn load_directory() -> vouch_config::Directory {
    let folder = tempfile::tempdir().expect("temp dir");
    let directory = corpus_folder().join("directory.toml");
    let settings = format!(
        "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = {{ env = \"VOUCH_INGEST_TOKEN\" }}\n\n\
         [storage]\ndata_dir = \"data\"\n\n[directory]\nfile = {:?}\n",
        directory.display().to_string()
    );
    std::fs::write(folder.path().join("vouch.toml"), settings).expect("write vouch.toml");
    let config = vouch_config::load(&folder.path().join("vouch.toml"), &NoSecrets)
        .unwrap_or_else(|error| panic!("the corpus directory loads: {error}"));
    config.directory
}

fn otrf_line(reference: &str) -> Value {
    let (file, line) = reference.split_once(':').expect("otrf = \"file:line\"");
    let line: usize = line.parse().expect("a line number");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/otrf").join(format!("{file}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let line = text.lines().nth(line - 1).unwrap_or_else(|| panic!("{file} has no line {line}"));
    serde_json::from_str(line).expect("a JSON event")
}

fn event_of(item: &Item) -> Value {
    match (&item.otrf, &item.event) {
        (Some(reference), None) => otrf_line(reference),
        (None, Some(text)) => serde_json::from_str(text).unwrap_or_else(|error| panic!("{}: {error}", item.id)),
        _ => panic!("{}: give exactly one of otrf and event", item.id),
    }
}

const RECEIVED: &str = "2026-11-30T12:00:00Z";

/// What Vouch concluded about one event in one shape, label by label.
struct Reading {
    labels: BTreeMap<&'static str, String>,
    benign_hint: Option<String>,
    movement: Option<Alert>,
}

fn read(payload: &Value, format: AlertFormat, directory: &vouch_config::Directory, playbook: &Playbook) -> Reading {
    let received = Timestamp::parse(RECEIVED).expect("time");
    let mut labels = BTreeMap::new();
    let alert = match normalize(payload, Some(format), received) {
        Ok(alert) => alert,
        Err(problems) => {
            labels.insert("movement", format!("refused: {}", problems[0].message));
            return Reading { labels, benign_hint: None, movement: None };
        }
    };
    let facts = directory.facts_for(&alert);
    if let Err(not_a_movement) = judge_movement(&alert, &facts) {
        labels.insert("movement", not_a_movement.kind.id().to_string());
        return Reading { labels, benign_hint: None, movement: None };
    }
    labels.insert("movement", "yes".to_string());
    let opening = open_case(playbook, &alert, &facts, &History::default(), received);
    let interactive = opening
        .hints
        .iter()
        .find(|hint| hint.question.as_str() == "interactive")
        .and_then(|hint| hint.suggested.as_ref())
        .map(ToString::to_string)
        .unwrap_or_else(|| "none".to_string());
    labels.insert("interactive", interactive);
    labels.insert("account_kind", opening.account_kind.id().to_string());
    let second = alert
        .acting_as
        .as_ref()
        .filter(|second| alert.account.as_ref().is_none_or(|first: &Account| first.key() != second.key()))
        .map(Account::key)
        .unwrap_or_else(|| "none".to_string());
    labels.insert("second_account", second);
    let matched = opening.scenarios.iter().find(|scenario| scenario.verdict == ScenarioVerdict::Matched);
    labels.insert("scenario", matched.map(|scenario| scenario.id.to_string()).unwrap_or_else(|| "none".to_string()));
    let fits_normal_use =
        opening.hints.iter().find(|hint| hint.question.as_str() == "account-usage").and_then(|hint| {
            let question = playbook.question(&hint.question)?;
            let answer = question.answer(hint.suggested.as_ref()?)?;
            (answer.leans == Leaning::Benign).then(|| answer.label.clone())
        });
    let benign_hint = matched.map(|scenario| format!("scenario {}", scenario.id)).or(fits_normal_use);
    Reading { labels, benign_hint, movement: Some(alert) }
}

/// The shape id of the native rendering, beside the wrapper shapes.
const NATIVE: &str = "native/vouch";

/// The same movement in Vouch's own format, as a sender that already knows what the event means
/// would write it; `None` for what the native format cannot say (an event that records no
/// movement by its id alone).
fn native_rendering(event: &Value) -> Option<Value> {
    let received = Timestamp::parse(RECEIVED).expect("time");
    let alert = normalize(event, Some(AlertFormat::Windows), received).ok()?;
    if alert.not_a_movement.is_some() {
        return None;
    }
    let system = |system: &vouch_playbook::model::System| {
        let mut object = serde_json::Map::new();
        if let Some(hostname) = &system.hostname {
            object.insert("hostname".to_string(), json!(hostname));
        }
        if !system.ips.is_empty() {
            object.insert("ips".to_string(), json!(system.ips.iter().map(ToString::to_string).collect::<Vec<_>>()));
        }
        (!object.is_empty()).then_some(Value::Object(object))
    };
    let mut native = json!({
        "vouch_alert": 1,
        "id": alert.source_alert_id,
        "product": alert.source_product,
        "connection": alert.connection,
        "protocol": alert.protocol,
        "outcome": alert.outcome,
        "mitre": alert.mitre,
    });
    let object = native.as_object_mut().expect("object");
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            object.insert(key.to_string(), value);
        }
    };
    put("source", system(&alert.source));
    put("target", system(&alert.target));
    put("account", alert.account.as_ref().map(|account| json!({"name": account.name, "domain": account.domain})));
    put("acting_as", alert.acting_as.as_ref().map(|account| json!({"name": account.name, "domain": account.domain})));
    put("port", alert.port.map(|port| json!(port)));
    put("logon_type", alert.logon_type.map(|kind| json!(kind)));
    put("program", alert.program.as_ref().map(|program| json!(program)));
    put("share", alert.share.as_ref().map(|share| json!(share)));
    put("file", alert.file.as_ref().map(|file| json!(file)));
    Some(native)
}

/// The parts of an alert that make it the movement it is (not who sent it or how).
fn movement_fingerprint(alert: &Alert) -> String {
    format!(
        "{:?} -> {:?} | {:?} as {:?} | {:?} {:?} port {:?} logon {:?} {:?} | program {:?} | share {:?} file {:?} | {:?}",
        (alert.source.short_hostname(), &alert.source.ips),
        (alert.target.short_hostname(), &alert.target.ips),
        alert.account.as_ref().map(Account::key),
        alert.acting_as.as_ref().map(Account::key),
        alert.connection,
        alert.protocol,
        alert.port,
        alert.logon_type,
        alert.outcome,
        alert.program.as_ref().and_then(|program| program.key()),
        alert.share,
        alert.file,
        alert.mitre,
    )
}

#[test]
fn the_labeled_corpus_scores_at_least_98_percent_with_no_benign_hint_on_an_attack() {
    let corpus = load_corpus();
    let directory = load_directory();
    let playbook = Playbook::builtin();
    // (shape, label) -> (right, total)
    let mut scores: BTreeMap<(String, &'static str), (u32, u32)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut known_misses_seen = 0;
    let mut fingerprints_differ = Vec::new();
    for item in &corpus.items {
        assert!(!item.reason.trim().is_empty(), "{}: every item says why", item.id);
        let event = event_of(item);
        let expected: BTreeMap<&'static str, Option<&String>> = BTreeMap::from([
            ("movement", Some(&item.movement)),
            ("interactive", item.interactive.as_ref()),
            ("account_kind", item.account_kind.as_ref()),
            ("second_account", item.second_account.as_ref()),
            ("scenario", item.scenario.as_ref()),
        ]);
        if item.movement == "yes" {
            for (label, value) in &expected {
                assert!(value.is_some(), "{}: a movement needs the label {label}", item.id);
            }
        }
        let mut fingerprints: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        let renderings = Shape::ALL
            .into_iter()
            .map(|shape| (shape.id(), AlertFormat::from_id(shape.format()).expect("format"), render(&event, shape)))
            .chain(native_rendering(&event).map(|native| (NATIVE, AlertFormat::Native, native)));
        for (shape, format, payload) in renderings {
            let reading = read(&payload, format, &directory, &playbook);
            if let Some(alert) = &reading.movement {
                fingerprints.entry(movement_fingerprint(alert)).or_default().push(shape);
            }
            if item.malicious {
                if let Some(benign) = &reading.benign_hint {
                    failures.push(format!("{} [{shape}]: a benign hint ({benign}) on a malicious movement", item.id));
                }
            }
            for (label, wanted) in &expected {
                let Some(wanted) = wanted else { continue };
                // Labels past "movement" are judged only when both agree it is a movement.
                if *label != "movement" && reading.labels.get("movement").map(String::as_str) != Some("yes") {
                    continue;
                }
                let got = reading.labels.get(label).cloned().unwrap_or_else(|| "-".to_string());
                let right = &got == *wanted;
                let score = scores.entry((shape.to_string(), label)).or_default();
                score.1 += 1;
                let known = item.known_misses.iter().find(|miss| miss.shape == shape && miss.label == *label);
                match (right, known) {
                    (true, None) => score.0 += 1,
                    (true, Some(_)) => failures.push(format!(
                        "{} [{shape}] {label}: now right; remove the known miss from corpus.toml",
                        item.id
                    )),
                    (false, Some(miss)) => {
                        assert!(!miss.why.trim().is_empty(), "{}: a known miss says why", item.id);
                        known_misses_seen += 1;
                    }
                    (false, None) => failures
                        .push(format!("{} [{shape}] {label}: wanted {wanted}, got {got} ({})", item.id, item.reason)),
                }
            }
        }
        if fingerprints.len() > 1 {
            fingerprints_differ.push(format!("{}: {fingerprints:#?}", item.id));
        }
    }
    for miss in corpus.items.iter().flat_map(|item| &item.known_misses) {
        assert!(
            miss.shape == NATIVE || Shape::ALL.iter().any(|shape| shape.id() == miss.shape),
            "unknown shape {}",
            miss.shape
        );
    }

    // The score table: one row per shape, one column per label.
    let labels = ["movement", "interactive", "account_kind", "second_account", "scenario"];
    let mut table = format!("\n{:<24}", "shape");
    for label in labels {
        table.push_str(&format!(" {label:>15}"));
    }
    table.push('\n');
    let (mut right, mut total) = (0, 0);
    for shape in Shape::ALL.iter().map(|shape| shape.id()).chain([NATIVE]) {
        table.push_str(&format!("{shape:<24}"));
        for label in labels {
            let (shape_right, shape_total) = scores.get(&(shape.to_string(), label)).copied().unwrap_or_default();
            right += shape_right;
            total += shape_total;
            table.push_str(&format!(" {:>15}", format!("{shape_right}/{shape_total}")));
        }
        table.push('\n');
    }
    let share = f64::from(right) / f64::from(total.max(1));
    table.push_str(&format!(
        "{} items x {} shapes: {right}/{total} labels right ({:.1}%), {known_misses_seen} known misses\n",
        corpus.items.len(),
        Shape::ALL.len() + 1,
        share * 100.0
    ));
    println!("{table}");

    assert!(
        fingerprints_differ.is_empty(),
        "one event, different movements by shape:\n{}",
        fingerprints_differ.join("\n")
    );
    assert!(failures.is_empty(), "{table}\n{} failure(s):\n{}", failures.len(), failures.join("\n"));
    assert!(share >= 0.98, "{table}\nonly {:.1}% of labels right", share * 100.0);
}
