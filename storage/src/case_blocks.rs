//! The listing indexes that only say which cases they hold (finished or not, and by field:
//! source, target, account, rule) keep case ids in blocks of 64: one key per block, its value a
//! bitmap of which of the block's ids the index holds.
//!
//! Why blocks: sled's cost is per key (each insert copies a leaf, splits one every few inserts,
//! and leaves a page for the epoch collector), about 10 µs and 3% of distinct ingest per key on
//! the machine `BENCHMARKS.md` measures. Case ids are handed out in order, so the new cases of one
//! group of alerts share their blocks: the unfinished index, and the keys of a source or an
//! account that a storm of new movements shares, are written once per group instead of once per
//! case. A block's bitmap is read, changed and written back within the writer's transaction.

use vouch_playbook::CaseId;

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
    pub(crate) fn read(key: &[u8], value: Option<&[u8]>, what: &str) -> Result<IdBlock> {
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
            let block = IdBlock::read(&key(block_of(case)), None, "test").expect("read").with(case, true);
            let stored = block.value().expect("holds one id");
            let again = IdBlock::read(&key(block_of(case)), Some(&stored), "test").expect("read");
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
        let mut block = IdBlock::read(&key(1), None, "test").expect("read");
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
    fn a_malformed_block_is_reported_not_misread() {
        assert!(IdBlock::read(b"p/", None, "test").is_err());
        assert!(IdBlock::read(&key(1), Some(b"short"), "test").is_err());
        // Eight bytes without the block's first byte: a value of the layout before blocks.
        assert!(IdBlock::read(&key(1), Some(&[0; 8]), "test").is_err());
        assert!(IdBlock::read(&key(1), Some(&[CASE_BLOCK, 0, 0]), "test").is_err());
    }
}
