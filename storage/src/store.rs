//! Opening, failing, reopening and closing the store: the sled instance in use and the writer lock
//! that orders every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::case_blocks::{DeadlineBucket, IdBlock};
use crate::codec::SCHEMA_VERSION;
use crate::dictionary::{Dictionaries, Expanding};
use crate::engine::{Engine, Scan, TransactionSource, Writes};
use crate::group_commit::{FlushStats, GroupCommit};
use crate::pipeline::{Applier, Layered};
use crate::postgres::{PgEngine, PostgresOptions};
use crate::replicas::Fence;
use crate::transaction::{KvTransaction, Transaction, WriterState};
use crate::{keys, Pending, Result, StorageError};

/// The version of the case indexes: 2 added finished cases by when they last changed, 3 the
/// cases waiting on a push, 4 kept the finished-or-not and field indexes in blocks of 64 cases
/// (`case_blocks`) where they had a key per case, 5 the deadline index in buckets by second and
/// block (it had a key per case, and was kept apart from this rebuild).
const CASE_INDEX_VERSION: u8 = 5;
/// The layout of the history keys (`keys::history`).
const HISTORY_LAYOUT: u8 = 2;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache; kept small because cases are read rarely and whole, and sled holds
    /// two to three times it in memory.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreOptions {
    /// The cache `[storage] cache_capacity_mib` gives when it is not set (4 MiB).
    fn default() -> StoreOptions {
        StoreOptions { cache_capacity_bytes: 4 * 1024 * 1024 }
    }
}

/// The durable store. After an I/O failure (a full disk, say) sled refuses every later call, so
/// the store marks that sled instance failed and every call answers [`StorageError::Unavailable`]
/// until [`Store::recover`] has dropped it and opened the files again. sled recovers from its log
/// as after a crash: everything made durable before the failure is there, and nothing that
/// failed was acknowledged. Reopening is left to the caller's schedule (the bot tries once a
/// second, on a blocking thread) so that no request waits for it.
pub struct Store {
    location: Location,
    /// What this process may change (see [`Fence`]).
    pub(crate) fence: Mutex<Fence>,
    /// The engine instance in use; `None` between dropping a failed one and opening the next.
    current: RwLock<Option<Arc<Generation>>>,
    /// Keeps two callers from reopening at once.
    reopening: Mutex<()>,
    reopened: AtomicU64,
}

/// The engine a store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, one process.
    Sled,
    /// Shared by replicas, one of which leads.
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sled => "sled",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the store's records are.
enum Location {
    Sled { path: PathBuf, options: StoreOptions },
    Postgres(PostgresOptions),
}

impl Location {
    fn describe(&self) -> String {
        match self {
            Location::Sled { path, .. } => path.display().to_string(),
            Location::Postgres(_) => "the PostgreSQL database".to_string(),
        }
    }
}

/// One engine instance (a sled instance, or a PostgreSQL pool) and everything tied to it.
pub(crate) struct Generation {
    pub(crate) engine: Engine,
    /// Serializes this process's writers: the case counter, the indexes and the audit chain need
    /// one order (on PostgreSQL an advisory lock orders them across replicas too).
    writer: Mutex<WriterState>,
    /// Set by an I/O failure of this instance, including one met by its flusher thread. Each
    /// instance has its own, so a late failure of a replaced one cannot fail its successor.
    failed: Arc<AtomicBool>,
    /// What values are compressed with; reads through the generation expand them.
    dictionaries: Arc<Dictionaries>,
    /// On sled, the thread that applies a group of alerts while the next is staged.
    applier: Option<Applier>,
}

impl Store {
    /// Opens (or creates) the store in `path`. Only one process may have it open.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store> {
        // A store closed a moment ago in this same process may still hold sled's lock briefly.
        let generation = Generation::open_sled(path, options, Duration::from_secs(2))?;
        Ok(Store::with(Location::Sled { path: path.to_path_buf(), options: options.clone() }, generation))
    }

    /// Opens the store in a PostgreSQL database, migrating its schema first. Any number of
    /// processes may have it open: their changes take turns.
    pub fn open_postgres(options: &PostgresOptions) -> Result<Store> {
        let generation = Generation::open_postgres(options)?;
        Ok(Store::with(Location::Postgres(options.clone()), generation))
    }

    fn with(location: Location, generation: Generation) -> Store {
        Store {
            location,
            fence: Mutex::new(Fence::Alone),
            current: RwLock::new(Some(Arc::new(generation))),
            reopening: Mutex::new(()),
            reopened: AtomicU64::new(0),
        }
    }

    /// Which engine holds the store.
    pub fn backend(&self) -> Backend {
        match self.location {
            Location::Sled { .. } => Backend::Sled,
            Location::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one change: `work` reads what it needs and stages its writes on the transaction,
    /// under the writer lock; they are applied together, atomically, when it returns `Ok`, and
    /// not at all when it returns an error. The result may be acknowledged only once the
    /// returned [`Pending`] is waited on: that covers everything the transaction read, too.
    /// Checked against this process's [`Fence`]: only the leader (or a lone process) may.
    pub fn write<T>(&self, work: impl FnOnce(&mut dyn Transaction) -> Result<T>) -> Result<Pending<T>> {
        self.write_under(self.fence(), Applying::Now, work)
    }

    /// Runs one change that any replica may make, leader or not (a directory push): like
    /// [`Store::write`], without the leadership check.
    pub fn write_from_any_replica<T>(
        &self,
        work: impl FnOnce(&mut dyn Transaction) -> Result<T>,
    ) -> Result<Pending<T>> {
        self.write_under(Fence::Alone, Applying::Now, work)
    }

    fn write_under<T>(
        &self,
        fence: Fence,
        applying: Applying,
        work: impl FnOnce(&mut dyn Transaction) -> Result<T>,
    ) -> Result<Pending<T>> {
        let leader_of = match fence {
            Fence::Standby => return Err(StorageError::NotLeader),
            Fence::Leader(epoch) => Some(epoch),
            Fence::Alone => None,
        };
        let changed = self.on_current(|generation| {
            generation.change(leader_of, applying, |source, state| {
                let mut transaction = KvTransaction::new(source, state);
                let value = work(&mut transaction)?;
                Ok((value, transaction.into_writes()))
            })
        });
        if let Err(StorageError::Fenced { .. }) = changed {
            self.set_fence(Fence::Standby);
        }
        let (value, ticket) = changed?;
        Ok(Pending { value, ticket })
    }

    /// Runs one change for each input in a single transaction: one pass under the writer lock,
    /// one atomic batch, one flush for them all. Each change sees the ones before it. Any error
    /// fails the whole group and nothing of it is written: the caller answers each of them so.
    /// This is how a burst of requests shares the cost of the lock and of sled's batch. Alerts
    /// are taken by every replica, so a group is never checked against the leadership.
    pub fn write_group<I, T>(
        &self,
        inputs: Vec<I>,
        mut work: impl FnMut(&mut dyn Transaction, I) -> Result<T>,
    ) -> Result<Vec<Pending<T>>> {
        // On sled the group is applied by the applier while the caller stages the next one.
        let Pending { value: values, ticket } =
            self.write_under(Fence::Alone, Applying::HandedOver, |transaction| {
                inputs.into_iter().map(|input| work(transaction, input)).collect::<Result<Vec<T>>>()
            })?;
        Ok(values.into_iter().map(|value| Pending { value, ticket: ticket.clone() }).collect())
    }

    /// Runs `work` on the current sled instance, or answers `Unavailable` while it is failed,
    /// and notes an I/O failure in its result.
    pub(crate) fn on_current<T>(&self, work: impl FnOnce(&Generation) -> Result<T>) -> Result<T> {
        let generation = self.generation()?;
        let result = work(&generation);
        if let Err(error) = &result {
            if error.is_io_failure() && !generation.failed.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %error, store = %self.location.describe(), "the store failed; it will be reopened");
            }
        }
        result
    }

    /// How many times the store was reopened after a failure.
    pub fn reopen_count(&self) -> u64 {
        self.reopened.load(Ordering::Relaxed)
    }

    /// Whether the store met an I/O failure it has not yet recovered from.
    pub fn is_failed(&self) -> bool {
        self.current_generation().is_none_or(|generation| generation.is_failed())
    }

    fn current_generation(&self) -> Option<Arc<Generation>> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn generation(&self) -> Result<Arc<Generation>> {
        self.current_generation().filter(|generation| !generation.is_failed()).ok_or(StorageError::Unavailable)
    }

    /// Reopens a failed store; returns whether it did. Blocking (sled replays its log), so call
    /// it from a blocking thread. An error means the files cannot be opened yet (the disk is
    /// still full, or calls still finishing hold the failed instance): try again later.
    pub fn recover(&self) -> Result<bool> {
        let _reopening = self.reopening.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !self.is_failed() {
            return Ok(false);
        }
        // Let go of the failed instance first: sled holds its files' lock until the last handle
        // (ours, and those of calls still finishing) is dropped.
        let failed_generation = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        drop(failed_generation);
        let generation = match &self.location {
            Location::Sled { path, options } => Generation::open_sled(path, options, Duration::ZERO)?,
            Location::Postgres(options) => Generation::open_postgres(options)?,
        };
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(generation));
        self.reopened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(store = %self.location.describe(), "the store was reopened after a failure");
        Ok(true)
    }

    pub fn flush_stats(&self) -> FlushStats {
        match self.generation().as_deref() {
            Ok(Generation { engine: Engine::Sled { commits, .. }, .. }) => commits.stats(),
            _ => FlushStats::default(),
        }
    }

    /// Flushes everything and stops the flusher. Called on shutdown; dropping does the same.
    pub fn close(&self) -> Result<()> {
        self.on_current(|generation| match &generation.engine {
            Engine::Sled { tree, commits } => {
                generation.stop_applier();
                commits.stop();
                tree.flush().map(|_| ()).map_err(StorageError::from)
            }
            // Every change was committed before it was acknowledged.
            Engine::Postgres(_) => Ok(()),
        })
    }

    pub fn size_on_disk(&self) -> Result<u64> {
        self.on_current(|generation| generation.engine.size_on_disk())
    }

    #[cfg(test)]
    pub(crate) fn tree(&self) -> sled::Db {
        match &self.generation().expect("the store is open").engine {
            Engine::Sled { tree, .. } => tree.clone(),
            Engine::Postgres(_) => panic!("the store is not on sled"),
        }
    }
}

/// The writer lock, held together with the writer's place in the flusher's count. Fields drop
/// in order: the lock is released first, then the writer stops counting as in flight.
pub(crate) struct Writer<'a> {
    pub(crate) state: std::sync::MutexGuard<'a, WriterState>,
    /// On sled, the writer's place in the group flusher's count.
    arrival: Option<crate::group_commit::Arrival>,
}

/// Whether a change on sled is applied before the writer lock is let go, or handed to the
/// applier so the next change can be staged meanwhile (`pipeline`).
#[derive(Debug, Clone, Copy)]
enum Applying {
    Now,
    HandedOver,
}

impl Generation {
    fn open_sled(path: &Path, options: &StoreOptions, wait_for_lock: Duration) -> Result<Generation> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity_bytes)
            // Durability comes from our own group-commit flusher only: sled's periodic flusher
            // running beside it would add a second concurrent flusher for no gain.
            .flush_every_ms(None);
        // sled releases its file lock from deferred (epoch-based) cleanup, so a store closed a
        // moment ago in this same process can still hold it briefly. Another process holding it
        // does not let go, and after the grace period the error is reported as it is.
        let started = Instant::now();
        let tree = loop {
            match config.open() {
                Ok(tree) => break tree,
                Err(sled::Error::Io(error))
                    if error.to_string().contains("could not acquire lock") && started.elapsed() < wait_for_lock =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(StorageError::Open { path: path.display().to_string(), source }),
            }
        };
        let failed = Arc::new(AtomicBool::new(false));
        let commits = GroupCommit::start(tree.clone(), Arc::clone(&failed));
        let mut generation = Generation::of(Engine::Sled { tree: tree.clone(), commits: Arc::clone(&commits) }, failed);
        let applier =
            Applier::start(tree, commits, Arc::clone(&generation.failed), Arc::clone(&generation.dictionaries));
        generation.applier = Some(applier);
        Generation::ready(generation)
    }

    fn open_postgres(options: &PostgresOptions) -> Result<Generation> {
        let engine = Engine::Postgres(PgEngine::open(options)?);
        Generation::ready(Generation::of(engine, Arc::new(AtomicBool::new(false))))
    }

    fn of(engine: Engine, failed: Arc<AtomicBool>) -> Generation {
        let dictionaries = Arc::new(Dictionaries::new(engine.clone()));
        Generation { engine, dictionaries, writer: Mutex::new(WriterState::default()), failed, applier: None }
    }

    /// Checks the layout's version and builds what a store of an older layout lacks.
    fn ready(generation: Generation) -> Result<Generation> {
        generation.check_schema()?;
        generation.ensure_case_index()?;
        generation.ensure_history_layout()?;
        Ok(generation)
    }

    /// A value, as the codec reads it.
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>> {
        match self.engine.get(key)? {
            Some(value) => self.dictionaries.expand(value, None).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        self.expanding(self.engine.scan_prefix(prefix))
    }

    /// The keys from `start` (included) to `end` (excluded), in order.
    pub(crate) fn range(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        self.expanding(self.engine.range(start, end))
    }

    /// The keys from `start` (included) to `end` (excluded), last first.
    pub(crate) fn range_rev(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        self.expanding(self.engine.range_rev(start, end))
    }

    fn expanding(&self, scan: Scan) -> Scan {
        let dictionaries = Arc::clone(&self.dictionaries);
        Box::new(scan.map(move |entry| {
            let (key, value) = entry?;
            Ok((key, dictionaries.expand(value, None)?))
        }))
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn check_schema(&self) -> Result<()> {
        match self.engine.get(keys::META_SCHEMA)? {
            Some(value) if value.as_ref() == [SCHEMA_VERSION] => Ok(()),
            Some(value) => Err(StorageError::Corrupt {
                key: "meta/schema".to_string(),
                reason: format!("schema version {:?} is not {SCHEMA_VERSION}", value.as_ref()),
            }),
            None => self.write_whole(|_| Ok(vec![(keys::META_SCHEMA.to_vec(), Some(vec![SCHEMA_VERSION].into()))])),
        }
    }

    /// Writes what `build` returns as one change, durable on return. `build` reads the engine
    /// under the writer lock (on PostgreSQL, inside the transaction).
    fn write_whole(&self, build: impl FnOnce(&dyn TransactionSource) -> Result<Writes>) -> Result<()> {
        let ((), ticket) = self.change(None, Applying::Now, |source, _| Ok(((), build(source)?)))?;
        ticket.wait()
    }

    /// Applies what was handed over and ends the applier (before the store's last flush).
    fn stop_applier(&self) {
        if let Some(applier) = &self.applier {
            applier.stop();
        }
    }

    /// One change on either engine: under the writer lock, `work` reads through the engine (on
    /// PostgreSQL, inside the transaction) and returns its value and its writes, which are
    /// applied together. With `leader_of`, the change is refused (`Fenced`) unless that epoch
    /// still leads, checked inside the transaction. The ticket says when the writes are durable
    /// (on PostgreSQL, at once: they were committed).
    fn change<T>(
        &self,
        leader_of: Option<u64>,
        applying: Applying,
        work: impl FnOnce(&dyn TransactionSource, &mut WriterState) -> Result<(T, Writes)>,
    ) -> Result<(T, crate::Ticket)> {
        let mut writer = self.lock_writer_for(applying);
        match &self.engine {
            Engine::Sled { tree, .. } => {
                // Groups handed over before are read through until they are applied, and
                // applied before this change's own batch.
                let mut in_flight = std::mem::take(&mut writer.state.in_flight);
                in_flight.forget_applied();
                let staged = {
                    let layered = Layered { tree, over: in_flight.overlays() };
                    self.stage(&layered, &mut writer.state, work)
                };
                writer.state.in_flight = in_flight;
                let changed = match (applying, &self.applier) {
                    (Applying::HandedOver, Some(applier)) => {
                        let (value, writes) = staged?;
                        writer.state.in_flight.make_room()?;
                        // Handed over as staged: the applier compresses the values, off the
                        // thread that stages the next group.
                        let arrival = writer.arrival.take().expect("a sled writer has arrived at the flusher");
                        let (group, ticket) = applier.hand_over(Arc::new(writes), arrival)?;
                        // The head this group leaves is the next change's, as if it were applied.
                        writer.state.head_moves();
                        writer.state.in_flight.push(group);
                        (value, ticket)
                    }
                    _ => {
                        // Compressing waits for the groups in flight: the applier may be
                        // compressing one, and each family's next dictionary must be made by
                        // one writer at a time.
                        writer.state.in_flight.wait_all()?;
                        let (value, mut writes) = staged?;
                        let learned = self.dictionaries.compact(&mut writes, tree)?;
                        let ticket = self.commit(writes, writer)?;
                        // Changes after this one may use what it stored (on a batch or flush
                        // that then fails, the store is opened again and learns from what it
                        // holds).
                        self.dictionaries.learn(learned);
                        (value, ticket)
                    }
                };
                Ok(changed)
            }
            Engine::Postgres(postgres) => {
                // Another replica may have written since: nothing is known before the lock.
                writer.state.head = None;
                let session = postgres.begin()?;
                if let Some(epoch) = leader_of {
                    let current = session.leader_epoch()?;
                    if current != epoch {
                        return Err(StorageError::Fenced { epoch, current });
                    }
                }
                let (value, mut writes) = self.stage(&session, &mut writer.state, work)?;
                let learned = self.dictionaries.compact(&mut writes, &session)?;
                session.commit(writes)?;
                self.dictionaries.learn(learned);
                Ok((value, crate::Ticket::settled()))
            }
        }
    }

    /// A change's value and its writes, not compressed yet: `work` reads through `source` with
    /// values expanded.
    fn stage<T>(
        &self,
        source: &dyn TransactionSource,
        state: &mut WriterState,
        work: impl FnOnce(&dyn TransactionSource, &mut WriterState) -> Result<(T, Writes)>,
    ) -> Result<(T, Writes)> {
        work(&Expanding { source, dictionaries: &self.dictionaries }, state)
    }

    /// Builds the case indexes (the listing's `j/`, `p/`, `f/` and the deadlines' `d/`) of a
    /// store written before they existed (or before their current version), in one batch: a
    /// store is either fully indexed or not at all, and indexed once. The entries of an earlier
    /// version that the blocks replace (a key per case, of the same shape as a block's) are
    /// removed in the same batch.
    fn ensure_case_index(&self) -> Result<()> {
        // Read as stored, like the schema's version: a bare byte, which the codec would take for
        // the first byte of a compressed value (4 is one).
        if self.engine.get(keys::META_CASE_INDEX)?.is_some_and(|version| version.as_ref() == [CASE_INDEX_VERSION]) {
            return Ok(());
        }
        self.write_whole(|source| {
            let mut writes: BTreeMap<Vec<u8>, Option<sled::IVec>> = BTreeMap::new();
            for prefix in [
                keys::case_by_finish_prefix(false),
                keys::case_by_finish_prefix(true),
                keys::FIELD_PREFIX.to_vec(),
                keys::DEADLINE_PREFIX.to_vec(),
            ] {
                for key in source.keys_with_prefix(&prefix)? {
                    writes.insert(key.to_vec(), None);
                }
            }
            let mut blocks: BTreeMap<Vec<u8>, IdBlock> = BTreeMap::new();
            let mut deadlines: BTreeMap<Vec<u8>, DeadlineBucket> = BTreeMap::new();
            let mut indexed = 0_u64;
            for key in source.keys_with_prefix(keys::CASE_PREFIX)? {
                let case_id = keys::decode_case_id(&key[keys::CASE_PREFIX.len()..], "case key")?;
                let Some(case) = crate::reads::read_case(&source, case_id)? else { continue };
                let entries = crate::transaction::case_listing_entries(&case);
                for (key, value) in entries.records {
                    writes.insert(key, Some(value.into()));
                }
                for key in entries.blocks {
                    let block = match blocks.remove(&key) {
                        Some(block) => block,
                        None => IdBlock::read(&key, None)?,
                    };
                    blocks.insert(key, block.with(case_id, true));
                }
                if let Some(at) = case.next_deadline() {
                    let key = keys::deadline(at, case_id);
                    let bucket = match deadlines.remove(&key) {
                        Some(bucket) => bucket,
                        None => DeadlineBucket::read(&key, None)?,
                    };
                    deadlines.insert(key, bucket.with(at, case_id, true));
                }
                indexed += 1;
            }
            for (key, block) in blocks {
                writes.insert(key, block.value().map(|bits| sled::IVec::from(&bits[..])));
            }
            for (key, bucket) in deadlines {
                writes.insert(key, bucket.value().map(sled::IVec::from));
            }
            writes.insert(keys::META_CASE_INDEX.to_vec(), Some(vec![CASE_INDEX_VERSION].into()));
            if indexed > 0 {
                tracing::info!(cases = indexed, "built the case indexes");
            }
            Ok(writes.into_iter().collect())
        })
    }

    /// Relays the history keys of an older store (the account first) with source and target
    /// first, and removes the keys that said which pairs were seen: the histories' keys say it.
    fn ensure_history_layout(&self) -> Result<()> {
        if self.engine.get(keys::META_HISTORY_LAYOUT)?.is_some_and(|layout| layout.as_ref() == [HISTORY_LAYOUT]) {
            return Ok(());
        }
        self.write_whole(|source| {
            let mut writes: BTreeMap<Vec<u8>, Option<sled::IVec>> = BTreeMap::new();
            for key in source.keys_with_prefix(keys::OLD_SOURCE_TARGET_PREFIX)? {
                writes.insert(key.to_vec(), None);
            }
            let old_keys = source.keys_with_prefix(keys::HISTORY_PREFIX)?;
            for old_key in &old_keys {
                let new_key = keys::history_relaid(old_key).ok_or_else(|| StorageError::Corrupt {
                    key: String::from_utf8_lossy(old_key).into_owned(),
                    reason: "a history key of layout 1 has four parts: account, source, target, protocol".to_string(),
                })?;
                // The value moves as it is stored (its dictionary is the family's, `h`).
                let value = source.get(old_key)?;
                writes.entry(old_key.to_vec()).or_insert(None);
                writes.insert(new_key, value);
            }
            writes.insert(keys::META_HISTORY_LAYOUT.to_vec(), Some(vec![HISTORY_LAYOUT].into()));
            if !old_keys.is_empty() {
                tracing::info!(histories = old_keys.len(), "relaid the history keys, source and target first");
            }
            Ok(writes.into_iter().collect())
        })
    }

    pub(crate) fn lock_writer(&self) -> Writer<'_> {
        self.lock_writer_for(Applying::Now)
    }

    fn lock_writer_for(&self, applying: Applying) -> Writer<'_> {
        // Announce the writer before queueing for the lock, so the flusher can wait for it to
        // join the next flush instead of flushing just before it arrives (not a group handed to
        // the applier: it is its own batch, and it comes later than the gathering waits).
        let arrival = match (&self.engine, applying) {
            (Engine::Sled { commits, .. }, Applying::Now) => Some(commits.arrive()),
            (Engine::Sled { commits, .. }, Applying::HandedOver) => Some(commits.arrive_unawaited()),
            (Engine::Postgres(_), _) => None,
        };
        // A writer that panicked left no half-applied batch (batches are atomic), so the lock's
        // poison flag carries no information worth failing on.
        let mut state = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A batch abandoned by an earlier error never reached sled; its head must not be used.
        state.pending_head = None;
        Writer { state, arrival }
    }

    /// Applies `writes` and returns the ticket for the flush that will make them durable. Called
    /// with the writer lock held, which is released on return so other writers can join the
    /// same flush. sled only: a PostgreSQL change commits its own transaction.
    fn commit(&self, writes: Writes, mut writer: Writer<'_>) -> Result<crate::Ticket> {
        let Engine::Sled { tree, commits } = &self.engine else {
            unreachable!("a sled batch is committed on sled only")
        };
        // The cached head moves only with a batch that was applied; a failed one leaves it.
        if let Err(error) = tree.apply_batch(crate::engine::sled_batch(writes)) {
            writer.state.pending_head = None;
            return Err(error.into());
        }
        writer.state.head_moves();
        let arrival = writer.arrival.as_ref().expect("a sled writer has arrived at the flusher");
        Ok(commits.ticket(arrival))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.stop_applier();
        if let Engine::Sled { tree, commits } = &self.engine {
            commits.stop();
            if let Err(error) = tree.flush() {
                tracing::warn!(error = %error, "the store could not be flushed on close");
            }
        }
    }
}
