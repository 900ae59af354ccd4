//! A case's audit trail: which audit records are the case's, kept as runs of sequence numbers
//! rather than one key per record.
//!
//! sled 0.34 splits a tree node once it holds more than 16 keys, and what it keeps in memory and
//! rewrites on disk grows with the number of nodes. A key per record put one more key, at a
//! random place in the tree, under every alert a storm or a long case repeats: the largest part
//! of a grouped alert's footprint. Now a case's newest sequences are one value (its open run,
//! rewritten as records join it, as the case's activity already is) and every [`RUN_LENGTH`]
//! of them are sealed into a key of their own that is never written again.
//!
//! Keys (`keys::case_trail_*`): `x/<case>` holds the open run; `x/<case><first sequence>` a
//! sealed run. Before runs, each record had `x/<case><sequence>` with an empty value: read as
//! a run of that one sequence, so stores written then need no migration.

use sled::IVec;

use crate::varint::{push_varint, read_varint, VarintError};
use crate::{Result, StorageError};

/// The first byte of a run: sequence numbers as LEB128 varints, the first whole and each next
/// one as its distance from the one before (records of one case are close together in a storm,
/// a few bytes apart when cases take turns).
const SEQUENCE_RUN: u8 = 6;

/// How many sequences an open run takes before it is sealed. Longer runs mean fewer keys, but
/// a longer open run rewritten with every record of its case.
pub(crate) const RUN_LENGTH: usize = 32;

/// A run's sequences laid out as stored.
pub(crate) fn encode_run(seqs: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + seqs.len() * 3);
    bytes.push(SEQUENCE_RUN);
    let mut previous = 0;
    for &seq in seqs {
        push_varint(&mut bytes, seq.wrapping_sub(previous));
        previous = seq;
    }
    bytes
}

/// The sequences of one trail entry in order: a run, or (the layout before runs) an empty value
/// under a key that names its one sequence.
pub(crate) fn decode_entry(key: &[u8], value: &[u8]) -> Result<Vec<u64>> {
    let corrupt = |reason: String| StorageError::Corrupt { key: "case trail".to_string(), reason };
    let Some((&layout, body)) = value.split_first() else {
        return Ok(vec![crate::keys::seq_of_case_trail_run(key)?]);
    };
    if layout != SEQUENCE_RUN {
        return Err(corrupt(format!("layout {layout} is not a run of sequences")));
    }
    let mut seqs = Vec::with_capacity(body.len() / 2);
    let (mut previous, mut rest) = (0_u64, body);
    while !rest.is_empty() {
        let distance = read_varint(&mut rest).map_err(|error| match error {
            VarintError::TooLong => corrupt("a sequence longer than 64 bits".to_string()),
            VarintError::Truncated => corrupt("a run that ends inside a sequence".to_string()),
        })?;
        previous = previous.wrapping_add(distance);
        seqs.push(previous);
    }
    Ok(seqs)
}

/// Where a case's trail entries are read from: sealed runs (and entries of the layout before
/// runs) in key order, then the open run, whose sequences are the newest.
pub(crate) fn seqs_in_order(
    sealed: impl Iterator<Item = Result<(IVec, IVec)>>,
    open: Option<IVec>,
) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in sealed {
        let (key, value) = entry?;
        seqs.extend(decode_entry(&key, &value)?);
    }
    if let Some(open) = open {
        seqs.extend(decode_entry(&[], &open)?);
    }
    Ok(seqs)
}
