//! Which replica leads: the one holding a session advisory lock on a connection of its own, with
//! a row (`vouch_leadership`) naming its epoch, its backend and when it last renewed its lease.
//!
//! - Taking the lead bumps the epoch inside a change (under the writer lock), so every change
//!   that checks the epoch afterwards sees the new one: a leader that was paused and wakes up
//!   finds its epoch stale in its first write and is refused (fencing).
//! - A leader that dies loses its session, and with it the lock, at once. A leader that is alive
//!   but stuck (paused, cut off) keeps its session, so a standby that finds the lease not renewed
//!   for longer than the configured time ends that session (`pg_terminate_backend`) and takes the
//!   lock at its next try.

use std::time::Duration;

use crate::postgres::pool::UnpreparedConnection;
use crate::postgres::{PgEngine, LEADER_LOCK, WRITER_LOCK};
use crate::Result;

/// The lead, held while this value lives (its connection holds the lock).
pub struct LeaderLease {
    connection: UnpreparedConnection,
    epoch: u64,
}

/// What one try to lead found.
pub enum Campaign {
    /// This replica leads now, under this lease.
    Won(LeaderLease),
    /// Another replica leads and renews its lease.
    Lost,
    /// The leader had not renewed its lease for too long: its session was ended, and the next
    /// try can take the lead.
    EndedAStaleLeader { holder: String, epoch: u64 },
}

impl LeaderLease {
    /// The epoch this lease leads: every leader-only change checks it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Renews the lease; `false` when it was lost (another replica took the lead).
    pub fn renew(&self) -> Result<bool> {
        let epoch = self.epoch as i64;
        self.connection.run(move |client| {
            let renewed = client.execute(
                "UPDATE vouch_leadership SET renewed_at = now() WHERE epoch = $1 AND backend_pid = pg_backend_pid()",
                &[&epoch],
            )?;
            Ok(renewed == 1)
        })
    }
}

impl PgEngine {
    /// One try to lead, as `holder` (a name for logs and the leadership row).
    pub(crate) fn campaign(&self, holder: &str, stale_after: Duration) -> Result<Campaign> {
        let connection = self.pool.unprepared();
        let holder = holder.to_string();
        let stale_seconds = stale_after.as_secs_f64();
        let won = connection.run(move |client| {
            let locked: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?.get(0);
            if !locked {
                // Ends the session of a leader that holds the lock but stopped renewing.
                let stale = client.query_opt(
                    "SELECT l.holder, l.epoch, pg_terminate_backend(locks.pid) \
                     FROM vouch_leadership l \
                     JOIN pg_locks locks ON locks.pid = l.backend_pid \
                     WHERE locks.locktype = 'advisory' AND locks.granted \
                       AND locks.classid = ($1::bigint >> 32)::oid AND locks.objid = ($1::bigint & 4294967295)::oid \
                       AND locks.objsubid = 1 \
                       AND now() - l.renewed_at > make_interval(secs => $2::float8)",
                    &[&LEADER_LOCK, &stale_seconds],
                )?;
                return Ok(match stale {
                    Some(row) => Err(Some((row.get::<_, String>(0), row.get::<_, i64>(1) as u64))),
                    None => Err(None),
                });
            }
            let mut transaction = client.transaction()?;
            transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
            let epoch: i64 = transaction
                .query_one(
                    "INSERT INTO vouch_leadership (singleton, epoch, holder, backend_pid) \
                     VALUES (true, 1, $1, pg_backend_pid()) \
                     ON CONFLICT (singleton) DO UPDATE SET epoch = vouch_leadership.epoch + 1, \
                       holder = EXCLUDED.holder, backend_pid = EXCLUDED.backend_pid, \
                       since = now(), renewed_at = now() \
                     RETURNING epoch",
                    &[&holder],
                )?
                .get(0);
            transaction.commit()?;
            Ok(Ok(epoch as u64))
        })?;
        Ok(match won {
            Ok(epoch) => Campaign::Won(LeaderLease { connection, epoch }),
            Err(Some((holder, epoch))) => Campaign::EndedAStaleLeader { holder, epoch },
            Err(None) => Campaign::Lost,
        })
    }
}
