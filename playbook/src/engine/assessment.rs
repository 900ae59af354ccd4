//! Opening a case: what the alert, the directory's facts and the movement's history say about
//! the known harmless scenarios, the playbook's questions and who should vouch.

use std::fmt::Write;

use super::vocabulary::*;
use crate::definition::{
    Condition, ConfirmerRole, FactName, FactTest, Leaning, Playbook, RemoteExecutionMatch, QUESTION_ACCOUNT_USAGE,
    QUESTION_INTERACTIVE,
};
use crate::facts::{AccountFacts, AccountKind, AssetFacts, Criticality, Facts, History};
use crate::ids::{AnswerId, QuestionId};
use crate::model::{short_hostname, Alert, ConnectionKind, Outcome, Protocol, System};
use crate::time::Timestamp;

/// Builds the opening assessment of a new case.
pub fn open_case(playbook: &Playbook, alert: &Alert, facts: &Facts, history: &History, _now: Timestamp) -> Opening {
    let subject = Subject { playbook, alert, facts, history };
    // Each condition is evaluated once: the verdicts, the warnings and the hints all read these.
    let evaluated: Vec<Vec<ConditionOutcome>> = playbook
        .scenarios
        .iter()
        .map(|scenario| scenario.conditions.iter().map(|condition| subject.evaluate_condition(condition)).collect())
        .collect();

    let mut concerns = subject.concerns();
    // A failed requirement that the playbook flags is a concern even though the scenario simply
    // does not match (a helpdesk account arriving from someone else's machine).
    for (scenario, outcomes) in playbook.scenarios.iter().zip(&evaluated) {
        for (condition, outcome) in scenario.conditions.iter().zip(outcomes) {
            if let Some(warning) = warning_for(&scenario.conditions, outcomes, condition, outcome) {
                if !concerns.contains(&warning) {
                    concerns.push(warning);
                }
            }
        }
    }

    let scenarios = playbook
        .scenarios
        .iter()
        .zip(evaluated)
        .map(|(scenario, outcomes)| {
            let verdict = verdict(&outcomes);
            ScenarioAssessment {
                id: scenario.id.clone(),
                title: scenario.title.clone(),
                verdict,
                evidence: outcomes.into_iter().flat_map(|outcome| outcome.evidence).collect(),
            }
        })
        .collect::<Vec<_>>();
    let matched = scenarios.iter().find(|scenario| scenario.verdict == ScenarioVerdict::Matched);

    Opening {
        playbook_version: playbook.version,
        account_kind: subject.account_kind(),
        hints: vec![
            subject.account_usage_hint(matched.map(|scenario| scenario.title.as_str())),
            subject.interactive_hint(),
        ],
        scenarios,
        concerns,
        confirmation_chain: subject.confirmation_chain(),
        history: history.clone(),
        criticality: subject.criticality(),
    }
}

/// What one of a scenario's conditions came to.
struct ConditionOutcome {
    truth: Truth,
    evidence: Vec<Evidence>,
    /// It only supports the scenario: its failure does not rule the scenario out.
    supporting: bool,
}

/// A scenario matches when every condition it requires holds, and is ruled out when one fails.
fn verdict(outcomes: &[ConditionOutcome]) -> ScenarioVerdict {
    let mut required = outcomes.iter().filter(|outcome| !outcome.supporting).map(|outcome| outcome.truth);
    if required.clone().any(|truth| truth == Truth::No) {
        ScenarioVerdict::NotMatched
    } else if required.any(|truth| truth == Truth::Unknown) {
        ScenarioVerdict::Undetermined
    } else {
        ScenarioVerdict::Matched
    }
}

/// The warning a failed condition carries, when its scenario is otherwise in play: every
/// condition of the scenario that carries no warning of its own holds, so the failure of this
/// one is what makes the movement odd.
fn warning_for(
    conditions: &[Condition],
    outcomes: &[ConditionOutcome],
    condition: &Condition,
    outcome: &ConditionOutcome,
) -> Option<String> {
    if outcome.truth != Truth::No {
        return None;
    }
    let warning = condition_warning(condition)?;
    let anchors_hold = conditions
        .iter()
        .zip(outcomes)
        .filter(|(other, other_outcome)| condition_warning(other).is_none() && !other_outcome.supporting)
        .all(|(_, other_outcome)| other_outcome.truth == Truth::Yes);
    anchors_hold.then_some(warning)
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
    fn describe_into(&self, text: &mut String) {
        match self {
            FactValue::Words(words) if words.is_empty() => text.push_str("none"),
            FactValue::Words(words) => push_joined(text, words),
            FactValue::Flag(true) => text.push_str("yes"),
            FactValue::Flag(false) => text.push_str("no"),
            FactValue::Number(number) => {
                let _ = write!(text, "{number}");
            }
            FactValue::Unknown(why) => {
                let _ = write!(text, "unknown ({why})");
            }
        }
    }
}

/// Appends `words` separated by commas.
fn push_joined(text: &mut String, words: &[impl AsRef<str>]) {
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        text.push_str(word.as_ref());
    }
}

/// From this many earlier failed attempts of one movement, the failures are a concern of their own.
const REPEATED_FAILURES: u64 = 3;

/// The concern every alert on a critical target carries. It says what the target is, not what
/// the alert did: a vouch given in advance for that target was made knowing it (and is withheld
/// if the target became more critical since), so this one concern does not withhold it.
pub const CRITICAL_TARGET: &str = "The target is a critical system.";

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

    /// A system's short hostname: the alert's, or the directory's when the alert named the
    /// system only by an IP the directory knows.
    fn hostname_of(&self, system: &System, asset: Option<&AssetFacts>) -> Option<String> {
        system.short_hostname().or_else(|| asset.map(|asset| short_hostname(&asset.hostname)))
    }

    /// The second account's kind, when the movement acted as one.
    fn second_account_kind(&self) -> Option<AccountKind> {
        let second = self.alert.acting_as.as_ref()?;
        if self.alert.account.as_ref().is_some_and(|first| first.key() == second.key()) {
            return None;
        }
        Some(match &self.facts.acting_as {
            Some(facts) => facts.kind,
            None if second.looks_like_system_account() => AccountKind::System,
            None => AccountKind::Unknown,
        })
    }

    /// The remote-execution family the alert's program or techniques point at, if any.
    fn remote_execution(&self) -> Option<RemoteExecutionMatch<'_>> {
        self.playbook.remote_execution_family(self.alert.program.as_ref(), &self.alert.mitre)
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
                self.holder_workstation_flag(self.hostname_of(&self.alert.source, self.facts.source.as_ref()))
            }
            FactName::TargetIsAccountHoldersWorkstation => {
                self.holder_workstation_flag(self.hostname_of(&self.alert.target, self.facts.target.as_ref()))
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
        // Written into one string: every alert's assessment makes a line like this for each test.
        let mut detail = String::with_capacity(96);
        detail.push_str(test.fact.label());
        detail.push_str(": ");
        value.describe_into(&mut detail);
        detail.push_str(" (wanted ");
        match test {
            FactTest { any_of: Some(wanted), .. } => {
                detail.push_str("one of ");
                push_joined(&mut detail, wanted);
            }
            FactTest { equals: Some(true), .. } => detail.push_str("yes"),
            FactTest { equals: Some(false), .. } => detail.push_str("no"),
            FactTest { at_least: Some(minimum), .. } => {
                let _ = write!(detail, "at least {minimum}");
            }
            _ => detail.push('?'),
        }
        detail.push(')');
        (truth, Evidence { fact: fact_id(test.fact), outcome: truth, detail, supporting: test.supporting })
    }

    /// Evaluates one condition: its truth, its evidence lines, and whether it only supports.
    fn evaluate_condition(&self, condition: &Condition) -> ConditionOutcome {
        match condition {
            Condition::Fact(test) => {
                let (truth, evidence) = self.test(test);
                ConditionOutcome { truth, evidence: vec![evidence], supporting: test.supporting }
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
                let supporting = any.iter().all(|test| test.supporting) && !any.is_empty();
                ConditionOutcome {
                    truth,
                    evidence: results.into_iter().map(|(_, evidence)| evidence).collect(),
                    supporting,
                }
            }
        }
    }

    fn program_family(&self) -> Option<&'static str> {
        let name = self.alert.program.as_ref()?.key()?;
        self.playbook.programs.family(&name)
    }

    fn concerns(&self) -> Vec<String> {
        let mut concerns = Vec::new();
        let family = self.program_family();
        let interactive_protocol = matches!(self.alert.protocol, Protocol::Rdp | Protocol::Vnc);
        // Account concerns apply to the account the movement acted as too: a person's account
        // switching to a service account is still a service account at the keyboard.
        let mut accounts = vec![(self.account_kind(), "A service account")];
        if let Some(second) = self.second_account_kind() {
            accounts.push((second, "The second account, a service account,"));
        }
        for (kind, who) in accounts {
            if kind == AccountKind::Service && (family == Some("remote_access_tool") || interactive_protocol) {
                concerns.push(format!(
                    "{who} used an interactive remote-access tool or protocol; services have no need to."
                ));
            }
            if kind == AccountKind::Service && self.alert.logon_type == Some(10) {
                concerns.push(format!("{who} opened a remote interactive (type 10) logon."));
            }
        }
        if self.alert.outcome == Outcome::Failure {
            concerns.push("The attempt failed: the credentials or the ticket were refused.".to_string());
        }
        if self.history.failures >= REPEATED_FAILURES {
            concerns.push(format!(
                "{} earlier attempts of this movement failed: repeated failures from one source point at password guessing or a tool trying stolen credentials.",
                self.history.failures
            ));
        }
        if let Some(concern) = self.remote_execution().and_then(|found| found.family.concern.clone()) {
            concerns.push(concern);
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
        if let Some(since) = self.facts.stale_since {
            concerns.push(format!(
                "The directory facts here are from a sync at {}: a source has not synced since, so owners and managers may have changed.",
                since.to_rfc3339()
            ));
        }
        if self.facts.target.as_ref().is_some_and(|target| target.criticality == Criticality::Critical) {
            concerns.push(CRITICAL_TARGET.to_string());
        }
        concerns
    }

    /// `matched`: the title of the known scenario that fits, if one does.
    fn account_usage_hint(&self, matched: Option<&str>) -> Hint {
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
        let second_kind = self.second_account_kind();
        if let (Some(second_kind), Some(second)) = (second_kind, &self.alert.acting_as) {
            let known = match second_kind {
                AccountKind::Unknown => "which the directory does not know".to_string(),
                kind => format!("a {} account", kind.id()),
            };
            evidence.push(format!("It acted as a second account, {second}, {known}."));
        }
        let family = self.program_family();
        let service_at_the_keyboard = [Some(kind), second_kind].contains(&Some(AccountKind::Service))
            && (family == Some("remote_access_tool") || self.alert.protocol == Protocol::Rdp);
        if service_at_the_keyboard {
            evidence.push("A service account should not be driving a remote-access tool.".to_string());
            suggested = self.answer_leaning(QUESTION_ACCOUNT_USAGE, Leaning::Suspicious);
        }
        if self.alert.outcome == Outcome::Failure {
            evidence.push(
                "The attempt failed, so nothing was reached; who tried matters more than the scenario.".to_string(),
            );
        }
        if let Some(matched) = matched {
            evidence.push(format!("The known scenario \"{matched}\" fits."));
            // A failed attempt is never called normal use.
            if self.alert.outcome != Outcome::Failure {
                suggested = suggested.or_else(|| self.answer_leaning(QUESTION_ACCOUNT_USAGE, Leaning::Benign));
            }
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
        // What a remote-execution family left outranks a network logon's ambiguity, but not a
        // remote interactive session.
        if let Some(found) = self.remote_execution().filter(|_| suggested != Some("interactive")) {
            evidence.insert(0, found.evidence);
            suggested = Some("programmatic");
        }
        if let Some(program) = &self.alert.program {
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
