//! Decisions about where an alert belongs and what a change teaches the history, composed by the
//! service around [`crate::open_case`] and [`crate::apply`]. Pure: the service reads what the
//! store knows, asks here, and writes what comes back.

use serde::{Deserialize, Serialize};

use crate::engine::{Case, CaseState, ConfirmVerdict};
use crate::facts::{History, PastConfirmation};
use crate::model::Outcome;
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
