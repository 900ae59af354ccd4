//! `[storage]`: where Vouch keeps its cases: an embedded sled store in a folder (the default), or
//! a PostgreSQL database that several replicas share.

use std::path::{Path, PathBuf};

use crate::reader::TableReader;
use crate::settings::secret;
use crate::{relative_to, Environment, Secret};

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub backend: StorageBackend,
}

#[derive(Debug, Clone)]
pub enum StorageBackend {
    /// One process, one folder: nothing to run beside Vouch.
    Sled { data_dir: PathBuf, cache_capacity_mib: u64 },
    /// Replicas sharing one database; one of them leads.
    Postgres(PostgresSettings),
}

#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// The connection URL (it may carry a password, so it is a secret).
    pub url: Secret,
    pub pool_size: usize,
    /// The server's certificate is checked against this CA; `None`: plain TCP.
    pub tls_ca_file: Option<PathBuf>,
}

impl StorageSettings {
    /// What to show of the store's place in logs: the folder, or that it is PostgreSQL.
    pub fn describe(&self) -> String {
        match &self.backend {
            StorageBackend::Sled { data_dir, .. } => data_dir.display().to_string(),
            StorageBackend::Postgres(postgres) => format!("postgres ({})", postgres.url.origin()),
        }
    }
}

/// Reads `[storage]`; `None` when broken (the problems are reported).
pub(crate) fn compile(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<StorageSettings> {
    let backend = table.string("backend").unwrap_or_else(|| "sled".to_string());
    let backend = match backend.as_str() {
        "sled" => {
            for key in ["url", "pool_size", "tls", "ca_file"] {
                if !table.string_is_absent(key) {
                    table.problem(key, "is a setting of backend = \"postgres\"; this store is on sled");
                }
            }
            let data_dir = table.required_string("data_dir").map(|path| relative_to(base, &path));
            // 4 MiB: sled holds two to three times its cache in memory, and Vouch's writes touch the
            // newest tree nodes while its reads are pages of summaries (BENCHMARKS.md, footprint).
            let cache_capacity_mib = table.integer("cache_capacity_mib", 1..4097).unwrap_or(4) as u64;
            data_dir.map(|data_dir| StorageBackend::Sled { data_dir, cache_capacity_mib })
        }
        "postgres" => {
            for key in ["data_dir", "cache_capacity_mib"] {
                if !table.string_is_absent(key) {
                    table.problem(key, "is a setting of backend = \"sled\"; this store is in PostgreSQL");
                }
            }
            let url = secret(table, "url", base, environment, true);
            let pool_size = table.integer("pool_size", 1..257).unwrap_or(8) as usize;
            let tls = table.string("tls").unwrap_or_else(|| "disable".to_string());
            let ca_file = table.string("ca_file").map(|path| relative_to(base, &path));
            let tls_ca_file = match (tls.as_str(), ca_file) {
                ("disable", None) => Some(None),
                ("disable", Some(_)) => {
                    table.problem("ca_file", "is used only with tls = \"require\"");
                    None
                }
                ("require", Some(ca_file)) => Some(Some(ca_file)),
                ("require", None) => {
                    table.problem(
                        "ca_file",
                        "is required with tls = \"require\": the CA that signed the server's certificate",
                    );
                    None
                }
                _ => {
                    table.problem("tls", "must be \"disable\" or \"require\"");
                    None
                }
            };
            match (url, tls_ca_file) {
                (Some(url), Some(tls_ca_file)) => {
                    Some(StorageBackend::Postgres(PostgresSettings { url, pool_size, tls_ca_file }))
                }
                _ => None,
            }
        }
        _ => {
            table.problem("backend", "must be \"sled\" (the default) or \"postgres\"");
            None
        }
    };
    table.finish();
    backend.map(|backend| StorageSettings { backend })
}
