//! Retention: cases closed for longer than `[retention] closed_for_days` move, with their audit
//! records, to an archive file, then leave the store; the chain keeps an anchor saying what went
//! where, so it stays verifiable across the cut (`vouch audit verify --archive DIR` checks the
//! archives and the store end to end).
//!
//! One run writes one file, `archive-NNNNNN.jsonl.lz4` (JSON Lines, LZ4 frames): a header line,
//! then each case (`{"case": ...}`) followed by its audit records (`{"record": ...}`). The file
//! is written under a `.partial` name, made durable, renamed, and only then are the cases
//! removed from the store, in one transaction that also appends the anchor and counts the run.
//! A run cut short (a crash, a case that took an alert meanwhile) leaves at most a file no
//! anchor names; the next run, which takes the same number, replaces it. So nothing is lost and
//! nothing is archived twice.

use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};
use vouch_config::RetentionSettings;
use vouch_playbook::case_list::CaseSummary;
use vouch_playbook::{AuditKind, Case, CaseId, Timestamp};
use vouch_storage::{ArchivedRange, AuditRecord, NewRecord, StorageError, Store};

const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;
const FILE_PREFIX: &str = "archive-";
const FILE_SUFFIX: &str = ".jsonl.lz4";
const PARTIAL_SUFFIX: &str = ".partial";

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}:{line}: {reason}")]
    Malformed { path: String, line: usize, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RetentionError + '_ {
    move |source| RetentionError::Io { path: path.display().to_string(), source }
}

/// The file a run writes.
pub fn archive_file_name(run: u64) -> String {
    format!("{FILE_PREFIX}{run:06}{FILE_SUFFIX}")
}

/// The run number of an archive file's name (finished or partial), if it is one.
fn run_of(name: &str) -> Option<u64> {
    let number = name.strip_prefix(FILE_PREFIX)?;
    let number = number.strip_suffix(PARTIAL_SUFFIX).unwrap_or(number).strip_suffix(FILE_SUFFIX)?;
    (number.len() >= 6 && number.bytes().all(|byte| byte.is_ascii_digit())).then(|| number.parse().ok())?
}

/// Whether a closed case has waited long enough: closed, and unchanged for `days`.
pub fn due_for_archive(summary: &CaseSummary, days: u32, now: Timestamp) -> bool {
    summary.state.is_finished() && summary.updated_at.plus_millis(i64::from(days) * DAY_MILLIS) <= now
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRun {
    /// No case was due.
    NothingDue,
    Archived {
        run: u64,
        file: PathBuf,
        cases: usize,
        records: usize,
    },
    /// A case changed while it was being archived: nothing was removed, the file was dropped,
    /// and the next run tries again.
    Retry {
        reason: String,
    },
}

/// What is kept of each archived case to remove it and anchor its records.
struct Archived {
    case_id: CaseId,
    last_seq: u64,
    alert_ids: Vec<(String, String)>,
}

/// The sender's alert ids a case's trail records (`(format, id)`), so their index entries go
/// with the case.
fn alert_ids(case: &Case, records: &[AuditRecord]) -> Vec<(String, String)> {
    let format = case.alert().format.id();
    records
        .iter()
        .flat_map(|record| vouch_playbook::cases::recorded_alert_ids(&record.kind, &record.detail, format))
        .collect()
}

/// Removes what an interrupted run left: files of runs numbered `next` or later, which no anchor
/// names.
fn remove_leftovers(directory: &Path, next: u64) -> Result<(), RetentionError> {
    for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
        let entry = entry.map_err(io_error(directory))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if run_of(&name).is_some_and(|run| run >= next) {
            tracing::warn!(file = %name, "removing an archive file an interrupted run left; this run replaces it");
            std::fs::remove_file(entry.path()).map_err(io_error(&entry.path()))?;
        }
    }
    Ok(())
}

/// One archive run: the cases due, oldest first, up to the run's limit. Blocking.
pub fn archive_due_cases(
    store: &Store,
    settings: &RetentionSettings,
    now: Timestamp,
) -> Result<ArchiveRun, RetentionError> {
    let directory = &settings.archive_dir;
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let run = store.next_archive_run()?;
    remove_leftovers(directory, run)?;

    let quiet_since = now.plus_millis(-i64::from(settings.closed_for_days) * DAY_MILLIS);
    let due: Vec<CaseId> = store
        .finished_cases_quiet_since(quiet_since.plus_millis(1), settings.most_cases_per_run)?
        .iter()
        .filter(|summary| due_for_archive(summary, settings.closed_for_days, now))
        .map(|summary| summary.id)
        .collect();
    if due.is_empty() {
        return Ok(ArchiveRun::NothingDue);
    }

    let file = directory.join(archive_file_name(run));
    let partial = directory.join(format!("{}{PARTIAL_SUFFIX}", archive_file_name(run)));
    let (archived, records, digest) = write_archive(store, &partial, run, &due, now)?;
    std::fs::rename(&partial, &file).map_err(io_error(&file))?;
    sync_directory(directory)?;

    let ranges = ArchivedRange::runs_of(records.iter());
    let record_count: usize = records.len();
    let anchor = json!({
        "run": run,
        "file": archive_file_name(run),
        "sha256": digest,
        "cases": archived.iter().map(|case| case.case_id).collect::<Vec<_>>(),
        "records": record_count,
        "ranges": ranges,
    });
    let removed = store.write(|transaction| {
        for case in &archived {
            transaction.remove_archived_case(case.case_id, case.last_seq, &case.alert_ids)?;
        }
        transaction.append_audit(NewRecord {
            at: now,
            case_id: None,
            kind: AuditKind::RetentionArchived,
            actor: None,
            playbook_version: None,
            detail: anchor,
        })?;
        transaction.finish_archive_run(run)
    });
    match removed.and_then(|pending| pending.wait()) {
        Ok(()) => Ok(ArchiveRun::Archived { run, file, cases: archived.len(), records: record_count }),
        Err(StorageError::Conflict(reason)) => {
            std::fs::remove_file(&file).map_err(io_error(&file))?;
            Ok(ArchiveRun::Retry { reason })
        }
        Err(error) => Err(error.into()),
    }
}

/// The slim copy of each record kept while writing: enough to anchor its run.
fn slim(record: &AuditRecord) -> AuditRecord {
    AuditRecord { detail: serde_json::Value::Null, actor: None, ..record.clone() }
}

/// Reads or writes through to `inner`, hashing every byte that passes: a file's digest without
/// reading it again.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: Sha256::new() }
    }

    fn digest(self) -> (T, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Writes the due cases and their records to `path`, durable on return; what is needed to remove
/// them, their records (slim, sorted by sequence), and the file's SHA-256.
fn write_archive(
    store: &Store,
    path: &Path,
    run: u64,
    due: &[CaseId],
    now: Timestamp,
) -> Result<(Vec<Archived>, Vec<AuditRecord>, String), RetentionError> {
    let file = std::fs::File::create(path).map_err(io_error(path))?;
    let mut writer = lz4_flex::frame::FrameEncoder::new(BufWriter::new(Hashing::new(file)));
    let line = |value: &serde_json::Value, writer: &mut dyn Write| -> std::io::Result<()> {
        serde_json::to_writer(&mut *writer, value)?;
        writer.write_all(b"\n")
    };
    line(&json!({"vouch_archive": 1, "run": run, "written_at": now, "cases": due.len()}), &mut writer)
        .map_err(io_error(path))?;
    let mut archived = Vec::with_capacity(due.len());
    let mut kept = Vec::new();
    for case_id in due {
        let case = store.case(*case_id)?;
        let records = store.case_audit(*case_id)?;
        let Some(last) = records.last() else { continue };
        line(&json!({"case": case}), &mut writer).map_err(io_error(path))?;
        for record in &records {
            line(&json!({"record": record}), &mut writer).map_err(io_error(path))?;
        }
        archived.push(Archived { case_id: *case_id, last_seq: last.seq, alert_ids: alert_ids(&case, &records) });
        kept.extend(records.iter().map(slim));
    }
    let (file, digest) = writer
        .finish()
        .map_err(|error| RetentionError::Io { path: path.display().to_string(), source: error.into() })?
        .into_inner()
        .map_err(|error| RetentionError::Io { path: path.display().to_string(), source: error.into_error() })?
        .digest();
    file.sync_all().map_err(io_error(path))?;
    kept.sort_by_key(|record| record.seq);
    Ok((archived, kept, digest))
}

fn sync_directory(directory: &Path) -> Result<(), RetentionError> {
    std::fs::File::open(directory).and_then(|handle| handle.sync_all()).map_err(io_error(directory))
}

/// An archive file read back: its digest, the cases and the records it holds.
#[derive(Debug)]
pub struct ArchiveContents {
    pub file: String,
    pub sha256: String,
    pub cases: Vec<Case>,
    pub records: Vec<AuditRecord>,
}

/// Reads every archive file in `directory` (partial files of interrupted runs are skipped).
pub fn read_archives(directory: &Path) -> Result<Vec<ArchiveContents>, RetentionError> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .map_err(io_error(directory))?
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name().to_string_lossy().to_string()))
        .filter(|name| run_of(name).is_some() && !name.ends_with(PARTIAL_SUFFIX))
        .collect();
    names.sort();
    names.into_iter().map(|name| read_archive(&directory.join(&name), name)).collect()
}

fn read_archive(path: &Path, file: String) -> Result<ArchiveContents, RetentionError> {
    let mut hashing = Hashing::new(std::fs::File::open(path).map_err(io_error(path))?);
    let reader = std::io::BufReader::new(lz4_flex::frame::FrameDecoder::new(&mut hashing));
    let malformed =
        |line: usize, reason: String| RetentionError::Malformed { path: path.display().to_string(), line, reason };
    let mut cases = Vec::new();
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|error| malformed(index + 1, error.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|error| malformed(index + 1, error.to_string()))?;
        if let Some(case) = value.get("case") {
            cases.push(serde_json::from_value(case.clone()).map_err(|error| malformed(index + 1, error.to_string()))?);
        } else if let Some(record) = value.get("record") {
            records
                .push(serde_json::from_value(record.clone()).map_err(|error| malformed(index + 1, error.to_string()))?);
        } else if value.get("vouch_archive").is_none() {
            return Err(malformed(index + 1, "neither a case, a record nor the header".to_string()));
        }
    }
    // Whatever follows the last frame counts toward the digest too.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_error(path))?;
    let (_, sha256) = hashing.digest();
    Ok(ArchiveContents { file, sha256, cases, records })
}

/// Checks the store and its archives end to end: every anchored file present with the digest
/// its anchor names, every archived record in its place in the chain.
pub fn verify_with_archives(store: &Store, directory: &Path) -> Result<vouch_storage::AuditReport, RetentionError> {
    let archives = read_archives(directory)?;
    let files: Vec<(String, String)> =
        archives.iter().map(|archive| (archive.file.clone(), archive.sha256.clone())).collect();
    let records: Vec<AuditRecord> = archives.into_iter().flat_map(|archive| archive.records).collect();
    Ok(store.verify_audit_with_archives(records, &files)?)
}

/// Runs archive runs every `check_every` while Vouch runs. Each run's work is blocking and
/// happens on a blocking thread; ingest goes on meanwhile (only the removal takes the writer
/// lock, once per run).
pub async fn keep_archiving(service: std::sync::Arc<crate::service::Service>, settings: RetentionSettings) {
    let mut interval = tokio::time::interval(settings.check_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let service = std::sync::Arc::clone(&service);
        let settings = settings.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let now = service.clock.now();
            archive_due_cases(&service.store, &settings, now)
        })
        .await;
        match ran {
            Ok(Ok(ArchiveRun::NothingDue)) => {}
            Ok(Ok(ArchiveRun::Archived { run, file, cases, records })) => {
                tracing::info!(run, file = %file.display(), cases, records, "archived closed cases");
            }
            Ok(Ok(ArchiveRun::Retry { reason })) => tracing::info!(%reason, "an archive run will be tried again"),
            Ok(Err(error)) => tracing::error!(%error, "an archive run failed; the cases stay in the store"),
            Err(error) => tracing::error!(%error, "an archive run's task failed"),
        }
    }
}
