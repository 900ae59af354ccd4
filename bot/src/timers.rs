//! Deadlines and schedules. Every deadline lives in the store with its case, so this loop only
//! looks for what is due: nothing is lost with an in-memory timer on a restart.

use std::sync::Arc;

use serde_json::json;
use vouch_playbook::engine::Confirmer;
use vouch_playbook::{Actor, Case, CaseEvent};

use crate::service::Service;

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

/// Whether the person being chased may be chased now. On-call (and the SOC) is always reachable;
/// people asked to confirm only within business hours, when those are set.
fn may_chase(service: &Service, case: &Case, now: vouch_playbook::Timestamp) -> bool {
    let page_due =
        case.page.as_ref().is_some_and(|page| page.acknowledged.is_none() && page.deadline.is_some_and(|at| at <= now));
    if page_due {
        return true;
    }
    match (&service.timers.business_hours, case.confirmation.current_confirmer()) {
        (Some(hours), Some(Confirmer::Person { .. })) => hours.includes(now),
        _ => true,
    }
}

/// Applies `ReminderDue` to every case with a passed deadline; returns how many fired. The
/// store keeps an index of deadlines, so this reads only the cases that are due.
fn due_reminders(service: &Service) -> Result<usize, vouch_storage::StorageError> {
    let now = service.clock.now();
    let mut fired = 0;
    for case_id in service.store.due_cases(now)? {
        let case = service.store.case(case_id)?;
        let Some(deadline) = case.next_deadline() else { continue };
        if deadline > now || !may_chase(service, &case, now) {
            continue;
        }
        let detail = json!({"deadline": deadline});
        service.apply(case.id, "timer.deadline", &Actor::vouch(), detail, CaseEvent::ReminderDue, now)?;
        fired += 1;
    }
    Ok(fired)
}

/// Whether the digest is due now; records the new "last sent" when it is. The first run only
/// starts the schedule, so a restart never sends a burst of missed digests.
pub fn digest_due(service: &Service) -> Result<bool, vouch_storage::StorageError> {
    let Some(schedule) = &service.timers.digest else { return Ok(false) };
    let now = service.clock.now();
    let Some(last) = service.store.marker(DIGEST_MARKER)? else {
        service.store.set_marker(DIGEST_MARKER, now)?;
        return Ok(false);
    };
    match schedule.next_after(last) {
        Some(next) if next <= now => {
            service.store.set_marker(DIGEST_MARKER, now)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The digest's text: open cases and how long each has waited, and the last day's outcomes.
pub fn digest_text(service: &Service) -> Result<String, vouch_storage::StorageError> {
    let now = service.clock.now();
    let day_ago = now.plus_millis(-24 * 60 * 60 * 1000);
    let cases = service.store.cases(None)?;
    let mut open_lines = Vec::new();
    let (mut expected, mut escalated, mut isolated) = (0, 0, 0);
    for case in &cases {
        if !case.state.is_finished() {
            let waited = now.millis_since(case.opened_at) / 60_000;
            open_lines.push(format!(
                "• **{}** {} → {}: {} ({} h {} min)",
                case.id,
                crate::discord::render::inert(&case.alert().source.label(), 60),
                crate::discord::render::inert(&case.alert().target.label(), 60),
                case.state.id().replace('_', " "),
                waited / 60,
                waited % 60
            ));
        }
        if case.resolution.as_ref().is_some_and(|decision| decision.at >= day_ago) {
            expected += 1;
        }
        if case.escalation.as_ref().is_some_and(|decision| decision.at >= day_ago) {
            escalated += 1;
        }
        isolated += case
            .isolations
            .iter()
            .filter(|request| {
                request.at >= day_ago
                    && request.delivered()
                    && request.action == vouch_playbook::engine::IsolationAction::Isolate
            })
            .count();
    }
    let mut text = format!(
        "**Vouch digest**: {} open case(s). Last 24 h: {expected} closed as expected, {escalated} escalated, {isolated} host(s) isolated.",
        open_lines.len()
    );
    for line in open_lines.iter().take(25) {
        text.push('\n');
        text.push_str(line);
    }
    if open_lines.len() > 25 {
        text.push_str(&format!("\n… and {} more (see /cases).", open_lines.len() - 25));
    }
    Ok(crate::discord::render::cap(&text, 1900))
}
