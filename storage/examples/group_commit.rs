//! Benchmark: durable writes per second with 1 writer (the baseline) and with 8 and 64
//! concurrent writers sharing group-commit flushes, in one run so the ratios compare like with
//! like on a noisy machine. See BENCHMARKS.md.
//!
//!     cargo run --release -p vouch-storage --example group_commit [records]

use std::sync::Arc;
use std::time::Instant;

use vouch_playbook::{AuditKind, Timestamp};
use vouch_storage::{NewRecord, Store, StoreOptions};

fn run(writers: usize, records: usize) -> f64 {
    let directory = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(directory.path(), &StoreOptions::default()).expect("store"));
    let padding = "x".repeat(1024);
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let store = Arc::clone(&store);
            let padding = padding.clone();
            std::thread::spawn(move || {
                for index in 0..records / writers {
                    let detail = serde_json::json!({"writer": writer, "index": index, "padding": padding});
                    let record = NewRecord {
                        at: Timestamp::from_unix_millis(0),
                        case_id: None,
                        kind: AuditKind::StoreProbe,
                        actor: None,
                        playbook_version: None,
                        detail,
                    };
                    store
                        .write(|transaction| transaction.append_audit(record))
                        .and_then(|pending| pending.wait())
                        .expect("durable write");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.flush_stats();
    let rate = records as f64 / elapsed;
    println!(
        "{writers:>3} writer(s): {records} durable 1 KiB records in {elapsed:.2} s = {rate:>8.0}/s, {} flushes ({:.1} records per flush, {:.0} µs per flush)",
        stats.flushes,
        records as f64 / stats.flushes.max(1) as f64,
        stats.total_micros as f64 / stats.flushes.max(1) as f64
    );
    rate
}

fn main() {
    let records: usize = std::env::args().nth(1).and_then(|text| text.parse().ok()).unwrap_or(4096);
    let baseline = run(1, records / 4);
    for writers in [8, 64] {
        let rate = run(writers, records);
        println!("    ratio vs 1 writer: {:.2}x", rate / baseline);
    }
}
