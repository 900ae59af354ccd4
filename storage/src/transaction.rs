//! One change, written as one atomic batch under the writer lock: the [`Transaction`] trait is
//! what the service writes against, and what a second backend implements.

use std::collections::{BTreeMap, HashMap};

use vouch_playbook::advance::{AdvanceVouch, HostsScope, PendingAdvance};
use vouch_playbook::case_list::CaseSummary;
use vouch_playbook::cases::OpenMovement;
use vouch_playbook::facts::History;
use vouch_playbook::identity::{IdentityLink, PendingLink};
use vouch_playbook::{AuditKind, Case, CaseId, Effect, GroupingKey, MovementKey, Snowflake, Timestamp};

use crate::activity::CaseActivity;
use crate::audit::{self, AuditRecord, NewRecord};
use crate::case_blocks::{DeadlineBucket, IdBlock};
use crate::codec::{decode, encode};
use crate::engine::TransactionSource;
use crate::reads::KeyValues;
use crate::{keys, trail, CardRef, OutboxEntry, PendingEffect, RedrawWanted, Result, StorageError, UndeliveredEffect};

/// The reads and writes of one change (or of several, written together). Reads see the store as
/// it was when the transaction began (the writer lock keeps other writers out meanwhile) with the
/// transaction's own writes laid over it; writes are staged and applied together, atomically,
/// when the transaction ends without an error, or not at all.
pub trait Transaction {
    /// A case, as last written (with the count and time of its latest alert).
    fn case(&mut self, case_id: CaseId) -> Result<Option<Case>>;
    /// The case an alert with this sender's id went to, if one was taken before.
    fn case_of_alert(&mut self, format: &str, source_alert_id: &str) -> Result<Option<CaseId>>;
    /// The movement's latest case and when its last alert came.
    fn movement_case(&mut self, key: &GroupingKey) -> Result<Option<OpenMovement>>;
    /// How often the movement was seen and vouched for, with how many targets its source reached.
    fn history(&mut self, movement: &MovementKey) -> Result<History>;

    /// Numbers the next case.
    fn allocate_case_id(&mut self) -> Result<CaseId>;
    /// Writes a whole case (and keeps the deadline index in step with it).
    fn put_case(&mut self, case: &Case) -> Result<()>;
    /// Writes only what a repeated alert changes on a case (its count and latest alert), so a
    /// storm does not rewrite the case each time.
    fn put_case_activity(&mut self, case: &Case);
    fn index_alert(&mut self, format: &str, source_alert_id: &str, case_id: CaseId);
    fn put_movement_case(&mut self, key: &GroupingKey, movement: OpenMovement);
    /// Writes the movement's history; `sighted` also counts the target among those its source
    /// reached, if it is a new one.
    fn put_history(&mut self, movement: &MovementKey, history: &History, sighted: bool) -> Result<()>;

    /// Queues effects for the bot in this change's batch, so a crash can neither lose them nor
    /// run them for a change that did not happen.
    fn queue_effects(&mut self, case_id: CaseId, effects: &[Effect]) -> Result<Vec<PendingEffect>>;
    fn remove_effects(&mut self, seqs: &[u64]);
    /// Notes that the case's card should be drawn again (once, however often this is asked
    /// before it is); `urgent` when a decision asked for it rather than a repeated alert.
    fn want_redraw(&mut self, case_id: CaseId, urgent: bool) -> Result<()>;
    /// Clears the wish to redraw the card, unless a newer change asked for it again.
    fn clear_redraw(&mut self, wanted: &RedrawWanted) -> Result<()>;
    /// Takes a queued effect off the queue and keeps it with its case as not delivered.
    fn mark_undelivered(&mut self, effect: &PendingEffect, at: Timestamp, reason: &str);
    /// Keeps effects with their case as not delivered without queueing them first (nothing is
    /// configured to carry them).
    fn keep_undelivered(&mut self, case_id: CaseId, effects: &[Effect], at: Timestamp, reason: &str) -> Result<()>;
    /// Adds an outbound call to the outbox; false when an entry with its id is there already.
    fn enqueue_outbox(&mut self, entry: &OutboxEntry) -> Result<bool>;
    /// Keeps an outbox entry after an attempt, or removes it when `done`.
    fn settle_outbox(&mut self, entry: &OutboxEntry, done: bool);
    fn set_card(&mut self, case_id: CaseId, card: &CardRef);
    fn set_marker(&mut self, name: &str, at: Timestamp);
    /// Keeps a directory source's snapshot (JSON, opaque to the store), replacing the last, and
    /// counts it in the directory's version, which must still be `based_on` (else `Conflict`:
    /// another replica kept one since); returns the new version.
    fn put_directory_snapshot(&mut self, source: &str, snapshot: crate::EncodedJson, based_on: u64) -> Result<u64>;
    /// Queues a notice for the SOC channel.
    fn queue_notice(&mut self, text: &str) -> Result<u64>;
    fn remove_notice(&mut self, seq: u64);

    /// Appends a record to the audit chain.
    fn append_audit(&mut self, record: NewRecord<'_>) -> Result<AuditRecord>;
    /// Lets `fold` extend the record this change appended last, when it is of `case_id` and
    /// `kind` and nothing follows it yet: the record is chained again in its place with the
    /// detail `fold` left. False (nothing changed) when there is no such record or `fold`
    /// declined; the caller then appends a record of its own.
    fn fold_into_last_audit(
        &mut self,
        case_id: CaseId,
        kind: AuditKind,
        fold: &mut dyn FnMut(&mut serde_json::Value) -> bool,
    ) -> Result<bool>;
    /// Removes a case that was archived, with its audit records (whose trail must still end at
    /// `last_seq`, else `Conflict`: it changed after it was read), its indexes, its card and
    /// queues, and the index entries of its alerts (`(format, sender's id)`).
    fn remove_archived_case(&mut self, case_id: CaseId, last_seq: u64, alert_ids: &[(String, String)]) -> Result<()>;
    /// Records archive run `run` as done (the next is `run + 1`); `Conflict` when `run` is not
    /// the next one (another run got there first).
    fn finish_archive_run(&mut self, run: u64) -> Result<()>;
    /// The next id of a vouch given in advance: `A-<n>` for a standing approval, `D-<n>` for a
    /// declaration.
    fn allocate_advance_id(&mut self, declaration: bool) -> Result<String>;
    fn advance_vouch(&mut self, id: &str) -> Result<Option<AdvanceVouch>>;
    /// The vouches given in advance for an account between two hosts, as stored before this
    /// transaction (vouches are never written together with the alerts they cover).
    fn advance_vouches_for(&mut self, hosts: &HostsScope) -> Result<Vec<AdvanceVouch>>;
    /// Writes a vouch given in advance and indexes it by the movement it names.
    fn put_advance_vouch(&mut self, vouch: &AdvanceVouch);
    /// A vouch in advance (a declaration, a standing approval) the account asked for, waiting on
    /// the asker's push.
    fn pending_advance(&mut self, discord_id: Snowflake) -> Result<Option<PendingAdvance>>;
    fn put_pending_advance(&mut self, pending: &PendingAdvance);
    fn remove_pending_advance(&mut self, discord_id: Snowflake);
    /// The person a Discord account is bound to.
    fn identity_link(&mut self, discord_id: Snowflake) -> Result<Option<IdentityLink>>;
    fn put_identity_link(&mut self, link: &IdentityLink);
    fn remove_identity_link(&mut self, discord_id: Snowflake);
    /// A link the account asked for, waiting on the person's push.
    fn pending_link(&mut self, discord_id: Snowflake) -> Result<Option<PendingLink>>;
    fn put_pending_link(&mut self, pending: &PendingLink);
    fn remove_pending_link(&mut self, discord_id: Snowflake);
}

/// What the writer lock guards besides the order of writes: the audit chain's head, cached so
/// that appending a record does not read it back from sled each time.
#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) head: Option<audit::Head>,
    /// The head a batch being built will leave, until that batch is applied.
    pub(crate) pending_head: Option<audit::Head>,
    /// The groups handed to the applier and perhaps not applied yet (sled): writers read through
    /// their writes, and one that applies its own batch waits for them first.
    pub(crate) in_flight: crate::pipeline::InFlightGroups,
}

impl WriterState {
    /// The head the batch just applied (or handed over to be) leaves becomes the cached head.
    pub(crate) fn head_moves(&mut self) {
        if let Some(head) = self.pending_head.take() {
            self.head = Some(head);
        }
    }
}

/// Every listing entry of a case: its summary and the entries of its own (finished by when, an
/// answer awaiting a push), with their values; and the blocks (`case_blocks`) that hold it:
/// finished or not, and one per field key.
pub(crate) struct CaseListingEntries {
    pub(crate) records: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) blocks: Vec<Vec<u8>>,
}

pub(crate) fn case_listing_entries(case: &Case) -> CaseListingEntries {
    let mut records = vec![(keys::case_summary(case.id), encode(&CaseSummary::of(case)))];
    if case.state.is_finished() {
        records.push((keys::finished_case_by_quiet(case.updated_at, case.id), Vec::new()));
    }
    if case.pending_verification.is_some() {
        records.push((keys::case_awaiting_push(case.id), Vec::new()));
    }
    let mut blocks = vec![keys::case_by_finish(case.state.is_finished(), case.id)];
    for (field, value) in CaseSummary::keys(case) {
        blocks.push(keys::case_by_field(field, &value, case.id));
    }
    CaseListingEntries { records, blocks }
}

/// A transaction over either engine: staged writes laid over what the engine holds under the
/// writer lock.
pub(crate) struct KvTransaction<'a> {
    source: &'a dyn TransactionSource,
    writer: &'a mut WriterState,
    /// Staged writes by key (`None` removes), applied as one batch at the end; reads see them.
    staged: BTreeMap<Vec<u8>, Option<sled::IVec>>,
    /// The deadline each case had when it was first read, to move its index entry on write.
    deadlines_read: HashMap<CaseId, Option<Timestamp>>,
    /// Cases this transaction read, as it last read or wrote them, so a storm's repeats folded
    /// into one transaction decode their case once.
    cases: HashMap<CaseId, Case>,
    next_case: Option<u64>,
    /// The first case number this transaction allocated: cases from it on are new here, and
    /// have no stored summary to look up.
    first_allocated: Option<u64>,
    /// The audit records this transaction appended, in order: written together at its end,
    /// under the first one's sequence (`audit::encode_block`).
    appended: Vec<AuditRecord>,
    /// Whether repeats are folding into the last of them: its hash is computed once (when the
    /// head is read, another record is appended, or the transaction ends), not once per repeat.
    folding: bool,
    next_effect: Option<u64>,
}

impl KeyValues for KvTransaction<'_> {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        // While a record is being folded into, the chain's head is as it will be written.
        if let (true, Some(folded)) = (self.folding, self.appended.last()) {
            if key == keys::META_AUDIT_HEAD {
                let head = audit::Head { seq: folded.seq, hash: folded.compute_hash() };
                return Ok(Some(encode(&head).into()));
            }
        }
        match self.staged.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.source.get(key),
        }
    }
}

impl<'a> KvTransaction<'a> {
    pub(crate) fn new(source: &'a dyn TransactionSource, writer: &'a mut WriterState) -> KvTransaction<'a> {
        KvTransaction {
            source,
            writer,
            staged: BTreeMap::new(),
            deadlines_read: HashMap::new(),
            cases: HashMap::new(),
            next_case: None,
            first_allocated: None,
            appended: Vec::new(),
            folding: false,
            next_effect: None,
        }
    }

    /// The staged writes in key order (`None` removes the key), with the audit records this
    /// transaction appended, in blocks.
    pub(crate) fn into_writes(mut self) -> crate::engine::Writes {
        self.seal_folded();
        for block in std::mem::take(&mut self.appended).chunks(audit::MOST_RECORDS_PER_BLOCK) {
            self.insert(keys::audit(block[0].seq), audit::encode_block(block));
        }
        self.staged.into_iter().collect()
    }

    /// Hashes the record repeats were folded into and makes it the chain's head.
    fn seal_folded(&mut self) {
        if !std::mem::take(&mut self.folding) {
            return;
        }
        if let Some(record) = self.appended.last_mut() {
            record.hash = record.compute_hash();
            let head = record.head();
            self.stage_head(head);
        }
    }

    /// Makes a hashed record's position the chain's head.
    fn stage_head(&mut self, head: audit::Head) {
        self.insert(keys::META_AUDIT_HEAD, encode(&head));
        self.writer.pending_head = Some(head);
    }

    /// Keeps effects with their case as not delivered, under one key named by the first one's
    /// number from the effect counter (sled's cost grows with keys: a new case's effects were two
    /// of its nineteen).
    fn stage_undelivered(&mut self, case_id: CaseId, first_seq: u64, effects: &[Effect], at: Timestamp, reason: &str) {
        let kept: Vec<UndeliveredEffect> = effects
            .iter()
            .map(|effect| UndeliveredEffect { effect: effect.clone(), at, reason: reason.to_string() })
            .collect();
        self.insert(keys::undelivered(case_id, first_seq), encode(&kept));
    }

    /// Puts `id` in (or takes it out of) the listing index block `key` names: the block's bitmap
    /// read as staged or stored, changed, and staged again (removed once it holds no case).
    fn hold_in_block(&mut self, key: Vec<u8>, id: CaseId, held: bool) -> Result<()> {
        let stored = self.value(&key)?;
        let block = IdBlock::read(&key, stored.as_deref())?;
        if block.contains(id) == held {
            return Ok(());
        }
        match block.with(id, held).value() {
            Some(bits) => self.insert(key, &bits[..]),
            None => self.remove(key),
        }
        Ok(())
    }

    /// Puts case `id`, falling due `at`, in (or takes it out of) its deadline bucket.
    fn hold_deadline(&mut self, at: Timestamp, id: CaseId, held: bool) -> Result<()> {
        let key = keys::deadline(at, id);
        let stored = self.value(&key)?;
        let bucket = DeadlineBucket::read(&key, stored.as_deref())?;
        if bucket.holds(at, id) == held {
            return Ok(());
        }
        match bucket.with(at, id, held).value() {
            Some(value) => self.insert(key, value),
            None => self.remove(key),
        }
        Ok(())
    }

    fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<sled::IVec>) {
        self.staged.insert(key.into(), Some(value.into()));
    }

    fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.staged.insert(key.into(), None);
    }

    /// Keeps a case's listing summary and index entries in step with the case: the field keys
    /// once (what an alert names never changes), the finished/unfinished entry moved when the
    /// state crosses over.
    fn index_case(&mut self, case: &Case) -> Result<()> {
        let allocated_here = self.allocated_here(case.id);
        // The summary as last written (staged or stored): its state and time name the index
        // entries to move.
        let previous = match allocated_here {
            true => None,
            false => match self.value(&keys::case_summary(case.id))? {
                Some(value) => Some(decode::<CaseSummary>(&value, "case summary")?),
                None => None,
            },
        };
        let Some(previous) = previous else {
            let entries = case_listing_entries(case);
            for (key, value) in entries.records {
                self.insert(key, value);
            }
            for block in entries.blocks {
                self.hold_in_block(block, case.id, true)?;
            }
            return Ok(());
        };
        let (was_finished, finished) = (previous.state.is_finished(), case.state.is_finished());
        if was_finished != finished {
            self.hold_in_block(keys::case_by_finish(was_finished, case.id), case.id, false)?;
            self.hold_in_block(keys::case_by_finish(finished, case.id), case.id, true)?;
        }
        if was_finished {
            self.remove(keys::finished_case_by_quiet(previous.updated_at, case.id));
        }
        if finished {
            self.insert(keys::finished_case_by_quiet(case.updated_at, case.id), Vec::<u8>::new());
        }
        let awaiting_push = case.pending_verification.is_some();
        if previous.awaiting_push && !awaiting_push {
            self.remove(keys::case_awaiting_push(case.id));
        }
        if awaiting_push {
            self.insert(keys::case_awaiting_push(case.id), Vec::<u8>::new());
        }
        self.insert(keys::case_summary(case.id), encode(&CaseSummary::of(case)));
        Ok(())
    }

    /// Takes records (of earlier changes, in order) out of the blocks that hold them; a block
    /// left empty goes, one left with records keeps its key.
    fn remove_audit_records(&mut self, seqs: &[u64]) -> Result<()> {
        let mut block: Option<(Vec<u8>, Vec<AuditRecord>)> = None;
        for &seq in seqs {
            let in_block = block.as_ref().is_some_and(|(_, records)| records.iter().any(|record| record.seq == seq));
            if !in_block {
                if let Some((key, records)) = block.take() {
                    self.stage_block(key, &records);
                }
                // Blocks never move: the one holding `seq` is the last that starts at or before it.
                let Some(key) = self.source.last_key_between(&keys::audit(0), &keys::audit(seq))? else { continue };
                let records = match self.value(&key)? {
                    Some(value) => audit::decode_block_unhashed(&value)?,
                    None => Vec::new(),
                };
                block = Some((key.to_vec(), records));
            }
            if let Some((_, records)) = block.as_mut() {
                records.retain(|record| record.seq != seq);
            }
        }
        if let Some((key, records)) = block {
            self.stage_block(key, &records);
        }
        Ok(())
    }

    fn stage_block(&mut self, key: Vec<u8>, records: &[AuditRecord]) {
        match records.is_empty() {
            true => self.remove(key),
            false => self.insert(key, audit::encode_block(records)),
        }
    }

    /// Whether this transaction numbered the case: nothing about it is stored yet, so what is
    /// keyed by it is read from the staged writes alone (a miss in sled costs a descent of the
    /// tree, and waits while a group is being applied).
    fn allocated_here(&self, case_id: CaseId) -> bool {
        self.first_allocated.is_some_and(|first| case_id.number() >= first)
    }

    /// Adds an audit record to its case's trail: to the open run, sealed under a key of its own
    /// once it is full.
    fn extend_trail(&mut self, case_id: CaseId, seq: u64) -> Result<()> {
        let open_run = keys::case_trail_open(case_id);
        let stored = match self.allocated_here(case_id) {
            true => self.staged.get(&open_run).cloned().flatten(),
            false => self.value(&open_run)?,
        };
        let mut seqs = match stored {
            Some(value) => trail::decode_entry(&open_run, &value)?,
            None => Vec::new(),
        };
        seqs.push(seq);
        if seqs.len() >= trail::RUN_LENGTH {
            self.insert(keys::case_trail_run(case_id, seqs[0]), trail::encode_run(&seqs));
            self.remove(open_run);
        } else {
            self.insert(open_run, trail::encode_run(&seqs));
        }
        Ok(())
    }

    /// Takes `count` numbers from the effect counter (queued effects, redraw versions, effects
    /// kept as undelivered) and returns the first.
    fn allocate_effect_seqs(&mut self, count: u64) -> Result<u64> {
        let first = match self.next_effect {
            Some(next) => next,
            None => self.counter(keys::META_NEXT_EFFECT, "effect counter")?,
        };
        let next = first + count;
        self.next_effect = Some(next);
        self.insert(keys::META_NEXT_EFFECT, &next.to_be_bytes());
        Ok(first)
    }

    /// Whether any movement from `source` to `target` has a history, staged or stored (a pair
    /// has a history per account and protocol: a few keys at most).
    fn any_history_of_pair(&self, source: &str, target: &str) -> Result<bool> {
        let prefix = keys::history_of_pair_prefix(source, target);
        let from_prefix = (std::ops::Bound::Included(prefix.as_slice()), std::ops::Bound::Unbounded);
        let mut staged = self.staged.range::<[u8], _>(from_prefix).take_while(|(key, _)| key.starts_with(&prefix));
        if staged.any(|(_, value)| value.is_some()) {
            return Ok(true);
        }
        let stored = self.source.keys_with_prefix(&prefix)?;
        Ok(stored.iter().any(|key| !matches!(self.staged.get(key.as_ref()), Some(None))))
    }

    fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.value(key)?.is_some())
    }

    fn counter(&self, key: &[u8], what: &str) -> Result<u64> {
        match self.value(key)? {
            Some(value) => keys::decode_u64(&value, what),
            None => Ok(1),
        }
    }
}

impl Transaction for KvTransaction<'_> {
    fn case(&mut self, case_id: CaseId) -> Result<Option<Case>> {
        if let Some(case) = self.cases.get(&case_id) {
            return Ok(Some(case.clone()));
        }
        let case = crate::reads::read_case(self, case_id)?;
        if let Some(case) = &case {
            self.deadlines_read.entry(case_id).or_insert(case.next_deadline());
            self.cases.insert(case_id, case.clone());
        }
        Ok(case)
    }

    fn case_of_alert(&mut self, format: &str, source_alert_id: &str) -> Result<Option<CaseId>> {
        match self.value(&keys::alert_id(format, source_alert_id))? {
            Some(value) => Ok(Some(keys::decode_case_id(&value, "alert index")?)),
            None => Ok(None),
        }
    }

    fn movement_case(&mut self, key: &GroupingKey) -> Result<Option<OpenMovement>> {
        match self.value(&keys::group(key))? {
            Some(value) => Ok(Some(decode(&value, "group index")?)),
            None => Ok(None),
        }
    }

    fn history(&mut self, movement: &MovementKey) -> Result<History> {
        crate::reads::read_history(self, movement)
    }

    fn allocate_case_id(&mut self) -> Result<CaseId> {
        let number = match self.next_case {
            Some(number) => number,
            None => self.counter(keys::META_NEXT_CASE, "case counter")?,
        };
        self.next_case = Some(number + 1);
        self.first_allocated.get_or_insert(number);
        self.insert(keys::META_NEXT_CASE, &(number + 1).to_be_bytes());
        CaseId::new(number).ok_or_else(|| StorageError::Corrupt {
            key: "meta/next_case".to_string(),
            reason: "the case counter is zero".to_string(),
        })
    }

    fn put_case(&mut self, case: &Case) -> Result<()> {
        self.index_case(case)?;
        let before = self.deadlines_read.get(&case.id).copied().flatten();
        let after = case.next_deadline();
        // A later write of the same case in this transaction moves the index from here.
        self.deadlines_read.insert(case.id, after);
        // A case read here is kept as written; a new one is not copied in (a clone and its drop
        // per new case, where a repeat in the same group decodes it once from the staged write).
        if let Some(known) = self.cases.get_mut(&case.id) {
            known.clone_from(case);
        }
        if before != after {
            if let Some(before) = before {
                self.hold_deadline(before, case.id, false)?;
            }
            if let Some(after) = after {
                self.hold_deadline(after, case.id, true)?;
            }
        }
        self.insert(keys::case(case.id), encode(case));
        // The whole case carries its latest activity; a separate record would only repeat it.
        self.remove(keys::case_activity(case.id));
        Ok(())
    }

    fn put_case_activity(&mut self, case: &Case) {
        if let Some(known) = self.cases.get_mut(&case.id) {
            known.alert_count = case.alert_count;
            known.last_alert_at = case.last_alert_at;
            known.updated_at = case.updated_at;
        }
        self.insert(keys::case_activity(case.id), CaseActivity::of(case).encode());
    }

    fn index_alert(&mut self, format: &str, source_alert_id: &str, case_id: CaseId) {
        self.insert(keys::alert_id(format, source_alert_id), &case_id.number().to_be_bytes());
    }

    fn put_movement_case(&mut self, key: &GroupingKey, movement: OpenMovement) {
        self.insert(keys::group(key), encode(&movement));
    }

    fn put_history(&mut self, movement: &MovementKey, history: &History, sighted: bool) -> Result<()> {
        // A pair with no history yet is a target the source had not reached.
        if sighted && !self.any_history_of_pair(&movement.source, &movement.target)? {
            let reached = history.source_distinct_targets.unwrap_or(0) + 1;
            self.insert(keys::source_count(&movement.source), &reached.to_be_bytes());
        }
        // The distinct-target count is kept per source and read beside the history.
        let stored = History { source_distinct_targets: None, ..history.clone() };
        self.insert(keys::history(movement), encode(&stored));
        Ok(())
    }

    fn queue_effects(&mut self, case_id: CaseId, effects: &[Effect]) -> Result<Vec<PendingEffect>> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let first = self.allocate_effect_seqs(effects.len() as u64)?;
        let mut queued = Vec::with_capacity(effects.len());
        for (seq, effect) in (first..).zip(effects) {
            let pending = PendingEffect { seq, case_id, effect: effect.clone() };
            self.insert(keys::effect(seq), encode(&pending));
            queued.push(pending);
        }
        Ok(queued)
    }

    fn remove_effects(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.remove(keys::effect(*seq));
        }
    }

    fn want_redraw(&mut self, case_id: CaseId, urgent: bool) -> Result<()> {
        let key = keys::redraw(case_id);
        let before: Option<RedrawWanted> = match self.value(&key)? {
            Some(value) => Some(decode(&value, "redraw")?),
            None => None,
        };
        // A version from the effect counter: it only grows, across every case.
        let version = self.allocate_effect_seqs(1)?;
        let urgent = urgent || before.is_some_and(|before| before.urgent);
        self.insert(key, encode(&RedrawWanted { case_id, version, urgent }));
        Ok(())
    }

    fn clear_redraw(&mut self, wanted: &RedrawWanted) -> Result<()> {
        let key = keys::redraw(wanted.case_id);
        if let Some(value) = self.value(&key)? {
            let current: RedrawWanted = decode(&value, "redraw")?;
            if current.version == wanted.version {
                self.remove(key);
            }
        }
        Ok(())
    }

    fn mark_undelivered(&mut self, effect: &PendingEffect, at: Timestamp, reason: &str) {
        self.remove(keys::effect(effect.seq));
        self.stage_undelivered(effect.case_id, effect.seq, std::slice::from_ref(&effect.effect), at, reason);
    }

    fn keep_undelivered(&mut self, case_id: CaseId, effects: &[Effect], at: Timestamp, reason: &str) -> Result<()> {
        if effects.is_empty() {
            return Ok(());
        }
        // Numbered from the effect counter, as queued effects are, so they sort with the case's
        // others.
        let first = self.allocate_effect_seqs(effects.len() as u64)?;
        self.stage_undelivered(case_id, first, effects, at, reason);
        Ok(())
    }

    fn enqueue_outbox(&mut self, entry: &OutboxEntry) -> Result<bool> {
        if self.contains(&keys::outbox(&entry.id))? {
            return Ok(false);
        }
        self.insert(keys::outbox(&entry.id), encode(entry));
        Ok(true)
    }

    fn settle_outbox(&mut self, entry: &OutboxEntry, done: bool) {
        if done {
            self.remove(keys::outbox(&entry.id));
        } else {
            self.insert(keys::outbox(&entry.id), encode(entry));
        }
    }

    fn set_card(&mut self, case_id: CaseId, card: &CardRef) {
        self.insert(keys::card(case_id), encode(card));
    }

    fn set_marker(&mut self, name: &str, at: Timestamp) {
        self.insert(keys::marker(name), &(at.unix_millis().max(0) as u64).to_be_bytes());
    }

    fn put_directory_snapshot(&mut self, source: &str, snapshot: crate::EncodedJson, based_on: u64) -> Result<u64> {
        let version = match self.value(keys::META_DIRECTORY_VERSION)? {
            Some(value) => keys::decode_u64(&value, "directory version")?,
            None => 0,
        };
        if version != based_on {
            return Err(StorageError::Conflict(format!(
                "the directory changed meanwhile (version {version}, this change was based on {based_on}); try again"
            )));
        }
        self.insert(keys::directory_snapshot(source), snapshot.0);
        self.insert(keys::META_DIRECTORY_VERSION, &(version + 1).to_be_bytes());
        Ok(version + 1)
    }

    fn remove_notice(&mut self, seq: u64) {
        self.remove(keys::notice(seq));
    }

    fn queue_notice(&mut self, text: &str) -> Result<u64> {
        let seq = self.counter(keys::META_NEXT_NOTICE, "notice counter")?;
        self.insert(keys::notice(seq), encode(&crate::Notice { seq, text: text.to_string() }));
        self.insert(keys::META_NEXT_NOTICE, &(seq + 1).to_be_bytes());
        Ok(seq)
    }

    fn fold_into_last_audit(
        &mut self,
        case_id: CaseId,
        kind: AuditKind,
        fold: &mut dyn FnMut(&mut serde_json::Value) -> bool,
    ) -> Result<bool> {
        let Some(record) = self.appended.last_mut() else { return Ok(false) };
        // Only the chain's head may change: a record with a successor is linked to as it is.
        if self.writer.pending_head.as_ref().map(|head| head.seq) != Some(record.seq) {
            return Ok(false);
        }
        let folds = record.case_id == Some(case_id) && record.kind == kind.name() && fold(&mut record.detail);
        // Its hash is computed once, when it is sealed.
        self.folding |= folds;
        Ok(folds)
    }

    fn remove_archived_case(&mut self, case_id: CaseId, last_seq: u64, alert_ids: &[(String, String)]) -> Result<()> {
        let case = self.case(case_id)?.ok_or(StorageError::NoSuchCase(case_id))?;
        let open_run = keys::case_trail_open(case_id);
        let trail_keys = self.source.keys_with_prefix(&open_run)?;
        let sealed = trail_keys.iter().filter(|key| key.len() > open_run.len()).map(|key| {
            let value = self.value(key)?.unwrap_or_default();
            Ok((key.clone(), value))
        });
        let seqs = trail::seqs_in_order(sealed, self.value(&open_run)?)?;
        if seqs.last() != Some(&last_seq) {
            return Err(StorageError::Conflict(format!(
                "{case_id} changed after it was archived (its trail ends at #{}, not #{last_seq})",
                seqs.last().copied().unwrap_or(0)
            )));
        }
        self.remove_audit_records(&seqs)?;
        for key in trail_keys {
            self.remove(key.to_vec());
        }
        for key in self.source.keys_with_prefix(&keys::undelivered_prefix(case_id))? {
            self.remove(key.to_vec());
        }
        for (field, value) in CaseSummary::keys(&case) {
            self.hold_in_block(keys::case_by_field(field, &value, case_id), case_id, false)?;
        }
        for finished in [false, true] {
            self.hold_in_block(keys::case_by_finish(finished, case_id), case_id, false)?;
        }
        if let Some(summary) = self.value(&keys::case_summary(case_id))? {
            let summary: CaseSummary = decode(&summary, "case summary")?;
            self.remove(keys::finished_case_by_quiet(summary.updated_at, case_id));
        }
        self.remove(keys::case_awaiting_push(case_id));
        for (format, id) in alert_ids {
            self.remove(keys::alert_id(format, id));
        }
        if let Some(deadline) = self.deadlines_read.get(&case_id).copied().flatten() {
            self.hold_deadline(deadline, case_id, false)?;
        }
        let grouping = keys::group(&case.alert().grouping_key());
        if let Some(movement) = self.value(&grouping)? {
            if decode::<OpenMovement>(&movement, "group index")?.case_id == case_id {
                self.remove(grouping);
            }
        }
        for key in [
            keys::case(case_id),
            keys::case_activity(case_id),
            keys::case_summary(case_id),
            keys::card(case_id),
            keys::redraw(case_id),
        ] {
            self.remove(key);
        }
        self.cases.remove(&case_id);
        self.deadlines_read.insert(case_id, None);
        Ok(())
    }

    fn finish_archive_run(&mut self, run: u64) -> Result<()> {
        let next = self.counter(keys::META_NEXT_ARCHIVE, "archive run counter")?;
        if next != run {
            return Err(StorageError::Conflict(format!("archive run {run} is not the next one ({next} is)")));
        }
        self.insert(keys::META_NEXT_ARCHIVE, &(run + 1).to_be_bytes());
        Ok(())
    }

    fn allocate_advance_id(&mut self, declaration: bool) -> Result<String> {
        let (key, letter) =
            if declaration { (keys::META_NEXT_DECLARATION, 'D') } else { (keys::META_NEXT_APPROVAL, 'A') };
        let number = self.counter(key, "advance vouch counter")?;
        self.insert(key, &(number + 1).to_be_bytes());
        Ok(format!("{letter}-{number}"))
    }

    fn advance_vouch(&mut self, id: &str) -> Result<Option<AdvanceVouch>> {
        self.value(&keys::advance_vouch(id))?.map(|value| decode(&value, "advance vouch")).transpose()
    }

    fn advance_vouches_for(&mut self, hosts: &HostsScope) -> Result<Vec<AdvanceVouch>> {
        let prefix = keys::advance_by_movement_prefix(hosts);
        let mut vouches = Vec::new();
        for key in self.source.keys_with_prefix(&prefix)? {
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            vouches.extend(self.advance_vouch(&id)?);
        }
        Ok(vouches)
    }

    fn put_advance_vouch(&mut self, vouch: &AdvanceVouch) {
        self.insert(keys::advance_vouch(&vouch.id), encode(vouch));
        self.insert(keys::advance_by_movement(&vouch.scope.hosts(), &vouch.id), Vec::<u8>::new());
    }

    fn pending_advance(&mut self, discord_id: Snowflake) -> Result<Option<PendingAdvance>> {
        self.value(&keys::pending_advance(discord_id))?.map(|value| decode(&value, "pending advance vouch")).transpose()
    }

    fn put_pending_advance(&mut self, pending: &PendingAdvance) {
        self.insert(keys::pending_advance(pending.discord_id), encode(pending));
    }

    fn remove_pending_advance(&mut self, discord_id: Snowflake) {
        self.remove(keys::pending_advance(discord_id));
    }

    fn identity_link(&mut self, discord_id: Snowflake) -> Result<Option<IdentityLink>> {
        self.value(&keys::identity_link(discord_id))?.map(|value| decode(&value, "identity link")).transpose()
    }

    fn put_identity_link(&mut self, link: &IdentityLink) {
        self.insert(keys::identity_link(link.discord_id), encode(link));
    }

    fn remove_identity_link(&mut self, discord_id: Snowflake) {
        self.remove(keys::identity_link(discord_id));
    }

    fn pending_link(&mut self, discord_id: Snowflake) -> Result<Option<PendingLink>> {
        self.value(&keys::pending_link(discord_id))?.map(|value| decode(&value, "pending link")).transpose()
    }

    fn put_pending_link(&mut self, pending: &PendingLink) {
        self.insert(keys::pending_link(pending.discord_id), encode(pending));
    }

    fn remove_pending_link(&mut self, discord_id: Snowflake) {
        self.remove(keys::pending_link(discord_id));
    }

    fn append_audit(&mut self, entry: NewRecord<'_>) -> Result<AuditRecord> {
        // The record before this one is final once this one links to it.
        self.seal_folded();
        let head = match self.writer.pending_head.clone().or_else(|| self.writer.head.clone()) {
            Some(head) => head,
            None => match self.value(keys::META_AUDIT_HEAD)? {
                Some(value) => decode(&value, "audit head")?,
                None => audit::Head::genesis(),
            },
        };
        let record = AuditRecord::chained(&head, entry);
        self.stage_head(record.head());
        if let Some(case_id) = record.case_id {
            self.extend_trail(case_id, record.seq)?;
        }
        self.appended.push(record.clone());
        Ok(record)
    }
}
