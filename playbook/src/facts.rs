//! What the directory and the case history know about an alert's systems and accounts.
//!
//! The `config` crate fills these in from the directory; the engine only reads them. Anything
//! the directory does not know stays `None` or `Unknown` and is shown as unknown, never assumed
//! benign.

use serde::{Deserialize, Serialize};

use crate::ids::{PersonId, Snowflake};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    User,
    Service,
    System,
    Unknown,
}

impl AccountKind {
    pub fn id(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Service => "service",
            AccountKind::System => "system",
            AccountKind::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetKind {
    Workstation,
    Server,
    Jump,
    Management,
    Development,
    Preproduction,
    DomainController,
}

impl AssetKind {
    pub const ALL: [AssetKind; 7] = [
        AssetKind::Workstation,
        AssetKind::Server,
        AssetKind::Jump,
        AssetKind::Management,
        AssetKind::Development,
        AssetKind::Preproduction,
        AssetKind::DomainController,
    ];

    pub fn id(self) -> &'static str {
        match self {
            AssetKind::Workstation => "workstation",
            AssetKind::Server => "server",
            AssetKind::Jump => "jump",
            AssetKind::Management => "management",
            AssetKind::Development => "development",
            AssetKind::Preproduction => "preproduction",
            AssetKind::DomainController => "domain_controller",
        }
    }

    pub fn from_id(id: &str) -> Option<AssetKind> {
        let id = id.trim().to_ascii_lowercase().replace('-', "_");
        AssetKind::ALL.into_iter().find(|kind| kind.id() == id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

impl Criticality {
    pub const ALL: [Criticality; 4] = [Criticality::Low, Criticality::Medium, Criticality::High, Criticality::Critical];

    pub fn id(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    pub fn from_id(id: &str) -> Option<Criticality> {
        Criticality::ALL.into_iter().find(|level| level.id() == id.trim().to_ascii_lowercase())
    }
}

/// A person as a confirmer or clicker: enough to ping them and to check who clicked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    pub id: PersonId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord_id: Option<Snowflake>,
    /// People allowed to answer in this person's place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegates: Vec<PersonRef>,
}

/// A person behind an account, with what the scenarios test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonFacts {
    pub person: PersonRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub roles: Vec<String>,
    /// Short, lower-cased hostnames of the person's own workstations.
    pub workstations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<PersonRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFacts {
    pub kind: AccountKind,
    /// The person the account belongs to (user accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<PersonFacts>,
    /// The person responsible for the account (service accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PersonRef>,
    /// What the account exists for (service accounts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareFacts {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PersonId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdrId {
    pub vendor: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetFacts {
    pub hostname: String,
    pub kind: AssetKind,
    pub criticality: Criticality,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<PersonRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edr_ids: Vec<EdrId>,
    /// Lower-cased names of the service accounts dedicated to this machine's own work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareFacts>,
}

/// Everything the directory knows about one alert. `None` means "not in the directory".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<AssetFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<AssetFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<AccountFacts>,
    /// Set when these facts come from a directory snapshot older than the configured age (a
    /// source has not synced since then): when that snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<crate::time::Timestamp>,
}

/// One earlier confirmation that this movement was expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastConfirmation {
    pub by: String,
    pub at: Timestamp,
}

/// How often this (account, source, target, protocol) was seen before, and who vouched for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// How many of those sightings were failed attempts (a refused logon or ticket).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_expected: Vec<PastConfirmation>,
    /// How many distinct systems the same source reached recently; `None` when not tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_distinct_targets: Option<u64>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}
