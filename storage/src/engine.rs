//! The two engines the store keeps its records in, behind the one interface its reads and
//! transactions use: ordered keys and values, read by key, by prefix and by range in either
//! direction. sled is embedded; PostgreSQL holds the same records in one table, so every key
//! layout, index and invariant of the store is the same on both.

use std::sync::Arc;

use sled::IVec;

use crate::group_commit::GroupCommit;
use crate::postgres::PgEngine;
use crate::{Result, StorageError};

#[derive(Clone)]
pub(crate) enum Engine {
    Sled { tree: sled::Db, commits: Arc<GroupCommit> },
    Postgres(PgEngine),
}

/// One write of a change: a key and its new value (`None` removes the key).
pub(crate) type Write = (Vec<u8>, Option<IVec>);

/// A change's writes in key order: each key with its new value, or `None` to remove it.
pub(crate) type Writes = Vec<Write>;

/// Key-value pairs in key order (or reverse key order), read lazily.
pub(crate) type Scan = Box<dyn Iterator<Item = Result<(IVec, IVec)>> + Send>;

/// A key greater than every key the store writes (all start with an ASCII letter).
const BEYOND_EVERY_KEY: [u8; 1] = [0xff];

/// The first key after every key starting with `prefix`, if there is one.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    BEYOND_EVERY_KEY.to_vec()
}

impl Engine {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>> {
        match self {
            Engine::Sled { tree, .. } => Ok(sled::Tree::get(tree, key)?),
            Engine::Postgres(postgres) => postgres.get(key.as_ref()),
        }
    }

    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Scan {
        let prefix = prefix.as_ref();
        match self {
            Engine::Sled { tree, .. } => Box::new(tree.scan_prefix(prefix).map(|entry| Ok(entry?))),
            Engine::Postgres(postgres) => postgres.scan(prefix.to_vec(), prefix_end(prefix), false),
        }
    }

    /// The keys from `start` (included) to `end` (excluded), in order.
    pub(crate) fn range(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        match self {
            Engine::Sled { tree, .. } => Box::new(tree.range(start..end).map(|entry| Ok(entry?))),
            Engine::Postgres(postgres) => postgres.scan(start, end, false),
        }
    }

    /// The keys from `start` (included) to `end` (excluded), last first.
    pub(crate) fn range_rev(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        match self {
            Engine::Sled { tree, .. } => Box::new(tree.range(start..end).rev().map(|entry| Ok(entry?))),
            Engine::Postgres(postgres) => postgres.scan(start, end, true),
        }
    }

    pub(crate) fn size_on_disk(&self) -> Result<u64> {
        match self {
            Engine::Sled { tree, .. } => Ok(tree.size_on_disk()?),
            Engine::Postgres(postgres) => postgres.size_on_disk(),
        }
    }
}

/// A change's writes as one sled batch (`None` removes the key).
pub(crate) fn sled_batch<K: Into<IVec>>(writes: impl IntoIterator<Item = (K, Option<IVec>)>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    batch
}

/// What a transaction reads through: the engine as the writer lock holds it.
pub(crate) trait TransactionSource {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>>;
    /// Every key starting with `prefix`, in order.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<IVec>>;
    /// The last key from `low` to `high`, both included.
    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>>;
}

impl TransactionSource for sled::Db {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        Ok(sled::Tree::get(self, key)?)
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<IVec>> {
        self.scan_prefix(prefix).keys().map(|key| key.map_err(StorageError::from)).collect()
    }

    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>> {
        Ok(self.range(low..=high).next_back().transpose()?.map(|(key, _)| key))
    }
}
