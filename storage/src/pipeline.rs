//! Applying one group of alerts while the next is staged (sled only).
//!
//! The intake thread records a group of alerts (reads, decisions, encoding: "staging") and then
//! applies the group's writes to sled as one batch. Measured with distinct alerts at 64 senders,
//! that thread was the bound: a whole core, 29% of the process's samples staging and 22%
//! applying, while a fifth of the other core stood idle. So a group written by
//! [`Store::write_group`](crate::Store::write_group) is handed to an applier thread, and the
//! intake stages the next group meanwhile.
//!
//! What keeps this correct:
//! - **One group in flight.** The writer that hands a group over keeps its writes in the writer
//!   state ([`InFlight`]); the next writer, whoever it is, reads through them ([`Layered`]), and
//!   waits until that group is applied before it applies (or hands over) its own. Writes reach
//!   sled in the order of the writer lock, as before.
//! - **Acknowledged means applied and flushed.** The group's ticket is entered for a flush only
//!   once its batch is applied; a batch that fails settles it as failed, and the writers after it
//!   fail too (they were staged on top of it) while the store is marked failed and reopened.
//! - Readers outside the writer lock see a group once it is applied, as before; nobody is told of
//!   a group before its ticket is durable.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sled::IVec;

use crate::engine::TransactionSource;
use crate::group_commit::{Arrival, GroupCommit, Ticket};
use crate::{Result, StorageError};

/// A group's writes as they go to sled, in key order (`None` removes the key).
pub(crate) type AppliedWrites = Arc<[(IVec, Option<IVec>)]>;

/// The group handed to the applier and not yet known to be applied.
pub(crate) struct InFlight {
    pub(crate) writes: AppliedWrites,
    applied: Arc<Applied>,
}

impl InFlight {
    /// Blocks until the group is in sled (or could not be put there).
    pub(crate) fn wait_applied(&self) -> Result<()> {
        self.applied.wait()
    }
}

/// Whether a handed-over group is in sled yet.
#[derive(Default)]
struct Applied {
    outcome: Mutex<Option<std::result::Result<(), String>>>,
    settled: Condvar,
}

impl Applied {
    fn set(&self, outcome: std::result::Result<(), String>) {
        *self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
        self.settled.notify_all();
    }

    fn wait(&self) -> Result<()> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            match outcome.as_ref() {
                Some(Ok(())) => return Ok(()),
                // The store is failed already (the applier marked it); an I/O failure reopens it.
                Some(Err(reason)) => return Err(StorageError::Flush(reason.clone())),
                None => outcome = self.settled.wait(outcome).unwrap_or_else(|poisoned| poisoned.into_inner()),
            }
        }
    }
}

struct Job {
    writes: AppliedWrites,
    arrival: Arrival,
    ticket: Ticket,
    applied: Arc<Applied>,
}

/// The thread that applies handed-over groups to sled, in the order they were handed over.
pub(crate) struct Applier {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Applier {
    pub(crate) fn start(tree: sled::Db, commits: Arc<GroupCommit>, failed: Arc<AtomicBool>) -> Applier {
        let (jobs, waiting) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("vouch-store-apply".to_string())
            .spawn(move || {
                for job in waiting {
                    apply(&tree, &commits, &failed, job);
                }
            })
            .expect("the applier thread starts");
        Applier { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)) }
    }

    /// Hands a group over; its ticket is entered for a flush once it is applied. The writer's
    /// place in the flusher's count goes with it.
    pub(crate) fn hand_over(&self, writes: AppliedWrites, arrival: Arrival) -> Result<(InFlight, Ticket)> {
        let ticket = Ticket::unissued();
        let applied = Arc::new(Applied::default());
        let job = Job { writes: Arc::clone(&writes), arrival, ticket: ticket.clone(), applied: Arc::clone(&applied) };
        let jobs = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match jobs.as_ref().map(|jobs| jobs.send(job)) {
            Some(Ok(())) => Ok((InFlight { writes, applied }, ticket)),
            _ => Err(StorageError::ShuttingDown),
        }
    }

    /// Applies what was handed over, then ends the thread. Later hand-overs are refused.
    pub(crate) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn apply(tree: &sled::Db, commits: &GroupCommit, failed: &AtomicBool, job: Job) {
    if failed.load(Ordering::Acquire) {
        let reason = "the store failed before this change was applied";
        job.applied.set(Err(reason.to_string()));
        job.ticket.fail(reason);
        return;
    }
    let batch = crate::engine::sled_batch(job.writes.iter().map(|(key, value)| (key.clone(), value.clone())));
    match tree.apply_batch(batch) {
        Ok(()) => {
            commits.issue(&job.arrival, &job.ticket);
            job.applied.set(Ok(()));
        }
        Err(error) => {
            tracing::error!(error = %error, "a batch could not be applied; the store will be reopened");
            // Marked failed before anyone waiting hears of it, so no writer stages on without it.
            failed.store(true, Ordering::Release);
            let reason = error.to_string();
            job.applied.set(Err(reason.clone()));
            job.ticket.fail(&reason);
        }
    }
}

/// A writer's view of the store while a group is in flight: that group's writes laid over sled.
pub(crate) struct Layered<'a> {
    pub(crate) tree: &'a sled::Db,
    pub(crate) over: Option<&'a [(IVec, Option<IVec>)]>,
}

impl Layered<'_> {
    /// What the group in flight does to `key`: `Some(None)` removes it, `None` leaves it.
    fn written(&self, key: &[u8]) -> Option<Option<&IVec>> {
        let over = self.over?;
        let at = over.binary_search_by(|(written, _)| written.as_ref().cmp(key)).ok()?;
        Some(over[at].1.as_ref())
    }
}

impl TransactionSource for Layered<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        match self.written(key) {
            Some(value) => Ok(value.cloned()),
            None => TransactionSource::get(self.tree, key),
        }
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<IVec>> {
        let stored = TransactionSource::keys_with_prefix(self.tree, prefix)?;
        let Some(over) = self.over else { return Ok(stored) };
        let mut keys: BTreeSet<IVec> = stored.into_iter().collect();
        for (key, value) in over.iter().filter(|(key, _)| key.starts_with(prefix)) {
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        Ok(keys.into_iter().collect())
    }

    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>> {
        let Some(over) = self.over else { return TransactionSource::last_key_between(self.tree, low, high) };
        let written = over
            .iter()
            .rev()
            .find(|(key, value)| value.is_some() && key.as_ref() >= low && key.as_ref() <= high)
            .map(|(key, _)| key.clone());
        // The last stored key the group in flight does not remove.
        let mut stored = None;
        for entry in self.tree.range(low..=high).rev() {
            let (key, _) = entry?;
            if !matches!(self.written(&key), Some(None)) {
                stored = Some(key);
                break;
            }
        }
        Ok(written.into_iter().chain(stored).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ivec(text: &str) -> IVec {
        IVec::from(text.as_bytes())
    }

    /// The group in flight laid over what sled holds: its writes win, its removals hide.
    #[test]
    fn a_writer_reads_the_group_in_flight_over_the_store() {
        let folder = tempfile::tempdir().expect("temp dir");
        let tree = sled::Config::new().path(folder.path()).open().expect("sled");
        for key in ["a/1", "a/3", "a/5", "b/1"] {
            tree.insert(key, "stored").expect("insert");
        }
        let over: Vec<(IVec, Option<IVec>)> = vec![
            (ivec("a/2"), Some(ivec("in flight"))),
            (ivec("a/3"), Some(ivec("rewritten"))),
            (ivec("a/5"), None),
            (ivec("a/6"), None),
        ];
        let layered = Layered { tree: &tree, over: Some(&over) };
        let value = |key: &str| layered.get(key.as_bytes()).expect("read").map(|value| value.to_vec());
        assert_eq!(value("a/1"), Some(b"stored".to_vec()));
        assert_eq!(value("a/2"), Some(b"in flight".to_vec()));
        assert_eq!(value("a/3"), Some(b"rewritten".to_vec()));
        assert_eq!(value("a/5"), None);
        assert_eq!(value("a/6"), None);
        let keys: Vec<IVec> = layered.keys_with_prefix(b"a/").expect("keys");
        assert_eq!(keys, vec![ivec("a/1"), ivec("a/2"), ivec("a/3")]);
        let last = |low: &str, high: &str| layered.last_key_between(low.as_bytes(), high.as_bytes()).expect("read");
        for (low, high, expected) in [
            ("a/", "a/9", Some("a/3")),
            ("a/", "a/2", Some("a/2")),
            ("a/", "a/1", Some("a/1")),
            ("a/4", "a/9", None),
            ("a/2", "a/29", Some("a/2")),
            ("b/", "b/9", Some("b/1")),
        ] {
            assert_eq!(last(low, high), expected.map(ivec), "last key from {low} to {high}");
        }
        // Nothing in flight: sled as it is.
        let plain = Layered { tree: &tree, over: None };
        assert_eq!(plain.keys_with_prefix(b"a/").expect("keys").len(), 3);
        assert_eq!(plain.last_key_between(b"a/", b"a/9").expect("read"), Some(ivec("a/5")));
    }
}
