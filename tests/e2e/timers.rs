//! Reminders, timeouts, on-call and the digest, with time moved by a controllable clock (Vouch
//! runs in this process, with its real Discord client, store and timers; nothing sleeps).

use std::sync::Arc;
use std::time::Duration;

use discord_simulator::{Simulator, StoredMessage};
use vouch::ManualClock;
use vouch_playbook::Timestamp;

use crate::support::{
    advance, card, native_alert, post_alert, start_in_process as start, Workspace, ONCALL_ROLE, SOC_ROLE,
    TRIAGE_CHANNEL,
};

const BOB: u64 = 100_000_000_000_000_002;
const SAM: u64 = 100_000_000_000_000_004;
const DANA: u64 = 100_000_000_000_000_005;
const WAIT: Duration = Duration::from_secs(30);

fn thread_messages(simulator: &Simulator, thread: u64, fragment: &str) -> usize {
    simulator.with_world(|world| {
        world.channel_messages(thread).into_iter().filter(|message| message.content().contains(fragment)).count()
    })
}

async fn wait_thread(simulator: &Simulator, thread: u64, fragment: &str, count: usize) -> StoredMessage {
    simulator
        .wait_for(&format!("{count} thread message(s) with {fragment:?}"), WAIT, |world| {
            let matching: Vec<&StoredMessage> = world
                .channel_messages(thread)
                .into_iter()
                .filter(|message| message.content().contains(fragment))
                .collect();
            (matching.len() >= count).then(|| matching[count - 1].clone())
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_chased_at_the_configured_offsets_across_a_restart() {
    let members: [(u64, &str, &[u64]); 3] = [(SAM, "sam", &[SOC_ROLE]), (BOB, "bob", &[]), (DANA, "dana", &[])];
    let simulator = crate::support::guild(true, &members).await;
    let workspace = Workspace::discord(&simulator);
    workspace.append_settings(
        "[timers]\ncheck_every_seconds = 1\nbusiness_hours = \"* * 8-17 * * Mon-Fri\"\ndigest = \"0 0 8 * * *\"\n\n\
         [oncall]\npeople = [\"sam\", \"dana\"]\nhandoff = \"0 0 9 * * Mon\"\nstart = \"2026-11-02T09:00:00Z\"\n",
    );
    // Monday 30 November 2026, 10:00 UTC: business hours; Sam's on-call week.
    let clock = Arc::new(ManualClock::new(Timestamp::parse("2026-11-30T10:00:00Z").expect("time")));
    let running = start(&workspace, &clock).await;
    let base = format!("http://{}", running.address);

    // SRV-DB-01 is a high-criticality server: 60 minutes to answer, one reminder, then the next person.
    let (_, body) = post_alert(&base, &native_alert("t-1", "WS-17", "SRV-DB-01", "alice")).await;
    let case_id = body["case_id"].as_str().expect("id").to_string();
    let card = card(&simulator, &case_id).await;
    let embed = card.json["embeds"][0].to_string();
    assert!(
        embed.contains("On call now: Sam Okafor") && embed.contains("secondary Dana Kim"),
        "the card shows who is on call: {embed}"
    );
    wait_thread(&simulator, card.id, &format!("<@{BOB}>"), 1).await;

    advance(&clock, &running, 59);
    advance(&clock, &running, 2);
    wait_thread(&simulator, card.id, "Reminder:", 1).await;
    // A restart between steps neither repeats the reminder nor loses the next step.
    running.stop().await.expect("stops");
    let running = start(&workspace, &clock).await;
    let base = format!("http://{}", running.address);
    advance(&clock, &running, 61);
    wait_thread(&simulator, card.id, &format!("<@{DANA}>"), 1).await;
    advance(&clock, &running, 61);
    wait_thread(&simulator, card.id, &format!("<@{DANA}>"), 2).await;
    advance(&clock, &running, 61);
    let page = wait_thread(&simulator, card.id, "you are paged", 1).await;
    assert!(
        page.content().contains(&format!("<@{SAM}>")) && page.content().contains(&format!("<@&{ONCALL_ROLE}>")),
        "{}",
        page.content()
    );
    assert!(page.content().contains("nobody confirmed"), "{}", page.content());
    assert_eq!(thread_messages(&simulator, card.id, "Reminder: <@"), 2, "one reminder to Bob, one to Dana");
    assert_eq!(thread_messages(&simulator, card.id, &format!("<@{BOB}>")), 2, "Bob: asked once, reminded once");
    simulator.with_world(|world| {
        let page_request = world
            .requests
            .iter()
            .filter_map(|request| request.body.as_ref())
            .find(|body| body["content"].as_str().is_some_and(|content| content.contains("you are paged")))
            .expect("the page")
            .clone();
        assert_eq!(page_request["allowed_mentions"]["users"], serde_json::json!([SAM.to_string()]));
        assert_eq!(page_request["allowed_mentions"]["roles"], serde_json::json!([ONCALL_ROLE.to_string()]));
    });

    // Sam acknowledges; the case records it and the page is not chased any more.
    let acknowledge = page.buttons().into_iter().find(|(label, _, _)| label == "Acknowledge").expect("button").1;
    let clicked = simulator.click(SAM, page.id, &acknowledge);
    assert_eq!(simulator.response(clicked, WAIT).await["type"], 7);
    let case = running.service.store.case(case_id.parse().expect("id")).expect("case");
    assert_eq!(
        case.page.and_then(|page| page.acknowledged).map(|decision| decision.by.name),
        Some("Sam Okafor".to_string())
    );
    advance(&clock, &running, 120);
    wait_thread(&simulator, card.id, "acknowledged the page", 1).await;
    assert_eq!(thread_messages(&simulator, card.id, "you are paged"), 1, "an acknowledged page is not repeated");

    // Outside business hours nobody is chased; the reminder waits for Monday morning.
    clock.set(Timestamp::parse("2026-12-05T11:00:00Z").expect("time"));
    let (_, body) = post_alert(&base, &native_alert("t-2", "WS-42", "SRV-DB-01", "carol")).await;
    let second = body["case_id"].as_str().expect("id").to_string();
    let second_card = crate::support::card(&simulator, &second).await;
    wait_thread(&simulator, second_card.id, &format!("<@{BOB}>"), 1).await;
    advance(&clock, &running, 90);
    // The digest (08:00 daily) and the Saturday reminder are both due now: only the digest goes out.
    simulator
        .wait_for("the daily digest", WAIT, |world| {
            world
                .channel_messages(TRIAGE_CHANNEL)
                .into_iter()
                .find(|message| message.content().contains("Vouch digest"))
                .map(|_| ())
        })
        .await;
    assert_eq!(thread_messages(&simulator, second_card.id, "Reminder:"), 0, "Saturday: not chased");
    clock.set(Timestamp::parse("2026-12-07T08:30:00Z").expect("time"));
    running.service.timers_ready.notify_one();
    wait_thread(&simulator, second_card.id, "Reminder:", 1).await;
    let digest = simulator.with_world(|world| {
        world
            .channel_messages(TRIAGE_CHANNEL)
            .into_iter()
            .find(|message| message.content().contains("Vouch digest"))
            .map(|message| message.content().to_string())
    });
    assert!(
        digest.is_some_and(|text| text.contains("1 escalated") || text.contains("open case")),
        "the digest summarises cases"
    );
    assert!(simulator.violations().is_empty(), "{:#?}", simulator.violations());
    running.stop().await.expect("stops");
}

/// The digest is marked sent only once Discord took it: a failed post is tried again, and the
/// day's digest goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_whose_post_failed_is_posted_on_the_next_try() {
    let members: [(u64, &str, &[u64]); 1] = [(SAM, "sam", &[SOC_ROLE])];
    let simulator = crate::support::guild(true, &members).await;
    let workspace = Workspace::discord(&simulator);
    workspace.append_settings("[timers]\ncheck_every_seconds = 1\ndigest = \"0 0 8 * * *\"\n");
    // Tuesday 1 December 2026, 07:00 UTC: the schedule starts; the first digest is due at 08:00.
    let clock = Arc::new(ManualClock::new(Timestamp::parse("2026-12-01T07:00:00Z").expect("time")));
    let running = start(&workspace, &clock).await;
    let base = format!("http://{}", running.address);
    let (_, body) = post_alert(&base, &native_alert("d-1", "WS-17", "SRV-DB-01", "alice")).await;
    let first = card(&simulator, body["case_id"].as_str().expect("id")).await;
    // The card's thread and ping are out, so the channel's next request is the digest's.
    wait_thread(&simulator, first.id, &format!("<@{BOB}>"), 1).await;

    // Discord fails the next post to the triage channel: the digest's.
    simulator.refuse_path(&format!("/channels/{TRIAGE_CHANNEL}/messages"), 500, 1);
    clock.set(Timestamp::parse("2026-12-01T08:00:30Z").expect("time"));
    running.service.effects_ready.notify_one();
    let digests = |world: &discord_simulator::World| {
        world
            .channel_messages(TRIAGE_CHANNEL)
            .into_iter()
            .filter(|message| message.content().contains("Vouch digest"))
            .count()
    };
    simulator.wait_for("the digest after a failed post", WAIT, |world| (digests(world) == 1).then_some(())).await;
    simulator.with_world(|world| {
        let failed = world
            .message_posts(TRIAGE_CHANNEL)
            .into_iter()
            .filter(|request| request.status == 500)
            .filter(|request| {
                request
                    .body
                    .as_ref()
                    .and_then(|body| body["content"].as_str())
                    .is_some_and(|text| text.contains("Vouch digest"))
            })
            .count();
        let refused: Vec<(String, String)> = world
            .requests
            .iter()
            .filter(|request| request.status == 500)
            .map(|request| (request.method.clone(), request.path.clone()))
            .collect();
        assert_eq!(failed, 1, "the first post of the digest was the one that failed: {refused:?}");
    });
    // It is marked sent once Discord took it ...
    let deadline = std::time::Instant::now() + WAIT;
    while running.service.store.marker(vouch::timers::DIGEST_MARKER).expect("marker").expect("set")
        < Timestamp::parse("2026-12-01T08:00:00Z").expect("time")
    {
        assert!(std::time::Instant::now() < deadline, "the digest was not marked sent");
        running.service.effects_ready.notify_one();
        tokio::task::yield_now().await;
    }
    // ... so a later pass (one that posts the next card) does not post it again.
    let (_, body) = post_alert(&base, &native_alert("d-2", "WS-42", "SRV-DB-01", "carol")).await;
    card(&simulator, body["case_id"].as_str().expect("id")).await;
    assert_eq!(simulator.with_world(digests), 1, "one digest for the day");
    running.stop().await.expect("stops");
}
