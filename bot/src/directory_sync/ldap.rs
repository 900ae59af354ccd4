//! Reads people, service accounts and computers from an LDAP directory (Active Directory or any
//! RFC 4511 server) into a [`SourceSnapshot`]: simple bind (LDAPS or StartTLS with a CA file),
//! paged searches (RFC 2696), the manager and `managedBy` links resolved to person ids, group
//! membership mapped to roles, computers' kind and criticality from OU and group rules.
//!
//! Every entry is hostile input: values are capped, entries without a usable login or hostname
//! are reported with their DN and left out, never guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use vouch_config::{ComputerRule, LdapSource, SourceSnapshot, SyncedAccount, SyncedAsset, SyncedPerson};
use vouch_playbook::facts::AssetKind;
use vouch_playbook::model::cap;
use vouch_playbook::Timestamp;

/// Longest value kept from one attribute.
const MAX_VALUE: usize = 512;
/// Most values kept from one multi-valued attribute (group membership).
const MAX_VALUES: usize = 1024;

/// Why a sync from LDAP failed; the last good snapshot stays.
#[derive(Debug, thiserror::Error)]
pub enum LdapSyncError {
    #[error("cannot reach or bind to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the search under {base} for {filter} failed: {reason}")]
    Search { base: String, filter: String, reason: String },
    #[error("the CA file {path} is not usable: {reason}")]
    CaFile { path: String, reason: String },
}

/// One entry, kept compact: a directory of 150 000 entries is read whole, and a map per entry
/// would cost more than the entries themselves. Attribute names are looked up without regard to
/// case (servers return them as their schema spells them).
struct Entry {
    dn: String,
    /// The first value of each attribute read, by its place in the search's attribute list.
    values: Vec<(u8, String)>,
    /// Group links: `memberOf` on people and machines, `member` on groups.
    members: Vec<String>,
    names: Arc<[String]>,
}

/// The attributes listing group links, kept whole rather than as a first value.
const LINK_ATTRIBUTES: [&str; 2] = ["memberof", "member"];

impl Entry {
    fn from(entry: SearchEntry, names: &Arc<[String]>) -> Entry {
        let mut values = Vec::new();
        let mut members = Vec::new();
        for (name, found) in entry.attrs {
            let lowered = name.to_ascii_lowercase();
            if LINK_ATTRIBUTES.contains(&lowered.as_str()) {
                members.extend(found.iter().take(MAX_VALUES).map(|value| cap(value, MAX_VALUE)));
            } else if let Some(index) = names.iter().position(|known| *known == lowered) {
                if let Some(first) = found.first() {
                    values.push((index as u8, cap(first, MAX_VALUE)));
                }
            }
        }
        Entry { dn: cap(&entry.dn, MAX_VALUE), values, members, names: Arc::clone(names) }
    }

    fn first(&self, name: &str) -> Option<String> {
        let index = self.names.iter().position(|known| known.eq_ignore_ascii_case(name))?;
        self.values
            .iter()
            .find(|(at, _)| usize::from(*at) == index)
            .map(|(_, value)| value.clone())
            .filter(|value| !value.is_empty())
    }

    /// The groups the entry belongs to (`memberOf`), or a group's members (`member`).
    fn links(&self) -> &[String] {
        &self.members
    }

    fn dn_key(&self) -> String {
        normalize_dn(&self.dn)
    }
}

/// DNs compare without case and without spaces after commas.
fn normalize_dn(dn: &str) -> String {
    dn.split(',').map(|part| part.trim().to_ascii_lowercase()).collect::<Vec<_>>().join(",")
}

fn is_under(dn_key: &str, ou_key: &str) -> bool {
    dn_key == ou_key || dn_key.ends_with(&format!(",{ou_key}"))
}

/// What one read of the source returned, before it becomes a snapshot.
pub struct LdapEntries {
    people: Vec<Entry>,
    services: Vec<Entry>,
    computers: Vec<Entry>,
    groups: Vec<Entry>,
    /// Whether these are only the entries changed since the previous snapshot's cursor.
    continues_previous: bool,
    /// The previous snapshot's cursor and last whole read, kept when this read continues it.
    cursor: Option<String>,
    full_synced_at: Option<Timestamp>,
}

/// What reading a source found, and the entries it left out with why.
pub struct LdapRead {
    pub snapshot: SourceSnapshot,
    pub skipped: Vec<String>,
}

/// Reads the source: whole when there is no `previous` snapshot or a full sync is due (the
/// `full_sync` schedule), else only the entries changed since the previous read (by the
/// `change_attribute`), to be merged into `previous` by [`LdapEntries::assemble`]. Groups are
/// always read whole (few, and their membership gives roles).
pub async fn read(
    name: &str,
    source: &LdapSource,
    now: Timestamp,
    previous: Option<&SourceSnapshot>,
) -> Result<LdapEntries, LdapSyncError> {
    let incremental = SourceSnapshot::to_continue(previous, &source.full_sync, now);
    let changed_since = |filter: &str| match incremental.and_then(|previous| previous.cursor.as_deref()) {
        Some(cursor) => format!("(&{filter}({}>={cursor}))", source.change_attribute),
        None => filter.to_string(),
    };
    let mut ldap = connect(source).await?;
    let login = source.login_attribute.as_str();
    let change = source.change_attribute.as_str();
    let mut person_attributes =
        vec![login, "userPrincipalName", "displayName", "cn", "manager", "memberOf", "department", change];
    if let Some(discord) = &source.discord_id_attribute {
        person_attributes.push(discord.as_str());
    }
    let people = search(&mut ldap, source, &changed_since(&source.people_filter), &person_attributes).await?;
    let service_attributes = [login, "managedBy", "description", "memberOf", change];
    let services =
        search(&mut ldap, source, &changed_since(&source.service_accounts_filter), &service_attributes).await?;
    let computer_attributes = ["cn", "dNSHostName", "managedBy", "memberOf", change];
    let computers = search(&mut ldap, source, &changed_since(&source.computers_filter), &computer_attributes).await?;
    let groups = if source.roles.is_empty() && source.computer_rules.iter().all(|rule| rule.group.is_none()) {
        Vec::new()
    } else {
        search(&mut ldap, source, &source.groups_filter, &["member"]).await?
    };
    let _ = ldap.unbind().await;
    tracing::info!(
        source = name,
        read = if incremental.is_some() { "incremental" } else { "full" },
        people = people.len(),
        computers = computers.len(),
        "read the LDAP directory"
    );
    // Change markers compare by length, then as text: that orders integers (uSNChanged) and the
    // fixed-width time stamps and CSNs alike.
    let newest = people
        .iter()
        .chain(&services)
        .chain(&computers)
        .filter_map(|entry| entry.first(change))
        .max_by(|a, b| (a.len(), a.as_str()).cmp(&(b.len(), b.as_str())));
    Ok(LdapEntries {
        cursor: newest.or_else(|| incremental.and_then(|previous| previous.cursor.clone())),
        full_synced_at: match incremental {
            Some(previous) => previous.full_synced_at,
            None => Some(now),
        },
        continues_previous: incremental.is_some(),
        people,
        services,
        computers,
        groups,
    })
}

impl LdapEntries {
    /// The source's new snapshot: these entries, merged into `previous` (the snapshot the read
    /// was given, taken by value so its entries move rather than being copied) when the read
    /// continued it.
    pub fn assemble(
        self,
        name: &str,
        source: &LdapSource,
        now: Timestamp,
        previous: Option<SourceSnapshot>,
    ) -> LdapRead {
        let previous = previous.filter(|_| self.continues_previous);
        let mut read = assemble(name, source, now, self.people, self.services, self.computers, &self.groups, previous);
        read.snapshot.cursor = self.cursor;
        read.snapshot.full_synced_at = self.full_synced_at;
        read
    }
}

async fn connect(source: &LdapSource) -> Result<ldap3::Ldap, LdapSyncError> {
    let connect_error = |reason: String| LdapSyncError::Connect { url: source.url.clone(), reason };
    let mut settings = LdapConnSettings::new().set_conn_timeout(source.timeout).set_starttls(source.starttls);
    if let Some(path) = &source.ca_file {
        settings = settings.set_config(Arc::new(tls_config(path)?));
    }
    let (connection, mut ldap) =
        LdapConnAsync::with_settings(settings, &source.url).await.map_err(|error| connect_error(error.to_string()))?;
    ldap3::drive!(connection);
    if let (Some(dn), Some(password)) = (&source.bind_dn, &source.bind_password) {
        ldap.with_timeout(source.timeout);
        ldap.simple_bind(dn, password.expose())
            .await
            .and_then(|result| result.success())
            .map_err(|error| connect_error(error.to_string()))?;
    }
    Ok(ldap)
}

fn tls_config(path: &std::path::Path) -> Result<rustls::ClientConfig, LdapSyncError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca_error = |reason: String| LdapSyncError::CaFile { path: path.display().to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|error| ca_error(error.to_string()))? {
        roots
            .add(certificate.map_err(|error| ca_error(error.to_string()))?)
            .map_err(|error| ca_error(error.to_string()))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_error(error.to_string()))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
}

async fn search(
    ldap: &mut ldap3::Ldap,
    source: &LdapSource,
    filter: &str,
    attributes: &[&str],
) -> Result<Vec<Entry>, LdapSyncError> {
    let search_error =
        |reason: String| LdapSyncError::Search { base: source.base_dn.clone(), filter: filter.to_string(), reason };
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(source.page_size))];
    let names: Arc<[String]> = attributes.iter().map(|name| name.to_ascii_lowercase()).collect();
    let attributes: Vec<String> = attributes.iter().map(|name| name.to_string()).collect();
    ldap.with_timeout(source.timeout);
    let mut stream = ldap
        .streaming_search_with(adapters, &source.base_dn, Scope::Subtree, filter, attributes)
        .await
        .map_err(|error| search_error(error.to_string()))?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await.map_err(|error| search_error(error.to_string()))? {
        entries.push(Entry::from(SearchEntry::construct(entry), &names));
    }
    stream.finish().await.success().map_err(|error| search_error(error.to_string()))?;
    Ok(entries)
}

/// Turns the entries into a snapshot: links resolved, roles and rules applied. With a
/// `previous` snapshot the entries are what changed since it, and replace its entries of the
/// same DN; roles and workstations are worked out again for everyone.
#[allow(clippy::too_many_arguments)]
fn assemble(
    name: &str,
    source: &LdapSource,
    now: Timestamp,
    people: Vec<Entry>,
    services: Vec<Entry>,
    computers: Vec<Entry>,
    groups: &[Entry],
    previous: Option<SourceSnapshot>,
) -> LdapRead {
    let mut skipped = Vec::new();
    let login = source.login_attribute.as_str();
    // Group DN -> member DNs, for entries whose server keeps no `memberOf`.
    let mut members_of_group: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for group in groups {
        members_of_group.insert(group.dn_key(), group.links().iter().map(|dn| normalize_dn(dn)).collect());
    }
    let groups_of = |entry: &Entry| -> BTreeSet<String> {
        let mut found: BTreeSet<String> = entry.links().iter().map(|dn| normalize_dn(dn)).collect();
        let key = entry.dn_key();
        found.extend(
            members_of_group.iter().filter(|(_, members)| members.contains(&key)).map(|(group, _)| group.clone()),
        );
        found
    };
    // The configured DNs, normalized once rather than per entry.
    let service_ous: Vec<String> = source.service_account_ous.iter().map(|ou| normalize_dn(ou)).collect();
    let computer_rules: Vec<(Option<String>, Option<String>, &ComputerRule)> = source
        .computer_rules
        .iter()
        .map(|rule| (rule.under.as_deref().map(normalize_dn), rule.group.as_deref().map(normalize_dn), rule))
        .collect();
    let role_groups: Vec<(String, &String)> =
        source.roles.iter().map(|(group, role)| (normalize_dn(group), role)).collect();
    let is_service_ou = |entry: &Entry| {
        let key = entry.dn_key();
        service_ous.iter().any(|ou| is_under(&key, ou))
    };

    // Person ids by DN, so managers and owners resolve (those read before too).
    let mut person_by_dn: BTreeMap<String, String> = previous
        .as_ref()
        .map(|previous| {
            previous.people.iter().map(|person| (normalize_dn(&person.origin), person.id.clone())).collect()
        })
        .unwrap_or_default();
    let (service_people, people): (Vec<Entry>, Vec<Entry>) = people.into_iter().partition(|entry| is_service_ou(entry));
    for entry in &people {
        match entry.first(login) {
            Some(id) => {
                person_by_dn.insert(entry.dn_key(), id.to_ascii_lowercase());
            }
            None => skipped.push(format!("{}: no {login}", entry.dn)),
        }
    }
    let person_of = |dn: Option<String>| dn.and_then(|dn| person_by_dn.get(&normalize_dn(&dn)).cloned());

    // Each entry is dropped as soon as it is turned into the snapshot's: a large source's
    // entries and its snapshot are not held whole side by side.
    let mut snapshot = SourceSnapshot { source: name.to_string(), synced_at: Some(now), ..SourceSnapshot::default() };
    snapshot.assets.reserve(computers.len());
    for entry in computers {
        let entry = &entry;
        let Some(hostname) = entry.first("dNSHostName").or_else(|| entry.first("cn")) else {
            skipped.push(format!("{}: no dNSHostName or cn", entry.dn));
            continue;
        };
        let key = entry.dn_key();
        let groups = groups_of(entry);
        let rule = computer_rules
            .iter()
            .find(|(under, group, _)| {
                under.as_deref().is_some_and(|ou| is_under(&key, ou))
                    || group.as_ref().is_some_and(|group| groups.contains(group))
            })
            .map(|(_, _, rule)| *rule);
        snapshot.assets.push(SyncedAsset {
            hostname,
            origin: entry.dn.clone(),
            ips: Vec::new(),
            kind: Some(rule.and_then(|rule| rule.kind).unwrap_or(AssetKind::Server).id().to_string()),
            criticality: rule.and_then(|rule| rule.criticality).map(|level| level.id().to_string()),
            owner: person_of(entry.first("managedBy")),
        });
    }
    let mut people_found = Vec::with_capacity(people.len());
    for entry in people {
        let entry = &entry;
        let Some(id) = entry.first(login).map(|id| id.to_ascii_lowercase()) else { continue };
        let groups = groups_of(entry);
        let roles =
            role_groups.iter().filter(|(group, _)| groups.contains(group)).map(|(_, role)| (*role).clone()).collect();
        let mut accounts = vec![id.clone()];
        if let Some(upn) = entry.first("userPrincipalName") {
            accounts.push(upn.to_ascii_lowercase());
        }
        people_found.push(SyncedPerson {
            id: id.clone(),
            origin: entry.dn.clone(),
            name: entry.first("displayName").or_else(|| entry.first("cn")),
            discord_id: source.discord_id_attribute.as_deref().and_then(|attribute| entry.first(attribute)),
            manager: person_of(entry.first("manager")),
            team: entry.first("department"),
            roles,
            workstations: Vec::new(),
            accounts,
        });
    }
    snapshot.people = people_found;
    for entry in services.iter().chain(service_people.iter()) {
        let Some(account) = entry.first(login) else {
            skipped.push(format!("{}: no {login}", entry.dn));
            continue;
        };
        snapshot.accounts.push(SyncedAccount {
            name: account.to_ascii_lowercase(),
            origin: entry.dn.clone(),
            kind: "service".to_string(),
            owner: person_of(entry.first("managedBy")),
            service: entry.first("description"),
        });
    }
    // The DN index of a large source is let go of before the snapshots are merged.
    drop(person_by_dn);
    if let Some(previous) = previous {
        // Everyone's roles come again from the groups (read whole), as membership may have
        // changed in a group rather than on the person.
        let role_members: Vec<(Option<&BTreeSet<String>>, &String)> =
            role_groups.iter().map(|(group, role)| (members_of_group.get(group), *role)).collect();
        let read_now: BTreeSet<String> = snapshot.people.iter().map(|person| person.origin.clone()).collect();
        snapshot.people = merge_by_origin(previous.people, snapshot.people, |person| &person.origin);
        if !groups.is_empty() {
            for person in snapshot.people.iter_mut().filter(|person| !read_now.contains(&person.origin)) {
                let key = normalize_dn(&person.origin);
                person.roles = role_members
                    .iter()
                    .filter(|(members, _)| members.is_some_and(|members| members.contains(&key)))
                    .map(|(_, role)| (*role).clone())
                    .collect();
            }
        }
        snapshot.accounts = merge_by_origin(previous.accounts, snapshot.accounts, |account| &account.origin);
        snapshot.assets = merge_by_origin(previous.assets, snapshot.assets, |asset| &asset.origin);
    }
    // A workstation a person manages is theirs.
    snapshot.give_people_their_workstations();
    LdapRead { snapshot, skipped }
}

/// The previous entries with the changed ones (same DN, as the server writes it each time)
/// replaced and the new ones added.
fn merge_by_origin<T>(mut previous: Vec<T>, changed: Vec<T>, origin: impl Fn(&T) -> &String) -> Vec<T> {
    let changed_keys: BTreeSet<&str> = changed.iter().map(|entry| origin(entry).as_str()).collect();
    previous.retain(|entry| !changed_keys.contains(origin(entry).as_str()));
    drop(changed_keys);
    previous.extend(changed);
    previous
}
