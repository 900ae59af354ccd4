//! Group commit: one thread flushes sled for every writer waiting at that moment.
//!
//! sled 0.34 makes writes durable only on flush, and concurrent `flush_async` calls can deadlock
//! (sled issue #1308). So no writer flushes itself: each takes a ticket after applying its batch
//! and waits until the flusher thread reports a flush that began after that ticket was issued.
//! One fsync then covers every writer that arrived while the previous one ran.
//!
//! Writers also announce themselves before they queue for the writer lock. When a ticket wakes
//! the flusher while other writers are still on their way, it waits for them (at most
//! [`GATHER_LIMIT`]) so one flush covers them all; a lone writer is flushed at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest time the flusher holds a flush back for writers already on their way.
pub(crate) const GATHER_LIMIT: Duration = Duration::from_micros(1500);

use crate::{Result, StorageError};

#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    pub flushes: u64,
    pub total_micros: u64,
    pub max_micros: u64,
    pub failures: u64,
}

#[derive(Default)]
struct State {
    /// Highest ticket handed out.
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Every ticket up to this one was in a flush that failed, with the error.
    failed_through: u64,
    failure: Option<String>,
    stopping: bool,
    /// Writers between announcing themselves and taking their ticket.
    in_flight: usize,
    /// The flusher thread has ended; nothing issued after this becomes durable.
    stopped: bool,
    stats: FlushStats,
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    pub(crate) fn start(db: sled::Db) -> Arc<GroupCommit> {
        let commits =
            Arc::new(GroupCommit { state: Mutex::default(), changed: Condvar::new(), thread: Mutex::new(None) });
        let worker = Arc::clone(&commits);
        let handle = std::thread::Builder::new()
            .name("vouch-store-flush".to_string())
            .spawn(move || worker.run(&db))
            .expect("the flusher thread starts");
        *commits.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(handle);
        commits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self, db: &sled::Db) {
        loop {
            let target = {
                let mut state = self.lock();
                while state.issued == state.durable.max(state.failed_through) && !state.stopping {
                    state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if state.stopping && state.issued == state.durable.max(state.failed_through) {
                    state.stopped = true;
                    self.changed.notify_all();
                    return;
                }
                let gather_until = Instant::now() + GATHER_LIMIT;
                while state.in_flight > 0 && !state.stopping {
                    let now = Instant::now();
                    if now >= gather_until {
                        break;
                    }
                    state = self
                        .changed
                        .wait_timeout(state, gather_until - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
                state.issued
            };
            let started = Instant::now();
            let outcome = db.flush();
            let micros = started.elapsed().as_micros() as u64;
            let mut state = self.lock();
            state.stats.flushes += 1;
            state.stats.total_micros += micros;
            state.stats.max_micros = state.stats.max_micros.max(micros);
            match outcome {
                Ok(_) => state.durable = target,
                Err(error) => {
                    state.stats.failures += 1;
                    state.failed_through = target;
                    state.failure = Some(error.to_string());
                }
            }
            self.changed.notify_all();
        }
    }

    /// Counts a writer as on its way until the returned value is dropped.
    pub(crate) fn arrive(&self) -> Arrival<'_> {
        self.lock().in_flight += 1;
        Arrival { commits: self, counted: std::cell::Cell::new(true) }
    }

    /// A ticket for everything applied so far. Take it after applying, before waiting; the
    /// writer stops counting as on its way in the same step, so the flusher need not wait for it.
    pub(crate) fn ticket(&self, arrival: &Arrival<'_>) -> u64 {
        let mut state = self.lock();
        if arrival.counted.replace(false) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        state.issued += 1;
        let ticket = state.issued;
        self.changed.notify_all();
        ticket
    }

    /// Blocks until the ticket's writes are durable, or their flush failed.
    pub(crate) fn wait(&self, ticket: u64) -> Result<()> {
        let mut state = self.lock();
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.failed_through >= ticket {
                return Err(StorageError::Flush(state.failure.clone().unwrap_or_default()));
            }
            if state.stopped {
                return Err(StorageError::ShuttingDown);
            }
            state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    pub(crate) fn stats(&self) -> FlushStats {
        self.lock().stats
    }

    /// Lets pending flushes finish, then ends the thread.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// A writer on its way to a ticket; dropping it before its ticket tells the flusher it gave up.
pub(crate) struct Arrival<'a> {
    commits: &'a GroupCommit,
    counted: std::cell::Cell<bool>,
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if self.counted.get() {
            let mut state = self.commits.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            self.commits.changed.notify_all();
        }
    }
}
