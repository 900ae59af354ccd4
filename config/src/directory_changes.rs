//! What changed between two compilations of the directory, as the audit log records it and as
//! `vouch directory sync --dry-run` prints it; and whether a change removes too much at once.

use std::fmt;

use serde::Serialize;

use crate::directory::Directory;

/// One change a sync made to what Vouch believes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DirectoryChange {
    PersonAdded { person: String },
    PersonRemoved { person: String },
    ManagerChanged { person: String, from: Option<String>, to: Option<String> },
    RolesChanged { person: String, from: Vec<String>, to: Vec<String> },
    DiscordIdChanged { person: String, from: Option<String>, to: Option<String> },
    AccountAdded { account: String },
    AccountRemoved { account: String },
    AccountHolderChanged { account: String, from: Option<String>, to: Option<String> },
    AssetAdded { hostname: String },
    AssetRemoved { hostname: String },
    OwnerChanged { hostname: String, from: Option<String>, to: Option<String> },
    AssetKindChanged { hostname: String, from: String, to: String },
}

impl DirectoryChange {
    /// The audit record kind's suffix (`directory.<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            DirectoryChange::PersonAdded { .. } => "person_added",
            DirectoryChange::PersonRemoved { .. } => "person_removed",
            DirectoryChange::ManagerChanged { .. } => "manager_changed",
            DirectoryChange::RolesChanged { .. } => "roles_changed",
            DirectoryChange::DiscordIdChanged { .. } => "discord_id_changed",
            DirectoryChange::AccountAdded { .. } => "account_added",
            DirectoryChange::AccountRemoved { .. } => "account_removed",
            DirectoryChange::AccountHolderChanged { .. } => "account_holder_changed",
            DirectoryChange::AssetAdded { .. } => "asset_added",
            DirectoryChange::AssetRemoved { .. } => "asset_removed",
            DirectoryChange::OwnerChanged { .. } => "owner_changed",
            DirectoryChange::AssetKindChanged { .. } => "asset_kind_changed",
        }
    }
}

fn or_none(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("nobody")
}

impl fmt::Display for DirectoryChange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirectoryChange::PersonAdded { person } => write!(formatter, "+ person {person}"),
            DirectoryChange::PersonRemoved { person } => write!(formatter, "- person {person}"),
            DirectoryChange::ManagerChanged { person, from, to } => {
                write!(formatter, "~ person {person}: manager {} -> {}", or_none(from), or_none(to))
            }
            DirectoryChange::RolesChanged { person, from, to } => {
                write!(formatter, "~ person {person}: roles [{}] -> [{}]", from.join(", "), to.join(", "))
            }
            DirectoryChange::DiscordIdChanged { person, from, to } => {
                write!(formatter, "~ person {person}: Discord id {} -> {}", or_none(from), or_none(to))
            }
            DirectoryChange::AccountAdded { account } => write!(formatter, "+ account {account}"),
            DirectoryChange::AccountRemoved { account } => write!(formatter, "- account {account}"),
            DirectoryChange::AccountHolderChanged { account, from, to } => {
                write!(formatter, "~ account {account}: holder {} -> {}", or_none(from), or_none(to))
            }
            DirectoryChange::AssetAdded { hostname } => write!(formatter, "+ asset {hostname}"),
            DirectoryChange::AssetRemoved { hostname } => write!(formatter, "- asset {hostname}"),
            DirectoryChange::OwnerChanged { hostname, from, to } => {
                write!(formatter, "~ asset {hostname}: owner {} -> {}", or_none(from), or_none(to))
            }
            DirectoryChange::AssetKindChanged { hostname, from, to } => {
                write!(formatter, "~ asset {hostname}: kind {from} -> {to}")
            }
        }
    }
}

/// How much of what the old directory held a new one drops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    pub people: f64,
    pub assets: f64,
}

impl Directory {
    /// Every change from this directory to `new`, people first, in a stable order.
    pub fn changes_to(&self, new: &Directory) -> Vec<DirectoryChange> {
        let mut changes = Vec::new();
        let text = |id: &Option<vouch_playbook::PersonId>| id.as_ref().map(ToString::to_string);
        for (id, before) in &self.people {
            match new.people.get(id) {
                None => changes.push(DirectoryChange::PersonRemoved { person: id.to_string() }),
                Some(after)
                    if before.manager == after.manager
                        && before.roles == after.roles
                        && before.discord_id == after.discord_id => {}
                Some(after) => {
                    let person = id.to_string();
                    if before.manager != after.manager {
                        changes.push(DirectoryChange::ManagerChanged {
                            person: person.clone(),
                            from: text(&before.manager),
                            to: text(&after.manager),
                        });
                    }
                    // Roles are a set: the same roles in another order are no change (sorted
                    // copies are made only when the lists differ at all).
                    if before.roles != after.roles {
                        let (mut from, mut to) = (before.roles.clone(), after.roles.clone());
                        from.sort();
                        to.sort();
                        if from != to {
                            changes.push(DirectoryChange::RolesChanged { person: person.clone(), from, to });
                        }
                    }
                    if before.discord_id != after.discord_id {
                        changes.push(DirectoryChange::DiscordIdChanged {
                            person,
                            from: before.discord_id.map(|id| id.to_string()),
                            to: after.discord_id.map(|id| id.to_string()),
                        });
                    }
                }
            }
        }
        for id in new.people.keys().filter(|id| !self.people.contains_key(*id)) {
            changes.push(DirectoryChange::PersonAdded { person: id.to_string() });
        }
        for (name, before) in &self.accounts {
            match new.accounts.get(name) {
                None => changes.push(DirectoryChange::AccountRemoved { account: name.clone() }),
                Some(after) if before.holder != after.holder => changes.push(DirectoryChange::AccountHolderChanged {
                    account: name.clone(),
                    from: text(&before.holder),
                    to: text(&after.holder),
                }),
                Some(_) => {}
            }
        }
        for name in new.accounts.keys().filter(|name| !self.accounts.contains_key(*name)) {
            changes.push(DirectoryChange::AccountAdded { account: name.clone() });
        }
        for (key, before) in &self.assets {
            match new.assets.get(key) {
                None => changes.push(DirectoryChange::AssetRemoved { hostname: before.hostname.clone() }),
                Some(after) => {
                    if before.owner != after.owner {
                        changes.push(DirectoryChange::OwnerChanged {
                            hostname: after.hostname.clone(),
                            from: text(&before.owner),
                            to: text(&after.owner),
                        });
                    }
                    if before.kind != after.kind {
                        changes.push(DirectoryChange::AssetKindChanged {
                            hostname: after.hostname.clone(),
                            from: before.kind.id().to_string(),
                            to: after.kind.id().to_string(),
                        });
                    }
                }
            }
        }
        for (key, after) in &new.assets {
            if !self.assets.contains_key(key) {
                changes.push(DirectoryChange::AssetAdded { hostname: after.hostname.clone() });
            }
        }
        changes
    }

    /// The share of this directory's people and machines that `new` no longer holds.
    pub fn removal_to(&self, new: &Directory) -> Removal {
        let share = |removed: usize, total: usize| if total == 0 { 0.0 } else { removed as f64 / total as f64 };
        let people_removed = self.people.keys().filter(|id| !new.people.contains_key(*id)).count();
        let assets_removed = self.assets.keys().filter(|key| !new.assets.contains_key(*key)).count();
        Removal { people: share(people_removed, self.people.len()), assets: share(assets_removed, self.assets.len()) }
    }
}
