//! Group commit: one thread flushes sled for every writer waiting at that moment.
//!
//! sled 0.34 makes writes durable only on flush, and concurrent `flush_async` calls can deadlock
//! (sled issue #1308). So no writer flushes itself: each takes a ticket after applying its batch
//! and waits until the flusher thread reports a flush that began after that ticket was issued.
//! One fsync then covers every writer that arrived while the previous one ran.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

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

    /// A ticket for everything applied so far. Take it after applying, before waiting.
    pub(crate) fn ticket(&self) -> u64 {
        let mut state = self.lock();
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
