//! Vouches given in advance: a **standing approval** ("expect this movement again for N days",
//! from a case closed as expected) and a **declaration** ("I will connect from A to B as X between
//! T1 and T2, because …"). Both are scoped to one exact movement, verified when made, and
//! expire; what one does to a new alert is decided here.
//!
//! A vouch given in advance never reaches wider than the movement it names, and never applies
//! when the alert itself gives a reason to look: the engine raised a concern on it, the target is
//! now more critical than when the vouch was made, or the person who vouched is no longer in the
//! directory. A standing approval on a critical system is in force only once a second SOC
//! member agrees to it.

use serde::{Deserialize, Serialize};

use crate::definition::Playbook;
use crate::engine::{Actor, AdvanceOutcome, Case, CaseState, Decision, PushRecord};
use crate::facts::{Criticality, Facts};
use crate::ids::PersonId;
use crate::model::{executable_name, Alert, ConnectionKind, Outcome, Protocol};
use crate::time::Timestamp;

/// The longest a standing approval may last.
pub const MOST_APPROVAL_DAYS: u32 = 90;
/// The longest window a declaration may cover.
pub const MOST_DECLARATION_HOURS: u32 = 24;
const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// Exactly one movement: who, from where, to where, how, and with what kind of program. Two
/// alerts are the same movement only when every part is equal; a part the alert does not name
/// cannot be vouched for in advance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MovementScope {
    /// The initiating account's key (lower-cased name, without domain).
    pub account: String,
    /// Short, lower-cased hostnames.
    pub source: String,
    pub target: String,
    pub connection: ConnectionKind,
    pub protocol: Protocol,
    /// The program's family (`remote_access_tool`, `shell`, ...), its executable name when it
    /// belongs to none, or `None` when the alert names no program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

impl MovementScope {
    /// The scope of a successful movement whose account and both hosts are named; `None`
    /// otherwise (a failed logon, or a movement with a part unknown, is never vouched for in
    /// advance).
    pub fn of(alert: &Alert, playbook: &Playbook) -> Option<MovementScope> {
        if alert.outcome == Outcome::Failure {
            return None;
        }
        let program = alert.program.as_ref().and_then(|program| {
            let executable = program.name.as_deref().or(program.path.as_deref().map(executable_name))?;
            let executable = executable.to_ascii_lowercase();
            Some(playbook.programs.family(&executable).map_or(executable, str::to_string))
        });
        Some(MovementScope {
            account: alert.initiating_account()?.key(),
            source: alert.source.short_hostname()?,
            target: alert.target.short_hostname()?,
            connection: alert.connection,
            protocol: alert.protocol,
            program,
        })
    }

    /// Who moved between which hosts: what every vouch given in advance names, and what they
    /// are looked up by.
    pub fn hosts(&self) -> HostsScope {
        HostsScope { account: self.account.clone(), source: self.source.clone(), target: self.target.clone() }
    }
}

/// An account moving from one host to another, however it connects: what a declaration names
/// ("I will connect from A to B as X").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostsScope {
    pub account: String,
    pub source: String,
    pub target: String,
}

impl HostsScope {
    /// A stable text form, for an index of vouches by movement.
    pub fn encode(&self) -> String {
        [self.account.as_str(), &self.source, &self.target]
            .iter()
            .map(|part| part.replace('\u{1f}', " "))
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }
}

/// What a vouch given in advance covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum VouchScope {
    /// Exactly one movement (a standing approval: never wider than the case it came from).
    Exact(MovementScope),
    /// An account between two hosts, however it connects (a declaration, for a day at most).
    Hosts(HostsScope),
}

impl VouchScope {
    pub fn covers(&self, movement: &MovementScope) -> bool {
        match self {
            VouchScope::Exact(exact) => exact == movement,
            VouchScope::Hosts(hosts) => *hosts == movement.hosts(),
        }
    }

    pub fn hosts(&self) -> HostsScope {
        match self {
            VouchScope::Exact(exact) => exact.hosts(),
            VouchScope::Hosts(hosts) => hosts.clone(),
        }
    }
}

/// What kind of vouch, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdvanceKind {
    /// From a case closed as expected; until `monitor_until` it only marks matching cases.
    StandingApproval { from_case: crate::ids::CaseId, monitor_until: Timestamp },
    /// Declared by the person who will move, with why.
    Declaration { reason: String },
}

/// A vouch given in advance for one movement, over a window of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvanceVouch {
    /// `A-12` for a standing approval, `D-3` for a declaration.
    pub id: String,
    pub kind: AdvanceKind,
    pub scope: VouchScope,
    /// Who vouches: the person whose push verified it.
    pub by: Actor,
    pub verified: PushRecord,
    /// A second SOC member, when the target was critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconded_by: Option<Decision>,
    /// The target's criticality when the vouch was made (`None`: the directory did not know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_criticality: Option<Criticality>,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Decision>,
}

impl AdvanceVouch {
    /// Whether this is a standing approval on a critical system that no second SOC member has
    /// agreed to yet: until one does, it is not in force.
    pub fn awaits_second(&self) -> bool {
        matches!(self.kind, AdvanceKind::StandingApproval { .. })
            && self.target_criticality == Some(Criticality::Critical)
            && self.seconded_by.is_none()
    }

    /// Neither revoked nor over (it may not have started yet, or await a second).
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.revoked.is_none() && now < self.valid_until
    }

    /// "standing approval" or "declaration", for sentences.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            AdvanceKind::StandingApproval { .. } => "standing approval",
            AdvanceKind::Declaration { .. } => "declaration",
        }
    }
}

/// A vouch in advance asked for from a chat account (a declaration, or a standing approval
/// proposed from a case), waiting on the asker's push. One per chat account at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAdvance {
    pub discord_id: crate::ids::Snowflake,
    pub kind: AdvanceKind,
    pub scope: VouchScope,
    pub by: Actor,
    pub valid_from: Timestamp,
    pub valid_until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_criticality: Option<Criticality>,
    pub requested_at: Timestamp,
    /// Past this, the push counts as timed out.
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushRecord>,
}

impl PendingAdvance {
    /// The vouch, once the push that verifies it was approved.
    pub fn made(self, id: String, verified: PushRecord) -> AdvanceVouch {
        AdvanceVouch {
            id,
            kind: self.kind,
            scope: self.scope,
            by: self.by,
            verified,
            seconded_by: None,
            target_criticality: self.target_criticality,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
            revoked: None,
        }
    }

    pub fn is_declaration(&self) -> bool {
        matches!(self.kind, AdvanceKind::Declaration { .. })
    }
}

/// What a vouch given in advance does to a new alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applicability {
    /// Not this movement, or not now: nothing to say.
    NotThisMovement,
    /// The movement matches, but the vouch does not apply, and the case says why.
    Withheld { reason: String },
    /// A standing approval still in its monitor period: the case is marked, not closed.
    WouldVouch,
    /// The vouch applies: the case closes itself as expected, citing it.
    Vouches,
}

/// Whether a vouch given in advance covers a new alert of `scope`, opened with `concerns`, on a
/// target the directory now gives `criticality`, with `vouching_person_in_directory` saying the
/// person who vouched is still there.
pub fn applicability(
    vouch: &AdvanceVouch,
    scope: &MovementScope,
    facts: &Facts,
    concerns: &[String],
    vouching_person_in_directory: bool,
    now: Timestamp,
) -> Applicability {
    if !vouch.scope.covers(scope) || vouch.revoked.is_some() || now < vouch.valid_from || now >= vouch.valid_until {
        return Applicability::NotThisMovement;
    }
    let withheld = |reason: String| Applicability::Withheld { reason };
    if vouch.awaits_second() {
        return withheld(format!("{} is on a critical system and awaits a second SOC member", vouch.id));
    }
    if concerns.iter().any(|concern| concern != crate::engine::assessment::CRITICAL_TARGET) {
        return withheld(format!("the engine raised concerns on this alert, so {} does not apply", vouch.id));
    }
    let now_criticality = facts.target.as_ref().map(|target| target.criticality);
    let rose = match (vouch.target_criticality, now_criticality) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(then), Some(now)) => now > then,
    };
    if rose {
        return withheld(format!("the target is more critical than when {} was made, so it does not apply", vouch.id));
    }
    if !vouching_person_in_directory {
        return withheld(format!(
            "{} who vouched in {} has left the directory, so it does not apply",
            vouch.by.name, vouch.id
        ));
    }
    match &vouch.kind {
        AdvanceKind::StandingApproval { monitor_until, .. } if now < *monitor_until => Applicability::WouldVouch,
        _ => Applicability::Vouches,
    }
}

/// Of the vouches judged for one new case, the one that says the most: one that applies, else
/// one in its monitor period, else one withheld (the case says why).
pub fn strongest(
    judged: impl IntoIterator<Item = (AdvanceVouch, Applicability)>,
) -> Option<(AdvanceVouch, Applicability)> {
    let weight = |applicability: &Applicability| match applicability {
        Applicability::NotThisMovement => 0,
        Applicability::Withheld { .. } => 1,
        Applicability::WouldVouch => 2,
        Applicability::Vouches => 3,
    };
    judged
        .into_iter()
        .filter(|(_, applicability)| weight(applicability) > 0)
        .max_by_key(|(_, applicability)| weight(applicability))
}

/// Why a proposed vouch cannot be made, or its window.
pub fn approval_window(
    days: u32,
    now: Timestamp,
    monitor_days: u32,
) -> Result<(Timestamp, Timestamp, Timestamp), String> {
    if days == 0 || days > MOST_APPROVAL_DAYS {
        return Err(format!("a standing approval lasts 1 to {MOST_APPROVAL_DAYS} days"));
    }
    let monitor_days = monitor_days.min(days);
    Ok((now, now.plus_millis(i64::from(monitor_days) * DAY_MILLIS), now.plus_millis(i64::from(days) * DAY_MILLIS)))
}

/// A declaration's window, checked: it ends after it starts, lasts at most a day, and has not
/// already ended.
pub fn declaration_window(from: Timestamp, until: Timestamp, now: Timestamp) -> Result<(), String> {
    if until <= from {
        return Err("the window must end after it starts".to_string());
    }
    if until.unix_millis() - from.unix_millis() > i64::from(MOST_DECLARATION_HOURS) * 60 * 60 * 1000 {
        return Err(format!("a declared window lasts at most {MOST_DECLARATION_HOURS} hours"));
    }
    if until <= now {
        return Err("the window has already ended".to_string());
    }
    Ok(())
}

/// Who may propose a standing approval from a case closed as expected: the confirmer who vouched
/// for it, or the SOC.
pub fn may_propose_approval(by: &Actor, vouched: Option<&Actor>) -> bool {
    by.soc || vouched.is_some_and(|confirmer| confirmer.same_person(by))
}

/// Who may declare a movement in advance: the person whose account will move, and nobody else
/// (a declaration says "I will").
pub fn may_declare(by: &Actor, account_holder: Option<&PersonId>) -> bool {
    by.person.is_some() && by.person.as_ref() == account_holder
}

/// Why a case cannot be the start of a standing approval, if it cannot: it must have been closed
/// as expected by a person (not by another vouch in advance), name its whole movement, and a push
/// provider must be there to verify the proposal.
fn approval_blocker(case: &Case, playbook: &Playbook) -> Option<String> {
    if playbook.verifying.is_none() {
        return Some("standing approvals are verified with a push, and no push provider is configured".to_string());
    }
    if case.state != CaseState::ClosedExpected {
        return Some("only a case closed as expected can be expected again".to_string());
    }
    if let Some(note) = case.advance.as_ref().filter(|note| note.outcome == AdvanceOutcome::Vouched) {
        return Some(format!(
            "{} was closed by {}; a standing approval starts from a case a person vouched for",
            case.id, note.vouch
        ));
    }
    if MovementScope::of(case.alert(), playbook).is_none() {
        return Some(
            "this movement does not name its account and both hosts, or it failed, so it cannot be approved in advance"
                .to_string(),
        );
    }
    None
}

/// Whether a case's card offers "Expect this again" (who may use it is decided on the click).
pub fn approval_offered(case: &Case, playbook: &Playbook) -> bool {
    approval_blocker(case, playbook).is_none()
}

/// Why `by` may not propose a standing approval from this case, if they may not (asked before
/// the form that says for how long is shown).
pub fn proposal_refusal(case: &Case, playbook: &Playbook, by: &Actor) -> Option<String> {
    if let Some(reason) = approval_blocker(case, playbook) {
        return Some(reason);
    }
    if by.discord_id.is_none() || by.person.is_none() {
        return Some(
            "only a person in the directory can propose one: the push that verifies it goes to them".to_string(),
        );
    }
    if !may_propose_approval(by, case.resolution.as_ref().map(|decision| &decision.by)) {
        return Some(
            "only the person who vouched for this case, or the SOC, may propose expecting it again".to_string(),
        );
    }
    None
}

/// The standing approval `by` proposes from a case closed as expected, lasting `days` days (its
/// first days, as the deployment sets, a monitor period), waiting on `by`'s push; or why it
/// cannot be. It names exactly the case's movement and nothing wider.
pub fn propose_approval(
    case: &Case,
    playbook: &Playbook,
    by: &Actor,
    days: u32,
    now: Timestamp,
) -> Result<PendingAdvance, String> {
    if let Some(reason) = proposal_refusal(case, playbook, by) {
        return Err(reason);
    }
    let discord_id = by.discord_id.ok_or_else(|| "this chat account has no id".to_string())?;
    let scope = MovementScope::of(case.alert(), playbook)
        .ok_or_else(|| "this movement cannot be approved in advance".to_string())?;
    let verifying = playbook.verifying.as_ref().ok_or_else(|| "no push provider is configured".to_string())?;
    let (valid_from, monitor_until, valid_until) = approval_window(days, now, verifying.approval_monitor_days)?;
    Ok(PendingAdvance {
        discord_id,
        kind: AdvanceKind::StandingApproval { from_case: case.id, monitor_until },
        scope: VouchScope::Exact(scope),
        by: by.clone(),
        valid_from,
        valid_until,
        target_criticality: case.facts.target.as_ref().map(|target| target.criticality),
        requested_at: now,
        expires_at: now.plus_millis(verifying.push_lifetime_millis),
        push: None,
    })
}

/// A second SOC member agreeing to a standing approval on a critical system; or why `by` cannot.
pub fn second(vouch: &AdvanceVouch, by: &Actor, now: Timestamp) -> Result<Decision, String> {
    if !vouch.in_force(now) {
        return Err(format!("{} is no longer in force", vouch.id));
    }
    if !vouch.awaits_second() {
        return Err(format!("{} awaits no second SOC member", vouch.id));
    }
    if !by.soc {
        return Err("only a SOC member can second a standing approval".to_string());
    }
    if by.same_person(&vouch.by) {
        return Err(format!("the second SOC member must be someone other than {}, who proposed it", vouch.by.name));
    }
    Ok(Decision { by: by.clone(), at: now, text: None, verified: None })
}

/// Revoking a vouch given in advance: the SOC may, and so may whoever made it; or why `by` cannot.
pub fn revoke(vouch: &AdvanceVouch, by: &Actor, now: Timestamp) -> Result<Decision, String> {
    if !vouch.in_force(now) {
        return Err(format!("{} is no longer in force", vouch.id));
    }
    if !(by.soc || by.same_person(&vouch.by)) {
        return Err(format!("only the SOC or {}, who made {}, may revoke it", vouch.by.name, vouch.id));
    }
    Ok(Decision { by: by.clone(), at: now, text: None, verified: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{AssetFacts, AssetKind};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);

    fn scope(account: &str, source: &str) -> MovementScope {
        MovementScope {
            account: account.to_string(),
            source: source.to_string(),
            target: "srv-db-01".to_string(),
            connection: ConnectionKind::RemoteAccess,
            protocol: Protocol::Rdp,
            program: Some("remote_access_tool".to_string()),
        }
    }

    fn facts(criticality: Criticality) -> Facts {
        Facts {
            target: Some(AssetFacts {
                hostname: "SRV-DB-01".to_string(),
                kind: AssetKind::Server,
                criticality,
                owner: None,
                edr_ids: Vec::new(),
                service_accounts: Vec::new(),
                shares: Vec::new(),
            }),
            ..Facts::default()
        }
    }

    fn approval(monitor_days: i64) -> AdvanceVouch {
        AdvanceVouch {
            id: "A-12".to_string(),
            kind: AdvanceKind::StandingApproval {
                from_case: crate::ids::CaseId::new(4).expect("id"),
                monitor_until: NOW.plus_millis(monitor_days * DAY_MILLIS),
            },
            scope: VouchScope::Exact(scope("alice", "ws-17")),
            by: Actor::vouch(),
            verified: PushRecord {
                provider: "Duo Push".to_string(),
                transaction: "tx".to_string(),
                number_to_pick: None,
            },
            seconded_by: None,
            target_criticality: Some(Criticality::High),
            valid_from: NOW,
            valid_until: NOW.plus_millis(30 * DAY_MILLIS),
            revoked: None,
        }
    }

    #[test]
    fn a_vouch_in_advance_covers_its_exact_movement_in_its_window_and_nothing_else() {
        let later = NOW.plus_millis(10 * DAY_MILLIS);
        let high = facts(Criticality::High);
        type Case = (&'static str, AdvanceVouch, MovementScope, Facts, Vec<String>, bool, Timestamp, &'static str);
        let cases: Vec<Case> = vec![
            (
                "active, same movement",
                approval(7),
                scope("alice", "ws-17"),
                high.clone(),
                vec![],
                true,
                later,
                "vouches",
            ),
            (
                "monitor period",
                approval(7),
                scope("alice", "ws-17"),
                high.clone(),
                vec![],
                true,
                NOW.plus_millis(DAY_MILLIS),
                "would",
            ),
            ("another source", approval(7), scope("alice", "ws-18"), high.clone(), vec![], true, later, "not"),
            ("another account", approval(7), scope("bob", "ws-17"), high.clone(), vec![], true, later, "not"),
            (
                "expired",
                approval(7),
                scope("alice", "ws-17"),
                high.clone(),
                vec![],
                true,
                NOW.plus_millis(30 * DAY_MILLIS),
                "not",
            ),
            (
                "before it starts",
                approval(7),
                scope("alice", "ws-17"),
                high.clone(),
                vec![],
                true,
                NOW.plus_millis(-1),
                "not",
            ),
            (
                "a concern on the alert",
                approval(7),
                scope("alice", "ws-17"),
                high.clone(),
                vec!["odd hour".to_string()],
                true,
                later,
                "withheld",
            ),
            (
                "criticality rose",
                approval(7),
                scope("alice", "ws-17"),
                facts(Criticality::Critical),
                vec![],
                true,
                later,
                "withheld",
            ),
            (
                "criticality fell",
                approval(7),
                scope("alice", "ws-17"),
                facts(Criticality::Low),
                vec![],
                true,
                later,
                "vouches",
            ),
            (
                "target now unknown",
                approval(7),
                scope("alice", "ws-17"),
                Facts::default(),
                vec![],
                true,
                later,
                "withheld",
            ),
            ("the person left", approval(7), scope("alice", "ws-17"), high.clone(), vec![], false, later, "withheld"),
        ];
        for (name, vouch, scope, facts, concerns, present, now, expected) in cases {
            let got = applicability(&vouch, &scope, &facts, &concerns, present, now);
            let label = match got {
                Applicability::NotThisMovement => "not",
                Applicability::Withheld { .. } => "withheld",
                Applicability::WouldVouch => "would",
                Applicability::Vouches => "vouches",
            };
            assert_eq!(label, expected, "{name}: {got:?}");
        }
        // On a critical target: withheld until seconded; then the concern that only says the
        // target is critical does not withhold it, any other concern does.
        let critical = facts(Criticality::Critical);
        let only_critical = vec![crate::engine::assessment::CRITICAL_TARGET.to_string()];
        let mut on_critical = approval(0);
        on_critical.target_criticality = Some(Criticality::Critical);
        let judged = applicability(&on_critical, &scope("alice", "ws-17"), &critical, &only_critical, true, later);
        assert!(matches!(judged, Applicability::Withheld { ref reason } if reason.contains("second SOC member")));
        on_critical.seconded_by = Some(Decision { by: Actor::vouch(), at: NOW, text: None, verified: None });
        let judged = applicability(&on_critical, &scope("alice", "ws-17"), &critical, &only_critical, true, later);
        assert_eq!(judged, Applicability::Vouches);
        let mut more = only_critical.clone();
        more.push("The attempt failed.".to_string());
        let judged = applicability(&on_critical, &scope("alice", "ws-17"), &critical, &more, true, later);
        assert!(matches!(judged, Applicability::Withheld { .. }), "{judged:?}");

        let mut revoked = approval(0);
        revoked.revoked = Some(Decision { by: Actor::vouch(), at: NOW, text: None, verified: None });
        assert_eq!(
            applicability(&revoked, &scope("alice", "ws-17"), &high, &[], true, later),
            Applicability::NotThisMovement
        );
    }

    #[test]
    fn a_declaration_covers_its_hosts_however_the_account_connects() {
        let mut declaration = approval(0);
        declaration.kind = AdvanceKind::Declaration { reason: "patching".to_string() };
        declaration.scope = VouchScope::Hosts(scope("alice", "ws-17").hosts());
        let mut over_ssh = scope("alice", "ws-17");
        over_ssh.protocol = Protocol::Ssh;
        over_ssh.program = None;
        let high = facts(Criticality::High);
        assert_eq!(applicability(&declaration, &over_ssh, &high, &[], true, NOW), Applicability::Vouches);
        assert_eq!(
            applicability(&declaration, &scope("alice", "ws-18"), &high, &[], true, NOW),
            Applicability::NotThisMovement
        );
        // A standing approval is exact: the same hosts over another protocol are not covered.
        assert_eq!(applicability(&approval(0), &over_ssh, &high, &[], true, NOW), Applicability::NotThisMovement);
    }

    #[test]
    fn the_vouch_that_says_the_most_is_the_one_a_case_gets() {
        let judged = |label: &str, applicability: Applicability| {
            let mut vouch = approval(0);
            vouch.id = label.to_string();
            (vouch, applicability)
        };
        let withheld = Applicability::Withheld { reason: "concerns".to_string() };
        let picked = strongest([
            judged("A-1", Applicability::NotThisMovement),
            judged("A-2", withheld.clone()),
            judged("A-3", Applicability::Vouches),
            judged("A-4", Applicability::WouldVouch),
        ]);
        assert_eq!(picked.map(|(vouch, _)| vouch.id), Some("A-3".to_string()));
        assert_eq!(
            strongest([judged("A-2", withheld.clone())]).map(|(_, applicability)| applicability),
            Some(withheld)
        );
        assert_eq!(strongest([judged("A-1", Applicability::NotThisMovement)]), None);
    }

    #[test]
    fn windows_are_bounded() {
        assert!(approval_window(0, NOW, 7).is_err());
        assert!(approval_window(91, NOW, 7).is_err());
        let (from, monitor_until, until) = approval_window(3, NOW, 7).expect("window");
        assert_eq!(
            (from, monitor_until, until),
            (NOW, NOW.plus_millis(3 * DAY_MILLIS), NOW.plus_millis(3 * DAY_MILLIS))
        );
        assert!(declaration_window(NOW, NOW.plus_millis(2 * 60 * 60 * 1000), NOW).is_ok());
        assert!(declaration_window(NOW, NOW.plus_millis(25 * 60 * 60 * 1000), NOW).is_err());
        assert!(declaration_window(NOW, NOW, NOW).is_err());
        assert!(declaration_window(NOW.plus_millis(-2), NOW.plus_millis(-1), NOW).is_err());
    }

    #[test]
    fn the_confirmer_or_the_soc_propose_and_only_the_holder_declares() {
        let alice = PersonId::parse("alice").expect("id");
        let person = |id: &str| {
            let mut actor = Actor::vouch();
            actor.person = Some(PersonId::parse(id).expect("id"));
            actor
        };
        let mut soc = Actor::vouch();
        soc.soc = true;
        let bob = person("bob");
        assert!(may_propose_approval(&bob, Some(&person("bob"))), "the confirmer who vouched");
        assert!(!may_propose_approval(&person("mallory"), Some(&bob)));
        assert!(may_propose_approval(&soc, None));
        assert!(!may_propose_approval(&bob, None));
        assert!(may_declare(&person("alice"), Some(&alice)));
        assert!(!may_declare(&bob, Some(&alice)));
        assert!(!may_declare(&soc, Some(&alice)), "the SOC does not declare someone else's movement");
        assert!(!may_declare(&person("alice"), None));
    }
}
