//! Keeps the directory in step with the organisation's own sources: reads each source (or takes
//! what a source pushed), compiles the directory from the sources' snapshots under the local
//! overlay, refuses a sync that failed or would remove too much at once, stores the new snapshot
//! and the audit of its changes (a record each, or one summary for thousands) in one
//! transaction, and only then lets the service see the new directory.
//!
//! At start Vouch works from the last good snapshots in the store, so a source that is down does
//! not stop it from asking the right people.

pub mod graph;
pub mod ldap;
pub mod scim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use vouch_config::{
    Directory, DirectoryChange, DirectoryChanges, DirectorySettings, DirectorySource, SourceKind, SourceSnapshot,
};
use vouch_playbook::{AuditKind, Timestamp};
use vouch_storage::{NewRecord, Store};

/// The directory the service reads, replaced whole when a sync lands.
pub struct SharedDirectory {
    current: RwLock<Arc<Directory>>,
}

impl SharedDirectory {
    pub fn new(directory: Directory) -> SharedDirectory {
        SharedDirectory { current: RwLock::new(Arc::new(directory)) }
    }

    /// The directory as of now; cheap (a pointer copy), and constant while the caller holds it.
    pub fn get(&self) -> Arc<Directory> {
        Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn replace(&self, directory: Directory) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(directory);
    }
}

/// What a sync is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncRequest<'a> {
    /// One source by name, or every source Vouch reads.
    pub source: Option<&'a str>,
    /// Say what would change; store nothing.
    pub dry_run: bool,
    /// Read the whole source even when an incremental read would do (to see deletions now).
    pub full: bool,
}

/// What one source's sync did.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// The changes now in effect (empty: nothing changed).
    Applied(DirectoryChanges),
    /// What a sync would change (`--dry-run`); nothing was stored.
    WouldApply(DirectoryChanges),
    /// The source failed or the result was refused; the last good directory stays.
    Refused(String),
}

/// Why a pushed change did not land.
#[derive(Debug)]
pub enum PushError<E> {
    /// The change itself was refused (bad input); nothing changed.
    Refused(E),
    /// The directory it gave was not kept (the overlay is broken, the store failed).
    NotKept(String),
}

/// The sync of every configured source, and the snapshots they last gave.
pub struct DirectoryKeeper {
    settings: DirectorySettings,
    store: Arc<Store>,
    shared: Arc<SharedDirectory>,
    /// Source name -> its last good snapshot.
    snapshots: tokio::sync::Mutex<BTreeMap<String, SourceSnapshot>>,
    /// Sources whose refusal was already reported; cleared by their next good sync.
    refusals_reported: Mutex<BTreeSet<String>>,
    /// Syncs by (source, outcome), for `/metrics`.
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Woken whenever a sync or a push changed the directory (cases re-route their confirmers).
    pub changed: Arc<tokio::sync::Notify>,
    /// The store's directory version the snapshots above were read at (or written as): replicas
    /// sharing a database see each other's syncs and pushes by it.
    loaded_version: std::sync::atomic::AtomicU64,
}

impl DirectoryKeeper {
    /// Builds the directory from the overlay and the snapshots kept in the store.
    pub fn open(settings: DirectorySettings, store: Arc<Store>) -> anyhow::Result<DirectoryKeeper> {
        let loaded_version = store.directory_version().context("cannot read the directory's version")?;
        let snapshots = stored_snapshots(&settings, &store)?;
        let (directory, overlay_problems, synced_problems) =
            settings.compile(&ordered(&settings, &snapshots, None), &Directory::default());
        if let Some(problem) = overlay_problems.first() {
            anyhow::bail!("the directory has problems: {problem}");
        }
        for problem in &synced_problems {
            tracing::warn!(%problem, "a synced directory entry was left out");
        }
        let shared = Arc::new(SharedDirectory::new(directory));
        Ok(DirectoryKeeper {
            settings,
            store,
            shared,
            snapshots: tokio::sync::Mutex::new(snapshots),
            refusals_reported: Mutex::new(BTreeSet::new()),
            outcomes: Mutex::new(BTreeMap::new()),
            changed: Arc::new(tokio::sync::Notify::new()),
            loaded_version: std::sync::atomic::AtomicU64::new(loaded_version),
        })
    }

    /// Reads the snapshots again when another replica kept one since they were read, and swaps
    /// in the directory they give. Called under the snapshots' lock.
    async fn catch_up(&self, snapshots: &mut BTreeMap<String, SourceSnapshot>) {
        let loaded = self.loaded_version.load(std::sync::atomic::Ordering::Acquire);
        let store = Arc::clone(&self.store);
        // One read tells whether anything changed; the settings are copied for the snapshots'
        // read only when something did.
        let read = match tokio::task::spawn_blocking(move || store.directory_version()).await {
            Ok(Ok(version)) if version == loaded => return,
            Ok(Ok(version)) => {
                let (store, settings) = (Arc::clone(&self.store), self.settings.clone());
                tokio::task::spawn_blocking(move || Ok(Some((version, stored_snapshots(&settings, &store)?)))).await
            }
            Ok(Err(error)) => Ok(Err(anyhow::Error::from(error))),
            Err(error) => Err(error),
        };
        let (version, stored) = match read {
            Ok(Ok(Some(read))) => read,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!(error = format!("{error:#}"), "cannot read the directory another replica kept");
                return;
            }
            Err(_) => return,
        };
        let (directory, overlay_problems, _) =
            self.settings.compile(&ordered(&self.settings, &stored, None), &self.shared.get());
        if let Some(problem) = overlay_problems.first() {
            tracing::warn!(%problem, "the directory another replica kept does not compile here; keeping this one");
            return;
        }
        *snapshots = stored;
        self.shared.replace(directory);
        self.loaded_version.store(version, std::sync::atomic::Ordering::Release);
        self.changed.notify_one();
        tracing::info!(version, "read the directory another replica kept");
    }

    /// Follows the directory other replicas keep in the shared store (PostgreSQL): a standby's
    /// new cases see the leader's syncs, the leader sees pushes a standby took.
    pub async fn follow_store(self: Arc<Self>) {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let mut snapshots = self.snapshots.lock().await;
            self.catch_up(&mut snapshots).await;
        }
    }

    pub fn shared(&self) -> Arc<SharedDirectory> {
        Arc::clone(&self.shared)
    }

    pub fn sources(&self) -> &[DirectorySource] {
        &self.settings.sync.sources
    }

    /// When each source last synced well, for `vouch directory show`.
    pub async fn synced_at(&self) -> BTreeMap<String, Option<Timestamp>> {
        self.snapshots.lock().await.iter().map(|(name, snapshot)| (name.clone(), snapshot.synced_at)).collect()
    }

    /// The sync counters in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        let mut text = String::from(
            "# HELP vouch_directory_syncs_total Directory syncs by source and outcome (applied, dry_run, refused).\n\
             # TYPE vouch_directory_syncs_total counter\n",
        );
        for ((source, outcome), count) in self.outcomes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
            text.push_str(&format!(
                "vouch_directory_syncs_total{{source=\"{source}\",outcome=\"{outcome}\"}} {count}\n"
            ));
        }
        text
    }

    /// Syncs every source (or the one named), in the configured order.
    pub async fn sync(&self, request: SyncRequest<'_>, now: Timestamp) -> Vec<(String, SyncOutcome)> {
        let mut outcomes = Vec::new();
        let pulled = self.settings.sync.sources.iter().filter(|source| is_pulled(source));
        for source in pulled.filter(|source| request.source.is_none_or(|name| name == source.name)) {
            let outcome = self.sync_source(source, now, request).await;
            let counted = match &outcome {
                SyncOutcome::Applied(_) => "applied",
                SyncOutcome::WouldApply(_) => "dry_run",
                SyncOutcome::Refused(_) => "refused",
            };
            *self
                .outcomes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry((source.name.clone(), counted))
                .or_default() += 1;
            match &outcome {
                SyncOutcome::Applied(changes) => {
                    tracing::info!(source = %source.name, changes = changes.len(), "directory sync applied")
                }
                SyncOutcome::WouldApply(changes) => {
                    tracing::info!(source = %source.name, changes = changes.len(), "directory sync (dry run)")
                }
                SyncOutcome::Refused(reason) => {
                    tracing::warn!(source = %source.name, %reason, "directory sync refused")
                }
            }
            outcomes.push((source.name.clone(), outcome));
        }
        outcomes
    }

    async fn sync_source(&self, source: &DirectorySource, now: Timestamp, request: SyncRequest<'_>) -> SyncOutcome {
        let dry_run = request.dry_run;
        // One sync at a time: the snapshot set is read, replaced and stored under this lock.
        let mut snapshots = self.snapshots.lock().await;
        self.catch_up(&mut snapshots).await;
        // A read of the whole source needs nothing of the previous snapshot: it is let go of
        // before the read, so a large source's resync does not hold it beside everything read
        // (read back from the store should the sync not be applied).
        let continues = |full_sync| SourceSnapshot::to_continue(snapshots.get(&source.name), full_sync, now).is_some();
        let reads_whole = match &source.kind {
            SourceKind::Ldap(ldap_source) => request.full || !continues(&ldap_source.full_sync),
            SourceKind::Graph(graph_source) => request.full || !continues(&graph_source.full_sync),
            SourceKind::Scim(_) => false,
        };
        if reads_whole {
            snapshots.remove(&source.name);
        }
        let previous = snapshots.get(&source.name);
        let read = match &source.kind {
            SourceKind::Ldap(ldap_source) => ldap::read(&source.name, ldap_source, now, previous)
                .await
                .map(|entries| SourceRead::Ldap(entries, ldap_source))
                .map_err(|error| error.to_string()),
            SourceKind::Graph(graph_source) => graph::read(&source.name, graph_source, now, previous)
                .await
                .map(|read| SourceRead::Snapshot(read.snapshot, read.skipped))
                .map_err(|error| error.to_string()),
            // A pushed source has nothing to pull: what it sent is already in effect.
            SourceKind::Scim(_) => return SyncOutcome::Applied(DirectoryChanges::default()),
        };
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                if reads_whole {
                    self.read_back_snapshot(&mut snapshots, &source.name).await;
                }
                return self.refuse(source, now, dry_run, format!("the source failed: {error}")).await;
            }
        };
        // The previous snapshot is now merged into or replaced by what was read: it is taken out
        // of the set, so a large source's sync does not hold it beside the new one and two
        // directories. Should this sync not be applied, the stored copy is read back.
        let previous = snapshots.remove(&source.name);
        let (snapshot, skipped) = match read {
            SourceRead::Ldap(entries, ldap_source) => {
                let read = entries.assemble(&source.name, ldap_source, now, previous);
                (read.snapshot, read.skipped)
            }
            SourceRead::Snapshot(snapshot, skipped) => (snapshot, skipped),
        };
        for skipped in &skipped {
            tracing::warn!(source = %source.name, entry = %skipped, "a directory entry was left out");
        }
        let limit = Some(self.settings.sync.max_removed_share);
        let outcome = self.land(&mut snapshots, source, snapshot, now, dry_run, limit).await;
        if !matches!(outcome, SyncOutcome::Applied(_)) {
            self.read_back_snapshot(&mut snapshots, &source.name).await;
        }
        drop(snapshots);
        let _ = tokio::task::spawn_blocking(crate::memory::return_freed_memory).await;
        outcome
    }

    /// Puts a source's stored snapshot back in place of what a sync that was not applied read.
    async fn read_back_snapshot(&self, snapshots: &mut BTreeMap<String, SourceSnapshot>, source: &str) {
        let store = Arc::clone(&self.store);
        let name = source.to_string();
        let stored = tokio::task::spawn_blocking(move || {
            let stored = store.directory_snapshot(&name).map_err(|error| error.to_string())?;
            stored
                .map(|json| serde_json::from_slice::<SourceSnapshot>(&json).map_err(|error| error.to_string()))
                .transpose()
        })
        .await;
        match stored {
            Ok(Ok(Some(snapshot))) => {
                snapshots.insert(source.to_string(), snapshot);
            }
            // Never synced well before: nothing to put back.
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(source, %error, "the stored directory snapshot could not be read back; the directory in use stays, and the next sync reads the source whole")
            }
            Err(error) => tracing::error!(source, %error, "reading the stored directory snapshot back stopped"),
        }
    }

    /// Applies a change a source pushed (SCIM): `change` turns the source's current snapshot
    /// into the next one, or refuses (nothing is changed). A push is one person or group at a
    /// time, so no removal limit applies; it is durable, audited and in effect on return.
    pub async fn push<T, E>(
        &self,
        source: &DirectorySource,
        now: Timestamp,
        change: impl FnOnce(Option<&SourceSnapshot>) -> Result<(SourceSnapshot, T), E>,
    ) -> Result<T, PushError<E>> {
        let mut snapshots = self.snapshots.lock().await;
        self.catch_up(&mut snapshots).await;
        let (snapshot, value) = change(snapshots.get(&source.name)).map_err(PushError::Refused)?;
        match self.land(&mut snapshots, source, snapshot, now, false, None).await {
            SyncOutcome::Refused(reason) => Err(PushError::NotKept(reason)),
            _ => Ok(value),
        }
    }

    /// Lands a source's new snapshot: compiles the directory it gives, refuses it when the
    /// overlay is broken or it removes more than `removal_limit`, else stores the snapshot and
    /// one audit record per change in one transaction and swaps the directory in.
    async fn land(
        &self,
        snapshots: &mut BTreeMap<String, SourceSnapshot>,
        source: &DirectorySource,
        snapshot: SourceSnapshot,
        now: Timestamp,
        dry_run: bool,
        removal_limit: Option<f64>,
    ) -> SyncOutcome {
        let before = self.shared.get();
        let (directory, overlay_problems, synced_problems) =
            self.settings.compile(&ordered(&self.settings, snapshots, Some(&snapshot)), &before);
        if let Some(problem) = overlay_problems.first() {
            return self
                .refuse(source, now, dry_run, format!("the local directory file has problems: {problem}"))
                .await;
        }
        for problem in &synced_problems {
            tracing::warn!(source = %source.name, %problem, "a synced directory entry was left out");
        }
        if let Some(limit) = removal_limit {
            let removal = before.removal_to(&directory);
            if removal.people > limit || removal.assets > limit {
                return self
                    .refuse(
                        source,
                        now,
                        dry_run,
                        format!(
                        "it would remove {:.0}% of the people and {:.0}% of the machines at once (more than {:.0}%)",
                        removal.people * 100.0,
                        removal.assets * 100.0,
                        limit * 100.0
                    ),
                    )
                    .await;
            }
        }
        let changes = before.changes_to(&directory);
        if dry_run {
            return SyncOutcome::WouldApply(changes);
        }
        // Serialized and compressed here, before the writer lock is taken.
        let stored = match vouch_storage::EncodedJson::encode(&snapshot) {
            Ok(stored) => stored,
            Err(error) => return SyncOutcome::Refused(format!("the snapshot could not be encoded: {error}")),
        };
        let source_name = source.name.clone();
        let based_on = self.loaded_version.load(std::sync::atomic::Ordering::Acquire);
        let written = self.write(move |transaction| {
            // Another replica kept a snapshot since this one was read: refused, not overwritten.
            let version = transaction.put_directory_snapshot(&source_name, stored, based_on)?;
            // Every change listed is audited one record each.
            if changes.is_complete() {
                for change in changes.listed() {
                    transaction.append_audit(NewRecord {
                        at: now,
                        case_id: None,
                        kind: AuditKind::DirectoryChange(change.kind()),
                        actor: None,
                        playbook_version: None,
                        detail: serde_json::json!({"source": source_name, "change": change}),
                    })?;
                }
            } else {
                // A source's first load (or any sync changing thousands of entries at once) is
                // one record with the count of each kind of change and the first ones listed:
                // a record per entry of a 150 000-entry directory would cost hundreds of MiB in
                // one transaction and say nothing more.
                let counts = changes.by_kind();
                let first: Vec<&DirectoryChange> = changes.listed().iter().take(100).collect();
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id: None,
                    kind: AuditKind::DirectoryChange("changes_summarized"),
                    actor: None,
                    playbook_version: None,
                    detail: serde_json::json!({"source": source_name, "changes": changes.len(), "by_kind": counts, "first": first}),
                })?;
            }
            Ok((changes, version))
        });
        match written.await {
            Ok((changes, version)) => {
                self.loaded_version.store(version, std::sync::atomic::Ordering::Release);
                snapshots.insert(source.name.clone(), snapshot);
                self.shared.replace(directory);
                if !changes.is_empty() {
                    self.changed.notify_one();
                }
                self.refusals_reported.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&source.name);
                SyncOutcome::Applied(changes)
            }
            Err(error) => SyncOutcome::Refused(format!("the store could not keep the snapshot: {error}")),
        }
    }

    /// A refused sync changes nothing; it is audited (and reported) once until the source syncs
    /// well again, so a source that stays down does not flood the log.
    async fn refuse(&self, source: &DirectorySource, now: Timestamp, dry_run: bool, reason: String) -> SyncOutcome {
        if !dry_run {
            let first = self
                .refusals_reported
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(source.name.clone());
            if first {
                let detail = serde_json::json!({"source": source.name, "reason": reason});
                let notice = format!(
                    "Directory source {}: a sync was refused ({reason}). Vouch keeps asking people from the last good directory; this is said once until the source syncs well again.",
                    source.name
                );
                // On a blocking thread like every other write here: the flush is waited for.
                let result = self
                    .write(move |transaction| {
                        transaction.append_audit(NewRecord {
                            at: now,
                            case_id: None,
                            kind: AuditKind::DirectorySyncRefused,
                            actor: None,
                            playbook_version: None,
                            detail,
                        })?;
                        // The SOC is told with the record, so a crash cannot keep one without the other.
                        transaction.queue_notice(&notice)?;
                        Ok(())
                    })
                    .await;
                if let Err(error) = result {
                    tracing::error!(error = %error, "the refused directory sync could not be audited");
                }
            }
        }
        SyncOutcome::Refused(reason)
    }

    async fn write<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut dyn vouch_storage::Transaction) -> vouch_storage::Result<T> + Send + 'static,
    ) -> vouch_storage::Result<T> {
        let store = Arc::clone(&self.store);
        // A push (SCIM) reaches whichever replica the identity provider calls: any may write it.
        match tokio::task::spawn_blocking(move || store.write_from_any_replica(change)?.wait()).await {
            Ok(result) => result,
            Err(_) => Err(vouch_storage::StorageError::ShuttingDown),
        }
    }
}

/// What a source's read gave: LDAP's entries still to be merged into the previous snapshot, or
/// a whole snapshot.
enum SourceRead<'s> {
    Ldap(ldap::LdapEntries, &'s vouch_config::LdapSource),
    Snapshot(SourceSnapshot, Vec<String>),
}

/// Sources Vouch reads from (as opposed to those that push to it).
fn is_pulled(source: &DirectorySource) -> bool {
    matches!(source.kind, SourceKind::Ldap(_) | SourceKind::Graph(_))
}

/// The snapshots in the configured order of their sources (which decides precedence), with
/// `replacing` in place of its source's stored one.
/// How often a replica looks for a directory another replica kept.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The snapshots kept in the store of the sources configured (a source no longer configured no
/// longer says anything; one that cannot be read is ignored, with a warning).
fn stored_snapshots(settings: &DirectorySettings, store: &Store) -> anyhow::Result<BTreeMap<String, SourceSnapshot>> {
    let configured: BTreeSet<&str> = settings.sync.sources.iter().map(|source| source.name.as_str()).collect();
    let mut snapshots = BTreeMap::new();
    for stored in store.directory_snapshots().context("cannot read the directory snapshots")? {
        match serde_json::from_slice::<SourceSnapshot>(&stored) {
            Ok(snapshot) if configured.contains(snapshot.source.as_str()) => {
                snapshots.insert(snapshot.source.clone(), snapshot);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "a stored directory snapshot cannot be read; it is ignored"),
        }
    }
    Ok(snapshots)
}

fn ordered<'a>(
    settings: &DirectorySettings,
    snapshots: &'a BTreeMap<String, SourceSnapshot>,
    replacing: Option<&'a SourceSnapshot>,
) -> Vec<&'a SourceSnapshot> {
    settings
        .sync
        .sources
        .iter()
        .filter_map(|source| match replacing {
            Some(new) if new.source == source.name => Some(new),
            _ => snapshots.get(&source.name),
        })
        .collect()
}

/// Syncs at start, then on the configured schedule, until the task is dropped.
pub async fn run(keeper: Arc<DirectoryKeeper>, clock: Arc<dyn crate::Clock>) {
    if !keeper.sources().iter().any(is_pulled) {
        return;
    }
    keeper.sync(SyncRequest::default(), clock.now()).await;
    let Some(schedule) = keeper.settings.sync.schedule.clone() else { return };
    loop {
        let now = clock.now();
        let Some(next) = schedule.next_after(now) else { return };
        let wait = (next.unix_millis() - now.unix_millis()).max(0) as u64;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        keeper.sync(SyncRequest::default(), clock.now()).await;
    }
}

/// Re-routes open cases whose asked person left or changed place, whenever the directory changed.
pub async fn reroute_on_change(keeper: Arc<DirectoryKeeper>, service: Arc<crate::service::Service>) {
    loop {
        keeper.changed.notified().await;
        let service = Arc::clone(&service);
        let now = service.clock.now();
        match tokio::task::spawn_blocking(move || service.reroute_confirmers(now)).await {
            Ok(Ok(moved)) if moved > 0 => {
                tracing::info!(cases = moved, "cases asked the next person after a directory change")
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(error = %error, "cases could not be re-routed after a directory change"),
            Err(error) => tracing::error!(error = %error, "the re-routing task failed"),
        }
    }
}
