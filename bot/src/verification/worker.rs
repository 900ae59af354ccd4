//! Carries pushes out: sends the push an answer (or a `/link` request, or a vouch in advance
//! asked for) waits on, records the transaction with it, polls it, and records how it ended. The
//! engine (for answers), `vouch_playbook::identity` (for links) and `vouch_playbook::advance`
//! decide what each end means.
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
use vouch_playbook::{Actor, CaseEvent, CaseId, EventKind, PersonId, Snowflake, Timestamp};

use super::{PushRequest, PushStatus, PushTransaction, PushVerifier};
use crate::service::{CaseRequest, Service};

/// Polls in a row that may fail before a push counts as failed (a provider's brief outage is
/// waited out; a long one is not mistaken for an approval, only for a failure).
const MOST_FAILED_POLLS: u32 = 3;

/// What a push verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushSubject {
    /// An answer held on a case.
    Case { case_id: CaseId, verification: u32 },
    /// A Discord account asking to be bound to the person (`/link`).
    Link { discord_id: Snowflake },
    /// A vouch in advance the person asked for (`/expect`, "Expect this again").
    Advance { discord_id: Snowflake },
}

/// A push a durable change asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToSend {
    pub subject: PushSubject,
    pub person: PersonId,
    pub summary: String,
}

/// What became of a request that needs a push (`/link`, `/expect`).
#[derive(Debug)]
pub enum PushAsked {
    /// Recorded; this push is to be sent.
    Sent(PushToSend),
    Refused(String),
}

pub struct PushWorker {
    service: Arc<Service>,
    verifier: Arc<dyn PushVerifier>,
    settings: VerificationSettings,
    /// Shared with the workers of later leaderships: pushes asked for meanwhile wait in it.
    requests: Arc<tokio::sync::Mutex<UnboundedReceiver<PushToSend>>>,
    poll_every: Duration,
}

impl PushWorker {
    pub fn new(
        service: Arc<Service>,
        verifier: Arc<dyn PushVerifier>,
        settings: VerificationSettings,
        requests: Arc<tokio::sync::Mutex<UnboundedReceiver<PushToSend>>>,
    ) -> PushWorker {
        let poll_every = settings.poll_every;
        PushWorker { service, verifier, settings, requests, poll_every }
    }

    pub async fn run(self) {
        self.resume_after_restart().await;
        let requests = Arc::clone(&self.requests);
        let mut requests = requests.lock().await;
        while let Some(push) = requests.recv().await {
            let username = self.settings.username_of(push.person.as_str());
            let task = self.task(push.subject);
            tokio::spawn(task.send_then_poll(PushRequest { username, summary: push.summary }));
        }
    }

    fn task(&self, subject: PushSubject) -> PushTask {
        PushTask {
            service: Arc::clone(&self.service),
            verifier: Arc::clone(&self.verifier),
            poll_every: self.poll_every,
            subject,
        }
    }

    /// Pushes that were waiting when Vouch stopped (for answers and for links): those sent are
    /// polled again, those not recorded as sent end as failed.
    async fn resume_after_restart(&self) {
        let service = Arc::clone(&self.service);
        let waiting = tokio::task::spawn_blocking(move || {
            // Read through their own index: a start does not read every open case.
            let cases = service.store.cases_awaiting_push()?;
            let links = service.store.pending_links()?;
            let advances = service.store.pending_advances()?;
            Ok::<_, vouch_storage::StorageError>((cases, links, advances))
        })
        .await;
        let (cases, links, advances) = match waiting {
            Ok(Ok(waiting)) => waiting,
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot read the pushes that may be waiting; those of cases end on their deadlines");
                return;
            }
            Err(_) => return,
        };
        let held = cases.into_iter().filter_map(|case| {
            let pending = case.pending_verification?;
            Some((PushSubject::Case { case_id: case.id, verification: pending.id }, pending.push, pending.expires_at))
        });
        let links = links
            .into_iter()
            .map(|link| (PushSubject::Link { discord_id: link.discord_id }, link.push, link.expires_at));
        let advances = advances
            .into_iter()
            .map(|pending| (PushSubject::Advance { discord_id: pending.discord_id }, pending.push, pending.expires_at));
        for (subject, push, expires_at) in held.chain(links).chain(advances) {
            let task = self.task(subject);
            match push {
                Some(push) => {
                    tracing::info!(?subject, transaction = %push.transaction, "polling a push sent before the restart");
                    let transaction = PushTransaction { provider: self.verifier.provider(), id: push.transaction };
                    tokio::spawn(task.poll(transaction, expires_at));
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
    subject: PushSubject,
}

impl PushTask {
    async fn send_then_poll(self, request: PushRequest) {
        let sent = match self.verifier.send_push(&request).await {
            Ok(sent) => sent,
            Err(error) => {
                tracing::warn!(subject = ?self.subject, %error, "the push could not be sent");
                return self.finish(PushOutcome::Failed { reason: error.to_string() }).await;
            }
        };
        let push = PushRecord {
            provider: self.verifier.provider().label().to_string(),
            transaction: sent.transaction.id.clone(),
            number_to_pick: sent.number_to_pick,
        };
        let Some(expires_at) = self.record_sent(push).await else { return };
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
                    tracing::warn!(subject = ?self.subject, %error, failed_polls, "a push could not be polled");
                    if failed_polls < MOST_FAILED_POLLS {
                        continue;
                    }
                    PushOutcome::Failed { reason: error.to_string() }
                }
            };
            return self.finish(outcome).await;
        }
    }

    /// Records the push as sent; its deadline, or `None` when what it verifies moved on.
    async fn record_sent(&self, push: PushRecord) -> Option<Timestamp> {
        match self.subject {
            PushSubject::Case { case_id, verification } => {
                let detail =
                    json!({"verification": verification, "provider": push.provider, "transaction": push.transaction});
                let event = CaseEvent::PushSent { verification, push };
                self.apply(case_id, EventKind::VerificationPushSent, detail, event).await
            }
            PushSubject::Advance { discord_id } => self
                .on_blocking_thread("a vouch in advance's push", move |service| {
                    service.advance_push_sent(discord_id, push)
                })
                .await
                .flatten(),
            PushSubject::Link { discord_id } => self
                .on_blocking_thread("a link request's push", move |service| service.link_push_sent(discord_id, push))
                .await
                .flatten(),
        }
    }

    async fn finish(&self, outcome: PushOutcome) {
        match self.subject {
            PushSubject::Case { case_id, verification } => {
                let detail = json!({"verification": verification, "outcome": outcome});
                let event = CaseEvent::VerificationFinished { verification, outcome };
                self.apply(case_id, EventKind::VerificationFinished, detail, event).await;
            }
            PushSubject::Advance { discord_id } => {
                let now = self.service.clock.now();
                let ended = move |service: &Service| service.finish_advance(discord_id, outcome, now);
                if let Some(Some(made)) = self.on_blocking_thread("a vouch in advance's end", ended).await {
                    tracing::info!(id = %made.id, kind = made.kind_name(), "vouch given in advance");
                }
            }
            PushSubject::Link { discord_id } => {
                let now = self.service.clock.now();
                let ended = move |service: &Service| service.finish_link(discord_id, outcome, now);
                self.on_blocking_thread("a link request's end", ended).await;
            }
        }
    }

    /// Records something about a push that is not a case's (a link or a vouch in advance) on
    /// a blocking thread; `None` when it could not be (said in the log: the request then ends on
    /// restart).
    async fn on_blocking_thread<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&Service) -> Result<T, vouch_storage::StorageError> + Send + 'static,
    ) -> Option<T> {
        let service = Arc::clone(&self.service);
        let done = match tokio::task::spawn_blocking(move || work(&service)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::error!(%error, "{what} could not be recorded; the request ends on restart");
                None
            }
            Err(_) => None,
        };
        self.service.effects_ready.notify_one();
        done
    }

    /// Applies a push's event to its case; the push's deadline when it was taken.
    async fn apply(
        &self,
        case_id: CaseId,
        kind: EventKind,
        detail: serde_json::Value,
        event: CaseEvent,
    ) -> Option<Timestamp> {
        let actor = Actor::vouch();
        let request = CaseRequest::new(case_id, kind, &actor, detail, event);
        match self.service.apply_durably(request, self.service.clock.now()).await {
            Ok(crate::service::Change::Applied { case }) => {
                self.service.effects_ready.notify_one();
                self.service.timers_ready.notify_one();
                case.pending_verification.map(|pending| pending.expires_at)
            }
            // The case moved on (the push expired on its deadline first): nothing to carry on.
            Ok(_) => None,
            Err(error) => {
                tracing::error!(%case_id, %error, "a push's result could not be recorded; it ends on its deadline");
                None
            }
        }
    }
}
