//! Vouch's push verifiers against the Duo and Okta simulators over loopback: what each answer
//! of the person, and each fault of the provider, becomes. Anything but an approved push is
//! never "approved"; a request the vendor would refuse (a bad signature, a bad token) is refused.

use std::time::Duration;

use vouch::verification::{
    from_settings, Provider, PushRequest, PushStatus, PushTransaction, PushVerifier, VerificationError,
};
use vouch_config::{DuoSettings, OktaSettings, PushProviderSettings, Secret, VerificationSettings};
use vouch_tests::duo_simulator::{DuoFault, DuoSimulator, DuoUser, DuoWorld, PushAnswer};
use vouch_tests::okta_simulator::{OktaFault, OktaSimulator, OktaUser, OktaWorld};

const INTEGRATION_KEY: &str = "DIWJ8X6AEYOR5OMC6TQ1";
const SECRET_KEY: &str = "Zh5eGmUq9zpfQnyUIu5OL9iWoMMv5ZNmk3zLJ4Ep";

fn settings(provider: PushProviderSettings) -> VerificationSettings {
    VerificationSettings {
        provider,
        username_template: "{id}".to_string(),
        timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(2),
        poll_every: Duration::from_millis(100),
        require_linked: false,
        approval_monitor_days: 7,
        policy: Default::default(),
    }
}

fn duo_verifier(simulator: &DuoSimulator, secret_key: &str) -> Box<dyn PushVerifier> {
    from_settings(&settings(PushProviderSettings::Duo(DuoSettings {
        api_url: simulator.base(),
        integration_key: INTEGRATION_KEY.to_string(),
        secret_key: Secret::new(secret_key.to_string(), "env:VOUCH_DUO_SECRET_KEY".to_string()),
        ca_file: None,
    })))
    .expect("a verifier")
}

fn okta_verifier(simulator: &OktaSimulator, token: &str, number_matching: bool) -> Box<dyn PushVerifier> {
    from_settings(&settings(PushProviderSettings::Okta(OktaSettings {
        org_url: simulator.base(),
        api_token: Secret::new(token.to_string(), "env:VOUCH_OKTA_API_TOKEN".to_string()),
        number_matching,
        ca_file: None,
    })))
    .expect("a verifier")
}

fn request(username: &str) -> PushRequest {
    PushRequest { username: username.to_string(), summary: "alice RDP from WS-17 to SRV-DB-01".to_string() }
}

/// Sends a push and polls it until it is no longer waiting (at most ten polls).
async fn outcome(verifier: &dyn PushVerifier, username: &str) -> Result<Vec<PushStatus>, VerificationError> {
    let sent = verifier.send_push(&request(username)).await?;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let status = verifier.push_status(&sent.transaction).await?;
        seen.push(status);
        if status != PushStatus::Waiting {
            break;
        }
    }
    Ok(seen)
}

pub(crate) fn duo_world() -> DuoWorld {
    let push = |answer| DuoUser::Push { answer, on_poll: 2 };
    let mut world = DuoWorld::default();
    world.integration_key = INTEGRATION_KEY.to_string();
    world.secret_key = SECRET_KEY.to_string();
    world.users = [
        ("alice", push(PushAnswer::Approve)),
        ("bob", push(PushAnswer::Deny)),
        ("carol", push(PushAnswer::Fraud)),
        ("dave", push(PushAnswer::Timeout)),
        ("erin", DuoUser::Bypass),
        ("frank", DuoUser::Denied),
        ("grace", DuoUser::NoPushDevice),
    ]
    .into_iter()
    .map(|(name, user)| (name.to_string(), user))
    .collect();
    world
}

#[tokio::test]
async fn duo_pushes_are_signed_as_duo_checks_and_only_an_approval_is_approved() {
    let duo = DuoSimulator::start(duo_world()).await;
    let verifier = duo_verifier(&duo, SECRET_KEY);
    assert_eq!(verifier.provider(), Provider::Duo);

    let waiting_then = |status| Ok(vec![PushStatus::Waiting, status]);
    for (username, expected) in [
        ("alice", waiting_then(PushStatus::Approved)),
        ("bob", waiting_then(PushStatus::Denied)),
        ("carol", waiting_then(PushStatus::Fraud)),
        ("dave", waiting_then(PushStatus::TimedOut)),
    ] {
        let seen = outcome(verifier.as_ref(), username).await.map_err(|error| error.to_string());
        assert_eq!(seen, expected, "{username}");
    }
    // Users who cannot prove anything with a push: no push is sent.
    for (username, refusal) in
        [("erin", "without a second factor"), ("frank", "disabled"), ("grace", "no push-capable"), ("nobody", "Enroll")]
    {
        let error = verifier.send_push(&request(username)).await.expect_err(username).to_string();
        assert!(error.contains(refusal), "{username}: {error}");
    }

    let world = duo.world();
    assert_eq!(world.refused_signatures, 0);
    let pushes: Vec<_> = world.requests.iter().filter(|request| request.path == "/auth/v2/auth").collect();
    assert_eq!(pushes.len(), 4, "one push per user who can take one");
    for push in pushes {
        assert_eq!(push.method, "POST");
        assert_eq!(push.params.get("factor").map(String::as_str), Some("push"));
        assert_eq!(push.params.get("async").map(String::as_str), Some("1"));
        assert_eq!(push.params.get("device").map(String::as_str), Some("auto"));
        // What the phone shows: Duo's pushinfo, itself form-encoded.
        assert_eq!(
            push.params.get("pushinfo").map(String::as_str),
            Some("asked=alice%20RDP%20from%20WS-17%20to%20SRV-DB-01&from=Vouch")
        );
    }
    assert!(world
        .requests
        .iter()
        .filter(|request| request.path == "/auth/v2/auth_status")
        .all(|request| request.method == "GET"));
}

#[tokio::test]
async fn duo_refuses_a_wrong_secret_and_faults_are_never_approvals() {
    let duo = DuoSimulator::start(duo_world()).await;
    let forged = duo_verifier(&duo, "0000000000000000000000000000000000000000");
    let error = forged.send_push(&request("alice")).await.expect_err("a bad signature is refused").to_string();
    assert!(error.contains("401") && error.contains("Invalid signature"), "{error}");
    assert_eq!(duo.world().refused_signatures, 1);
    assert!(duo.world().requests.is_empty(), "nothing was accepted");

    let verifier = duo_verifier(&duo, SECRET_KEY);
    for fault in [DuoFault::ServerError, DuoFault::Malformed, DuoFault::Slow(Duration::from_secs(6))] {
        duo.world().faults.push(fault);
        let error = verifier.send_push(&request("alice")).await.expect_err("a fault is not a push sent").to_string();
        assert!(!error.is_empty(), "{fault:?}");
        // The same fault while polling: the push stays unverified.
        let sent = verifier.send_push(&request("alice")).await.expect("sent");
        duo.world().faults.push(fault);
        assert!(verifier.push_status(&sent.transaction).await.is_err(), "{fault:?} while polling");
    }
    // A transaction id that was never issued is refused by Duo, not approved.
    let unknown = PushTransaction { provider: Provider::Duo, id: "not-a-txid".to_string() };
    assert!(verifier.push_status(&unknown).await.is_err());
}

fn okta_world() -> OktaWorld {
    let mut suspended = OktaUser::active("00u4suspended0000", "sam@corp.example", PushAnswer::Approve);
    suspended.status = "SUSPENDED".to_string();
    let mut unenrolled = OktaUser::active("00u5nopush0000000", "uma@corp.example", PushAnswer::Approve);
    unenrolled.push_enrolled = false;
    let mut world = OktaWorld::default();
    world.api_token = "00Okta-api-token-of-vouch".to_string();
    world.users = vec![
        OktaUser::active("00u1alice00000000", "alice@corp.example", PushAnswer::Approve),
        OktaUser::active("00u2bob0000000000", "bob@corp.example", PushAnswer::Deny),
        OktaUser::active("00u3dave000000000", "dave@corp.example", PushAnswer::Timeout),
        suspended,
        unenrolled,
    ];
    world
}

#[tokio::test]
async fn okta_verify_pushes_with_number_matching_and_only_an_approval_is_approved() {
    let okta = OktaSimulator::start(okta_world()).await;
    let verifier = okta_verifier(&okta, "00Okta-api-token-of-vouch", true);
    assert_eq!(verifier.provider(), Provider::Okta);

    // The person is shown the number Okta asks them to pick.
    let sent = verifier.send_push(&request("alice@corp.example")).await.expect("sent");
    assert_eq!(sent.number_to_pick, okta.world().last_number);
    assert!(sent.number_to_pick.is_some());
    let challenge = okta.world().requests.iter().rev().find(|request| request.path.ends_with("/verify")).cloned();
    assert_eq!(
        challenge.and_then(|request| request.body),
        Some(serde_json::json!({"useNumberMatchingChallenge": true}))
    );

    let waiting_then = |status| Ok(vec![PushStatus::Waiting, status]);
    for (username, expected) in [
        ("alice@corp.example", waiting_then(PushStatus::Approved)),
        ("bob@corp.example", waiting_then(PushStatus::Denied)),
        ("dave@corp.example", waiting_then(PushStatus::TimedOut)),
    ] {
        let seen = outcome(verifier.as_ref(), username).await.map_err(|error| error.to_string());
        assert_eq!(seen, expected, "{username}");
    }
    for (username, refusal) in [
        ("sam@corp.example", "SUSPENDED"),
        ("uma@corp.example", "no push-capable"),
        ("nobody@corp.example", "does not know"),
    ] {
        let error = verifier.send_push(&request(username)).await.expect_err(username).to_string();
        assert!(error.contains(refusal), "{username}: {error}");
    }

    // Without number matching the challenge has no body and no number.
    let plain = okta_verifier(&okta, "00Okta-api-token-of-vouch", false);
    let sent = plain.send_push(&request("alice@corp.example")).await.expect("sent");
    assert_eq!(sent.number_to_pick, None);
    let challenge = okta.world().requests.iter().rev().find(|request| request.path.ends_with("/verify")).cloned();
    assert_eq!(challenge.map(|request| request.body), Some(None));
    assert_eq!(okta.world().refused_tokens, 0);
}

#[tokio::test]
async fn okta_refuses_a_bad_token_and_faults_are_never_approvals() {
    let okta = OktaSimulator::start(okta_world()).await;
    let forged = okta_verifier(&okta, "00Okta-someone-elses-token", true);
    let error = forged.send_push(&request("alice@corp.example")).await.expect_err("refused").to_string();
    assert!(error.contains("401") && error.contains("E0000011"), "{error}");
    assert_eq!(okta.world().refused_tokens, 1);

    let verifier = okta_verifier(&okta, "00Okta-api-token-of-vouch", true);
    for fault in [OktaFault::ServerError, OktaFault::Malformed] {
        okta.world().faults.push(fault);
        assert!(verifier.send_push(&request("alice@corp.example")).await.is_err(), "{fault:?}");
        let sent = verifier.send_push(&request("alice@corp.example")).await.expect("sent");
        okta.world().faults.push(fault);
        assert!(verifier.push_status(&sent.transaction).await.is_err(), "{fault:?} while polling");
    }
    // A poll link on another host is not followed: the push is not taken as sent.
    okta.world().foreign_poll_link_next = true;
    let error = verifier.send_push(&request("alice@corp.example")).await.expect_err("not followed").to_string();
    assert!(error.contains("not this organisation's link"), "{error}");
    // A transaction id naming a path of its own is refused before any request.
    let count = okta.world().requests.len();
    for tampered in ["00u1alice00000000/../../../admin", "00u1alice00000000/opf/../x", "a/b"] {
        let transaction = PushTransaction { provider: Provider::Okta, id: tampered.to_string() };
        assert!(verifier.push_status(&transaction).await.is_err(), "{tampered}");
    }
    assert_eq!(okta.world().requests.len(), count);
}

pub(crate) const BOB: u64 = 100_000_000_000_000_002;
const BOB_ID: &str = "100000000000000002";
pub(crate) const ALICE: u64 = 100_000_000_000_000_001;
pub(crate) const SAM: u64 = 100_000_000_000_000_004;
/// A second SOC member, so a case whose push was denied can be closed by two.
pub(crate) const TESS: u64 = 100_000_000_000_000_006;
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A Vouch talking to the Discord simulator and verifying answers with the Duo simulator;
/// `extra` goes in `[verification]`.
pub(crate) fn verified_workspace(
    simulator: &discord_simulator::Simulator,
    duo: &DuoSimulator,
    extra: &str,
) -> crate::support::Workspace {
    let workspace = crate::support::Workspace::discord(simulator);
    std::fs::write(workspace.config().with_file_name("duo.secret"), SECRET_KEY).expect("write");
    workspace.append_settings(&format!(
        "[verification]\nprovider = \"duo\"\ntimeout_seconds = 300\npoll_interval_ms = 100\n{extra}\n\
         [verification.duo]\napi_url = \"{}\"\nintegration_key = \"{INTEGRATION_KEY}\"\nsecret_key = {{ file = \"duo.secret\" }}\n",
        duo.base()
    ));
    workspace
}

/// Waits until Vouch has sent Discord a message saying `text`.
pub(crate) async fn told(simulator: &discord_simulator::Simulator, what: &str, text: &str) {
    simulator
        .wait_for(what, WAIT, |world| {
            world
                .requests
                .iter()
                .filter_map(|request| request.body.as_ref())
                .any(|body| body["content"].as_str().is_some_and(|content| content.contains(text)))
                .then_some(())
        })
        .await;
}

fn set_bob(duo: &DuoSimulator, answer: PushAnswer, on_poll: u32) {
    duo.world().users.insert("bob".to_string(), DuoUser::Push { answer, on_poll });
}

/// Alice reaches Bob's high-criticality database server; Bob is asked and clicks Expected.
async fn bob_answers_expected(
    simulator: &discord_simulator::Simulator,
    vouch: &crate::support::Running,
    alert_id: &str,
    source: &str,
) -> (String, serde_json::Value) {
    let (status, body) =
        crate::support::post_alert(&vouch.base, &crate::support::native_alert(alert_id, source, "SRV-DB-01", "alice"))
            .await;
    assert_eq!(status, 202, "{body}");
    let case_id = body["case_id"].as_str().expect("case id").to_string();
    let card = crate::support::card(simulator, &case_id).await;
    let ping = crate::discord::ping_for(simulator, &card, BOB).await;
    let clicked = simulator.click(BOB, ping.id, &crate::discord::button(&ping, "Expected"));
    let answer = simulator.response(clicked, WAIT).await;
    (case_id, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_on_a_high_system_counts_once_the_push_is_approved_and_a_denied_push_takes_two_soc_members() {
    let members: [(u64, &str, &[u64]); 4] = [
        (ALICE, "alice", &[]),
        (BOB, "bob", &[]),
        (SAM, "sam", &[crate::support::SOC_ROLE]),
        (TESS, "tess", &[crate::support::SOC_ROLE]),
    ];
    let simulator = crate::support::guild(true, &members).await;
    let duo = DuoSimulator::start(duo_world()).await;
    set_bob(&duo, PushAnswer::Approve, 3);
    let workspace = verified_workspace(&simulator, &duo, "");
    let vouch = workspace.start();

    // 1. Approved: the click is answered at once and held; the push is approved; it counts,
    //    verified, and the card says so.
    let (approved_case, answer) = bob_answers_expected(&simulator, &vouch, "edr-v1", "WS-17").await;
    assert_eq!(answer["type"], 7, "{answer}");
    assert!(answer.to_string().contains("counts once they approve the push"), "{answer}");
    let closed =
        crate::support::case_until(&vouch.base, &approved_case, WAIT, "the approved answer to count", |case| {
            case["state"] == "closed_expected"
        })
        .await;
    let verdict = &closed["confirmers"][0]["answers"][0];
    assert_eq!(verdict["verified"]["provider"], "Duo Push", "{closed}");
    assert!(closed["resolution"]["verified"]["transaction"].as_str().is_some_and(|txid| !txid.is_empty()));
    let kinds: Vec<&str> =
        closed["events"].as_array().expect("events").iter().filter_map(|event| event["kind"].as_str()).collect();
    for kind in ["click.confirm", "verification.push_sent", "verification.finished"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let event = |case: &serde_json::Value, kind: &str| {
        case["events"].as_array().expect("events").iter().find(|event| event["kind"] == kind).cloned().expect(kind)
    };
    assert_eq!(event(&closed, "click.confirm")["detail"]["verification"], "held for a push");
    let card = crate::support::card(&simulator, &approved_case).await;
    simulator
        .wait_for("the card to say the answer was verified", WAIT, |world| {
            world
                .channel_messages(crate::support::TRIAGE_CHANNEL)
                .into_iter()
                .find(|message| message.id == card.id)
                .filter(|message| message.json.to_string().contains("verified with Duo Push"))
                .cloned()
        })
        .await;
    {
        let world = duo.world();
        let push = world.requests.iter().find(|request| request.path == "/auth/v2/auth").expect("a push");
        assert_eq!(push.params.get("username").map(String::as_str), Some("bob"));
        assert_eq!(world.refused_signatures, 0);
    }

    // 2. Denied: the answer does not count, the SOC is told, and closing takes two SOC members.
    set_bob(&duo, PushAnswer::Deny, 2);
    let (denied_case, _) = bob_answers_expected(&simulator, &vouch, "edr-v2", "WS-42").await;
    let case = crate::support::case_until(&vouch.base, &denied_case, WAIT, "the denied push to be recorded", |case| {
        !case["push_denied"].is_null()
    })
    .await;
    assert_ne!(case["state"], "closed_expected");
    assert!(case["concerns"].to_string().contains("denied the push"), "{case}");
    told(&simulator, "the SOC to be told of the denied push", "denied the push").await;
    let card = crate::support::card(&simulator, &denied_case).await;
    let close = crate::discord::button(&card, "Close as expected");
    for (who, expected_state) in [(SAM, "awaiting_confirmation"), (TESS, "closed_expected")] {
        let clicked = simulator.click(who, card.id, &close);
        assert_eq!(simulator.response(clicked, WAIT).await["type"], 9, "a form opens");
        let submitted = simulator.submit_modal(
            who,
            crate::support::TRIAGE_CHANNEL,
            Some(card.id),
            &close,
            &[("justification", "Bob was on leave; the DBA team confirmed the job")],
        );
        simulator.response(submitted, WAIT).await;
        let (_, case) = crate::support::get_json(&vouch.base, &format!("/api/v1/cases/{denied_case}")).await;
        assert_eq!(case["state"], expected_state, "{case}");
        assert_eq!(case["close_asked_by"]["by"]["name"], "Sam Okafor", "{case}");
        // Closing a high (not critical) system needs no push, and its record says so.
        assert_eq!(event(&case, "form.close")["detail"]["verification"], "not required", "{case}");
    }

    // 3. Timed out: not counted; Bob may answer again.
    set_bob(&duo, PushAnswer::Timeout, 2);
    let (timed_out_case, _) = bob_answers_expected(&simulator, &vouch, "edr-v3", "10.0.0.99").await;
    let case = crate::support::case_until(&vouch.base, &timed_out_case, WAIT, "the push to end", |case| {
        case["events"].to_string().contains("verification.finished")
    })
    .await;
    assert_eq!(case["state"], "awaiting_confirmation", "{case}");
    assert!(
        case["pending_verification"].is_null()
            && case["confirmers"][0]["answers"].as_array().is_some_and(Vec::is_empty),
        "{case}"
    );

    // 4. SIGKILL while a push waits: after the restart the push is polled again and counts.
    set_bob(&duo, PushAnswer::Approve, 1_000_000);
    let (resumed_case, _) = bob_answers_expected(&simulator, &vouch, "edr-v4", "10.0.0.98").await;
    crate::support::case_until(&vouch.base, &resumed_case, WAIT, "the push to be recorded as sent", |case| {
        !case["pending_verification"]["push"].is_null()
    })
    .await;
    vouch.kill_hard();
    set_bob(&duo, PushAnswer::Approve, 1);
    let vouch = workspace.start();
    let resumed = crate::support::case_until(&vouch.base, &resumed_case, WAIT, "the resumed push to count", |case| {
        case["state"] == "closed_expected"
    })
    .await;
    assert_eq!(resumed["confirmers"][0]["answers"][0]["verified"]["provider"], "Duo Push");
    let pushes = duo.world().requests.iter().filter(|request| request.path == "/auth/v2/auth").count();
    assert_eq!(pushes, 4, "one push per answer, none sent twice across the restart");

    crate::discord::assert_conformant(&simulator, &vouch);
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_failing_or_garbled_provider_never_verifies_and_every_click_is_still_answered_in_time() {
    let members: [(u64, &str, &[u64]); 2] = [(ALICE, "alice", &[]), (BOB, "bob", &[])];
    let simulator = crate::support::guild(true, &members).await;
    let duo = DuoSimulator::start(duo_world()).await;
    set_bob(&duo, PushAnswer::Approve, 1);
    // One second per call to Duo: a slower answer is a failure, never a wait past Discord's 3 s.
    let workspace = verified_workspace(&simulator, &duo, "request_timeout_seconds = 1");
    let vouch = workspace.start();
    let (status, body) =
        crate::support::post_alert(&vouch.base, &crate::support::native_alert("edr-f1", "WS-17", "SRV-DB-01", "alice"))
            .await;
    assert_eq!(status, 202, "{body}");
    let case_id = body["case_id"].as_str().expect("case id").to_string();
    let card = crate::support::card(&simulator, &case_id).await;
    let ping = crate::discord::ping_for(&simulator, &card, BOB).await;
    let expected = crate::discord::button(&ping, "Expected");
    let faults = [DuoFault::Slow(Duration::from_secs(3)), DuoFault::ServerError, DuoFault::Malformed];
    for (index, fault) in faults.into_iter().enumerate() {
        duo.world().faults.push(fault);
        let answer = simulator.response(simulator.click(BOB, ping.id, &expected), WAIT).await;
        assert!(answer.to_string().contains("counts once they approve the push"), "{fault:?}: {answer}");
        let case = crate::support::case_until(&vouch.base, &case_id, WAIT, "the push to end", |case| {
            let finished = case["events"].as_array().into_iter().flatten();
            finished.filter(|event| event["kind"] == "verification.finished").count() == index + 1
        })
        .await;
        assert_eq!(case["state"], "awaiting_confirmation", "{fault:?}: {case}");
        assert!(case["confirmers"][0]["answers"].as_array().is_some_and(Vec::is_empty), "{fault:?}: {case}");
        let mut ended =
            case["events"].as_array().into_iter().flatten().filter(|event| event["kind"] == "verification.finished");
        assert_eq!(ended.next_back().expect("ended")["detail"]["outcome"]["outcome"], "failed", "{fault:?}: {case}");
    }
    // Every click was answered within Discord's 3 s (the simulator counts a late answer as a
    // violation, as Discord drops it).
    crate::discord::assert_conformant(&simulator, &vouch);
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}

pub(crate) const MALLORY: u64 = 100_000_000_000_000_777;

/// `/link` and `/unlink` through the simulator; the ephemeral answer's text.
pub(crate) async fn command(
    simulator: &discord_simulator::Simulator,
    user: u64,
    name: &str,
    person: Option<&str>,
) -> String {
    let options = match person {
        Some(person) => serde_json::json!([{"name": "person", "type": 3, "value": person}]),
        None => serde_json::json!([]),
    };
    let asked = simulator.slash_command(user, crate::support::TRIAGE_CHANNEL, name, options);
    let response = simulator.response(asked, WAIT).await;
    assert_eq!(response["data"]["flags"], 64, "commands answer privately: {response}");
    response["data"]["content"].as_str().unwrap_or_default().to_string()
}

/// Alice, Bob, Sam of the SOC, and Mallory whom the directory does not know.
async fn guild_with_mallory() -> discord_simulator::Simulator {
    let members: [(u64, &str, &[u64]); 4] = [
        (ALICE, "alice", &[]),
        (BOB, "bob", &[]),
        (SAM, "sam", &[crate::support::SOC_ROLE]),
        (MALLORY, "mallory", &[]),
    ];
    crate::support::guild(true, &members).await
}

/// What the API answers at `path`, once `ready` holds of it.
pub(crate) async fn api_until(
    base: &str,
    path: &str,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, answer) = crate::support::get_json(base, path).await;
        assert_eq!(status, 200, "{answer}");
        if ready(&answer) {
            return answer;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The links in force, once `ready` holds of them.
async fn links_until(base: &str, what: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    api_until(base, "/api/v1/identity/links", what, ready).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_linked_account_answers_and_only_the_persons_approved_push_links_it() {
    let simulator = guild_with_mallory().await;
    let duo = DuoSimulator::start(duo_world()).await;
    set_bob(&duo, PushAnswer::Approve, 2);
    let workspace = verified_workspace(&simulator, &duo, "require_linked = true");
    let vouch = workspace.start();
    simulator.wait_for("the commands to be registered", WAIT, |world| (world.commands.len() == 7).then_some(())).await;

    // 1. Bob's Discord account is named by the directory but not linked: his answer is refused.
    let (case_id, answer) = bob_answers_expected(&simulator, &vouch, "edr-l1", "WS-17").await;
    assert!(answer.to_string().contains("link this account first with /link"), "{answer}");
    assert_eq!(answer["data"]["flags"], 64, "refused privately: {answer}");

    // 2. Mallory asks to be Bob; Bob denies the push: nothing is linked and the SOC is told.
    set_bob(&duo, PushAnswer::Deny, 2);
    let sent = command(&simulator, MALLORY, "link", Some("bob")).await;
    assert!(sent.contains("A push was sent to Bob Stone's phone"), "{sent}");
    told(&simulator, "the SOC to be told of the refused link", "may not be who it claims").await;
    let links = links_until(&vouch.base, "the refused request to end", |links| {
        links["pending"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(links["links"], serde_json::json!([]), "{links}");

    // 3. Bob links his own account: his approval binds it, and his answer then counts (verified).
    set_bob(&duo, PushAnswer::Approve, 2);
    let sent = command(&simulator, BOB, "link", Some("bob")).await;
    assert!(sent.contains("A push was sent"), "{sent}");
    let links = links_until(&vouch.base, "Bob's account to be linked", |links| {
        links["links"].as_array().is_some_and(|links| !links.is_empty())
    })
    .await;
    assert_eq!(links["links"][0]["person"], "bob");
    assert_eq!(links["links"][0]["discord_id"], BOB.to_string());
    assert_eq!(links["links"][0]["verified"]["provider"], "Duo Push");
    let card = crate::support::card(&simulator, &case_id).await;
    let ping = crate::discord::ping_for(&simulator, &card, BOB).await;
    let clicked = simulator.click(BOB, ping.id, &crate::discord::button(&ping, "Expected"));
    let held = simulator.response(clicked, WAIT).await;
    assert!(held.to_string().contains("counts once they approve the push"), "{held}");
    crate::support::case_until(&vouch.base, &case_id, WAIT, "Bob's verified answer to count", |case| {
        case["state"] == "closed_expected"
    })
    .await;

    // 4. Mallory's account, whose last request linked nothing, must wait before asking again:
    //    no push is sent.
    let pushes_before = duo.world().requests.iter().filter(|request| request.path == "/auth/v2/auth").count();
    let cooling = command(&simulator, MALLORY, "link", Some("bob")).await;
    assert!(cooling.contains("may ask again after"), "{cooling}");
    let pushes_after = duo.world().requests.iter().filter(|request| request.path == "/auth/v2/auth").count();
    assert_eq!(pushes_after, pushes_before, "no push for a request in its cool-down");

    // A second account cannot take Bob's identity over without his approval: denied, Bob's
    // link stays as it was.
    set_bob(&duo, PushAnswer::Deny, 2);
    command(&simulator, ALICE, "link", Some("bob")).await;
    let links = links_until(&vouch.base, "the takeover request to end", |links| {
        links["pending"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(links["links"].as_array().map(Vec::len), Some(1), "{links}");
    assert_eq!(links["links"][0]["discord_id"], BOB.to_string(), "{links}");

    // 5. Links survive a restart; /unlink ends one, audited.
    assert_eq!(vouch.terminate(), 0);
    let identified = simulator.with_world(|world| world.gateway_identifies);
    let vouch = workspace.start();
    // A command reaches only a connected bot, as on Discord.
    simulator
        .wait_for("the restarted Vouch to connect", WAIT, |world| (world.gateway_identifies > identified).then_some(()))
        .await;
    links_until(&vouch.base, "the link to survive the restart", |links| {
        links["links"][0]["discord_id"].as_str() == Some(BOB_ID)
    })
    .await;
    let unlinked = command(&simulator, BOB, "unlink", None).await;
    assert!(unlinked.contains("no longer linked to bob"), "{unlinked}");
    links_until(&vouch.base, "no link left", |links| links["links"] == serde_json::json!([])).await;
    assert_eq!(command(&simulator, BOB, "unlink", None).await, "This Discord account is not linked to anyone.");
    crate::discord::assert_conformant(&simulator, &vouch);
    assert_eq!(vouch.terminate(), 0);

    workspace.assert_audit_intact();
    let kinds = workspace.audit_kinds("identity.");
    assert_eq!(
        kinds,
        [
            "identity.link_requested",
            "identity.link_refused",
            "identity.link_requested",
            "identity.linked",
            "identity.link_refused",
            "identity.link_requested",
            "identity.link_refused",
            "identity.unlinked"
        ]
    );
}

/// `/expect` with its options, through the simulator; the ephemeral answer's text.
async fn declare(simulator: &discord_simulator::Simulator, user: u64, account: &str, source: &str) -> String {
    let options = serde_json::json!([
        {"name": "source", "type": 3, "value": source},
        {"name": "target", "type": 3, "value": "SRV-DB-01"},
        {"name": "account", "type": 3, "value": account},
        {"name": "hours", "type": 4, "value": 2},
        {"name": "reason", "type": 3, "value": "patching the database, change CHG-7"},
    ]);
    let asked = simulator.slash_command(user, crate::support::TRIAGE_CHANNEL, "expect", options);
    let response = simulator.response(asked, WAIT).await;
    assert_eq!(response["data"]["flags"], 64, "commands answer privately: {response}");
    response["data"]["content"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_declared_in_advance_vouches_for_its_movement_once_verified_and_tells_the_declarer() {
    let simulator = guild_with_mallory().await;
    let duo = DuoSimulator::start(duo_world()).await;
    let workspace = verified_workspace(&simulator, &duo, "");
    let vouch = workspace.start();
    simulator.wait_for("the commands to be registered", WAIT, |world| (world.commands.len() == 7).then_some(())).await;

    // Only the account's holder declares its movements; a stranger is not even a person.
    let refused = declare(&simulator, BOB, "alice", "WS-17").await;
    assert!(refused.contains("only its holder declares"), "{refused}");
    let stranger = declare(&simulator, MALLORY, "alice", "WS-17").await;
    assert!(stranger.contains("Only a person in the directory"), "{stranger}");

    // Alice declares, approves the push (Duo user alice approves), and the declaration is in force.
    let sent = declare(&simulator, ALICE, "CORP\\alice", "WS-17").await;
    assert!(sent.contains("A push was sent to your phone") && sent.contains(r"alice from ws\-17"), "{sent}");
    let declared = api_until(&vouch.base, "/api/v1/advance", "a declaration in force", |advance| {
        advance["vouches"].as_array().is_some_and(|vouches| !vouches.is_empty())
    })
    .await;
    let declaration = &declared["vouches"][0];
    assert_eq!(declaration["id"], "D-1");
    assert_eq!(declaration["kind"]["kind"], "declaration");
    assert_eq!(declaration["verified"]["provider"], "Duo Push");
    assert_eq!(declared["pending"], serde_json::json!([]));

    // Her movement in the window closes itself, citing D-1, asks nobody, and she is told.
    let (status, body) = crate::support::post_alert(
        &vouch.base,
        &crate::support::native_alert("edr-d1", "WS-17", "SRV-DB-01", "CORP\\alice"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let case_id = body["case_id"].as_str().expect("case id").to_string();
    let (_, case) = crate::support::get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["state"], "closed_expected", "{case}");
    assert!(case["resolution"]["text"].as_str().is_some_and(|text| text.contains("D-1")), "{case}");
    assert!(case["events"][0]["detail"]["advance"]["vouch"] == "D-1", "the match is in the audit log: {case}");
    // A storm of the declared movement is that one case, not a closed case and a card per alert.
    for index in 0..5 {
        let repeat = crate::support::native_alert(&format!("edr-d1-{index}"), "WS-17", "SRV-DB-01", "alice");
        let (status, body) = crate::support::post_alert(&vouch.base, &repeat).await;
        assert_eq!((status, body["case_id"].as_str()), (202, Some(case_id.as_str())), "{body}");
    }
    let (_, case) = crate::support::get_json(&vouch.base, &format!("/api/v1/cases/{case_id}")).await;
    assert_eq!(case["alert_count"], 6, "{case}");
    told(&simulator, "Alice to be told her declaration was used", "was just used").await;
    simulator.with_world(|world| {
        let opened: Vec<&serde_json::Value> = world
            .requests
            .iter()
            .filter(|request| request.path.ends_with("/users/@me/channels"))
            .filter_map(|request| request.body.as_ref())
            .collect();
        assert_eq!(opened, [&serde_json::json!({"recipient_id": ALICE.to_string()})], "told privately, to Alice only");
    });

    // From another host it is not covered: Bob is asked as usual.
    let (_, body) =
        crate::support::post_alert(&vouch.base, &crate::support::native_alert("edr-d2", "WS-42", "SRV-DB-01", "alice"))
            .await;
    let other = body["case_id"].as_str().expect("case id").to_string();
    let card = crate::support::card(&simulator, &other).await;
    crate::discord::ping_for(&simulator, &card, BOB).await;
    let (_, case) = crate::support::get_json(&vouch.base, &format!("/api/v1/cases/{other}")).await;
    assert_eq!(case["state"], "awaiting_confirmation", "{case}");

    crate::discord::assert_conformant(&simulator, &vouch);
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
    let kinds = workspace.audit_kinds("advance.");
    assert_eq!(kinds, ["advance.declaration_requested", "advance.declared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_is_verified_with_okta_verify_and_the_number_to_pick_is_shown_where_it_was_given() {
    let simulator = guild_with_mallory().await;
    let mut world = OktaWorld::default();
    world.api_token = "00Okta-api-token-of-vouch".to_string();
    world.users = vec![OktaUser::active("00u2bob0000000000", "bob", PushAnswer::Approve)];
    let okta = OktaSimulator::start(world).await;
    let workspace = crate::support::Workspace::discord(&simulator);
    std::fs::write(workspace.config().with_file_name("okta.token"), "00Okta-api-token-of-vouch").expect("write");
    workspace.append_settings(&format!(
        "[verification]\nprovider = \"okta\"\ntimeout_seconds = 300\npoll_interval_ms = 100\n\
         [verification.okta]\norg_url = \"{}\"\napi_token = {{ file = \"okta.token\" }}\n",
        okta.base()
    ));
    let vouch = workspace.start();

    let (case_id, answer) = bob_answers_expected(&simulator, &vouch, "edr-o1", "WS-17").await;
    assert!(answer.to_string().contains("counts once they approve the push"), "{answer}");
    let closed =
        crate::support::case_until(&vouch.base, &case_id, WAIT, "Bob's Okta-verified answer to count", |case| {
            case["state"] == "closed_expected"
        })
        .await;
    assert_eq!(closed["confirmers"][0]["answers"][0]["verified"]["provider"], "Okta Verify", "{closed}");
    // Number matching: the number Okta asks for is said in the case's thread.
    let number = okta.world().last_number.expect("a number matching challenge");
    told(&simulator, "the number to pick to be shown", &format!("pick {number}")).await;
    let challenge = okta.world().requests.iter().find(|request| request.path.ends_with("/verify")).cloned();
    assert_eq!(
        challenge.and_then(|request| request.body),
        Some(serde_json::json!({"useNumberMatchingChallenge": true}))
    );
    assert_eq!(okta.world().refused_tokens, 0);
    crate::discord::assert_conformant(&simulator, &vouch);
    assert_eq!(vouch.terminate(), 0);
}
