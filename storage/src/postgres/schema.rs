//! The database's schema, in versioned migrations that only go forward. Each runs in its own
//! transaction with the row that records it; replicas starting together take turns (an advisory
//! lock), and a database written by a newer Vouch is refused rather than guessed at.

use crate::postgres::pool::UnpreparedConnection;
use crate::{Result, StorageError};

/// A schema change: its number, what it is for, and its SQL.
struct Migration {
    version: i32,
    purpose: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        purpose: "every record of the store, by its key (the same keys and values as on sled)",
        sql: "CREATE TABLE vouch_kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
    },
    Migration {
        version: 2,
        purpose: "the leadership: which replica may act on the outside world, since when, renewed when",
        sql: "CREATE TABLE vouch_leadership (\
                  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), \
                  epoch bigint NOT NULL, \
                  holder text NOT NULL, \
                  backend_pid integer NOT NULL, \
                  since timestamptz NOT NULL DEFAULT now(), \
                  renewed_at timestamptz NOT NULL DEFAULT now())",
    },
];

/// The schema version this build writes.
pub(crate) const LATEST: i32 = 2;

/// Held while migrating, so replicas starting at once do not migrate twice.
const MIGRATION_LOCK: i64 = 0x766f_7563_6801;

/// What migrating found: the versions applied now, or a database too new for this build.
enum Outcome {
    Applied(Vec<i32>),
    TooNew(i32),
}

/// Brings the schema to [`LATEST`]; refuses a database newer than this build.
pub(crate) fn migrate(connection: &UnpreparedConnection) -> Result<Vec<i32>> {
    let outcome = connection.run(|client| {
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let result = (|| {
            client.batch_execute(
                "CREATE TABLE IF NOT EXISTS vouch_migrations (\
                     version integer PRIMARY KEY, \
                     purpose text NOT NULL, \
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )?;
            let newest: Option<i32> = client.query_one("SELECT max(version) FROM vouch_migrations", &[])?.get(0);
            let newest = newest.unwrap_or(0);
            if newest > LATEST {
                return Ok(Outcome::TooNew(newest));
            }
            let mut applied = Vec::new();
            for migration in MIGRATIONS.iter().filter(|migration| migration.version > newest) {
                let mut transaction = client.transaction()?;
                transaction.batch_execute(migration.sql)?;
                transaction.execute(
                    "INSERT INTO vouch_migrations (version, purpose) VALUES ($1, $2)",
                    &[&migration.version, &migration.purpose],
                )?;
                transaction.commit()?;
                applied.push(migration.version);
            }
            Ok(Outcome::Applied(applied))
        })();
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
        result
    })?;
    match outcome {
        Outcome::Applied(applied) => Ok(applied),
        Outcome::TooNew(version) => Err(StorageError::Database(format!(
            "the database's schema is version {version}, newer than this Vouch knows ({LATEST}): \
             run the Vouch that wrote it, or a newer one"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_in_order_up_to_the_latest() {
        let versions: Vec<i32> = super::MIGRATIONS.iter().map(|migration| migration.version).collect();
        assert_eq!(versions, (1..=super::LATEST).collect::<Vec<_>>());
    }
}
