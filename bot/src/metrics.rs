//! Prometheus text-format metrics, kept in atomics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use vouch_playbook::engine::CaseState;
use vouch_storage::FlushStats;

#[derive(Default)]
pub struct Metrics {
    /// Accepted alerts by (format, status).
    accepted: Mutex<BTreeMap<(String, String), u64>>,
    /// Alerts answered "not a lateral movement", by input format and why.
    not_a_movement: Mutex<BTreeMap<(String, String), u64>>,
    /// Refused API requests by HTTP status.
    refused: Mutex<BTreeMap<u16, u64>>,
    store_failures: AtomicU64,
}

impl Metrics {
    pub fn alert_accepted(&self, format: &str, status: &str) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *accepted.entry((format.to_string(), status.to_string())).or_default() += 1;
    }

    pub fn not_a_movement(&self, format: &str, why: &str) {
        let mut counts = self.not_a_movement.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry((format.to_string(), why.to_string())).or_default() += 1;
    }

    pub fn request_refused(&self, status: u16) {
        let mut refused = self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *refused.entry(status).or_default() += 1;
    }

    pub fn store_failed(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric; case counts and flush timings are read from the store, and the
    /// allocator's figures from the allocator, by the caller.
    pub fn render(
        &self,
        cases: &[(CaseState, u64)],
        flush: FlushStats,
        memory: Option<crate::memory::AllocatorStatistics>,
    ) -> String {
        let mut text = String::new();
        let _ =
            writeln!(text, "# HELP vouch_alerts_accepted_total Alerts accepted (202), by input format and outcome.");
        let _ = writeln!(text, "# TYPE vouch_alerts_accepted_total counter");
        for ((format, status), count) in self.accepted.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            let _ = writeln!(text, "vouch_alerts_accepted_total{{format=\"{format}\",status=\"{status}\"}} {count}");
        }
        let _ = writeln!(
            text,
            "# HELP vouch_alerts_not_movement_total Alerts answered 200 as not a lateral movement (no case), by input format and why."
        );
        let _ = writeln!(text, "# TYPE vouch_alerts_not_movement_total counter");
        for ((format, why), count) in self.not_a_movement.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter()
        {
            let _ = writeln!(text, "vouch_alerts_not_movement_total{{format=\"{format}\",why=\"{why}\"}} {count}");
        }
        let _ = writeln!(text, "# HELP vouch_requests_refused_total API requests refused, by HTTP status.");
        let _ = writeln!(text, "# TYPE vouch_requests_refused_total counter");
        for (status, count) in self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            let _ = writeln!(text, "vouch_requests_refused_total{{status=\"{status}\"}} {count}");
        }
        let _ = writeln!(text, "# HELP vouch_store_failures_total Store operations that failed (answered 503).");
        let _ = writeln!(text, "# TYPE vouch_store_failures_total counter");
        let _ = writeln!(text, "vouch_store_failures_total {}", self.store_failures.load(Ordering::Relaxed));
        let _ = writeln!(text, "# HELP vouch_cases Cases by state.");
        let _ = writeln!(text, "# TYPE vouch_cases gauge");
        for (state, count) in cases {
            let _ = writeln!(text, "vouch_cases{{state=\"{}\"}} {count}", state.id());
        }
        let _ = writeln!(text, "# HELP vouch_store_flush_seconds Time spent making writes durable (group commit).");
        let _ = writeln!(text, "# TYPE vouch_store_flush_seconds summary");
        let _ = writeln!(text, "vouch_store_flush_seconds_sum {:.6}", flush.total_micros as f64 / 1e6);
        let _ = writeln!(text, "vouch_store_flush_seconds_count {}", flush.flushes);
        let _ = writeln!(text, "# HELP vouch_store_flush_seconds_max Longest single flush.");
        let _ = writeln!(text, "# TYPE vouch_store_flush_seconds_max gauge");
        let _ = writeln!(text, "vouch_store_flush_seconds_max {:.6}", flush.max_micros as f64 / 1e6);
        let _ = writeln!(text, "# HELP vouch_store_flush_failures_total Flushes that failed.");
        let _ = writeln!(text, "# TYPE vouch_store_flush_failures_total counter");
        let _ = writeln!(text, "vouch_store_flush_failures_total {}", flush.failures);
        // What the heap holds live against what it keeps resident: the part of RSS that is the
        // store's pages and Vouch's own state, and how much of the rest the allocator could hand
        // back.
        if let Some(memory) = memory {
            let _ = writeln!(text, "# HELP vouch_memory_allocated_bytes Bytes in live heap allocations.");
            let _ = writeln!(text, "# TYPE vouch_memory_allocated_bytes gauge");
            let _ = writeln!(text, "vouch_memory_allocated_bytes {}", memory.allocated);
            let _ = writeln!(
                text,
                "# HELP vouch_memory_resident_bytes Bytes of heap pages the allocator keeps resident (an upper bound)."
            );
            let _ = writeln!(text, "# TYPE vouch_memory_resident_bytes gauge");
            let _ = writeln!(text, "vouch_memory_resident_bytes {}", memory.resident);
        }
        text
    }
}
