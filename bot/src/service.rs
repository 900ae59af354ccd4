//! One place where an alert or an event meets the directory, the engine and the store.

use std::sync::Arc;

use tokio::sync::Notify;
use vouch_config::Directory;
use vouch_playbook::{apply, open_case, Actor, Alert, Case, CaseEvent, CaseId, Playbook, Timestamp};
use vouch_storage::{Applied, IngestRequest, Ingested, Pending, StorageError, Store};

pub struct Service {
    pub store: Arc<Store>,
    pub directory: Directory,
    pub playbook: Playbook,
    pub grouping_window_minutes: u32,
    /// Woken whenever a change queued effects, so the Discord worker carries them out promptly.
    pub effects_ready: Arc<Notify>,
    /// Woken when isolation requests are added to the outbox.
    pub outbox_ready: Arc<Notify>,
    pub webhooks: Vec<vouch_config::WebhookSettings>,
    pub clock: Arc<dyn crate::Clock>,
    pub oncall: Option<vouch_config::OnCallRotation>,
    pub timers: vouch_config::TimerSettings,
    /// Wakes the timer to check deadlines now (after a change, or when a test moved the clock).
    pub timers_ready: Arc<Notify>,
}

impl Service {
    /// Turns an alert into a new, grouped or duplicate case, durably. The engine and the store's
    /// in-memory write run on the calling task (short CPU work under the store's writer lock);
    /// the wait for the flush holds no thread.
    pub async fn ingest_durably(&self, alert: Alert, now: Timestamp) -> Result<Ingested, StorageError> {
        self.begin_ingest(alert, now)?.durable().await
    }

    fn begin_ingest(&self, alert: Alert, now: Timestamp) -> Result<Pending<Ingested>, StorageError> {
        let facts = self.directory.facts_for(&alert);
        let playbook = &self.playbook;
        let open = |id, alert: Alert, history: &_| {
            let opening = open_case(playbook, &alert, &facts, history, now);
            Case::open(id, playbook, alert, facts.clone(), opening, now)
        };
        let fold = |case: Case, alert: &Alert| {
            apply(playbook, case, CaseEvent::AlertGrouped { received_at: alert.received_at }, now)
        };
        self.store.begin_ingest(IngestRequest {
            alert,
            grouping_window_millis: i64::from(self.grouping_window_minutes) * 60_000,
            now,
            open: &open,
            fold: &fold,
        })
    }

    /// Applies an event (a click, a form, a timer) to a case through the engine and records it,
    /// refusals included. Durable on return. Blocking: call it from a blocking thread.
    pub fn apply(
        &self,
        case_id: CaseId,
        kind: &str,
        actor: &Actor,
        detail: serde_json::Value,
        event: CaseEvent,
        now: Timestamp,
    ) -> Result<Applied, StorageError> {
        self.begin_apply(case_id, kind, actor, detail, event, now)?.wait()
    }

    /// [`Service::apply`] for async callers, like [`Service::ingest_durably`].
    pub async fn apply_durably(
        &self,
        case_id: CaseId,
        kind: &str,
        actor: &Actor,
        detail: serde_json::Value,
        event: CaseEvent,
        now: Timestamp,
    ) -> Result<Applied, StorageError> {
        self.begin_apply(case_id, kind, actor, detail, event, now)?.durable().await
    }

    fn begin_apply(
        &self,
        case_id: CaseId,
        kind: &str,
        actor: &Actor,
        detail: serde_json::Value,
        event: CaseEvent,
        now: Timestamp,
    ) -> Result<Pending<Applied>, StorageError> {
        self.store
            .begin_apply_event(case_id, kind, Some(actor), detail, now, |case| apply(&self.playbook, case, event, now))
    }

    /// Who is on call now, as directory people: (primary, secondary).
    pub fn on_call(&self) -> (Option<&vouch_config::Person>, Option<&vouch_config::Person>) {
        let Some(rotation) = &self.oncall else { return (None, None) };
        let (primary, secondary) = rotation.on_call(self.clock.now());
        let person = |id: Option<vouch_playbook::PersonId>| id.and_then(|id| self.directory.person(&id));
        (person(primary), person(secondary))
    }

    /// "Sam Okafor (then Dana Kim)", or None without a rotation.
    pub fn on_call_line(&self) -> Option<String> {
        let (primary, secondary) = self.on_call();
        let primary = primary?;
        Some(match secondary {
            Some(secondary) => format!("{} (secondary {})", primary.name, secondary.name),
            None => primary.name.clone(),
        })
    }
}
