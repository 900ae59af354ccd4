//! Connections to PostgreSQL, each driven by a thread of its own.
//!
//! The store's interface is synchronous (the intake thread, blocking tasks and async handlers all
//! call it), and `postgres`' synchronous client runs a small tokio runtime inside each call: used
//! from a thread that already drives async tasks it would panic. So each connection lives on its
//! own thread and callers hand it work and wait for the answer on a channel, whatever thread they
//! are on. The protocol is `tokio-postgres`'; this is only who holds the connection.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use postgres::{Client, Statement};

use crate::{Result, StorageError};

/// The statements every connection prepares once, at connect.
pub(crate) struct Statements {
    pub(crate) get: Statement,
    pub(crate) upsert: Statement,
    pub(crate) delete: Statement,
    pub(crate) keys_between: Statement,
    pub(crate) last_key_between: Statement,
}

const GET: &str = "SELECT v FROM vouch_kv WHERE k = $1";
const UPSERT: &str = "INSERT INTO vouch_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                      ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
const DELETE: &str = "DELETE FROM vouch_kv WHERE k = ANY($1::bytea[])";
const KEYS_BETWEEN: &str = "SELECT k FROM vouch_kv WHERE k >= $1 AND k < $2 ORDER BY k";
const LAST_KEY_BETWEEN: &str = "SELECT k FROM vouch_kv WHERE k >= $1 AND k <= $2 ORDER BY k DESC LIMIT 1";

/// How to reach the database: the driver's configuration and its TLS connector.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: postgres::Config,
    pub(crate) tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    pub(crate) fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(postgres::NoTls),
        }
    }
}

/// A job gets the connection, its statements and the connection's serial number (which changes
/// with every reconnect), or why there is no connection.
type Job = Box<dyn FnOnce(std::result::Result<(&mut Client, Option<&Statements>, u64), &str>) + Send>;

/// One connection and the thread that drives it. The thread connects on first use and again
/// after the connection broke, so a database that restarts is reached again without anyone
/// rebuilding the pool.
///
/// Dropping it closes the channel, which ends the thread once its current job is done, and so
/// the connection; it is not waited for (a job stuck on a dead network must not hold anyone up).
pub(crate) struct Connection {
    jobs: mpsc::Sender<Job>,
}

impl Connection {
    fn start(target: Target, prepared: bool) -> Connection {
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("vouch-postgres".to_string())
            .spawn(move || {
                let mut connected: Option<(Client, Option<Statements>)> = None;
                let mut serial = 0_u64;
                for job in inbox {
                    if connected.as_ref().is_none_or(|(client, _)| client.is_closed()) {
                        connected = match connect(&target, prepared) {
                            Ok(connection) => {
                                serial += 1;
                                Some(connection)
                            }
                            Err(error) => {
                                job(Err(&describe(&error)));
                                continue;
                            }
                        };
                    }
                    if let Some((client, statements)) = connected.as_mut() {
                        job(Ok((client, statements.as_ref(), serial)));
                    }
                }
            })
            .expect("a thread for a database connection can be started");
        Connection { jobs }
    }

    /// Runs `work` on the connection and waits for its answer.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client, &Statements) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        self.run_checked(None, work).map(|(value, _)| value)
    }

    /// Runs `work` on the connection, and refuses to if it is no longer the connection numbered
    /// `serial` (it broke and was opened again): what a transaction began on is gone with it,
    /// and its later statements must not run outside it. Answers the connection's number.
    pub(crate) fn run_checked<T: Send + 'static>(
        &self,
        serial: Option<u64>,
        work: impl FnOnce(&mut Client, &Statements) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<(T, u64)> {
        self.run_raw(serial, move |client, statements| match statements {
            Some(statements) => work(client, statements),
            None => unreachable!("a pooled connection prepares its statements"),
        })
    }

    fn run_raw<T: Send + 'static>(
        &self,
        expected_serial: Option<u64>,
        work: impl FnOnce(&mut Client, Option<&Statements>) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<(T, u64)> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection| {
            let result = match connection {
                Ok((_, _, serial)) if expected_serial.is_some_and(|expected| expected != serial) => Err(
                    StorageError::Database("the database connection was lost in the middle of a change".to_string()),
                ),
                Ok((client, statements, serial)) => {
                    work(client, statements).map(|value| (value, serial)).map_err(database_error)
                }
                Err(reason) => Err(StorageError::Database(format!("cannot connect: {reason}"))),
            };
            let _ = answer.send(result);
        });
        self.jobs.send(job).map_err(|_| StorageError::ShuttingDown)?;
        answered.recv().map_err(|_| StorageError::Database("the connection's thread ended".to_string()))?
    }
}

fn connect(target: &Target, prepared: bool) -> std::result::Result<(Client, Option<Statements>), postgres::Error> {
    let mut client = target.connect()?;
    let statements = match prepared {
        true => Some(Statements {
            get: client.prepare(GET)?,
            upsert: client.prepare(UPSERT)?,
            delete: client.prepare(DELETE)?,
            keys_between: client.prepare(KEYS_BETWEEN)?,
            last_key_between: client.prepare(LAST_KEY_BETWEEN)?,
        }),
        false => None,
    };
    Ok((client, statements))
}

/// What the driver said, as the store's error: a failure of the database or of the way to it.
pub(crate) fn database_error(error: postgres::Error) -> StorageError {
    StorageError::Database(describe(&error))
}

/// The driver's error with its causes: its own message is general ("error performing TLS
/// handshake"), the causes say what went wrong ("invalid peer certificate: UnknownIssuer").
fn describe(error: &postgres::Error) -> String {
    if let Some(database) = error.as_db_error() {
        return format!("{}: {}", database.code().code(), database.message());
    }
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        message.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    message
}

/// A fixed number of connections, opened as they are first needed and lent one at a time.
pub(crate) struct Pool {
    target: Target,
    size: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Connections started, lent or idle.
    started: usize,
}

/// How long a caller waits for a connection before the store answers that it is unavailable.
const CHECKOUT_WAIT: Duration = Duration::from_secs(10);

impl Pool {
    pub(crate) fn new(target: Target, size: usize) -> Arc<Pool> {
        Arc::new(Pool { target, size: size.max(1), state: Mutex::default(), returned: Condvar::new() })
    }

    /// A connection of its own for work before the schema is in place (migrations).
    pub(crate) fn unprepared(&self) -> UnpreparedConnection {
        UnpreparedConnection(Connection::start(self.target.clone(), false))
    }

    /// Lends a connection until the returned guard is dropped.
    pub(crate) fn get(self: &Arc<Pool>) -> Result<Lent> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(connection) = state.idle.pop() {
                return Ok(Lent { pool: Arc::clone(self), connection: Some(connection) });
            }
            if state.started < self.size {
                state.started += 1;
                drop(state);
                let connection = Connection::start(self.target.clone(), true);
                return Ok(Lent { pool: Arc::clone(self), connection: Some(connection) });
            }
            let (next, waited) =
                self.returned.wait_timeout(state, CHECKOUT_WAIT).unwrap_or_else(|poisoned| poisoned.into_inner());
            state = next;
            if waited.timed_out() && state.idle.is_empty() {
                return Err(StorageError::Database(format!(
                    "all {} database connections stayed busy for {}s",
                    self.size,
                    CHECKOUT_WAIT.as_secs()
                )));
            }
        }
    }
}

/// A connection lent by the pool, given back when dropped.
pub(crate) struct Lent {
    pool: Arc<Pool>,
    connection: Option<Connection>,
}

impl std::ops::Deref for Lent {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("a lent connection is held until dropped")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut state = self.pool.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            state.idle.push(connection);
            self.pool.returned.notify_one();
        }
    }
}

/// A connection outside the pool, without the prepared statements (the tables may not exist yet).
pub(crate) struct UnpreparedConnection(Connection);

impl UnpreparedConnection {
    pub(crate) fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T> {
        self.0.run_raw(None, move |client, _| work(client)).map(|(value, _)| value)
    }
}
