//! Store tests on a real on-disk sled database in a temporary directory. They live inside the
//! crate because tampering with the audit chain needs the byte layout, which only this crate knows.
//! They drive the store through its own API, the [`Transaction`]; the rules deciding what to write
//! are the service's and the playbook's, tested there.

use std::sync::Arc;

use serde_json::json;
use vouch_playbook::facts::{Facts, History};
use vouch_playbook::normalize::normalize;
use vouch_playbook::{open_case, AuditKind, Case, CaseId, Effect, EventKind, MovementKey, Playbook, Timestamp};

use super::*;
use crate::codec::{decode, encode};

const T0: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);

fn new_case(case_id: CaseId, target: &str) -> (Case, Vec<Effect>) {
    let playbook = Playbook::builtin();
    let payload = json!({
        "vouch_alert": 1, "source": {"hostname": "WS-1"}, "target": {"hostname": target},
        "account": "carol", "protocol": "rdp", "mitre": ["T1021.001"]
    });
    let alert = normalize(&payload, None, T0).expect("valid alert");
    let facts = Facts::default();
    let opening = open_case(&playbook, &alert, &facts, &History::default(), T0);
    Case::open(case_id, &playbook, alert, facts, opening, T0)
}

fn audit_of(case: &Case, kind: EventKind) -> NewRecord<'static> {
    NewRecord {
        at: T0,
        case_id: Some(case.id),
        kind: AuditKind::Event(kind),
        actor: None,
        playbook_version: Some(case.playbook_version),
        detail: json!({"target": case.alert().target.label()}),
    }
}

/// Opens a case the way the service does: one transaction with the case, its effects and its
/// audit record.
fn open_case_in(store: &Store, target: &str) -> Case {
    store
        .write(|transaction| {
            let (case, effects) = new_case(transaction.allocate_case_id()?, target);
            transaction.put_case(&case)?;
            transaction.queue_effects(case.id, &effects)?;
            transaction.append_audit(audit_of(&case, EventKind::AlertNew))?;
            Ok(case)
        })
        .expect("written")
        .wait()
        .expect("durable")
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("store opens");
    (directory, store)
}

#[test]
fn a_change_is_written_whole_or_not_at_all() {
    let (_directory, store) = temp_store();
    let first = open_case_in(&store, "SRV-1");
    let failed = store.write(|transaction| {
        let (case, _) = new_case(transaction.allocate_case_id()?, "SRV-2");
        transaction.put_case(&case)?;
        transaction.append_audit(audit_of(&case, EventKind::AlertNew))?;
        Err::<(), _>(StorageError::Corrupt { key: "test".to_string(), reason: "the caller gave up".to_string() })
    });
    assert!(failed.is_err());
    assert_eq!(store.cases(None).expect("cases").len(), 1, "the failed change wrote no case");
    let second = open_case_in(&store, "SRV-3");
    assert_eq!(second.id.number(), first.id.number() + 1, "the failed change took no case number");
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 2, "nor an audit record");
}

#[test]
fn a_group_of_changes_is_one_write_each_seeing_the_ones_before() {
    let (_directory, store) = temp_store();
    let targets = ["SRV-1", "SRV-2", "SRV-3"];
    let pending = store
        .write_group(targets.to_vec(), |transaction, target| {
            let (case, effects) = new_case(transaction.allocate_case_id()?, target);
            transaction.put_case(&case)?;
            transaction.queue_effects(case.id, &effects)?;
            transaction.append_audit(audit_of(&case, EventKind::AlertNew))?;
            // The transaction reads its own writes: this change sees the case just staged, and
            // the one before it.
            let earlier = CaseId::new(case.id.number().saturating_sub(1)).filter(|_| case.id.number() > 1);
            let seen_earlier = match earlier {
                Some(id) => transaction.case(id)?.is_some(),
                None => true,
            };
            Ok((case.id, transaction.case(case.id)?.is_some() && seen_earlier))
        })
        .expect("written");
    let results: Vec<(CaseId, bool)> = pending.into_iter().map(|pending| pending.wait().expect("durable")).collect();
    assert_eq!(results.iter().map(|(id, _)| id.number()).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(results.iter().all(|(_, seen)| *seen), "each change saw the ones before it: {results:?}");
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact() && report.records == 3, "{report:?}");

    // Any error fails the whole group: nothing of it is written.
    let failed = store.write_group(vec!["SRV-4", "SRV-5"], |transaction, target| {
        let (case, _) = new_case(transaction.allocate_case_id()?, target);
        transaction.put_case(&case)?;
        if target == "SRV-5" {
            return Err(StorageError::Corrupt { key: "test".to_string(), reason: "the second gave up".to_string() });
        }
        Ok(case.id)
    });
    assert!(failed.is_err());
    assert_eq!(store.cases(None).expect("cases").len(), 3);
}

#[test]
fn repeated_alerts_write_only_the_activity_and_reads_see_it() {
    let (_directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-1");
    let stored_case_bytes = store.tree().get(keys::case(case.id)).expect("read").expect("present");
    for count in 2..=5u64 {
        store
            .write(|transaction| {
                let mut current = transaction.case(case.id)?.expect("exists");
                current.alert_count += 1;
                current.last_alert_at = T0.plus_minutes(count as u32);
                transaction.put_case_activity(&current);
                transaction.append_audit(audit_of(&current, EventKind::AlertGrouped))?;
                Ok(())
            })
            .expect("written")
            .wait()
            .expect("durable");
        let read = store.case(case.id).expect("case");
        assert_eq!((read.alert_count, read.last_alert_at), (count, T0.plus_minutes(count as u32)));
    }
    assert_eq!(
        store.tree().get(keys::case(case.id)).expect("read").expect("present"),
        stored_case_bytes,
        "the case itself was not rewritten"
    );
    assert_eq!(store.cases(None).expect("cases")[0].alert_count, 5, "listing sees the activity too");
    // Writing the whole case again carries the activity; the separate record goes.
    store
        .write(|transaction| {
            let current = transaction.case(case.id)?.expect("exists");
            transaction.put_case(&current)
        })
        .expect("written")
        .wait()
        .expect("durable");
    assert!(store.tree().get(keys::case_activity(case.id)).expect("read").is_none());
    assert_eq!(store.case(case.id).expect("case").alert_count, 5);
}

#[test]
fn deadlines_are_indexed_with_the_case_and_move_with_it() {
    let (directory, store) = temp_store();
    let mut case = open_case_in(&store, "SRV-1");
    assert!(store.due_cases(T0.plus_minutes(10_000)).expect("due").is_empty(), "nobody is asked yet");
    case.state = vouch_playbook::CaseState::AwaitingConfirmation;
    case.confirmation.deadline = Some(T0.plus_minutes(60));
    let write = |case: &Case| {
        store
            .write(|transaction| {
                transaction.case(case.id)?;
                transaction.put_case(case)
            })
            .expect("written")
            .wait()
            .expect("durable")
    };
    write(&case);
    assert!(store.due_cases(T0.plus_minutes(59)).expect("due").is_empty());
    assert_eq!(store.due_cases(T0.plus_minutes(60)).expect("due"), [case.id]);
    case.confirmation.deadline = Some(T0.plus_minutes(120));
    write(&case);
    assert!(store.due_cases(T0.plus_minutes(60)).expect("due").is_empty(), "the old deadline left the index");
    assert_eq!(store.due_cases(T0.plus_minutes(120)).expect("due"), [case.id]);

    // Cases due within one second share a bucket, come back soonest first to the millisecond,
    // and leave it one by one.
    let second_due = 7_200_000; // T0 + 120 minutes, as the first case.
    let mut others = Vec::new();
    for (target, due) in [("SRV-2", second_due + 400), ("SRV-3", second_due - 300), ("SRV-4", second_due + 999)] {
        let mut other = open_case_in(&store, target);
        other.state = vouch_playbook::CaseState::AwaitingConfirmation;
        other.confirmation.deadline = Some(T0.plus_millis(due));
        write(&other);
        others.push(other);
    }
    assert_eq!(store.tree().scan_prefix(b"d/").count(), 2, "three cases due in one second, one in the second before");
    let due_at = |millis: i64| store.due_cases(T0.plus_millis(millis)).expect("due");
    assert_eq!(due_at(second_due - 301), Vec::<CaseId>::new());
    assert_eq!(due_at(second_due - 300), [others[1].id]);
    assert_eq!(due_at(second_due + 399), [others[1].id, case.id]);
    assert_eq!(due_at(second_due + 400), [others[1].id, case.id, others[0].id]);
    assert_eq!(due_at(second_due + 999), [others[1].id, case.id, others[0].id, others[2].id]);
    others[0].confirmation.deadline = None;
    others[0].state = vouch_playbook::CaseState::ClosedExpected;
    write(&others[0]);
    assert_eq!(due_at(second_due + 999), [others[1].id, case.id, others[2].id]);

    // A store of the layout before buckets (a key per deadline: its millisecond, then the case)
    // is indexed anew when it is opened.
    let expected = due_at(second_due + 999);
    for entry in store.tree().scan_prefix(b"d/") {
        store.tree().remove(entry.expect("entry").0).expect("remove");
    }
    for case in store.cases(None).expect("cases") {
        if let Some(at) = case.next_deadline() {
            let mut key = b"d/".to_vec();
            key.extend_from_slice(&(at.unix_millis() as u64).to_be_bytes());
            key.extend_from_slice(&case.id.number().to_be_bytes());
            store.tree().insert(key, &[][..]).expect("insert");
        }
    }
    store.tree().insert(keys::META_CASE_INDEX, &[4][..]).expect("insert");
    drop(store);
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(store.due_cases(T0.plus_millis(second_due + 999)).expect("due"), expected);
    assert_eq!(expected.len(), 3);
    for entry in store.tree().scan_prefix(b"d/") {
        assert_eq!(entry.expect("entry").1.first(), Some(&9), "a bucket, not a key per case");
    }
}

fn movement_to(target: &str) -> MovementKey {
    MovementKey {
        account: "carol".to_string(),
        source: "ws-1".to_string(),
        target: target.to_string(),
        protocol: vouch_playbook::model::Protocol::Rdp,
    }
}

fn sight(store: &Store, target: &str) {
    store
        .write(|transaction| {
            let history =
                transaction.history(&movement_to(target))?.with_sighting(T0, vouch_playbook::model::Outcome::Success);
            transaction.put_history(&movement_to(target), &history, true)
        })
        .expect("written")
        .wait()
        .expect("durable");
}

#[test]
fn history_counts_each_target_of_a_source_once() {
    let (_directory, store) = temp_store();
    for target in ["srv-1", "srv-2", "srv-1", "srv-3"] {
        sight(&store, target);
    }
    let history = store.history(&movement_to("srv-1")).expect("history");
    assert_eq!(history.seen, 2);
    assert_eq!(history.source_distinct_targets, Some(3));
    // A second account on a pair already reached is not a new target; a sighting twice in one
    // change counts once.
    let other_account = MovementKey { account: "dave".to_string(), ..movement_to("srv-2") };
    store
        .write(|transaction| {
            for movement in [&other_account, &movement_to("srv-4"), &movement_to("srv-4")] {
                let history = transaction.history(movement)?.with_sighting(T0, vouch_playbook::model::Outcome::Success);
                transaction.put_history(movement, &history, true)?;
            }
            Ok(())
        })
        .expect("written")
        .wait()
        .expect("durable");
    assert_eq!(store.history(&other_account).expect("history").source_distinct_targets, Some(4));
    assert_eq!(store.history(&movement_to("srv-4")).expect("history").seen, 2);
}

#[test]
fn histories_of_the_older_layout_are_relaid_on_open_and_their_pairs_still_count() {
    let directory = tempfile::tempdir().expect("temp dir");
    {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store");
        for target in ["srv-1", "srv-2", "srv-1"] {
            sight(&store, target);
        }
        // Back to layout 1: the account first, and a key of its own for each pair seen.
        let tree = store.tree();
        for entry in tree.scan_prefix(keys::HISTORY_PREFIX) {
            let (key, value) = entry.expect("entry");
            let parts: Vec<&[u8]> = key[2..].split(|byte| *byte == 0x1f).collect();
            let old_key = [&b"h/"[..], parts[2], b"\x1f", parts[0], b"\x1f", parts[1], b"\x1f", parts[3]].concat();
            tree.remove(&key).expect("remove");
            tree.insert(old_key, value).expect("insert");
            tree.insert([&b"s/"[..], parts[0], b"\x1f", parts[1]].concat(), &[][..]).expect("insert");
        }
        tree.remove(keys::META_HISTORY_LAYOUT).expect("remove");
        tree.flush().expect("flush");
    }
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let history = store.history(&movement_to("srv-1")).expect("history");
    assert_eq!((history.seen, history.source_distinct_targets), (2, Some(2)));
    assert_eq!(store.tree().scan_prefix(b"s/").count(), 0, "the pairs are told by the histories");
    let relaid: Vec<_> = store.tree().scan_prefix(keys::HISTORY_PREFIX).keys().map(|key| key.expect("key")).collect();
    assert_eq!(relaid.len(), 2);
    assert!(relaid.iter().all(|key| key.starts_with(b"h/ws-1\x1fsrv-")), "{relaid:?}");
    // A pair reached before is not counted again; a new one is.
    sight(&store, "srv-2");
    assert_eq!(store.history(&movement_to("srv-2")).expect("history").source_distinct_targets, Some(2));
    sight(&store, "srv-3");
    assert_eq!(store.history(&movement_to("srv-3")).expect("history").source_distinct_targets, Some(3));
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
                (0..per_writer)
                    .map(|index| open_case_in(&store, &format!("SRV-{writer}-{index}")).id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<CaseId> = threads.into_iter().flat_map(|thread| thread.join().expect("writer")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), writers * per_writer, "every change got its own case id");
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, (writers * per_writer) as u64);
    let stats = store.flush_stats();
    assert!(stats.flushes >= 1 && stats.failures == 0);
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(reopened.cases(None).expect("cases").len(), writers * per_writer);
}

/// The value under `key`, as the codec reads it.
fn read_value(store: &Store, key: &[u8]) -> sled::IVec {
    store.on_current(|generation| generation.get(key)).expect("read").expect("present")
}

/// Audit record `seq`, read from the key it is stored under (the first of its change's block),
/// with its hash.
fn stored_record(store: &Store, seq: u64) -> AuditRecord {
    let block = audit::decode_block(&read_value(store, &keys::audit(seq))).expect("decodes");
    block.into_iter().find(|record| record.seq == seq).expect("the record heads its block")
}

/// Rewrites the stored bytes of audit record `seq` (a change's only record) through `change`,
/// as older stores kept records: alone under their key, with their hash.
fn rewrite_record(store: &Store, seq: u64, change: impl FnOnce(&mut AuditRecord)) {
    let mut record = stored_record(store, seq);
    change(&mut record);
    store.tree().insert(keys::audit(seq), encode(&record)).expect("write");
}

/// Edits the detail of record `seq` (a change's only record) and stores it as Vouch stores
/// records: in a block, without its hash.
fn forge_stored_detail(store: &Store, seq: u64) {
    let mut record = stored_record(store, seq);
    record.detail = json!({"forged": true});
    store.tree().insert(keys::audit(seq), audit::encode_block(&[record])).expect("write");
}

#[test]
fn audit_records_are_stored_without_their_own_hash_and_read_back_with_it() {
    let (_directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-1");
    let stored = read_value(&store, &keys::audit(1));
    let json: serde_json::Value = decode(&stored, "record").expect("decodes");
    assert!(json[0].get("hash").is_none(), "stored: {json}");
    assert!(json[0].get("prev_hash").is_some());
    let trail = store.case_audit(case.id).expect("trail");
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].hash, trail[0].compute_hash());
    assert_eq!(store.verify_audit().expect("verify").head.map(|head| head.hash), Some(trail[0].hash.clone()));
    // A record stored with its hash (as before) reads as it was, and is checked against it.
    rewrite_record(&store, 1, |_| {});
    assert_eq!(store.case_audit(case.id).expect("trail"), trail);
    assert!(store.verify_audit().expect("verify").is_intact());
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
            "edited where it is stored without its hash, as Vouch stores records",
            |store| forge_stored_detail(store, 2),
            "#3 does not link to the record before it: one of the two was altered",
        ),
        (
            "newest edited where it is stored without its hash",
            |store| forge_stored_detail(store, 4),
            "the chain ends at #4 but the store's head says #4",
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
                let mut record = stored_record(store, 4);
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
        for index in 0..4 {
            open_case_in(&store, &format!("SRV-{index}"));
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
    let enqueue = |store: &Store| {
        store.write(|transaction| transaction.enqueue_outbox(&entry)).expect("written").wait().expect("durable")
    };
    let settle = |store: &Store, entry: &OutboxEntry, done: bool| {
        store
            .write(|transaction| {
                transaction.settle_outbox(entry, done);
                Ok(())
            })
            .expect("written")
            .wait()
            .expect("durable")
    };
    {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store");
        assert!(enqueue(&store));
        assert!(!enqueue(&store), "an id is enqueued once");
        settle(&store, &OutboxEntry { attempts: 1, ..entry.clone() }, false);
    }
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let pending = store.outbox().expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id.as_str(), pending[0].attempts), ("iso-1", 1));
    settle(&store, &pending[0], true);
    assert!(store.outbox().expect("outbox").is_empty());
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
    let case_id = {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store");
        let opened = open_case_in(&store, "SRV-9");
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
        let first = store.pending_effects(1).expect("pending").remove(0);
        store.complete_effects(&[first.seq]).expect("done");
        store
            .set_card(
                opened.id,
                &CardRef {
                    channel_id: vouch_playbook::Snowflake::parse("10").expect("id"),
                    message_id: vouch_playbook::Snowflake::parse("11").expect("id"),
                    thread_id: None,
                },
            )
            .expect("card");
        opened.id
    };
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let pending = store.pending_effects(100).expect("pending");
    assert_eq!(pending.len(), 1, "the completed effect stays done after a restart");
    assert!(matches!(pending[0].effect, Effect::NotifySoc { .. }));
    assert_eq!(store.card(case_id).expect("card").map(|card| card.message_id.get()), Some(11));
}

/// The kinds of kept effects, as the API names them.
fn effect_kinds(kept: &[UndeliveredEffect]) -> Vec<String> {
    kept.iter()
        .map(|kept| serde_json::to_value(&kept.effect).expect("json")["effect"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn effects_nothing_can_carry_are_kept_as_undelivered_with_their_change_in_order() {
    let (directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-8");
    let queued = store.pending_effects(100).expect("pending");
    store
        .write(|transaction| {
            let (_, effects) = new_case(case.id, "SRV-8");
            transaction.keep_undelivered(case.id, &effects, T0, "no chat service is configured")?;
            transaction.keep_undelivered(case.id, &[], T0, "nothing")
        })
        .expect("written")
        .wait()
        .expect("durable");
    assert_eq!(store.pending_effects(100).expect("pending"), queued, "nothing more was queued");
    drop(store);
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let kept = store.undelivered(case.id).expect("undelivered");
    assert_eq!(effect_kinds(&kept), ["post_card", "notify_soc"]);
    assert!(kept.iter().all(|kept| kept.reason == "no chat service is configured" && kept.at == T0));
    // Numbered from the queue's counter: an effect queued afterwards comes after the two kept.
    let later = store
        .write(|transaction| transaction.queue_effects(case.id, &[Effect::UpdateCard]))
        .expect("written")
        .wait()
        .expect("durable");
    assert_eq!(later[0].seq, queued.last().expect("queued").seq + 3);
    // One change's kept effects share a key; an effect the dispatcher found nothing to carry has
    // one of its own; a key holding a single effect, as every kept effect had in stores before,
    // still reads: all of them in order.
    store
        .write(|transaction| {
            transaction.mark_undelivered(&later[0], T0, "no chat service took it");
            Ok(())
        })
        .expect("written")
        .wait()
        .expect("durable");
    let older = UndeliveredEffect { effect: Effect::UpdateCard, at: T0, reason: "kept by an older Vouch".to_string() };
    store.tree().insert(keys::undelivered(case.id, later[0].seq + 1), encode(&older)).expect("write");
    let kept = store.undelivered(case.id).expect("undelivered");
    assert_eq!(effect_kinds(&kept), ["post_card", "notify_soc", "update_card", "update_card"]);
    assert_eq!(kept[2].reason, "no chat service took it");
    assert_eq!(kept[3], older);
    assert!(store.pending_effects(100).expect("pending").iter().all(|pending| pending.seq != later[0].seq));
}

#[test]
fn an_effect_written_by_an_older_version_reads_as_unknown() {
    let (_directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-1");
    let retired = PendingEffect { seq: 0, case_id: case.id, effect: Effect::PostCard };
    let mut value = serde_json::to_value(&retired).expect("json");
    value["effect"] = json!({"effect": "schedule_reminder", "at": T0});
    store.tree().insert(keys::effect(99), encode(&value)).expect("write");
    let pending = store.pending_effects(100).expect("pending");
    assert_eq!(pending.last().map(|pending| (&pending.effect, pending.seq)), Some((&Effect::Unknown, 99)));
}

#[test]
fn a_large_snapshot_is_stored_compressed_and_reads_back_whole_after_reopening() {
    let directory = tempfile::tempdir().expect("temp dir");
    let snapshot = json!({
        "source": "corp-ad",
        "assets": (0..20_000)
            .map(|index| json!({"hostname": format!("ws{index:07}.corp.example"), "origin": format!("CN=ws{index:07},OU=Workstations,DC=corp,DC=example")}))
            .collect::<Vec<_>>(),
    });
    let json_size = serde_json::to_vec(&snapshot).expect("json").len();
    let encoded = EncodedJson::encode(&snapshot).expect("encodes");
    assert!(encoded.0.len() * 4 < json_size, "{} bytes stored for {json_size} bytes of JSON", encoded.0.len());
    {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store opens");
        store
            .write(move |transaction| {
                assert_eq!(transaction.put_directory_snapshot("corp-ad", encoded, 0)?, 1);
                Ok(())
            })
            .expect("written")
            .wait()
            .expect("durable");
    }
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("store reopens");
    let stored = store.directory_snapshots().expect("snapshots");
    assert_eq!(stored.len(), 1);
    let read: serde_json::Value = serde_json::from_slice(&stored[0]).expect("the JSON that was stored");
    assert_eq!(read, snapshot);
}

#[test]
fn vouches_given_in_advance_are_numbered_by_kind_and_found_by_movement_after_reopening() {
    use vouch_playbook::advance::{AdvanceKind, AdvanceVouch, HostsScope, VouchScope};
    use vouch_playbook::engine::PushRecord;
    let directory = tempfile::tempdir().expect("temp dir");
    let hosts = |account: &str, source: &str| HostsScope {
        account: account.to_string(),
        source: source.to_string(),
        target: "srv-db-01".to_string(),
    };
    let vouch = |id: String, scope: HostsScope| AdvanceVouch {
        id,
        kind: AdvanceKind::Declaration { reason: "patching".to_string() },
        scope: VouchScope::Hosts(scope),
        by: vouch_playbook::Actor::vouch(),
        verified: PushRecord { provider: "Duo Push".to_string(), transaction: "tx".to_string(), number_to_pick: None },
        seconded_by: None,
        target_criticality: None,
        valid_from: T0,
        valid_until: T0,
        revoked: None,
    };
    {
        let store = Store::open(directory.path(), &StoreOptions::default()).expect("store opens");
        let ids = store
            .write(|transaction| {
                let first = transaction.allocate_advance_id(true)?;
                let second = transaction.allocate_advance_id(true)?;
                let approval = transaction.allocate_advance_id(false)?;
                transaction.put_advance_vouch(&vouch(first.clone(), hosts("alice", "ws-17")));
                transaction.put_advance_vouch(&vouch(second.clone(), hosts("alice", "ws-18")));
                // A transaction reads the vouch it just wrote.
                assert!(transaction.advance_vouch(&first)?.is_some());
                Ok((first, second, approval))
            })
            .expect("written")
            .wait()
            .expect("durable");
        assert_eq!(ids, ("D-1".to_string(), "D-2".to_string(), "A-1".to_string()));
    }
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("store reopens");
    let (found, none) = store
        .write(|transaction| {
            Ok((
                transaction.advance_vouches_for(&hosts("alice", "ws-17"))?,
                transaction.advance_vouches_for(&hosts("bob", "ws-17"))?,
            ))
        })
        .expect("read")
        .wait()
        .expect("done");
    assert_eq!(found.iter().map(|vouch| vouch.id.as_str()).collect::<Vec<_>>(), ["D-1"]);
    assert!(none.is_empty());
    assert_eq!(store.advance_vouches().expect("all").len(), 2);
    let next =
        store.write(|transaction| transaction.allocate_advance_id(true)).expect("written").wait().expect("durable");
    assert_eq!(next, "D-3", "numbers survive a reopening");
}

#[test]
fn cases_are_listed_a_page_at_a_time_newest_first_by_any_filter_and_indexed_on_reopen() {
    use vouch_playbook::case_list::{filter_key, CaseFilter, ListedField};
    use vouch_playbook::CaseState;
    let (directory, store) = temp_store();
    // 150 cases to three targets (three blocks of the listing indexes); every third closed as
    // expected.
    let mut cases = Vec::new();
    for index in 0..150 {
        let mut case = open_case_in(&store, &format!("SRV-{}", index % 3));
        if index % 3 == 0 {
            case.state = CaseState::ClosedExpected;
            store.write(|transaction| transaction.put_case(&case)).expect("written").wait().expect("durable");
        }
        cases.push(case);
    }
    let target = |name: &str| vec![(ListedField::Target, filter_key(ListedField::Target, name))];
    let open = Some(vec![CaseState::Open, CaseState::AwaitingConfirmation, CaseState::Escalated]);
    let filters = [
        CaseFilter::default(),
        CaseFilter { states: open.clone(), ..CaseFilter::default() },
        CaseFilter { states: Some(vec![CaseState::ClosedExpected]), ..CaseFilter::default() },
        CaseFilter { fields: target("srv-1.corp.example"), ..CaseFilter::default() },
        CaseFilter { states: open, fields: target("SRV-0"), ..CaseFilter::default() },
        CaseFilter {
            fields: vec![
                (ListedField::Account, filter_key(ListedField::Account, "CORP\\carol")),
                (ListedField::Target, "srv-2".to_string()),
            ],
            ..CaseFilter::default()
        },
        CaseFilter { fields: target("SRV-9"), ..CaseFilter::default() },
    ];
    let listed = |store: &Store, filter: &CaseFilter, limit: usize| {
        let mut ids = Vec::new();
        let mut before = None;
        loop {
            let page = store.case_page(filter, before, limit).expect("page");
            assert!(page.cases.len() <= limit);
            ids.extend(page.cases.iter().map(|summary| summary.id.number()));
            match page.next_before {
                Some(next) => before = Some(next),
                None => return ids,
            }
        }
    };
    let expected = |store: &Store, filter: &CaseFilter| -> Vec<u64> {
        let stored = store.cases(None).expect("cases");
        let mut ids: Vec<u64> = stored
            .iter()
            .filter(|case| {
                let summary = vouch_playbook::case_list::CaseSummary::of(case);
                filter.admits(&summary) && filter.has_keys(&vouch_playbook::case_list::CaseSummary::keys(case))
            })
            .map(|case| case.id.number())
            .collect();
        ids.reverse();
        ids
    };
    for (index, filter) in filters.iter().enumerate() {
        let wanted = expected(&store, filter);
        for limit in [1, 4, 100] {
            assert_eq!(listed(&store, filter, limit), wanted, "filter {index}, pages of {limit}");
        }
    }
    assert_eq!(expected(&store, &filters[2]).len(), 50);
    assert_eq!(expected(&store, &filters[4]).len(), 0, "every case to SRV-0 is closed");
    let counts = store.case_counts().expect("counts");
    let count_of = |state: CaseState| counts.iter().find(|(counted, _)| *counted == state).map(|(_, count)| *count);
    assert_eq!((count_of(CaseState::Open), count_of(CaseState::ClosedExpected)), (Some(100), Some(50)));
    assert_eq!(store.cases(Some(&[CaseState::ClosedExpected])).expect("cases").len(), 50);
    // Finished cases by when they last changed: all fifty closed at T0.
    let quiet = |store: &Store, since: Timestamp| store.finished_cases_quiet_since(since, 100).expect("read").len();
    assert_eq!((quiet(&store, T0), quiet(&store, T0.plus_millis(1))), (0, 50));
    assert_eq!(store.finished_cases_quiet_since(T0.plus_millis(1), 3).expect("read").len(), 3);

    // A store written before the indexes existed is indexed when it is opened.
    for prefix in [&b"j/"[..], b"p/", b"f/"] {
        for entry in store.tree().scan_prefix(prefix) {
            store.tree().remove(entry.expect("entry").0).expect("remove");
        }
    }
    store.tree().remove(keys::META_CASE_INDEX).expect("remove");
    assert!(listed(&store, &CaseFilter::default(), 10).is_empty());
    drop(store);
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    for filter in &filters {
        assert_eq!(listed(&store, filter, 7), expected(&store, filter));
    }
    assert_eq!(quiet(&store, T0.plus_millis(1)), 50, "rebuilt too");

    // A store of the layout before blocks (a key per case in the finished-or-not and field
    // indexes, of the same shape as a block's key) has those keys replaced when it is opened.
    for prefix in [&b"p/\x00"[..], b"p/\x01", b"f/"] {
        for entry in store.tree().scan_prefix(prefix) {
            store.tree().remove(entry.expect("entry").0).expect("remove");
        }
    }
    for case in store.cases(None).expect("cases") {
        let mut per_case_keys = vec![keys::case_by_finish_prefix(case.state.is_finished())];
        for (field, value) in vouch_playbook::case_list::CaseSummary::keys(&case) {
            per_case_keys.push(keys::case_by_field_prefix(field, &value));
        }
        for mut key in per_case_keys {
            key.extend_from_slice(&case.id.number().to_be_bytes());
            store.tree().insert(key, &[][..]).expect("insert");
        }
    }
    store.tree().insert(keys::META_CASE_INDEX, &[3][..]).expect("insert");
    drop(store);
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    for filter in &filters {
        assert_eq!(listed(&store, filter, 7), expected(&store, filter));
    }
    for prefix in [&b"p/\x00"[..], b"p/\x01", b"f/"] {
        for entry in store.tree().scan_prefix(prefix) {
            assert_eq!(entry.expect("entry").1.len(), 9, "a block, not a key per case");
        }
    }

    // A finished case that changes again moves to its new time.
    let mut reclosed = store.case(cases[0].id).expect("case");
    reclosed.updated_at = T0.plus_millis(50);
    store.write(|transaction| transaction.put_case(&reclosed)).expect("written").wait().expect("durable");
    assert_eq!((quiet(&store, T0.plus_millis(1)), quiet(&store, T0.plus_millis(51))), (49, 50));
    let changed_since = |since: Timestamp| store.finished_cases_changed_since(since).expect("read").len();
    assert_eq!((changed_since(T0), changed_since(T0.plus_millis(1)), changed_since(T0.plus_millis(51))), (50, 1, 0));
    // Reopened and closed again, a case leaves the unfinished block it shared for a finished one.
    let mut reopened_case = store.case(cases[1].id).expect("case");
    reopened_case.state = CaseState::ClosedExpected;
    store.write(|transaction| transaction.put_case(&reopened_case)).expect("written").wait().expect("durable");
    let finished = CaseFilter { states: Some(vec![CaseState::ClosedExpected]), ..CaseFilter::default() };
    assert_eq!(listed(&store, &finished, 100).len(), 51);
    assert_eq!(listed(&store, &filters[1], 100).len(), 99);

    // A long case's audit trail pages the same way.
    let first = &cases[1];
    store
        .write(|transaction| {
            for _ in 0..9 {
                transaction.append_audit(audit_of(first, EventKind::AlertGrouped))?;
            }
            Ok(())
        })
        .expect("written")
        .wait()
        .expect("durable");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (records, next) = store.case_audit_page(first.id, after, 4).expect("page");
        seen.extend(records.iter().map(|record| record.seq));
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let whole: Vec<u64> = store.case_audit(first.id).expect("trail").iter().map(|record| record.seq).collect();
    assert_eq!(seen, whole);
    assert_eq!(whole.len(), 10);
}

/// Every page of a case's trail, `size` records at a time, from the start.
fn trail_by_pages(store: &Store, case_id: CaseId, size: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (records, next) = store.case_audit_page(case_id, after, size).expect("page");
        assert!(records.len() <= size);
        seen.extend(records.iter().map(|record| record.seq));
        match next {
            Some(next) => after = Some(next),
            None => return seen,
        }
    }
}

#[test]
fn a_case_trail_is_kept_in_runs_pages_from_any_record_and_reads_the_layout_before_runs() {
    let (directory, store) = temp_store();
    let (first, second) = (open_case_in(&store, "SRV-1"), open_case_in(&store, "SRV-2"));
    // Two cases taking turns, as a round robin of repeats does, over several runs: 100 records
    // of the first case, interleaved with 50 of the second.
    for round in 0..100 {
        store
            .write(|transaction| {
                transaction.append_audit(audit_of(&first, EventKind::AlertGrouped))?;
                if round % 2 == 0 {
                    transaction.append_audit(audit_of(&second, EventKind::AlertGrouped))?;
                }
                Ok(())
            })
            .expect("written")
            .wait()
            .expect("durable");
    }
    let records = |case: &Case| -> Vec<u64> {
        let chain: Vec<AuditRecord> = store.audit_records().collect::<Result<_>>().expect("chain");
        chain.iter().filter(|record| record.case_id == Some(case.id)).map(|record| record.seq).collect()
    };
    let (first_records, second_records) = (records(&first), records(&second));
    assert_eq!((first_records.len(), second_records.len()), (101, 51));
    let whole = |case: &Case| -> Vec<u64> {
        store.case_audit(case.id).expect("trail").iter().map(|record| record.seq).collect()
    };
    assert_eq!(whole(&first), first_records);
    assert_eq!(whole(&second), second_records);
    // 101 records are three sealed runs and an open one: four keys, not 101.
    let trail_keys = store.tree().scan_prefix(keys::case_trail_open(first.id)).count();
    assert_eq!(trail_keys, 101_usize.div_ceil(trail::RUN_LENGTH));
    for size in [1, 7, 32, 33, 200] {
        assert_eq!(trail_by_pages(&store, first.id, size), first_records, "pages of {size}");
    }
    // A page may start after any record: in a sealed run, at a run's end, in the open run.
    for (index, after) in first_records.iter().enumerate() {
        let (records, _) = store.case_audit_page(first.id, Some(*after), 3).expect("page");
        let seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
        assert_eq!(seqs, first_records[index + 1..].iter().take(3).copied().collect::<Vec<_>>(), "after #{after}");
    }

    // The layout before runs: one empty key per record. Rewritten so, the trail reads the same,
    // and records appended afterwards follow it in order, also after reopening.
    for key in store.tree().scan_prefix(keys::case_trail_open(second.id)).keys() {
        store.tree().remove(key.expect("key")).expect("remove");
    }
    for seq in &second_records {
        store.tree().insert(keys::case_trail_run(second.id, *seq), Vec::<u8>::new()).expect("insert");
    }
    assert_eq!(whole(&second), second_records);
    assert_eq!(trail_by_pages(&store, second.id, 5), second_records);
    let appended = store
        .write(|transaction| transaction.append_audit(audit_of(&second, EventKind::AlertGrouped)))
        .expect("written")
        .wait()
        .expect("durable");
    drop(store);
    let store = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let expected: Vec<u64> = second_records.iter().copied().chain([appended.seq]).collect();
    let whole: Vec<u64> = store.case_audit(second.id).expect("trail").iter().map(|record| record.seq).collect();
    assert_eq!(whole, expected);
    assert_eq!(trail_by_pages(&store, second.id, 4), expected);
    assert!(store.verify_audit().expect("verify").is_intact());
}

#[test]
fn archived_cases_leave_the_store_and_the_chain_stays_verifiable_across_the_cut() {
    use crate::audit::ArchivedRange;
    let (_directory, store) = temp_store();
    // Five cases, their records interleaved: 1 2 3 4 5, then a second record each.
    let cases: Vec<Case> = (0..5).map(|index| open_case_in(&store, &format!("SRV-{index}"))).collect();
    store
        .write(|transaction| {
            for case in &cases {
                transaction.append_audit(audit_of(case, EventKind::AlertGrouped))?;
            }
            Ok(())
        })
        .expect("written")
        .wait()
        .expect("durable");
    // The five records of that one change are kept together, under the first one's number.
    let block_of_six = audit::decode_block(&read_value(&store, &keys::audit(6))).expect("decodes");
    assert_eq!(block_of_six.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
    assert!(store.tree().get(keys::audit(7)).expect("read").is_none());
    // Cases 1 and 2 (numbers 2 and 3) are archived.
    let archived: Vec<&Case> = vec![&cases[1], &cases[2]];
    let mut records: Vec<AuditRecord> =
        archived.iter().flat_map(|case| store.case_audit(case.id).expect("trail")).collect();
    records.sort_by_key(|record| record.seq);
    let ranges = ArchivedRange::runs_of(records.iter());
    assert_eq!(ranges.len(), 2, "records 2-3 and 7-8: {ranges:?}");
    store
        .write(|transaction| {
            for case in &archived {
                let last = store.case_audit(case.id)?.last().map(|record| record.seq).expect("a trail");
                transaction.remove_archived_case(case.id, last, &[])?;
            }
            transaction.append_audit(NewRecord {
                at: T0,
                case_id: None,
                kind: AuditKind::RetentionArchived,
                actor: None,
                playbook_version: None,
                detail: json!({"file": "archive-000001.jsonl.lz4", "sha256": "ab12", "ranges": ranges}),
            })?;
            transaction.finish_archive_run(1)
        })
        .expect("written")
        .wait()
        .expect("durable");
    assert!(matches!(store.case(cases[1].id), Err(StorageError::NoSuchCase(_))));
    assert_eq!(store.cases(None).expect("cases").len(), 3);
    assert!(store.case_audit(cases[2].id).expect("trail").is_empty());
    assert_eq!(store.next_archive_run().expect("run"), 2);
    let listed = store.case_page(&Default::default(), None, 10).expect("page");
    assert_eq!(listed.cases.len(), 3, "the listing indexes went with them");
    // Their records left the block they shared with the others', which keeps its key.
    let thinned = audit::decode_block(&read_value(&store, &keys::audit(6))).expect("decodes");
    assert_eq!(thinned.iter().map(|record| record.seq).collect::<Vec<_>>(), vec![6, 9, 10]);
    assert_eq!(store.case_audit(cases[3].id).expect("trail").len(), 2);

    // The store alone: intact, the anchor covering the gaps. With the archived records: intact.
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    let file = |name: &str, sha256: &str| (name.to_string(), sha256.to_string());
    let report =
        store.verify_audit_with_archives(records.clone(), &[file("archive-000001.jsonl.lz4", "ab12")]).expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 11);
    // The archive files must be those the anchors name, with the digests they name.
    for (files, fragment) in [
        (vec![], "is missing"),
        (vec![file("archive-000001.jsonl.lz4", "cd34")], "was altered"),
        (vec![file("archive-000001.jsonl.lz4", "ab12"), file("archive-000009.jsonl.lz4", "ef")], "no anchor"),
    ] {
        let report = store.verify_audit_with_archives(records.clone(), &files).expect("verify");
        assert!(report.problems.iter().any(|problem| problem.contains(fragment)), "{fragment}: {:?}", report.problems);
    }
    // An archived record missing or altered, or a gap no anchor covers, is found out.
    let mut missing = records.clone();
    missing.remove(0);
    assert!(!store
        .verify_audit_with_archives(missing, &[file("archive-000001.jsonl.lz4", "ab12")])
        .expect("verify")
        .is_intact());
    let mut altered = records.clone();
    altered[1].detail = json!({"target": "SRV-X"});
    assert!(!store
        .verify_audit_with_archives(altered, &[file("archive-000001.jsonl.lz4", "ab12")])
        .expect("verify")
        .is_intact());
    store.tree().remove(keys::audit(5)).expect("remove");
    let report = store.verify_audit().expect("verify");
    assert!(report.problems.iter().any(|problem| problem.contains("#6 follows #4")), "{:?}", report.problems);

    // A run cannot be counted twice, and a case that changed since it was read is not removed.
    let twice = store.write(|transaction| transaction.finish_archive_run(1));
    assert!(matches!(twice.and_then(|pending| pending.wait()), Err(StorageError::Conflict(_))));
    let stale = store.write(|transaction| transaction.remove_archived_case(cases[0].id, 1, &[]));
    assert!(matches!(stale.and_then(|pending| pending.wait()), Err(StorageError::Conflict(_))));
    assert!(store.case(cases[0].id).is_ok());
}

#[test]
fn a_change_may_extend_the_record_it_appended_last_and_the_chain_still_verifies() {
    let (_directory, store) = temp_store();
    let first = open_case_in(&store, "SRV-1");
    let second = open_case_in(&store, "SRV-2");
    let kind = AuditKind::Event(EventKind::AlertGrouped);
    let mut push = |detail: &mut serde_json::Value| {
        detail["repeats"].as_array_mut().map(|repeats| repeats.push(json!(2))).is_some()
    };
    let folded = store
        .write(|transaction| {
            let mut folded = vec![transaction.fold_into_last_audit(first.id, kind, &mut push)?];
            let mut record = audit_of(&first, EventKind::AlertGrouped);
            record.detail = json!({"repeats": [1]});
            transaction.append_audit(record)?;
            folded.push(transaction.fold_into_last_audit(first.id, kind, &mut push)?);
            folded.push(transaction.fold_into_last_audit(second.id, kind, &mut push)?);
            transaction.append_audit(audit_of(&second, EventKind::AlertGrouped))?;
            folded.push(transaction.fold_into_last_audit(first.id, kind, &mut push)?);
            Ok(folded)
        })
        .expect("written")
        .wait()
        .expect("durable");
    assert_eq!(folded, [false, true, false, false], "nothing appended yet; the last; another case's; not the last");
    let trail = store.case_audit(first.id).expect("trail");
    assert_eq!(trail.last().map(|record| record.detail.clone()), Some(json!({"repeats": [1, 2]})));
    let report = store.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.records, 4);
    // A later change does not reach into an earlier one's record.
    let later = store
        .write(|transaction| transaction.fold_into_last_audit(second.id, kind, &mut push))
        .expect("written")
        .wait()
        .expect("durable");
    assert!(!later);
}

#[test]
fn a_record_being_folded_into_reads_and_is_written_as_folded_with_its_hash() {
    use crate::reads::KeyValues;
    let (_directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-1");
    let tree = store.tree();
    let mut state = crate::transaction::WriterState::default();
    let mut transaction = crate::transaction::KvTransaction::new(&tree, &mut state);
    let kind = AuditKind::Event(EventKind::AlertGrouped);
    let mut record = audit_of(&case, EventKind::AlertGrouped);
    record.detail = json!({"repeats": [1]});
    let appended = transaction.append_audit(record).expect("appended");
    let mut push = |detail: &mut serde_json::Value| {
        detail["repeats"].as_array_mut().map(|repeats| repeats.push(json!(repeats.len() + 1))).is_some()
    };
    for _ in 0..3 {
        assert!(transaction.fold_into_last_audit(case.id, kind, &mut push).expect("folds"));
    }
    // Read inside the change: the head naming the record as folded so far.
    let read_head = transaction.value(keys::META_AUDIT_HEAD).expect("read");
    let head: audit::Head = decode(read_head.as_ref().expect("present"), "head").expect("head");
    // Written: the record as folded, and the same head as was read.
    let writes = transaction.into_writes();
    let written = |key: &[u8]| writes.iter().find(|(written, _)| written == key).and_then(|(_, value)| value.clone());
    let block = audit::decode_block(&written(&keys::audit(appended.seq)).expect("the block")).expect("decodes");
    let [folded] = block.as_slice() else { panic!("one record: {block:?}") };
    assert_eq!(folded.detail, json!({"repeats": [1, 2, 3, 4]}));
    assert_ne!(folded.hash, appended.hash, "the fold changed the record");
    assert_eq!((head.seq, head.hash.as_str()), (appended.seq, folded.hash.as_str()));
    assert_eq!(written(keys::META_AUDIT_HEAD), read_head);
    assert_eq!(state.pending_head.map(|head| head.hash), Some(folded.hash.clone()));
}

#[test]
fn values_are_stored_against_a_dictionary_of_their_kind_and_read_back_after_reopen() {
    let (directory, store) = temp_store();
    let cases: Vec<Case> = (0..20).map(|index| open_case_in(&store, &format!("SRV-{index}"))).collect();
    let tenth = cases[10].id;
    let stored = store.tree().get(keys::case(tenth)).expect("read").expect("present");
    let json = serde_json::to_vec(&cases[10]).expect("serializes");
    assert_eq!(stored[0], crate::dictionary::DICTIONARY_LZ4, "a case is compressed with a dictionary");
    assert!(stored.len() * 4 < json.len(), "{} stored bytes for {} bytes of JSON", stored.len(), json.len());
    assert!(store.tree().get(keys::dictionary(b'c', 1)).expect("read").is_some(), "its dictionary is stored");
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    for case in &cases {
        assert_eq!(&reopened.case(case.id).expect("reads"), case);
    }
    let report = reopened.verify_audit().expect("verify");
    assert!(report.is_intact() && report.records == 20, "{report:?}");
}

/// An audit record of no case with `detail`, as the dictionary tests append them.
fn record(detail: serde_json::Value) -> NewRecord<'static> {
    NewRecord {
        at: T0,
        case_id: None,
        kind: AuditKind::Event(EventKind::AlertNew),
        actor: None,
        playbook_version: None,
        detail,
    }
}

#[test]
fn values_a_dictionary_does_little_for_make_its_next_generation() {
    let (directory, store) = temp_store();
    let append = |detail: serde_json::Value| {
        store.write(|transaction| transaction.append_audit(record(detail))).expect("written").wait().expect("durable")
    };
    let alike =
        |index: usize| json!({"target": format!("SRV-{index}"), "note": "the same words in every record of this kind"});
    // Words the first dictionary never saw, in a shape it does not know.
    let unlike = |index: usize| {
        let words: Vec<String> =
            (0..40).map(|word| format!("{:x}", (index * 7919 + word * 104_729) % 65_521)).collect();
        json!({"inventory": words, "owner_of_record": format!("team-{index}")})
    };
    let mut written = Vec::new();
    for index in 0..5 {
        written.push(append(alike(index)));
    }
    assert!(
        store.tree().get(keys::dictionary(b'a', 2)).expect("read").is_none(),
        "one generation serves alike records"
    );
    for index in 0..5 {
        written.push(append(unlike(index)));
    }
    let second = store.tree().get(keys::dictionary(b'a', 2)).expect("read");
    assert!(second.is_some(), "a record of another shape made the second generation");
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let report = reopened.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
    let read: Vec<AuditRecord> = (1..=written.len() as u64).map(|seq| stored_record(&reopened, seq)).collect();
    assert_eq!(read, written, "records of every generation read back as written");
}

/// Groups are compressed by the applier while the next is staged; a change applied by its own
/// writer compresses only once they are in: each family's next dictionary is made once, and
/// every value reads back against the one it was compressed with.
#[test]
fn dictionaries_made_by_groups_in_flight_and_by_the_change_after_them_never_collide() {
    let (directory, store) = temp_store();
    // Each shape is new to the dictionaries before it: each asks for the family's next one.
    let shape = |shape: usize, index: usize| {
        let words: Vec<String> =
            (0..40).map(|word| format!("{:x}", (shape * 7919 + index * 31 + word * 104_729) % 65_521)).collect();
        json!({format!("shape_{shape}"): words, "owner_of_record": format!("team-{shape}-{index}")})
    };
    let mut pending = Vec::new();
    for group in 0..3 {
        let details: Vec<serde_json::Value> = (0..4).map(|index| shape(group, index)).collect();
        pending.extend(
            store
                .write_group(details, |transaction, detail| transaction.append_audit(record(detail)))
                .expect("handed over"),
        );
    }
    // Applied by its own writer while those groups may still be in flight.
    let last = store
        .write(|transaction| transaction.append_audit(record(shape(3, 0))))
        .expect("written")
        .wait()
        .expect("durable");
    let mut written: Vec<AuditRecord> = pending.into_iter().map(|pending| pending.wait().expect("durable")).collect();
    written.push(last);
    assert!(store.tree().get(keys::dictionary(b'a', 2)).expect("read").is_some(), "later shapes made generations");
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let read: Vec<AuditRecord> = reopened.audit_records().collect::<Result<_>>().expect("reads");
    assert_eq!(read, written, "records of every generation read back as written");
    let report = reopened.verify_audit().expect("verify");
    assert!(report.is_intact(), "{:?}", report.problems);
}

#[test]
fn a_value_whose_dictionary_is_gone_is_reported_corrupt() {
    let (directory, store) = temp_store();
    let case = open_case_in(&store, "SRV-1");
    store.tree().remove(keys::dictionary(b'c', 1)).expect("remove");
    // A damaged header claiming 2 GB from one byte is refused before anything is allocated.
    let damaged = CaseId::new(99).expect("id");
    store
        .tree()
        .insert(keys::case(damaged), &[crate::dictionary::DICTIONARY_LZ4, b'c', 1, 0, 0, 0, 0x80, 0][..])
        .expect("write");
    store.tree().flush().expect("flush");
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    match reopened.case(case.id) {
        Err(StorageError::Corrupt { reason, .. }) => assert!(reason.contains("dictionary c1"), "{reason}"),
        other => panic!("expected the case to be reported corrupt, got {other:?}"),
    }
    match reopened.case(damaged) {
        Err(StorageError::Corrupt { reason, .. }) => assert!(reason.contains("claims 2147483648 bytes"), "{reason}"),
        other => panic!("expected the damaged value to be reported corrupt, got {other:?}"),
    }
}

#[test]
fn hex_hashes_pack_to_their_bytes_and_unpack_to_the_same_json() {
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let other = "0000000000000000000000000000000000000000000000000000000000000000";
    let packs: [(String, Option<usize>); 10] = [
        // (JSON, how many bytes packing saves; None: it is left as it is)
        (format!(r#"{{"hash":"{hash}"}}"#), Some(33)),
        // A hash that is the whole text, and one right after a quote that starts none.
        (format!(r#""{hash}""#), Some(33)),
        (format!(r#"{{"a":"","b":"{hash}","c":"x"}}"#), Some(33)),
        (format!(r#"{{"prev":"{other}","hash":"{hash}"}}"#), Some(66)),
        (format!(r#"["{hash}","{hash}"]"#), Some(66)),
        (r#"{"note":"no hash here"}"#.to_string(), None),
        // Upper-case digits would not come back the same: left alone.
        (format!(r#"{{"hash":"{}"}}"#, hash.to_uppercase()), None),
        // One digit short or long is not a SHA-256.
        (format!(r#"{{"hash":"{}"}}"#, &hash[1..]), None),
        (format!(r#"{{"hash":"{hash}0"}}"#), None),
        // A raw zero byte (never in JSON) could not be told from a packed hash: left alone.
        (format!("\"{hash}\"\0"), None),
    ];
    for (json, saves) in packs {
        let packed = crate::hex_packing::pack(json.as_bytes());
        assert_eq!(packed.as_ref().map(|packed| json.len() - packed.len()), saves, "{json}");
        if let Some(packed) = packed {
            let mut unpacked = Vec::new();
            crate::hex_packing::unpack_into(&packed, &mut unpacked).expect("unpacks");
            assert_eq!(unpacked, json.as_bytes(), "{json}");
        }
    }
    let cut = crate::hex_packing::pack(format!(r#"["{hash}"]"#).as_bytes()).expect("packs");
    assert!(
        crate::hex_packing::unpack_into(&cut[..cut.len() - 5], &mut Vec::new()).is_err(),
        "a packed hash cut short is refused"
    );
}

#[test]
fn audit_records_are_stored_with_their_hashes_packed_and_verify_after_reopen() {
    let (directory, store) = temp_store();
    let written: Vec<AuditRecord> = (0..20)
        .map(|index| {
            let record = NewRecord {
                at: T0,
                case_id: None,
                kind: AuditKind::Event(EventKind::AlertNew),
                actor: None,
                playbook_version: None,
                detail: json!({"target": format!("SRV-{index}"), "payload_sha256": format!("{:064x}", index * 7919)}),
            };
            store.write(|transaction| transaction.append_audit(record)).expect("written").wait().expect("durable")
        })
        .collect();
    let stored = store.tree().get(keys::audit(12)).expect("read").expect("present");
    assert_eq!(stored[0], crate::dictionary::DICTIONARY_LZ4_PACKED_HASHES, "its hashes are packed");
    let json = serde_json::to_vec(&written[11]).expect("serializes");
    let hashes_as_hex = 3 * 66;
    assert!(
        stored.len() + hashes_as_hex < json.len(),
        "{} stored bytes for {} bytes of JSON",
        stored.len(),
        json.len()
    );
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    let report = reopened.verify_audit().expect("verify");
    assert!(report.is_intact() && report.records == 20, "{report:?}");
    let read: Vec<AuditRecord> = (1..=written.len() as u64).map(|seq| stored_record(&reopened, seq)).collect();
    assert_eq!(read, written, "records read back as written");
    // A packed hash cut short inside a well-formed block is damage, reported as such.
    let mut damaged = vec![crate::dictionary::DICTIONARY_LZ4_PACKED_HASHES, b'a', 1];
    damaged.extend_from_slice(&3_u32.to_le_bytes());
    damaged.extend_from_slice(&lz4_flex::block::compress(&[0, 1, 2]));
    reopened.tree().insert(keys::audit(1000), damaged).expect("write");
    match reopened.on_current(|generation| generation.get(keys::audit(1000))) {
        Err(StorageError::Corrupt { reason, .. }) => assert!(reason.contains("cut short"), "{reason}"),
        other => panic!("expected the damaged record to be reported corrupt, got {other:?}"),
    }
}

/// Groups written one after another without waiting: each is staged while the one before may
/// still be in flight to sled, sees it whole, and everything lands in order, durable, with the
/// chain intact; a change made between them (archiving) sees them too.
#[test]
fn groups_written_back_to_back_see_each_other_and_land_in_order() {
    let (directory, store) = temp_store();
    let mut tickets = Vec::new();
    let mut opened = Vec::new();
    for group in 0..4 {
        let targets: Vec<String> = (0..5).map(|index| format!("SRV-{group}-{index}")).collect();
        let earlier = opened.clone();
        let pending = store
            .write_group(targets, |transaction, target| {
                // The cases of the groups before are there to read, and numbering goes on.
                for case_id in &earlier {
                    assert!(transaction.case(*case_id)?.is_some(), "{case_id} of an earlier group");
                }
                let (case, effects) = new_case(transaction.allocate_case_id()?, &target);
                transaction.put_case(&case)?;
                transaction.queue_effects(case.id, &effects)?;
                transaction.append_audit(audit_of(&case, EventKind::AlertNew))?;
                Ok(case.id)
            })
            .expect("written");
        for pending in pending {
            opened.push(pending.value);
            tickets.push(pending);
        }
    }
    // Archived at once, while the last group may be in flight: its trail and its records are
    // found through it.
    let archived = opened[17];
    store
        .write(|transaction| transaction.remove_archived_case(archived, 18, &[]))
        .expect("written")
        .wait()
        .expect("durable");
    for pending in tickets {
        pending.wait().expect("durable");
    }
    let numbers: Vec<u64> = opened.iter().map(|case_id| case_id.number()).collect();
    assert_eq!(numbers, (1..=20).collect::<Vec<u64>>(), "numbered in order across groups");
    drop(store);
    let reopened = Store::open(directory.path(), &StoreOptions::default()).expect("reopens");
    assert_eq!(reopened.cases(None).expect("cases").len(), 19);
    assert!(matches!(reopened.case(archived), Err(StorageError::NoSuchCase(_))));
    let kept: Vec<u64> = opened
        .iter()
        .filter(|case_id| **case_id != archived)
        .flat_map(|case_id| reopened.case_audit(*case_id).expect("trail"))
        .map(|record| record.seq)
        .collect();
    assert_eq!(kept, (1..=20).filter(|seq| *seq != 18).collect::<Vec<u64>>());
    // Without an anchor (archiving writes one), the chain shows the gap where #18 went, and
    // nothing else.
    let report = reopened.verify_audit().expect("verify");
    assert_eq!(report.records, 19);
    assert!(!report.problems.is_empty());
    assert!(report.problems.iter().all(|problem| problem.contains("record #19 ")), "{:?}", report.problems);
}

#[test]
fn movement_keys_keep_the_bytes_stores_already_hold() {
    // Stores written before hold these exact keys: a change of their bytes needs a relayout on
    // open (as the histories had), not a silent new key beside the old one.
    let grouping = vouch_playbook::GroupingKey {
        source: "ws\u{1f}1".to_string(),
        target: "srv-1".to_string(),
        account: "carol".to_string(),
        technique: "T1021.001".to_string(),
    };
    assert_eq!(keys::group(&grouping), b"g/ws 1\x1fsrv-1\x1fcarol\x1fT1021.001".to_vec());
    let movement = MovementKey { source: "ws\u{1f}1".to_string(), ..movement_to("srv-1") };
    assert_eq!(keys::history(&movement), b"h/ws 1\x1fsrv-1\x1fcarol\x1frdp".to_vec());
    assert!(keys::history(&movement).starts_with(&keys::history_of_pair_prefix("ws\u{1f}1", "srv-1")));
}
