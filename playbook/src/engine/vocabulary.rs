//! What a case is made of: the values the engine reads and returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::definition::ConfirmerRole;
use crate::facts::{AccountKind, Criticality, Facts, History, PersonRef};
use crate::ids::{AnswerId, CaseId, PersonId, PlaybookVersion, QuestionId, ScenarioId, Snowflake};
use crate::model::Alert;
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

/// What the directory says now about the person a case is waiting on, as the service reads it
/// for [`Case::asked_person_gone`](super::Case::asked_person_gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskedPersonStanding {
    /// The person is still in the directory.
    pub in_directory: bool,
    /// The manager the directory now gives the account's holder.
    pub manager_of_holder: Option<PersonId>,
    /// The owner the directory now gives the target.
    pub owner_of_target: Option<PersonId>,
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
    /// The person's roles in the directory (what a verification rule may be limited to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The chat account is bound to the person by a push they approved (`/link`), rather than
    /// only named by the directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linked: bool,
}

impl Actor {
    /// Vouch's own timers.
    pub fn vouch() -> Actor {
        Actor {
            discord_id: None,
            person: None,
            name: "Vouch".to_string(),
            soc: false,
            roles: Vec::new(),
            linked: false,
        }
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

    pub(crate) fn is_or_delegates_for(&self, person: &PersonRef) -> bool {
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
    /// The directory no longer has the person asked to vouch in that place (they left, or are
    /// no longer the manager or owner asked as): the next person in the chain is asked.
    ConfirmerLeft {
        person: PersonId,
        reason: String,
    },
    /// The push that verifies a held answer was sent: what to poll, so a restart resumes it.
    PushSent {
        verification: u32,
        push: PushRecord,
    },
    /// The person answered the push (or did not, or it could not be sent).
    VerificationFinished {
        verification: u32,
        outcome: PushOutcome,
    },
}

/// A push sent to verify an answer: the provider (as the card names it) and its transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    pub provider: String,
    pub transaction: String,
    /// The number the person must pick on their phone (number matching), when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_to_pick: Option<u32>,
}

impl PushRecord {
    /// An approval whose push was never recorded as sent (the worker records it before it
    /// polls, so this is only a stand-in): named as a push, with no transaction.
    pub fn unrecorded() -> PushRecord {
        PushRecord { provider: "push".to_string(), transaction: String::new(), number_to_pick: None }
    }
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    Approved,
    Denied,
    /// The person reported the push as not theirs.
    Fraud,
    TimedOut,
    /// The provider could not be asked or did not answer as documented: never an approval.
    Failed {
        reason: String,
    },
}

/// An answer held until the person who gave it approves a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum HeldAnswer {
    Confirm {
        verdict: ConfirmVerdict,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        justification: Option<String>,
    },
    CloseAsExpected {
        justification: String,
    },
}

/// An answer awaiting verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingVerification {
    /// Unique within the case; a push's result names it.
    pub id: u32,
    pub answer: HeldAnswer,
    pub by: Actor,
    pub requested_at: Timestamp,
    /// Past this, the push counts as timed out whatever the provider says.
    pub expires_at: Timestamp,
    /// The push, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushRecord>,
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
    /// Tell one person something privately (a declaration of theirs was used).
    DirectMessage {
        discord_id: Snowflake,
        message: String,
    },
    /// Send a push to the person's phone to verify the answer they gave (see
    /// `Case::pending_verification`).
    SendPush {
        verification: u32,
        person: PersonId,
        summary: String,
    },
    /// An effect this version does not know (one written by an older Vouch, such as the retired
    /// `schedule_reminder`: deadlines live on the case). It is dropped, not carried out.
    #[serde(other)]
    Unknown,
}

/// Why the engine did not take an event. The case is left as it was; the refusal is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.reason)
    }
}

/// What [`crate::apply`] decided: the case as it became and what to do, or why not.
pub type Applied = Result<(Case, Vec<Effect>), Refusal>;

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
    /// The push that verified this answer, when it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<PushRecord>,
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
    /// The push that verified this decision, when it needed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<PushRecord>,
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
    pub facts: Arc<Facts>,
    pub opening: Arc<Opening>,
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
    /// An answer held until its giver approves a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_verification: Option<PendingVerification>,
    /// Pushes sent for this case so far (the next one's id).
    #[serde(default)]
    pub pushes_sent: u32,
    /// A push about this movement was denied or reported as fraud: closing it as expected takes
    /// two SOC members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_denied: Option<Decision>,
    /// The first of the two SOC members closing a case whose push was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_asked_by: Option<Decision>,
    /// What a vouch given in advance (a standing approval, a declaration) said when the case
    /// opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance: Option<AdvanceNote>,
}

/// A vouch given in advance that covered a case's movement, and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvanceNote {
    /// `A-12`, `D-3`.
    pub vouch: String,
    pub outcome: AdvanceOutcome,
    /// Until when the vouch that closed the case covers its movement: repeats until then join
    /// the case instead of each opening (and closing) one of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers_until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AdvanceOutcome {
    /// The case closed itself as expected.
    Vouched,
    /// A standing approval in its monitor period: it would have.
    WouldHaveVouched,
    /// It covers the movement but did not apply, for this reason.
    Withheld { reason: String },
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
pub struct AlertRecord(pub Arc<Alert>);

impl Eq for AlertRecord {}
