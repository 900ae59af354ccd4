//! Store tests on a real on-disk sled database in a temporary directory. They live inside the
//! crate because tampering with the audit chain needs the byte layout, which only this crate knows.

use std::sync::Arc;

use serde_json::json;
use vouch_playbook::engine::ConfirmVerdict;
use vouch_playbook::facts::{Facts, History};
use vouch_playbook::normalize::normalize;
use vouch_playbook::{apply, open_case, Actor, Alert, Case, CaseEvent, CaseId, CaseState, Effect, Playbook, Timestamp};

use super::*;

const T0: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);
const WINDOW: i64 = 30 * 60 * 1000;

fn alert(id: Option<&str>, source: &str, target: &str, account: &str) -> Alert {
    let mut payload = json!({
        "vouch_alert": 1, "source": {"hostname": source}, "target": {"hostname": target},
        "account": account, "protocol": "rdp", "mitre": ["T1021.001"]
    });
    if let Some(id) = id {
        payload["id"] = json!(id);
    }
    normalize(&payload, None, T0).expect("valid alert")
}

fn open_fn(playbook: &Playbook, now: Timestamp) -> impl Fn(CaseId, Alert, &History) -> (Case, Vec<Effect>) + '_ {
    move |id, alert, history| {
        let facts = Facts::default();
        let opening = open_case(playbook, &alert, &facts, history, now);
        Case::open(id, playbook, alert, facts, opening, now)
    }
}

fn ingest(store: &Store, playbook: &Playbook, alert: Alert, now: Timestamp) -> Ingested {
    let open = open_fn(playbook, now);
    let fold = |case: Case, alert: &Alert| {
        apply(playbook, case, CaseEvent::AlertGrouped { received_at: alert.received_at }, now)
    };
    store
        .ingest(IngestRequest { alert, grouping_window_millis: WINDOW, now, open: &open, fold: &fold })
        .expect("ingest succeeds")
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("store opens");
    (directory, store)
}

fn soc() -> Actor {
    Actor { discord_id: None, person: None, name: "sam".to_string(), soc: true }
}

#[test]
fn alerts_become_new_grouped_or_duplicate_cases() {
    let (_directory, store) = temp_store();
    let playbook = Playbook::builtin();
    // (alert, minutes after T0, expected status, expected case number, expected alert count)
    let steps: Vec<(Alert, u32, IngestStatus, u64, u64)> = vec![
        (alert(Some("a1"), "WS-17", "SRV-1", "alice"), 0, IngestStatus::New, 1, 1),
        (alert(Some("a1"), "WS-17", "SRV-1", "alice"), 1, IngestStatus::Duplicate, 1, 1),
        (alert(Some("a2"), "WS-17", "SRV-1", "alice"), 2, IngestStatus::Grouped, 1, 2),
        (alert(None, "ws-17.corp.example", "srv-1", "CORP\\Alice"), 3, IngestStatus::Grouped, 1, 3),
        (alert(Some("a3"), "WS-17", "SRV-2", "alice"), 4, IngestStatus::New, 2, 1),
        (alert(Some("a4"), "WS-17", "SRV-1", "bob"), 5, IngestStatus::New, 3, 1),
        // Past the window after the last alert of the movement: a fresh case.
        (alert(Some("a5"), "WS-17", "SRV-1", "alice"), 3 + 31, IngestStatus::New, 4, 1),
    ];
    for (index, (alert, minutes, status, case_number, count)) in steps.into_iter().enumerate() {
        let ingested = ingest(&store, &playbook, alert, T0.plus_minutes(minutes));
        assert_eq!(ingested.status, status, "step {index}");
        assert_eq!(ingested.case.id.number(), case_number, "step {index}");
        assert_eq!(ingested.case.alert_count, count, "step {index}");
        assert_eq!(store.case(ingested.case.id).expect("stored").alert_count, count, "step {index}");
    }
    let history = store
        .history(&vouch_playbook::MovementKey::of(&alert(None, "WS-17", "SRV-1", "alice")), T0.plus_minutes(40))
        .expect("history");
    assert_eq!(history.seen, 4, "duplicates are not counted as sightings");
    assert_eq!(history.source_distinct_targets, Some(2));
    assert!(store.verify_audit().expect("verify").is_intact());
}

#[test]
fn closed_cases_do_not_absorb_new_alerts_and_confirmations_feed_history() {
    let (_directory, store) = temp_store();
    let playbook = Playbook::builtin();
    let first = ingest(&store, &playbook, alert(Some("b1"), "WS-1", "SRV-9", "carol"), T0);
    let close = CaseEvent::Close { by: soc(), justification: "change ticket CHG-1".to_string() };
    let applied = store
        .apply_event(first.case.id, "click.close", Some(&soc()), json!({}), T0.plus_minutes(1), |case| {
            apply(&playbook, case, close, T0.plus_minutes(1))
        })
        .expect("applied");
    assert_eq!(applied.case.state, CaseState::ClosedExpected);
    let second = ingest(&store, &playbook, alert(Some("b2"), "WS-1", "SRV-9", "carol"), T0.plus_minutes(2));
    assert_eq!(second.status, IngestStatus::New);
    assert_eq!(second.case.opening.history.seen, 1);
    assert_eq!(second.case.opening.history.confirmed_expected.len(), 1, "the earlier close is shown as a hint");
    assert_eq!(second.case.opening.history.confirmed_expected[0].by, "sam");
    assert_eq!(second.case.state, CaseState::Open, "history never closes a case by itself");
}

#[test]
fn refused_events_are_recorded_and_change_nothing() {
    let (_directory, store) = temp_store();
    let playbook = Playbook::builtin();
    let opened = ingest(&store, &playbook, alert(Some("c1"), "WS-1", "SRV-9", "carol"), T0);
    let stranger = Actor { discord_id: None, person: None, name: "mallory".to_string(), soc: false };
    let event = CaseEvent::Confirm { verdict: ConfirmVerdict::Expected, by: stranger.clone(), justification: None };
    let applied = store
        .apply_event(opened.case.id, "click.confirm", Some(&stranger), json!({"verdict": "expected"}), T0, |case| {
            apply(&playbook, case, event, T0)
        })
        .expect("recorded");
    assert_eq!(applied.record.kind, "refused.click.confirm");
    assert_eq!(store.case(opened.case.id).expect("case"), opened.case);
    let trail: Vec<String> =
        store.case_audit(opened.case.id).expect("trail").into_iter().map(|record| record.kind).collect();
    assert_eq!(trail, ["alert.new", "refused.click.confirm"]);
}

#[test]
fn concurrent_writers_share_flushes_and_keep_one_chain() {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(directory.path(), &StoreOptions::default()).expect("store"));
    let writers = 8;
    let per_writer = 40;
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let playbook = Playbook::builtin();
                (0..per_writer)
                    .map(|index| {
                        let alert = alert(
                            Some(&format!("w{writer}-{index}")),
                            &format!("WS-{writer}"),
                            &format!("SRV-{index}"),
                            "alice",
                        );
                        ingest(&store, &playbook, alert, T0).case.id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<CaseId> = threads.into_iter().flat_map(|thread| thread.join().expect("writer")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), writers * per_writer, "every alert got its own case id");
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, (writers * per_writer) as u64);
    let stats = store.flush_stats();
    assert!(stats.flushes >= 1 && stats.failures == 0);
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(reopened.cases(None).expect("cases").len(), writers * per_writer);
}

/// Rewrites the stored bytes of audit record `seq` through `change`.
fn rewrite_record(store: &Store, seq: u64, change: impl FnOnce(&mut AuditRecord)) {
    let key = keys::audit(seq);
    let mut record: AuditRecord =
        decode(&store.tree().get(&key).expect("read").expect("present"), "record").expect("decodes");
    change(&mut record);
    store.tree().insert(key, encode(&record)).expect("write");
}

#[test]
fn tampering_with_the_audit_chain_is_detected() {
    type Tamper = fn(&Store);
    let cases: Vec<(&str, Tamper, &str)> = vec![
        ("nothing", |_| {}, ""),
        (
            "edited detail",
            |store| rewrite_record(store, 2, |record| record.detail = json!({"forged": true})),
            "altered",
        ),
        (
            "edited and rehashed",
            |store| {
                rewrite_record(store, 2, |record| {
                    record.kind = "alert.forged".to_string();
                    record.hash = record.compute_hash();
                })
            },
            "does not link",
        ),
        (
            "removed",
            |store| {
                store.tree().remove(keys::audit(2)).expect("remove");
            },
            "removed, inserted or reordered",
        ),
        (
            "removed newest",
            |store| {
                store.tree().remove(keys::audit(4)).expect("remove");
            },
            "head says #4",
        ),
        (
            "reordered",
            |store| {
                let second = store.tree().get(keys::audit(2)).expect("read").expect("present");
                let third = store.tree().get(keys::audit(3)).expect("read").expect("present");
                store.tree().insert(keys::audit(2), third).expect("write");
                store.tree().insert(keys::audit(3), second).expect("write");
            },
            "stored under #2 says it is #3",
        ),
        (
            "inserted",
            |store| {
                let head = store.tree().get(keys::audit(4)).expect("read").expect("present");
                let mut record: AuditRecord = decode(&head, "record").expect("decodes");
                record.seq = 5;
                record.prev_hash = record.hash.clone();
                record.hash = record.compute_hash();
                store.tree().insert(keys::audit(5), encode(&record)).expect("write");
            },
            "chain ends at #5 but the store's head says #4",
        ),
    ];
    for (name, tamper, expected) in cases {
        let (_directory, store) = temp_store();
        let playbook = Playbook::builtin();
        for index in 0..4 {
            ingest(&store, &playbook, alert(Some(&format!("t{index}")), "WS-1", &format!("SRV-{index}"), "dan"), T0);
        }
        tamper(&store);
        let report = store.verify_audit().expect("verify runs");
        if expected.is_empty() {
            assert!(report.is_intact(), "{name}: {:?}", report.problems);
        } else {
            assert!(
                report.problems.iter().any(|problem| problem.contains(expected)),
                "{name}: expected {expected:?} in {:?}",
                report.problems
            );
        }
    }
}

#[test]
fn outbox_entries_keep_their_id_across_attempts_and_reopen() {
    let directory = tempfile::tempdir().expect("temp dir");
    let case_id = CaseId::new(1).expect("id");
    let entry = OutboxEntry {
        id: "iso-1".to_string(),
        case_id,
        created_at: T0,
        attempts: 0,
        next_attempt_at: None,
        payload: json!({"action": "isolate"}),
    };
    {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store");
        assert!(store.enqueue_outbox(&entry, T0).expect("enqueued"));
        assert!(!store.enqueue_outbox(&entry, T0).expect("second enqueue is a no-op"), "an id is enqueued once");
        let attempted = OutboxEntry { attempts: 1, ..entry.clone() };
        store.settle_outbox(&attempted, false, json!({"status": 500}), T0).expect("attempt recorded");
    }
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let pending = store.outbox().expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id.as_str(), pending[0].attempts), ("iso-1", 1));
    store.settle_outbox(&pending[0], true, json!({"status": 200}), T0).expect("delivered");
    assert!(store.outbox().expect("outbox").is_empty());
    assert!(store.verify_audit().expect("verify").is_intact());
}

#[test]
fn a_store_in_use_is_refused_with_a_clear_error() {
    let (directory, _store) = temp_store();
    let error = Store::open(directory.path(), &StoreOptions::default()).err().expect("second open fails");
    assert!(error.to_string().contains("in use by another process"), "{error}");
}

#[test]
fn effects_are_queued_with_their_change_and_done_once() {
    let directory = tempfile::tempdir().expect("temp dir");
    let playbook = Playbook::builtin();
    let case_id = {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store");
        let opened = ingest(&store, &playbook, alert(Some("e1"), "WS-1", "SRV-9", "carol"), T0);
        // With nobody in the directory, the SOC is notified after the card is posted.
        let kinds: Vec<String> = store
            .pending_effects(100)
            .expect("pending")
            .iter()
            .map(|pending| {
                serde_json::to_value(&pending.effect).expect("json")["effect"].as_str().unwrap_or("").to_string()
            })
            .collect();
        assert_eq!(kinds, ["post_card", "notify_soc"]);
        let stranger = Actor { discord_id: None, person: None, name: "mallory".to_string(), soc: false };
        let event = CaseEvent::Escalate { by: stranger.clone(), reason: None };
        store
            .apply_event(opened.case.id, "click.escalate", Some(&stranger), json!({}), T0, |case| {
                apply(&playbook, case, event, T0)
            })
            .expect("recorded");
        assert_eq!(store.pending_effects(100).expect("pending").len(), 2, "a refusal queues nothing");
        let first = store.pending_effects(1).expect("pending").remove(0);
        store.complete_effect(first.seq).expect("done");
        store
            .set_card(
                opened.case.id,
                &CardRef {
                    channel_id: vouch_playbook::Snowflake::parse("10").expect("id"),
                    message_id: vouch_playbook::Snowflake::parse("11").expect("id"),
                    thread_id: None,
                },
            )
            .expect("card");
        opened.case.id
    };
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let pending = store.pending_effects(100).expect("pending");
    assert_eq!(pending.len(), 1, "the completed effect stays done after a restart");
    assert!(matches!(pending[0].effect, Effect::NotifySoc { .. }));
    assert_eq!(store.card(case_id).expect("card").map(|card| card.message_id.get()), Some(11));
}
