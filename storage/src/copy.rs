//! Copying a whole store into another one (sled into PostgreSQL, or back): every record as it
//! is, so cases, the audit chain, queues, the outbox and markers arrive exactly as they were.

use crate::engine::Engine;
use crate::{keys, Result, StorageError, Store};

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub records: u64,
    pub bytes: u64,
}

impl CopyReport {
    fn count(&mut self, key: &[u8], value: &[u8]) {
        self.records += 1;
        self.bytes += (key.len() + value.len()) as u64;
    }
}

/// Records a target may already hold: what opening it wrote.
const WRITTEN_ON_OPEN: [&[u8]; 3] = [keys::META_SCHEMA, keys::META_CASE_INDEX, keys::META_HISTORY_LAYOUT];

/// How many records go to the database per statement.
const RECORDS_PER_PART: usize = 2_000;

impl Store {
    /// Copies every record of this store into `target` in one change (on PostgreSQL, one
    /// transaction: a copy cut short leaves nothing). `Conflict` when `target` holds anything
    /// but what opening it wrote: a copy never merges into a store in use.
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        self.on_current(|source| {
            target.on_current(|destination| {
                let _writer = destination.lock_writer();
                let mut report = CopyReport { records: 0, bytes: 0 };
                let records = source.engine.scan_prefix([]);
                match &destination.engine {
                    Engine::Sled { tree, .. } => {
                        refuse_unless_empty(destination.engine.scan_prefix([]))?;
                        let mut batch = sled::Batch::default();
                        for record in records {
                            let (key, value) = record?;
                            report.count(&key, &value);
                            batch.insert(key, value);
                        }
                        tree.apply_batch(batch)?;
                        tree.flush()?;
                    }
                    Engine::Postgres(postgres) => {
                        let session = postgres.begin()?;
                        refuse_unless_empty(
                            session.first_keys(8)?.into_iter().map(|key| Ok((key, sled::IVec::default()))),
                        )?;
                        let mut part = Vec::with_capacity(RECORDS_PER_PART);
                        for record in records {
                            let (key, value) = record?;
                            report.count(&key, &value);
                            part.push((key.to_vec(), Some(value)));
                            if part.len() == RECORDS_PER_PART {
                                session.write_part(std::mem::take(&mut part))?;
                            }
                        }
                        session.commit(part)?;
                    }
                }
                Ok(report)
            })
        })
    }
}

fn refuse_unless_empty(keys: impl Iterator<Item = Result<(sled::IVec, sled::IVec)>>) -> Result<()> {
    let mut held = Vec::new();
    for entry in keys {
        let (key, _) = entry?;
        if !WRITTEN_ON_OPEN.contains(&key.as_ref()) {
            held.push(String::from_utf8_lossy(&key).into_owned());
        }
        if held.len() == 3 {
            break;
        }
    }
    match held.is_empty() {
        true => Ok(()),
        false => Err(StorageError::Conflict(format!(
            "the target store is not empty (it holds {}, ...): a copy goes only into a new store",
            held.join(", ")
        ))),
    }
}
