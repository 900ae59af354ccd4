//! Vouch's durable store, on sled 0.34.
//!
//! One sled tree holds everything, under key prefixes (see [`keys`]), so that every logical change
//! (a case, its audit record, its indexes) is one atomic `apply_batch`. Writers are serialized by
//! a mutex (the audit chain needs a single order anyway) and then wait for a shared flush: see
//! [`group_commit`]. A method returns only after its write is on disk, so a caller may acknowledge
//! what it gets back.
//!
//! Architecture invariant: this crate is the only code that knows sled or any byte layout.

pub mod audit;
mod group_commit;
mod keys;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use vouch_playbook::engine::{ConfirmVerdict, Effect};
use vouch_playbook::facts::{History, PastConfirmation};
use vouch_playbook::{Actor, Alert, Case, CaseId, CaseState, MovementKey, Timestamp};

pub use audit::{AuditRecord, AuditReport};
pub use group_commit::FlushStats;
use group_commit::{Arrival, GroupCommit, Ticket};

/// Every stored value starts with this byte, so a later layout can be told apart and migrated.
const SCHEMA_VERSION: u8 = 1;
/// The first byte of a value that is LZ4-compressed JSON (the same layout as [`SCHEMA_VERSION`]).
/// Cases and audit records are several kilobytes of repetitive JSON; sled rewrites whole tree
/// nodes (up to 16 values) as they change, so their size drives its disk traffic and space.
const COMPRESSED_JSON: u8 = 2;
/// Values smaller than this are kept as plain JSON: compressing them gains little.
const COMPRESS_FROM_BYTES: usize = 512;
/// Past confirmations kept per movement for the history hint.
const KEPT_CONFIRMATIONS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the store at {path} is in use by another process or could not be opened: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the store could not make the write durable: {0}")]
    Flush(String),
    #[error("a stored record is corrupt ({key}): {reason}")]
    Corrupt { key: String, reason: String },
    #[error("case {0} does not exist")]
    NoSuchCase(CaseId),
    #[error("the store is shutting down")]
    ShuttingDown,
    #[error("the store failed and is not reopened yet")]
    Unavailable,
}

impl StorageError {
    /// Whether the error came from the disk (full, failing, gone) rather than from the data.
    fn is_io_failure(&self) -> bool {
        matches!(self, StorageError::Sled(sled::Error::Io(_)) | StorageError::Flush(_))
    }
}

/// Writes the store's public methods that run on the current sled instance: each takes it (or
/// answers `Unavailable` while it is failed) and notes an I/O failure in the result.
macro_rules! through_the_current_generation {
    ($($(#[$doc:meta])* pub fn $name:ident(&self $(, $argument:ident: $type:ty)* $(,)?) -> $output:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self $(, $argument: $type)*) -> $output {
                let generation = self.generation()?;
                self.watch(&generation, generation.$name($($argument),*))
            }
        )*
    };
}

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache; kept small because cases are read rarely and whole.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { cache_capacity_bytes: 16 * 1024 * 1024 }
    }
}

/// What happened to an ingested alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    New,
    Grouped,
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Ingested {
    pub status: IngestStatus,
    pub case: Case,
    /// What the engine asked for (empty for duplicates).
    pub effects: Vec<Effect>,
}

/// What the caller needs to turn an alert into a case: pure functions from the engine.
pub struct IngestRequest<'a> {
    pub alert: Alert,
    /// Alerts of the same movement within this many milliseconds join the open case.
    pub grouping_window_millis: i64,
    pub now: Timestamp,
    /// Builds a new case from its id and the movement's history.
    pub open: &'a OpenCase<'a>,
    /// Folds a repeated alert into an existing case.
    pub fold: &'a FoldAlert<'a>,
}

/// The engine's opening of a case, given the id the store assigned and the movement's history.
pub type OpenCase<'a> = dyn Fn(CaseId, Alert, &History) -> (Case, Vec<Effect>) + 'a;
/// The engine's folding of a repeated alert into its open case.
pub type FoldAlert<'a> = dyn Fn(Case, &Alert) -> (Case, Vec<Effect>) + 'a;

#[derive(Debug, Clone)]
pub struct Applied {
    pub case: Case,
    pub effects: Vec<Effect>,
    /// The effects as queued for the bot, with their places in the queue.
    pub queued: Vec<PendingEffect>,
    /// The audit record written for the event.
    pub record: AuditRecord,
}

/// An effect the engine decided and the bot has yet to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEffect {
    pub seq: u64,
    pub case_id: CaseId,
    pub effect: Effect,
}

/// Where a case's card lives in chat: the message and the discussion thread started on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRef {
    pub channel_id: vouch_playbook::Snowflake,
    pub message_id: vouch_playbook::Snowflake,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<vouch_playbook::Snowflake>,
}

/// A call to the outside world waiting to be made (isolation webhooks and the like). It is
/// written before anything is sent, and its id never changes, so a retry is the same request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub case_id: CaseId,
    pub created_at: Timestamp,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    pub payload: serde_json::Value,
}

/// A write applied to the store and waiting for the flush that makes it durable. Its value must
/// not be acknowledged to anyone before [`Pending::wait`] (blocking) or [`Pending::durable`]
/// (async) returns it.
#[must_use = "a write is not durable until it is waited on"]
pub struct Pending<T> {
    value: T,
    ticket: Ticket,
}

impl<T> Pending<T> {
    /// Blocks the thread until the write is durable.
    pub fn wait(self) -> Result<T> {
        self.ticket.wait()?;
        Ok(self.value)
    }

    /// Waits without blocking a thread until the write is durable.
    pub async fn durable(self) -> Result<T> {
        self.ticket.await?;
        Ok(self.value)
    }
}

/// The durable store. After an I/O failure (a full disk, say) sled refuses every later call, so
/// the store marks that sled instance failed and every call answers [`StorageError::Unavailable`]
/// until [`Store::recover`] has dropped it and opened the files again. sled recovers from its log
/// as after a crash: everything made durable before the failure is there, and nothing that
/// failed was acknowledged. Reopening is left to the caller's schedule (the bot tries once a
/// second, on a blocking thread) so that no request waits for it.
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    /// The sled instance in use; `None` between dropping a failed one and opening the next.
    current: RwLock<Option<Arc<Generation>>>,
    /// Keeps two callers from reopening at once.
    reopening: Mutex<()>,
    reopened: AtomicU64,
}

/// One sled instance and everything tied to it.
struct Generation {
    tree: sled::Db,
    /// Serializes writers: the case counter, the indexes and the audit chain need one order.
    writer: Mutex<WriterState>,
    commits: Arc<GroupCommit>,
    /// Set by an I/O failure of this instance, including one met by its flusher thread. Each
    /// instance has its own, so a late failure of a replaced one cannot fail its successor.
    failed: Arc<AtomicBool>,
}

impl Store {
    /// Opens (or creates) the store in `path`. Only one process may have it open.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store> {
        // A store closed a moment ago in this same process may still hold sled's lock briefly.
        let generation = Generation::open(path, options, Duration::from_secs(2))?;
        Ok(Store {
            path: path.to_path_buf(),
            options: options.clone(),
            current: RwLock::new(Some(Arc::new(generation))),
            reopening: Mutex::new(()),
            reopened: AtomicU64::new(0),
        })
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

    /// Notes an I/O failure of `generation`, so that calls answer `Unavailable` until
    /// [`Store::recover`] has reopened the store.
    fn watch<T>(&self, generation: &Generation, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            if error.is_io_failure() && !generation.failed.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %error, path = %self.path.display(), "the store failed; it will be reopened");
            }
        }
        result
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
        let generation = Generation::open(&self.path, &self.options, Duration::ZERO)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(generation));
        self.reopened.fetch_add(1, Ordering::Relaxed);
        tracing::info!(path = %self.path.display(), "the store was reopened after a failure");
        Ok(true)
    }

    /// Records an alert: a duplicate of one already seen, a repeat folded into its open case, or
    /// a new case. Returns once the result is durable.
    pub fn ingest(&self, request: IngestRequest<'_>) -> Result<Ingested> {
        self.begin_ingest(request)?.wait()
    }

    /// Applies an event to a case through `decide` (the engine's `apply`) and records it in the
    /// audit log, refusals included. Returns once durable.
    pub fn apply_event(
        &self,
        case_id: CaseId,
        kind: &str,
        actor: Option<&Actor>,
        detail: serde_json::Value,
        now: Timestamp,
        decide: impl FnOnce(Case) -> (Case, Vec<Effect>),
    ) -> Result<Applied> {
        self.begin_apply_event(case_id, kind, actor, detail, now, decide)?.wait()
    }

    /// Records something that concerns no single case (a refused click on a forged id, say).
    pub fn record(
        &self,
        kind: &str,
        case_id: Option<CaseId>,
        actor: Option<&Actor>,
        detail: serde_json::Value,
        now: Timestamp,
    ) -> Result<AuditRecord> {
        self.begin_record(kind, case_id, actor, detail, now)?.wait()
    }

    /// Every audit record in chain order.
    pub fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord>>> {
        match self.generation() {
            Ok(generation) => Box::new(generation.audit_records()),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    through_the_current_generation! {
        /// [`Store::ingest`] without waiting for the flush: the result may be acknowledged only
        /// once the returned [`Pending`] is waited on or awaited.
        pub fn begin_ingest(&self, request: IngestRequest<'_>) -> Result<Pending<Ingested>>;
        /// [`Store::apply_event`] without waiting for the flush; see [`Pending`].
        pub fn begin_apply_event(&self, case_id: CaseId, kind: &str, actor: Option<&Actor>, detail: serde_json::Value, now: Timestamp, decide: impl FnOnce(Case) -> (Case, Vec<Effect>)) -> Result<Pending<Applied>>;
        /// [`Store::record`] without waiting for the flush; see [`Pending`].
        pub fn begin_record(&self, kind: &str, case_id: Option<CaseId>, actor: Option<&Actor>, detail: serde_json::Value, now: Timestamp) -> Result<Pending<AuditRecord>>;
        /// Effects not yet carried out, oldest first.
        pub fn pending_effects(&self, limit: usize) -> Result<Vec<PendingEffect>>;
        /// Marks an effect done. Durable when this returns, so it is not carried out again.
        pub fn complete_effect(&self, seq: u64) -> Result<()>;
        /// Drops effects that something else already carried out (a click's answer that redrew
        /// the card makes its queued card update redundant), without waiting for a flush: if a
        /// crash loses this, the effect is merely carried out again.
        pub fn forget_effects(&self, seqs: &[u64]) -> Result<()>;
        /// Cases whose stored deadline (reminder or page) is at or before `now`, soonest first.
        pub fn due_cases(&self, now: Timestamp) -> Result<Vec<CaseId>>;
        /// A named point in time kept across restarts.
        pub fn marker(&self, name: &str) -> Result<Option<Timestamp>>;
        pub fn set_marker(&self, name: &str, at: Timestamp) -> Result<()>;
        /// Records where a case's card was posted.
        pub fn set_card(&self, case_id: CaseId, card: &CardRef) -> Result<()>;
        pub fn card(&self, case_id: CaseId) -> Result<Option<CardRef>>;
        pub fn case(&self, case_id: CaseId) -> Result<Case>;
        /// Every case, oldest first, optionally only those in the given states.
        pub fn cases(&self, states: Option<&[CaseState]>) -> Result<Vec<Case>>;
        /// How many cases are in each state.
        pub fn case_counts(&self) -> Result<Vec<(CaseState, u64)>>;
        /// The audit trail of one case, in order.
        pub fn case_audit(&self, case_id: CaseId) -> Result<Vec<AuditRecord>>;
        /// Checks the whole audit chain against the head stored beside it.
        pub fn verify_audit(&self) -> Result<AuditReport>;
        /// How often this movement was seen and vouched for.
        pub fn history(&self, movement: &MovementKey, now: Timestamp) -> Result<History>;
        /// Adds an outbound call to the outbox; it is durable when this returns.
        pub fn enqueue_outbox(&self, entry: &OutboxEntry, now: Timestamp) -> Result<bool>;
        pub fn outbox(&self) -> Result<Vec<OutboxEntry>>;
        /// Updates an outbox entry after an attempt, or removes it when `done`, with an audit record.
        pub fn settle_outbox(&self, entry: &OutboxEntry, done: bool, detail: serde_json::Value, now: Timestamp) -> Result<()>;
        /// Flushes everything and stops the flusher. Called on shutdown; dropping does the same.
        pub fn close(&self) -> Result<()>;
        pub fn size_on_disk(&self) -> Result<u64>;
    }

    pub fn flush_stats(&self) -> FlushStats {
        self.generation().map(|generation| generation.flush_stats()).unwrap_or_default()
    }

    #[cfg(test)]
    fn tree(&self) -> sled::Db {
        self.generation().expect("the store is open").tree.clone()
    }
}

impl Generation {
    fn open(path: &Path, options: &StoreOptions, wait_for_lock: Duration) -> Result<Generation> {
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
        let generation = Generation { tree, writer: Mutex::new(WriterState::default()), commits, failed };
        generation.check_schema()?;
        Ok(generation)
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn check_schema(&self) -> Result<()> {
        let writer = self.lock_writer();
        match self.tree.get(keys::META_SCHEMA)? {
            Some(value) if value.as_ref() == [SCHEMA_VERSION] => Ok(()),
            Some(value) => Err(StorageError::Corrupt {
                key: "meta/schema".to_string(),
                reason: format!("schema version {:?} is not {SCHEMA_VERSION}", value.as_ref()),
            }),
            None => {
                let mut batch = sled::Batch::default();
                batch.insert(keys::META_SCHEMA, &[SCHEMA_VERSION]);
                self.commit(batch, writer)
            }
        }
    }

    fn lock_writer(&self) -> Writer<'_> {
        // Announce the writer before queueing for the lock, so the flusher can wait for it to
        // join the next flush instead of flushing just before it arrives.
        let arrival = self.commits.arrive();
        // A writer that panicked left no half-applied batch (batches are atomic), so the lock's
        // poison flag carries no information worth failing on.
        let mut guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A batch abandoned by an earlier error never reached sled; its head must not be used.
        guard.pending_head = None;
        Writer { guard, arrival }
    }

    /// Applies `batch` and waits until it is durable. Called with the writer lock held; the
    /// lock is released before waiting so other writers can join the same flush.
    fn commit(&self, batch: sled::Batch, writer: Writer<'_>) -> Result<()> {
        self.commit_pending(batch, writer)?.wait()
    }

    /// Applies `batch` and returns the ticket for the flush that will make it durable. The
    /// writer lock is released on return.
    fn commit_pending(&self, batch: sled::Batch, mut writer: Writer<'_>) -> Result<Ticket> {
        let applied = self.tree.apply_batch(batch);
        // The cached head moves only with a batch that was applied; a failed one leaves it.
        let pending = writer.pending_head.take();
        applied?;
        if pending.is_some() {
            writer.head = pending;
        }
        Ok(self.commits.ticket(&writer.arrival))
    }

    fn begin_ingest(&self, request: IngestRequest<'_>) -> Result<Pending<Ingested>> {
        let mut writer = self.lock_writer();
        let alert = request.alert;
        let now = request.now;
        if let Some(source_alert_id) = &alert.source_alert_id {
            let index_key = keys::alert_id(alert.format.id(), source_alert_id);
            if let Some(value) = self.tree.get(&index_key)? {
                let case_id = keys::decode_case_id(&value, "alert index")?;
                let case = self.case_locked(case_id)?;
                // A duplicate writes nothing, but what it saw must be durable before anyone is
                // told about it: the first copy may still be waiting for its flush.
                let ticket = self.commits.ticket(&writer.arrival);
                return Ok(Pending {
                    value: Ingested { status: IngestStatus::Duplicate, case, effects: Vec::new() },
                    ticket,
                });
            }
        }
        let grouping_key = keys::group(&alert.grouping_key().encode());
        let movement = MovementKey::of(&alert);
        let history = self.history_of(&movement, now)?;

        let mut previous_deadline = None;
        let open_case = match self.tree.get(&grouping_key)? {
            Some(value) => {
                let group: GroupEntry = decode(&value, "group index")?;
                let case = self.case_locked(group.case_id)?;
                let within_window = now.millis_since(group.last_alert_at) <= request.grouping_window_millis;
                (within_window && !case.state.is_finished()).then_some(case)
            }
            None => None,
        };

        let mut batch = sled::Batch::default();
        let (status, case, effects, audit_kind) = match open_case {
            Some(case) => {
                previous_deadline = case.next_deadline();
                let (case, effects) = (request.fold)(case, &alert);
                (IngestStatus::Grouped, case, effects, "alert.grouped")
            }
            None => {
                let number = match self.tree.get(keys::META_NEXT_CASE)? {
                    Some(value) => keys::decode_u64(&value, "case counter")?,
                    None => 1,
                };
                batch.insert(keys::META_NEXT_CASE, &(number + 1).to_be_bytes());
                let case_id = CaseId::new(number).ok_or_else(|| StorageError::Corrupt {
                    key: "meta/next_case".to_string(),
                    reason: "the case counter is zero".to_string(),
                })?;
                let (case, effects) = (request.open)(case_id, alert.clone(), &history);
                (IngestStatus::New, case, effects, "alert.new")
            }
        };
        if let Some(source_alert_id) = &alert.source_alert_id {
            batch.insert(keys::alert_id(alert.format.id(), source_alert_id), &case.id.number().to_be_bytes());
        }
        batch.insert(grouping_key, encode(&GroupEntry { case_id: case.id, last_alert_at: now }));
        self.record_movement(&mut batch, &movement, history, now, None);
        batch.insert(keys::case(case.id), encode(&case));
        index_deadline(&mut batch, case.id, previous_deadline, case.next_deadline());
        self.queue_effects(&mut batch, case.id, &effects)?;
        let detail = serde_json::json!({
            "alert": &alert,
            "alert_count": case.alert_count,
        });
        self.append_audit(
            &mut writer,
            &mut batch,
            audit::NewRecord {
                at: now,
                case_id: Some(case.id),
                kind: audit_kind,
                actor: None,
                playbook_version: Some(case.playbook_version),
                detail,
            },
        )?;
        let ticket = self.commit_pending(batch, writer)?;
        Ok(Pending { value: Ingested { status, case, effects }, ticket })
    }

    fn begin_apply_event(
        &self,
        case_id: CaseId,
        kind: &str,
        actor: Option<&Actor>,
        detail: serde_json::Value,
        now: Timestamp,
        decide: impl FnOnce(Case) -> (Case, Vec<Effect>),
    ) -> Result<Pending<Applied>> {
        let mut writer = self.lock_writer();
        let before = self.case_locked(case_id)?;
        let previous_deadline = before.next_deadline();
        let verdicts_before = before.confirmation.verdicts.len();
        let was_closed = before.state == CaseState::ClosedExpected;
        let (case, effects) = decide(before);
        let refusal = effects.iter().find_map(|effect| match effect {
            Effect::Refused { reason } => Some(reason.clone()),
            _ => None,
        });
        let mut batch = sled::Batch::default();
        let (kind, detail) = match &refusal {
            Some(reason) => (format!("refused.{kind}"), serde_json::json!({"request": detail, "reason": reason})),
            None => (kind.to_string(), detail),
        };
        let mut queued = Vec::new();
        if refusal.is_none() {
            batch.insert(keys::case(case_id), encode(&case));
            index_deadline(&mut batch, case_id, previous_deadline, case.next_deadline());
            queued = self.queue_effects(&mut batch, case_id, &effects)?;
            let newly_expected = case
                .confirmation
                .verdicts
                .iter()
                .skip(verdicts_before)
                .find(|verdict| verdict.verdict == ConfirmVerdict::Expected)
                .map(|verdict| verdict.by.name.clone())
                .or_else(|| {
                    (!was_closed && case.state == CaseState::ClosedExpected)
                        .then(|| case.resolution.as_ref().map(|decision| decision.by.name.clone()))
                        .flatten()
                });
            if let Some(by) = newly_expected {
                let movement = MovementKey::of(case.alert());
                let history = self.history_of(&movement, now)?;
                self.record_movement(&mut batch, &movement, history, now, Some(by));
            }
        }
        let record = self.append_audit(
            &mut writer,
            &mut batch,
            audit::NewRecord {
                at: now,
                case_id: Some(case_id),
                kind: &kind,
                actor,
                playbook_version: Some(case.playbook_version),
                detail,
            },
        )?;
        let ticket = self.commit_pending(batch, writer)?;
        Ok(Pending { value: Applied { case, effects, queued, record }, ticket })
    }

    fn begin_record(
        &self,
        kind: &str,
        case_id: Option<CaseId>,
        actor: Option<&Actor>,
        detail: serde_json::Value,
        now: Timestamp,
    ) -> Result<Pending<AuditRecord>> {
        let mut writer = self.lock_writer();
        let mut batch = sled::Batch::default();
        let record = self.append_audit(
            &mut writer,
            &mut batch,
            audit::NewRecord { at: now, case_id, kind, actor, playbook_version: None, detail },
        )?;
        let ticket = self.commit_pending(batch, writer)?;
        Ok(Pending { value: record, ticket })
    }

    fn append_audit(
        &self,
        writer: &mut WriterState,
        batch: &mut sled::Batch,
        entry: audit::NewRecord<'_>,
    ) -> Result<AuditRecord> {
        let head = match writer.pending_head.clone().or_else(|| writer.head.clone()) {
            Some(head) => head,
            None => match self.tree.get(keys::META_AUDIT_HEAD)? {
                Some(value) => decode(&value, "audit head")?,
                None => audit::Head::genesis(),
            },
        };
        let record = AuditRecord::chained(&head, entry);
        batch.insert(keys::audit(record.seq), encode(&record));
        if let Some(case_id) = record.case_id {
            batch.insert(keys::case_audit(case_id, record.seq), &[]);
        }
        batch.insert(keys::META_AUDIT_HEAD, encode(&record.head()));
        writer.pending_head = Some(record.head());
        Ok(record)
    }

    /// Queues effects for the bot in the same batch as the change that caused them, so a crash
    /// can neither lose them nor run them for a change that did not happen.
    fn queue_effects(
        &self,
        batch: &mut sled::Batch,
        case_id: CaseId,
        effects: &[Effect],
    ) -> Result<Vec<PendingEffect>> {
        let mut next = match self.tree.get(keys::META_NEXT_EFFECT)? {
            Some(value) => keys::decode_u64(&value, "effect counter")?,
            None => 1,
        };
        let mut queued = Vec::with_capacity(effects.len());
        for effect in effects {
            if matches!(effect, Effect::Refused { .. }) {
                continue;
            }
            let pending = PendingEffect { seq: next, case_id, effect: effect.clone() };
            batch.insert(keys::effect(next), encode(&pending));
            queued.push(pending);
            next += 1;
        }
        batch.insert(keys::META_NEXT_EFFECT, &next.to_be_bytes());
        Ok(queued)
    }

    fn pending_effects(&self, limit: usize) -> Result<Vec<PendingEffect>> {
        self.tree
            .scan_prefix(keys::EFFECT_PREFIX)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                let mut pending: PendingEffect = decode(&value, "effect")?;
                pending.seq = keys::seq_of_effect(&key)?;
                Ok(pending)
            })
            .collect()
    }

    fn complete_effect(&self, seq: u64) -> Result<()> {
        let writer = self.lock_writer();
        self.commit(removal_of_effects(&[seq]), writer)
    }

    fn forget_effects(&self, seqs: &[u64]) -> Result<()> {
        let writer = self.lock_writer();
        // No ticket: the removal rides along with the next flush anyone asks for (see
        // `Store::forget_effects`), so it does not cost a flush of its own.
        self.tree.apply_batch(removal_of_effects(seqs))?;
        drop(writer);
        Ok(())
    }

    fn due_cases(&self, now: Timestamp) -> Result<Vec<CaseId>> {
        let mut due = Vec::new();
        for entry in self.tree.scan_prefix(keys::DEADLINE_PREFIX) {
            let (key, _) = entry?;
            let (deadline, case_id) = keys::decode_deadline(&key)?;
            if deadline > now {
                break;
            }
            due.push(case_id);
        }
        Ok(due)
    }

    fn marker(&self, name: &str) -> Result<Option<Timestamp>> {
        match self.tree.get(keys::marker(name))? {
            Some(value) => Ok(Some(Timestamp::from_unix_millis(keys::decode_u64(&value, "marker")? as i64))),
            None => Ok(None),
        }
    }

    fn set_marker(&self, name: &str, at: Timestamp) -> Result<()> {
        let writer = self.lock_writer();
        let mut batch = sled::Batch::default();
        batch.insert(keys::marker(name), &(at.unix_millis().max(0) as u64).to_be_bytes());
        self.commit(batch, writer)
    }

    fn set_card(&self, case_id: CaseId, card: &CardRef) -> Result<()> {
        let writer = self.lock_writer();
        let mut batch = sled::Batch::default();
        batch.insert(keys::card(case_id), encode(card));
        self.commit(batch, writer)
    }

    fn card(&self, case_id: CaseId) -> Result<Option<CardRef>> {
        match self.tree.get(keys::card(case_id))? {
            Some(value) => Ok(Some(decode(&value, "card")?)),
            None => Ok(None),
        }
    }

    fn case_locked(&self, case_id: CaseId) -> Result<Case> {
        match self.tree.get(keys::case(case_id))? {
            Some(value) => decode(&value, "case"),
            None => Err(StorageError::NoSuchCase(case_id)),
        }
    }

    fn case(&self, case_id: CaseId) -> Result<Case> {
        self.case_locked(case_id)
    }

    fn cases(&self, states: Option<&[CaseState]>) -> Result<Vec<Case>> {
        let mut cases = Vec::new();
        for entry in self.tree.scan_prefix(keys::CASE_PREFIX) {
            let (_, value) = entry?;
            let case: Case = decode(&value, "case")?;
            if states.is_none_or(|states| states.contains(&case.state)) {
                cases.push(case);
            }
        }
        Ok(cases)
    }

    fn case_counts(&self) -> Result<Vec<(CaseState, u64)>> {
        let mut counts: Vec<(CaseState, u64)> = CaseState::ALL.iter().map(|state| (*state, 0)).collect();
        for case in self.cases(None)? {
            if let Some(entry) = counts.iter_mut().find(|(state, _)| *state == case.state) {
                entry.1 += 1;
            }
        }
        Ok(counts)
    }

    fn case_audit(&self, case_id: CaseId) -> Result<Vec<AuditRecord>> {
        let mut records = Vec::new();
        for entry in self.tree.scan_prefix(keys::case_audit_prefix(case_id)) {
            let (key, _) = entry?;
            let seq = keys::seq_of_case_audit(&key)?;
            if let Some(value) = self.tree.get(keys::audit(seq))? {
                records.push(decode(&value, "audit record")?);
            }
        }
        Ok(records)
    }

    fn audit_records(&self) -> impl Iterator<Item = Result<AuditRecord>> + 'static {
        self.tree.scan_prefix(keys::AUDIT_PREFIX).map(|entry| {
            let (_, value) = entry?;
            decode(&value, "audit record")
        })
    }

    fn verify_audit(&self) -> Result<AuditReport> {
        let head: Option<audit::Head> = match self.tree.get(keys::META_AUDIT_HEAD)? {
            Some(value) => Some(decode(&value, "audit head")?),
            None => None,
        };
        let mut problems = Vec::new();
        let mut records = Vec::new();
        for entry in self.tree.scan_prefix(keys::AUDIT_PREFIX) {
            let (key, value) = entry?;
            let key_seq = keys::seq_of_audit(&key)?;
            match decode::<AuditRecord>(&value, "audit record") {
                Ok(record) => {
                    if record.seq != key_seq {
                        problems.push(format!("record stored under #{key_seq} says it is #{}", record.seq));
                    }
                    records.push(record);
                }
                Err(error) => problems.push(format!("record #{key_seq} cannot be read: {error}")),
            }
        }
        let mut report = audit::verify_chain(records.iter());
        report.problems.splice(0..0, problems);
        match (head, report.head.as_ref()) {
            (Some(stored), Some(found)) if stored != *found => report.problems.push(format!(
                "the chain ends at #{} but the store's head says #{} ({}): records were removed or rewritten",
                found.seq, stored.seq, stored.hash
            )),
            (Some(stored), None) if stored.seq > 0 => {
                report.problems.push(format!("the store's head says #{} but the chain is empty", stored.seq))
            }
            (None, Some(found)) => {
                report.problems.push(format!("the chain reaches #{} but the store has no head", found.seq))
            }
            _ => {}
        }
        Ok(report)
    }

    fn history(&self, movement: &MovementKey, now: Timestamp) -> Result<History> {
        self.history_of(movement, now)
    }

    fn history_of(&self, movement: &MovementKey, _now: Timestamp) -> Result<History> {
        let mut history: History = match self.tree.get(keys::history(&movement.encode()))? {
            Some(value) => decode(&value, "history")?,
            None => History::default(),
        };
        // A counter kept per source, so the hint costs one read however many systems it reached.
        let distinct = match self.tree.get(keys::source_count(&movement.source))? {
            Some(value) => keys::decode_u64(&value, "source count")?,
            None => 0,
        };
        history.source_distinct_targets = Some(distinct);
        Ok(history)
    }

    fn record_movement(
        &self,
        batch: &mut sled::Batch,
        movement: &MovementKey,
        mut history: History,
        now: Timestamp,
        confirmed_by: Option<String>,
    ) {
        match confirmed_by {
            Some(by) => {
                history.confirmed_expected.push(PastConfirmation { by, at: now });
                let excess = history.confirmed_expected.len().saturating_sub(KEPT_CONFIRMATIONS);
                history.confirmed_expected.drain(..excess);
            }
            None => {
                history.seen += 1;
                history.first_seen.get_or_insert(now);
                history.last_seen = Some(now);
                let pair = keys::source_target(&movement.source, &movement.target);
                if !matches!(self.tree.contains_key(&pair), Ok(true)) {
                    batch.insert(pair, &[]);
                    let reached = history.source_distinct_targets.unwrap_or(0) + 1;
                    batch.insert(keys::source_count(&movement.source), &reached.to_be_bytes());
                }
            }
        }
        // The distinct-target count is recomputed on read; it is not part of the stored history.
        history.source_distinct_targets = None;
        batch.insert(keys::history(&movement.encode()), encode(&history));
    }

    fn enqueue_outbox(&self, entry: &OutboxEntry, now: Timestamp) -> Result<bool> {
        let mut writer = self.lock_writer();
        if self.tree.get(keys::outbox(&entry.id))?.is_some() {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.insert(keys::outbox(&entry.id), encode(entry));
        self.append_audit(
            &mut writer,
            &mut batch,
            audit::NewRecord {
                at: now,
                case_id: Some(entry.case_id),
                kind: "outbox.enqueued",
                actor: None,
                playbook_version: None,
                detail: serde_json::json!({"id": entry.id}),
            },
        )?;
        self.commit(batch, writer)?;
        Ok(true)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.tree
            .scan_prefix(keys::OUTBOX_PREFIX)
            .map(|entry| {
                let (_, value) = entry?;
                decode(&value, "outbox entry")
            })
            .collect()
    }

    fn settle_outbox(&self, entry: &OutboxEntry, done: bool, detail: serde_json::Value, now: Timestamp) -> Result<()> {
        let mut writer = self.lock_writer();
        let mut batch = sled::Batch::default();
        if done {
            batch.remove(keys::outbox(&entry.id));
        } else {
            batch.insert(keys::outbox(&entry.id), encode(entry));
        }
        let kind = if done { "outbox.delivered" } else { "outbox.attempt" };
        self.append_audit(
            &mut writer,
            &mut batch,
            audit::NewRecord {
                at: now,
                case_id: Some(entry.case_id),
                kind,
                actor: None,
                playbook_version: None,
                detail,
            },
        )?;
        self.commit(batch, writer)
    }

    fn flush_stats(&self) -> FlushStats {
        self.commits.stats()
    }

    fn close(&self) -> Result<()> {
        self.commits.stop();
        self.tree.flush().map(|_| ()).map_err(StorageError::from)
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.tree.size_on_disk()?)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.commits.stop();
        if let Err(error) = self.tree.flush() {
            tracing::warn!(error = %error, "the store could not be flushed on close");
        }
    }
}

/// A batch removing the given effects from the queue.
fn removal_of_effects(seqs: &[u64]) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for seq in seqs {
        batch.remove(keys::effect(*seq));
    }
    batch
}

/// Keeps the deadline index in step with a case's next deadline.
fn index_deadline(batch: &mut sled::Batch, case_id: CaseId, before: Option<Timestamp>, after: Option<Timestamp>) {
    if before == after {
        return;
    }
    if let Some(before) = before {
        batch.remove(keys::deadline(before, case_id));
    }
    if let Some(after) = after {
        batch.insert(keys::deadline(after, case_id), &[]);
    }
}

/// What the writer lock guards besides the order of writes: the audit chain's head, cached so
/// that appending a record does not read it back from sled each time.
#[derive(Default)]
struct WriterState {
    head: Option<audit::Head>,
    /// The head a batch being built will leave, until that batch is applied.
    pending_head: Option<audit::Head>,
}

/// The writer lock, held together with the writer's place in the flusher's count. Fields drop
/// in order: the lock is released first, then the writer stops counting as in flight.
struct Writer<'a> {
    guard: MutexGuard<'a, WriterState>,
    arrival: Arrival<'a>,
}

impl Deref for Writer<'_> {
    type Target = WriterState;
    fn deref(&self) -> &WriterState {
        &self.guard
    }
}

impl DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut WriterState {
        &mut self.guard
    }
}

/// Where the open case of a movement is, and when its last alert came.
#[derive(Debug, Serialize, Deserialize)]
struct GroupEntry {
    case_id: CaseId,
    last_alert_at: Timestamp,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types into a Vec cannot fail.
    let json = serde_json::to_vec(value).expect("stored types serialize to JSON");
    if json.len() < COMPRESS_FROM_BYTES {
        let mut bytes = Vec::with_capacity(json.len() + 1);
        bytes.push(SCHEMA_VERSION);
        bytes.extend_from_slice(&json);
        return bytes;
    }
    let mut bytes = vec![COMPRESSED_JSON];
    bytes.extend_from_slice(&lz4_flex::compress_prepend_size(&json));
    bytes
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let corrupt = |reason: String| StorageError::Corrupt { key: what.to_string(), reason };
    match bytes.split_first() {
        Some((&SCHEMA_VERSION, body)) => serde_json::from_slice(body).map_err(|error| corrupt(error.to_string())),
        Some((&COMPRESSED_JSON, body)) => {
            let json = lz4_flex::decompress_size_prepended(body).map_err(|error| corrupt(error.to_string()))?;
            serde_json::from_slice(&json).map_err(|error| corrupt(error.to_string()))
        }
        Some((version, _)) => Err(StorageError::Corrupt {
            key: what.to_string(),
            reason: format!("schema version {version} is not {SCHEMA_VERSION}"),
        }),
        None => Err(StorageError::Corrupt { key: what.to_string(), reason: "empty value".to_string() }),
    }
}

#[cfg(test)]
mod tests;
