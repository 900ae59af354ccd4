//! The tamper-evident audit log: each record carries the SHA-256 of the one before it.
//!
//! A record's hash covers its sequence number, time, case, kind, actor, playbook version, detail
//! and the previous hash, serialized as JSON in a fixed field order. Editing a record changes its
//! hash and breaks the link from the next one; removing, reordering or inserting one breaks the
//! sequence or the links; removing the newest is caught by the head kept beside the chain. The
//! chain proves integrity against edits of the store, not against someone able to rewrite the
//! whole chain and its head; export the head elsewhere to anchor it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vouch_playbook::{Actor, AuditKind, CaseId, PlaybookVersion, Timestamp};

/// The hash "before" the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Head {
        Head { seq: 0, hash: GENESIS_HASH.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<CaseId>,
    /// What happened: `alert.new`, `alert.grouped`, `click.answer`, `refused.click.confirm`, ...
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook_version: Option<PlaybookVersion>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    /// The SHA-256 of everything above. The store does not keep it (see [`StoredRecord`]): it
    /// is computed again when the record is read.
    #[serde(default)]
    pub hash: String,
}

/// A record as the store keeps it: without its own hash. The hash is a function of the rest,
/// and what makes an edit evident is kept anyway: the next record's `prev_hash`, and the chain's
/// head for the newest. Leaving it out saves 32 bytes a record, which sled writes two or three
/// times over as the page holding the newest records is rewritten (records stored with their
/// hash, as before, read the same and are checked against it).
#[derive(Serialize)]
pub(crate) struct StoredRecord<'a> {
    seq: u64,
    at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_id: Option<CaseId>,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    playbook_version: Option<PlaybookVersion>,
    detail: &'a serde_json::Value,
    prev_hash: &'a str,
}

impl<'a> StoredRecord<'a> {
    pub(crate) fn of(record: &'a AuditRecord) -> StoredRecord<'a> {
        StoredRecord {
            seq: record.seq,
            at: record.at,
            case_id: record.case_id,
            kind: &record.kind,
            actor: record.actor.as_ref(),
            playbook_version: record.playbook_version,
            detail: &record.detail,
            prev_hash: &record.prev_hash,
        }
    }
}

/// The most records one `a/` key holds. A change's records are kept together under the first
/// one's sequence: sled's memory and work grow with the number of keys (about 270 bytes of
/// page table and accounting for every 8 to 16 of them, whatever their size), and a history of
/// a million alerts held a million record keys. A bound keeps a block (and the tree node of up
/// to 16 blocks that holds it) small enough to rewrite.
pub(crate) const MOST_RECORDS_PER_BLOCK: usize = 32;

/// Consecutive records of one change as one stored value: a JSON array of stored records, in
/// order.
pub(crate) fn encode_block(records: &[AuditRecord]) -> Vec<u8> {
    let stored: Vec<StoredRecord<'_>> = records.iter().map(StoredRecord::of).collect();
    crate::codec::encode(&stored)
}

/// The records a stored `a/` value holds, in order, as stored: a block, or one record alone as
/// older stores kept them. A record stored without its hash has it empty here (for readers that
/// compute it anyway: the chain check, a change that rewrites the block).
pub(crate) fn decode_block_unhashed(value: &[u8]) -> crate::Result<Vec<AuditRecord>> {
    let json = crate::codec::decode_json(value, "audit records")?;
    let corrupt = |error: serde_json::Error| crate::StorageError::Corrupt {
        key: "audit records".to_string(),
        reason: error.to_string(),
    };
    match json.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(&json).map_err(corrupt),
        _ => serde_json::from_slice(&json).map(|record| vec![record]).map_err(corrupt),
    }
}

/// The records a stored `a/` value holds, each with its hash.
pub(crate) fn decode_block(value: &[u8]) -> crate::Result<Vec<AuditRecord>> {
    let mut records = decode_block_unhashed(value)?;
    for record in &mut records {
        record.hash = record.compute_hash_if_missing();
    }
    Ok(records)
}

/// What a caller says about a new record; the chain fills in its position and hashes.
#[derive(Debug, Clone)]
pub struct NewRecord<'a> {
    pub at: Timestamp,
    pub case_id: Option<CaseId>,
    pub kind: AuditKind,
    pub actor: Option<&'a Actor>,
    pub playbook_version: Option<PlaybookVersion>,
    pub detail: serde_json::Value,
}

/// The hashed content of a record: everything but the hash itself, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at: Timestamp,
    case_id: Option<CaseId>,
    kind: &'a str,
    actor: Option<&'a Actor>,
    playbook_version: Option<PlaybookVersion>,
    detail: &'a serde_json::Value,
    prev_hash: &'a str,
}

impl AuditRecord {
    pub(crate) fn chained(head: &Head, entry: NewRecord<'_>) -> AuditRecord {
        let mut record = AuditRecord {
            seq: head.seq + 1,
            at: entry.at,
            case_id: entry.case_id,
            kind: entry.kind.name().into_owned(),
            actor: entry.actor.cloned(),
            playbook_version: entry.playbook_version,
            detail: entry.detail,
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// The hash it was stored with, else (stored without one, as records are) the one its
    /// content gives.
    pub(crate) fn compute_hash_if_missing(&self) -> String {
        match self.hash.is_empty() {
            true => self.compute_hash(),
            false => self.hash.clone(),
        }
    }

    pub fn compute_hash(&self) -> String {
        let hashed = Hashed {
            seq: self.seq,
            at: self.at,
            case_id: self.case_id,
            kind: &self.kind,
            actor: self.actor.as_ref(),
            playbook_version: self.playbook_version,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        };
        // serde_json's maps are ordered by key, so the same record always hashes the same way.
        let bytes = serde_json::to_vec(&hashed).expect("audit records serialize to JSON");
        hex::encode(Sha256::digest(&bytes))
    }

    pub fn head(&self) -> Head {
        Head { seq: self.seq, hash: self.hash.clone() }
    }
}

/// The result of checking a chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub records: u64,
    /// The last record's position and hash, to compare with a copy kept elsewhere.
    pub head: Option<Head>,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A run of consecutive records moved to an archive: the hash the first linked to and the last
/// one's hash, which the record after the run links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRange {
    pub first: u64,
    pub last: u64,
    pub prev_hash: String,
    pub last_hash: String,
}

impl ArchivedRange {
    /// The runs of consecutive records among `records` (in sequence order).
    pub fn runs_of<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Vec<ArchivedRange> {
        let mut runs: Vec<ArchivedRange> = Vec::new();
        for record in records {
            match runs.last_mut() {
                Some(run) if run.last + 1 == record.seq => {
                    run.last = record.seq;
                    run.last_hash = record.hash.clone();
                }
                _ => runs.push(ArchivedRange {
                    first: record.seq,
                    last: record.seq,
                    prev_hash: record.prev_hash.clone(),
                    last_hash: record.hash.clone(),
                }),
            }
        }
        runs
    }

    /// Every run the chain's anchors say was archived.
    pub fn anchored<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Vec<ArchivedRange> {
        anchors(records)
            .filter_map(|record| serde_json::from_value::<Vec<ArchivedRange>>(record.detail["ranges"].clone()).ok())
            .flatten()
            .collect()
    }
}

/// The records that anchor an archive (`retention.archived`): what was moved out of the store,
/// so the chain stays verifiable across the cut.
fn anchors<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> impl Iterator<Item = &'a AuditRecord> {
    let kind = AuditKind::RetentionArchived.name();
    records.into_iter().filter(move |record| record.kind == kind)
}

/// What is wrong between the anchors among `records` and the archive `files` found
/// (`(name, SHA-256)`): a file an anchor names missing or with another digest, or a file no
/// anchor names.
pub fn anchored_file_problems<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    files: &[(String, String)],
) -> Vec<String> {
    let anchored: Vec<(&str, &str)> = anchors(records)
        .filter_map(|record| Some((record.detail["file"].as_str()?, record.detail["sha256"].as_str()?)))
        .collect();
    let mut problems = Vec::new();
    for (file, sha256) in &anchored {
        match files.iter().find(|(name, _)| name == file) {
            None => problems.push(format!("archive {file} is missing")),
            Some((_, found)) if found != sha256 => {
                problems.push(format!("archive {file} was altered: its SHA-256 is not the one its anchor names"))
            }
            Some(_) => {}
        }
    }
    for (name, _) in files {
        if !anchored.iter().any(|(file, _)| file == name) {
            problems.push(format!("archive {name} is named by no anchor in the store"));
        }
    }
    problems
}

/// Checks that records form one unbroken chain from the genesis hash.
pub fn verify_chain<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> AuditReport {
    verify_chain_across(records, &[])
}

/// Checks the chain as [`verify_chain`] does, where a gap is allowed only when anchored archive
/// runs cover it exactly and link on both sides.
pub fn verify_chain_across<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    archived: &[ArchivedRange],
) -> AuditReport {
    let runs: std::collections::HashMap<u64, &ArchivedRange> = archived.iter().map(|run| (run.first, run)).collect();
    let mut report = AuditReport::default();
    let mut previous = Head::genesis();
    for record in records {
        report.records += 1;
        // Step over archived runs that start right after the previous record and link to it.
        while previous.seq + 1 < record.seq {
            match runs.get(&(previous.seq + 1)) {
                Some(run) if run.last < record.seq && run.prev_hash == previous.hash => {
                    previous = Head { seq: run.last, hash: run.last_hash.clone() };
                }
                _ => break,
            }
        }
        if record.seq != previous.seq + 1 {
            report.problems.push(format!(
                "record #{} follows #{}: records were removed, inserted or reordered",
                record.seq, previous.seq
            ));
        }
        if record.prev_hash != previous.hash {
            report.problems.push(format!(
                "record #{} does not link to the record before it: one of the two was altered",
                record.seq
            ));
        }
        // A record read from the store without its hash (`decode_block_unhashed`) is linked by the
        // hash its content gives, computed here once; one that carries a hash must match it.
        let computed = record.compute_hash();
        if record.hash.is_empty() {
            previous = Head { seq: record.seq, hash: computed };
            continue;
        }
        if computed != record.hash {
            report.problems.push(format!("record #{} was altered: its content does not match its hash", record.seq));
        }
        previous = record.head();
    }
    report.head = (report.records > 0).then_some(previous);
    report
}
