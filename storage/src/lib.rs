//! Vouch's durable store, on sled 0.34: bytes, keys and durability, and no triage rule.
//!
//! The boundary a second backend implements is small: [`Store`] opens, reopens after a failure
//! and closes the store ([`store`]); [`Store::write`] runs one [`Transaction`] under the writer
//! lock and returns it as a [`Pending`] write that becomes durable with the next group flush
//! ([`transaction`], [`group_commit`]); reads ([`reads`]) and the work queues and markers the bot
//! carries out ([`queues`]) are plain methods. The service decides what changes (with the pure
//! functions of `vouch_playbook`) and hands the result to one transaction; nothing here calls
//! back into the engine.
//!
//! One sled tree holds everything, under key prefixes (see `keys`), so that every logical change
//! (a case, its indexes, its audit record, its effects and outbox entries) is one atomic batch.
//!
//! The records live in sled (embedded, the default) or in PostgreSQL (`postgres`: one table of the
//! same keys and values, for replicas that share one database); `engine` is the one interface
//! reads and transactions use.
//!
//! Architecture invariant: this crate is the only code that knows sled, PostgreSQL or any byte
//! layout.

mod activity;
pub mod audit;
mod case_blocks;
mod codec;
mod copy;
mod dictionary;
mod engine;
mod group_commit;
mod hex_packing;
mod keys;
mod pipeline;
mod postgres;
mod queues;
mod reads;
mod replicas;
mod store;
mod trail;
mod transaction;
mod varint;

use serde::{Deserialize, Serialize};
use vouch_playbook::{CaseId, Effect, Snowflake, Timestamp};

pub use audit::{ArchivedRange, AuditRecord, AuditReport, NewRecord};
pub use codec::EncodedJson;
pub use copy::CopyReport;
pub use group_commit::FlushStats;
use group_commit::Ticket;
pub use postgres::{Campaign, LeaderLease, PostgresOptions, PostgresTls, WorkListener};
pub use replicas::Fence;
pub use store::{Backend, Store, StoreOptions};
pub use transaction::Transaction;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the store at {path} is in use by another process or could not be opened: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the store failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the store could not make the write durable: {0}")]
    Flush(String),
    #[error("a value could not be encoded: {0}")]
    Encode(String),
    #[error("a stored record is corrupt ({key}): {reason}")]
    Corrupt { key: String, reason: String },
    #[error("case {0} does not exist")]
    NoSuchCase(CaseId),
    #[error("the store is shutting down")]
    ShuttingDown,
    /// What a change was based on moved meanwhile (a case archived while it took an alert).
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed and is not reopened yet")]
    Unavailable,
    /// A change only the leader makes, asked of a standby.
    #[error("this replica does not lead: another one acts on the outside world")]
    NotLeader,
    /// The leader's epoch moved on while this replica thought it led (it was paused, say).
    #[error("this replica led epoch {epoch}, but epoch {current} has begun: it no longer leads")]
    Fenced { epoch: u64, current: u64 },
    /// PostgreSQL refused, failed or could not be reached.
    #[error("the database failed: {0}")]
    Database(String),
}

impl StorageError {
    /// Whether the error came from the disk (full, failing, gone) rather than from the data.
    fn is_io_failure(&self) -> bool {
        matches!(self, StorageError::Sled(sled::Error::Io(_)) | StorageError::Flush(_) | StorageError::Database(_))
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Something the SOC channel must be told that belongs to no case (a directory sync refused),
/// queued durably with the change that raised it and posted by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub seq: u64,
    pub text: String,
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
    pub channel_id: Snowflake,
    pub message_id: Snowflake,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<Snowflake>,
}

/// A chat effect that was never carried out because no chat service is configured, kept with its
/// case so that nobody mistakes silence for a ping that went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndeliveredEffect {
    pub effect: Effect,
    pub at: Timestamp,
    pub reason: String,
}

/// A case whose card should be drawn again. `version` grows with every change that asks for it,
/// so clearing the wish after a redraw cannot erase a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrawWanted {
    pub case_id: CaseId,
    pub version: u64,
    /// Asked for by a decision (a click, a timer), not only by repeated alerts: such a redraw is
    /// not held back to spare a storming card's edits.
    pub urgent: bool,
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

    /// Lets the write become durable with whatever flush comes next, without waiting for it: for
    /// writes whose loss in a crash only repeats work (dropping an effect already carried out).
    pub fn without_waiting(self) -> T {
        self.value
    }
}

#[cfg(test)]
mod tests;
