//! The triage engine, driven by data: an alert, what the directory knows, and what must follow.

use serde_json::json;
use vouch_playbook::engine::{ConfirmVerdict, Confirmer, PingReason, ScenarioVerdict, Side, Truth};
use vouch_playbook::facts::{
    AccountFacts, AccountKind, AssetFacts, AssetKind, Criticality, Facts, History, PersonFacts, PersonRef, ShareFacts,
};
use vouch_playbook::normalize::normalize;
use vouch_playbook::{
    apply, open_case, Actor, Alert, Case, CaseEvent, CaseId, CaseState, Effect, PersonId, Playbook, Refusal, Snowflake,
    Timestamp,
};

/// The engine took the event: the case it became and what to do.
fn accepted(applied: Result<(Case, Vec<Effect>), Refusal>) -> (Case, Vec<Effect>) {
    applied.unwrap_or_else(|refusal| panic!("the engine refused: {}", refusal.reason))
}

const NOW: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);

fn person(id: &str) -> PersonRef {
    PersonRef {
        id: PersonId::parse(id).expect("valid id"),
        name: id.to_string(),
        discord_id: None,
        delegates: Vec::new(),
    }
}

fn holder(id: &str, roles: &[&str], workstations: &[&str], manager: Option<&str>) -> PersonFacts {
    PersonFacts {
        person: person(id),
        team: None,
        roles: roles.iter().map(ToString::to_string).collect(),
        workstations: workstations.iter().map(|name| name.to_lowercase()).collect(),
        manager: manager.map(person),
    }
}

fn asset(hostname: &str, kind: AssetKind, owner: Option<&str>) -> AssetFacts {
    AssetFacts {
        hostname: hostname.to_string(),
        kind,
        criticality: Criticality::Medium,
        owner: owner.map(person),
        edr_ids: Vec::new(),
        service_accounts: Vec::new(),
        shares: Vec::new(),
    }
}

fn user_account(holder: PersonFacts) -> AccountFacts {
    AccountFacts { kind: AccountKind::User, holder: Some(holder), owner: None, service: None }
}

fn native(source: &str, target: &str, account: &str, protocol: &str, extra: serde_json::Value) -> Alert {
    let mut payload = json!({
        "vouch_alert": 1, "source": {"hostname": source}, "target": {"hostname": target},
        "account": account, "protocol": protocol
    });
    if let (Some(object), Some(extra)) = (payload.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    normalize(&payload, None, NOW).expect("valid native alert")
}

fn verdict(alert: &Alert, facts: &Facts, history: &History, scenario: &str) -> ScenarioVerdict {
    let opening = open_case(&Playbook::builtin(), alert, facts, history, NOW);
    opening.scenarios.iter().find(|assessment| assessment.id.as_str() == scenario).expect("scenario exists").verdict
}

struct ScenarioCase {
    name: &'static str,
    alert: Alert,
    facts: Facts,
    history: History,
    scenario: &'static str,
    expected: ScenarioVerdict,
    concern_fragment: Option<&'static str>,
}

fn helpdesk_facts(source_is_own: bool) -> Facts {
    let alice = holder("alice", &["helpdesk"], &[if source_is_own { "ws-17" } else { "ws-99" }], Some("bob"));
    Facts {
        source: Some(asset("WS-17", AssetKind::Workstation, Some(if source_is_own { "alice" } else { "eve" }))),
        target: Some(asset("WS-42", AssetKind::Workstation, Some("frank"))),
        account: Some(user_account(alice)),
        acting_as: None,
        stale_since: None,
    }
}

fn management_facts(service_account: bool) -> Facts {
    let mut source = asset("SCCM-01", AssetKind::Management, Some("olivia"));
    source.service_accounts = vec!["svc-sccm".to_string()];
    let account = if service_account {
        AccountFacts {
            kind: AccountKind::Service,
            holder: None,
            owner: Some(person("olivia")),
            service: Some("SCCM".to_string()),
        }
    } else {
        user_account(holder("olivia", &["admin"], &["ws-05"], Some("bob")))
    };
    Facts {
        source: Some(source),
        target: Some(asset("WS-42", AssetKind::Workstation, Some("frank"))),
        account: Some(account),
        acting_as: None,
        stale_since: None,
    }
}

fn developer_facts(target_kind: AssetKind, source_kind: AssetKind, source_is_own: bool) -> Facts {
    let dave = holder("dave", &["developer"], &[if source_is_own { "ws-30" } else { "ws-31" }], Some("bob"));
    Facts {
        source: Some(asset("WS-30", source_kind, Some("dave"))),
        target: Some(asset("APP-01", target_kind, Some("olivia"))),
        account: Some(user_account(dave)),
        acting_as: None,
        stale_since: None,
    }
}

fn share_facts(share_owner: &str) -> Facts {
    let mut target = asset("FS-01", AssetKind::Server, Some("olivia"));
    target.shares =
        vec![ShareFacts { name: "transfer$".to_string(), owner: Some(PersonId::parse(share_owner).expect("id")) }];
    Facts {
        source: Some(asset("WS-05", AssetKind::Workstation, Some("grace"))),
        target: Some(target),
        account: Some(user_account(holder("grace", &["admin"], &["ws-05"], Some("bob")))),
        acting_as: None,
        stale_since: None,
    }
}

#[test]
fn scenarios_match_and_their_near_misses_do_not() {
    let many_targets = History { source_distinct_targets: Some(40), ..History::default() };
    let cases = vec![
        ScenarioCase {
            name: "helpdesk RDP from their own workstation",
            alert: native("WS-17", "WS-42", "alice", "rdp", json!({})),
            facts: helpdesk_facts(true),
            history: History::default(),
            scenario: "helpdesk-remote-support",
            expected: ScenarioVerdict::Matched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "helpdesk RDP from a workstation that isn't theirs",
            alert: native("WS-17", "WS-42", "alice", "rdp", json!({})),
            facts: helpdesk_facts(false),
            history: History::default(),
            scenario: "helpdesk-remote-support",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: Some("not its holder's workstation"),
        },
        ScenarioCase {
            name: "helpdesk over SMB is not remote support",
            alert: native("WS-17", "WS-42", "alice", "smb", json!({})),
            facts: helpdesk_facts(true),
            history: History::default(),
            scenario: "helpdesk-remote-support",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "helpdesk account unknown to the directory",
            alert: native("WS-17", "WS-42", "alice", "rdp", json!({})),
            facts: Facts { account: None, ..helpdesk_facts(true) },
            history: History::default(),
            scenario: "helpdesk-remote-support",
            expected: ScenarioVerdict::Undetermined,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "management server with its own service account",
            alert: native("SCCM-01", "WS-42", "CORP\\svc-sccm", "smb", json!({})),
            facts: management_facts(true),
            history: many_targets.clone(),
            scenario: "management-server",
            expected: ScenarioVerdict::Matched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "management server using a personal account",
            alert: native("SCCM-01", "WS-42", "olivia", "smb", json!({})),
            facts: management_facts(false),
            history: many_targets,
            scenario: "management-server",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: Some("not a service account"),
        },
        ScenarioCase {
            name: "admin's own share",
            alert: native("WS-05", "FS-01", "grace", "smb", json!({"share": "\\\\*\\transfer$"})),
            facts: share_facts("grace"),
            history: History::default(),
            scenario: "admin-file-share",
            expected: ScenarioVerdict::Matched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "admin on the C$ administrative share",
            alert: native("WS-05", "FS-01", "grace", "smb", json!({"share": "\\\\*\\C$"})),
            facts: share_facts("grace"),
            history: History::default(),
            scenario: "admin-file-share",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: Some("administrative share"),
        },
        ScenarioCase {
            name: "admin on someone else's share",
            alert: native("WS-05", "FS-01", "grace", "smb", json!({"share": "\\\\*\\transfer$"})),
            facts: share_facts("olivia"),
            history: History::default(),
            scenario: "admin-file-share",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "developer SSH from their workstation to a dev server",
            alert: native("WS-30", "APP-01", "dave", "ssh", json!({})),
            facts: developer_facts(AssetKind::Development, AssetKind::Workstation, true),
            history: History::default(),
            scenario: "developer-to-dev-server",
            expected: ScenarioVerdict::Matched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "developer RDP through a jump server to pre-production",
            alert: native("JUMP-01", "APP-01", "dave", "rdp", json!({})),
            facts: developer_facts(AssetKind::Preproduction, AssetKind::Jump, false),
            history: History::default(),
            scenario: "developer-to-dev-server",
            expected: ScenarioVerdict::Matched,
            concern_fragment: None,
        },
        ScenarioCase {
            name: "developer reaching a production server",
            alert: native("WS-30", "APP-01", "dave", "ssh", json!({})),
            facts: developer_facts(AssetKind::Server, AssetKind::Workstation, true),
            history: History::default(),
            scenario: "developer-to-dev-server",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: Some("not a development or pre-production server"),
        },
        ScenarioCase {
            name: "developer from someone else's workstation",
            alert: native("WS-30", "APP-01", "dave", "ssh", json!({})),
            facts: developer_facts(AssetKind::Development, AssetKind::Workstation, false),
            history: History::default(),
            scenario: "developer-to-dev-server",
            expected: ScenarioVerdict::NotMatched,
            concern_fragment: None,
        },
    ];
    for case in cases {
        let got = verdict(&case.alert, &case.facts, &case.history, case.scenario);
        assert_eq!(got, case.expected, "{}", case.name);
        let opening = open_case(&Playbook::builtin(), &case.alert, &case.facts, &case.history, NOW);
        match case.concern_fragment {
            Some(fragment) => assert!(
                opening.concerns.iter().any(|concern| concern.contains(fragment)),
                "{}: expected a concern mentioning {fragment:?}, got {:?}",
                case.name,
                opening.concerns
            ),
            None if case.expected == ScenarioVerdict::Matched => {
                assert!(opening.concerns.is_empty(), "{}: unexpected concerns {:?}", case.name, opening.concerns)
            }
            None => {}
        }
        let assessment =
            opening.scenarios.iter().find(|assessment| assessment.id.as_str() == case.scenario).expect("assessed");
        assert!(!assessment.evidence.is_empty(), "{}: a verdict always carries its evidence", case.name);
        if case.expected == ScenarioVerdict::NotMatched {
            assert!(assessment.evidence.iter().any(|evidence| evidence.outcome == Truth::No), "{}", case.name);
        }
    }
}

#[test]
fn unknown_facts_stay_unknown() {
    let alert = native("WS-17", "WS-42", "mallory", "rdp", json!({}));
    let opening = open_case(&Playbook::builtin(), &alert, &Facts::default(), &History::default(), NOW);
    assert!(opening.scenarios.iter().all(|assessment| assessment.verdict != ScenarioVerdict::Matched));
    let account_hint = &opening.hints[0];
    assert_eq!(account_hint.question.as_str(), "account-usage");
    assert_eq!(account_hint.suggested, None, "nothing is known, so nothing is suggested");
    assert!(account_hint.evidence.iter().any(|line| line.contains("does not know")));
    assert!(account_hint.prompt.contains("does not know this account"));
    assert_eq!(opening.confirmation_chain, vec![Confirmer::Soc], "with nobody known, the SOC decides");
}

/// (alert extras, facts, expected interactive hint, expected account-usage hint, expected concern fragment)
type HintCase<'a> = (serde_json::Value, &'a Facts, Option<&'a str>, Option<&'a str>, Option<&'a str>);

#[test]
fn hints_read_the_logon_type_the_program_and_the_account_kind() {
    let playbook = Playbook::builtin();
    let service = Facts {
        account: Some(AccountFacts {
            kind: AccountKind::Service,
            holder: None,
            owner: Some(person("olivia")),
            service: Some("backup".to_string()),
        }),
        ..Facts::default()
    };
    let user = Facts { account: Some(user_account(holder("alice", &[], &[], None))), ..Facts::default() };
    let cases: Vec<HintCase<'_>> = vec![
        (json!({"logon_type": 10}), &user, Some("interactive"), None, None),
        (json!({"logon_type": 3}), &service, Some("programmatic"), None, None),
        (json!({"logon_type": 3}), &user, None, None, None),
        (
            json!({"program": {"path": "C:\\Windows\\System32\\mstsc.exe"}}),
            &service,
            Some("interactive"),
            Some("does-not-fit"),
            Some("service account used an interactive remote-access tool"),
        ),
        (
            json!({"program": {"path": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                            "command_line": "powershell -noP -sta -w 1 -enc SQBmACgA", "parent": "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe"}}),
            &user,
            Some("programmatic"),
            None,
            Some("encoded PowerShell"),
        ),
    ];
    for (extra, facts, interactive, usage, concern) in cases {
        let alert = native("WS-17", "SRV-DB-01", "alice", "smb", extra.clone());
        let opening = open_case(&playbook, &alert, facts, &History::default(), NOW);
        let hint = |question: &str| {
            opening
                .hints
                .iter()
                .find(|hint| hint.question.as_str() == question)
                .expect("hint per question")
                .suggested
                .as_ref()
                .map(|id| id.as_str().to_string())
        };
        assert_eq!(hint("interactive").as_deref(), interactive, "interactive hint for {extra}");
        assert_eq!(hint("account-usage").as_deref(), usage, "account-usage hint for {extra}");
        if let Some(fragment) = concern {
            assert!(opening.concerns.iter().any(|line| line.contains(fragment)), "{extra}: {:?}", opening.concerns);
        }
    }
}

#[test]
fn the_account_kind_changes_the_question_asked() {
    let playbook = Playbook::builtin();
    let question =
        playbook.questions.iter().find(|question| question.id.as_str() == "account-usage").expect("question");
    let prompts: Vec<&str> = [AccountKind::User, AccountKind::Service, AccountKind::System, AccountKind::Unknown]
        .into_iter()
        .map(|kind| question.prompt_for(kind))
        .collect();
    for (index, prompt) in prompts.iter().enumerate() {
        assert!(!prompt.is_empty());
        assert!(prompts.iter().skip(index + 1).all(|other| other != prompt), "each kind has its own prompt");
    }
    // A computer account is recognised as a system account by its name alone.
    let alert = native("WS-06", "DC-01", "CORP\\WS-06$", "smb", json!({}));
    let opening = open_case(&playbook, &alert, &Facts::default(), &History::default(), NOW);
    assert_eq!(opening.account_kind, AccountKind::System);
}

fn soc(name: &str) -> Actor {
    Actor {
        discord_id: Some(Snowflake::parse("900").expect("id")),
        person: Some(PersonId::parse(name).expect("id")),
        name: name.to_string(),
        soc: true,
        roles: Vec::new(),
        linked: false,
    }
}

fn member(id: &str) -> Actor {
    Actor {
        discord_id: None,
        person: Some(PersonId::parse(id).expect("id")),
        name: id.to_string(),
        soc: false,
        roles: Vec::new(),
        linked: false,
    }
}

fn opened(facts: Facts) -> (Case, Vec<Effect>) {
    let playbook = Playbook::builtin();
    let alert = native("WS-17", "WS-42", "alice", "rdp", json!({}));
    let opening = open_case(&playbook, &alert, &facts, &History::default(), NOW);
    Case::open(CaseId::new(1).expect("id"), &playbook, alert, facts, opening, NOW)
}

#[test]
fn opening_a_case_posts_the_card_and_asks_the_target_owner() {
    let (case, effects) = opened(helpdesk_facts(true));
    assert_eq!(case.state, CaseState::AwaitingConfirmation);
    assert_eq!(effects[0], Effect::PostCard);
    assert!(effects.contains(&Effect::PingPerson { person: person("frank"), reason: PingReason::AskConfirmation }));
    let reminder_at = NOW.plus_minutes(120);
    assert_eq!(case.confirmation.deadline, Some(reminder_at));
    assert_eq!(case.next_deadline(), Some(reminder_at), "the reminder's deadline is stored with the case");
    let chain: Vec<String> = case.confirmation.chain.iter().map(Confirmer::label).collect();
    assert_eq!(chain, ["frank (owner of the target system)", "bob (manager of the account's holder)", "the SOC"]);
}

#[test]
fn events_move_the_case_and_wrong_people_are_refused() {
    let playbook = Playbook::builtin();
    let later = NOW.plus_minutes(5);
    let refused = |applied: Result<(Case, Vec<Effect>), Refusal>, fragment: &str| match applied {
        Err(refusal) => assert!(refusal.reason.contains(fragment), "expected {fragment:?} in {:?}", refusal.reason),
        Ok((_, effects)) => panic!("expected a refusal mentioning {fragment:?}, got {effects:?}"),
    };

    let (case, _) = opened(helpdesk_facts(true));
    // Someone other than the asked owner cannot vouch, not even a SOC member.
    refused(
        apply(
            &playbook,
            case.clone(),
            CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: member("mallory"), justification: None },
            later,
        ),
        "asked of frank",
    );
    refused(
        apply(
            &playbook,
            case.clone(),
            CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: soc("sam"), justification: None },
            later,
        ),
        "asked of frank",
    );
    // Only the SOC answers questions, escalates and closes.
    let answer = |by: Actor| CaseEvent::Answer {
        question: vouch_playbook::QuestionId::parse("interactive").expect("id"),
        answer: vouch_playbook::AnswerId::parse("interactive").expect("id"),
        by,
    };
    refused(apply(&playbook, case.clone(), answer(member("frank")), later), "only members of the SOC");
    let (answered, effects) = accepted(apply(&playbook, case.clone(), answer(soc("sam")), later));
    assert_eq!(effects, vec![Effect::UpdateCard]);
    let recorded = &answered.answers[&vouch_playbook::QuestionId::parse("interactive").expect("id")];
    assert_eq!((recorded.by.name.as_str(), recorded.at, recorded.playbook_version.0), ("sam", later, 1));
    let bogus = CaseEvent::Answer {
        question: vouch_playbook::QuestionId::parse("interactive").expect("id"),
        answer: vouch_playbook::AnswerId::parse("maybe").expect("id"),
        by: soc("sam"),
    };
    refused(apply(&playbook, case.clone(), bogus, later), "not an answer");
    refused(
        apply(&playbook, case.clone(), CaseEvent::Close { by: soc("sam"), justification: "  ".to_string() }, later),
        "justification",
    );

    // "Not me" moves down the chain: owner → manager → SOC.
    let (case, effects) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::NotMe, by: member("frank"), justification: None },
        later,
    ));
    assert!(effects.contains(&Effect::PingPerson { person: person("bob"), reason: PingReason::AskConfirmation }));
    assert!(case.is_asked(&member("bob")));
    let (case, effects) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::NotMe, by: member("bob"), justification: None },
        later,
    ));
    assert!(effects.iter().any(|effect| matches!(effect, Effect::NotifySoc { .. })));
    assert_eq!(case.state, CaseState::Open);

    // The owner's "not expected" escalates, pages on-call and proposes isolating both ends.
    let (case, _) = opened(helpdesk_facts(true));
    let (case, effects) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::NotExpected, by: member("frank"), justification: None },
        later,
    ));
    assert_eq!(case.state, CaseState::Escalated);
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, Effect::PageOnCall { reason, .. } if reason.contains("frank"))));
    assert!(effects.contains(&Effect::ProposeIsolation { side: Side::Source }));
    assert!(effects.contains(&Effect::ProposeIsolation { side: Side::Target }));
    refused(
        apply(&playbook, case.clone(), CaseEvent::Escalate { by: soc("sam"), reason: None }, later),
        "already escalated",
    );
    // Isolation is a SOC decision, once per system.
    let isolate = |by: Actor| CaseEvent::Isolate { side: Side::Target, by };
    refused(apply(&playbook, case.clone(), isolate(member("frank")), later), "only members of the SOC");
    let (case, effects) = accepted(apply(&playbook, case, isolate(soc("sam")), later));
    assert_eq!(
        effects,
        vec![Effect::CallIsolationWebhook { request_id: "LM-1-target-isolate-1".to_string() }, Effect::UpdateCard]
    );
    assert_eq!(case.isolations.len(), 1);
    refused(apply(&playbook, case.clone(), isolate(soc("sam")), later), "already requested");

    // The owner's "expected" closes a case without concerns; a finished case takes nothing more.
    let (case, _) = opened(helpdesk_facts(true));
    refused(
        apply(&playbook, case.clone(), CaseEvent::Isolate { side: Side::Source, by: soc("sam") }, later),
        "escalate the case before",
    );
    let (case, _) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: member("frank"), justification: None },
        later,
    ));
    assert_eq!(case.state, CaseState::ClosedExpected);
    refused(
        apply(&playbook, case.clone(), CaseEvent::Escalate { by: soc("sam"), reason: None }, later),
        "already closed",
    );

    // With a concern, the owner's "expected" hands the case back to the SOC instead.
    let (case, _) = opened(helpdesk_facts(false));
    let (case, effects) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: member("frank"), justification: None },
        later,
    ));
    assert_eq!(case.state, CaseState::Open);
    assert!(effects.iter().any(|effect| matches!(effect, Effect::NotifySoc { .. })));
    let (case, _) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Close { by: soc("sam"), justification: "Ticket 4411".to_string() },
        later,
    ));
    assert_eq!(case.state, CaseState::ClosedExpected);
    assert_eq!(case.resolution.and_then(|decision| decision.text).as_deref(), Some("Ticket 4411"));
}

#[test]
fn delegates_may_answer_for_the_person_asked() {
    let playbook = Playbook::builtin();
    let mut facts = helpdesk_facts(true);
    if let Some(target) = facts.target.as_mut() {
        if let Some(owner) = target.owner.as_mut() {
            owner.delegates = vec![person("gina")];
        }
    }
    let (case, _) = opened(facts);
    let (case, _) = accepted(apply(
        &playbook,
        case,
        CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: member("gina"), justification: None },
        NOW,
    ));
    assert_eq!(case.state, CaseState::ClosedExpected);
}

#[test]
fn silence_is_chased_then_handed_on() {
    let playbook = Playbook::builtin();
    let (mut case, _) = opened(helpdesk_facts(true));
    let mut pings = Vec::new();
    let mut now = NOW;
    for _ in 0..4 {
        // A reminder that fires before its deadline does nothing.
        let (same, effects) = accepted(apply(&playbook, case.clone(), CaseEvent::ReminderDue, now.plus_minutes(1)));
        assert!(effects.is_empty());
        assert_eq!(same.confirmation, case.confirmation);
        now = case.confirmation.deadline.expect("a deadline is armed");
        let (next, effects) = accepted(apply(&playbook, case, CaseEvent::ReminderDue, now));
        case = next;
        for effect in effects {
            if let Effect::PingPerson { person, reason } = effect {
                pings.push(format!("{}:{reason:?}", person.name));
            }
        }
    }
    // Medium criticality: two reminders to frank, then bob is asked and reminded.
    assert_eq!(pings, ["frank:Reminder", "frank:Reminder", "bob:AskConfirmation", "bob:Reminder"]);
    let stale = apply(
        &playbook,
        case.clone(),
        CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: member("frank"), justification: None },
        now,
    );
    assert!(stale.is_err(), "frank is no longer the one asked");
}

#[test]
fn the_builtin_playbook_is_valid_and_broken_ones_are_refused() {
    let playbook = Playbook::builtin();
    assert_eq!(playbook.version.0, 1);
    let ids: Vec<&str> = playbook.scenarios.iter().map(|scenario| scenario.id.as_str()).collect();
    assert_eq!(ids, ["helpdesk-remote-support", "management-server", "admin-file-share", "developer-to-dev-server"]);
    let broken = vouch_playbook::definition::BUILTIN_LATERAL_MOVEMENT
        .replace("id = \"interactive\"\ntitle", "id = \"account-usage\"\ntitle")
        .replace("{ fact = \"protocol\", any_of = [\"rdp\"] }", "{ fact = \"protocol\", equals = true }");
    let error = Playbook::parse(&broken).expect_err("broken playbook").to_string();
    for fragment in ["`interactive` question is missing", "`account-usage` appears twice", "cannot be tested that way"]
    {
        assert!(error.contains(fragment), "{error}");
    }
}

#[test]
fn critical_systems_need_a_second_soc_member_and_isolation_can_be_released() {
    let playbook = Playbook::builtin();
    let mut facts = helpdesk_facts(true);
    if let Some(target) = facts.target.as_mut() {
        target.kind = AssetKind::DomainController;
        target.criticality = Criticality::Critical;
    }
    let (case, _) = opened(facts);
    let (case, _) = accepted(apply(&playbook, case, CaseEvent::Escalate { by: soc("sam"), reason: None }, NOW));
    let isolate = |by: Actor| CaseEvent::Isolate { side: Side::Target, by };
    let (case, effects) = accepted(apply(&playbook, case, isolate(soc("sam")), NOW));
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, Effect::NotifySoc { message } if message.contains("second SOC member"))));
    assert!(!effects.iter().any(|effect| matches!(effect, Effect::CallIsolationWebhook { .. })), "nothing fires yet");
    let refusal = apply(&playbook, case.clone(), isolate(soc("sam")), NOW).expect_err("the same member cannot approve");
    assert!(refusal.reason.contains("second SOC member"), "{}", refusal.reason);
    let mut second = soc("tess");
    second.discord_id = Some(Snowflake::parse("901").expect("id"));
    let (case, effects) = accepted(apply(&playbook, case, isolate(second), NOW));
    let request_id = "LM-1-target-isolate-1".to_string();
    assert_eq!(effects[0], Effect::CallIsolationWebhook { request_id: request_id.clone() });
    assert_eq!(case.isolations[0].approved_by.as_ref().map(|actor| actor.name.as_str()), Some("tess"));

    let delivered = CaseEvent::IsolationDelivered {
        request_id: request_id.clone(),
        webhook: "edr".to_string(),
        ok: true,
        detail: String::new(),
    };
    let (case, effects) = accepted(apply(&playbook, case, delivered, NOW));
    assert!(matches!(&effects[0], Effect::Announce { message } if message.contains("accepted")));
    assert!(case.isolations[0].delivered());
    let release = |by: Actor| CaseEvent::ReleaseIsolation { side: Side::Target, by };
    assert!(apply(&playbook, case.clone(), release(member("frank")), NOW).is_err());
    let (case, effects) = accepted(apply(&playbook, case, release(soc("sam")), NOW));
    assert_eq!(effects[0], Effect::CallIsolationWebhook { request_id: "LM-1-target-release-2".to_string() });
    assert!(matches!(
        apply(&playbook, case, release(soc("sam")), NOW),
        Err(refusal) if refusal.reason.contains("no isolation to release")
    ));
}

#[test]
fn an_unacknowledged_page_is_repeated_then_goes_to_the_secondary() {
    let playbook = Playbook::builtin();
    let (case, _) = opened(helpdesk_facts(true));
    let (case, effects) = accepted(apply(&playbook, case, CaseEvent::Escalate { by: soc("sam"), reason: None }, NOW));
    assert!(effects.contains(&Effect::PageOnCall {
        reason: "escalated by sam".to_string(),
        secondary: false,
        reminder: false
    }));
    let deadline = case.next_deadline().expect("the page has a deadline");
    assert_eq!(deadline, NOW.plus_minutes(15));
    let (case, effects) = accepted(apply(&playbook, case, CaseEvent::ReminderDue, deadline));
    assert!(
        effects.iter().any(|effect| matches!(effect, Effect::PageOnCall { secondary: false, reminder: true, .. })),
        "{effects:?}"
    );
    let deadline = case.next_deadline().expect("armed again");
    let (case, effects) = accepted(apply(&playbook, case, CaseEvent::ReminderDue, deadline));
    assert!(
        effects.iter().any(|effect| matches!(effect, Effect::PageOnCall { secondary: true, reminder: false, .. })),
        "{effects:?}"
    );
    assert!(apply(&playbook, case.clone(), CaseEvent::Acknowledge { by: member("frank") }, NOW).is_err());
    let (case, effects) = accepted(apply(&playbook, case, CaseEvent::Acknowledge { by: soc("sam") }, deadline));
    assert!(matches!(&effects[0], Effect::Announce { message } if message.contains("acknowledged")));
    assert_eq!(case.next_deadline(), None, "an acknowledged page is not chased");
    assert!(apply(&playbook, case, CaseEvent::Acknowledge { by: soc("sam") }, NOW).is_err());
}

#[test]
fn silence_down_the_whole_chain_pages_on_call() {
    let playbook = Playbook::builtin();
    let (mut case, _) = opened(helpdesk_facts(true));
    let mut paged = false;
    for _ in 0..6 {
        let Some(deadline) = case.next_deadline() else { break };
        let (next, effects) = accepted(apply(&playbook, case, CaseEvent::ReminderDue, deadline));
        case = next;
        paged |= effects
            .iter()
            .any(|effect| matches!(effect, Effect::PageOnCall { reason, .. } if reason.contains("nobody confirmed")));
    }
    assert!(paged, "on-call is paged when nobody in the chain answers");
    assert_eq!(case.confirmation.current_confirmer(), Some(&Confirmer::Soc));
}

/// Who may do what: every action against every kind of member, allowed or refused, and a
/// refusal never changes the case.
#[test]
fn authorization_matrix() {
    let playbook = Playbook::builtin();
    let mut facts = helpdesk_facts(true);
    if let Some(owner) = facts.target.as_mut().and_then(|target| target.owner.as_mut()) {
        owner.delegates = vec![person("gina")];
    }
    let (awaiting, _) = opened(facts);
    let (escalated, _) =
        accepted(apply(&playbook, awaiting.clone(), CaseEvent::Escalate { by: soc("sam"), reason: None }, NOW));
    let (isolated, _) =
        accepted(apply(&playbook, escalated.clone(), CaseEvent::Isolate { side: Side::Target, by: soc("sam") }, NOW));

    let mut oncall = soc("oscar");
    oncall.discord_id = Some(Snowflake::parse("902").expect("id"));
    // A member clicking in a DM: no guild roles reach Vouch, so never SOC.
    let frank_in_dm = Actor { soc: false, ..member("frank") };
    let members: Vec<(&str, Actor)> = vec![
        ("asked owner", member("frank")),
        ("delegate", member("gina")),
        ("another owner", member("olivia")),
        ("manager (not asked yet)", member("bob")),
        ("SOC member", soc("sam")),
        ("on-call (SOC)", oncall),
        (
            "unknown member",
            Actor {
                discord_id: Some(Snowflake::parse("777").expect("id")),
                person: None,
                name: "mallory".to_string(),
                soc: false,
                roles: Vec::new(),
                linked: false,
            },
        ),
        ("owner in a DM", frank_in_dm),
    ];
    let question = vouch_playbook::QuestionId::parse("interactive").expect("id");
    let answer = vouch_playbook::AnswerId::parse("interactive").expect("id");
    type Action = fn(&Actor, &vouch_playbook::QuestionId, &vouch_playbook::AnswerId) -> CaseEvent;
    // (action, the case it is tried on, which members may: owner, delegate, other owner, manager, SOC, on-call, unknown, owner in DM)
    let actions: Vec<(&str, Action, &Case, [bool; 8])> = vec![
        (
            "answer a question",
            |by, question, answer| CaseEvent::Answer {
                question: question.clone(),
                answer: answer.clone(),
                by: by.clone(),
            },
            &awaiting,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "confirm expected",
            |by, _, _| CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: by.clone(), justification: None },
            &awaiting,
            [true, true, false, false, false, false, false, true],
        ),
        (
            "confirm not expected",
            |by, _, _| CaseEvent::Confirm { verdict: ConfirmVerdict::NotExpected, by: by.clone(), justification: None },
            &awaiting,
            [true, true, false, false, false, false, false, true],
        ),
        (
            "not me",
            |by, _, _| CaseEvent::Confirm { verdict: ConfirmVerdict::NotMe, by: by.clone(), justification: None },
            &awaiting,
            [true, true, false, false, false, false, false, true],
        ),
        (
            "escalate",
            |by, _, _| CaseEvent::Escalate { by: by.clone(), reason: None },
            &awaiting,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "close as expected",
            |by, _, _| CaseEvent::Close { by: by.clone(), justification: "change 12".to_string() },
            &awaiting,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "ask the owner again",
            |by, _, _| CaseEvent::AskConfirmation { by: by.clone() },
            &escalated,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "isolate",
            |by, _, _| CaseEvent::Isolate { side: Side::Source, by: by.clone() },
            &escalated,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "release",
            |by, _, _| CaseEvent::ReleaseIsolation { side: Side::Target, by: by.clone() },
            &isolated,
            [false, false, false, false, true, true, false, false],
        ),
        (
            "acknowledge the page",
            |by, _, _| CaseEvent::Acknowledge { by: by.clone() },
            &escalated,
            [false, false, false, false, true, true, false, false],
        ),
    ];
    for (action, event, case, allowed) in actions {
        for ((kind, actor), expected) in members.iter().zip(allowed) {
            let applied = apply(&playbook, case.clone(), event(actor, &question, &answer), NOW);
            assert_eq!(applied.is_ok(), expected, "{action} by {kind}: {applied:?}");
        }
    }
}

#[test]
fn failures_remote_execution_and_second_accounts_raise_their_concerns() {
    let service = |name: &str| AccountFacts {
        kind: AccountKind::Service,
        holder: None,
        owner: Some(person("bob")),
        service: Some(format!("{name} service")),
    };
    let repeated_failures = History { seen: 5, failures: 4, ..History::default() };
    let cases: Vec<(&str, Alert, Facts, History, &str)> = vec![
        (
            "a failed attempt",
            native("WS-42", "SRV-DB-01", "administrator", "smb", json!({"outcome": "failure"})),
            Facts::default(),
            History::default(),
            "The attempt failed",
        ),
        (
            "earlier failures of the same movement",
            native("WS-42", "SRV-DB-01", "administrator", "smb", json!({"outcome": "failure"})),
            Facts::default(),
            repeated_failures,
            "4 earlier attempts of this movement failed",
        ),
        (
            "PsExec's service installed",
            native(
                "WS-02",
                "SRV-DB-01",
                "bob",
                "smb",
                json!({"connection": "remote_execution",
                "program": {"name": "PSEXESVC", "command_line": "%SystemRoot%\\xsvc.exe"}}),
            ),
            Facts::default(),
            History::default(),
            "PsExec-family tool installed its service",
        ),
        (
            "a person's account acting as a service account over RDP",
            native("WS-17", "SRV-DB-01", "alice", "rdp", json!({"acting_as": "svc-backup"})),
            Facts {
                account: Some(user_account(holder("alice", &["helpdesk"], &["WS-17"], Some("bob")))),
                acting_as: Some(service("backup")),
                ..Facts::default()
            },
            History::default(),
            "The second account, a service account, used an interactive remote-access tool",
        ),
    ];
    let mut cases = cases;
    cases.push((
        "facts from an old directory snapshot",
        native("WS-17", "SRV-DB-01", "alice", "rdp", json!({})),
        Facts {
            stale_since: Some(Timestamp::from_unix_millis(NOW.unix_millis() - 3 * 24 * 3_600_000)),
            ..Facts::default()
        },
        History::default(),
        "a source has not synced since",
    ));
    for (name, alert, facts, history, fragment) in cases {
        let opening = open_case(&Playbook::builtin(), &alert, &facts, &history, NOW);
        assert!(
            opening.concerns.iter().any(|concern| concern.contains(fragment)),
            "{name}: no concern containing {fragment:?} in {:?}",
            opening.concerns
        );
    }
    // A failed attempt is never called normal use, even when a scenario's facts fit.
    let failed_helpdesk = native("WS-17", "WS-42", "alice", "rdp", json!({"outcome": "failure", "logon_type": 10}));
    let opening = open_case(&Playbook::builtin(), &failed_helpdesk, &helpdesk_facts(true), &History::default(), NOW);
    let usage = opening.hints.iter().find(|hint| hint.question.as_str() == "account-usage").expect("hint");
    assert_eq!(usage.suggested, None, "{:?}", usage.evidence);
}

#[test]
fn remote_execution_says_programmatic_with_its_evidence_first() {
    let cases = [
        (
            json!({"program": {"path": "C:\\Tools\\PsExec64.exe", "command_line": "PsExec64.exe \\\\SRV -s cmd"}}),
            "PsExec family client",
        ),
        (
            json!({"program": {"path": "C:\\Windows\\System32\\cmd.exe", "parent": "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe"}}),
            "WMI remote execution",
        ),
        (json!({"mitre": ["T1053.005"], "connection": "remote_execution"}), "remotely created scheduled task"),
        (json!({"mitre": ["T1569.002"], "connection": "remote_execution"}), "remotely installed service"),
    ];
    for (extra, fragment) in cases {
        let alert = native("WS-02", "SRV-DB-01", "bob", "smb", extra);
        let opening = open_case(&Playbook::builtin(), &alert, &Facts::default(), &History::default(), NOW);
        let hint = opening.hints.iter().find(|hint| hint.question.as_str() == "interactive").expect("hint");
        assert_eq!(hint.suggested.as_ref().map(|id| id.as_str()), Some("programmatic"), "{fragment}");
        assert!(hint.evidence[0].contains(fragment), "{fragment}: {:?}", hint.evidence);
    }
}

#[test]
fn a_confirmer_who_left_hands_the_case_to_the_next_in_the_chain() {
    let playbook = Playbook::builtin();
    let (case, _) = opened(helpdesk_facts(true));
    let left = |id: &str| CaseEvent::ConfirmerLeft {
        person: PersonId::parse(id).expect("id"),
        reason: "is no longer in the directory".to_string(),
    };
    // Whether the one asked left that place is decided from what the directory says now.
    let standing = |in_directory: bool, owner: &str| vouch_playbook::engine::AskedPersonStanding {
        in_directory,
        manager_of_holder: Some(PersonId::parse("bob").expect("id")),
        owner_of_target: Some(PersonId::parse(owner).expect("id")),
    };
    assert_eq!(case.asked_person_gone(&standing(true, "frank")), None, "frank still owns the target");
    let (gone, reason) = case.asked_person_gone(&standing(true, "carol")).expect("the owner changed");
    assert_eq!((gone.as_str(), reason.as_str()), ("frank", "no longer owns WS-42"));
    let (_, reason) = case.asked_person_gone(&standing(false, "frank")).expect("frank left");
    assert_eq!(reason, "is no longer in the directory");
    // Only the person asked can leave the case's chain.
    let refusal = apply(&playbook, case.clone(), left("bob"), NOW).expect_err("bob is not the one asked");
    assert!(refusal.reason.contains("not the one asked"), "{}", refusal.reason);
    let (case, effects) = accepted(apply(&playbook, case, left("frank"), NOW));
    assert!(case.asks(&PersonId::parse("bob").expect("id")), "the manager is asked next");
    assert!(effects.contains(&Effect::PingPerson { person: person("bob"), reason: PingReason::AskConfirmation }));
    assert!(
        effects.iter().any(|effect| matches!(effect, Effect::Announce { message }
        if message.contains("frank") && message.contains("is no longer in the directory"))),
        "{effects:?}"
    );
}

/// The built-in playbook with verification on: the default policy, pushes that wait two minutes.
fn verifying_playbook() -> Playbook {
    let mut playbook = Playbook::builtin();
    playbook.verifying = Some(vouch_playbook::verification::Verifying {
        policy: vouch_playbook::verification::VerificationPolicy::default(),
        push_lifetime_millis: 120_000,
        require_linked: false,
        approval_monitor_days: 7,
    });
    playbook
}

/// frank, owner of the target, is asked; the target is as critical as given.
fn asked_about(criticality: Criticality) -> Case {
    let mut facts = helpdesk_facts(true);
    if let Some(target) = facts.target.as_mut() {
        target.criticality = criticality;
    }
    opened(facts).0
}

fn expected_by(who: Actor) -> CaseEvent {
    CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: who, justification: Some("patching".to_string()) }
}

fn push_sent(verification: u32) -> CaseEvent {
    CaseEvent::PushSent {
        verification,
        push: vouch_playbook::engine::PushRecord {
            provider: "Duo Push".to_string(),
            transaction: "tx-1".to_string(),
            number_to_pick: None,
        },
    }
}

fn finished(verification: u32, outcome: vouch_playbook::engine::PushOutcome) -> CaseEvent {
    CaseEvent::VerificationFinished { verification, outcome }
}

#[test]
fn an_answer_that_needs_verification_counts_only_once_the_push_is_approved() {
    use vouch_playbook::engine::PushOutcome;
    let playbook = verifying_playbook();
    let later = NOW.plus_minutes(1);

    // On a medium system the answer counts at once, as without verification.
    let (case, effects) =
        accepted(apply(&playbook, asked_about(Criticality::Medium), expected_by(member("frank")), later));
    assert_eq!(case.state, CaseState::ClosedExpected);
    assert!(!effects.iter().any(|effect| matches!(effect, Effect::SendPush { .. })));

    // On a high system it is held and a push goes to frank.
    let (held, effects) =
        accepted(apply(&playbook, asked_about(Criticality::High), expected_by(member("frank")), later));
    assert_eq!(held.state, CaseState::AwaitingConfirmation, "nothing counted yet");
    assert!(held.confirmation.verdicts.is_empty());
    let Some(Effect::SendPush { verification: 1, person, summary }) = effects.first() else {
        panic!("no push: {effects:?}")
    };
    assert_eq!(person.as_str(), "frank");
    assert!(summary.contains("LM-1") && summary.contains("WS-17") && summary.contains("WS-42"), "{summary}");
    assert_eq!(held.next_deadline(), Some(later.plus_millis(120_000)).min(held.confirmation.deadline));
    // A second answer while the push waits is refused; a wrong person is refused before any push.
    assert!(apply(&playbook, held.clone(), expected_by(member("frank")), later).is_err());
    let wrong = apply(&playbook, asked_about(Criticality::High), expected_by(member("mallory")), later);
    assert!(wrong.expect_err("not asked").reason.contains("asked of frank"));

    // With number matching, the number to pick is said where the answer was given.
    let numbered = CaseEvent::PushSent {
        verification: 1,
        push: vouch_playbook::engine::PushRecord {
            provider: "Okta Verify".to_string(),
            transaction: "00u1/opf1/v2mst.1".to_string(),
            number_to_pick: Some(47),
        },
    };
    let (_, effects) = accepted(apply(&playbook, held.clone(), numbered, later));
    assert!(
        matches!(effects.as_slice(), [Effect::Announce { message }] if message.contains("frank") && message.contains("pick 47")),
        "{effects:?}"
    );

    // Approved: the answer counts, and says how it was verified.
    let (sent, effects) = accepted(apply(&playbook, held.clone(), push_sent(1), later));
    assert!(effects.is_empty());
    assert!(apply(&playbook, sent.clone(), push_sent(1), later).is_err(), "a push is recorded once");
    let (approved, _) = accepted(apply(&playbook, sent.clone(), finished(1, PushOutcome::Approved), later));
    assert_eq!(approved.state, CaseState::ClosedExpected);
    let verdict = &approved.confirmation.verdicts[0];
    assert_eq!(verdict.verified.as_ref().map(|push| push.provider.as_str()), Some("Duo Push"));
    assert_eq!(
        approved
            .resolution
            .as_ref()
            .and_then(|decision| decision.verified.as_ref())
            .map(|push| push.transaction.as_str()),
        Some("tx-1")
    );
    assert!(approved.pending_verification.is_none());
    assert!(apply(&playbook, approved, finished(1, PushOutcome::Approved), later).is_err(), "a result counts once");

    // Timed out, or the provider failed: nothing counts, frank may answer again.
    for outcome in [PushOutcome::TimedOut, PushOutcome::Failed { reason: "Duo answered 503".to_string() }] {
        let (case, effects) = accepted(apply(&playbook, sent.clone(), finished(1, outcome.clone()), later));
        assert_eq!(case.state, CaseState::AwaitingConfirmation, "{outcome:?}");
        assert!(case.confirmation.verdicts.is_empty() && case.pending_verification.is_none());
        assert!(effects
            .iter()
            .any(|effect| matches!(effect, Effect::Announce { message } if message.contains("does not count"))));
        let (again, effects) = accepted(apply(&playbook, case, expected_by(member("frank")), later));
        assert!(matches!(effects.first(), Some(Effect::SendPush { verification: 2, .. })), "{effects:?}");
        assert_eq!(again.pushes_sent, 2);
    }

    // Nobody answers and Vouch's timer comes first: the push expires on the deadline.
    let expiry = later.plus_millis(120_000);
    let (expired, effects) = accepted(apply(&playbook, sent, CaseEvent::ReminderDue, expiry));
    assert!(expired.pending_verification.is_none());
    assert!(effects
        .iter()
        .any(|effect| matches!(effect, Effect::Announce { message } if message.contains("not approved in time"))));

    // Not expected is never held: raising the alarm is not slowed down.
    let not_expected =
        CaseEvent::Confirm { verdict: ConfirmVerdict::NotExpected, by: member("frank"), justification: None };
    let (escalated, _) = accepted(apply(&playbook, asked_about(Criticality::Critical), not_expected, later));
    assert_eq!(escalated.state, CaseState::Escalated);
}

#[test]
fn a_denied_push_is_a_concern_and_closing_then_takes_two_soc_members() {
    use vouch_playbook::engine::PushOutcome;
    let playbook = verifying_playbook();
    for outcome in [PushOutcome::Denied, PushOutcome::Fraud] {
        let (held, _) = accepted(apply(&playbook, asked_about(Criticality::High), expected_by(member("frank")), NOW));
        let (case, effects) = accepted(apply(&playbook, held, finished(1, outcome.clone()), NOW));
        assert!(case.confirmation.verdicts.is_empty(), "{outcome:?}: the answer does not count");
        assert!(case.push_denied.is_some());
        assert!(case.opening.concerns.iter().any(|concern| concern.contains("frank")), "{:?}", case.opening.concerns);
        assert!(effects
            .iter()
            .any(|effect| matches!(effect, Effect::NotifySoc { message } if message.contains("two SOC members"))));

        let close = |by: Actor| CaseEvent::Close { by, justification: "known maintenance".to_string() };
        let (asked, effects) = accepted(apply(&playbook, case, close(soc("sam")), NOW));
        assert_ne!(asked.state, CaseState::ClosedExpected, "one SOC member is not enough");
        assert!(effects
            .iter()
            .any(|effect| matches!(effect, Effect::NotifySoc { message } if message.contains("second SOC member"))));
        let again = apply(&playbook, asked.clone(), close(soc("sam")), NOW).expect_err("the same member twice");
        assert!(again.reason.contains("second SOC member"));
        let mut tess = soc("tess");
        tess.discord_id = Some(Snowflake::parse("901").expect("id"));
        let (closed, _) = accepted(apply(&playbook, asked, close(tess), NOW));
        assert_eq!(closed.state, CaseState::ClosedExpected);
        assert_eq!(closed.resolution.as_ref().map(|decision| decision.by.name.as_str()), Some("tess"));
    }
}

#[test]
fn closing_a_critical_case_as_expected_is_verified_and_an_unlinked_account_cannot_be() {
    use vouch_playbook::engine::PushOutcome;
    let playbook = verifying_playbook();
    let close = |by: Actor| CaseEvent::Close { by, justification: "change CHG-1".to_string() };
    let (held, effects) = accepted(apply(&playbook, asked_about(Criticality::Critical), close(soc("sam")), NOW));
    assert_ne!(held.state, CaseState::ClosedExpected);
    assert!(matches!(effects.first(), Some(Effect::SendPush { .. })));
    let (closed, _) = accepted(apply(&playbook, held, finished(1, PushOutcome::Approved), NOW));
    assert_eq!(closed.state, CaseState::ClosedExpected);
    assert!(closed.resolution.as_ref().is_some_and(|decision| decision.verified.is_some()));

    // A chat account no directory person is linked to cannot be verified: refused, not trusted.
    let mut stranger = soc("sam");
    stranger.person = None;
    let refusal = apply(&playbook, asked_about(Criticality::Critical), close(stranger), NOW).expect_err("refused");
    assert!(refusal.reason.contains("not linked"), "{}", refusal.reason);

    // Without [verification] nothing is held.
    let (closed, _) = accepted(apply(&Playbook::builtin(), asked_about(Criticality::Critical), close(soc("sam")), NOW));
    assert_eq!(closed.state, CaseState::ClosedExpected);
}

#[test]
fn a_vouch_given_in_advance_closes_the_case_it_covers_or_notes_why_not() {
    use vouch_playbook::advance::{AdvanceKind, AdvanceVouch, Applicability, MovementScope};
    use vouch_playbook::engine::{AdvanceOutcome, PushRecord};
    let playbook = Playbook::builtin();
    let (case, effects) = opened(helpdesk_facts(true));
    let scope = MovementScope::of(case.alert(), &playbook).expect("a named movement");
    assert_eq!((scope.account.as_str(), scope.source.as_str(), scope.target.as_str()), ("alice", "ws-17", "ws-42"));
    let mut alice = member("alice");
    alice.name = "Alice Martin".to_string();
    let vouch = AdvanceVouch {
        id: "D-3".to_string(),
        kind: AdvanceKind::Declaration { reason: "patching WS-42".to_string() },
        scope: vouch_playbook::advance::VouchScope::Hosts(scope.hosts()),
        by: alice,
        verified: PushRecord {
            provider: "Duo Push".to_string(),
            transaction: "tx-9".to_string(),
            number_to_pick: None,
        },
        seconded_by: None,
        target_criticality: None,
        valid_from: NOW,
        valid_until: NOW.plus_minutes(60),
        revoked: None,
    };

    let (closed, closing) = case.clone().vouched_in_advance(effects.clone(), &vouch, &Applicability::Vouches, NOW);
    assert_eq!(closed.state, CaseState::ClosedExpected);
    assert_eq!(closed.advance.as_ref().map(|note| &note.outcome), Some(&AdvanceOutcome::Vouched));
    let resolution = closed.resolution.as_ref().expect("resolved");
    assert!(resolution.text.as_deref().is_some_and(|text| text.contains("D-3") && text.contains("patching WS-42")));
    assert_eq!(resolution.verified.as_ref().map(|push| push.transaction.as_str()), Some("tx-9"));
    assert!(!closing.iter().any(|effect| matches!(effect, Effect::PingPerson { .. })), "nobody is asked: {closing:?}");
    assert_eq!(closing[0], Effect::PostCard);
    assert!(closing
        .iter()
        .any(|effect| matches!(effect, Effect::Announce { message } if message.contains("in advance"))));

    // Repeats of the movement join the closed case while the declaration covers it.
    assert!(closed.takes_repeats(Some(&vouch), NOW.plus_minutes(59)));
    assert!(!closed.takes_repeats(Some(&vouch), NOW.plus_minutes(60)), "not once the declaration ended");
    let mut revoked = vouch.clone();
    revoked.revoked = Some(vouch_playbook::engine::Decision { by: soc("sam"), at: NOW, text: None, verified: None });
    assert!(!closed.takes_repeats(Some(&revoked), NOW.plus_minutes(1)), "not once it is revoked");
    assert!(!closed.takes_repeats(None, NOW.plus_minutes(1)), "not when the vouch is gone");
    let (plainly_closed, _) = accepted(apply(
        &playbook,
        case.clone(),
        CaseEvent::Close { by: soc("sam"), justification: "ok".to_string() },
        NOW,
    ));
    assert!(!plainly_closed.takes_repeats(Some(&vouch), NOW), "a case closed by a person takes no repeats");
    assert!(case.takes_repeats(None, NOW), "an open case does");

    let (marked, marking) = case.clone().vouched_in_advance(effects.clone(), &vouch, &Applicability::WouldVouch, NOW);
    assert_eq!(marked.state, CaseState::AwaitingConfirmation, "triaged as usual");
    assert!(marking.iter().any(|effect| matches!(effect, Effect::PingPerson { .. })));
    assert_eq!(marked.advance.as_ref().map(|note| &note.outcome), Some(&AdvanceOutcome::WouldHaveVouched));

    let withheld = Applicability::Withheld { reason: "the engine raised concerns on this alert".to_string() };
    let (noted, noting) = case.clone().vouched_in_advance(effects.clone(), &vouch, &withheld, NOW);
    assert_eq!(noted.state, CaseState::AwaitingConfirmation);
    assert!(noting.iter().any(|effect| matches!(effect, Effect::Announce { message } if message.starts_with("D-3: the engine raised concerns"))));

    let (same, same_effects) =
        case.clone().vouched_in_advance(effects.clone(), &vouch, &Applicability::NotThisMovement, NOW);
    assert_eq!((same, same_effects), (case, effects));
}

#[test]
fn a_standing_approval_is_proposed_from_a_vouched_case_by_its_confirmer_or_the_soc_seconded_and_revoked() {
    use vouch_playbook::advance::{
        approval_offered, propose_approval, revoke, second, AdvanceKind, Applicability, MovementScope, VouchScope,
    };
    use vouch_playbook::engine::PushRecord;
    let playbook = verifying_playbook();
    let with_discord = |mut actor: Actor, id: &str| {
        actor.discord_id = Some(Snowflake::parse(id).expect("id"));
        actor
    };
    let frank = with_discord(member("frank"), "102");
    let sam = with_discord(soc("sam"), "104");
    let tess = with_discord(soc("tess"), "106");
    let (case, _) = opened(helpdesk_facts(true));
    assert!(!approval_offered(&case, &playbook), "an open case is not expected again");
    let confirm = CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: frank.clone(), justification: None };
    let (vouched, _) = accepted(apply(&playbook, case.clone(), confirm, NOW));
    assert_eq!(vouched.state, CaseState::ClosedExpected);
    assert!(approval_offered(&vouched, &playbook));
    assert!(!approval_offered(&vouched, &Playbook::builtin()), "nothing to verify a proposal with");

    type Proposal = (&'static str, Actor, u32, Option<&'static str>);
    let proposals: Vec<Proposal> = vec![
        ("the confirmer who vouched", frank.clone(), 30, None),
        ("the SOC", sam.clone(), 90, None),
        ("someone else", with_discord(member("mallory"), "777"), 30, Some("only the person who vouched")),
        ("no chat account", member("frank"), 30, Some("only a person in the directory")),
        ("longer than 90 days", frank.clone(), 91, Some("1 to 90 days")),
        ("no days", frank.clone(), 0, Some("1 to 90 days")),
    ];
    for (name, by, days, refusal) in proposals {
        match (propose_approval(&vouched, &playbook, &by, days, NOW), refusal) {
            (Ok(_), None) => {}
            (Err(reason), Some(fragment)) => assert!(reason.contains(fragment), "{name}: {reason}"),
            (got, _) => panic!("{name}: {got:?}"),
        }
    }

    // Exactly the case's movement, a monitor period first, its push due within the push lifetime.
    let pending = propose_approval(&vouched, &playbook, &frank, 30, NOW).expect("proposed");
    let scope = MovementScope::of(vouched.alert(), &playbook).expect("scope");
    assert_eq!(pending.scope, VouchScope::Exact(scope));
    let day = 24 * 60;
    assert_eq!(
        pending.kind,
        AdvanceKind::StandingApproval { from_case: vouched.id, monitor_until: NOW.plus_minutes(7 * day) }
    );
    assert_eq!((pending.valid_until, pending.expires_at), (NOW.plus_minutes(30 * day), NOW.plus_minutes(2)));

    // A case a vouch in advance closed does not start another.
    let verified = PushRecord { provider: "Duo Push".to_string(), transaction: "tx".to_string(), number_to_pick: None };
    let approval = pending.clone().made("A-1".to_string(), verified);
    let (closed_by_approval, _) = case.clone().vouched_in_advance(Vec::new(), &approval, &Applicability::Vouches, NOW);
    let refusal = propose_approval(&closed_by_approval, &playbook, &sam, 30, NOW).expect_err("refused");
    assert!(refusal.contains("was closed by A-1"), "{refusal}");

    // Not critical: in force without a second. Critical: only a second, other SOC member makes it so.
    assert!(!approval.awaits_second());
    assert!(second(&approval, &tess, NOW).is_err());
    let mut critical = approval.clone();
    critical.by = sam.clone();
    critical.target_criticality = Some(Criticality::Critical);
    assert!(critical.awaits_second());
    for (name, by, fragment) in
        [("the proposer", sam.clone(), "someone other than sam"), ("not SOC", frank.clone(), "only a SOC member")]
    {
        let reason = second(&critical, &by, NOW).expect_err(name);
        assert!(reason.contains(fragment), "{name}: {reason}");
    }
    assert_eq!(second(&critical, &tess, NOW).map(|decision| decision.by), Ok(tess.clone()));

    // Revoked by the SOC or by whoever made it; by nobody else, and not twice.
    assert!(revoke(&approval, &frank, NOW).is_ok(), "frank made it");
    assert!(revoke(&approval, &tess, NOW).is_ok(), "the SOC");
    let reason = revoke(&approval, &with_discord(member("mallory"), "777"), NOW).expect_err("refused");
    assert!(reason.contains("only the SOC or frank"), "{reason}");
    let mut revoked = approval.clone();
    revoked.revoked = revoke(&approval, &tess, NOW).ok();
    assert!(revoke(&revoked, &tess, NOW).expect_err("twice").contains("no longer in force"));
    assert!(revoke(&approval, &tess, NOW.plus_minutes(30 * day)).is_err(), "nor once it ended");
}

#[test]
fn a_repeat_is_recorded_by_what_differs_from_the_first_alert_never_a_second_copy() {
    use vouch_playbook::cases::{
        fold_repeat, grouped_record, recorded_alert_ids, repeat_entry, MOST_REPEATS_PER_RECORD,
    };
    let first = native("WS-17", "WS-42", "alice", "rdp", json!({"id": "a-1", "port": 3389}));
    let same = native("WS-17.corp", "WS-42", "alice", "rdp", json!({"id": "a-2", "port": 3389}));
    let other_port = native("WS-17", "WS-42", "alice", "rdp", json!({"id": "a-3", "port": 3390, "logon_type": 10}));
    assert_eq!(repeat_entry(&first, &first), json!({"received_at": NOW, "id": "a-1"}), "nothing differs");
    assert_eq!(repeat_entry(&first, &same)["differs"], json!({"source": {"hostname": "WS-17.corp"}}));
    let entry = repeat_entry(&first, &other_port);
    assert_eq!(entry["differs"], json!({"port": 3390, "logon_type": 10}));
    assert!(entry.get("raw").is_none() && !entry.to_string().contains("vouch_alert"), "no payload: {entry}");

    // Repeats written together share one record, up to a bound.
    let mut record = grouped_record(repeat_entry(&first, &same), 2);
    assert!(fold_repeat(&mut record, &entry, 3));
    assert_eq!(record["alert_count"], 3);
    assert_eq!(
        recorded_alert_ids("alert.grouped", &record, "native"),
        [("native".to_string(), "a-2".to_string()), ("native".to_string(), "a-3".to_string())]
    );
    for count in 4..=(MOST_REPEATS_PER_RECORD as u64 + 1) {
        fold_repeat(&mut record, &entry, count);
    }
    assert_eq!(record["repeats"].as_array().map(Vec::len), Some(MOST_REPEATS_PER_RECORD));
    assert!(!fold_repeat(&mut record, &entry, 999), "a full record takes no more");
    assert!(!fold_repeat(&mut json!({"alert": {}}), &entry, 2), "only a repeats record folds");
}

#[test]
fn the_opening_record_keeps_the_normalized_alert_and_ties_the_raw_payload_by_its_digest() {
    let alert = native("WS-17", "WS-42", "alice", "rdp", json!({"id": "a-1"}));
    let record = vouch_playbook::cases::opening_record(&alert, 1);
    assert!(record["alert"].get("raw").is_none(), "{record}");
    assert_eq!(record["alert"]["source"]["hostname"], "WS-17");
    let digest = record["raw_sha256"].as_str().expect("a digest");
    assert_eq!(digest.len(), 64);
    let mut changed = alert.clone();
    changed.raw["id"] = json!("a-2");
    assert_ne!(vouch_playbook::cases::opening_record(&changed, 1)["raw_sha256"], record["raw_sha256"]);
}
