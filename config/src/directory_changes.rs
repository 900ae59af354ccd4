//! What changed between two compilations of the directory, as the audit log records it and as
//! `vouch directory sync --dry-run` prints it; and whether a change removes too much at once.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
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

/// The changes between two directories: each one listed while they are few, all of them counted
/// by kind. A source's first load changes hundreds of thousands of entries; nobody reads those
/// one by one (the audit log summarizes them), and holding them all would cost a sync as much
/// memory again as the directory itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirectoryChanges {
    listed: Vec<DirectoryChange>,
    count: usize,
    by_kind: BTreeMap<&'static str, usize>,
}

impl DirectoryChanges {
    /// Changes listed one by one at most; beyond, they are only counted.
    pub const MOST_LISTED: usize = 1_000;

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first changes, in order (all of them when `is_complete`).
    pub fn listed(&self) -> &[DirectoryChange] {
        &self.listed
    }

    /// Whether every change is listed.
    pub fn is_complete(&self) -> bool {
        self.listed.len() == self.count
    }

    /// How many changes of each kind (`DirectoryChange::kind`).
    pub fn by_kind(&self) -> &BTreeMap<&'static str, usize> {
        &self.by_kind
    }

    fn push(&mut self, change: DirectoryChange) {
        self.count += 1;
        *self.by_kind.entry(change.kind()).or_default() += 1;
        if self.listed.len() < Self::MOST_LISTED {
            self.listed.push(change);
        }
    }

    fn append(&mut self, other: DirectoryChanges) {
        self.count += other.count;
        for (kind, count) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += count;
        }
        let room = Self::MOST_LISTED.saturating_sub(self.listed.len());
        self.listed.extend(other.listed.into_iter().take(room));
    }
}

/// How much of what the old directory held a new one drops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    pub people: f64,
    pub assets: f64,
}

/// Where a key stands between two maps.
enum Side<'m, V> {
    Removed(&'m V),
    Added(&'m V),
    InBoth(&'m V, &'m V),
}

/// Walks two maps sorted by key (as a compiled directory's are) together, each key once with its
/// value before and after: one pass over both, where looking every key up in the other map
/// costs a lookup each.
fn side_by_side<'m, K: Ord, V>(
    before: &'m IndexMap<K, V>,
    after: &'m IndexMap<K, V>,
) -> impl Iterator<Item = (&'m K, Side<'m, V>)> + 'm {
    let mut before = before.iter().peekable();
    let mut after = after.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (before.peek(), after.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((before_key, _)), Some((after_key, _))) => before_key.cmp(after_key),
        };
        match order {
            Ordering::Less => before.next().map(|(key, value)| (key, Side::Removed(value))),
            Ordering::Greater => after.next().map(|(key, value)| (key, Side::Added(value))),
            Ordering::Equal => {
                before.next().zip(after.next()).map(|((key, old), (_, new))| (key, Side::InBoth(old, new)))
            }
        }
    })
}

impl Directory {
    /// Every change from this directory to `new`, people first, in a stable order: for each of
    /// people, accounts and machines, what was removed or changed, then what was added.
    pub fn changes_to(&self, new: &Directory) -> DirectoryChanges {
        let mut changes = DirectoryChanges::default();
        let mut added = DirectoryChanges::default();
        let text = |id: &Option<vouch_playbook::PersonId>| id.as_ref().map(ToString::to_string);
        for (_, pair) in side_by_side(&self.people, &new.people) {
            match pair {
                Side::Added(after) => added.push(DirectoryChange::PersonAdded { person: after.id.to_string() }),
                Side::Removed(before) => changes.push(DirectoryChange::PersonRemoved { person: before.id.to_string() }),
                Side::InBoth(before, after)
                    if before.manager == after.manager
                        && before.roles == after.roles
                        && before.discord_id == after.discord_id => {}
                Side::InBoth(before, after) => {
                    let person = after.id.to_string();
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
        changes.append(std::mem::take(&mut added));
        for (name, pair) in side_by_side(&self.accounts, &new.accounts) {
            match pair {
                Side::Added(_) => added.push(DirectoryChange::AccountAdded { account: name.clone() }),
                Side::Removed(_) => changes.push(DirectoryChange::AccountRemoved { account: name.clone() }),
                Side::InBoth(before, after) if before.holder() != after.holder() => {
                    changes.push(DirectoryChange::AccountHolderChanged {
                        account: name.clone(),
                        from: before.holder().map(ToString::to_string),
                        to: after.holder().map(ToString::to_string),
                    })
                }
                Side::InBoth(..) => {}
            }
        }
        changes.append(std::mem::take(&mut added));
        for (_, pair) in side_by_side(&self.assets, &new.assets) {
            match pair {
                Side::Added(after) => added.push(DirectoryChange::AssetAdded { hostname: after.hostname.clone() }),
                Side::Removed(before) => {
                    changes.push(DirectoryChange::AssetRemoved { hostname: before.hostname.clone() })
                }
                Side::InBoth(before, after) => {
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
        changes.append(std::mem::take(&mut added));
        changes
    }

    /// The share of this directory's people and machines that `new` no longer holds.
    pub fn removal_to(&self, new: &Directory) -> Removal {
        let share = |removed: usize, total: usize| if total == 0 { 0.0 } else { removed as f64 / total as f64 };
        let people_removed =
            side_by_side(&self.people, &new.people).filter(|(_, side)| matches!(side, Side::Removed(_))).count();
        let assets_removed =
            side_by_side(&self.assets, &new.assets).filter(|(_, side)| matches!(side, Side::Removed(_))).count();
        Removal { people: share(people_removed, self.people.len()), assets: share(assets_removed, self.assets.len()) }
    }
}
