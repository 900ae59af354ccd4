//! Reading cases, the audit log and history outside any change.

use vouch_playbook::case_list::{CaseFilter, CasePage, CaseSummary, ListedField};
use vouch_playbook::facts::History;
use vouch_playbook::{Case, CaseId, CaseState, MovementKey, Timestamp};

use crate::activity::CaseActivity;
use crate::audit::{self, AuditRecord, AuditReport};
use crate::case_blocks::{DeadlineBucket, IdBlock};
use crate::codec::decode;
use crate::engine::TransactionSource;
use crate::store::Generation;
use crate::{keys, trail, Result, StorageError, Store};

/// Where reads come from: the tree, or a transaction's view of it with its own writes.
pub(crate) trait KeyValues {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>>;
}

impl KeyValues for Generation {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.get(key)
    }
}

impl KeyValues for &dyn TransactionSource {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        self.get(key)
    }
}

/// A case with its latest activity laid over it.
pub(crate) fn read_case(tree: &dyn KeyValues, case_id: CaseId) -> Result<Option<Case>> {
    let Some(value) = tree.value(&keys::case(case_id))? else { return Ok(None) };
    let mut case: Case = decode(&value, "case")?;
    if let Some(activity) = tree.value(&keys::case_activity(case_id))? {
        CaseActivity::decode(&activity)?.overlay(&mut case);
    }
    Ok(Some(case))
}

/// Archives read back: their records, and each file's name and SHA-256.
struct ReadBack<'a> {
    records: Vec<AuditRecord>,
    files: &'a [(String, String)],
}

/// The audit records of the block holding record `seq` (blocks never move: it is the last one
/// that starts at or before it), as stored; none when there is no such block.
fn read_audit_block_holding(generation: &Generation, seq: u64) -> Result<Vec<AuditRecord>> {
    match generation.range_rev(keys::audit(0), keys::audit(seq.saturating_add(1))).next().transpose()? {
        Some((_, value)) => audit::decode_block_unhashed(&value),
        None => Ok(Vec::new()),
    }
}

/// A case's listing summary with its latest activity laid over it.
fn read_summary(generation: &Generation, case_id: CaseId) -> Result<Option<CaseSummary>> {
    let Some(value) = generation.get(keys::case_summary(case_id))? else { return Ok(None) };
    let mut summary: CaseSummary = decode(&value, "case summary")?;
    if let Some(activity) = generation.get(keys::case_activity(case_id))? {
        CaseActivity::decode(&activity)?.overlay_summary(&mut summary);
    }
    Ok(Some(summary))
}

pub(crate) fn read_history(tree: &dyn KeyValues, movement: &MovementKey) -> Result<History> {
    let mut history: History = match tree.value(&keys::history(movement))? {
        Some(value) => decode(&value, "history")?,
        None => History::default(),
    };
    // A counter kept per source, so the hint costs one read however many systems it reached.
    let distinct = match tree.value(&keys::source_count(&movement.source))? {
        Some(value) => keys::decode_u64(&value, "source count")?,
        None => 0,
    };
    history.source_distinct_targets = Some(distinct);
    Ok(history)
}

impl Store {
    pub fn case(&self, case_id: CaseId) -> Result<Case> {
        self.on_current(|generation| read_case(generation, case_id)?.ok_or(StorageError::NoSuchCase(case_id)))
    }

    /// Every case, oldest first, optionally only those in the given states. Asked only for
    /// unfinished states (or only finished ones), it reads only those cases.
    pub fn cases(&self, states: Option<&[CaseState]>) -> Result<Vec<Case>> {
        let finished = states.and_then(vouch_playbook::case_list::finished_alike);
        self.on_current(|generation| {
            let case_ids: Vec<CaseId> = match finished {
                Some(finished) => {
                    let mut ids = Vec::new();
                    for entry in generation.scan_prefix(keys::case_by_finish_prefix(finished)) {
                        let (key, value) = entry?;
                        ids.extend(IdBlock::read(&key, Some(value.as_ref()))?.ids());
                    }
                    ids
                }
                None => generation
                    .scan_prefix(keys::CASE_PREFIX)
                    .map(|entry| keys::case_id_at_end(&entry?.0, "case key"))
                    .collect::<Result<_>>()?,
            };
            let mut cases = Vec::new();
            for case_id in case_ids {
                let Some(case) = read_case(generation, case_id)? else { continue };
                if states.is_none_or(|states| states.contains(&case.state)) {
                    cases.push(case);
                }
            }
            Ok(cases)
        })
    }

    /// The finished cases that changed at or after `since` (as their last whole write says),
    /// read through the index of finished cases by time: the day's closed cases, not all of them.
    pub fn finished_cases_changed_since(&self, since: Timestamp) -> Result<Vec<Case>> {
        self.on_current(|generation| {
            let start = keys::finished_by_quiet_from(since);
            let mut end = keys::FINISHED_BY_QUIET_PREFIX.to_vec();
            end.extend_from_slice(&[0xff; 17]);
            let mut cases = Vec::new();
            for entry in generation.range(start, end) {
                let (key, _) = entry?;
                let case_id = keys::case_id_at_end(&key, "finished case index")?;
                cases.extend(read_case(generation, case_id)?);
            }
            Ok(cases)
        })
    }

    /// The cases with an answer waiting on its giver's push, whatever else the store holds.
    pub fn cases_awaiting_push(&self) -> Result<Vec<Case>> {
        self.on_current(|generation| {
            let mut cases = Vec::new();
            for entry in generation.scan_prefix(keys::AWAITING_PUSH_PREFIX) {
                let (key, _) = entry?;
                let case_id = keys::case_id_at_end(&key, "push index")?;
                cases.extend(read_case(generation, case_id)?);
            }
            Ok(cases)
        })
    }

    /// How many cases are in each state: the unfinished ones read by their summaries, the
    /// finished ones counted from their index blocks alone.
    pub fn case_counts(&self) -> Result<Vec<(CaseState, u64)>> {
        let mut counts: Vec<(CaseState, u64)> = CaseState::ALL.iter().map(|state| (*state, 0)).collect();
        self.on_current(|generation| {
            let mut count = |state: Option<CaseState>, how_many: u64| {
                if let Some(entry) = counts.iter_mut().find(|(counted, _)| Some(*counted) == state) {
                    entry.1 += how_many;
                }
            };
            for finished in [false, true] {
                for entry in generation.scan_prefix(keys::case_by_finish_prefix(finished)) {
                    let (key, value) = entry?;
                    let block = IdBlock::read(&key, Some(value.as_ref()))?;
                    if finished {
                        // One finished state today; a second would need its summaries read here.
                        count(CaseState::ALL.iter().copied().find(|state| state.is_finished()), block.len());
                    } else {
                        for case_id in block.ids() {
                            count(read_summary(generation, case_id)?.map(|summary| summary.state), 1);
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(counts)
    }

    /// A page of the cases `filter` admits, newest first, of those numbered below `before` (all,
    /// when `None`), at most `limit`. It reads the narrowest index the filter allows (a field's
    /// key, else finished or not, else every summary) and each candidate's summary, never a whole
    /// case: a page costs what it holds, not what the store holds.
    pub fn case_page(&self, filter: &CaseFilter, before: Option<CaseId>, limit: usize) -> Result<CasePage> {
        self.on_current(|generation| {
            let (index, other_fields): (CaseIndex, &[(ListedField, String)]) = match filter.fields.split_first() {
                Some(((field, value), others)) => {
                    (CaseIndex::Blocks(keys::case_by_field_prefix(*field, value)), others)
                }
                None => match filter.finished() {
                    Some(finished) => (CaseIndex::Blocks(keys::case_by_finish_prefix(finished)), &[]),
                    None => (CaseIndex::Summaries, &[]),
                },
            };
            let mut cases = Vec::new();
            for case_id in index.newest_first(generation, before) {
                let case_id = case_id?;
                let Some(summary) = read_summary(generation, case_id)? else { continue };
                if filter.past_the_oldest(summary.opened_at) {
                    return Ok(CasePage { cases, next_before: None });
                }
                let mut found_by_every_field = true;
                for (field, value) in other_fields {
                    let key = keys::case_by_field(*field, value, case_id);
                    let stored = generation.get(&key)?;
                    if !IdBlock::read(&key, stored.as_deref())?.contains(case_id) {
                        found_by_every_field = false;
                        break;
                    }
                }
                if !found_by_every_field || !filter.admits(&summary) {
                    continue;
                }
                cases.push(summary);
                if cases.len() == limit {
                    return Ok(CasePage { cases, next_before: Some(case_id) });
                }
            }
            Ok(CasePage { cases, next_before: None })
        })
    }

    /// The number the next archive run takes (1 for the first).
    pub fn next_archive_run(&self) -> Result<u64> {
        self.on_current(|generation| match generation.get(keys::META_NEXT_ARCHIVE)? {
            Some(value) => keys::decode_u64(&value, "archive run counter"),
            None => Ok(1),
        })
    }

    /// Summaries of the finished cases that have not changed since before `quiet_since`, those
    /// quiet longest first, at most `limit`: what retention reads. It reads only those: finished
    /// cases are indexed by when they last changed.
    pub fn finished_cases_quiet_since(&self, quiet_since: Timestamp, limit: usize) -> Result<Vec<CaseSummary>> {
        self.on_current(|generation| {
            // Every key of a case that last changed before `quiet_since` sorts before this one.
            let end = keys::finished_by_quiet_from(quiet_since);
            let mut summaries = Vec::new();
            for entry in generation.range(keys::FINISHED_BY_QUIET_PREFIX.to_vec(), end) {
                let (key, _) = entry?;
                let case_id = keys::case_id_at_end(&key, "finished case index")?;
                if let Some(summary) = read_summary(generation, case_id)? {
                    summaries.push(summary);
                }
                if summaries.len() == limit {
                    break;
                }
            }
            Ok(summaries)
        })
    }

    /// A page of one case's audit trail, in order: at most `limit` records after sequence
    /// `after` (from the first when `None`), and the sequence the next page starts after.
    pub fn case_audit_page(
        &self,
        case_id: CaseId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<u64>)> {
        self.on_current(|generation| {
            let open_run = keys::case_trail_open(case_id);
            let sealed_end = crate::engine::prefix_end(&open_run);
            // The sealed run holding the record after `after`: the last one that starts at or
            // before it (a page costs its size, not the trail's length before it).
            let start = match after {
                Some(after) => generation
                    .range_rev(keys::case_trail_run(case_id, 0), keys::case_trail_run(case_id, after.saturating_add(2)))
                    .next()
                    .transpose()?
                    .map(|(key, _)| key.to_vec()),
                None => None,
            };
            let start = start.unwrap_or_else(|| keys::case_trail_run(case_id, 0));
            let seqs = trail::seqs_in_order(generation.range(start, sealed_end), generation.get(&open_run)?)?;
            let mut records = Vec::new();
            // The block last read: a case's records written by one change share one.
            let mut block: Vec<AuditRecord> = Vec::new();
            for seq in seqs.into_iter().filter(|seq| after.is_none_or(|after| *seq > after)) {
                if !block.iter().any(|record| record.seq == seq) {
                    block = read_audit_block_holding(generation, seq)?;
                }
                if let Some(record) = block.iter().find(|record| record.seq == seq) {
                    let mut record = record.clone();
                    record.hash = record.compute_hash_if_missing();
                    records.push(record);
                }
                if records.len() == limit {
                    return Ok((records, Some(seq)));
                }
            }
            Ok((records, None))
        })
    }

    /// Cases whose stored deadline (reminder or page) is at or before `now`, soonest first.
    pub fn due_cases(&self, now: Timestamp) -> Result<Vec<CaseId>> {
        self.on_current(|generation| {
            let mut due = Vec::new();
            let end = keys::deadlines_after_the_second_of(now);
            for entry in generation.range(keys::DEADLINE_PREFIX.to_vec(), end) {
                let (key, value) = entry?;
                let bucket = DeadlineBucket::read(&key, Some(value.as_ref()))?;
                due.extend(bucket.deadlines().filter(|(deadline, _)| *deadline <= now));
            }
            due.sort();
            Ok(due.into_iter().map(|(_, case_id)| case_id).collect())
        })
    }

    /// How often this movement was seen and vouched for.
    pub fn history(&self, movement: &MovementKey) -> Result<History> {
        self.on_current(|generation| read_history(generation, movement))
    }

    /// The audit trail of one case, in order.
    pub fn case_audit(&self, case_id: CaseId) -> Result<Vec<AuditRecord>> {
        self.case_audit_page(case_id, None, usize::MAX).map(|(records, _)| records)
    }

    /// Every audit record in chain order.
    pub fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord>>> {
        match self.on_current(|generation| Ok(generation.scan_prefix(keys::AUDIT_PREFIX))) {
            Ok(scan) => Box::new(scan.flat_map(|entry| {
                let records = entry.and_then(|(_, value)| audit::decode_block(&value));
                let records: Vec<Result<AuditRecord>> = match records {
                    Ok(records) => records.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                records
            })),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    /// Checks the whole audit chain against the head stored beside it; records moved to an
    /// archive are stepped over where the chain's anchors say they went.
    pub fn verify_audit(&self) -> Result<AuditReport> {
        self.verify_audit_with(None)
    }

    /// Checks the chain end to end with the records read back from its archives in place: every
    /// record, archived or kept, must be there and link, and every archive file the anchors name
    /// must be among `files` (`(name, SHA-256)`) with the digest its anchor names, and no file
    /// unnamed.
    pub fn verify_audit_with_archives(
        &self,
        archived: Vec<AuditRecord>,
        files: &[(String, String)],
    ) -> Result<AuditReport> {
        self.verify_audit_with(Some(ReadBack { records: archived, files }))
    }

    fn verify_audit_with(&self, archived: Option<ReadBack<'_>>) -> Result<AuditReport> {
        self.on_current(|generation| {
            let head: Option<audit::Head> = match generation.get(keys::META_AUDIT_HEAD)? {
                Some(value) => Some(decode(&value, "audit head")?),
                None => None,
            };
            let mut problems = Vec::new();
            let mut records: Vec<AuditRecord> = Vec::new();
            // Where the block before began: its records must all come before this one's key.
            let mut previous_key_seq = None;
            for entry in generation.scan_prefix(keys::AUDIT_PREFIX) {
                let (key, value) = entry?;
                let key_seq = keys::seq_of_audit(&key)?;
                // The chain check computes each hash once, so it reads records as stored.
                match audit::decode_block_unhashed(&value) {
                    Ok(block) => {
                        // A block holds the record its key names (unless archiving took that
                        // one out) and those after it, up to the next block's.
                        let misplaced =
                            block.iter().filter(|record| record.seq < key_seq).map(|record| (key_seq, record));
                        let overrun = previous_key_seq.into_iter().flat_map(|previous| {
                            records
                                .iter()
                                .rev()
                                .take_while(move |record| record.seq >= key_seq)
                                .map(move |record| (previous, record))
                        });
                        for (stored_under, record) in overrun.chain(misplaced) {
                            problems.push(format!("record stored under #{stored_under} says it is #{}", record.seq));
                        }
                        previous_key_seq = Some(key_seq);
                        records.extend(block);
                    }
                    Err(error) => problems.push(format!("record #{key_seq} cannot be read: {error}")),
                }
            }
            let mut report = match archived {
                None => {
                    let anchored = audit::ArchivedRange::anchored(records.iter());
                    audit::verify_chain_across(records.iter(), &anchored)
                }
                Some(archived) => {
                    problems.extend(audit::anchored_file_problems(records.iter(), archived.files));
                    records.extend(archived.records);
                    records.sort_by_key(|record| record.seq);
                    audit::verify_chain(records.iter())
                }
            };
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
        })
    }
}

/// The index a page of cases is read from: blocks of case ids (`case_blocks`) under a prefix, or
/// every summary (a key per case).
enum CaseIndex {
    Blocks(Vec<u8>),
    Summaries,
}

impl CaseIndex {
    /// The case ids the index holds below `before` (all, when `None`), newest first, read a key
    /// at a time as the page asks for more.
    fn newest_first<'a>(
        &self,
        generation: &'a Generation,
        before: Option<CaseId>,
    ) -> Box<dyn Iterator<Item = Result<CaseId>> + 'a> {
        match self {
            CaseIndex::Summaries => {
                let prefix = keys::CASE_SUMMARY_PREFIX.to_vec();
                let mut end = prefix.clone();
                match before {
                    Some(before) => end.extend_from_slice(&before.number().to_be_bytes()),
                    None => end.extend_from_slice(&[0xff; 9]),
                }
                Box::new(
                    generation
                        .range_rev(prefix, end)
                        .map(|entry| keys::case_id_at_end(&entry?.0, "case listing index")),
                )
            }
            CaseIndex::Blocks(prefix) => {
                // The block holding `before` may hold older ids too: the range ends after it.
                let mut end = prefix.clone();
                match before.map(|before| crate::case_blocks::block_of(before).checked_add(1)) {
                    Some(Some(after_its_block)) => end.extend_from_slice(&after_its_block.to_be_bytes()),
                    _ => end.extend_from_slice(&[0xff; 9]),
                }
                Box::new(generation.range_rev(prefix.clone(), end).flat_map(move |entry| {
                    let ids: Vec<Result<CaseId>> = match entry
                        .and_then(|(key, value)| IdBlock::read(&key, Some(value.as_ref())))
                    {
                        Ok(block) => {
                            block.ids().rev().filter(|id| before.is_none_or(|before| *id < before)).map(Ok).collect()
                        }
                        Err(error) => vec![Err(error)],
                    };
                    ids
                }))
            }
        }
    }
}
