//! Reading cases, the audit log and history outside any change.

use vouch_playbook::facts::History;
use vouch_playbook::{Case, CaseId, CaseState, MovementKey, Timestamp};

use crate::audit::{self, AuditRecord, AuditReport};
use crate::codec::decode;
use crate::transaction::CaseActivity;
use crate::{keys, Result, StorageError, Store};

/// Where reads come from: the tree, or a transaction's view of it with its own writes.
pub(crate) trait KeyValues {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>>;
}

impl KeyValues for sled::Db {
    fn value(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        Ok(self.get(key)?)
    }
}

/// A case with its latest activity laid over it.
pub(crate) fn read_case(tree: &dyn KeyValues, case_id: CaseId) -> Result<Option<Case>> {
    let Some(value) = tree.value(&keys::case(case_id))? else { return Ok(None) };
    let mut case: Case = decode(&value, "case")?;
    if let Some(activity) = tree.value(&keys::case_activity(case_id))? {
        decode::<CaseActivity>(&activity, "case activity")?.overlay(&mut case);
    }
    Ok(Some(case))
}

pub(crate) fn read_history(tree: &dyn KeyValues, movement: &MovementKey) -> Result<History> {
    let mut history: History = match tree.value(&keys::history(&movement.encode()))? {
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
        self.on_current(|generation| read_case(&generation.tree, case_id)?.ok_or(StorageError::NoSuchCase(case_id)))
    }

    /// Every case, oldest first, optionally only those in the given states.
    pub fn cases(&self, states: Option<&[CaseState]>) -> Result<Vec<Case>> {
        self.on_current(|generation| {
            let mut cases = Vec::new();
            for entry in generation.tree.scan_prefix(keys::CASE_PREFIX) {
                let (key, _) = entry?;
                let case_id = keys::decode_case_id(&key[keys::CASE_PREFIX.len()..], "case key")?;
                let Some(case) = read_case(&generation.tree, case_id)? else { continue };
                if states.is_none_or(|states| states.contains(&case.state)) {
                    cases.push(case);
                }
            }
            Ok(cases)
        })
    }

    /// How many cases are in each state.
    pub fn case_counts(&self) -> Result<Vec<(CaseState, u64)>> {
        let mut counts: Vec<(CaseState, u64)> = CaseState::ALL.iter().map(|state| (*state, 0)).collect();
        for case in self.cases(None)? {
            if let Some(entry) = counts.iter_mut().find(|(state, _)| *state == case.state) {
                entry.1 += 1;
            }
        }
        Ok(counts)
    }

    /// Cases whose stored deadline (reminder or page) is at or before `now`, soonest first.
    pub fn due_cases(&self, now: Timestamp) -> Result<Vec<CaseId>> {
        self.on_current(|generation| {
            let mut due = Vec::new();
            for entry in generation.tree.scan_prefix(keys::DEADLINE_PREFIX) {
                let (key, _) = entry?;
                let (deadline, case_id) = keys::decode_deadline(&key)?;
                if deadline > now {
                    break;
                }
                due.push(case_id);
            }
            Ok(due)
        })
    }

    /// How often this movement was seen and vouched for.
    pub fn history(&self, movement: &MovementKey) -> Result<History> {
        self.on_current(|generation| read_history(&generation.tree, movement))
    }

    /// The audit trail of one case, in order.
    pub fn case_audit(&self, case_id: CaseId) -> Result<Vec<AuditRecord>> {
        self.on_current(|generation| {
            let mut records = Vec::new();
            for entry in generation.tree.scan_prefix(keys::case_audit_prefix(case_id)) {
                let (key, _) = entry?;
                let seq = keys::seq_of_case_audit(&key)?;
                if let Some(value) = generation.tree.get(keys::audit(seq))? {
                    records.push(decode(&value, "audit record")?);
                }
            }
            Ok(records)
        })
    }

    /// Every audit record in chain order.
    pub fn audit_records(&self) -> Box<dyn Iterator<Item = Result<AuditRecord>>> {
        match self.on_current(|generation| Ok(generation.tree.scan_prefix(keys::AUDIT_PREFIX))) {
            Ok(scan) => Box::new(scan.map(|entry| {
                let (_, value) = entry?;
                decode(&value, "audit record")
            })),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    /// Checks the whole audit chain against the head stored beside it.
    pub fn verify_audit(&self) -> Result<AuditReport> {
        self.on_current(|generation| {
            let tree = &generation.tree;
            let head: Option<audit::Head> = match tree.get(keys::META_AUDIT_HEAD)? {
                Some(value) => Some(decode(&value, "audit head")?),
                None => None,
            };
            let mut problems = Vec::new();
            let mut records = Vec::new();
            for entry in tree.scan_prefix(keys::AUDIT_PREFIX) {
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
        })
    }
}
