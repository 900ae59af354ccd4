//! Decisions about where an alert belongs and what a change teaches the history, composed by the
//! service around [`crate::open_case`] and [`crate::apply`]. Pure: the service reads what the
//! store knows, asks here, and writes what comes back.

use serde::{Deserialize, Serialize};

use crate::engine::{Case, CaseState, ConfirmVerdict};
use crate::facts::{History, PastConfirmation};
use crate::model::{Alert, Outcome};
use crate::{CaseId, Timestamp};

/// Past confirmations kept per movement for the history hint: enough to show a habit, few enough
/// that the record stays small.
pub const KEPT_CONFIRMATIONS: usize = 20;

/// How long after its last alert a movement's open case still takes repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupingWindow {
    millis: i64,
}

impl GroupingWindow {
    pub fn minutes(minutes: u32) -> GroupingWindow {
        GroupingWindow { millis: i64::from(minutes) * 60_000 }
    }
}

/// The open case of a movement, as its grouping index remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMovement {
    pub case_id: CaseId,
    pub last_alert_at: Timestamp,
}

/// Where an incoming alert goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The same alert (same sender's id) was taken before: nothing changes.
    Duplicate(CaseId),
    /// A repeat of a movement whose case is still open and recent: it joins that case.
    JoinsOpenCase(CaseId),
    /// Anything else opens a new case.
    OpensNewCase,
}

/// Decides where an alert goes from what the store knows: the case an earlier copy of it went
/// to, and the movement's last case with whether it takes repeats ([`crate::Case::takes_repeats`]).
pub fn route_alert(
    earlier_copy: Option<CaseId>,
    last_case_of_movement: Option<(OpenMovement, bool)>,
    window: GroupingWindow,
    now: Timestamp,
) -> Arrival {
    if let Some(case_id) = earlier_copy {
        return Arrival::Duplicate(case_id);
    }
    match last_case_of_movement {
        Some((movement, takes_repeats))
            if now.millis_since(movement.last_alert_at) <= window.millis && takes_repeats =>
        {
            Arrival::JoinsOpenCase(movement.case_id)
        }
        _ => Arrival::OpensNewCase,
    }
}

impl History {
    /// The history after one more sighting of the movement.
    pub fn with_sighting(mut self, now: Timestamp, outcome: Outcome) -> History {
        self.seen += 1;
        if outcome == Outcome::Failure {
            self.failures += 1;
        }
        self.first_seen.get_or_insert(now);
        self.last_seen = Some(now);
        self
    }

    /// The history after someone vouched for the movement; only the latest few are kept.
    pub fn with_vouch(mut self, by: String, now: Timestamp) -> History {
        self.confirmed_expected.push(PastConfirmation { by, at: now });
        let excess = self.confirmed_expected.len().saturating_sub(KEPT_CONFIRMATIONS);
        self.confirmed_expected.drain(..excess);
        self
    }
}

/// Who vouched for the movement in this change, if anyone: a confirmer's *Expected*, or the SOC
/// closing the case as expected. That is what later cases of the same movement see as history.
pub fn vouched_by(before: &Case, after: &Case) -> Option<String> {
    let verdict = after
        .confirmation
        .verdicts
        .iter()
        .skip(before.confirmation.verdicts.len())
        .find(|verdict| verdict.verdict == ConfirmVerdict::Expected)
        .map(|verdict| verdict.by.name.clone());
    verdict.or_else(|| {
        let closed_now = before.state != CaseState::ClosedExpected && after.state == CaseState::ClosedExpected;
        closed_now.then(|| after.resolution.as_ref().map(|decision| decision.by.name.clone())).flatten()
    })
}

/// What the audit log keeps of the alert that opened a case: the normalized alert and a SHA-256
/// of its raw payload, which the case keeps (once) verbatim; the digest ties that copy to the
/// audit chain, so a changed payload is found out.
pub fn opening_record(alert: &Alert, alert_count: u64) -> serde_json::Value {
    use sha2::Digest as _;
    let raw = serde_json::to_vec(&alert.raw).unwrap_or_default();
    let mut record = serde_json::json!({"alert": alert, "alert_count": alert_count});
    if let Some(normalized) = record["alert"].as_object_mut() {
        normalized.remove("raw");
    }
    record["raw_sha256"] = serde_json::json!(hex::encode(sha2::Sha256::digest(&raw)));
    record
}

/// The most repeats one `alert.grouped` record lists: a storm's repeats written together share a
/// record, a bounded one.
pub const MOST_REPEATS_PER_RECORD: usize = 100;

/// What the audit log keeps of a repeat folded into a case: when it came, the sender's id, and
/// only the normalized fields that differ from the case's first alert. The case keeps its first
/// alert, raw payload and all, once; a storm of ten thousand repeats does not keep ten thousand
/// copies of it.
pub fn repeat_entry(first: &Alert, repeat: &Alert) -> serde_json::Value {
    let mut differs = serde_json::Map::new();
    // The fields compared, named once; the destructuring has no `..`, so a field added to
    // `Alert` must be compared here or set aside on purpose.
    macro_rules! differing {
        ($($field:ident),*) => {{
            let Alert { $($field,)* source_alert_id: _, observed_at: _, received_at: _, raw: _, not_a_movement: _ } =
                repeat;
            $(
                if *$field != first.$field {
                    differs.insert(stringify!($field).to_string(), serde_json::to_value($field).unwrap_or_default());
                }
            )*
        }};
    }
    differing!(
        format,
        source_product,
        source,
        target,
        account,
        acting_as,
        connection,
        protocol,
        outcome,
        port,
        logon_type,
        program,
        share,
        file,
        mitre,
        severity,
        rule
    );
    let (source_alert_id, observed_at, received_at) =
        (&repeat.source_alert_id, &repeat.observed_at, &repeat.received_at);
    let mut record = serde_json::json!({"received_at": received_at});
    if let Some(id) = source_alert_id {
        record["id"] = serde_json::json!(id);
    }
    if let Some(observed_at) = observed_at {
        record["observed_at"] = serde_json::json!(observed_at);
    }
    if !differs.is_empty() {
        record["differs"] = serde_json::Value::Object(differs);
    }
    record
}

/// The detail of an `alert.grouped` record: the repeats it lists (one, to begin with) and the
/// case's alert count after the last of them.
pub fn grouped_record(entry: serde_json::Value, alert_count: u64) -> serde_json::Value {
    serde_json::json!({"repeats": [entry], "alert_count": alert_count})
}

/// Adds a repeat to an `alert.grouped` record written in the same change, if it lists fewer
/// than [`MOST_REPEATS_PER_RECORD`]; whether it did.
pub fn fold_repeat(detail: &mut serde_json::Value, entry: &serde_json::Value, alert_count: u64) -> bool {
    let Some(repeats) = detail.get_mut("repeats").and_then(serde_json::Value::as_array_mut) else { return false };
    if repeats.len() >= MOST_REPEATS_PER_RECORD {
        return false;
    }
    repeats.push(entry.clone());
    detail["alert_count"] = serde_json::json!(alert_count);
    true
}

/// The sender's ids of the alerts an `alert.new` or `alert.grouped` record holds, with their
/// formats (a repeat's own when it differs from the case's first alert, `case_format` otherwise).
pub fn recorded_alert_ids(kind: &str, detail: &serde_json::Value, case_format: &str) -> Vec<(String, String)> {
    let text = |value: &serde_json::Value| value.as_str().map(str::to_string);
    match kind {
        "alert.new" => text(&detail["alert"]["source_alert_id"])
            .map(|id| (text(&detail["alert"]["format"]).unwrap_or_else(|| case_format.to_string()), id))
            .into_iter()
            .collect(),
        "alert.grouped" => detail["repeats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let format = text(&entry["differs"]["format"]).unwrap_or_else(|| case_format.to_string());
                Some((format, text(&entry["id"])?))
            })
            .collect(),
        _ => Vec::new(),
    }
}
