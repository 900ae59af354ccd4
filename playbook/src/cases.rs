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

/// What the audit log keeps of a repeat folded into a case: when it came, the sender's id, and
/// only the normalized fields that differ from the case's first alert. The case keeps its first
/// alert, raw payload and all, once; a storm of ten thousand repeats does not keep ten thousand
/// copies of it.
pub fn repeat_record(first: &Alert, repeat: &Alert, alert_count: u64) -> serde_json::Value {
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
    let mut record = serde_json::json!({"received_at": received_at, "alert_count": alert_count});
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
