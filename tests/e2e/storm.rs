//! Storms against a Discord that counts posts and edits of a channel's messages in one bucket
//! (5 per 5 s): new movements' cards come first and near the channel's floor, storming cards are
//! redrawn at most once per 10 s and end with the right count, and nothing is sent inside a 429's
//! `retry_after`. Over `https://` (serenity's limiter on) and `http://` (limiter off).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{guild, native_alert, post_alert, Workspace, SOC_ROLE, TRIAGE_CHANNEL};

const SAM: u64 = 100_000_000_000_000_004;
/// New movements, one every `NEW_EVERY`, while two movements storm every `STORM_EVERY`.
const NEW_MOVEMENTS: usize = 50;
const NEW_EVERY: Duration = Duration::from_millis(800);
const STORM_EVERY: Duration = Duration::from_millis(50);
/// Discord's channel budget the simulator enforces, and the floor it sets: a card a second.
const BUCKET: usize = 5;
const WINDOW: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_https_starves_no_new_card_and_spends_few_edits() {
    storm(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_http_starves_no_new_card_and_spends_few_edits() {
    storm(false).await;
}

/// The count a card shows ("N alert(s), first …").
fn shown_count(embed: &serde_json::Value) -> Option<u64> {
    embed["fields"].as_array()?.iter().find(|field| field["name"] == "Alerts")?["value"]
        .as_str()?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

async fn storm(tls: bool) {
    let simulator = guild(tls, &[(SAM, "sam", &[SOC_ROLE])]).await;
    simulator.limit_channel_posts(BUCKET, WINDOW);
    let workspace = Workspace::discord(&simulator);
    let vouch = workspace.start();

    let started = Instant::now();
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut storm_cases: Vec<String> = Vec::new();
    let mut last_new_alert = started;
    let mut ticks = tokio::time::interval(STORM_EVERY);
    let ticks_per_new = (NEW_EVERY.as_millis() / STORM_EVERY.as_millis()) as usize;
    for tick in 0..NEW_MOVEMENTS * ticks_per_new {
        ticks.tick().await;
        for (storm, source) in ["WS-STORM-1", "WS-STORM-2"].into_iter().enumerate() {
            let alert = native_alert(&format!("storm-{storm}-{tick}"), source, "SRV-FILES", "svc-backup");
            let (status, body) = post_alert(&vouch.base, &alert).await;
            assert_eq!(status, 202, "{body}");
            let case_id = body["case_id"].as_str().expect("case id").to_string();
            *acknowledged.entry(case_id.clone()).or_default() += 1;
            if !storm_cases.contains(&case_id) {
                storm_cases.push(case_id);
            }
        }
        if tick % ticks_per_new == 0 {
            let index = tick / ticks_per_new;
            let alert = native_alert(&format!("new-{index}"), "WS-17", &format!("SRV-NEW-{index}"), "alice");
            let (status, body) = post_alert(&vouch.base, &alert).await;
            assert_eq!(status, 202, "{body}");
            *acknowledged.entry(body["case_id"].as_str().expect("case id").to_string()).or_default() += 1;
            last_new_alert = Instant::now();
        }
    }
    assert_eq!(storm_cases.len(), 2, "each storm is one case: {storm_cases:?}");
    let cards = NEW_MOVEMENTS + 2;
    assert_eq!(acknowledged.len(), cards);

    // Every card once; and every card shows what was acknowledged, the storms' last counts too.
    let patience = Duration::from_secs(cards as u64 + 60);
    simulator
        .wait_for("every card with its final count", patience, |world| {
            let messages = world.channel_messages(TRIAGE_CHANNEL);
            let drawn: HashMap<String, u64> = messages
                .iter()
                .filter_map(|message| {
                    let embed = &message.json["embeds"][0];
                    let case_id = embed["title"].as_str()?.split(' ').next()?.to_string();
                    Some((case_id, shown_count(embed)?))
                })
                .collect();
            (drawn == acknowledged).then_some(())
        })
        .await;

    simulator.with_world(|world| {
        assert_eq!(
            crate::support::cards_posted_and_distinct(world),
            (cards, cards),
            "one card per movement, none twice"
        );

        // The last card came no later than 1.1× the channel's floor (a card a second) after the
        // first alert, or 5 s after the last new movement's first alert, whichever is later.
        let posted: Vec<Instant> = world
            .message_posts(TRIAGE_CHANNEL)
            .into_iter()
            .filter(|request| request.status == 200)
            .map(|request| request.at)
            .collect();
        let last_card = posted.iter().max().copied().expect("cards were posted");
        let floor = Duration::from_secs(cards as u64);
        let allowed = floor.mul_f64(1.1).max(last_new_alert.duration_since(started) + Duration::from_secs(5));
        let took = last_card.duration_since(started);
        assert!(took <= allowed, "the last card came {took:?} after the first alert; allowed {allowed:?}");

        // Storming cards are redrawn at most once per 10 s, counting from their post.
        for case_id in &storm_cases {
            let card = world
                .channel_messages(TRIAGE_CHANNEL)
                .into_iter()
                .find(|message| {
                    message.json["embeds"][0]["title"]
                        .as_str()
                        .is_some_and(|title| title.starts_with(&format!("{case_id} ")))
                })
                .expect("the storm's card")
                .id;
            let post = world
                .bucket_requests(TRIAGE_CHANNEL)
                .into_iter()
                .filter(|request| request.method == "POST" && request.status == 200)
                .find(|request| {
                    request.body.as_ref().is_some_and(|body| {
                        body["embeds"][0]["title"]
                            .as_str()
                            .is_some_and(|title| title.starts_with(&format!("{case_id} ")))
                    })
                })
                .expect("the storm's post")
                .at;
            let path = format!("/channels/{TRIAGE_CHANNEL}/messages/{card}");
            let mut drawn: Vec<Instant> = vec![post];
            drawn.extend(
                world
                    .requests
                    .iter()
                    .filter(|request| request.method == "PATCH" && request.path == path && request.status == 200)
                    .map(|request| request.at),
            );
            for pair in drawn.windows(2) {
                let gap = pair[1].duration_since(pair[0]);
                assert!(gap >= Duration::from_secs(10), "{case_id}'s card was redrawn {gap:?} after it was last drawn");
            }
            eprintln!(
                "storm ({}): {case_id} drawn {} time(s) for {} alerts",
                if tls { "https" } else { "http" },
                drawn.len(),
                acknowledged[case_id]
            );
        }

        let inside = world.requests_inside_retry_after(TRIAGE_CHANNEL);
        assert_eq!(inside, 0, "requests sent while a 429's retry_after was running");
        let limited = world.bucket_requests(TRIAGE_CHANNEL).into_iter().filter(|request| request.status == 429).count();
        eprintln!(
            "storm ({}): {cards} cards, last after {took:?} (allowed {allowed:?}), {limited} answered 429",
            if tls { "https" } else { "http" }
        );
        assert!(world.violations.is_empty(), "{:#?}", world.violations);
    });
}
