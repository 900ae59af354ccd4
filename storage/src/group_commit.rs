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
//!
//! Each ticket has its own completion slot, woken by the flusher alone: a writer waiting for its
//! flush is never woken by other writers' comings and goings (with one shared condition variable
//! every ticket woke every waiter). A slot can be waited on by a blocked thread or awaited by an
//! async task, so an HTTP request does not need a blocking thread just to wait for the disk.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
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
    stopping: bool,
    /// Writers between announcing themselves and taking their ticket.
    in_flight: usize,
    /// The flusher thread has ended; nothing issued after this becomes durable.
    stopped: bool,
    stats: FlushStats,
    /// Tickets not yet settled, in ticket order.
    waiting: VecDeque<(u64, Arc<Slot>)>,
}

/// How a ticket's flush ended.
#[derive(Debug, Clone)]
enum Outcome {
    Durable,
    Failed(Arc<str>),
    Stopped,
}

impl Outcome {
    fn into_result(self) -> Result<()> {
        match self {
            Outcome::Durable => Ok(()),
            Outcome::Failed(error) => Err(StorageError::Flush(error.to_string())),
            Outcome::Stopped => Err(StorageError::ShuttingDown),
        }
    }
}

/// Where the flusher leaves one ticket's outcome, and how it wakes whoever waits for it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    settled: Condvar,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    /// Every task waiting: the writes of one group share a slot, one waiter per request.
    wakers: Vec<Waker>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settle(&self, outcome: Outcome) {
        let wakers = {
            let mut state = self.lock();
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        self.settled.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A writer's claim on the next flush: wait on it (blocking) or await it. Clones share the claim
/// (the changes of one group write are made durable by the same flush).
#[derive(Clone)]
pub(crate) struct Ticket {
    slot: Arc<Slot>,
}

impl Ticket {
    /// A ticket for writes that were durable when they were applied (a committed PostgreSQL
    /// transaction).
    pub(crate) fn settled() -> Ticket {
        let slot = Slot::default();
        slot.lock().outcome = Some(Outcome::Durable);
        Ticket { slot: Arc::new(slot) }
    }

    /// A ticket for writes not applied yet: [`GroupCommit::issue`] enters it for a flush once
    /// they are, or [`Ticket::fail`] settles it if they cannot be.
    pub(crate) fn unissued() -> Ticket {
        Ticket { slot: Arc::new(Slot::default()) }
    }

    /// Settles a ticket whose writes were never applied.
    pub(crate) fn fail(&self, reason: &str) {
        self.slot.settle(Outcome::Failed(reason.into()));
    }

    /// Blocks until the ticket's writes are durable, or their flush failed.
    pub(crate) fn wait(self) -> Result<()> {
        let mut state = self.slot.lock();
        loop {
            if let Some(outcome) = state.outcome.clone() {
                return outcome.into_result();
            }
            state = self.slot.settled.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Future for Ticket {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Result<()>> {
        let mut state = self.slot.lock();
        match state.outcome.clone() {
            Some(outcome) => Poll::Ready(outcome.into_result()),
            None => {
                if !state.wakers.iter().any(|waker| waker.will_wake(context.waker())) {
                    state.wakers.push(context.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

pub(crate) struct GroupCommit {
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The failure flag of the sled instance this flusher serves; the store then reopens sled.
    failed: Arc<AtomicBool>,
}

impl GroupCommit {
    /// Starts the flusher for `db`; a failed flush sets `failed`.
    pub(crate) fn start(db: sled::Db, failed: Arc<AtomicBool>) -> Arc<GroupCommit> {
        let commits = Arc::new(GroupCommit {
            state: Mutex::default(),
            changed: Condvar::new(),
            thread: Mutex::new(None),
            failed,
        });
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
                    let abandoned: Vec<_> = state.waiting.drain(..).map(|(_, slot)| slot).collect();
                    drop(state);
                    for slot in abandoned {
                        slot.settle(Outcome::Stopped);
                    }
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
            let settled = {
                let mut state = self.lock();
                state.stats.flushes += 1;
                state.stats.total_micros += micros;
                state.stats.max_micros = state.stats.max_micros.max(micros);
                match &outcome {
                    Ok(_) => state.durable = target,
                    Err(error) => {
                        tracing::error!(error = %error, "a flush of the store failed");
                        state.stats.failures += 1;
                        state.failed_through = target;
                        self.failed.store(true, Ordering::Release);
                    }
                }
                let covered = state.waiting.iter().take_while(|(ticket, _)| *ticket <= target).count();
                state.waiting.drain(..covered).map(|(_, slot)| slot).collect::<Vec<_>>()
            };
            // Waiters are woken outside the state lock, so they can take their next ticket at once.
            let outcome = match &outcome {
                Ok(_) => Outcome::Durable,
                Err(error) => Outcome::Failed(error.to_string().into()),
            };
            for slot in settled {
                slot.settle(outcome.clone());
            }
        }
    }

    /// Counts a writer as on its way until the returned value is dropped (or its ticket issued).
    pub(crate) fn arrive(self: &Arc<Self>) -> Arrival {
        self.lock().in_flight += 1;
        Arrival { commits: Arc::clone(self), counted: std::cell::Cell::new(true) }
    }

    /// A writer the flusher need not wait for: one whose batch is already a group (the intake's,
    /// handed to the applier). Waiting for it held every flush back by the whole time it took to
    /// stage and apply its group, longer than the gathering allows, for nothing.
    pub(crate) fn arrive_unawaited(self: &Arc<Self>) -> Arrival {
        Arrival { commits: Arc::clone(self), counted: std::cell::Cell::new(false) }
    }

    /// A ticket for everything applied so far. Take it after applying, before waiting; the
    /// writer stops counting as on its way in the same step, so the flusher need not wait for it.
    pub(crate) fn ticket(&self, arrival: &Arrival) -> Ticket {
        let ticket = Ticket::unissued();
        self.issue(arrival, &ticket);
        ticket
    }

    /// Enters `ticket` for the next flush: everything applied so far, its writes among them.
    pub(crate) fn issue(&self, arrival: &Arrival, ticket: &Ticket) {
        let slot = Arc::clone(&ticket.slot);
        let mut state = self.lock();
        if arrival.counted.replace(false) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        if state.stopped {
            drop(state);
            slot.settle(Outcome::Stopped);
            return;
        }
        state.issued += 1;
        let number = state.issued;
        state.waiting.push_back((number, slot));
        // Only the flusher waits on this condition variable.
        self.changed.notify_one();
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
/// It may travel with the writes to the thread that applies them (`pipeline`).
pub(crate) struct Arrival {
    commits: Arc<GroupCommit>,
    counted: std::cell::Cell<bool>,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if self.counted.get() {
            let mut state = self.commits.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            self.commits.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The writes of one group share a ticket; every request awaiting it must be woken by the
    /// flush, not only the last one that looked.
    #[test]
    fn every_task_awaiting_a_shared_ticket_is_woken() {
        let ticket = Ticket { slot: Arc::new(Slot::default()) };
        let wakers: Vec<Arc<CountingWaker>> = (0..3).map(|_| Arc::new(CountingWaker(AtomicUsize::new(0)))).collect();
        let mut tickets: Vec<Ticket> = (0..3).map(|_| ticket.clone()).collect();
        for (ticket, waker) in tickets.iter_mut().zip(&wakers) {
            let waker = Waker::from(Arc::clone(waker));
            let mut context = Context::from_waker(&waker);
            assert!(Pin::new(ticket).poll(&mut context).is_pending());
        }
        ticket.slot.settle(Outcome::Durable);
        assert!(wakers.iter().all(|waker| waker.0.load(Ordering::SeqCst) == 1), "every waiter woken once");
        for ticket in tickets {
            assert!(ticket.wait().is_ok());
        }
    }
}
