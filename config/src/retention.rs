//! `[retention]`: closed cases past an age move, with their audit records, to compressed archive
//! files, and leave the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::TableReader;
use crate::relative_to;

/// How long closed cases stay in the store, and where they go after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Cases closed and unchanged for longer than this are archived (0: at the next check).
    pub closed_for_days: u32,
    /// Where archive files are written (one per run: `archive-000001.jsonl.lz4`, ...).
    pub archive_dir: PathBuf,
    /// How often Vouch looks for cases to archive.
    pub check_every: Duration,
    /// The most cases one run archives (one file, one store transaction); more wait for the next.
    pub most_cases_per_run: usize,
}

/// Reads `[retention]`; `None` when broken (the problems are reported).
pub(crate) fn compile(table: &TableReader<'_>, base: &Path) -> Option<RetentionSettings> {
    let closed_for_days = table.integer("closed_for_days", 0..36_501);
    let archive_dir = table.required_string("archive_dir").map(|dir| relative_to(base, &dir));
    let check_every = Duration::from_secs(table.integer("check_every_seconds", 1..86_401).unwrap_or(3_600) as u64);
    let most_cases_per_run = table.integer("most_cases_per_run", 1..100_001).unwrap_or(5_000) as usize;
    if table.string_is_absent("closed_for_days") {
        table.problem("closed_for_days", "is required: how many days a closed case stays before it is archived");
    }
    table.finish();
    Some(RetentionSettings {
        closed_for_days: closed_for_days? as u32,
        archive_dir: archive_dir?,
        check_every,
        most_cases_per_run,
    })
}
