//! Deadlines and schedules. Every deadline lives in the store with its case, so this loop only
//! looks for what is due: nothing is lost with an in-memory timer on a restart.

use std::sync::Arc;

use serde_json::json;
use vouch_playbook::engine::IsolationAction;
use vouch_playbook::{Actor, CaseEvent, CaseId, CaseState, EventKind, Timestamp};

use crate::service::{CaseRequest, Service};

/// The store marker holding when the digest last went out.
pub const DIGEST_MARKER: &str = "digest";

/// Runs until the task is aborted.
pub async fn run(service: Arc<Service>) {
    let wake = Arc::clone(&service.timers_ready);
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pass_service = Arc::clone(&service);
        match tokio::task::spawn_blocking(move || due_reminders(&pass_service)).await {
            Ok(Ok(fired)) if fired > 0 => service.effects_ready.notify_one(),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "checking deadlines failed; will retry"),
            Err(error) => tracing::warn!(error = %error, "the deadline check failed; will retry"),
        }
        let _ = tokio::time::timeout(service.timers.check_every, notified).await;
    }
}

/// Applies `ReminderDue` to every case whose deadline passed and that may be chased now; returns
/// how many fired. The store keeps an index of deadlines, so this reads only the cases that are due.
fn due_reminders(service: &Service) -> Result<usize, vouch_storage::StorageError> {
    let now = service.clock.now();
    let within_business_hours = service.timers.business_hours.as_ref().is_none_or(|hours| hours.includes(now));
    let mut fired = 0;
    for case_id in service.store.due_cases(now)? {
        let case = service.store.case(case_id)?;
        if !case.chase_due(now, within_business_hours) {
            continue;
        }
        let detail = json!({"deadline": case.next_deadline()});
        let vouch = Actor::vouch();
        let request = CaseRequest::new(case.id, EventKind::TimerDeadline, &vouch, detail, CaseEvent::ReminderDue);
        service.apply(request, now)?;
        fired += 1;
    }
    Ok(fired)
}

/// When the digest is due, if it is: the schedule's slot it is for. The first run only starts
/// the schedule, so a restart never sends a burst of missed digests. The digest is marked sent
/// with [`digest_sent`] once it was posted, so a failed post is tried again.
pub fn digest_due(service: &Service) -> Result<Option<Timestamp>, vouch_storage::StorageError> {
    let Some(schedule) = &service.timers.digest else { return Ok(None) };
    let now = service.clock.now();
    let Some(last) = service.store.marker(DIGEST_MARKER)? else {
        mark_digest(service, now, false)?;
        return Ok(None);
    };
    Ok(schedule.next_after(last).filter(|next| *next <= now))
}

/// Records that the digest for `slot` went out.
/// `posted` is false when there was nowhere to post it: the day is over all the same.
pub fn digest_sent(service: &Service, slot: Timestamp, posted: bool) -> Result<(), vouch_storage::StorageError> {
    mark_digest(service, slot.max(service.clock.now()), posted)
}

fn mark_digest(service: &Service, at: Timestamp, posted: bool) -> Result<(), vouch_storage::StorageError> {
    service
        .store
        .write(|transaction| {
            transaction.set_marker(DIGEST_MARKER, at);
            if posted {
                transaction.append_audit(vouch_storage::NewRecord {
                    at,
                    case_id: None,
                    kind: vouch_playbook::AuditKind::DigestPosted,
                    actor: None,
                    playbook_version: None,
                    detail: json!({}),
                })?;
            }
            Ok(())
        })?
        .wait()
}

/// What the digest says, as data; the chat draws it.
#[derive(Debug, Clone)]
pub struct Digest {
    /// Open cases, oldest first: id, source, target, state, minutes waited.
    pub open: Vec<OpenCaseLine>,
    pub closed_expected: usize,
    /// Of those closed as expected, how many a vouch given in advance closed (a standing
    /// approval or a declaration), with nobody asked.
    pub vouched_in_advance: usize,
    pub escalated: usize,
    pub isolated: usize,
}

#[derive(Debug, Clone)]
pub struct OpenCaseLine {
    pub case_id: CaseId,
    pub source: String,
    pub target: String,
    pub state: CaseState,
    pub waited_minutes: i64,
}

/// Open cases and how long each has waited, and the last day's outcomes.
pub fn digest(service: &Service) -> Result<Digest, vouch_storage::StorageError> {
    let now = service.clock.now();
    let day_ago = now.plus_millis(-24 * 60 * 60 * 1000);
    let mut digest = Digest { open: Vec::new(), closed_expected: 0, vouched_in_advance: 0, escalated: 0, isolated: 0 };
    // The open cases, and the closed ones that changed in the last day: every outcome the digest
    // counts (a resolution, an escalation, an isolation) changed its case when it happened. The
    // rest of the history is not read.
    let unfinished: Vec<CaseState> = CaseState::ALL.iter().copied().filter(|state| !state.is_finished()).collect();
    let mut cases = service.store.cases(Some(&unfinished))?;
    cases.extend(service.store.finished_cases_changed_since(day_ago)?);
    for case in cases {
        if !case.state.is_finished() {
            digest.open.push(OpenCaseLine {
                case_id: case.id,
                source: case.alert().source.label(),
                target: case.alert().target.label(),
                state: case.state,
                waited_minutes: now.millis_since(case.opened_at) / 60_000,
            });
        }
        if case.resolution.as_ref().is_some_and(|decision| decision.at >= day_ago) {
            digest.closed_expected += 1;
            let advance = case.advance.as_ref().map(|note| &note.outcome);
            if advance == Some(&vouch_playbook::engine::AdvanceOutcome::Vouched) {
                digest.vouched_in_advance += 1;
            }
        }
        if case.escalation.as_ref().is_some_and(|decision| decision.at >= day_ago) {
            digest.escalated += 1;
        }
        digest.isolated += case
            .isolations
            .iter()
            .filter(|request| {
                request.at >= day_ago && request.delivered() && request.action == IsolationAction::Isolate
            })
            .count();
    }
    Ok(digest)
}
