//! The one owner of every change: an alert or an event meets the directory, the engine's pure
//! decisions and then the store, as one transaction (case, indexes, history, audit record,
//! effects and outbox entries together).

use std::sync::Arc;

use crate::directory_sync::SharedDirectory;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use vouch_playbook::advance::{applicability, strongest, AdvanceVouch, Applicability, MovementScope};
use vouch_playbook::cases::{route_alert, vouched_by, Arrival, GroupingWindow, OpenMovement};
use vouch_playbook::engine::{AskedPersonStanding, Confirmer};
use vouch_playbook::facts::Facts;
use vouch_playbook::movement::{judge_movement, NotAMovement};
use vouch_playbook::{
    apply, open_case, Actor, Alert, AuditKind, Case, CaseEvent, CaseId, CaseState, Effect, EventKind, MovementKey,
    Playbook, Timestamp,
};
use vouch_storage::{AuditRecord, NewRecord, OutboxEntry, Pending, StorageError, Store, Transaction};

pub struct Service {
    pub store: Arc<Store>,
    /// The directory as the last good sync left it (replaced whole by a sync).
    pub directory: Arc<SharedDirectory>,
    /// Directory facts from a snapshot older than this are marked stale on cases.
    pub directory_stale_after: std::time::Duration,
    pub playbook: Playbook,
    /// Where alerts go to be written, grouped with those that arrive together.
    pub intake: crate::intake::Intake,
    /// Woken whenever a change queued effects, so the dispatcher carries them out promptly.
    pub effects_ready: Arc<Notify>,
    /// Woken when outbound calls are added to the outbox.
    pub outbox_ready: Arc<Notify>,
    pub webhooks: Vec<vouch_config::WebhookSettings>,
    pub clock: Arc<dyn crate::Clock>,
    pub oncall: Option<vouch_config::OnCallRotation>,
    pub timers: vouch_config::TimerSettings,
    /// Wakes the timer to check deadlines now (after a change, or when a test moved the clock).
    pub timers_ready: Arc<Notify>,
    /// Where pushes that verify answers go once the change asking for them is durable (absent
    /// without `[verification]`).
    pub pushes: Option<tokio::sync::mpsc::UnboundedSender<crate::verification::PushToSend>>,
    /// Discord accounts bound to people with `/link`.
    pub links: crate::identity_links::LinkedAccounts,
    /// Accounts whose last request for a push came to nothing, waiting before the next.
    pub push_cool_down: crate::verification::PushCoolDown,
    /// Whether a chat service draws the cases' cards.
    pub cards: Cards,
}

/// Whether a chat service draws cards for cases. Without one (Vouch serving its API alone) no
/// card exists, so no change asks for one to be redrawn (a wish written with every repeated
/// alert, then cleared by the dispatcher in a write of its own, was a third of a storm's writes
/// for nothing), and a change keeps its chat effects on the case as not delivered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cards {
    Drawn,
    NotDrawn,
}

/// What the intake needs besides the playbook to decide where an alert goes.
#[derive(Debug, Clone, Copy)]
pub struct IntakeSettings {
    pub grouping_window: GroupingWindow,
    pub cards: Cards,
}

/// What a change asks to be sent once it is durable.
#[derive(Debug, Default)]
struct Outbound {
    /// It wrote outbox entries (isolation webhooks).
    outbox: bool,
    /// It holds an answer until a push is approved.
    push: Option<crate::verification::PushToSend>,
}

/// What happened to an ingested alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    New,
    Grouped,
    Duplicate,
}

/// What became of an alert that arrived.
#[derive(Debug, Clone)]
pub enum Arrived {
    Recorded(Ingested),
    NotAMovement(NotAMovement),
}

/// What recording an alert did, as its sender is told. Not the case itself: the request's task
/// has no use for it, and freeing a case it did not build cost the HTTP side more than the
/// intake that built it.
#[derive(Debug, Clone, Copy)]
pub struct Ingested {
    pub status: IngestStatus,
    pub case_id: CaseId,
    /// Whether the change left the dispatcher something to carry out (an effect queued, a card
    /// to redraw). Without a chat service an alert leaves nothing, and waking the dispatcher for
    /// every alert of a storm only had it scan empty queues.
    pub for_dispatcher: bool,
}

/// An event for one case, as it reached Vouch: who, what, and the request as recorded.
#[derive(Debug, Clone)]
pub struct CaseRequest<'a> {
    pub case_id: CaseId,
    pub kind: EventKind,
    pub actor: &'a Actor,
    /// The request as it came (a click's custom id, a timer's deadline), kept in the audit record.
    pub detail: serde_json::Value,
    pub event: CaseEvent,
    /// The click's own answer redraws the card, so the change queues no card update.
    pub redrawn_in_answer: bool,
}

impl<'a> CaseRequest<'a> {
    pub fn new(
        case_id: CaseId,
        kind: EventKind,
        actor: &'a Actor,
        detail: serde_json::Value,
        event: CaseEvent,
    ) -> Self {
        CaseRequest { case_id, kind, actor, detail, event, redrawn_in_answer: false }
    }
}

/// What became of an event.
#[derive(Debug, Clone)]
pub enum Change {
    /// Taken: the case as it became. Its effects are queued for the dispatcher, and the
    /// deliverer was woken for any outbound call it wrote.
    Applied { case: Box<Case> },
    /// Refused by the engine; only the refusal was written.
    Refused { reason: String },
    /// The event names a case that does not exist; only the refusal was written.
    NoSuchCase,
}

impl Service {
    /// Turns an alert into a new, grouped or duplicate case, durably. The directory is read
    /// here, outside the writer lock; the change itself is made by the intake thread, which
    /// writes a burst of alerts in one transaction, and the wait for the flush holds no thread.
    pub async fn ingest_durably(&self, alert: Alert, now: Timestamp) -> Result<Arrived, StorageError> {
        let directory = self.directory.get();
        let mut facts = directory.facts_for(&alert);
        // Facts from a snapshot older than the configured age are marked as such on the case.
        let stale_after = self.directory_stale_after.as_millis() as i64;
        facts.stale_since = directory.synced_at().filter(|at| now.unix_millis() - at.unix_millis() > stale_after);
        // An alert that describes no movement opens no case and is not stored: the sender is
        // told why, and the count is kept in the metrics.
        if let Err(not_a_movement) = judge_movement(&alert, &facts) {
            return Ok(Arrived::NotAMovement(not_a_movement));
        }
        Ok(Arrived::Recorded(self.intake.submit(alert, facts, directory, now).await?.durable().await?))
    }

    /// Applies an event (a click, a form, a timer) to a case through the engine and records it,
    /// refusals included. Durable on return. Blocking: call it from a blocking thread.
    pub fn apply(&self, request: CaseRequest<'_>, now: Timestamp) -> Result<Change, StorageError> {
        let applied = self.begin_apply(request, now)?.wait()?;
        Ok(self.hand_over_outbound_calls(applied))
    }

    /// [`Service::apply`] for async callers, like [`Service::ingest_durably`].
    pub async fn apply_durably(&self, request: CaseRequest<'_>, now: Timestamp) -> Result<Change, StorageError> {
        let applied = self.begin_apply(request, now)?.durable().await?;
        Ok(self.hand_over_outbound_calls(applied))
    }

    /// Wakes the deliverer, and hands a push to the verification worker, once the change that
    /// asked for them is durable: not before, so nothing is sent for a change a crash could
    /// still undo.
    fn hand_over_outbound_calls(&self, (change, outbound): (Change, Outbound)) -> Change {
        if outbound.outbox {
            self.outbox_ready.notify_one();
        }
        if let Some(push) = outbound.push {
            self.send_push(push);
        }
        change
    }

    /// A case read just before acting on the outside world for it (a chat post, a card's
    /// redraw): refused unless this replica still leads, checked against the database.
    pub fn case_to_act_on(&self, case_id: CaseId) -> Result<vouch_playbook::Case, StorageError> {
        self.store.confirm_lead()?;
        self.store.case(case_id)
    }

    /// Queues a redraw of a case's card (when a click's answer that should have redrawn it was
    /// not taken). Durable on return. Blocking.
    pub fn queue_card_update(&self, case_id: CaseId) -> Result<(), StorageError> {
        self.store.write(|transaction| transaction.want_redraw(case_id, true))?.wait()
    }

    /// The change, and what it asks to be sent once durable.
    fn begin_apply(
        &self,
        request: CaseRequest<'_>,
        now: Timestamp,
    ) -> Result<Pending<(Change, Outbound)>, StorageError> {
        let CaseRequest { case_id, kind, actor, mut detail, event, redrawn_in_answer } = request;
        // Every answer's record says whether it needed a push: it is held for one, or counts as
        // clicked.
        let answers = matches!(event, CaseEvent::Confirm { .. } | CaseEvent::Close { .. });
        let pending = self.store.write(|transaction| {
            let Some(before) = transaction.case(case_id)? else {
                // Not filed under the case: that number may belong to a later case.
                let reason = format!("there is no case {case_id}");
                refuse(transaction, None, kind, actor, detail, &reason, now, None)?;
                return Ok((Change::NoSuchCase, Outbound::default()));
            };
            let playbook_version = before.playbook_version;
            let (case, effects) = match apply(&self.playbook, before.clone(), event, now) {
                Ok(applied) => applied,
                Err(refusal) => {
                    let reason = refusal.reason;
                    refuse(transaction, Some(case_id), kind, actor, detail, &reason, now, Some(playbook_version))?;
                    return Ok((Change::Refused { reason }, Outbound::default()));
                }
            };
            transaction.put_case(&case)?;
            if let Some(by) = vouched_by(&before, &case) {
                let movement = MovementKey::of(case.alert());
                let history = transaction.history(&movement)?.with_vouch(by, now);
                transaction.put_history(&movement, &history, false)?;
            }
            let outbox = self.enqueue_outbound_calls(transaction, &case, &effects, now)?;
            let push = effects.iter().find_map(|effect| match effect {
                Effect::SendPush { verification, person, summary } => Some(crate::verification::PushToSend {
                    subject: crate::verification::PushSubject::Case { case_id, verification: *verification },
                    person: person.clone(),
                    summary: summary.clone(),
                }),
                _ => None,
            });
            if answers {
                detail["verification"] = match &push {
                    Some(_) => serde_json::json!("held for a push"),
                    None => serde_json::json!("not required"),
                };
            }
            let redraw = match (self.cards, redrawn_in_answer) {
                (Cards::NotDrawn, _) => Redraw::NoChat,
                (Cards::Drawn, true) => Redraw::DoneInAnswer,
                (Cards::Drawn, false) => Redraw::ForDecision,
            };
            queue_effects(transaction, case_id, &effects, redraw, now)?;
            transaction.append_audit(NewRecord {
                at: now,
                case_id: Some(case_id),
                kind: AuditKind::Event(kind),
                actor: Some(actor),
                playbook_version: Some(case.playbook_version),
                detail,
            })?;
            Ok((Change::Applied { case: Box::new(case) }, Outbound { outbox, push }))
        })?;
        Ok(pending)
    }

    /// Writes the outbox entries of the isolation requests a change asked for, in the change's
    /// own transaction, so that a crash can neither lose a request nor send one for a change
    /// that did not happen.
    fn enqueue_outbound_calls(
        &self,
        transaction: &mut dyn Transaction,
        case: &Case,
        effects: &[Effect],
        now: Timestamp,
    ) -> Result<bool, StorageError> {
        let mut enqueued = false;
        for effect in effects {
            let Effect::CallIsolationWebhook { request_id } = effect else { continue };
            for entry in crate::webhooks::outbox_entries(case, request_id, &self.webhooks, now) {
                if transaction.enqueue_outbox(&entry)? {
                    enqueued = true;
                    let detail = serde_json::json!({"id": entry.id});
                    transaction.append_audit(vouch_record(
                        AuditKind::OutboxEnqueued,
                        Some(entry.case_id),
                        detail,
                        now,
                    ))?;
                }
            }
        }
        Ok(enqueued)
    }

    /// Records something that changes no case (a refused click on a forged id, a form opened,
    /// an effect given up). Durable on return. Blocking.
    pub fn record(
        &self,
        kind: AuditKind,
        case_id: Option<CaseId>,
        actor: Option<&Actor>,
        detail: serde_json::Value,
    ) -> Result<AuditRecord, StorageError> {
        let now = self.clock.now();
        self.store
            .write(|transaction| {
                transaction.append_audit(NewRecord { at: now, case_id, kind, actor, playbook_version: None, detail })
            })?
            .wait()
    }

    /// Records an outbound call's attempt, or its end (`done`), with the attempt's audit record.
    pub fn settle_outbox(
        &self,
        entry: &OutboxEntry,
        done: bool,
        detail: serde_json::Value,
    ) -> Result<(), StorageError> {
        let now = self.clock.now();
        let kind = if done { AuditKind::OutboxDelivered } else { AuditKind::OutboxAttempt };
        self.store
            .write(|transaction| {
                transaction.settle_outbox(entry, done);
                transaction.append_audit(vouch_record(kind, Some(entry.case_id), detail, now)).map(|_| ())
            })?
            .wait()
    }

    /// After the directory changed: every case waiting on someone the directory no longer has
    /// in that place (they left, or are no longer the manager or owner they were asked as) asks
    /// the next person in its chain, with a note in its thread. Returns how many moved on.
    pub fn reroute_confirmers(&self, now: Timestamp) -> Result<usize, StorageError> {
        let directory = self.directory.get();
        let vouch = Actor::vouch();
        let mut moved = 0;
        for case in self.store.cases(Some(&[CaseState::AwaitingConfirmation]))? {
            let Some(asked) = case.confirmation.current_confirmer().and_then(Confirmer::person) else { continue };
            let holder =
                case.facts.account.as_ref().or(case.facts.acting_as.as_ref()).and_then(|facts| facts.holder.as_ref());
            let standing = AskedPersonStanding {
                in_directory: directory.person(&asked.id).is_some(),
                manager_of_holder: holder
                    .and_then(|holder| directory.person(&holder.person.id))
                    .and_then(|found| found.manager.clone()),
                owner_of_target: directory.asset_for(&case.alert().target).and_then(|asset| asset.owner.clone()),
            };
            let Some((person, reason)) = case.asked_person_gone(&standing) else { continue };
            let detail = serde_json::json!({"person": person, "reason": reason});
            let event = CaseEvent::ConfirmerLeft { person, reason };
            let request = CaseRequest::new(case.id, EventKind::DirectoryConfirmerLeft, &vouch, detail, event);
            if matches!(self.apply(request, now)?, Change::Applied { .. }) {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Who is on call now, as directory people: (primary, secondary).
    pub fn on_call(&self) -> (Option<vouch_config::Person>, Option<vouch_config::Person>) {
        let Some(rotation) = &self.oncall else { return (None, None) };
        let (primary, secondary) = rotation.on_call(self.clock.now());
        let directory = self.directory.get();
        let person = |id: Option<vouch_playbook::PersonId>| id.and_then(|id| directory.person(&id).cloned());
        (person(primary), person(secondary))
    }

    /// "Sam Okafor (secondary Dana Kim)", or None without a rotation.
    pub fn on_call_line(&self) -> Option<String> {
        let (primary, secondary) = self.on_call();
        let primary = primary?;
        Some(match secondary {
            Some(secondary) => format!("{} (secondary {})", primary.name, secondary.name),
            None => primary.name.clone(),
        })
    }
}

/// An audit record of Vouch's own doing: no actor, no playbook version.
pub fn vouch_record(
    kind: AuditKind,
    case_id: Option<CaseId>,
    detail: serde_json::Value,
    now: Timestamp,
) -> NewRecord<'static> {
    NewRecord { at: now, case_id, kind, actor: None, playbook_version: None, detail }
}

/// Records one alert in `transaction`: a duplicate of one taken before, a repeat folded into its
/// movement's open case, or a new case, with its indexes, history, effects and audit record.
pub(crate) fn ingest_alert(
    transaction: &mut dyn Transaction,
    playbook: &Playbook,
    settings: IntakeSettings,
    alert: Alert,
    facts: Facts,
    directory: &vouch_config::Directory,
    now: Timestamp,
) -> Result<Ingested, StorageError> {
    let grouping_key = alert.grouping_key();
    let earlier_copy = match &alert.source_alert_id {
        Some(id) => transaction.case_of_alert(alert.format.id(), id)?,
        None => None,
    };
    let movement_case = match transaction.movement_case(&grouping_key)? {
        Some(movement) => transaction.case(movement.case_id)?.map(|case| (movement, case)),
        None => None,
    };
    // A case closed by a vouch in advance takes a repeat only while that vouch, as stored now,
    // still vouches for the repeat itself: in force (a revoke ends it at once), covering its
    // exact movement, and no concern of its own (the grouping key leaves out details that raise
    // one, such as a second account or an encoded command line).
    let closed_by = match movement_case.as_ref().and_then(|(_, case)| case.closed_in_advance_by()) {
        Some(id) => transaction.advance_vouch(id)?,
        None => None,
    };
    let movement = MovementKey::of(&alert);
    // The movement's history, read once for whichever of judging the repeat and opening a case
    // needs it first.
    let mut history_read = None;
    let still_vouching = match closed_by {
        // A copy of an alert already taken is a duplicate whatever the vouch says.
        Some(vouch) if earlier_copy.is_none() => {
            let history = transaction.history(&movement)?;
            let concerns = open_case(playbook, &alert, &facts, &history, now).concerns;
            history_read = Some(history);
            let judged = MovementScope::of(&alert, playbook)
                .map(|scope| judge(&vouch, &scope, &facts, &concerns, directory, now));
            (judged == Some(Applicability::Vouches)).then_some(vouch)
        }
        _ => None,
    };
    // The movement index names the case; when its last alert came is the case's own activity
    // (so a repeat rewrites only that, not the index too).
    let last = movement_case.as_ref().map(|(movement, case)| {
        let last_alert =
            OpenMovement { case_id: movement.case_id, last_alert_at: movement.last_alert_at.max(case.last_alert_at) };
        (last_alert, case.takes_repeats(still_vouching.as_ref(), now))
    });
    let arrival = route_alert(earlier_copy, last, settings.grouping_window, now);
    if let Arrival::Duplicate(case_id) = arrival {
        // A duplicate writes nothing, but the transaction's ticket still covers what it
        // saw: its first copy may be waiting for its flush.
        return Ok(Ingested { status: IngestStatus::Duplicate, case_id, for_dispatcher: false });
    }
    let history = match history_read {
        Some(history) => history,
        None => transaction.history(&movement)?,
    };
    // A repeat joins its open case (the engine takes a repeat on any case it was routed to).
    let grouped = match (arrival, movement_case) {
        (Arrival::JoinsOpenCase(_), Some((_, case))) => {
            apply(playbook, case, CaseEvent::AlertGrouped { received_at: alert.received_at }, now).ok()
        }
        _ => None,
    };
    let (status, case, effects, kind) = match grouped {
        Some((case, effects)) => {
            // A repeat changes only the count and times: the case is not rewritten.
            transaction.put_case_activity(&case);
            (IngestStatus::Grouped, case, effects, EventKind::AlertGrouped)
        }
        None => {
            let case_id = transaction.allocate_case_id()?;
            let opening = open_case(playbook, &alert, &facts, &history, now);
            let concerns = opening.concerns.clone();
            let (case, effects) = Case::open(case_id, playbook, alert.clone(), facts, opening, now);
            // A vouch given in advance for this movement may close the case at once.
            let (case, effects) = match advance_vouch_for(transaction, playbook, &case, &concerns, directory, now)? {
                Some((vouch, applicability)) => case.vouched_in_advance(effects, &vouch, &applicability, now),
                None => (case, effects),
            };
            transaction.put_case(&case)?;
            (IngestStatus::New, case, effects, EventKind::AlertNew)
        }
    };
    if let Some(source_alert_id) = &alert.source_alert_id {
        transaction.index_alert(alert.format.id(), source_alert_id, case.id);
    }
    if status != IngestStatus::Grouped {
        transaction.put_movement_case(&grouping_key, OpenMovement { case_id: case.id, last_alert_at: now });
    }
    transaction.put_history(&movement, &history.with_sighting(now, alert.outcome), true)?;
    let redraw = match settings.cards {
        Cards::Drawn => Redraw::ForAlerts,
        Cards::NotDrawn => Redraw::NoChat,
    };
    let for_dispatcher = queue_effects(transaction, case.id, &effects, redraw, now)?;
    // A repeat is recorded by what differs from the case's first alert, which the case keeps;
    // the repeats of one case written together share a record (`None`: folded into it).
    let detail = if status == IngestStatus::Grouped {
        let entry = vouch_playbook::cases::repeat_entry(case.alert(), &alert);
        let alert_count = case.alert_count;
        let folded = transaction.fold_into_last_audit(case.id, AuditKind::Event(kind), &mut |detail| {
            vouch_playbook::cases::fold_repeat(detail, &entry, alert_count)
        })?;
        (!folded).then(|| vouch_playbook::cases::grouped_record(entry, alert_count))
    } else {
        let mut detail = vouch_playbook::cases::opening_record(&alert, case.alert_count);
        // Every match of a vouch given in advance is in the audit log with the alert it met.
        if let Some(advance) = &case.advance {
            detail["advance"] = serde_json::json!(advance);
        }
        Some(detail)
    };
    if let Some(detail) = detail {
        transaction.append_audit(NewRecord {
            at: now,
            case_id: Some(case.id),
            kind: AuditKind::Event(kind),
            actor: None,
            playbook_version: Some(case.playbook_version),
            detail,
        })?;
    }
    Ok(Ingested { status, case_id: case.id, for_dispatcher })
}

/// The vouch given in advance that says the most about a case just opened, judged against what
/// the directory says now.
fn advance_vouch_for(
    transaction: &mut dyn Transaction,
    playbook: &Playbook,
    case: &Case,
    concerns: &[String],
    directory: &vouch_config::Directory,
    now: Timestamp,
) -> Result<Option<(AdvanceVouch, Applicability)>, StorageError> {
    let Some(scope) = MovementScope::of(case.alert(), playbook) else { return Ok(None) };
    let judged: Vec<(AdvanceVouch, Applicability)> = transaction
        .advance_vouches_for(&scope.hosts())?
        .into_iter()
        .map(|vouch| {
            let judged = judge(&vouch, &scope, &case.facts, concerns, directory, now);
            (vouch, judged)
        })
        .collect();
    Ok(strongest(judged))
}

/// What a vouch given in advance does to an alert of `scope`, with the directory as it is now
/// (whoever vouched must still be in it).
fn judge(
    vouch: &AdvanceVouch,
    scope: &MovementScope,
    facts: &Facts,
    concerns: &[String],
    directory: &vouch_config::Directory,
    now: Timestamp,
) -> Applicability {
    let present = vouch.by.person.as_ref().is_some_and(|person| directory.person(person).is_some());
    applicability(vouch, scope, facts, concerns, present, now)
}

/// Why a change's card update is wanted, which decides how soon it is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redraw {
    /// Repeated alerts: a storming card is redrawn at most every few seconds.
    ForAlerts,
    /// A decision (a click, a timer, a webhook's answer): drawn as soon as the channel allows.
    ForDecision,
    /// The click's own answer already showed the change.
    DoneInAnswer,
    /// No chat service is configured: there is no card to redraw, and the change's chat effects
    /// are kept on its case as not delivered at once.
    NoChat,
}

/// Queues a change's effects for the dispatcher. A card update is not queued in line: it becomes
/// a wish to redraw the card, one however many changes ask, so a storm costs one edit per redraw
/// and not one per alert. Without a chat service, the chat effects are kept on the case as not
/// delivered in the change itself, rather than queued for the dispatcher to move there in a
/// write of its own. True when the dispatcher has something to do.
fn queue_effects(
    transaction: &mut dyn Transaction,
    case_id: CaseId,
    effects: &[Effect],
    redraw: Redraw,
    now: Timestamp,
) -> Result<bool, StorageError> {
    let wants_redraw =
        effects.contains(&Effect::UpdateCard) && matches!(redraw, Redraw::ForAlerts | Redraw::ForDecision);
    if wants_redraw {
        transaction.want_redraw(case_id, redraw == Redraw::ForDecision)?;
    }
    // A push is the verification worker's, handed over once the change is durable; the chat
    // never carries it.
    let in_line: Vec<Effect> = effects
        .iter()
        .filter(|effect| !matches!(effect, Effect::UpdateCard | Effect::SendPush { .. }))
        .cloned()
        .collect();
    match redraw {
        Redraw::NoChat => {
            // Kept on the case in this change, and no card to redraw: nothing for the dispatcher.
            transaction.keep_undelivered(case_id, &in_line, now, crate::dispatch::NO_CHAT)?;
            Ok(false)
        }
        Redraw::ForAlerts | Redraw::ForDecision | Redraw::DoneInAnswer => {
            let queued = transaction.queue_effects(case_id, &in_line)?;
            Ok(wants_redraw || !queued.is_empty())
        }
    }
}

/// Writes the refusal of an event: the request and why, under `refused.<kind>`.
#[allow(clippy::too_many_arguments)]
fn refuse(
    transaction: &mut dyn Transaction,
    case_id: Option<CaseId>,
    kind: EventKind,
    actor: &Actor,
    request: serde_json::Value,
    reason: &str,
    now: Timestamp,
    playbook_version: Option<vouch_playbook::PlaybookVersion>,
) -> Result<(), StorageError> {
    transaction.append_audit(NewRecord {
        at: now,
        case_id,
        kind: AuditKind::Refused(kind),
        actor: Some(actor),
        playbook_version,
        detail: serde_json::json!({"request": request, "reason": reason}),
    })?;
    Ok(())
}
