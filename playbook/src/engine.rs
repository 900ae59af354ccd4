//! The triage engine: what a case knows when it opens, and how each event changes it.
//!
//! Both entry points are pure functions of their inputs (the clock is an argument). Their
//! decisions come back as [`Effect`] values that the bot carries out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::definition::{
    Condition, ConfirmerRole, FactName, FactTest, Leaning, Playbook, QUESTION_ACCOUNT_USAGE, QUESTION_INTERACTIVE,
};
use crate::facts::{AccountFacts, AccountKind, AssetFacts, Criticality, Facts, History, PersonRef};
use crate::ids::{AnswerId, CaseId, PersonId, PlaybookVersion, QuestionId, ScenarioId, Snowflake};
use crate::model::{executable_name, Alert, ConnectionKind, Protocol};
use crate::time::Timestamp;

/// Three-valued truth: a fact the directory does not know is neither true nor false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    Yes,
    No,
    Unknown,
}

/// One line of evidence behind a scenario verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub fact: String,
    pub outcome: Truth,
    pub detail: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supporting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioVerdict {
    /// Every requirement holds.
    Matched,
    /// At least one requirement fails.
    NotMatched,
    /// Nothing fails, but something needed is unknown.
    Undetermined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioAssessment {
    pub id: ScenarioId,
    pub title: String,
    pub verdict: ScenarioVerdict,
    pub evidence: Vec<Evidence>,
}

impl ScenarioAssessment {
    pub fn matched(&self) -> bool {
        self.verdict == ScenarioVerdict::Matched
    }
}

/// The engine's suggestion for one playbook question, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub question: QuestionId,
    /// The prompt fitting this account's kind.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested: Option<AnswerId>,
    pub evidence: Vec<String>,
}

/// Who is asked to vouch for the movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Confirmer {
    Person {
        person: PersonRef,
        role: ConfirmerRole,
    },
    /// The end of every chain: the SOC itself decides.
    Soc,
}

impl Confirmer {
    pub fn person(&self) -> Option<&PersonRef> {
        match self {
            Confirmer::Person { person, .. } => Some(person),
            Confirmer::Soc => None,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Confirmer::Person { person, role } => format!("{} ({})", person.name, role.label()),
            Confirmer::Soc => "the SOC".to_string(),
        }
    }
}

/// What the engine concluded when a case opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    pub playbook_version: PlaybookVersion,
    pub account_kind: AccountKind,
    pub scenarios: Vec<ScenarioAssessment>,
    pub hints: Vec<Hint>,
    /// Things that make the movement more suspicious, each said plainly.
    pub concerns: Vec<String>,
    /// Who to ask, in order; always ends with the SOC.
    pub confirmation_chain: Vec<Confirmer>,
    pub history: History,
    /// Criticality of the target (the highest of the systems involved), driving timers.
    pub criticality: Criticality,
}

/// Who did something: a Discord member resolved against the directory, or Vouch itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord_id: Option<Snowflake>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<PersonId>,
    pub name: String,
    /// Holds the SOC role in the guild.
    pub soc: bool,
}

impl Actor {
    /// Vouch's own timers.
    pub fn vouch() -> Actor {
        Actor { discord_id: None, person: None, name: "Vouch".to_string(), soc: false }
    }

    fn is(&self, person: &PersonRef) -> bool {
        let same_person = self.person.as_ref().is_some_and(|id| *id == person.id);
        let same_discord = self.discord_id.is_some() && self.discord_id == person.discord_id;
        same_person || same_discord
    }

    /// The same human: the same directory person, or the same Discord account.
    pub fn same_person(&self, other: &Actor) -> bool {
        let same_person = self.person.is_some() && self.person == other.person;
        let same_discord = self.discord_id.is_some() && self.discord_id == other.discord_id;
        same_person || same_discord
    }

    fn is_or_delegates_for(&self, person: &PersonRef) -> bool {
        self.is(person) || person.delegates.iter().any(|delegate| self.is(delegate))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmVerdict {
    Expected,
    NotExpected,
    /// "Not me / wrong person": ask the next in the chain.
    NotMe,
}

/// Which end of the movement an action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Target,
}

/// Everything that can happen to a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CaseEvent {
    /// Another alert of the same movement arrived within the grouping window.
    AlertGrouped {
        received_at: Timestamp,
    },
    Answer {
        question: QuestionId,
        answer: AnswerId,
        by: Actor,
    },
    AskConfirmation {
        by: Actor,
    },
    Confirm {
        verdict: ConfirmVerdict,
        by: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        justification: Option<String>,
    },
    Escalate {
        by: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Close {
        by: Actor,
        justification: String,
    },
    /// A SOC member asks for one end of an escalated movement to be cut off the network, or, for
    /// a critical system another member asked to isolate, approves that request.
    Isolate {
        side: Side,
        by: Actor,
    },
    /// A SOC member undoes an isolation.
    ReleaseIsolation {
        side: Side,
        by: Actor,
    },
    /// A webhook answered (or finally failed) for an isolation request.
    IsolationDelivered {
        request_id: String,
        webhook: String,
        ok: bool,
        detail: String,
    },
    /// On-call acknowledges the page.
    Acknowledge {
        by: Actor,
    },
    /// A deadline stored with the case (a confirmation reminder or an unacknowledged page) passed.
    ReminderDue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PingReason {
    AskConfirmation,
    Reminder,
}

/// A decision for the bot to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    PostCard,
    UpdateCard,
    PingPerson {
        person: PersonRef,
        reason: PingReason,
    },
    /// Tell the SOC something needs them (no confirmer left, or a concern after a vouch).
    NotifySoc {
        message: String,
    },
    /// Page on-call: the primary, or (after a page went unacknowledged) the secondary.
    PageOnCall {
        reason: String,
        #[serde(default)]
        secondary: bool,
        #[serde(default)]
        reminder: bool,
    },
    /// Offer (or, on the owner's "not expected", recommend) isolating a system.
    ProposeIsolation {
        side: Side,
    },
    /// Call the configured isolation webhooks for a request (see `Case::isolations`).
    CallIsolationWebhook {
        request_id: String,
    },
    /// Say something in the case's thread, pinging nobody.
    Announce {
        message: String,
    },
    /// The event was not accepted; the case is unchanged. The bot records the refusal.
    Refused {
        reason: String,
    },
    /// An effect this version does not know (one written by an older Vouch, such as the retired
    /// `schedule_reminder`: deadlines live on the case). It is dropped, not carried out.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// Waiting for the SOC's triage.
    Open,
    /// Someone outside the SOC was asked to vouch and has not answered.
    AwaitingConfirmation,
    Escalated,
    ClosedExpected,
}

impl CaseState {
    pub const ALL: [CaseState; 4] =
        [CaseState::Open, CaseState::AwaitingConfirmation, CaseState::Escalated, CaseState::ClosedExpected];

    pub fn id(self) -> &'static str {
        match self {
            CaseState::Open => "open",
            CaseState::AwaitingConfirmation => "awaiting_confirmation",
            CaseState::Escalated => "escalated",
            CaseState::ClosedExpected => "closed_expected",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, CaseState::ClosedExpected)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAnswer {
    pub answer: AnswerId,
    pub by: Actor,
    pub at: Timestamp,
    pub playbook_version: PlaybookVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedVerdict {
    pub confirmer: Confirmer,
    pub verdict: ConfirmVerdict,
    pub by: Actor,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}

/// Where the confirmation chain stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub chain: Vec<Confirmer>,
    /// Index in `chain` of the confirmer asked now; `None` before anyone was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_at: Option<Timestamp>,
    pub reminders_sent: u32,
    /// When the asked person is next chased. Stored with the case so restarts re-arm it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub verdicts: Vec<RecordedVerdict>,
}

impl Confirmation {
    pub fn current_confirmer(&self) -> Option<&Confirmer> {
        self.current.and_then(|index| self.chain.get(index))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub by: Actor,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A case: one lateral movement (possibly many alerts) and everything decided about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    pub id: CaseId,
    pub state: CaseState,
    pub playbook_version: PlaybookVersion,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    /// The first alert of the movement.
    pub alert: AlertRecord,
    pub alert_count: u64,
    pub last_alert_at: Timestamp,
    pub facts: Facts,
    pub opening: Opening,
    pub answers: BTreeMap<QuestionId, RecordedAnswer>,
    pub confirmation: Confirmation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Decision>,
    /// Isolation requested, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isolations: Vec<IsolationRequest>,
    /// The on-call page of an escalated case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
}

/// Where an on-call page stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub paged_at: Timestamp,
    /// When the page is repeated (or handed to the secondary) if nobody acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub repings: u32,
    pub secondary: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Decision>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationAction {
    Isolate,
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationStatus {
    /// A critical system: a second SOC member must approve before anything is sent.
    AwaitingApproval,
    /// Approved and handed to the webhooks.
    Requested,
}

/// One request to isolate (or release) a system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationRequest {
    /// Stable and unique: the webhooks' idempotency key is derived from it.
    pub id: String,
    pub side: Side,
    pub action: IsolationAction,
    pub status: IsolationStatus,
    pub requested_by: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<Actor>,
    pub at: Timestamp,
    /// What each webhook answered, by webhook name: `true` delivered, `false` failed for good.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deliveries: BTreeMap<String, bool>,
}

impl IsolationRequest {
    pub fn delivered(&self) -> bool {
        self.deliveries.values().any(|ok| *ok)
    }
}

/// What a case offers now: the card draws a live button for each, and only for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offers {
    pub answer: bool,
    pub ask_owner: bool,
    pub escalate: bool,
    pub close: bool,
    pub source: IsolationOffer,
    pub target: IsolationOffer,
}

impl Offers {
    pub fn isolation(&self, side: Side) -> IsolationOffer {
        match side {
            Side::Source => self.source,
            Side::Target => self.target,
        }
    }
}

/// What can be done about isolating one end of the movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsolationOffer {
    /// Isolating is offered (the case is escalated and the system is not isolated yet).
    pub isolate: Option<IsolateOffer>,
    /// The alert names the system, so there is something to isolate.
    pub system_known: bool,
    /// The system is isolated and can be released.
    pub release: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolateOffer {
    /// Ask for the isolation.
    Request,
    /// Approve a colleague's request to isolate a critical system.
    Approve,
}

/// `Alert` holds a JSON value and so is not `Eq`; cases compare alerts by their serialized form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertRecord(pub Alert);

impl Eq for AlertRecord {}

/// Builds the opening assessment of a new case.
pub fn open_case(playbook: &Playbook, alert: &Alert, facts: &Facts, history: &History, _now: Timestamp) -> Opening {
    let subject = Subject { playbook, alert, facts, history };
    let scenarios = playbook
        .scenarios
        .iter()
        .map(|scenario| {
            let outcomes: Vec<(Truth, Vec<Evidence>, bool)> =
                scenario.conditions.iter().map(|condition| subject.evaluate_condition(condition)).collect();
            let required: Vec<Truth> =
                outcomes.iter().filter(|(_, _, supporting)| !supporting).map(|(truth, _, _)| *truth).collect();
            let verdict = if required.contains(&Truth::No) {
                ScenarioVerdict::NotMatched
            } else if required.contains(&Truth::Unknown) {
                ScenarioVerdict::Undetermined
            } else {
                ScenarioVerdict::Matched
            };
            ScenarioAssessment {
                id: scenario.id.clone(),
                title: scenario.title.clone(),
                verdict,
                evidence: outcomes.into_iter().flat_map(|(_, evidence, _)| evidence).collect(),
            }
        })
        .collect::<Vec<_>>();

    let mut concerns = subject.concerns();
    // A failed requirement that the playbook flags is a concern even though the scenario simply
    // does not match (a helpdesk account arriving from someone else's machine).
    for scenario in &playbook.scenarios {
        for condition in &scenario.conditions {
            if let Some(warning) = subject.warning_for(condition) {
                if !concerns.contains(&warning) {
                    concerns.push(warning);
                }
            }
        }
    }

    Opening {
        playbook_version: playbook.version,
        account_kind: subject.account_kind(),
        scenarios,
        hints: vec![subject.account_usage_hint(), subject.interactive_hint()],
        concerns,
        confirmation_chain: subject.confirmation_chain(),
        history: history.clone(),
        criticality: subject.criticality(),
    }
}

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
            alert: AlertRecord(alert),
            facts,
            confirmation: Confirmation {
                chain: opening.confirmation_chain.clone(),
                current: None,
                asked_at: None,
                reminders_sent: 0,
                deadline: None,
                verdicts: Vec::new(),
            },
            opening,
            answers: BTreeMap::new(),
            escalation: None,
            resolution: None,
            isolations: Vec::new(),
            page: None,
        };
        let mut effects = vec![Effect::PostCard];
        if playbook.confirmation.ask_on_open {
            let (case, ask_effects) = case.ask(playbook, 0, now);
            effects.extend(ask_effects.into_iter().filter(|effect| *effect != Effect::UpdateCard));
            return (case, effects);
        }
        (case, effects)
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

    fn refuse(self, reason: impl Into<String>) -> (Case, Vec<Effect>) {
        (self, vec![Effect::Refused { reason: reason.into() }])
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
        self.escalation = Some(Decision { by, at: now, text: reason });
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
        page_due
            || within_business_hours
            || !matches!(self.confirmation.current_confirmer(), Some(Confirmer::Person { .. }))
    }

    /// The earliest stored deadline: a confirmation reminder or an unacknowledged page.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let confirmation =
            (self.state == CaseState::AwaitingConfirmation).then_some(self.confirmation.deadline).flatten();
        let page = self.page.as_ref().filter(|page| page.acknowledged.is_none()).and_then(|page| page.deadline);
        match (confirmation, page) {
            (Some(left), Some(right)) => Some(left.min(right)),
            (left, right) => left.or(right),
        }
    }
}

/// Applies one event to a case. A refused event leaves the case as it was and says why.
pub fn apply(playbook: &Playbook, case: Case, event: CaseEvent, now: Timestamp) -> (Case, Vec<Effect>) {
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
            if case.state != CaseState::AwaitingConfirmation
                && case.confirmation.current_confirmer() != Some(&Confirmer::Soc)
            {
                return case.refuse("nobody is being asked to confirm this case right now");
            }
            if !case.is_asked(&by) {
                let asked = case.confirmation.current_confirmer().map(Confirmer::label).unwrap_or_default();
                return case.refuse(format!("this confirmation was asked of {asked}"));
            }
            let Some(confirmer) = case.confirmation.current_confirmer().cloned() else {
                return case.refuse("nobody is being asked to confirm this case right now");
            };
            let justification = justification.map(|text| text.trim().to_string()).filter(|text| !text.is_empty());
            if verdict == ConfirmVerdict::Expected && justification.is_none() && case.vouching_needs_justification(&by)
            {
                return case.refuse("vouching for a movement to a critical system needs a justification");
            }
            let mut case = case;
            case.confirmation.verdicts.push(RecordedVerdict {
                confirmer,
                verdict,
                by: by.clone(),
                at: now,
                justification: justification.clone(),
            });
            match verdict {
                ConfirmVerdict::Expected => {
                    case.confirmation.deadline = None;
                    if playbook.confirmation.close_on_expected_without_concerns && case.opening.concerns.is_empty() {
                        case.state = CaseState::ClosedExpected;
                        case.resolution = Some(Decision { by, at: now, text: justification });
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
            case.state = CaseState::ClosedExpected;
            case.confirmation.deadline = None;
            case.resolution = Some(Decision { by, at: now, text: Some(justification) });
            (case, vec![Effect::UpdateCard])
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
                    case.refuse("isolation of that system was already requested")
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
                    page.acknowledged = Some(Decision { by: by.clone(), at: now, text: None });
                    page.deadline = None;
                }
                Some(_) => return case.refuse("the page was already acknowledged"),
                None => return case.refuse("nobody has been paged for this case"),
            }
            let message = format!("{} acknowledged the page and is on it.", by.name);
            (case, vec![Effect::Announce { message }, Effect::UpdateCard])
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
            if effects.is_empty() {
                // A stale timer (the case moved on, or the deadline was pushed back): nothing to do.
                return (case, Vec::new());
            }
            (case, effects)
        }
    };
    case.updated_at = now;
    (case, effects)
}

/// The alert, the directory's facts and the history, seen together.
struct Subject<'a> {
    playbook: &'a Playbook,
    alert: &'a Alert,
    facts: &'a Facts,
    history: &'a History,
}

/// A fact's value, or unknown with the reason it is unknown.
enum FactValue {
    Words(Vec<String>),
    Flag(bool),
    Number(u64),
    Unknown(&'static str),
}

impl FactValue {
    fn describe(&self) -> String {
        match self {
            FactValue::Words(words) if words.is_empty() => "none".to_string(),
            FactValue::Words(words) => words.join(", "),
            FactValue::Flag(true) => "yes".to_string(),
            FactValue::Flag(false) => "no".to_string(),
            FactValue::Number(number) => number.to_string(),
            FactValue::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

const ADMINISTRATIVE_SHARES: [&str; 4] = ["c$", "admin$", "ipc$", "print$"];

impl Subject<'_> {
    fn account_facts(&self) -> Option<&AccountFacts> {
        self.facts.account.as_ref().or(self.facts.acting_as.as_ref())
    }

    /// The directory's kind when it knows the account; the name alone can still tell a
    /// computer account or an operating-system identity.
    fn account_kind(&self) -> AccountKind {
        if let Some(facts) = self.account_facts() {
            return facts.kind;
        }
        match self.alert.initiating_account() {
            Some(account) if account.looks_like_system_account() => AccountKind::System,
            _ => AccountKind::Unknown,
        }
    }

    fn holder_workstation_flag(&self, asset_hostname: Option<String>) -> FactValue {
        let Some(holder) = self.account_facts().and_then(|facts| facts.holder.as_ref()) else {
            return FactValue::Unknown("the account's holder is not in the directory");
        };
        let Some(hostname) = asset_hostname else {
            return FactValue::Unknown("the system's hostname is not in the alert");
        };
        FactValue::Flag(holder.workstations.contains(&hostname))
    }

    fn asset_kind(asset: Option<&AssetFacts>) -> FactValue {
        match asset {
            Some(asset) => FactValue::Words(vec![asset.kind.id().to_string()]),
            None => FactValue::Unknown("the system is not in the directory"),
        }
    }

    fn share_name(&self) -> Option<String> {
        self.alert
            .share
            .as_deref()
            .map(|share| share.trim_start_matches('\\').rsplit('\\').next().unwrap_or(share).to_ascii_lowercase())
    }

    fn fact(&self, name: FactName) -> FactValue {
        match name {
            FactName::Protocol => match self.alert.protocol {
                Protocol::Unknown => FactValue::Unknown("the alert does not say"),
                protocol => FactValue::Words(vec![protocol.id().to_string()]),
            },
            FactName::Connection => match self.alert.connection {
                ConnectionKind::Unknown => FactValue::Unknown("the alert does not say"),
                kind => FactValue::Words(vec![serde_json::to_value(kind)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_string))
                    .unwrap_or_default()]),
            },
            FactName::AccountKind => match self.account_kind() {
                AccountKind::Unknown => FactValue::Unknown("the account is not in the directory"),
                kind => FactValue::Words(vec![kind.id().to_string()]),
            },
            FactName::AccountRoles => match self.account_facts().and_then(|facts| facts.holder.as_ref()) {
                Some(holder) => FactValue::Words(holder.roles.clone()),
                None => FactValue::Unknown("the account's holder is not in the directory"),
            },
            FactName::SourceKind => Self::asset_kind(self.facts.source.as_ref()),
            FactName::TargetKind => Self::asset_kind(self.facts.target.as_ref()),
            FactName::SourceIsAccountHoldersWorkstation => {
                self.holder_workstation_flag(self.alert.source.short_hostname())
            }
            FactName::TargetIsAccountHoldersWorkstation => {
                self.holder_workstation_flag(self.alert.target.short_hostname())
            }
            FactName::SourceRunsAccountAsService => {
                let Some(source) = &self.facts.source else {
                    return FactValue::Unknown("the source system is not in the directory");
                };
                let Some(account) = self.alert.initiating_account() else {
                    return FactValue::Unknown("the alert names no account");
                };
                FactValue::Flag(source.service_accounts.contains(&account.key()))
            }
            FactName::ShareIsAdministrative => match self.share_name() {
                Some(share) => FactValue::Flag(ADMINISTRATIVE_SHARES.contains(&share.as_str())),
                None => FactValue::Unknown("the alert names no share"),
            },
            FactName::ShareOwnedByAccountHolder => {
                let Some(share) = self.share_name() else {
                    return FactValue::Unknown("the alert names no share");
                };
                let Some(holder) = self.account_facts().and_then(|facts| facts.holder.as_ref()) else {
                    return FactValue::Unknown("the account's holder is not in the directory");
                };
                let Some(target) = &self.facts.target else {
                    return FactValue::Unknown("the target system is not in the directory");
                };
                let owner = target
                    .shares
                    .iter()
                    .find(|known| known.name.eq_ignore_ascii_case(&share))
                    .and_then(|known| known.owner.as_ref());
                FactValue::Flag(owner == Some(&holder.person.id))
            }
            FactName::ProgramFamily => match self.alert.program.as_ref().and_then(|program| program.key()) {
                Some(name) => {
                    FactValue::Words(vec![self.playbook.programs.family(&name).unwrap_or("other").to_string()])
                }
                None => FactValue::Unknown("the alert names no program"),
            },
            FactName::HistorySourceDistinctTargets => match self.history.source_distinct_targets {
                Some(count) => FactValue::Number(count),
                None => FactValue::Unknown("no history yet"),
            },
        }
    }

    fn test(&self, test: &FactTest) -> (Truth, Evidence) {
        let value = self.fact(test.fact);
        let truth = match (&value, test) {
            (FactValue::Unknown(_), _) => Truth::Unknown,
            (FactValue::Words(words), FactTest { any_of: Some(wanted), .. }) => {
                truth(words.iter().any(|word| wanted.iter().any(|want| want.eq_ignore_ascii_case(word))))
            }
            (FactValue::Flag(flag), FactTest { equals: Some(wanted), .. }) => truth(flag == wanted),
            (FactValue::Number(number), FactTest { at_least: Some(minimum), .. }) => truth(number >= minimum),
            // The playbook loader rejects tests of the wrong shape; treat one as unknown anyway.
            _ => Truth::Unknown,
        };
        let wanted = match test {
            FactTest { any_of: Some(wanted), .. } => format!("one of {}", wanted.join(", ")),
            FactTest { equals: Some(true), .. } => "yes".to_string(),
            FactTest { equals: Some(false), .. } => "no".to_string(),
            FactTest { at_least: Some(minimum), .. } => format!("at least {minimum}"),
            _ => "?".to_string(),
        };
        let detail = format!("{}: {} (wanted {wanted})", test.fact.label(), value.describe());
        (truth, Evidence { fact: fact_id(test.fact), outcome: truth, detail, supporting: test.supporting })
    }

    /// Evaluates one condition: its truth, its evidence lines, and whether it only supports.
    fn evaluate_condition(&self, condition: &Condition) -> (Truth, Vec<Evidence>, bool) {
        match condition {
            Condition::Fact(test) => {
                let (truth, evidence) = self.test(test);
                (truth, vec![evidence], test.supporting)
            }
            Condition::AnyOf { any, .. } => {
                let results: Vec<(Truth, Evidence)> = any.iter().map(|test| self.test(test)).collect();
                let truths: Vec<Truth> = results.iter().map(|(truth, _)| *truth).collect();
                let truth = if truths.contains(&Truth::Yes) {
                    Truth::Yes
                } else if truths.contains(&Truth::Unknown) {
                    Truth::Unknown
                } else {
                    Truth::No
                };
                let supporting = any.iter().all(|test| test.supporting);
                (truth, results.into_iter().map(|(_, evidence)| evidence).collect(), supporting && !any.is_empty())
            }
        }
    }

    /// The warning a failed condition carries, when its scenario is otherwise in play: every
    /// condition of the scenario that carries no warning of its own holds, so the failure of this
    /// one is what makes the movement odd.
    fn warning_for(&self, condition: &Condition) -> Option<String> {
        let (truth, _, _) = self.evaluate_condition(condition);
        if truth != Truth::No {
            return None;
        }
        let warning = condition_warning(condition)?;
        let scenario = self
            .playbook
            .scenarios
            .iter()
            .find(|scenario| scenario.conditions.iter().any(|candidate| std::ptr::eq(candidate, condition)))?;
        let anchors_hold = scenario
            .conditions
            .iter()
            .filter(|other| condition_warning(other).is_none())
            .map(|other| self.evaluate_condition(other))
            .filter(|(_, _, supporting)| !supporting)
            .all(|(truth, _, _)| truth == Truth::Yes);
        anchors_hold.then_some(warning)
    }

    fn program_family(&self) -> Option<&'static str> {
        let name = self.alert.program.as_ref()?.key()?;
        self.playbook.programs.family(&name)
    }

    fn concerns(&self) -> Vec<String> {
        let mut concerns = Vec::new();
        let kind = self.account_kind();
        let family = self.program_family();
        let interactive_protocol = matches!(self.alert.protocol, Protocol::Rdp | Protocol::Vnc);
        if kind == AccountKind::Service && (family == Some("remote_access_tool") || interactive_protocol) {
            concerns.push(
                "A service account used an interactive remote-access tool or protocol; services have no need to."
                    .to_string(),
            );
        }
        if kind == AccountKind::Service && self.alert.logon_type == Some(10) {
            concerns.push("A service account opened a remote interactive (type 10) logon.".to_string());
        }
        if let Some(command_line) = self.alert.program.as_ref().and_then(|program| program.command_line.as_deref()) {
            let lowered = command_line.to_ascii_lowercase();
            if [" -enc ", " -encodedcommand ", " -e ", " -ec "].iter().any(|flag| lowered.contains(flag)) {
                concerns.push(
                    "The command line carries an encoded PowerShell command, a common way to hide what runs."
                        .to_string(),
                );
            }
        }
        if self.alert.connection == ConnectionKind::AlternateAuthentication {
            concerns.push(
                "The alert points at reused authentication material (pass-the-hash or pass-the-ticket).".to_string(),
            );
        }
        if let (Some(account), Some(acting_as)) = (&self.alert.account, &self.alert.acting_as) {
            if account.key() != acting_as.key() {
                concerns.push(format!(
                    "The account {account} acted as a second account, {acting_as}: check both are expected together."
                ));
            }
        }
        if self.facts.target.as_ref().is_some_and(|target| target.criticality == Criticality::Critical) {
            concerns.push("The target is a critical system.".to_string());
        }
        concerns
    }

    fn account_usage_hint(&self) -> Hint {
        let kind = self.account_kind();
        let question = self.question(QUESTION_ACCOUNT_USAGE);
        let mut evidence = Vec::new();
        let mut suggested = None;
        match (kind, self.account_facts()) {
            (AccountKind::Unknown, _) => evidence.push("The directory does not know this account.".to_string()),
            (_, Some(facts)) => {
                let mut line = format!("The directory lists a {} account", kind.id());
                if let Some(holder) = &facts.holder {
                    line.push_str(&format!(" held by {}", holder.person.name));
                    if !holder.roles.is_empty() {
                        line.push_str(&format!(" ({})", holder.roles.join(", ")));
                    }
                }
                if let Some(service) = &facts.service {
                    line.push_str(&format!(" running {service}"));
                }
                line.push('.');
                evidence.push(line);
            }
            (_, None) => evidence.push(format!("The account's name marks it as a {} account.", kind.id())),
        }
        let family = self.program_family();
        if kind == AccountKind::Service
            && (family == Some("remote_access_tool") || self.alert.protocol == Protocol::Rdp)
        {
            evidence.push("A service account should not be driving a remote-access tool.".to_string());
            suggested = self.answer_leaning(QUESTION_ACCOUNT_USAGE, Leaning::Suspicious);
        }
        if let Some(matched) = self.matched_scenario_title() {
            evidence.push(format!("The known scenario \"{matched}\" fits."));
            suggested = suggested.or_else(|| self.answer_leaning(QUESTION_ACCOUNT_USAGE, Leaning::Benign));
        }
        if self.history.seen > 0 {
            evidence.push(format!(
                "Seen {} time(s) before; confirmed expected {} time(s).",
                self.history.seen,
                self.history.confirmed_expected.len()
            ));
        }
        Hint { question: question.0, prompt: question.1, suggested, evidence }
    }

    fn interactive_hint(&self) -> Hint {
        let question = self.question(QUESTION_INTERACTIVE);
        let kind = self.account_kind();
        let mut evidence = Vec::new();
        let mut suggested: Option<&str> = None;
        match self.alert.logon_type {
            Some(10) => {
                evidence.push("Windows logon type 10 is a remote interactive (RDP) session.".to_string());
                suggested = Some("interactive");
            }
            Some(2) => {
                evidence.push("Windows logon type 2 is an interactive logon at the keyboard.".to_string());
                suggested = Some("interactive");
            }
            Some(3) if matches!(kind, AccountKind::Service | AccountKind::System) => {
                evidence.push(format!(
                    "Windows logon type 3 (network) by a {} account is how programs connect.",
                    kind.id()
                ));
                suggested = Some("programmatic");
            }
            Some(3) => {
                evidence.push("Windows logon type 3 is a network logon: a person's tool or a script.".to_string())
            }
            Some(9) => evidence.push(
                "Windows logon type 9 started a process with other credentials (runas /netonly or pass-the-hash)."
                    .to_string(),
            ),
            Some(other) => evidence.push(format!("Windows logon type {other}.")),
            None => {}
        }
        if let Some(program) = &self.alert.program {
            if let Some(parent) = program.parent_key() {
                if self.playbook.programs.is_remote_execution_host(&parent) {
                    evidence.push(format!(
                        "{} was started by {}, which runs what a remote machine asked for.",
                        program.name.as_deref().unwrap_or("The program"),
                        executable_name(&parent)
                    ));
                    suggested = Some("programmatic");
                }
            }
            match self.program_family() {
                Some("remote_access_tool") | Some("browser") if suggested.is_none() => {
                    evidence.push(format!(
                        "{} is a tool people drive by hand.",
                        program.name.as_deref().unwrap_or("The program")
                    ));
                    suggested = Some("interactive");
                }
                Some("script_interpreter") => {
                    evidence.push(format!(
                        "{} is a script interpreter; check whether a person typed or a script ran.",
                        program.name.as_deref().unwrap_or("The program")
                    ));
                }
                _ => {}
            }
        }
        if suggested == Some("programmatic") && kind == AccountKind::User {
            evidence.push("A personal account acting programmatically deserves a second look.".to_string());
        }
        if evidence.is_empty() {
            evidence.push("The alert carries nothing that tells a person from a program.".to_string());
        }
        let suggested = suggested
            .and_then(|id| AnswerId::parse(id).ok())
            .filter(|id| self.playbook.question(&question.0).is_some_and(|definition| definition.answer(id).is_some()));
        Hint { question: question.0, prompt: question.1, suggested, evidence }
    }

    fn question(&self, id: &str) -> (QuestionId, String) {
        let kind = self.account_kind();
        let found = self.playbook.questions.iter().find(|question| question.id.as_str() == id);
        match found {
            Some(question) => (question.id.clone(), question.prompt_for(kind).to_string()),
            // The loader guarantees both questions exist, and their ids are valid slugs.
            None => (QuestionId::parse(id).expect("the playbook's question ids are slugs"), String::new()),
        }
    }

    fn answer_leaning(&self, question: &str, leaning: Leaning) -> Option<AnswerId> {
        self.playbook
            .questions
            .iter()
            .find(|candidate| candidate.id.as_str() == question)?
            .answers
            .iter()
            .find(|answer| answer.leans == leaning)
            .map(|answer| answer.id.clone())
    }

    fn matched_scenario_title(&self) -> Option<String> {
        self.playbook.scenarios.iter().find_map(|scenario| {
            let all_hold = scenario
                .conditions
                .iter()
                .map(|condition| self.evaluate_condition(condition))
                .filter(|(_, _, supporting)| !supporting)
                .all(|(truth, _, _)| truth == Truth::Yes);
            all_hold.then(|| scenario.title.clone())
        })
    }

    fn criticality(&self) -> Criticality {
        [self.facts.source.as_ref(), self.facts.target.as_ref()]
            .into_iter()
            .flatten()
            .map(|asset| asset.criticality)
            .max()
            .unwrap_or(Criticality::Medium)
    }

    fn confirmation_chain(&self) -> Vec<Confirmer> {
        let mut chain: Vec<Confirmer> = Vec::new();
        let holder = self.account_facts().and_then(|facts| facts.holder.as_ref());
        for role in &self.playbook.confirmation.chain {
            let person = match role {
                ConfirmerRole::TargetOwner => self.facts.target.as_ref().and_then(|target| target.owner.clone()),
                ConfirmerRole::Manager => holder.and_then(|holder| holder.manager.clone()),
                ConfirmerRole::AccountOwner => self.account_facts().and_then(|facts| facts.owner.clone()),
            };
            let Some(person) = person else { continue };
            // Nobody vouches for their own movement: the holder of the account is skipped.
            if holder.is_some_and(|holder| holder.person.id == person.id) {
                continue;
            }
            if chain.iter().any(|existing| existing.person().is_some_and(|known| known.id == person.id)) {
                continue;
            }
            chain.push(Confirmer::Person { person, role: *role });
        }
        chain.push(Confirmer::Soc);
        chain
    }
}

fn condition_warning(condition: &Condition) -> Option<String> {
    match condition {
        Condition::Fact(test) => test.when_not_met.clone(),
        Condition::AnyOf { when_not_met, .. } => when_not_met.clone(),
    }
}

fn truth(value: bool) -> Truth {
    if value {
        Truth::Yes
    } else {
        Truth::No
    }
}

fn fact_id(name: FactName) -> String {
    serde_json::to_value(name).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default()
}
