//! Carries pushes out: sends the push an answer waits on, records the transaction with the case,
//! polls it, and records how it ended. The engine decides what each end means.
//!
//! A push is recorded (`PushSent`) before it is polled, so a restart resumes polling it. A push
//! that was asked for but not recorded as sent when Vouch stopped is not sent again (a second
//! push the person did not ask for teaches them to approve pushes by reflex): it ends as failed,
//! and the person may answer again. A push nobody answers ends on the case's own deadline even
//! if this worker is gone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use vouch_config::VerificationSettings;
use vouch_playbook::engine::{PushOutcome, PushRecord};
use vouch_playbook::{Actor, CaseEvent, CaseId, CaseState, EventKind, PersonId, Timestamp};

use super::{PushRequest, PushStatus, PushTransaction, PushVerifier};
use crate::service::{CaseRequest, Service};

/// Polls in a row that may fail before a push counts as failed (a provider's brief outage is
/// waited out; a long one is not mistaken for an approval, only for a failure).
const MOST_FAILED_POLLS: u32 = 3;

/// A push a durable change asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToSend {
    pub case_id: CaseId,
    pub verification: u32,
    pub person: PersonId,
    pub summary: String,
}

pub struct PushWorker {
    service: Arc<Service>,
    verifier: Arc<dyn PushVerifier>,
    settings: VerificationSettings,
    requests: UnboundedReceiver<PushToSend>,
    poll_every: Duration,
}

impl PushWorker {
    pub fn new(
        service: Arc<Service>,
        verifier: Box<dyn PushVerifier>,
        settings: VerificationSettings,
        requests: UnboundedReceiver<PushToSend>,
    ) -> PushWorker {
        let poll_every = settings.poll_every;
        PushWorker { service, verifier: Arc::from(verifier), settings, requests, poll_every }
    }

    pub async fn run(mut self) {
        self.resume_after_restart().await;
        while let Some(push) = self.requests.recv().await {
            let push_task = PushTask {
                service: Arc::clone(&self.service),
                verifier: Arc::clone(&self.verifier),
                poll_every: self.poll_every,
                case_id: push.case_id,
                verification: push.verification,
            };
            let username = self.settings.username_of(push.person.as_str());
            tokio::spawn(push_task.send_then_poll(PushRequest { username, summary: push.summary }));
        }
    }

    /// Pushes that were waiting when Vouch stopped: those sent are polled again, those not
    /// recorded as sent end as failed.
    async fn resume_after_restart(&self) {
        let service = Arc::clone(&self.service);
        let states = [CaseState::Open, CaseState::AwaitingConfirmation, CaseState::Escalated];
        let cases = match tokio::task::spawn_blocking(move || service.store.cases(Some(&states))).await {
            Ok(Ok(cases)) => cases,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the cases whose pushes may be waiting; they end on their deadlines");
                return;
            }
            Err(_) => return,
        };
        for case in cases {
            let Some(pending) = case.pending_verification else { continue };
            let task = PushTask {
                service: Arc::clone(&self.service),
                verifier: Arc::clone(&self.verifier),
                poll_every: self.poll_every,
                case_id: case.id,
                verification: pending.id,
            };
            match pending.push {
                Some(push) => {
                    tracing::info!(case_id = %case.id, transaction = %push.transaction, "polling a push sent before the restart");
                    let transaction = PushTransaction { provider: self.verifier.provider(), id: push.transaction };
                    tokio::spawn(task.poll(transaction, pending.expires_at));
                }
                None => {
                    let reason = "Vouch stopped before the push was sent".to_string();
                    tokio::spawn(async move { task.finish(PushOutcome::Failed { reason }).await });
                }
            }
        }
    }
}

/// One push, from sending to its end.
struct PushTask {
    service: Arc<Service>,
    verifier: Arc<dyn PushVerifier>,
    poll_every: Duration,
    case_id: CaseId,
    verification: u32,
}

impl PushTask {
    async fn send_then_poll(self, request: PushRequest) {
        let sent = match self.verifier.send_push(&request).await {
            Ok(sent) => sent,
            Err(error) => {
                tracing::warn!(case_id = %self.case_id, %error, "the push could not be sent");
                return self.finish(PushOutcome::Failed { reason: error.to_string() }).await;
            }
        };
        let push = PushRecord {
            provider: self.verifier.provider().label().to_string(),
            transaction: sent.transaction.id.clone(),
            number_to_pick: sent.number_to_pick,
        };
        let detail =
            json!({"verification": self.verification, "provider": push.provider, "transaction": push.transaction});
        let recorded = self
            .record(
                EventKind::VerificationPushSent,
                detail,
                CaseEvent::PushSent { verification: self.verification, push },
            )
            .await;
        let Some(expires_at) = recorded else { return };
        self.poll(sent.transaction, expires_at).await;
    }

    /// Polls until the push ends or its deadline passes.
    async fn poll(self, transaction: PushTransaction, expires_at: Timestamp) {
        let mut failed_polls = 0;
        loop {
            tokio::time::sleep(self.poll_every).await;
            if self.service.clock.now() >= expires_at {
                return self.finish(PushOutcome::TimedOut).await;
            }
            let outcome = match self.verifier.push_status(&transaction).await {
                Ok(PushStatus::Waiting) => continue,
                Ok(PushStatus::Approved) => PushOutcome::Approved,
                Ok(PushStatus::Denied) => PushOutcome::Denied,
                Ok(PushStatus::Fraud) => PushOutcome::Fraud,
                Ok(PushStatus::TimedOut) => PushOutcome::TimedOut,
                Err(error) => {
                    failed_polls += 1;
                    tracing::warn!(case_id = %self.case_id, %error, failed_polls, "a push could not be polled");
                    if failed_polls < MOST_FAILED_POLLS {
                        continue;
                    }
                    PushOutcome::Failed { reason: error.to_string() }
                }
            };
            return self.finish(outcome).await;
        }
    }

    async fn finish(&self, outcome: PushOutcome) {
        let detail = json!({"verification": self.verification, "outcome": outcome});
        let event = CaseEvent::VerificationFinished { verification: self.verification, outcome };
        self.record(EventKind::VerificationFinished, detail, event).await;
    }

    /// Applies a push's event to its case; the push's deadline when it was taken.
    async fn record(&self, kind: EventKind, detail: serde_json::Value, event: CaseEvent) -> Option<Timestamp> {
        let actor = Actor::vouch();
        let request = CaseRequest::new(self.case_id, kind, &actor, detail, event);
        match self.service.apply_durably(request, self.service.clock.now()).await {
            Ok(crate::service::Change::Applied { case }) => {
                self.service.effects_ready.notify_one();
                self.service.timers_ready.notify_one();
                case.pending_verification.map(|pending| pending.expires_at)
            }
            // The case moved on (the push expired on its deadline first): nothing to carry on.
            Ok(_) => None,
            Err(error) => {
                tracing::error!(case_id = %self.case_id, %error, "a push's result could not be recorded; it ends on its deadline");
                None
            }
        }
    }
}
