//! The indexes that only say which cases they hold keep case ids in blocks of 64: one key per
//! block. The listing indexes (finished or not, and by field: source, target, account, rule) keep
//! a bitmap of which of the block's ids they hold; the deadline index keeps, for each second, the
//! block's cases that fall due in it and at which millisecond.
//!
//! Why blocks: sled's cost is per key (each insert copies a leaf, splits one every few inserts,
//! and leaves a page for the epoch collector), about 10 µs and 3% of distinct ingest per key on
//! the machine `BENCHMARKS.md` measures. Case ids are handed out in order, so the new cases of one
//! group of alerts share their blocks: the unfinished index, and the keys of a source or an
//! account that a storm of new movements shares, are written once per group instead of once per
//! case. A block's bitmap is read, changed and written back within the writer's transaction.

use vouch_playbook::{CaseId, Timestamp};

use crate::{Result, StorageError};

const IDS_PER_BLOCK: u64 = 64;

/// The first byte of a block's value, then its bitmap (u64, big-endian; bit `n` is the block's
/// `n`th id). Like the other binary values (`activity`, `trail`), it never starts as the codec's
/// JSON or a dictionary-compressed value does, so neither compression nor expansion touches it.
const CASE_BLOCK: u8 = 8;

/// The block a case id falls in (the last eight bytes of its index key).
pub(crate) fn block_of(id: CaseId) -> u64 {
    id.number() / IDS_PER_BLOCK
}

fn bit_of(id: CaseId) -> u64 {
    1 << (id.number() % IDS_PER_BLOCK)
}

/// The ids one block's key and bitmap hold, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdBlock {
    block: u64,
    bits: u64,
}

impl IdBlock {
    /// The block `key` ends with, holding what `value` says (an absent value: none of its ids).
    pub(crate) fn read(key: &[u8], value: Option<&[u8]>) -> Result<IdBlock> {
        let what = "case listing index";
        let block = match key.len().checked_sub(8) {
            Some(start) => crate::keys::decode_u64(&key[start..], what)?,
            None => {
                return Err(StorageError::Corrupt {
                    key: what.to_string(),
                    reason: format!("key of {} bytes", key.len()),
                })
            }
        };
        let bits = match value {
            Some([CASE_BLOCK, bits @ ..]) => crate::keys::decode_u64(bits, what)?,
            Some(value) => {
                return Err(StorageError::Corrupt {
                    key: what.to_string(),
                    reason: format!("a block of {} bytes that does not begin as one", value.len()),
                })
            }
            None => 0,
        };
        Ok(IdBlock { block, bits })
    }

    pub(crate) fn contains(&self, id: CaseId) -> bool {
        block_of(id) == self.block && self.bits & bit_of(id) != 0
    }

    /// `id` added (`true`) or taken out; the block must be `id`'s.
    pub(crate) fn with(mut self, id: CaseId, held: bool) -> IdBlock {
        debug_assert_eq!(block_of(id), self.block, "a case id changed in another block's bitmap");
        match held {
            true => self.bits |= bit_of(id),
            false => self.bits &= !bit_of(id),
        }
        self
    }

    /// The value to store, or `None` when the block holds no id (its key is removed).
    pub(crate) fn value(&self) -> Option<[u8; 9]> {
        let [a, b, c, d, e, f, g, h] = self.bits.to_be_bytes();
        (self.bits != 0).then_some([CASE_BLOCK, a, b, c, d, e, f, g, h])
    }

    pub(crate) fn len(&self) -> u64 {
        u64::from(self.bits.count_ones())
    }

    /// The ids held, lowest first (`.rev()`: newest first).
    pub(crate) fn ids(&self) -> impl DoubleEndedIterator<Item = CaseId> + '_ {
        (0..IDS_PER_BLOCK)
            .filter(|bit| self.bits & (1 << bit) != 0)
            .filter_map(|bit| CaseId::new(self.block * IDS_PER_BLOCK + bit))
    }
}

/// The first byte of a deadline bucket's value, then one entry per case: the millisecond of the
/// second it falls due (u16, big-endian) and its place in the block (u8), in that order.
const DEADLINE_BUCKET: u8 = 9;

/// The cases of one block of ids that fall due within one second, keyed by that second and the
/// block (so the new cases of one group, asked within a few milliseconds, share a key, and no
/// bucket holds more than 64 cases however many fall due at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadlineBucket {
    second: u64,
    block: u64,
    /// Millisecond within the second and place in the block, sorted.
    entries: Vec<(u16, u8)>,
}

impl DeadlineBucket {
    /// The second and block of a deadline's key (a deadline before 1970 counts as at 0).
    pub(crate) fn key_parts(at: Timestamp, id: CaseId) -> (u64, u64) {
        (second_of(at), block_of(id))
    }

    /// The bucket `key` (ending with its second and block) names, holding what `value` says.
    pub(crate) fn read(key: &[u8], value: Option<&[u8]>) -> Result<DeadlineBucket> {
        let what = "deadline index";
        let corrupt = |reason: String| StorageError::Corrupt { key: what.to_string(), reason };
        let Some(start) = key.len().checked_sub(16) else {
            return Err(corrupt(format!("key of {} bytes", key.len())));
        };
        let second = crate::keys::decode_u64(&key[start..start + 8], what)?;
        let block = crate::keys::decode_u64(&key[start + 8..], what)?;
        let entries = match value {
            None => Vec::new(),
            Some([DEADLINE_BUCKET, entries @ ..]) if entries.len() % 3 == 0 => {
                entries.chunks_exact(3).map(|entry| (u16::from_be_bytes([entry[0], entry[1]]), entry[2])).collect()
            }
            Some(value) => return Err(corrupt(format!("a bucket of {} bytes that does not read as one", value.len()))),
        };
        if entries.iter().any(|(millisecond, place)| *millisecond >= 1000 || u64::from(*place) >= IDS_PER_BLOCK) {
            return Err(corrupt("an entry outside its second or its block".to_string()));
        }
        Ok(DeadlineBucket { second, block, entries })
    }

    /// Whether the bucket holds `id` falling due `at` (both must be the bucket's).
    pub(crate) fn holds(&self, at: Timestamp, id: CaseId) -> bool {
        self.entries.binary_search(&self.entry(at, id)).is_ok()
    }

    /// `id`, falling due `at`, added (`true`) or taken out; both must be the bucket's.
    pub(crate) fn with(mut self, at: Timestamp, id: CaseId, held: bool) -> DeadlineBucket {
        let entry = self.entry(at, id);
        match (self.entries.binary_search(&entry), held) {
            (Err(place), true) => self.entries.insert(place, entry),
            (Ok(place), false) => {
                self.entries.remove(place);
            }
            _ => {}
        }
        self
    }

    /// The entry of `id` falling due `at`: its millisecond and its place in the block.
    fn entry(&self, at: Timestamp, id: CaseId) -> (u16, u8) {
        debug_assert_eq!(DeadlineBucket::key_parts(at, id), (self.second, self.block), "a deadline in another bucket");
        ((millis(at) % 1000) as u16, (id.number() % IDS_PER_BLOCK) as u8)
    }

    /// The value to store, or `None` when no case is left (its key is removed).
    pub(crate) fn value(&self) -> Option<Vec<u8>> {
        if self.entries.is_empty() {
            return None;
        }
        let mut value = Vec::with_capacity(1 + 3 * self.entries.len());
        value.push(DEADLINE_BUCKET);
        for (millisecond, place) in &self.entries {
            value.extend_from_slice(&millisecond.to_be_bytes());
            value.push(*place);
        }
        Some(value)
    }

    /// The cases and when each falls due.
    pub(crate) fn deadlines(&self) -> impl Iterator<Item = (Timestamp, CaseId)> + '_ {
        self.entries.iter().filter_map(|(millisecond, place)| {
            let at = Timestamp::from_unix_millis((self.second * 1000 + u64::from(*millisecond)) as i64);
            CaseId::new(self.block * IDS_PER_BLOCK + u64::from(*place)).map(|id| (at, id))
        })
    }
}

fn millis(at: Timestamp) -> u64 {
    at.unix_millis().max(0) as u64
}

/// The second a deadline bucket's key names for a deadline `at`.
pub(crate) fn second_of(at: Timestamp) -> u64 {
    millis(at) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(number: u64) -> CaseId {
        CaseId::new(number).expect("nonzero")
    }

    fn key(block: u64) -> Vec<u8> {
        let mut key = b"p/\x00".to_vec();
        key.extend_from_slice(&block.to_be_bytes());
        key
    }

    #[test]
    fn ids_of_one_block_share_its_key_and_come_back_in_order() {
        let ids = [1_u64, 2, 63, 64, 65, 127, 128, 6_400_001];
        for number in ids {
            let case = id(number);
            let block = IdBlock::read(&key(block_of(case)), None).expect("read").with(case, true);
            let stored = block.value().expect("holds one id");
            let again = IdBlock::read(&key(block_of(case)), Some(&stored)).expect("read");
            assert!(again.contains(case), "{number}");
            assert_eq!(again.ids().collect::<Vec<_>>(), vec![case], "{number}");
            assert!(!again.contains(id(number + 1)), "{number}");
        }
        // 64..=127 share a block; 63 and 128 do not.
        assert_eq!(block_of(id(64)), block_of(id(127)));
        assert_ne!(block_of(id(63)), block_of(id(64)));
        assert_ne!(block_of(id(127)), block_of(id(128)));
    }

    #[test]
    fn a_block_lists_its_ids_both_ways_and_empties_to_no_value() {
        let numbers = [64_u64, 70, 100, 127];
        let mut block = IdBlock::read(&key(1), None).expect("read");
        for number in numbers {
            block = block.with(id(number), true);
        }
        assert_eq!(block.len(), 4);
        assert_eq!(block.ids().map(CaseId::number).collect::<Vec<_>>(), numbers);
        assert_eq!(block.ids().rev().map(CaseId::number).collect::<Vec<_>>(), [127, 100, 70, 64]);
        for number in numbers {
            block = block.with(id(number), false);
        }
        assert_eq!(block.value(), None);
    }

    #[test]
    fn deadlines_of_one_block_and_second_share_a_bucket_and_come_back_exact() {
        let at = Timestamp::from_unix_millis(1_700_000_000_123);
        let key = crate::keys::deadline;
        // Three cases of block 1 due within the same second share its key; a fourth, due a
        // second later, and a fifth, of the next block, do not.
        let same = [(at, id(65)), (at.plus_millis(800), id(70)), (at, id(127))];
        assert!(same.iter().all(|(due, case)| key(*due, *case) == key(at, id(65))));
        assert_ne!(key(at.plus_millis(1000), id(65)), key(at, id(65)));
        assert_ne!(key(at, id(128)), key(at, id(65)));
        let mut bucket = DeadlineBucket::read(&key(at, id(65)), None).expect("read");
        for (due, case) in same {
            bucket = bucket.with(due, case, true);
        }
        assert!(same.iter().all(|(due, case)| bucket.holds(*due, *case)));
        assert!(!bucket.holds(at.plus_millis(1), id(65)));
        let stored = bucket.value().expect("holds three");
        let again = DeadlineBucket::read(&key(at, id(65)), Some(&stored)).expect("read");
        let mut deadlines: Vec<_> = again.deadlines().collect();
        deadlines.sort();
        assert_eq!(deadlines, [(at, id(65)), (at, id(127)), (at.plus_millis(800), id(70))]);
        let emptied = same.iter().fold(again, |bucket, (due, case)| bucket.with(*due, *case, false));
        assert_eq!(emptied.value(), None);
        // A bucket whose entries fall outside its second or block is damage, not a deadline.
        assert!(DeadlineBucket::read(&key(at, id(65)), Some(&[DEADLINE_BUCKET, 0x03, 0xe8, 0])).is_err());
        assert!(DeadlineBucket::read(&key(at, id(65)), Some(&[DEADLINE_BUCKET, 0, 1, 64])).is_err());
        assert!(DeadlineBucket::read(&key(at, id(65)), Some(&[DEADLINE_BUCKET, 0, 1])).is_err());
        assert!(DeadlineBucket::read(&key(at, id(65)), Some(&[])).is_err(), "an empty value is not a bucket");
    }

    #[test]
    fn a_malformed_block_is_reported_not_misread() {
        assert!(IdBlock::read(b"p/", None).is_err());
        assert!(IdBlock::read(&key(1), Some(b"short")).is_err());
        // Eight bytes without the block's first byte: a value of the layout before blocks.
        assert!(IdBlock::read(&key(1), Some(&[0; 8])).is_err());
        assert!(IdBlock::read(&key(1), Some(&[CASE_BLOCK, 0, 0])).is_err());
    }
}
