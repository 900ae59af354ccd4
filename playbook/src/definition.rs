//! The playbook file, compiled into typed values.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::facts::{AccountKind, Criticality};
use crate::ids::{AnswerId, PlaybookVersion, QuestionId, ScenarioId};
use crate::PlaybookError;

/// The playbook shipped with Vouch.
pub const BUILTIN_LATERAL_MOVEMENT: &str = include_str!("../playbooks/lateral-movement.toml");

/// The two questions every lateral-movement case asks; the engine writes hints for them.
pub const QUESTION_ACCOUNT_USAGE: &str = "account-usage";
pub const QUESTION_INTERACTIVE: &str = "interactive";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub version: PlaybookVersion,
    pub name: String,
    pub summary: String,
    pub context: Vec<ContextItem>,
    pub questions: Vec<Question>,
    pub programs: ProgramCatalogue,
    /// The ways one machine runs programs on another (PsExec, WMI, WinRM, DCOM, services,
    /// scheduled tasks): what each leaves in an event, so a hint can say a program did it.
    pub remote_execution: Vec<RemoteExecutionFamily>,
    pub scenarios: Vec<Scenario>,
    pub actions: Vec<Action>,
    pub confirmation: ConfirmationPolicy,
    pub timers: Timers,
    /// How answers are verified in this deployment: set by the service from `[verification]`,
    /// never read from the playbook file. `None`: answers count as clicked.
    #[serde(skip)]
    pub verifying: Option<crate::verification::Verifying>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextItem {
    pub id: String,
    pub title: String,
    pub guidance: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub id: QuestionId,
    pub title: String,
    pub answers: Vec<Answer>,
    pub prompt: Prompts,
}

impl Question {
    pub fn answer(&self, id: &AnswerId) -> Option<&Answer> {
        self.answers.iter().find(|answer| &answer.id == id)
    }

    /// The prompt differs by account kind: what is normal for a service is not for a person.
    pub fn prompt_for(&self, kind: AccountKind) -> &str {
        match kind {
            AccountKind::User => &self.prompt.user,
            AccountKind::Service => &self.prompt.service,
            AccountKind::System => &self.prompt.system,
            AccountKind::Unknown => &self.prompt.unknown,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompts {
    pub user: String,
    pub service: String,
    pub system: String,
    pub unknown: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub id: AnswerId,
    pub label: String,
    pub leans: Leaning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leaning {
    Benign,
    Suspicious,
    Neutral,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramCatalogue {
    pub remote_access_tools: Vec<String>,
    pub browsers: Vec<String>,
    pub shells: Vec<String>,
    pub script_interpreters: Vec<String>,
}

fn contains(list: &[String], name: &str) -> bool {
    list.iter().any(|entry| entry.eq_ignore_ascii_case(name))
}

impl ProgramCatalogue {
    /// Which family a program belongs to (`remote_access_tool`, `browser`, ...), if any.
    pub fn family(&self, executable: &str) -> Option<&'static str> {
        if contains(&self.remote_access_tools, executable) {
            Some("remote_access_tool")
        } else if contains(&self.browsers, executable) {
            Some("browser")
        } else if contains(&self.shells, executable) {
            Some("shell")
        } else if contains(&self.script_interpreters, executable) {
            Some("script_interpreter")
        } else {
            None
        }
    }
}

/// One way of running programs on another machine, and the traces it leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteExecutionFamily {
    pub id: String,
    pub title: String,
    /// Client programs on the source (`psexec.exe`, `wmic.exe`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Services the family installs on the target (`PSEXESVC`); a renamed client still
    /// installs its service under this name.
    #[serde(default)]
    pub services: Vec<String>,
    /// Processes on the target that run what the remote machine asked for (`wmiprvse.exe`):
    /// what they start landed through the family.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Processes that start only for a remote session (`wsmprovhost.exe`): their own start is
    /// the landing. Generic hosts (`services.exe`, `mmc.exe`) also run for local work, so only
    /// what they start counts.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// ATT&CK techniques that name the family's mechanism (`T1569.002` service execution).
    #[serde(default)]
    pub techniques: Vec<String>,
    /// A concern the card raises whenever the family is seen, when the family is a tool of
    /// attackers as much as of administrators.
    #[serde(default)]
    pub concern: Option<String>,
}

/// How a family was recognised, in words for the card.
#[derive(Debug, Clone)]
pub struct RemoteExecutionMatch<'a> {
    pub family: &'a RemoteExecutionFamily,
    pub evidence: String,
}

impl Playbook {
    /// Which remote-execution family the program (its image, the service it installs, or the
    /// process that started it) or the techniques belong to, with the evidence.
    pub fn remote_execution_family(
        &self,
        program: Option<&crate::model::Program>,
        techniques: &[crate::model::TechniqueId],
    ) -> Option<RemoteExecutionMatch<'_>> {
        let found = |evidence: String, family| Some(RemoteExecutionMatch { family, evidence });
        for family in &self.remote_execution {
            let Some(program) = program else { break };
            let label = program.name.clone().unwrap_or_else(|| "The program".to_string());
            if let Some(image) = program.key() {
                if contains(&family.tools, &image) {
                    return found(
                        format!("{label} is a {} client: it runs commands on another machine.", family.title),
                        family,
                    );
                }
                if contains(&family.services, &image) {
                    return found(
                        format!("{label} is the service the {} installs to run commands.", family.title),
                        family,
                    );
                }
                if contains(&family.sessions, &image) {
                    return found(format!("{label} starts only for a remote session ({}).", family.title), family);
                }
            }
            // A service install names its binary on the command line (`%SystemRoot%\PSEXESVC.exe`).
            let binary = program
                .command_line
                .as_deref()
                .and_then(|line| line.split_whitespace().next())
                .map(|first| crate::model::executable_name(first.trim_matches('"')).to_ascii_lowercase());
            if let Some(binary) = binary.filter(|binary| contains(&family.services, binary.trim_end_matches(".exe"))) {
                return found(format!("{binary} is the service binary the {} installs.", family.title), family);
            }
            if let Some(parent) = program.parent_key() {
                if contains(&family.hosts, &parent) {
                    return found(
                        format!(
                            "{label} was started by {}, which runs what another machine asked for ({}).",
                            crate::model::executable_name(&parent),
                            family.title
                        ),
                        family,
                    );
                }
            }
        }
        self.remote_execution.iter().find_map(|family| {
            let technique = techniques.iter().find(|id| contains(&family.techniques, id.as_str()))?;
            found(format!("The event records {technique}: {}.", family.title), family)
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub id: ScenarioId,
    pub title: String,
    pub description: String,
    pub conditions: Vec<Condition>,
}

/// One requirement of a scenario: a test of one fact, or a group of which one must hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    AnyOf {
        any: Vec<FactTest>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        when_not_met: Option<String>,
    },
    Fact(FactTest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactTest {
    pub fact: FactName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<u64>,
    /// Shown as evidence but not required for the scenario to match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supporting: bool,
    /// Said on the card when this test fails: a failed requirement can itself be a warning sign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_not_met: Option<String>,
}

/// The facts scenario conditions can test. Each is computed by the engine from the alert, the
/// directory and the history; any of them may be unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FactName {
    #[serde(rename = "protocol")]
    Protocol,
    #[serde(rename = "connection")]
    Connection,
    #[serde(rename = "account.kind")]
    AccountKind,
    #[serde(rename = "account.roles")]
    AccountRoles,
    #[serde(rename = "source.kind")]
    SourceKind,
    #[serde(rename = "target.kind")]
    TargetKind,
    #[serde(rename = "source.is_account_holders_workstation")]
    SourceIsAccountHoldersWorkstation,
    #[serde(rename = "target.is_account_holders_workstation")]
    TargetIsAccountHoldersWorkstation,
    #[serde(rename = "source.runs_account_as_service")]
    SourceRunsAccountAsService,
    #[serde(rename = "share.is_administrative")]
    ShareIsAdministrative,
    #[serde(rename = "share.owned_by_account_holder")]
    ShareOwnedByAccountHolder,
    #[serde(rename = "program.family")]
    ProgramFamily,
    #[serde(rename = "history.source_distinct_targets")]
    HistorySourceDistinctTargets,
}

impl FactName {
    /// How the fact reads on a card.
    pub fn label(self) -> &'static str {
        match self {
            FactName::Protocol => "protocol",
            FactName::Connection => "connection type",
            FactName::AccountKind => "account kind",
            FactName::AccountRoles => "roles of the account's holder",
            FactName::SourceKind => "source system kind",
            FactName::TargetKind => "target system kind",
            FactName::SourceIsAccountHoldersWorkstation => "source is the account holder's own workstation",
            FactName::TargetIsAccountHoldersWorkstation => "target is the account holder's own workstation",
            FactName::SourceRunsAccountAsService => "account is the source server's own service account",
            FactName::ShareIsAdministrative => "share is a built-in administrative share",
            FactName::ShareOwnedByAccountHolder => "share belongs to the account holder",
            FactName::ProgramFamily => "program family",
            FactName::HistorySourceDistinctTargets => "distinct systems this source has reached",
        }
    }

    fn kind(self) -> FactValueKind {
        match self {
            FactName::Protocol
            | FactName::Connection
            | FactName::AccountKind
            | FactName::AccountRoles
            | FactName::SourceKind
            | FactName::TargetKind
            | FactName::ProgramFamily => FactValueKind::Words,
            FactName::HistorySourceDistinctTargets => FactValueKind::Number,
            _ => FactValueKind::Flag,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FactValueKind {
    Words,
    Flag,
    Number,
}

/// The actions a case card offers; the playbook's `[[actions]]` give them their words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseAction {
    AskOwner,
    Escalate,
    CloseExpected,
}

impl CaseAction {
    pub const ALL: [CaseAction; 3] = [CaseAction::AskOwner, CaseAction::Escalate, CaseAction::CloseExpected];

    pub fn id(self) -> &'static str {
        match self {
            CaseAction::AskOwner => "ask-owner",
            CaseAction::Escalate => "escalate",
            CaseAction::CloseExpected => "close-expected",
        }
    }

    /// The label when the playbook gives none.
    pub fn default_label(self) -> &'static str {
        match self {
            CaseAction::AskOwner => "Ask owner",
            CaseAction::Escalate => "Escalate",
            CaseAction::CloseExpected => "Close as expected",
        }
    }
}

/// The parts of the movement the card can put in front of the analyst; the playbook's
/// `[[context]]` chooses which, in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSection {
    Systems,
    Accounts,
    Connection,
    Program,
}

impl ContextSection {
    pub fn from_id(id: &str) -> Option<ContextSection> {
        match id {
            "systems" => Some(ContextSection::Systems),
            "accounts" => Some(ContextSection::Accounts),
            "connection" => Some(ContextSection::Connection),
            "program" => Some(ContextSection::Program),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub id: String,
    pub label: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmerRole {
    /// The owner of the target system.
    TargetOwner,
    /// The manager of the person behind the initiating account.
    Manager,
    /// The owner of a service account.
    AccountOwner,
}

impl ConfirmerRole {
    pub fn label(self) -> &'static str {
        match self {
            ConfirmerRole::TargetOwner => "owner of the target system",
            ConfirmerRole::Manager => "manager of the account's holder",
            ConfirmerRole::AccountOwner => "owner of the service account",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationPolicy {
    pub chain: Vec<ConfirmerRole>,
    pub ask_on_open: bool,
    pub close_on_expected_without_concerns: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timers {
    pub remind_after_minutes: PerCriticality,
    pub reassign_after_reminders: PerCriticality,
    /// How long on-call has to acknowledge a page before it is repeated.
    pub page_ack_minutes: u32,
    /// Repeats of an unacknowledged page before it goes to the secondary.
    pub page_repings: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerCriticality {
    pub low: u32,
    pub medium: u32,
    pub high: u32,
    pub critical: u32,
}

impl PerCriticality {
    pub fn get(&self, criticality: Criticality) -> u32 {
        match criticality {
            Criticality::Low => self.low,
            Criticality::Medium => self.medium,
            Criticality::High => self.high,
            Criticality::Critical => self.critical,
        }
    }
}

impl Playbook {
    /// How long a push waits for its person before it counts as timed out.
    pub fn push_lifetime_millis(&self) -> i64 {
        self.verifying.as_ref().map_or(60_000, |verifying| verifying.push_lifetime_millis)
    }

    /// The playbook compiled into the binary.
    pub fn builtin() -> Playbook {
        // The file is part of the source tree and checked by tests; failing here is a build bug.
        Playbook::parse(BUILTIN_LATERAL_MOVEMENT).expect("the built-in playbook is valid")
    }

    /// Parses and checks a playbook file, reporting every problem found.
    pub fn parse(text: &str) -> Result<Playbook, PlaybookError> {
        let playbook: Playbook =
            toml::from_str(text).map_err(|error| PlaybookError::Invalid(vec![error.to_string()]))?;
        let problems = playbook.problems();
        if problems.is_empty() {
            Ok(playbook)
        } else {
            Err(PlaybookError::Invalid(problems))
        }
    }

    pub fn question(&self, id: &QuestionId) -> Option<&Question> {
        self.questions.iter().find(|question| &question.id == id)
    }

    /// The playbook's words for one of the case's actions.
    pub fn action(&self, action: CaseAction) -> Option<&Action> {
        self.actions.iter().find(|candidate| candidate.id == action.id())
    }

    /// The card's context sections, in the playbook's order.
    pub fn context_sections(&self) -> impl Iterator<Item = (ContextSection, &ContextItem)> {
        self.context.iter().filter_map(|item| ContextSection::from_id(&item.id).map(|section| (section, item)))
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for item in &self.context {
            if ContextSection::from_id(&item.id).is_none() {
                problems.push(format!(
                    "context.{}: not a section the card can show (systems, accounts, connection, program)",
                    item.id
                ));
            }
        }
        for action in &self.actions {
            if CaseAction::ALL.iter().all(|known| known.id() != action.id) {
                problems.push(format!(
                    "actions.{}: not an action Vouch offers (ask-owner, escalate, close-expected)",
                    action.id
                ));
            }
        }
        let mut family_ids = BTreeSet::new();
        for family in &self.remote_execution {
            if !family_ids.insert(&family.id) {
                problems.push(format!("remote_execution: `{}` appears twice", family.id));
            }
            if family.tools.is_empty()
                && family.services.is_empty()
                && family.hosts.is_empty()
                && family.techniques.is_empty()
            {
                problems.push(format!("remote_execution.{}: names no tool, service, host or technique", family.id));
            }
            for technique in &family.techniques {
                if crate::model::TechniqueId::parse(technique).is_none() {
                    problems
                        .push(format!("remote_execution.{}: `{technique}` is not an ATT&CK technique id", family.id));
                }
            }
        }
        for required in [QUESTION_ACCOUNT_USAGE, QUESTION_INTERACTIVE] {
            if !self.questions.iter().any(|question| question.id.as_str() == required) {
                problems.push(format!("questions: the `{required}` question is missing"));
            }
        }
        let mut question_ids = BTreeSet::new();
        for question in &self.questions {
            if !question_ids.insert(&question.id) {
                problems.push(format!("questions: `{}` appears twice", question.id));
            }
            if question.answers.is_empty() || question.answers.len() > 5 {
                problems.push(format!("questions.{}: needs 1 to 5 answers (one button row)", question.id));
            }
            // Ids travel in Discord button ids (100 characters at most), so they stay short.
            if question.id.as_str().len() > 32 {
                problems.push(format!("questions.{}: the id is longer than 32 characters", question.id));
            }
            let mut answer_ids = BTreeSet::new();
            for answer in &question.answers {
                if answer.id.as_str().len() > 32 {
                    problems.push(format!(
                        "questions.{}: answer id `{}` is longer than 32 characters",
                        question.id, answer.id
                    ));
                }
                if !answer_ids.insert(&answer.id) {
                    problems.push(format!("questions.{}: answer `{}` appears twice", question.id, answer.id));
                }
            }
        }
        let mut scenario_ids = BTreeSet::new();
        for scenario in &self.scenarios {
            if !scenario_ids.insert(&scenario.id) {
                problems.push(format!("scenarios: `{}` appears twice", scenario.id));
            }
            if scenario.conditions.is_empty() {
                problems.push(format!("scenarios.{}: has no conditions and would match everything", scenario.id));
            }
            for condition in &scenario.conditions {
                let tests: Vec<&FactTest> = match condition {
                    Condition::Fact(test) => vec![test],
                    Condition::AnyOf { any, .. } => any.iter().collect(),
                };
                for test in tests {
                    if let Some(problem) = test.problem() {
                        problems.push(format!("scenarios.{}: {problem}", scenario.id));
                    }
                }
            }
        }
        if self.confirmation.chain.is_empty() {
            problems.push("confirmation.chain: name at least one confirmer".to_string());
        }
        problems
    }
}

impl FactTest {
    fn problem(&self) -> Option<String> {
        let given = [self.any_of.is_some(), self.equals.is_some(), self.at_least.is_some()]
            .iter()
            .filter(|given| **given)
            .count();
        if given != 1 {
            return Some(format!("`{}`: give exactly one of any_of, equals, at_least", self.fact.label()));
        }
        let fits = match self.fact.kind() {
            FactValueKind::Words => self.any_of.is_some(),
            FactValueKind::Flag => self.equals.is_some(),
            FactValueKind::Number => self.at_least.is_some(),
        };
        (!fits).then(|| format!("`{}` cannot be tested that way", self.fact.label()))
    }
}
