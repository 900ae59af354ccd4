//! The PostgreSQL engine: the store's records in one table (`vouch_kv`, key and value as
//! `bytea`, compared byte by byte as sled compares them), so every key layout, index and rule of
//! the store holds unchanged.
//!
//! How the store's rules map onto PostgreSQL:
//! - one change is one transaction, its writes applied with one upsert and one delete;
//! - the writer lock that orders case numbers and the audit chain is a transaction-level advisory
//!   lock taken first in every change, so replicas writing the same database take turns and each
//!   change reads what the one before it committed (the audit head is read in the transaction,
//!   never cached across changes);
//! - "durable before acknowledged" is a committed transaction (`synchronous_commit` on; with a
//!   synchronous standby, durable across a failover).

mod leadership;
mod pool;
mod schema;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sled::IVec;

use crate::engine::{Scan, TransactionSource, Writes};
use crate::{Result, StorageError};
use pool::{Lent, Pool, Target};

/// Where the PostgreSQL store is and how to reach it.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A `postgres://` URL or `key=value` connection string (it may hold a password).
    pub url: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    pub tls: PostgresTls,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        formatter
            .debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresTls {
    /// Plain TCP: for a database on the same host or a private network.
    Disabled,
    /// TLS required, the server's certificate checked against this CA (PEM).
    Required { ca_file: PathBuf },
}

/// The advisory lock every change takes first: the store's writer lock across replicas.
const WRITER_LOCK: i64 = 0x766f_7563_6800;
/// The session advisory lock the leader holds.
const LEADER_LOCK: i64 = 0x766f_7563_6802;
/// The key prefixes of the work the leader carries out: queued effects, outbox entries, cards to
/// redraw, notices for the SOC channel.
const WORK_PREFIXES: [&[u8]; 4] =
    [crate::keys::EFFECT_PREFIX, crate::keys::OUTBOX_PREFIX, crate::keys::REDRAW_PREFIX, crate::keys::NOTICE_PREFIX];

/// Rows a scan reads per round trip.
const SCAN_PAGE_ROWS: i64 = 256;

pub use leadership::{Campaign, LeaderLease};

#[derive(Clone)]
pub(crate) struct PgEngine {
    pool: Arc<Pool>,
}

impl PgEngine {
    /// Connects, brings the schema up to date and checks the database answers.
    pub(crate) fn open(options: &PostgresOptions) -> Result<PgEngine> {
        let mut config: postgres::Config = options
            .url
            .parse()
            .map_err(|error| StorageError::Database(format!("the connection URL cannot be read: {error}")))?;
        config.connect_timeout(Duration::from_secs(5));
        // A dead peer (a database host gone, a cut network) is noticed in seconds, not hours.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        config.application_name("vouch");
        let tls = match &options.tls {
            PostgresTls::Disabled => None,
            PostgresTls::Required { ca_file } => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(tls_connector(ca_file)?)
            }
        };
        let pool = Pool::new(Target { config, tls }, options.pool_size);
        let applied = schema::migrate(&pool.unprepared())?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "applied the database's schema migrations");
        }
        Ok(PgEngine { pool })
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        let key = key.to_vec();
        self.pool.get()?.run(move |client, statements| read_value(client, statements, &key))
    }

    /// The pairs from `start` (included) to `end` (excluded), a page per round trip.
    pub(crate) fn scan(&self, start: Vec<u8>, end: Vec<u8>, reverse: bool) -> Scan {
        Box::new(PagedScan {
            pool: Arc::clone(&self.pool),
            start,
            end,
            reverse,
            buffered: VecDeque::new(),
            done: false,
        })
    }

    /// The leadership epoch as the database holds it now (0 before anyone led).
    pub(crate) fn leader_epoch(&self) -> Result<u64> {
        self.pool.get()?.run(|client, _| read_leader_epoch(client))
    }

    pub(crate) fn size_on_disk(&self) -> Result<u64> {
        self.pool.get()?.run(|client, _| {
            let bytes: i64 = client.query_one("SELECT pg_total_relation_size('vouch_kv')", &[])?.get(0);
            Ok(bytes.max(0) as u64)
        })
    }

    /// A connection listening for changes that leave work for the leader.
    pub(crate) fn listen_for_work(&self) -> Result<WorkListener> {
        let connection = self.pool.unprepared();
        connection.run(|client| client.batch_execute("LISTEN vouch_work"))?;
        Ok(WorkListener { connection })
    }

    /// Begins a change: a transaction holding the writer lock.
    pub(crate) fn begin(&self) -> Result<Session> {
        let connection = self.pool.get()?;
        let ((), serial) = connection.run_checked(None, |client, _| {
            client.batch_execute("BEGIN")?;
            client.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
            Ok(())
        })?;
        Ok(Session { connection, serial, open: true })
    }
}

fn read_value(
    client: &mut postgres::Client,
    statements: &pool::Statements,
    key: &[u8],
) -> std::result::Result<Option<IVec>, postgres::Error> {
    let row = client.query_opt(&statements.get, &[&key])?;
    Ok(row.map(|row| IVec::from(row.get::<_, Vec<u8>>(0))))
}

fn read_leader_epoch(client: &mut postgres::Client) -> std::result::Result<u64, postgres::Error> {
    let row = client.query_opt("SELECT epoch FROM vouch_leadership", &[])?;
    Ok(row.map(|row| row.get::<_, i64>(0).max(0) as u64).unwrap_or(0))
}

fn tls_connector(ca_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let unreadable = |reason: String| StorageError::Database(format!("the CA file {}: {reason}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|error| unreadable(error.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let certificate: rustls::pki_types::CertificateDer<'static> =
            certificate.map_err(|error| unreadable(error.to_string()))?;
        roots.add(certificate).map_err(|error| unreadable(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unreadable("it holds no certificate".to_string()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| unreadable(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Hears of changes, made by any replica, that leave work for the leader.
pub struct WorkListener {
    connection: pool::UnpreparedConnection,
}

impl WorkListener {
    /// Waits up to `timeout` for such a change; whether one came (several count as one).
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        use postgres::fallible_iterator::FallibleIterator;
        self.connection.run(move |client| {
            let mut notifications = client.notifications();
            let heard = notifications.timeout_iter(timeout).next()?.is_some();
            // Take whatever else arrived meanwhile: one wake-up covers them.
            while notifications.iter().next()?.is_some() {}
            Ok(heard)
        })
    }
}

/// A scan that reads a page of rows per round trip, on a connection lent for that page only.
struct PagedScan {
    pool: Arc<Pool>,
    /// Forward: the next page starts here (included). Reverse: the range's start.
    start: Vec<u8>,
    /// Forward: the range's end (excluded). Reverse: the next page ends here (excluded).
    end: Vec<u8>,
    reverse: bool,
    buffered: VecDeque<(IVec, IVec)>,
    done: bool,
}

impl PagedScan {
    fn fetch(&mut self) -> Result<()> {
        let (start, end, reverse) = (self.start.clone(), self.end.clone(), self.reverse);
        let rows = self.pool.get()?.run(move |client, _| {
            let sql = match reverse {
                false => "SELECT k, v FROM vouch_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
                true => "SELECT k, v FROM vouch_kv WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3",
            };
            let rows = client.query(sql, &[&start, &end, &SCAN_PAGE_ROWS])?;
            Ok(rows.into_iter().map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1))).collect::<Vec<_>>())
        })?;
        if (rows.len() as i64) < SCAN_PAGE_ROWS {
            self.done = true;
        }
        if let Some((last, _)) = rows.last() {
            match self.reverse {
                false => {
                    // The smallest key after `last`.
                    self.start = last.clone();
                    self.start.push(0);
                }
                true => self.end = last.clone(),
            }
        }
        self.buffered.extend(rows.into_iter().map(|(key, value)| (IVec::from(key), IVec::from(value))));
        Ok(())
    }
}

impl Iterator for PagedScan {
    type Item = Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            if let Err(error) = self.fetch() {
                self.done = true;
                return Some(Err(error));
            }
        }
        self.buffered.pop_front().map(Ok)
    }
}

/// One change in progress: a transaction on a lent connection, holding the writer lock. Dropped
/// without [`Session::commit`], it is rolled back.
pub(crate) struct Session {
    connection: Lent,
    /// The connection the transaction began on: if it broke, nothing more may run.
    serial: u64,
    open: bool,
}

impl Session {
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut postgres::Client, &pool::Statements) -> std::result::Result<T, postgres::Error>
            + Send
            + 'static,
    ) -> Result<T> {
        self.connection.run_checked(Some(self.serial), work).map(|(value, _)| value)
    }

    /// The leadership epoch as the database holds it now (0 before anyone led).
    pub(crate) fn leader_epoch(&self) -> Result<u64> {
        self.run(|client, _| read_leader_epoch(client))
    }

    /// The first keys of the store, in order (to tell whether it is empty).
    pub(crate) fn first_keys(&self, limit: i64) -> Result<Vec<IVec>> {
        self.run(move |client, _| {
            let rows = client.query("SELECT k FROM vouch_kv ORDER BY k LIMIT $1", &[&limit])?;
            Ok(rows.into_iter().map(|row| IVec::from(row.get::<_, Vec<u8>>(0))).collect())
        })
    }

    /// Applies writes inside the transaction without ending it (a large change sent in parts).
    pub(crate) fn write_part(&self, writes: Writes) -> Result<()> {
        let part = WriteStatements::of(writes);
        self.run(move |client, statements| part.apply(client, statements))
    }

    /// Applies the change's writes (`None` removes the key) and commits. Durable on return.
    pub(crate) fn commit(mut self, writes: Writes) -> Result<()> {
        // A change that leaves work for the leader (effects, outbox entries, redraws, notices)
        // wakes it, wherever the change was made: the notification goes out with the commit.
        let leaves_work = writes
            .iter()
            .any(|(key, value)| value.is_some() && WORK_PREFIXES.iter().any(|prefix| key.starts_with(prefix)));
        let change = WriteStatements::of(writes);
        self.open = false;
        self.run(move |client, statements| {
            let end = if leaves_work { "NOTIFY vouch_work; COMMIT" } else { "COMMIT" };
            let result = change.apply(client, statements).and_then(|()| client.batch_execute(end));
            if result.is_err() && !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK");
            }
            result
        })
    }
}

/// A change's writes as the two statements take them: the keys and values to upsert, as
/// parallel arrays, and the keys to remove.
struct WriteStatements {
    upsert_keys: Vec<Vec<u8>>,
    upsert_values: Vec<Vec<u8>>,
    removed: Vec<Vec<u8>>,
}

impl WriteStatements {
    fn of(writes: Writes) -> WriteStatements {
        let mut statement = WriteStatements { upsert_keys: Vec::new(), upsert_values: Vec::new(), removed: Vec::new() };
        for (key, value) in writes {
            match value {
                Some(value) => {
                    statement.upsert_keys.push(key);
                    statement.upsert_values.push(value.to_vec());
                }
                None => statement.removed.push(key),
            }
        }
        statement
    }

    fn apply(
        &self,
        client: &mut postgres::Client,
        statements: &pool::Statements,
    ) -> std::result::Result<(), postgres::Error> {
        if !self.upsert_keys.is_empty() {
            client.execute(&statements.upsert, &[&self.upsert_keys, &self.upsert_values])?;
        }
        if !self.removed.is_empty() {
            client.execute(&statements.delete, &[&self.removed])?;
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.open {
            let _ = self.run(|client, _| client.batch_execute("ROLLBACK"));
        }
    }
}

impl TransactionSource for Session {
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        let key = key.to_vec();
        self.run(move |client, statements| read_value(client, statements, &key))
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<IVec>> {
        let (start, end) = (prefix.to_vec(), crate::engine::prefix_end(prefix));
        self.run(move |client, statements| {
            let rows = client.query(&statements.keys_between, &[&start, &end])?;
            Ok(rows.into_iter().map(|row| IVec::from(row.get::<_, Vec<u8>>(0))).collect())
        })
    }

    fn last_key_between(&self, low: &[u8], high: &[u8]) -> Result<Option<IVec>> {
        let (low, high) = (low.to_vec(), high.to_vec());
        self.run(move |client, statements| {
            let row = client.query_opt(&statements.last_key_between, &[&low, &high])?;
            Ok(row.map(|row| IVec::from(row.get::<_, Vec<u8>>(0))))
        })
    }
}
