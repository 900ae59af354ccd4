//! How each event changes a case, and the rules a case answers for itself (what it offers, who
//! must justify a vouch, when it may chase).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::vocabulary::*;
use crate::advance::{AdvanceKind, AdvanceVouch, Applicability};
use crate::definition::ConfirmerRole;
use crate::definition::Playbook;
use crate::facts::{Criticality, Facts};
use crate::ids::{CaseId, PersonId};
use crate::model::Alert;
use crate::time::Timestamp;
use crate::verification::{AnsweredAs, WeightyAnswer};

/// Why an answer from a chat account not linked to its person is refused when linking is
/// required (the chat layer adds how to link).
pub const NOT_LINKED: &str = "only chat accounts linked to their person may answer: link this account first";

impl Case {
    /// A new case in its first state, with the effects of opening it.
    pub fn open(
        id: CaseId,
        playbook: &Playbook,
        alert: Alert,
        facts: Facts,
        opening: Opening,
        now: Timestamp,
    ) -> (Case, Vec<Effect>) {
        let case = Case {
            id,
            state: CaseState::Open,
            playbook_version: opening.playbook_version,
            opened_at: now,
            updated_at: now,
            alert_count: 1,
            last_alert_at: alert.received_at,
            alert: AlertRecord(Arc::new(alert)),
            facts: Arc::new(facts),
            confirmation: Confirmation {
                chain: opening.confirmation_chain.clone(),
                current: None,
                asked_at: None,
                reminders_sent: 0,
                deadline: None,
                verdicts: Vec::new(),
            },
            opening: Arc::new(opening),
            answers: BTreeMap::new(),
            escalation: None,
            resolution: None,
            isolations: Vec::new(),
            page: None,
            pending_verification: None,
            pushes_sent: 0,
            push_denied: None,
            close_asked_by: None,
            advance: None,
        };
        let mut effects = vec![Effect::PostCard];
        if playbook.confirmation.ask_on_open {
            let (case, ask_effects) = case.ask(playbook, 0, now);
            effects.extend(ask_effects.into_iter().filter(|effect| *effect != Effect::UpdateCard));
            return (case, effects);
        }
        (case, effects)
    }

    /// What a vouch given in advance does to a case just opened (`effects` are its opening's):
    /// one that applies closes the case as expected, citing itself, and asks nobody; one in its
    /// monitor period or withheld is noted on the case, which is triaged as usual.
    pub fn vouched_in_advance(
        mut self,
        effects: Vec<Effect>,
        vouch: &AdvanceVouch,
        applicability: &Applicability,
        now: Timestamp,
    ) -> (Case, Vec<Effect>) {
        let note = |outcome| Some(AdvanceNote { vouch: vouch.id.clone(), outcome, covers_until: None });
        let until = vouch.valid_until.to_rfc3339();
        let mut effects = effects;
        match applicability {
            Applicability::NotThisMovement => {}
            Applicability::Withheld { reason } => {
                self.advance = note(AdvanceOutcome::Withheld { reason: reason.clone() });
                effects.push(Effect::Announce { message: format!("{}: {reason}.", vouch.id) });
            }
            Applicability::WouldVouch => {
                self.advance = note(AdvanceOutcome::WouldHaveVouched);
                effects.push(Effect::Announce {
                    message: format!(
                        "{} by {} would have vouched for this movement; it is still in its monitor period, so the case is triaged as usual.",
                        vouch.id, vouch.by.name
                    ),
                });
            }
            Applicability::Vouches => {
                self.advance = Some(AdvanceNote {
                    vouch: vouch.id.clone(),
                    outcome: AdvanceOutcome::Vouched,
                    covers_until: Some(vouch.valid_until),
                });
                self.state = CaseState::ClosedExpected;
                self.confirmation.current = None;
                self.confirmation.deadline = None;
                let why = match &vouch.kind {
                    AdvanceKind::StandingApproval { from_case, .. } => {
                        format!("standing approval {} (from {from_case}, until {until})", vouch.id)
                    }
                    AdvanceKind::Declaration { reason } => {
                        format!("declaration {} ({reason}, until {until})", vouch.id)
                    }
                };
                self.resolution = Some(Decision {
                    by: vouch.by.clone(),
                    at: now,
                    text: Some(format!("vouched for in advance by {why}")),
                    verified: Some(vouch.verified.clone()),
                });
                // Nobody is asked about a movement vouched for in advance.
                effects.retain(|effect| matches!(effect, Effect::PostCard | Effect::UpdateCard));
                effects.push(Effect::Announce {
                    message: format!(
                        "Closed as expected: {} vouched for this movement in advance, in {why}.",
                        vouch.by.name
                    ),
                });
                // Whoever declared it hears that it was used: a use they did not expect is a
                // sign someone else moved as them.
                if let (AdvanceKind::Declaration { .. }, Some(discord_id)) = (&vouch.kind, vouch.by.discord_id) {
                    let account = self.alert().initiating_account().map(|account| account.name.clone());
                    effects.push(Effect::DirectMessage {
                        discord_id,
                        message: format!(
                            "Your declaration {} was just used: {} closed as expected ({} from {} to {}). If this was not you, tell the SOC now.",
                            vouch.id,
                            self.id,
                            account.unwrap_or_default(),
                            self.alert().source.label(),
                            self.alert().target.label()
                        ),
                    });
                }
            }
        }
        (self, effects)
    }

    /// Whether a repeat of this case's movement joins it: while the case is open, and while the
    /// vouch given in advance that closed it (`closed_by`, as stored now) is still in force (a
    /// storm of a declared movement is one case, not one closed case and card per alert; once the
    /// vouch is revoked or over, the next alert opens a case of its own).
    pub fn takes_repeats(&self, closed_by: Option<&AdvanceVouch>, now: Timestamp) -> bool {
        let covered = self.advance.as_ref().is_some_and(|note| {
            note.outcome == AdvanceOutcome::Vouched
                && note.covers_until.is_some_and(|until| now < until)
                && closed_by.is_some_and(|vouch| vouch.id == note.vouch && vouch.in_force(now))
        });
        !self.state.is_finished() || covered
    }

    /// The vouch given in advance that closed this case, if one did.
    pub fn closed_in_advance_by(&self) -> Option<&str> {
        self.advance.as_ref().filter(|note| note.outcome == AdvanceOutcome::Vouched).map(|note| note.vouch.as_str())
    }

    pub fn alert(&self) -> &Alert {
        &self.alert.0
    }

    /// One end of the movement.
    pub fn system(&self, side: Side) -> &crate::model::System {
        match side {
            Side::Source => &self.alert().source,
            Side::Target => &self.alert().target,
        }
    }

    /// What the directory knew about one end when the case opened.
    pub fn asset(&self, side: Side) -> Option<&crate::facts::AssetFacts> {
        match side {
            Side::Source => self.facts.source.as_ref(),
            Side::Target => self.facts.target.as_ref(),
        }
    }

    /// The newest isolation request for one end, if any.
    pub fn latest_isolation(&self, side: Side) -> Option<&IsolationRequest> {
        self.isolations.iter().rev().find(|request| request.side == side)
    }

    fn next_isolation_id(&self, side: Side, action: IsolationAction) -> String {
        let side = match side {
            Side::Source => "source",
            Side::Target => "target",
        };
        let action = match action {
            IsolationAction::Isolate => "isolate",
            IsolationAction::Release => "release",
        };
        format!("{}-{side}-{action}-{}", self.id, self.isolations.len() + 1)
    }

    /// Whether vouching for this movement ("Expected") needs a written justification from this
    /// person: it does on a critical system, from whoever is asked. The engine refuses such a
    /// vouch without one; the chat asks for it with a form first.
    pub fn vouching_needs_justification(&self, actor: &Actor) -> bool {
        self.opening.criticality == Criticality::Critical && self.is_asked(actor)
    }

    /// Whether the person this case is waiting on has left that place, given what the directory
    /// says now; `Some` with the person and why (the case then asks the next in its chain).
    pub fn asked_person_gone(&self, now_known: &AskedPersonStanding) -> Option<(PersonId, String)> {
        if self.state != CaseState::AwaitingConfirmation {
            return None;
        }
        let Some(Confirmer::Person { person, role }) = self.confirmation.current_confirmer() else { return None };
        let reason = if !now_known.in_directory {
            Some("is no longer in the directory".to_string())
        } else {
            match role {
                ConfirmerRole::Manager => (now_known.manager_of_holder.as_ref() != Some(&person.id)).then(|| {
                    let holder = self
                        .facts
                        .account
                        .as_ref()
                        .or(self.facts.acting_as.as_ref())
                        .and_then(|facts| facts.holder.as_ref())
                        .map_or("the account holder".to_string(), |holder| holder.person.name.clone());
                    format!("is no longer {holder}'s manager")
                }),
                ConfirmerRole::TargetOwner => (now_known.owner_of_target.as_ref() != Some(&person.id))
                    .then(|| format!("no longer owns {}", self.alert().target.label())),
                ConfirmerRole::AccountOwner => None,
            }
        };
        reason.map(|reason| (person.id.clone(), reason))
    }

    /// Whether `person` is the one this case is waiting on to vouch.
    pub fn asks(&self, person: &PersonId) -> bool {
        self.state == CaseState::AwaitingConfirmation
            && self
                .confirmation
                .current_confirmer()
                .and_then(Confirmer::person)
                .is_some_and(|asked| &asked.id == person)
    }

    /// What the case offers now, whoever looks at it; [`apply`] still decides who may do it.
    pub fn offers(&self) -> Offers {
        let finished = self.state.is_finished();
        let escalated = self.state == CaseState::Escalated;
        let isolation = |side: Side| {
            let latest = self.latest_isolation(side);
            let isolated = latest.is_some_and(|request| {
                request.action == IsolationAction::Isolate && request.status == IsolationStatus::Requested
            });
            let awaiting_approval = latest.is_some_and(|request| request.status == IsolationStatus::AwaitingApproval);
            IsolationOffer {
                isolate: (escalated && !isolated).then_some(if awaiting_approval {
                    IsolateOffer::Approve
                } else {
                    IsolateOffer::Request
                }),
                system_known: !self.system(side).is_unknown(),
                release: isolated,
            }
        };
        Offers {
            answer: !finished,
            ask_owner: !finished && self.state != CaseState::AwaitingConfirmation && !escalated,
            escalate: !finished && !escalated,
            close: !finished,
            source: isolation(Side::Source),
            target: isolation(Side::Target),
        }
    }

    /// Whether this person (or their delegate) is the one being asked to confirm now.
    pub fn is_asked(&self, actor: &Actor) -> bool {
        match self.confirmation.current_confirmer() {
            Some(Confirmer::Person { person, .. }) => actor.is_or_delegates_for(person),
            Some(Confirmer::Soc) => actor.soc,
            None => false,
        }
    }

    /// Asks confirmer `index` of the chain (or the SOC when the chain is used up).
    fn ask(mut self, playbook: &Playbook, index: usize, now: Timestamp) -> (Case, Vec<Effect>) {
        let index = index.min(self.confirmation.chain.len().saturating_sub(1));
        self.confirmation.current = Some(index);
        self.confirmation.asked_at = Some(now);
        self.confirmation.reminders_sent = 0;
        let mut effects = vec![Effect::UpdateCard];
        match self.confirmation.chain.get(index).cloned() {
            Some(Confirmer::Person { person, .. }) => {
                self.state = CaseState::AwaitingConfirmation;
                let at = now.plus_minutes(self.remind_after(playbook));
                self.confirmation.deadline = Some(at);
                effects.push(Effect::PingPerson { person, reason: PingReason::AskConfirmation });
            }
            Some(Confirmer::Soc) | None => {
                self.state = CaseState::Open;
                self.confirmation.deadline = None;
                effects.push(Effect::NotifySoc {
                    message: "Nobody outside the SOC can vouch for this movement; the SOC must decide.".to_string(),
                });
            }
        }
        (self, effects)
    }

    fn remind_after(&self, playbook: &Playbook) -> u32 {
        playbook.timers.remind_after_minutes.get(self.opening.criticality).max(1)
    }

    fn refuse(self, reason: impl Into<String>) -> Applied {
        Err(Refusal { reason: reason.into() })
    }

    fn escalate(
        mut self,
        playbook: &Playbook,
        by: Actor,
        reason: Option<String>,
        now: Timestamp,
    ) -> (Case, Vec<Effect>) {
        let page_reason = reason.clone().unwrap_or_else(|| format!("escalated by {}", by.name));
        self.state = CaseState::Escalated;
        self.confirmation.deadline = None;
        self.escalation = Some(Decision { by, at: now, text: reason, verified: None });
        let mut effects = vec![Effect::UpdateCard];
        effects.extend(self.page_on_call(playbook, page_reason, now));
        if !self.alert().source.is_unknown() {
            effects.push(Effect::ProposeIsolation { side: Side::Source });
        }
        if !self.alert().target.is_unknown() {
            effects.push(Effect::ProposeIsolation { side: Side::Target });
        }
        (self, effects)
    }

    /// Pages on-call (unless a page is already out) and arms its acknowledgement deadline.
    fn page_on_call(&mut self, playbook: &Playbook, reason: String, now: Timestamp) -> Vec<Effect> {
        if self.page.as_ref().is_some_and(|page| page.acknowledged.is_none()) {
            return Vec::new();
        }
        let deadline = now.plus_minutes(playbook.timers.page_ack_minutes.max(1));
        self.page = Some(Page {
            paged_at: now,
            deadline: Some(deadline),
            repings: 0,
            secondary: false,
            acknowledged: None,
            reason: reason.clone(),
        });
        vec![Effect::PageOnCall { reason, secondary: false, reminder: false }]
    }

    /// Records a confirmer's answer (checked again: the question may have moved on while a push
    /// was waiting), with the push that verified it if one did.
    fn confirm(
        self,
        playbook: &Playbook,
        verdict: ConfirmVerdict,
        by: Actor,
        justification: Option<String>,
        verified: Option<PushRecord>,
        now: Timestamp,
    ) -> Applied {
        let confirmer = self.may_confirm(playbook, verdict, &by, justification.as_deref())?;
        let mut case = self;
        case.confirmation.verdicts.push(RecordedVerdict {
            confirmer,
            verdict,
            by: by.clone(),
            at: now,
            justification: justification.clone(),
            verified: verified.clone(),
        });
        Ok(match verdict {
            ConfirmVerdict::Expected => {
                case.confirmation.deadline = None;
                if playbook.confirmation.close_on_expected_without_concerns && case.opening.concerns.is_empty() {
                    case.state = CaseState::ClosedExpected;
                    case.resolution = Some(Decision { by, at: now, text: justification, verified });
                    (case, vec![Effect::UpdateCard])
                } else {
                    case.state = CaseState::Open;
                    let message = format!(
                        "{} vouched for this movement, but the engine raised concerns; the SOC decides.",
                        by.name
                    );
                    (case, vec![Effect::UpdateCard, Effect::NotifySoc { message }])
                }
            }
            ConfirmVerdict::NotExpected => {
                let reason = format!("{} did not expect this movement", by.name);
                case.escalate(playbook, by, Some(reason), now)
            }
            ConfirmVerdict::NotMe => {
                let next = case.confirmation.current.map_or(0, |index| index + 1);
                case.ask(playbook, next, now)
            }
        })
    }

    /// Whether `by` may give this answer now; the confirmer they answer as, or why not.
    fn may_confirm(
        &self,
        playbook: &Playbook,
        verdict: ConfirmVerdict,
        by: &Actor,
        justification: Option<&str>,
    ) -> Result<Confirmer, Refusal> {
        let refusal = |reason: String| Err(Refusal { reason });
        if self.state != CaseState::AwaitingConfirmation
            && self.confirmation.current_confirmer() != Some(&Confirmer::Soc)
        {
            return refusal("nobody is being asked to confirm this case right now".to_string());
        }
        if !self.is_asked(by) {
            let asked = self.confirmation.current_confirmer().map(Confirmer::label).unwrap_or_default();
            return refusal(format!("this confirmation was asked of {asked}"));
        }
        if playbook.verifying.as_ref().is_some_and(|verifying| verifying.require_linked) && !by.linked {
            return refusal(NOT_LINKED.to_string());
        }
        let Some(confirmer) = self.confirmation.current_confirmer().cloned() else {
            return refusal("nobody is being asked to confirm this case right now".to_string());
        };
        if verdict == ConfirmVerdict::Expected && justification.is_none() && self.vouching_needs_justification(by) {
            return refusal("vouching for a movement to a critical system needs a justification".to_string());
        }
        Ok(confirmer)
    }

    fn close_as_expected(
        mut self,
        by: Actor,
        justification: String,
        verified: Option<PushRecord>,
        now: Timestamp,
    ) -> Applied {
        self.state = CaseState::ClosedExpected;
        self.confirmation.deadline = None;
        self.resolution = Some(Decision { by, at: now, text: Some(justification), verified });
        Ok((self, vec![Effect::UpdateCard]))
    }

    /// Whether this answer, given this way, must be verified with a push before it counts. The
    /// target's criticality decides; a target the directory does not know counts as critical.
    fn needs_verification(
        &self,
        playbook: &Playbook,
        answer: WeightyAnswer,
        answered_as: AnsweredAs,
        by: &Actor,
    ) -> bool {
        let Some(verifying) = &playbook.verifying else { return false };
        let criticality = self.asset(Side::Target).map(|asset| asset.criticality);
        verifying.policy.requires(answer, answered_as, criticality, &by.roles)
    }

    /// Holds an answer until its giver approves a push: the answer is kept on the case and a
    /// push is sent; it counts only once approved.
    fn hold(mut self, playbook: &Playbook, answer: HeldAnswer, by: Actor, now: Timestamp) -> Applied {
        if let Some(pending) = &self.pending_verification {
            if pending.expires_at > now {
                let waiting = pending.by.name.clone();
                return self.refuse(format!("a push to {waiting} is still waiting to be approved"));
            }
        }
        let Some(person) = by.person.clone() else {
            return self.refuse(
                "this answer is verified with a push to the person's phone, and this chat account is not linked to a person in the directory",
            );
        };
        let lifetime = playbook.push_lifetime_millis();
        self.pushes_sent += 1;
        let id = self.pushes_sent;
        let alert = self.alert();
        let account =
            alert.account.as_ref().map_or_else(|| "an unknown account".to_string(), |account| account.name.clone());
        let what = match &answer {
            HeldAnswer::Confirm { verdict: ConfirmVerdict::Expected, .. } => "expected",
            HeldAnswer::Confirm { verdict: ConfirmVerdict::NotMe, .. } => "not mine to vouch for",
            HeldAnswer::Confirm { verdict: ConfirmVerdict::NotExpected, .. } => "not expected",
            HeldAnswer::CloseAsExpected { .. } => "closed as expected",
        };
        let summary =
            format!("{}: {account} from {} to {}: {what}", self.id, alert.source.label(), alert.target.label());
        self.pending_verification = Some(PendingVerification {
            id,
            answer,
            by,
            requested_at: now,
            expires_at: now.plus_millis(lifetime),
            push: None,
        });
        Ok((self, vec![Effect::SendPush { verification: id, person, summary }, Effect::UpdateCard]))
    }

    /// What a push's end does to the answer it held.
    fn finish_verification(
        self,
        playbook: &Playbook,
        pending: PendingVerification,
        outcome: PushOutcome,
        now: Timestamp,
    ) -> Applied {
        let mut case = self;
        let by = pending.by;
        match outcome {
            PushOutcome::Approved => {
                let push = pending.push.unwrap_or_else(PushRecord::unrecorded);
                match pending.answer {
                    HeldAnswer::Confirm { verdict, justification } => {
                        match case.may_confirm(playbook, verdict, &by, justification.as_deref()) {
                            Ok(_) => case.confirm(playbook, verdict, by, justification, Some(push), now),
                            // The question moved on while the push waited: the answer no longer
                            // applies.
                            Err(refusal) => {
                                let message = format!(
                                    "{} approved the push, but their answer no longer applies: {refusal}.",
                                    by.name
                                );
                                Ok((case, vec![Effect::UpdateCard, Effect::Announce { message }]))
                            }
                        }
                    }
                    HeldAnswer::CloseAsExpected { justification } => {
                        case.close_as_expected(by, justification, Some(push), now)
                    }
                }
            }
            PushOutcome::Denied | PushOutcome::Fraud => {
                let what = if outcome == PushOutcome::Fraud {
                    "reported the push sent to verify their answer as not theirs"
                } else {
                    "denied the push sent to verify their answer"
                };
                // The opening is shared between copies of the case: this one gets its own.
                Arc::make_mut(&mut case.opening).concerns.push(format!("{} {what}.", by.name));
                let message = format!(
                    "{} {what} on {}: the answer does not count. Someone else may be using their chat account; closing this case as expected now takes two SOC members.",
                    by.name, case.id
                );
                case.push_denied = Some(Decision { by, at: now, text: Some(what.to_string()), verified: None });
                Ok((case, vec![Effect::UpdateCard, Effect::NotifySoc { message }]))
            }
            PushOutcome::TimedOut | PushOutcome::Failed { .. } => {
                let why = match &outcome {
                    PushOutcome::Failed { reason } => format!("could not be verified ({reason})"),
                    _ => "was not approved in time".to_string(),
                };
                let message = format!("{}'s answer {why}, so it does not count; they may answer again.", by.name);
                Ok((case, vec![Effect::UpdateCard, Effect::Announce { message }]))
            }
        }
    }

    /// Whether the case's deadline has passed and whoever it chases may be chased now: on-call
    /// (for an unacknowledged page) and the SOC always, a person asked to confirm only within
    /// business hours (`within_business_hours` is true when none are set).
    pub fn chase_due(&self, now: Timestamp, within_business_hours: bool) -> bool {
        if self.next_deadline().is_none_or(|deadline| deadline > now) {
            return false;
        }
        let page_due = self
            .page
            .as_ref()
            .is_some_and(|page| page.acknowledged.is_none() && page.deadline.is_some_and(|at| at <= now));
        // An unanswered push expires whatever the hour: it only stops waiting.
        let push_expired = self.pending_verification.as_ref().is_some_and(|pending| pending.expires_at <= now);
        page_due
            || push_expired
            || within_business_hours
            || !matches!(self.confirmation.current_confirmer(), Some(Confirmer::Person { .. }))
    }

    /// The earliest stored deadline: a confirmation reminder or an unacknowledged page.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let confirmation =
            (self.state == CaseState::AwaitingConfirmation).then_some(self.confirmation.deadline).flatten();
        let page = self.page.as_ref().filter(|page| page.acknowledged.is_none()).and_then(|page| page.deadline);
        let push = self.pending_verification.as_ref().map(|pending| pending.expires_at);
        [confirmation, page, push].into_iter().flatten().min()
    }
}

/// Applies one event to a case: the case as it became and the effects to carry out, or the
/// refusal (nothing changes; the caller still holds the case as it was).
pub fn apply(playbook: &Playbook, case: Case, event: CaseEvent, now: Timestamp) -> Applied {
    let allowed_when_finished = matches!(
        event,
        CaseEvent::AlertGrouped { .. } | CaseEvent::ReleaseIsolation { .. } | CaseEvent::IsolationDelivered { .. }
    );
    if case.state.is_finished() && !allowed_when_finished {
        return case.refuse("this case is already closed");
    }
    let (mut case, effects) = match event {
        CaseEvent::AlertGrouped { received_at } => {
            let mut case = case;
            case.alert_count = case.alert_count.saturating_add(1);
            case.last_alert_at = case.last_alert_at.max(received_at);
            (case, vec![Effect::UpdateCard])
        }
        CaseEvent::Answer { question, answer, by } => {
            if !by.soc {
                return case.refuse("only members of the SOC answer the playbook's questions");
            }
            let Some(definition) = playbook.question(&question) else {
                return case.refuse(format!("the playbook has no question `{question}`"));
            };
            if definition.answer(&answer).is_none() {
                return case.refuse(format!("`{answer}` is not an answer to `{question}`"));
            }
            let mut case = case;
            case.answers.insert(question, RecordedAnswer { answer, by, at: now, playbook_version: playbook.version });
            (case, vec![Effect::UpdateCard])
        }
        CaseEvent::AskConfirmation { by } => {
            if !by.soc {
                return case.refuse("only members of the SOC ask for a confirmation");
            }
            if case.state == CaseState::AwaitingConfirmation {
                return case.refuse("a confirmation has already been asked and is awaited");
            }
            let next = case.confirmation.current.map_or(0, |index| index + 1);
            case.ask(playbook, next, now)
        }
        CaseEvent::Confirm { verdict, by, justification } => {
            let justification = justification.map(|text| text.trim().to_string()).filter(|text| !text.is_empty());
            let answered_as = match case.confirmation.current_confirmer() {
                Some(Confirmer::Soc) => AnsweredAs::Soc,
                _ => AnsweredAs::Confirmer,
            };
            let weighty = match verdict {
                ConfirmVerdict::Expected => Some(WeightyAnswer::Expected),
                ConfirmVerdict::NotMe => Some(WeightyAnswer::NotMe),
                // Raising the alarm is never held back.
                ConfirmVerdict::NotExpected => None,
            };
            if weighty.is_some_and(|answer| case.needs_verification(playbook, answer, answered_as, &by)) {
                // The answer is checked now, so a refusal comes at once rather than after a push.
                case.may_confirm(playbook, verdict, &by, justification.as_deref())?;
                case.hold(playbook, HeldAnswer::Confirm { verdict, justification }, by, now)?
            } else {
                case.confirm(playbook, verdict, by, justification, None, now)?
            }
        }
        CaseEvent::Escalate { by, reason } => {
            if !by.soc {
                return case.refuse("only members of the SOC escalate a case");
            }
            if case.state == CaseState::Escalated {
                return case.refuse("this case is already escalated");
            }
            case.escalate(playbook, by, reason, now)
        }
        CaseEvent::Close { by, justification } => {
            if !by.soc {
                return case.refuse("only members of the SOC close a case");
            }
            let justification = justification.trim().to_string();
            if justification.is_empty() {
                return case.refuse("closing as expected needs a justification");
            }
            let mut case = case;
            // After a denied push, two SOC members close the case: the first asks, another agrees.
            let first_of_two = match (&case.push_denied, &case.close_asked_by) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(_), Some(first)) if first.by.same_person(&by) => {
                    return case.refuse("closing as expected after a denied push needs a second SOC member")
                }
                (Some(_), Some(_)) => false,
            };
            if first_of_two {
                let message = format!(
                    "{} asks to close {} as expected although a push about it was denied; a second SOC member must close it too.",
                    by.name, case.id
                );
                case.close_asked_by = Some(Decision { by, at: now, text: Some(justification), verified: None });
                (case, vec![Effect::UpdateCard, Effect::NotifySoc { message }])
            } else if case.needs_verification(playbook, WeightyAnswer::CloseAsExpected, AnsweredAs::Soc, &by) {
                case.hold(playbook, HeldAnswer::CloseAsExpected { justification }, by, now)?
            } else {
                case.close_as_expected(by, justification, None, now)?
            }
        }
        CaseEvent::PushSent { verification, push } => {
            let mut case = case;
            let mut effects = Vec::new();
            match case.pending_verification.as_mut() {
                Some(pending) if pending.id == verification && pending.push.is_none() => {
                    // With number matching the phone asks for a number only the one who answered
                    // here sees: a push they did not start cannot be approved by reflex.
                    if let Some(number) = push.number_to_pick {
                        effects.push(Effect::Announce {
                            message: format!("{}: to approve the push on your phone, pick {number}.", pending.by.name),
                        });
                    }
                    pending.push = Some(push);
                }
                _ => return case.refuse("no answer is waiting for that push"),
            }
            (case, effects)
        }
        CaseEvent::VerificationFinished { verification, outcome } => {
            let Some(pending) = case.pending_verification.clone().filter(|pending| pending.id == verification) else {
                return case.refuse("no answer is waiting for that push");
            };
            let mut case = case;
            case.pending_verification = None;
            case.finish_verification(playbook, pending, outcome, now)?
        }
        CaseEvent::Isolate { side, by } => {
            if !by.soc {
                return case.refuse("only members of the SOC isolate a system");
            }
            if case.state != CaseState::Escalated {
                return case.refuse("escalate the case before isolating a system");
            }
            if case.system(side).is_unknown() {
                return case.refuse("the alert does not name that system");
            }
            let latest = case.latest_isolation(side).cloned();
            let mut case = case;
            match latest {
                Some(request)
                    if request.action == IsolationAction::Isolate
                        && request.status == IsolationStatus::AwaitingApproval =>
                {
                    if request.requested_by.same_person(&by) {
                        return case.refuse("isolating a critical system needs a second SOC member's approval");
                    }
                    let request_id = request.id.clone();
                    if let Some(pending) = case.isolations.iter_mut().find(|candidate| candidate.id == request_id) {
                        pending.status = IsolationStatus::Requested;
                        pending.approved_by = Some(by);
                    }
                    (case, vec![Effect::CallIsolationWebhook { request_id }, Effect::UpdateCard])
                }
                Some(request)
                    if request.action == IsolationAction::Isolate && request.deliveries.values().all(|ok| *ok) =>
                {
                    return case.refuse("isolation of that system was already requested");
                }
                _ => {
                    let critical = case.asset(side).is_some_and(|asset| asset.criticality == Criticality::Critical);
                    let id = case.next_isolation_id(side, IsolationAction::Isolate);
                    let status = if critical { IsolationStatus::AwaitingApproval } else { IsolationStatus::Requested };
                    case.isolations.push(IsolationRequest {
                        id: id.clone(),
                        side,
                        action: IsolationAction::Isolate,
                        status,
                        requested_by: by.clone(),
                        approved_by: None,
                        at: now,
                        deliveries: BTreeMap::new(),
                    });
                    if critical {
                        let message = format!(
                            "{} asks to isolate the critical system {}; a second SOC member must approve with the Isolate button.",
                            by.name,
                            case.system(side).label()
                        );
                        (case, vec![Effect::UpdateCard, Effect::NotifySoc { message }])
                    } else {
                        (case, vec![Effect::CallIsolationWebhook { request_id: id }, Effect::UpdateCard])
                    }
                }
            }
        }
        CaseEvent::ReleaseIsolation { side, by } => {
            if !by.soc {
                return case.refuse("only members of the SOC release an isolation");
            }
            let isolated = case.latest_isolation(side).is_some_and(|request| {
                request.action == IsolationAction::Isolate && request.status == IsolationStatus::Requested
            });
            if !isolated {
                return case.refuse("that system has no isolation to release");
            }
            let mut case = case;
            let id = case.next_isolation_id(side, IsolationAction::Release);
            case.isolations.push(IsolationRequest {
                id: id.clone(),
                side,
                action: IsolationAction::Release,
                status: IsolationStatus::Requested,
                requested_by: by,
                approved_by: None,
                at: now,
                deliveries: BTreeMap::new(),
            });
            (case, vec![Effect::CallIsolationWebhook { request_id: id }, Effect::UpdateCard])
        }
        CaseEvent::IsolationDelivered { request_id, webhook, ok, detail } => {
            let mut case = case;
            let Some(request) = case.isolations.iter_mut().find(|request| request.id == request_id) else {
                return case.refuse(format!("there is no isolation request {request_id}"));
            };
            request.deliveries.insert(webhook.clone(), ok);
            let verb = match request.action {
                IsolationAction::Isolate => "isolate",
                IsolationAction::Release => "release",
            };
            let system = match request.side {
                Side::Source => case.alert().source.label(),
                Side::Target => case.alert().target.label(),
            };
            let effect = if ok {
                Effect::Announce {
                    message: format!("The {webhook} webhook accepted the request to {verb} {system} ({request_id})."),
                }
            } else {
                Effect::NotifySoc {
                    message: format!("The request to {verb} {system} could not be delivered to {webhook}: {detail}. Act through the EDR console."),
                }
            };
            (case, vec![effect, Effect::UpdateCard])
        }
        CaseEvent::Acknowledge { by } => {
            if !by.soc {
                return case.refuse("only members of the SOC acknowledge a page");
            }
            let mut case = case;
            match case.page.as_mut() {
                Some(page) if page.acknowledged.is_none() => {
                    page.acknowledged = Some(Decision { by: by.clone(), at: now, text: None, verified: None });
                    page.deadline = None;
                }
                Some(_) => return case.refuse("the page was already acknowledged"),
                None => return case.refuse("nobody has been paged for this case"),
            }
            let message = format!("{} acknowledged the page and is on it.", by.name);
            (case, vec![Effect::Announce { message }, Effect::UpdateCard])
        }
        CaseEvent::ConfirmerLeft { person, reason } => {
            if !case.asks(&person) {
                return case.refuse("that person is not the one asked to vouch");
            }
            let name = case.confirmation.current_confirmer().map(Confirmer::label).unwrap_or_default();
            let next = case.confirmation.current.map_or(0, |index| index + 1);
            let (case, ask_effects) = case.ask(playbook, next, now);
            let mut effects = vec![Effect::Announce {
                message: format!("{name} {reason}, so the next person in the chain is asked."),
            }];
            effects.extend(ask_effects);
            (case, effects)
        }
        CaseEvent::ReminderDue => {
            let mut case = case;
            let mut effects = Vec::new();
            // An unacknowledged page is repeated, then handed to the secondary.
            let page_due = case.page.as_ref().is_some_and(|page| {
                page.acknowledged.is_none() && page.deadline.is_some_and(|deadline| deadline <= now)
            });
            if page_due {
                let repings_allowed = playbook.timers.page_repings;
                let ack_minutes = playbook.timers.page_ack_minutes.max(1);
                if let Some(page) = case.page.as_mut() {
                    if page.repings < repings_allowed {
                        page.repings += 1;
                        effects.push(Effect::PageOnCall {
                            reason: page.reason.clone(),
                            secondary: page.secondary,
                            reminder: true,
                        });
                    } else if !page.secondary {
                        page.secondary = true;
                        page.repings = 0;
                        effects.push(Effect::PageOnCall {
                            reason: page.reason.clone(),
                            secondary: true,
                            reminder: false,
                        });
                    }
                    let at = now.plus_minutes(ack_minutes);
                    page.deadline = (!effects.is_empty()).then_some(at);
                }
            }
            let confirmation_due = case.state == CaseState::AwaitingConfirmation
                && case.confirmation.deadline.is_some_and(|deadline| deadline <= now);
            if confirmation_due {
                let reassign_after = playbook.timers.reassign_after_reminders.get(case.opening.criticality);
                if case.confirmation.reminders_sent >= reassign_after {
                    let next = case.confirmation.current.map_or(0, |index| index + 1);
                    let (asked, ask_effects) = case.ask(playbook, next, now);
                    case = asked;
                    effects.extend(ask_effects);
                    // Silence all the way down the chain: on-call takes it.
                    if case.confirmation.current_confirmer() == Some(&Confirmer::Soc) {
                        let reason = "nobody confirmed this movement in time".to_string();
                        effects.extend(case.page_on_call(playbook, reason, now));
                    }
                } else {
                    case.confirmation.reminders_sent += 1;
                    let at = now.plus_minutes(case.remind_after(playbook));
                    case.confirmation.deadline = Some(at);
                    if let Some(person) = case.confirmation.current_confirmer().and_then(Confirmer::person) {
                        effects.push(Effect::PingPerson { person: person.clone(), reason: PingReason::Reminder });
                    }
                }
            }
            // A push nobody answered in time (Vouch may have restarted while it waited).
            if let Some(pending) = case.pending_verification.take() {
                if pending.expires_at <= now {
                    let (expired, expiry_effects) =
                        case.finish_verification(playbook, pending, PushOutcome::TimedOut, now)?;
                    case = expired;
                    effects.extend(expiry_effects);
                } else {
                    case.pending_verification = Some(pending);
                }
            }
            if effects.is_empty() {
                // A stale timer (the case moved on, or the deadline was pushed back): nothing to do.
                return Ok((case, Vec::new()));
            }
            (case, effects)
        }
    };
    case.updated_at = now;
    Ok((case, effects))
}
