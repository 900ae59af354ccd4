//! What a directory source (LDAP / Active Directory, ...) said at its last good sync: the people,
//! service accounts and machines it holds, each with where it came from. Vouch stores one
//! snapshot per source and compiles the directory from the snapshots and the local overlay
//! (`directory.toml` and its CSVs), so it starts and works from the last good sync when a source
//! is down.
//!
//! Precedence, field by field: a value the overlay sets wins over every source; between sources,
//! the one listed first in `[[directory.sources]]` wins; lists (roles, workstations, accounts)
//! are the union of all.

use serde::{Deserialize, Serialize};
use vouch_playbook::Timestamp;

/// One source's entries at one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    /// The source's name in `[[directory.sources]]`.
    pub source: String,
    pub synced_at: Option<Timestamp>,
    /// Where an incremental sync resumes (LDAP: the highest `modifyTimestamp` seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// When the source was last read whole (what an incremental sync cannot see, deletions,
    /// is seen then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_synced_at: Option<Timestamp>,
    #[serde(default)]
    pub people: Vec<SyncedPerson>,
    #[serde(default)]
    pub accounts: Vec<SyncedAccount>,
    #[serde(default)]
    pub assets: Vec<SyncedAsset>,
    /// What a source that pushes to Vouch (SCIM) keeps about itself: its resources as the
    /// identity provider sent them, which the snapshot's entries are derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedPerson {
    /// The person id Vouch uses (the login name, lower-cased).
    pub id: String,
    /// Where the source keeps the entry (an LDAP DN), for reports.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord_id: Option<String>,
    /// The manager's person id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workstations: Vec<String>,
    /// Login names and UPNs held by the person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedAccount {
    pub name: String,
    pub origin: String,
    /// `service` for service accounts; user accounts come with their person.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedAsset {
    pub hostname: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl SourceSnapshot {
    /// The previous snapshot a read may continue from (following its cursor rather than
    /// reading everything), unless `full_sync` has come round since it was last read whole.
    pub fn to_continue<'a>(
        previous: Option<&'a SourceSnapshot>,
        full_sync: &crate::CronSchedule,
        now: Timestamp,
    ) -> Option<&'a SourceSnapshot> {
        previous.filter(|previous| {
            previous.cursor.is_some()
                && previous.full_synced_at.is_some_and(|at| full_sync.occurrences_between(at, now, 1) == 0)
        })
    }

    /// Gives each person the workstations they own (a machine of kind `workstation` whose owner
    /// they are), indexed once: people × machines would not scale.
    pub fn give_people_their_workstations(&mut self) {
        let mut workstations_of: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
        for asset in self.assets.iter().filter(|asset| asset.kind.as_deref() == Some("workstation")) {
            if let Some(owner) = &asset.owner {
                workstations_of.entry(owner).or_default().push(asset.hostname.clone());
            }
        }
        for person in &mut self.people {
            person.workstations = workstations_of.remove(person.id.as_str()).unwrap_or_default();
        }
    }

    /// How an entry of this source is named in reports.
    pub fn label(&self, origin: &str) -> String {
        format!("source {}: {origin}", self.source)
    }
}
