//! Compressing and applying groups of alerts while the next are staged (sled only).
//!
//! The intake thread records a group of alerts (reads, decisions, encoding: "staging") and then
//! applies the group's writes to sled as one batch. Measured with distinct alerts at 64 senders,
//! that thread was the bound: a whole core, 29% of the process's samples staging and 22%
//! applying, while a fifth of the other core stood idle. So a group written by
//! [`Store::write_group`](crate::Store::write_group) is handed to an applier thread, which
//! compresses its values against the dictionaries and applies them, and the intake stages the
//! next group meanwhile.
//!
//! What keeps this correct:
//! - **A few groups in flight, in order.** The writer that hands a group over keeps its writes
//!   in the writer state ([`InFlightGroups`], at most [`MOST_IN_FLIGHT`]); every later writer
//!   reads through them ([`Layered`]), and the applier applies them in the order of the writer
//!   lock. A writer that applies its own batch waits until they are all applied first. Writes
//!   reach sled in the order of the writer lock, as before.
//! - **One maker of dictionaries at a time.** A group's values are compressed by the applier,
//!   and a writer that applies its own batch compresses only once the groups before it are
//!   applied: each family's next dictionary is made once, by one thread, and is known (learned)
//!   before any later value is compressed.
//! - **Acknowledged means applied and flushed.** The group's ticket is entered for a flush only
//!   once its batch is applied; a batch that fails settles it as failed, and the writers after it
//!   fail too (they were staged on top of it) while the store is marked failed and reopened.
//! - Readers outside the writer lock see a group once it is applied, as before; nobody is told of
//!   a group before its ticket is durable.
//!
//! What limits the overlap: sled 0.34 guards all its trees with one process-wide reader-writer
//! lock, which `apply_batch` holds for writing while it applies a batch and every read takes for
//! reading. A writer staging the next group therefore waits at its first read from sled until the
//! batch being applied is in (measured: about one such wait of about 1 ms per group; see
//! BENCHMARKS.md). Compressing is done before the batch, outside that lock.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sled::IVec;

use crate::dictionary::Dictionaries;
use crate::engine::{TransactionSource, Write, Writes};
use crate::group_commit::{Arrival, GroupCommit, Ticket};
use crate::{Result, StorageError};

/// A group's writes as it staged them (values not compressed yet), in key order (`None` removes
/// the key): what later writers read through, and what the applier compresses and applies.
pub(crate) type StagedWrites = Arc<Writes>;

/// The most groups handed to the applier and not yet applied. With one, the intake waited for
/// the applier before handing over each group (a fifth of its time at 64 senders, while the
/// machine had a core a quarter idle); a few let it stage on while the applier catches up, and
/// keep what a writer reads through small.
const MOST_IN_FLIGHT: usize = 3;

/// A group handed to the applier and not yet known to be applied.
pub(crate) struct InFlight {
    writes: StagedWrites,
    applied: Arc<Applied>,
}

/// The groups handed to the applier and perhaps not applied yet, oldest first. Writers read
/// through them ([`Layered`]); the applier applies them in this order.
#[derive(Default)]
pub(crate) struct InFlightGroups {
    groups: VecDeque<InFlight>,
}

impl InFlightGroups {
    /// Forgets the groups sled holds already (a group that failed stays, for its error).
    pub(crate) fn forget_applied(&mut self) {
        while self.groups.front().is_some_and(|group| group.applied.is_applied()) {
            self.groups.pop_front();
        }
    }

    /// What a writer reads through: the groups' writes, oldest first.
    pub(crate) fn overlays(&self) -> Vec<&[Write]> {
        self.groups.iter().map(|group| &group.writes[..]).collect()
    }

    /// Waits until there is room for one more group.
    pub(crate) fn make_room(&mut self) -> Result<()> {
        while self.groups.len() >= MOST_IN_FLIGHT {
            if let Some(oldest) = self.groups.pop_front() {
                oldest.applied.wait()?;
            }
        }
        Ok(())
    }

    /// Waits until every group is in sled (or one could not be put there).
    pub(crate) fn wait_all(&mut self) -> Result<()> {
        while let Some(oldest) = self.groups.pop_front() {
            oldest.applied.wait()?;
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, group: InFlight) {
        self.groups.push_back(group);
    }
}

/// Whether a handed-over group is in sled yet.
#[derive(Default)]
struct Applied {
    outcome: Mutex<Option<std::result::Result<(), String>>>,
    settled: Condvar,
}

impl Applied {
    fn is_applied(&self) -> bool {
        matches!(*self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()), Some(Ok(())))
    }

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
    writes: StagedWrites,
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
    pub(crate) fn start(
        tree: sled::Db,
        commits: Arc<GroupCommit>,
        failed: Arc<AtomicBool>,
        dictionaries: Arc<Dictionaries>,
    ) -> Applier {
        let (jobs, waiting) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("vouch-store-apply".to_string())
            .spawn(move || {
                for job in waiting {
                    apply(&tree, &commits, &failed, &dictionaries, job);
                }
            })
            .expect("the applier thread starts");
        Applier { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)) }
    }

    /// Hands a group over; its ticket is entered for a flush once it is applied. The writer's
    /// place in the flusher's count goes with it.
    pub(crate) fn hand_over(&self, writes: StagedWrites, arrival: Arrival) -> Result<(InFlight, Ticket)> {
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

/// Compresses a group's values, applies them, and makes the dictionaries it made known, before
/// anyone waiting on the group hears of it.
fn apply(tree: &sled::Db, commits: &GroupCommit, failed: &AtomicBool, dictionaries: &Dictionaries, job: Job) {
    if failed.load(Ordering::Acquire) {
        let reason = "the store failed before this change was applied";
        job.applied.set(Err(reason.to_string()));
        job.ticket.fail(reason);
        return;
    }
    // Compressed into a copy: later writers may still be reading the group as staged.
    let mut writes: Writes = job.writes.as_ref().clone();
    let applied = dictionaries
        .compact(&mut writes, tree)
        .and_then(|learned| Ok((tree.apply_batch(crate::engine::sled_batch(writes))?, learned)));
    match applied {
        Ok(((), learned)) => {
            dictionaries.learn(learned);
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

/// A writer's view of the store while groups are in flight: their writes laid over sled, the
/// newest group's over the older ones'.
pub(crate) struct Layered<'a> {
    pub(crate) tree: &'a sled::Db,
    /// Each group's writes in key order, oldest group first.
    pub(crate) over: Vec<&'a [Write]>,
}

/// The writes of one group from `low` on, in key order (all of them to the end).
fn from_key<'a>(writes: &'a [Write], low: &[u8]) -> &'a [Write] {
    &writes[writes.partition_point(|(key, _)| key.as_slice() < low)..]
}

/// The writes of one group under `prefix`, in key order.
fn under_prefix<'a>(writes: &'a [Write], prefix: &'a [u8]) -> impl Iterator<Item = &'a Write> {
    from_key(writes, prefix).iter().take_while(move |(key, _)| key.starts_with(prefix))
}

impl Layered<'_> {
    /// What the groups in flight do to `key`, the newest that writes it deciding: `Some(None)`
    /// removes it, `None` leaves it.
    fn written(&self, key: &[u8]) -> Option<Option<&IVec>> {
        self.over.iter().rev().find_map(|writes| {
            let at = writes.binary_search_by(|(written, _)| written.as_slice().cmp(key)).ok()?;
            Some(writes[at].1.as_ref())
        })
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
        if self.over.iter().all(|writes| under_prefix(writes, prefix).next().is_none()) {
            return Ok(stored);
        }
        let mut keys: BTreeSet<IVec> = stored.into_iter().collect();
        for writes in &self.over {
            for (key, value) in under_prefix(writes, prefix) {
                match value {
                    Some(_) => keys.insert(IVec::from(key.as_slice())),
                    None => keys.remove(key.as_slice()),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }

    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>> {
        if self.over.is_empty() {
            return TransactionSource::last_key_between(self.tree, low, high);
        }
        // The last key some group writes that no newer group removes.
        let written = self
            .over
            .iter()
            .filter_map(|writes| {
                let from_low = from_key(writes, low);
                from_low[..from_low.partition_point(|(key, _)| key.as_slice() <= high)]
                    .iter()
                    .rev()
                    .find(|(key, _)| matches!(self.written(key), Some(Some(_))))
                    .map(|(key, _)| IVec::from(key.as_slice()))
            })
            .max();
        // The last stored key the groups in flight do not remove.
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

    fn key(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    /// The groups in flight laid over what sled holds: their writes win, their removals hide,
    /// and a newer group's over an older one's.
    #[test]
    fn a_writer_reads_the_groups_in_flight_over_the_store() {
        let folder = tempfile::tempdir().expect("temp dir");
        let tree = sled::Config::new().path(folder.path()).open().expect("sled");
        for key in ["a/1", "a/3", "a/5", "b/1"] {
            tree.insert(key, "stored").expect("insert");
        }
        let over: Writes = vec![
            (key("a/2"), Some(ivec("in flight"))),
            (key("a/3"), Some(ivec("rewritten"))),
            (key("a/5"), None),
            (key("a/6"), None),
        ];
        let layered = Layered { tree: &tree, over: vec![&over] };
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
        // A newer group in flight over that one: its writes and removals decide.
        let newer: Writes = vec![
            (key("a/2"), None),
            (key("a/5"), Some(ivec("back"))),
            (key("a/7"), Some(ivec("newest"))),
            (key("b/1"), None),
        ];
        let layered = Layered { tree: &tree, over: vec![&over, &newer] };
        let value = |key: &str| layered.get(key.as_bytes()).expect("read").map(|value| value.to_vec());
        assert_eq!(value("a/2"), None);
        assert_eq!(value("a/3"), Some(b"rewritten".to_vec()));
        assert_eq!(value("a/5"), Some(b"back".to_vec()));
        assert_eq!(value("a/7"), Some(b"newest".to_vec()));
        let keys: Vec<IVec> = layered.keys_with_prefix(b"a/").expect("keys");
        assert_eq!(keys, vec![ivec("a/1"), ivec("a/3"), ivec("a/5"), ivec("a/7")]);
        assert!(layered.keys_with_prefix(b"b/").expect("keys").is_empty());
        let last = |low: &str, high: &str| layered.last_key_between(low.as_bytes(), high.as_bytes()).expect("read");
        for (low, high, expected) in [
            ("a/", "a/9", Some("a/7")),
            ("a/", "a/6", Some("a/5")),
            ("a/", "a/2", Some("a/1")),
            ("a/2", "a/29", None),
            ("b/", "b/9", None),
        ] {
            assert_eq!(last(low, high), expected.map(ivec), "last key from {low} to {high}, two groups in flight");
        }
        // Nothing in flight: sled as it is.
        let plain = Layered { tree: &tree, over: Vec::new() };
        assert_eq!(plain.keys_with_prefix(b"a/").expect("keys").len(), 3);
        assert_eq!(plain.last_key_between(b"a/", b"a/9").expect("read"), Some(ivec("a/5")));
    }
}
