//! Standing approvals ("Expect this again") end to end: Vouch in this process with a clock the
//! test moves (approvals last days), its real Discord client against the simulator, answers and
//! proposals verified by the Duo simulator.

use std::sync::Arc;

use discord_simulator::{Simulator, StoredMessage};
use serde_json::{json, Value};
use vouch::ManualClock;
use vouch_playbook::Timestamp;
use vouch_tests::duo_simulator::{DuoSimulator, DuoUser, PushAnswer};

use crate::support::{advance, card, get_json, native_alert, post_alert, start_in_process, TRIAGE_CHANNEL};
use crate::verification::{api_until, duo_world, told, verified_workspace, ALICE, BOB, MALLORY, SAM, TESS, WAIT};

const DAY_MINUTES: u32 = 24 * 60;

/// Posts an alert; its case as the API shows it once the alert is taken.
async fn alert_case(base: &str, alert: &Value) -> Value {
    let (status, body) = post_alert(base, alert).await;
    assert_eq!(status, 202, "{body}");
    let case_id = body["case_id"].as_str().expect("case id");
    let (_, case) = get_json(base, &format!("/api/v1/cases/{case_id}")).await;
    case
}

/// The card of a case once it offers "Expect this again".
async fn card_offering_approval(simulator: &Simulator, case_id: &str) -> (StoredMessage, String) {
    let posted = card(simulator, case_id).await;
    let card = simulator
        .wait_for("the closed card to offer Expect this again", WAIT, |world| {
            world
                .message(posted.id)
                .filter(|message| message.buttons().iter().any(|(label, _, _)| label == "Expect this again"))
                .cloned()
        })
        .await;
    let button = crate::discord::button(&card, "Expect this again");
    (card, button)
}

/// A click's private answer, as text.
async fn clicked(simulator: &Simulator, user: u64, message: u64, custom_id: &str) -> String {
    let answer = simulator.response(simulator.click(user, message, custom_id), WAIT).await;
    answer["data"]["content"].as_str().unwrap_or_default().to_string()
}

/// `user` proposes expecting the case's movement again for `days`: the form, then its answer.
async fn propose(simulator: &Simulator, user: u64, card: &StoredMessage, button: &str, days: &str) -> String {
    let opened = simulator.response(simulator.click(user, card.id, button), WAIT).await;
    assert_eq!(opened["type"], 9, "a form opens: {opened}");
    let submitted = simulator.submit_modal(user, TRIAGE_CHANNEL, Some(card.id), button, &[("days", days)]);
    let answer = simulator.response(submitted, WAIT).await;
    assert_eq!(answer["data"]["flags"], 64, "answered privately: {answer}");
    answer["data"]["content"].as_str().unwrap_or_default().to_string()
}

/// `/approvals` as `user`: the private list message (its buttons are clickable).
async fn approvals(simulator: &Simulator, user: u64) -> StoredMessage {
    let asked = simulator.slash_command(user, TRIAGE_CHANNEL, "approvals", json!([]));
    let answer = simulator.response(asked, WAIT).await;
    assert_eq!(answer["data"]["flags"], 64, "answered privately: {answer}");
    let interaction = asked.to_string();
    simulator
        .wait_for("the /approvals answer", WAIT, |world| {
            world.messages.iter().find(|message| message.json["interaction_id"].as_str() == Some(&interaction)).cloned()
        })
        .await
}

/// The vouch given in advance `id`, once `ready` holds of it.
async fn vouch_until(base: &str, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let find = |advance: &Value| {
        advance["vouches"].as_array().and_then(|vouches| vouches.iter().find(|vouch| vouch["id"] == id)).cloned()
    };
    let advance =
        api_until(base, "/api/v1/advance", what, |advance| find(advance).is_some_and(|vouch| ready(&vouch))).await;
    find(&advance).expect("the vouch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standing_approval_is_verified_watched_then_vouches_for_exactly_its_movement_until_revoked_or_over() {
    let members: [(u64, &str, &[u64]); 5] = [
        (ALICE, "alice", &[]),
        (BOB, "bob", &[]),
        (SAM, "sam", &[crate::support::SOC_ROLE]),
        (TESS, "tess", &[crate::support::SOC_ROLE]),
        (MALLORY, "mallory", &[]),
    ];
    let simulator = crate::support::guild(true, &members).await;
    let mut world = duo_world();
    for person in ["bob", "sam"] {
        world.users.insert(person.to_string(), DuoUser::Push { answer: PushAnswer::Approve, on_poll: 1 });
    }
    let duo = DuoSimulator::start(world).await;
    let workspace = verified_workspace(&simulator, &duo, "approval_monitor_days = 1");
    // Monday 30 November 2026, 10:00 UTC.
    let start = Timestamp::parse("2026-11-30T10:00:00Z").expect("time");
    let clock = Arc::new(ManualClock::new(start));
    let running = start_in_process(&workspace, &clock).await;
    let base = format!("http://{}", running.address);
    let movement = |id: &str| native_alert(id, "WS-17", "SRV-DB-01", "alice");

    // 1. Bob vouches for Alice's movement to his high server (his push approved): the closed
    //    card offers "Expect this again". Alice may not propose it; Bob may, for 30 days.
    let first = alert_case(&base, &movement("a-1")).await;
    let first_id = first["id"].as_str().expect("id").to_string();
    let posted = card(&simulator, &first_id).await;
    let ping = crate::discord::ping_for(&simulator, &posted, BOB).await;
    simulator.response(simulator.click(BOB, ping.id, &crate::discord::button(&ping, "Expected")), WAIT).await;
    let (card_of_first, expect_again) = card_offering_approval(&simulator, &first_id).await;
    // Not even Alice, whose movement it is: the person asked vouched, so only they (or the SOC) may.
    let refused = clicked(&simulator, ALICE, card_of_first.id, &expect_again).await;
    assert!(refused.contains("only the person who vouched for this case, or the SOC"), "{refused}");
    let sent = propose(&simulator, BOB, &card_of_first, &expect_again, "30").await;
    assert!(sent.contains("A push was sent to your phone"), "{sent}");
    let approval = vouch_until(&base, "A-1", "A-1 to be made", |_| true).await;
    assert_eq!(approval["kind"]["kind"], "standing_approval");
    assert_eq!(approval["kind"]["from_case"], first_id.as_str());
    assert_eq!(approval["scope"]["scope"], "exact");
    assert_eq!(
        (approval["scope"]["account"].as_str(), approval["scope"]["protocol"].as_str()),
        (Some("alice"), Some("rdp"))
    );
    assert_eq!(approval["verified"]["provider"], "Duo Push");
    let day = 24 * 60 * 60 * 1000;
    assert_eq!(approval["valid_until"], json!(start.plus_millis(30 * day)));
    // Said with Discord's markdown escaped, as everything Vouch posts.
    told(&simulator, "the case's thread to hear of A-1", r"Standing approval A\-1 by Bob Stone").await;
    let pushed_to: Vec<String> = duo
        .world()
        .requests
        .iter()
        .filter(|request| request.path == "/auth/v2/auth")
        .filter_map(|request| request.params.get("username").cloned())
        .collect();
    assert_eq!(pushed_to, ["bob", "bob"], "Bob's answer, then Bob's proposal, each verified");

    // 2. Monitor period: a matching alert still makes a case, triaged as usual, marked.
    let watched = alert_case(&base, &movement("a-2")).await;
    assert_eq!(watched["state"], "awaiting_confirmation", "{watched}");
    assert_eq!(watched["advance"]["outcome"]["outcome"], "would_have_vouched", "{watched}");
    told(&simulator, "the mark to be said", r"A\-1 by Bob Stone would have vouched").await;

    // 3. Active (after the monitor day): the matching alert's case closes itself, citing A-1.
    advance(&clock, &running, DAY_MINUTES + 1);
    let vouched = alert_case(&base, &movement("a-3")).await;
    let vouched_id = vouched["id"].as_str().expect("id").to_string();
    assert_eq!(vouched["state"], "closed_expected", "{vouched}");
    assert!(vouched["resolution"]["text"].as_str().is_some_and(|text| text.contains("standing approval A-1")));
    assert_eq!(vouched["events"][0]["detail"]["advance"]["vouch"], "A-1", "the match is audited: {vouched}");
    told(&simulator, "the thread note citing A-1", r"in standing approval A\-1").await;
    let repeat = alert_case(&base, &movement("a-3b")).await;
    assert_eq!(repeat["id"], vouched_id.as_str(), "a repeat joins the vouched case");

    // 4. Another source, another account: not covered. A concern on the alert (a second account)
    //    withholds it, even for a repeat of the vouched movement, which then opens its own case.
    let other_source = alert_case(&base, &native_alert("a-4", "WS-42", "SRV-DB-01", "alice")).await;
    let other_account = alert_case(&base, &native_alert("a-5", "WS-17", "SRV-DB-01", "carol")).await;
    for other in [&other_source, &other_account] {
        assert_eq!(other["state"], "awaiting_confirmation", "{other}");
        assert!(other["advance"].is_null(), "{other}");
    }
    let mut concerning = movement("a-6");
    concerning["acting_as"] = json!("bob");
    let withheld = alert_case(&base, &concerning).await;
    assert_ne!(withheld["id"], vouched_id.as_str(), "a concerning repeat does not fold into the vouched case");
    assert_eq!(withheld["state"], "awaiting_confirmation", "{withheld}");
    assert!(
        withheld["advance"]["outcome"]["reason"].as_str().is_some_and(|reason| reason.contains("concerns")),
        "{withheld}"
    );

    // 5. /approvals: Bob sees his own, Mallory none; a forged revoke from Mallory is refused.
    //    The same movement under another technique is vouched for in a case of its own; once
    //    Bob revokes A-1, its next repeat is not folded into that case but triaged as usual.
    let mut retitled = movement("a-7");
    retitled["mitre"] = json!(["T1021"]);
    let second_vouched = alert_case(&base, &retitled).await;
    assert_eq!(second_vouched["state"], "closed_expected", "{second_vouched}");
    let listed = approvals(&simulator, BOB).await;
    assert!(listed.content().contains("**A-1** standing approval by Bob Stone"), "{}", listed.content());
    let revoke = crate::discord::button(&listed, "Revoke A-1");
    let nothing = approvals(&simulator, MALLORY).await;
    assert!(nothing.content().contains("No standing approvals"), "{}", nothing.content());
    let forged = clicked(&simulator, MALLORY, listed.id, &revoke).await;
    assert!(forged.contains("only the SOC or Bob Stone"), "{forged}");
    assert_eq!(clicked(&simulator, BOB, listed.id, &revoke).await, "A-1 is revoked.");
    retitled["id"] = json!("a-8");
    let after_revoke = alert_case(&base, &retitled).await;
    assert_ne!(after_revoke["id"], second_vouched["id"], "a revoked approval's case takes no more repeats");
    assert_eq!(after_revoke["state"], "awaiting_confirmation", "{after_revoke}");
    assert!(after_revoke["advance"].is_null(), "{after_revoke}");

    // 6. A critical system (a domain controller): Sam closes a case (his push approved) and
    //    proposes; A-2 is not in force until a second SOC member, not Sam, agrees.
    let dc = |id: &str| native_alert(id, "WS-17", "DC-01", "alice");
    let critical = alert_case(&base, &dc("c-1")).await;
    let critical_id = critical["id"].as_str().expect("id").to_string();
    let critical_card = card(&simulator, &critical_id).await;
    let close = crate::discord::button(&critical_card, "Close as expected");
    simulator.response(simulator.click(SAM, critical_card.id, &close), WAIT).await;
    let submitted = simulator.submit_modal(
        SAM,
        TRIAGE_CHANNEL,
        Some(critical_card.id),
        &close,
        &[("justification", "Alice runs the monthly AD health check")],
    );
    simulator.response(submitted, WAIT).await;
    let (critical_card, expect_again) = card_offering_approval(&simulator, &critical_id).await;
    let sent = propose(&simulator, SAM, &critical_card, &expect_again, "3").await;
    assert!(sent.contains("A push was sent"), "{sent}");
    let awaiting = vouch_until(&base, "A-2", "A-2 to be made", |_| true).await;
    assert!(awaiting["seconded_by"].is_null());
    told(&simulator, "the SOC to be asked for a second", "not in force until a second SOC member agrees").await;
    let unseconded = alert_case(&base, &dc("c-2")).await;
    assert!(
        unseconded["advance"]["outcome"]["reason"].as_str().is_some_and(|reason| reason.contains("second SOC member")),
        "{unseconded}"
    );
    let listed = approvals(&simulator, SAM).await;
    let second = crate::discord::button(&listed, "Second A-2");
    let own = clicked(&simulator, SAM, listed.id, &second).await;
    assert!(own.contains("someone other than Sam Okafor"), "{own}");
    let listed = approvals(&simulator, TESS).await;
    assert_eq!(clicked(&simulator, TESS, listed.id, &second).await, "A-2 is seconded and in force.");
    advance(&clock, &running, DAY_MINUTES + 1);
    let seconded = alert_case(&base, &dc("c-3")).await;
    assert_eq!(seconded["state"], "closed_expected", "{seconded}");
    assert!(seconded["resolution"]["text"].as_str().is_some_and(|text| text.contains("A-2")), "{seconded}");

    // 7. Over: after its three days, A-2 vouches for nothing (nor takes repeats).
    advance(&clock, &running, 2 * DAY_MINUTES);
    let over = alert_case(&base, &dc("c-4")).await;
    assert_ne!(over["id"], seconded["id"]);
    assert_ne!(over["state"], "closed_expected", "{over}");
    assert!(over["advance"].is_null(), "{over}");

    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    running.stop().await.expect("stops");
    workspace.assert_audit_intact();
    let kinds = workspace.audit_kinds("advance.");
    let count = |kind: &str| kinds.iter().filter(|recorded| *recorded == kind).count();
    for (kind, expected) in [
        ("advance.approval_refused", 1),
        ("advance.approval_requested", 2),
        ("advance.approved", 2),
        ("advance.change_refused", 2),
        ("advance.seconded", 1),
        ("advance.revoked", 1),
    ] {
        assert_eq!(count(kind), expected, "{kind} in {kinds:?}");
    }
}
