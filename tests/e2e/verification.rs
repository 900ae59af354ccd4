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
        request_timeout: Duration::from_secs(1),
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

fn duo_world() -> DuoWorld {
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
    for fault in [DuoFault::ServerError, DuoFault::Malformed, DuoFault::Slow(Duration::from_secs(3))] {
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
