//! The one effect dispatcher: it carries out what the engine decided, after the change that
//! decided it is durable. It owns the order of each case's effects, backoff and giving up; the
//! chat behind it (Discord, or none) is a [`ChatSink`]. Outbound calls (isolation webhooks) do
//! not pass through here: their outbox entries are written with the change itself.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use vouch_playbook::{AuditKind, Case, CaseId, Effect, Timestamp};
use vouch_storage::{PendingEffect, RedrawWanted, StorageError};

use crate::service::Service;

/// How often the dispatcher looks for pending effects when nothing wakes it.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Backoff after a failed effect: doubling from the first step up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// An effect the chat refuses (a deleted message, a missing permission) is tried this often
/// before it is given up, so it cannot block the case's later effects.
const REFUSED_ATTEMPTS: u32 = 3;
/// Effects read per pass.
const BATCH: usize = 500;
/// A card that repeated alerts keep changing is drawn again at most this often; a decision
/// (a click, a timer) is drawn at once.
const STORM_REDRAW_EVERY: Duration = Duration::from_secs(10);

/// Why an effect was not carried out.
#[derive(Debug)]
pub enum SinkError {
    /// No chat service is configured: the effect is recorded as not delivered.
    NotConfigured,
    /// The chat refused the request; trying again will not help.
    Refused(anyhow::Error),
    /// It may work later (a 5xx, a 429, the network).
    Failed(anyhow::Error),
}

/// Where chat effects go: cards, pings, pages and notices, and the daily digest.
pub trait ChatSink: Send + 'static {
    /// Whether anything is delivered at all. Without a chat nothing is, and the dispatcher keeps
    /// every effect on its case as undelivered without reading the case for it.
    fn delivers(&self) -> bool {
        true
    }

    /// Carries out one effect of `case`.
    fn carry_out(&mut self, case: &Case, effect: &Effect) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Posts the daily digest for the schedule's `slot` (the same slot is posted once, even if
    /// asked again after a crash).
    fn post_digest(
        &mut self,
        slot: Timestamp,
        text: &crate::timers::Digest,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Tells the SOC channel something that belongs to no case (posted once per notice, even if
    /// asked again after a crash).
    fn post_notice(&mut self, notice: &vouch_storage::Notice) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// No chat configured: every chat effect is recorded on its case as not delivered.
pub struct NoChat;

/// Why a chat effect is kept on its case as not delivered when no chat is configured.
pub const NO_CHAT: &str = "no chat service is configured";

impl ChatSink for NoChat {
    fn delivers(&self) -> bool {
        false
    }

    async fn carry_out(&mut self, _case: &Case, _effect: &Effect) -> Result<(), SinkError> {
        Err(SinkError::NotConfigured)
    }

    async fn post_notice(&mut self, _notice: &vouch_storage::Notice) -> Result<(), SinkError> {
        Err(SinkError::NotConfigured)
    }

    async fn post_digest(&mut self, _slot: Timestamp, _digest: &crate::timers::Digest) -> Result<(), SinkError> {
        Err(SinkError::NotConfigured)
    }
}

/// What the dispatcher gives up on when the chat keeps refusing it.
enum GivenUp {
    Effect(PendingEffect),
    Redraw(RedrawWanted),
}

/// What of a case the dispatcher carries out: its queued effects, or its card's redraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Queue,
    Redraw,
}

pub struct Dispatcher<S> {
    service: Arc<Service>,
    sink: S,
    /// Cases whose last effect (or last redraw) failed: how many times in a row, and when to try
    /// again. A case's queued effects and its card's redraw keep their own counts: a refused
    /// redraw neither holds back the case's pings nor is forgiven by their success.
    backoff: HashMap<(CaseId, Lane), (u32, Instant)>,
    /// When each card was last drawn (posted or redrawn), to space a storming card's redraws.
    last_drawn: HashMap<CaseId, Instant>,
}

impl<S: ChatSink> Dispatcher<S> {
    pub fn new(service: Arc<Service>, sink: S) -> Dispatcher<S> {
        Dispatcher { service, sink, backoff: HashMap::new(), last_drawn: HashMap::new() }
    }

    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        let wake = Arc::clone(&self.service.effects_ready);
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pass().await {
                // A full batch: there may be more right away.
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "carrying out effects failed; will retry"),
            }
            let _ = tokio::time::timeout(RETRY_EVERY, notified).await;
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T, StorageError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let service = Arc::clone(&self.service);
        Ok(tokio::task::spawn_blocking(move || work(&service)).await??)
    }

    /// One pass: the digest if due, every queued effect, then the cards that want redrawing.
    /// True when there is more to do at once.
    async fn pass(&mut self) -> anyhow::Result<bool> {
        self.digest().await?;
        self.notices().await?;
        let pending = self.blocking(|service| service.store.pending_effects(BATCH)).await?;
        // Read after the queue, so a new card's own wish is seen with its post, and before the
        // cases, so a card drawn in this pass shows at least the versions read.
        let redraws = self.blocking(|service| service.store.redraws_wanted()).await?;
        if self.carry_out_queue(pending, &redraws).await? {
            return Ok(true);
        }
        self.redraw_cards(redraws).await
    }

    /// Redraws the cards that want it, behind every new card: a redraw never takes a slot of the
    /// channel's budget while a card is waiting to be posted. True when new cards came meanwhile.
    async fn redraw_cards(&mut self, redraws: Vec<RedrawWanted>) -> anyhow::Result<bool> {
        if !self.sink.delivers() {
            // No card was ever posted: there is nothing to redraw.
            if !redraws.is_empty() {
                self.blocking(move |service| service.store.clear_redraws(&redraws)).await?;
            }
            return Ok(false);
        }
        // Only recent draws matter for spacing; the rest would only grow with every case.
        self.last_drawn.retain(|_, at| at.elapsed() < STORM_REDRAW_EVERY);
        let mut drawn = Vec::new();
        let more = self.redraw_some(redraws, &mut drawn).await;
        if !drawn.is_empty() {
            self.blocking(move |service| service.store.clear_redraws(&drawn)).await?;
        }
        more
    }

    async fn redraw_some(&mut self, redraws: Vec<RedrawWanted>, drawn: &mut Vec<RedrawWanted>) -> anyhow::Result<bool> {
        for wanted in redraws {
            let case_id = wanted.case_id;
            let drawn_recently = self.last_drawn.get(&case_id).is_some_and(|at| at.elapsed() < STORM_REDRAW_EVERY);
            if (drawn_recently && !wanted.urgent) || self.is_backing_off(case_id, Lane::Redraw) {
                continue;
            }
            if self.new_cards_waiting().await? {
                return Ok(true);
            }
            let case = match self.blocking(move |service| service.case_to_act_on(case_id)).await {
                Ok(case) => case,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), %case_id, "cannot read a case to redraw its card");
                    continue;
                }
            };
            match self.sink.carry_out(&case, &Effect::UpdateCard).await {
                // (A sink that delivers nothing never gets here: see above.)
                Ok(()) | Err(SinkError::NotConfigured) => {
                    drawn.push(wanted);
                    self.last_drawn.insert(case_id, Instant::now());
                    self.backoff.remove(&(case_id, Lane::Redraw));
                }
                // The card is gone or cannot be edited: stop trying, and say so.
                Err(SinkError::Refused(error)) if self.refused_too_often(case_id, Lane::Redraw) => {
                    self.give_up(GivenUp::Redraw(wanted), &error).await?;
                }
                Err(SinkError::Refused(error) | SinkError::Failed(error)) => {
                    self.note_failure(case_id, Lane::Redraw, &error, &Effect::UpdateCard);
                }
            }
        }
        Ok(false)
    }

    /// Whether a card is waiting to be posted.
    async fn new_cards_waiting(&self) -> anyhow::Result<bool> {
        let pending = self.blocking(|service| service.store.pending_effects(BATCH)).await?;
        Ok(pending
            .iter()
            .any(|item| item.effect == Effect::PostCard && !self.is_backing_off(item.case_id, Lane::Queue)))
    }

    fn is_backing_off(&self, case_id: CaseId, lane: Lane) -> bool {
        self.backoff.get(&(case_id, lane)).is_some_and(|(_, retry_at)| *retry_at > Instant::now())
    }

    /// Notes a failed attempt and when to try the case again: doubling from the first step.
    fn note_failure(&mut self, case_id: CaseId, lane: Lane, error: &anyhow::Error, effect: &Effect) {
        let failures = self.backoff.get(&(case_id, lane)).map_or(0, |(failures, _)| *failures) + 1;
        let delay = BACKOFF_FIRST.saturating_mul(1 << failures.min(6).saturating_sub(1)).min(BACKOFF_CAP);
        self.backoff.insert((case_id, lane), (failures, Instant::now() + delay));
        tracing::warn!(
            error = %format!("{error:#}"),
            %case_id,
            ?effect,
            failures,
            retry_in_ms = delay.as_millis() as u64,
            "effect failed; will retry"
        );
    }

    /// Carries out the queued effects. A case whose effect fails keeps its later effects for the
    /// next pass, so its messages never come out of order. True when the batch was full.
    async fn carry_out_queue(&mut self, pending: Vec<PendingEffect>, redraws: &[RedrawWanted]) -> anyhow::Result<bool> {
        let full = pending.len() == BATCH;
        if pending.is_empty() {
            return Ok(false);
        }
        let mut blocked: HashSet<CaseId> = HashSet::new();
        // Only the last card update of a case in this pass is needed: it shows the latest state.
        let mut last_update: HashMap<CaseId, u64> = HashMap::new();
        for item in &pending {
            if item.effect == Effect::UpdateCard {
                last_update.insert(item.case_id, item.seq);
            }
        }
        let mut not_delivered: Vec<PendingEffect> = Vec::new();
        let mut done: Vec<u64> = Vec::new();
        for item in pending {
            if blocked.contains(&item.case_id) {
                continue;
            }
            if self.is_backing_off(item.case_id, Lane::Queue) {
                blocked.insert(item.case_id);
                continue;
            }
            let superseded = item.effect == Effect::UpdateCard && last_update.get(&item.case_id) != Some(&item.seq);
            if superseded || item.effect == Effect::Unknown {
                done.push(item.seq);
                continue;
            }
            if !self.sink.delivers() {
                not_delivered.push(item);
                continue;
            }
            let case_id = item.case_id;
            let case = match self.blocking(move |service| service.case_to_act_on(case_id)).await {
                Ok(case) => case,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), %case_id, "cannot read the case of an effect");
                    blocked.insert(case_id);
                    continue;
                }
            };
            match self.sink.carry_out(&case, &item.effect).await {
                Ok(()) => {
                    // Marked done before the next effect of any case, so a crash repeats at most
                    // this one (cards are posted with a nonce, so even that makes no second card).
                    let seq = item.seq;
                    self.blocking(move |service| service.store.complete_effects(&[seq])).await?;
                    self.backoff.remove(&(case_id, Lane::Queue));
                    if item.effect == Effect::PostCard {
                        // The new card shows the case as read after these wishes were.
                        self.last_drawn.insert(case_id, Instant::now());
                        if let Some(wanted) = redraws.iter().find(|wanted| wanted.case_id == case_id).copied() {
                            self.blocking(move |service| service.store.clear_redraws(&[wanted])).await?;
                        }
                    }
                }
                Err(SinkError::NotConfigured) => not_delivered.push(item),
                Err(SinkError::Refused(error)) if self.refused_too_often(case_id, Lane::Queue) => {
                    self.give_up(GivenUp::Effect(item), &error).await?;
                }
                Err(SinkError::Refused(error) | SinkError::Failed(error)) => {
                    self.note_failure(case_id, Lane::Queue, &error, &item.effect);
                    blocked.insert(case_id);
                }
            }
        }
        if !done.is_empty() {
            self.blocking(move |service| service.store.forget_effects(&done)).await?;
        }
        if !not_delivered.is_empty() {
            self.blocking(move |service| {
                let now = service.clock.now();
                service
                    .store
                    .write(|transaction| {
                        for item in &not_delivered {
                            transaction.mark_undelivered(item, now, NO_CHAT);
                        }
                        Ok(())
                    })?
                    .wait()
            })
            .await?;
        }
        Ok(full)
    }

    /// Whether this refusal is the one too many: the case's earlier tries were refused too.
    fn refused_too_often(&self, case_id: CaseId, lane: Lane) -> bool {
        self.backoff.get(&(case_id, lane)).map_or(0, |(failures, _)| *failures) + 1 >= REFUSED_ATTEMPTS
    }

    /// Gives up on what the chat keeps refusing: it leaves the queue (or the wish to redraw is
    /// cleared) with an `effect.abandoned` record on its case, in one write.
    async fn give_up(&mut self, given_up: GivenUp, error: &anyhow::Error) -> anyhow::Result<()> {
        let (case_id, lane, effect) = match &given_up {
            GivenUp::Effect(item) => (item.case_id, Lane::Queue, item.effect.clone()),
            GivenUp::Redraw(wanted) => (wanted.case_id, Lane::Redraw, Effect::UpdateCard),
        };
        tracing::error!(error = %format!("{error:#}"), %case_id, ?effect, "the chat refused an effect; giving up on it");
        let detail = json!({"effect": effect, "error": format!("{error:#}")});
        self.blocking(move |service| {
            let record =
                crate::service::vouch_record(AuditKind::EffectAbandoned, Some(case_id), detail, service.clock.now());
            service
                .store
                .write(|transaction| {
                    match &given_up {
                        GivenUp::Effect(item) => transaction.remove_effects(&[item.seq]),
                        GivenUp::Redraw(wanted) => transaction.clear_redraw(wanted)?,
                    }
                    transaction.append_audit(record).map(|_| ())
                })?
                .wait()
        })
        .await?;
        self.backoff.remove(&(case_id, lane));
        Ok(())
    }

    /// Posts the notices waiting for the SOC channel, oldest first; each leaves the queue only
    /// once posted (without a chat, once logged).
    async fn notices(&mut self) -> anyhow::Result<()> {
        let notices = self.blocking(|service| service.store.notices()).await?;
        for notice in notices {
            match self.sink.post_notice(&notice).await {
                Ok(()) => {}
                Err(SinkError::NotConfigured) => {
                    tracing::warn!(notice = %notice.text, "no chat is configured: this notice for the SOC is only in the log");
                }
                Err(SinkError::Refused(error) | SinkError::Failed(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "a notice for the SOC could not be posted; will retry");
                    return Ok(());
                }
            }
            let seq = notice.seq;
            self.blocking(move |service| service.store.complete_notice(seq)).await?;
        }
        Ok(())
    }

    /// Posts the digest when it is due, and marks it sent only once it was posted.
    async fn digest(&mut self) -> anyhow::Result<()> {
        let Some(slot) = self.blocking(crate::timers::digest_due).await? else { return Ok(()) };
        let digest = self.blocking(crate::timers::digest).await?;
        let posted = match self.sink.post_digest(slot, &digest).await {
            Ok(()) => true,
            Err(SinkError::NotConfigured) => false,
            Err(SinkError::Refused(error) | SinkError::Failed(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "the digest could not be posted; will retry");
                return Ok(());
            }
        };
        self.blocking(move |service| crate::timers::digest_sent(service, slot, posted)).await
    }
}
