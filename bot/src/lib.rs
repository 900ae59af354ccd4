//! The `vouch` binary's library: everything that does I/O.
//!
//! - [`app`]: the composition root: starts and stops a running Vouch.
//! - [`cli`]: the command line (`run`, `check-config`, `audit verify|export`, `cases export`, `directory`, `demo`).
//! - `demo`: Vouch against the built-in Discord simulator, with a transcript.
//! - [`intake`]: the thread that writes alerts arriving together in one transaction.
//! - [`ingest`]: the HTTP API (axum): alert intake, case queries, health and metrics.
//! - [`case_pages`]: the paged case API's queries (limits, cursors, filters, `next` links).
//! - [`auth`]: bearer tokens and Standard Webhooks signatures on incoming requests.
//! - [`discord`]: the serenity client, the Discord chat sink and the click handler.
//! - [`directory_sync`]: the directory kept in step with LDAP / Active Directory, snapshots
//!   stored and every change audited.
//! - [`service`]: owns every change: the directory, the engine's decisions, one store transaction.
//! - [`advance_vouches`]: vouches given in advance (`/expect` declarations, standing approvals),
//!   in force once their push is approved; seconded and revoked.
//! - [`identity_links`]: Discord accounts bound to people by a push they approved (`/link`).
//! - [`dispatch`]: the one effect dispatcher (order per case, backoff, give-up) and its chat sinks.
//! - [`webhooks`]: isolation requests delivered from the outbox, signed and retried.
//! - [`timers`]: stored deadlines (reminders, unacknowledged pages) and the daily digest.
//! - [`metrics`]: Prometheus counters.
//! - [`retention`]: closed cases moved to verifiable archive files, and the archives read back.
//! - [`verification`]: pushes to a person's phone (Duo, Okta Verify) that verify their answers.
//!
//! Decisions come from `vouch_playbook`; this crate carries them out.

pub mod advance_vouches;
pub mod app;
pub mod auth;
pub mod case_pages;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod directory_sync;
pub mod discord;
pub mod dispatch;
pub mod identity_links;
pub mod ingest;
pub mod intake;
pub mod leadership;
pub mod memory;
pub mod metrics;
pub mod retention;
pub mod service;
pub mod timers;
pub mod verification;
pub mod webhooks;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use vouch_playbook::Timestamp;

/// The wall clock, read only at the edges and passed into the core.
pub fn now() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis()).unwrap_or(0);
    Timestamp::from_unix_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// Where Vouch reads the time. Production uses [`SystemClock`]; tests that must move time
/// (reminders, retries) use [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        now()
    }
}

/// A clock that moves only when told to.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(AtomicI64::new(start.unix_millis()))
    }

    pub fn advance_minutes(&self, minutes: u32) {
        self.0.fetch_add(i64::from(minutes) * 60_000, Ordering::SeqCst);
    }

    pub fn set(&self, at: Timestamp) {
        self.0.store(at.unix_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}
