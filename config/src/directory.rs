//! The directory: people, accounts and assets, from a TOML file and optional CSV exports.
//!
//! SOCs keep asset and staff lists in spreadsheets, so `assets_csv` and `people_csv` are read
//! beside the TOML file. Both sources go through one validation, which reports every problem.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use vouch_playbook::facts::{
    AccountFacts, AccountKind, AssetFacts, AssetKind, Criticality, EdrId, Facts, PersonFacts, PersonRef, ShareFacts,
};
use vouch_playbook::model::{short_hostname, Account as AlertAccount, System};
use vouch_playbook::{Alert, PersonId, Snowflake};

use crate::reader::{SourceFile, TableReader};
use crate::synced::{SourceSnapshot, SyncedAccount, SyncedAsset, SyncedPerson};
use crate::{with_toml, ConfigProblem};

/// The local overlay: the directory file and its optional CSV exports.
#[derive(Debug, Clone, Default)]
pub struct DirectoryFiles {
    pub file: PathBuf,
    pub assets_csv: Option<PathBuf>,
    pub people_csv: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: PersonId,
    pub name: String,
    pub discord_id: Option<Snowflake>,
    pub manager: Option<PersonId>,
    pub team: Option<String>,
    pub roles: Vec<String>,
    /// Short, lower-cased hostnames.
    pub workstations: Vec<String>,
    pub delegates: Vec<PersonId>,
    /// Which source (or overlay file and line) said each field, for `vouch directory show`.
    pub said_by: SaidBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Lower-cased account name, without domain.
    pub name: String,
    pub kind: AccountKind,
    pub holder: Option<PersonId>,
    pub owner: Option<PersonId>,
    pub service: Option<String>,
    pub said_by: SaidBy,
}

/// An account as the directory keeps it. Most accounts of a large organisation are its people's
/// own logins and UPNs (two per person), whose every fact is their holder's: such an entry is
/// a pointer to the person, not a copy (about 27 MiB less for 50 000 people, held twice while a
/// sync compiles the next directory beside the one in use).
#[derive(Debug, Clone)]
pub(crate) enum AccountEntry {
    /// An account listed with facts of its own (a service account, an admin account).
    Listed(Arc<Account>),
    /// A user account named by the person who holds it.
    HeldBy(Arc<Person>),
}

impl AccountEntry {
    fn kind(&self) -> AccountKind {
        match self {
            AccountEntry::Listed(account) => account.kind,
            AccountEntry::HeldBy(_) => AccountKind::User,
        }
    }

    pub(crate) fn holder(&self) -> Option<&PersonId> {
        match self {
            AccountEntry::Listed(account) => account.holder.as_ref(),
            AccountEntry::HeldBy(person) => Some(&person.id),
        }
    }

    /// The account named `name` (this entry's key) with all its facts.
    fn account(&self, name: &str) -> Cow<'_, Account> {
        match self {
            AccountEntry::Listed(account) => Cow::Borrowed(account),
            AccountEntry::HeldBy(person) => Cow::Owned(Account {
                name: name.to_string(),
                kind: AccountKind::User,
                holder: Some(person.id.clone()),
                owner: None,
                service: None,
                // The account is said by whoever said the person holds it.
                said_by: SaidBy {
                    origin: None,
                    fields: person.said_by.shared("accounts").map(|said| ("holder", said)).into_iter().collect(),
                },
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub name: String,
    pub owner: Option<PersonId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub hostname: String,
    pub ips: Vec<IpAddr>,
    pub kind: AssetKind,
    pub owner: Option<PersonId>,
    pub criticality: Criticality,
    pub edr_ids: Vec<EdrId>,
    /// Lower-cased names of the service accounts dedicated to this machine's work.
    pub service_accounts: Vec<String>,
    pub shares: Vec<Share>,
    pub said_by: SaidBy,
}

/// The compiled directory, indexed for lookups.
///
/// Its three tables are index maps (entries in one dense allocation beside a hash index)
/// sorted by key once compiled, so [`Directory::changes_to`] walks two directories in step. A
/// B-tree's nodes, about two thirds full when keys come in order, cost a third more for the
/// 250 000 entries of a large organisation, and a sync holds two directories at once. Entries
/// are shared: a sync's new directory keeps the previous one's entry wherever it compiled the
/// same, so the two together cost little more than one.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub(crate) people: IndexMap<PersonId, Arc<Person>>,
    pub(crate) accounts: IndexMap<String, AccountEntry>,
    pub(crate) assets: IndexMap<String, Arc<Asset>>,
    /// When the oldest source snapshot in this directory was taken (`None`: no source).
    pub(crate) synced_at: Option<vouch_playbook::Timestamp>,
    assets_by_ip: BTreeMap<IpAddr, String>,
    people_by_discord: BTreeMap<Snowflake, PersonId>,
}

impl Directory {
    pub fn person(&self, id: &PersonId) -> Option<&Person> {
        self.people.get(id).map(Arc::as_ref)
    }

    pub fn person_by_discord(&self, id: Snowflake) -> Option<&Person> {
        self.people_by_discord.get(&id).and_then(|person| self.person(person))
    }

    pub fn people(&self) -> impl Iterator<Item = &Person> {
        self.people.values().map(Arc::as_ref)
    }

    /// The account of that name (any case), with every fact about it; borrowed unless it is a
    /// person's own login or UPN, whose facts are the person's.
    pub fn account(&self, name: &str) -> Option<Cow<'_, Account>> {
        let key = name.to_ascii_lowercase();
        self.accounts.get(&key).map(|entry| entry.account(&key))
    }

    pub fn asset(&self, hostname: &str) -> Option<&Asset> {
        self.assets.get(&short_hostname(hostname)).map(Arc::as_ref)
    }

    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values().map(Arc::as_ref)
    }

    /// The asset an alert's system is: by hostname, else by any of its IPs.
    pub fn asset_for(&self, system: &System) -> Option<&Asset> {
        system
            .short_hostname()
            .and_then(|hostname| self.assets.get(&hostname))
            .or_else(|| system.ips.iter().find_map(|ip| self.assets_by_ip.get(ip)).and_then(|key| self.assets.get(key)))
            .map(Arc::as_ref)
    }

    fn person_ref(&self, id: &PersonId) -> Option<PersonRef> {
        let person = self.people.get(id)?;
        Some(PersonRef {
            id: person.id.clone(),
            name: person.name.clone(),
            discord_id: person.discord_id,
            delegates: person
                .delegates
                .iter()
                .filter_map(|delegate| self.people.get(delegate))
                .map(|delegate| PersonRef {
                    id: delegate.id.clone(),
                    name: delegate.name.clone(),
                    discord_id: delegate.discord_id,
                    delegates: Vec::new(),
                })
                .collect(),
        })
    }

    fn person_facts(&self, id: &PersonId) -> Option<PersonFacts> {
        let person = self.people.get(id)?;
        Some(PersonFacts {
            person: self.person_ref(id)?,
            team: person.team.clone(),
            roles: person.roles.clone(),
            workstations: person.workstations.clone(),
            manager: person.manager.as_ref().and_then(|manager| self.person_ref(manager)),
        })
    }

    fn account_facts(&self, account: &AlertAccount) -> Option<AccountFacts> {
        let known = self.accounts.get(&account.key())?;
        let (owner, service) = match known {
            AccountEntry::Listed(listed) => (listed.owner.as_ref(), listed.service.clone()),
            AccountEntry::HeldBy(_) => (None, None),
        };
        Some(AccountFacts {
            kind: known.kind(),
            holder: known.holder().and_then(|holder| self.person_facts(holder)),
            owner: owner.and_then(|owner| self.person_ref(owner)),
            service,
        })
    }

    fn asset_facts(&self, system: &System) -> Option<AssetFacts> {
        let asset = self.asset_for(system)?;
        Some(AssetFacts {
            hostname: asset.hostname.clone(),
            kind: asset.kind,
            criticality: asset.criticality,
            owner: asset.owner.as_ref().and_then(|owner| self.person_ref(owner)),
            edr_ids: asset.edr_ids.clone(),
            service_accounts: asset.service_accounts.clone(),
            shares: asset
                .shares
                .iter()
                .map(|share| ShareFacts { name: share.name.clone(), owner: share.owner.clone() })
                .collect(),
        })
    }

    /// When the oldest of the sources' snapshots behind this directory was taken.
    pub fn synced_at(&self) -> Option<vouch_playbook::Timestamp> {
        self.synced_at
    }

    /// What the directory knows about an alert's systems and accounts.
    pub fn facts_for(&self, alert: &Alert) -> Facts {
        Facts {
            stale_since: None,
            source: self.asset_facts(&alert.source),
            target: self.asset_facts(&alert.target),
            account: alert.account.as_ref().and_then(|account| self.account_facts(account)),
            acting_as: alert.acting_as.as_ref().and_then(|account| self.account_facts(account)),
        }
    }
}

/// Where an overlay entry came from: its file, line and table, for problem reports.
#[derive(Debug, Clone)]
struct OverlayOrigin {
    file: String,
    line: Option<usize>,
    path: String,
    field_lines: BTreeMap<&'static str, usize>,
}

/// Where an entry came from. A synced entry borrows its snapshot and is named only when a
/// report or `vouch directory show` needs it: a large source has hundreds of thousands.
#[derive(Debug, Clone)]
enum Origin<'a> {
    /// Boxed: synced entries, by far the most, then take half the room each.
    Overlay(Box<OverlayOrigin>),
    Synced {
        snapshot: &'a SourceSnapshot,
        /// Where the source keeps the entry (an LDAP DN).
        origin: &'a str,
        /// The entry's table and key, as a problem names them (`people`, `alice`).
        table: &'static str,
        key: &'a str,
    },
}

impl Origin<'_> {
    /// Where a value came from, as `vouch directory show` prints it.
    fn label(&self, field: &str) -> String {
        match self {
            Origin::Overlay(origin) => match origin.field_lines.get(field).copied().or(origin.line) {
                Some(line) => format!("{}:{line}", origin.file),
                None => origin.file.clone(),
            },
            Origin::Synced { snapshot, origin, .. } => snapshot.label(origin),
        }
    }

    fn problem(&self, field: &str, message: impl Into<String>) -> ConfigProblem {
        let (file, line, path) = match self {
            Origin::Overlay(origin) => {
                (origin.file.clone(), origin.field_lines.get(field).copied().or(origin.line), origin.path.clone())
            }
            Origin::Synced { snapshot, origin, table, key } => (snapshot.label(origin), None, format!("{table}.{key}")),
        };
        ConfigProblem {
            file,
            line,
            key: if field.is_empty() { path } else { format!("{path}.{field}") },
            message: message.into(),
        }
    }
}

/// A value as read: owned when it came from the overlay's files, borrowed from a snapshot (the
/// snapshots outlive the compile, and copying a large source's every field twice would double
/// the memory a sync needs).
type Text<'a> = Cow<'a, str>;

fn owned<'a>(value: Option<String>) -> Option<Text<'a>> {
    value.map(Cow::Owned)
}

fn owned_list<'a>(values: Vec<String>) -> Vec<Text<'a>> {
    values.into_iter().map(Cow::Owned).collect()
}

/// `text` in lower case, borrowed when it already is (a source's names are lower-cased as read).
fn lower_case<'a>(text: &Text<'a>) -> Text<'a> {
    match text {
        Cow::Borrowed(borrowed) if !borrowed.bytes().any(|byte| byte.is_ascii_uppercase()) => Cow::Borrowed(borrowed),
        _ => Cow::Owned(text.to_ascii_lowercase()),
    }
}

/// The short, lower-cased hostname a machine is keyed by, borrowed where it can be.
fn short_hostname_of<'a>(hostname: &Text<'a>) -> Text<'a> {
    match hostname {
        Cow::Borrowed(borrowed) => lower_case(&Cow::Borrowed(borrowed.split('.').next().unwrap_or(borrowed))),
        Cow::Owned(owned) => Cow::Owned(short_hostname(owned)),
    }
}

fn borrowed(value: &Option<String>) -> Option<Text<'_>> {
    value.as_deref().map(Cow::Borrowed)
}

fn borrowed_list(values: &[String]) -> Vec<Text<'_>> {
    values.iter().map(|value| Cow::Borrowed(value.as_str())).collect()
}

#[derive(Debug, Default)]
struct RawPerson<'a> {
    said_by: SaidBy,
    id: Option<Text<'a>>,
    name: Option<Text<'a>>,
    discord_id: Option<Text<'a>>,
    manager: Option<Text<'a>>,
    team: Option<Text<'a>>,
    roles: Vec<Text<'a>>,
    workstations: Vec<Text<'a>>,
    accounts: Vec<Text<'a>>,
    delegates: Vec<String>,
}

#[derive(Debug, Default)]
struct RawAccount<'a> {
    said_by: SaidBy,
    name: Option<Text<'a>>,
    kind: Option<Text<'a>>,
    holder: Option<String>,
    owner: Option<Text<'a>>,
    service: Option<Text<'a>>,
}

#[derive(Debug, Default)]
struct RawAsset<'a> {
    said_by: SaidBy,
    hostname: Option<Text<'a>>,
    ips: Vec<Text<'a>>,
    kind: Option<Text<'a>>,
    owner: Option<Text<'a>>,
    criticality: Option<Text<'a>>,
    edr_ids: Vec<(String, String)>,
    service_accounts: Vec<String>,
    shares: Vec<(Option<String>, Option<String>)>,
}

#[derive(Default)]
struct RawDirectory<'a> {
    people: Vec<(Origin<'a>, RawPerson<'a>)>,
    accounts: Vec<(Origin<'a>, RawAccount<'a>)>,
    assets: Vec<(Origin<'a>, RawAsset<'a>)>,
}

const PERSON_FIELDS: [&str; 9] =
    ["id", "name", "discord_id", "manager", "team", "roles", "workstations", "accounts", "delegates"];
const ACCOUNT_FIELDS: [&str; 5] = ["name", "kind", "holder", "owner", "service"];
const ASSET_FIELDS: [&str; 8] =
    ["hostname", "ips", "kind", "owner", "criticality", "edr_ids", "service_accounts", "shares"];

fn origin_of(table: &TableReader<'_>, fields: &[&'static str]) -> Origin<'static> {
    let field_lines =
        fields.iter().filter_map(|field| table.file.line_of(table.span_of(field)).map(|line| (*field, line))).collect();
    Origin::Overlay(Box::new(OverlayOrigin {
        file: table.file.name.clone(),
        line: table.file.line_of(table.span_of("")),
        path: table.path.clone(),
        field_lines,
    }))
}

fn read_toml(file: &SourceFile, raw: &mut RawDirectory<'_>) {
    with_toml(file, |root| {
        for table in root.tables("people") {
            let person = RawPerson {
                said_by: SaidBy::default(),
                id: owned(table.required_string("id")),
                name: owned(table.required_string("name")),
                discord_id: owned(table.string("discord_id")),
                manager: owned(table.string("manager")),
                team: owned(table.string("team")),
                roles: owned_list(table.strings("roles")),
                workstations: owned_list(table.strings("workstations")),
                accounts: owned_list(table.strings("accounts")),
                delegates: table.strings("delegates"),
            };
            table.finish();
            raw.people.push((origin_of(&table, &PERSON_FIELDS), person));
        }
        for table in root.tables("accounts") {
            let account = RawAccount {
                said_by: SaidBy::default(),
                name: owned(table.required_string("name")),
                kind: owned(table.required_string("kind")),
                holder: table.string("holder"),
                owner: owned(table.string("owner")),
                service: owned(table.string("service")),
            };
            table.finish();
            raw.accounts.push((origin_of(&table, &ACCOUNT_FIELDS), account));
        }
        for table in root.tables("assets") {
            let shares = table
                .tables("shares")
                .iter()
                .map(|share| {
                    let entry = (share.required_string("name"), share.string("owner"));
                    share.finish();
                    entry
                })
                .collect();
            let asset = RawAsset {
                said_by: SaidBy::default(),
                hostname: owned(table.required_string("hostname")),
                ips: owned_list(table.strings("ips")),
                kind: owned(table.required_string("kind")),
                owner: owned(table.string("owner")),
                criticality: owned(table.string("criticality")),
                edr_ids: table.entries("edr_ids"),
                service_accounts: table.strings("service_accounts"),
                shares,
            };
            table.finish();
            raw.assets.push((origin_of(&table, &ASSET_FIELDS), asset));
        }
    });
}

/// Splits a CSV cell holding a list (`a;b;c`).
fn list(cell: Option<&String>) -> Vec<String> {
    cell.map(|cell| cell.split(';').map(str::trim).filter(|item| !item.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

fn read_csv(
    path: &Path,
    known: &[&'static str],
    problems: &mut Vec<ConfigProblem>,
) -> Vec<(Origin<'static>, BTreeMap<String, String>)> {
    let name = path.display().to_string();
    let mut reader = match csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(path) {
        Ok(reader) => reader,
        Err(error) => {
            problems.push(ConfigProblem {
                file: name,
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {error}"),
            });
            return Vec::new();
        }
    };
    let headers: Vec<String> = match reader.headers() {
        Ok(headers) => headers.iter().map(|header| header.to_ascii_lowercase()).collect(),
        Err(error) => {
            problems.push(ConfigProblem {
                file: name,
                line: Some(1),
                key: String::new(),
                message: format!("no header row: {error}"),
            });
            return Vec::new();
        }
    };
    for header in &headers {
        if !known.contains(&header.as_str()) {
            problems.push(ConfigProblem {
                file: name.clone(),
                line: Some(1),
                key: header.clone(),
                message: format!("unknown column (known: {})", known.join(", ")),
            });
        }
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        match record {
            Ok(record) => {
                let line = record.position().map(|position| position.line() as usize);
                let cells = headers
                    .iter()
                    .zip(record.iter())
                    .filter(|(_, cell)| !cell.is_empty())
                    .map(|(header, cell)| (header.clone(), cell.to_string()))
                    .collect();
                rows.push((
                    Origin::Overlay(Box::new(OverlayOrigin {
                        file: name.clone(),
                        line,
                        path: format!("row {}", index + 1),
                        field_lines: BTreeMap::new(),
                    })),
                    cells,
                ));
            }
            Err(error) => problems.push(ConfigProblem {
                file: name.clone(),
                line: error.position().map(|position| position.line() as usize),
                key: String::new(),
                message: error.to_string(),
            }),
        }
    }
    rows
}

fn read_people_csv(path: &Path, raw: &mut RawDirectory<'_>, problems: &mut Vec<ConfigProblem>) {
    for (origin, cells) in read_csv(path, &PERSON_FIELDS, problems) {
        if !cells.contains_key("id") {
            problems.push(origin.problem("id", "is required"));
        }
        if !cells.contains_key("name") {
            problems.push(origin.problem("name", "is required"));
        }
        let person = RawPerson {
            said_by: SaidBy::default(),
            id: owned(cells.get("id").cloned()),
            name: owned(cells.get("name").cloned()),
            discord_id: owned(cells.get("discord_id").cloned()),
            manager: owned(cells.get("manager").cloned()),
            team: owned(cells.get("team").cloned()),
            roles: owned_list(list(cells.get("roles"))),
            workstations: owned_list(list(cells.get("workstations"))),
            accounts: owned_list(list(cells.get("accounts"))),
            delegates: list(cells.get("delegates")),
        };
        raw.people.push((origin, person));
    }
}

fn read_assets_csv(path: &Path, raw: &mut RawDirectory<'_>, problems: &mut Vec<ConfigProblem>) {
    for (origin, cells) in
        read_csv(path, &["hostname", "ips", "kind", "owner", "criticality", "edr_ids", "service_accounts"], problems)
    {
        for required in ["hostname", "kind"] {
            if !cells.contains_key(required) {
                problems.push(origin.problem(required, "is required"));
            }
        }
        let mut edr_ids = Vec::new();
        for entry in list(cells.get("edr_ids")) {
            match entry.split_once(':') {
                Some((vendor, id)) => edr_ids.push((vendor.trim().to_string(), id.trim().to_string())),
                None => problems.push(origin.problem("edr_ids", format!("`{entry}` should read vendor:id"))),
            }
        }
        let asset = RawAsset {
            said_by: SaidBy::default(),
            hostname: owned(cells.get("hostname").cloned()),
            ips: owned_list(list(cells.get("ips"))),
            kind: owned(cells.get("kind").cloned()),
            owner: owned(cells.get("owner").cloned()),
            criticality: owned(cells.get("criticality").cloned()),
            edr_ids,
            service_accounts: list(cells.get("service_accounts")),
            shares: Vec::new(),
        };
        raw.assets.push((origin, asset));
    }
}

/// Compiles the directory from the overlay files alone.
pub(crate) fn load(files: &DirectoryFiles) -> (Directory, Vec<ConfigProblem>) {
    let (directory, problems, _) = load_with_snapshots(files, &[], &Directory::default());
    (directory, problems)
}

/// Compiles the directory from the sources' last good snapshots and the overlay files, merged
/// field by field (the overlay wins, then the sources in the order given). Returns the problems
/// of the overlay (which the operator must fix) apart from those of synced entries (reported and
/// left out, never blocking a start). Entries compiled the same as in `previous` are shared
/// with it.
pub(crate) fn load_with_snapshots(
    files: &DirectoryFiles,
    snapshots: &[&SourceSnapshot],
    previous: &Directory,
) -> (Directory, Vec<ConfigProblem>, Vec<ConfigProblem>) {
    let mut raw = RawDirectory::default();
    let mut problems = Vec::new();
    match std::fs::read_to_string(&files.file) {
        Ok(text) => {
            let file = SourceFile::new(&files.file.display().to_string(), text);
            read_toml(&file, &mut raw);
            problems.extend(file.problems.take());
        }
        Err(error) => problems.push(ConfigProblem {
            file: files.file.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read the directory: {error}"),
        }),
    }
    if let Some(path) = &files.people_csv {
        read_people_csv(path, &mut raw, &mut problems);
    }
    if let Some(path) = &files.assets_csv {
        read_assets_csv(path, &mut raw, &mut problems);
    }
    // Overlay entries say every field they carry.
    for (origin, person) in &mut raw.people {
        person.said_by = said_by(origin, &PERSON_FIELDS);
    }
    for (origin, account) in &mut raw.accounts {
        account.said_by = said_by(origin, &ACCOUNT_FIELDS);
    }
    for (origin, asset) in &mut raw.assets {
        asset.said_by = said_by(origin, &ASSET_FIELDS);
    }
    let directory = compile(raw, snapshots, previous, &mut problems);
    let (synced, overlay): (Vec<ConfigProblem>, Vec<ConfigProblem>) =
        problems.into_iter().partition(|problem| problem.file.starts_with(SOURCE_PREFIX));
    (directory, overlay, synced)
}

/// How origins of synced entries begin, so their problems can be told from the overlay's.
const SOURCE_PREFIX: &str = "source ";

/// A synced entry says all its fields from one place: one shared label, not one per field.
fn said_by_source(snapshot: &SourceSnapshot, origin: &str) -> SaidBy {
    SaidBy { origin: Some(Arc::from(snapshot.label(origin))), fields: Vec::new() }
}

fn synced_person<'a>(snapshot: &'a SourceSnapshot, person: &'a SyncedPerson) -> (Origin<'a>, RawPerson<'a>) {
    (
        Origin::Synced { snapshot, origin: &person.origin, table: "people", key: &person.id },
        RawPerson {
            said_by: said_by_source(snapshot, &person.origin),
            id: Some(Cow::Borrowed(&person.id)),
            name: borrowed(&person.name).or(Some(Cow::Borrowed(&person.id))),
            discord_id: borrowed(&person.discord_id),
            manager: borrowed(&person.manager),
            team: borrowed(&person.team),
            roles: borrowed_list(&person.roles),
            workstations: borrowed_list(&person.workstations),
            accounts: borrowed_list(&person.accounts),
            delegates: Vec::new(),
        },
    )
}

fn synced_account<'a>(snapshot: &'a SourceSnapshot, account: &'a SyncedAccount) -> (Origin<'a>, RawAccount<'a>) {
    (
        Origin::Synced { snapshot, origin: &account.origin, table: "accounts", key: &account.name },
        RawAccount {
            said_by: said_by_source(snapshot, &account.origin),
            name: Some(Cow::Borrowed(&account.name)),
            kind: Some(Cow::Borrowed(&account.kind)),
            holder: None,
            owner: borrowed(&account.owner),
            service: borrowed(&account.service),
        },
    )
}

fn synced_asset<'a>(snapshot: &'a SourceSnapshot, asset: &'a SyncedAsset) -> (Origin<'a>, RawAsset<'a>) {
    (
        Origin::Synced { snapshot, origin: &asset.origin, table: "assets", key: &asset.hostname },
        RawAsset {
            said_by: said_by_source(snapshot, &asset.origin),
            hostname: Some(Cow::Borrowed(&asset.hostname)),
            ips: borrowed_list(&asset.ips),
            kind: borrowed(&asset.kind),
            owner: borrowed(&asset.owner),
            criticality: borrowed(&asset.criticality),
            edr_ids: Vec::new(),
            service_accounts: Vec::new(),
            shares: Vec::new(),
        },
    )
}

/// Every field an overlay entry sets is said by the line that sets it (the merge keeps the
/// winner's).
fn said_by(origin: &Origin<'_>, fields: &[&'static str]) -> SaidBy {
    SaidBy { origin: None, fields: fields.iter().map(|field| (*field, Arc::from(origin.label(field)))).collect() }
}

/// Which source (or overlay file and line) said each field of an entry. Most entries say every
/// field from one place, kept once; fields said elsewhere are listed apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaidBy {
    origin: Option<Arc<str>>,
    fields: Vec<(&'static str, Arc<str>)>,
}

impl SaidBy {
    /// Where `field`'s value came from.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|(name, _)| *name == field).map(|(_, origin)| &**origin).or(self.origin.as_deref())
    }

    /// Where `field`'s value came from, as a label others may share.
    fn shared(&self, field: &str) -> Option<Arc<str>> {
        self.fields.iter().find(|(name, _)| *name == field).map(|(_, origin)| origin).or(self.origin.as_ref()).cloned()
    }

    fn set(&mut self, field: &'static str, origin: Option<&str>) {
        let Some(origin) = origin else { return };
        self.fields.retain(|(name, _)| *name != field);
        if self.origin.as_deref() != Some(origin) {
            self.fields.push((field, Arc::from(origin)));
        }
    }
}

/// One table of the directory as its entries are merged: the overlay's entries (read from its
/// files) and each source's (read from its snapshot as they are needed).
struct Table<'a, Synced: 'a, Raw> {
    entries: fn(&'a SourceSnapshot) -> &'a [Synced],
    /// An entry's key in the snapshot and as read: equal for the same person, account or machine.
    synced_key: fn(&'a Synced) -> Option<Text<'a>>,
    key: fn(&Raw) -> Option<Text<'a>>,
    read: fn(&'a SourceSnapshot, &'a Synced) -> (Origin<'a>, Raw),
    /// Folds a later entry of the same key into the one kept.
    combine: fn(&mut Raw, Raw),
}

fn people_table<'a>() -> Table<'a, SyncedPerson, RawPerson<'a>> {
    Table {
        entries: |snapshot| &snapshot.people,
        synced_key: |person| Some(Cow::Borrowed(&person.id)),
        key: |person| person.id.clone(),
        read: synced_person,
        combine: |kept, other| {
            let from = other.said_by;
            let said = &mut kept.said_by;
            first(said, &from, "name", &mut kept.name, other.name);
            first(said, &from, "discord_id", &mut kept.discord_id, other.discord_id);
            first(said, &from, "manager", &mut kept.manager, other.manager);
            first(said, &from, "team", &mut kept.team, other.team);
            union(&mut kept.roles, other.roles);
            union(&mut kept.workstations, other.workstations);
            union(&mut kept.accounts, other.accounts);
        },
    }
}

fn accounts_table<'a>() -> Table<'a, SyncedAccount, RawAccount<'a>> {
    Table {
        entries: |snapshot| &snapshot.accounts,
        synced_key: |account| Some(lower_case(&Cow::Borrowed(&account.name))),
        key: |account| account.name.as_ref().map(lower_case),
        read: synced_account,
        combine: |kept, other| {
            let from = other.said_by;
            let said = &mut kept.said_by;
            first(said, &from, "kind", &mut kept.kind, other.kind);
            first(said, &from, "owner", &mut kept.owner, other.owner);
            first(said, &from, "service", &mut kept.service, other.service);
        },
    }
}

fn assets_table<'a>() -> Table<'a, SyncedAsset, RawAsset<'a>> {
    Table {
        entries: |snapshot| &snapshot.assets,
        synced_key: |asset| Some(short_hostname_of(&Cow::Borrowed(&asset.hostname))),
        key: |asset| asset.hostname.as_ref().map(short_hostname_of),
        read: synced_asset,
        combine: |kept, other| {
            let from = other.said_by;
            let said = &mut kept.said_by;
            first(said, &from, "kind", &mut kept.kind, other.kind);
            first(said, &from, "owner", &mut kept.owner, other.owner);
            first(said, &from, "criticality", &mut kept.criticality, other.criticality);
            union(&mut kept.ips, other.ips);
        },
    }
}

/// A scalar field takes the first value set; `said_by` keeps the origin of the value kept.
fn first<T>(said_by: &mut SaidBy, from: &SaidBy, field: &'static str, kept: &mut Option<T>, other: Option<T>) {
    if kept.is_none() && other.is_some() {
        *kept = other;
        said_by.set(field, from.field(field));
    }
}

/// Lists are the union of all.
fn union<'a>(kept: &mut Vec<Text<'a>>, other: Vec<Text<'a>>) {
    for item in other {
        if !kept.iter().any(|known| known.eq_ignore_ascii_case(&item)) {
            kept.push(item);
        }
    }
}

/// Which entries of a table fold into which, found by one pass over the keys alone. Entries
/// are numbered in order of precedence: the overlay's, then each source's in the configured
/// order. A synced entry folds into the first entry of its key; two overlay entries with one key
/// stay apart, so the overlay's duplicate is reported.
struct MergePlan<'a, Raw> {
    /// Each key and the number of its first entry.
    first_of: HashMap<Text<'a>, usize>,
    /// The numbers of the synced entries folded into an earlier one.
    folded: HashSet<usize>,
    /// Those entries, read ahead, by the number of the entry they fold into, in order.
    folding_into: HashMap<usize, Vec<Raw>>,
}

impl<'a, Raw> MergePlan<'a, Raw> {
    fn new<Synced>(
        table: &Table<'a, Synced, Raw>,
        overlay: &[(Origin<'a>, Raw)],
        snapshots: &[&'a SourceSnapshot],
    ) -> Self {
        let count = overlay.len() + snapshots.iter().map(|snapshot| (table.entries)(snapshot).len()).sum::<usize>();
        let mut plan =
            MergePlan { first_of: HashMap::with_capacity(count), folded: HashSet::new(), folding_into: HashMap::new() };
        for (number, (_, entry)) in overlay.iter().enumerate() {
            if let Some(key) = (table.key)(entry) {
                plan.first_of.entry(key).or_insert(number);
            }
        }
        let mut number = overlay.len();
        for snapshot in snapshots {
            for entry in (table.entries)(snapshot) {
                if let Some(key) = (table.synced_key)(entry) {
                    match plan.first_of.get(&key) {
                        Some(&first) => {
                            plan.folded.insert(number);
                            plan.folding_into.entry(first).or_default().push((table.read)(snapshot, entry).1);
                        }
                        None => {
                            plan.first_of.insert(key, number);
                        }
                    }
                }
                number += 1;
            }
        }
        plan
    }
}

/// The table's entries merged, one per key (overlay duplicates apart), in order of precedence:
/// each synced entry is read from its snapshot as it is reached, so a large source's table is
/// never copied whole into entries to compile (about 60 MiB for 150 000 entries).
fn merged<'a, Synced, Raw: 'a>(
    table: Table<'a, Synced, Raw>,
    overlay: Vec<(Origin<'a>, Raw)>,
    snapshots: &'a [&'a SourceSnapshot],
    plan: MergePlan<'a, Raw>,
) -> impl Iterator<Item = (Origin<'a>, Raw)> + 'a {
    enum Next<'a, Synced, Raw> {
        Read((Origin<'a>, Raw)),
        Synced(&'a SourceSnapshot, &'a Synced),
    }
    let MergePlan { folded, mut folding_into, .. } = plan;
    let synced = snapshots
        .iter()
        .flat_map(move |snapshot| (table.entries)(snapshot).iter().map(move |entry| Next::Synced(snapshot, entry)));
    overlay.into_iter().map(Next::Read).chain(synced).enumerate().filter_map(move |(number, next)| {
        if folded.contains(&number) {
            return None;
        }
        let (origin, mut entry) = match next {
            Next::Read(read) => read,
            Next::Synced(snapshot, entry) => (table.read)(snapshot, entry),
        };
        for later in folding_into.remove(&number).unwrap_or_default() {
            (table.combine)(&mut entry, later);
        }
        Some((origin, entry))
    })
}

/// Compiles the overlay's entries and the snapshots', merged entry by entry as each table is
/// compiled. Each entry compiled the same as `previous`'s is `previous`'s, shared.
fn compile<'a>(
    overlay: RawDirectory<'a>,
    snapshots: &'a [&'a SourceSnapshot],
    previous: &Directory,
    problems: &mut Vec<ConfigProblem>,
) -> Directory {
    let RawDirectory { people, accounts, assets } = overlay;
    let mut people_plan = MergePlan::new(&people_table(), &people, snapshots);
    let accounts_plan = MergePlan::new(&accounts_table(), &accounts, snapshots);
    // Every person's id, for the links to people to be checked against.
    let person_ids = std::mem::take(&mut people_plan.first_of);
    let mut directory = Directory {
        people: IndexMap::with_capacity(person_ids.len()),
        // A person's login and UPN come as accounts beside the listed ones.
        accounts: IndexMap::with_capacity(accounts_plan.first_of.len() + 2 * person_ids.len()),
        ..Directory::default()
    };
    let check_person =
        |origin: &Origin<'_>, field: &str, id: &str, problems: &mut Vec<ConfigProblem>| -> Option<PersonId> {
            match PersonId::parse(id) {
                Ok(parsed) if person_ids.contains_key(id) => Some(parsed),
                Ok(_) => {
                    problems.push(origin.problem(field, format!("`{id}` is not a person in the directory")));
                    None
                }
                Err(message) => {
                    problems.push(origin.problem(field, message));
                    None
                }
            }
        };

    // Accounts are compiled before people, so that the accounts people hold go in as each
    // person is compiled (a large directory's are not listed apart first); their problems are
    // still reported after the people's.
    let mut account_problems = Vec::new();
    let mut implied_problems = Vec::new();
    for (origin, account) in merged(accounts_table(), accounts, snapshots, accounts_plan) {
        let origin = &origin;
        let Some(name) = &account.name else { continue };
        let key = name.to_ascii_lowercase();
        let kind = match account.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("user") => Some(AccountKind::User),
            Some("service") => Some(AccountKind::Service),
            Some("system") => Some(AccountKind::System),
            Some(other) => {
                account_problems.push(origin.problem("kind", format!("`{other}` is not one of user, service, system")));
                None
            }
            None => None,
        };
        let holder =
            account.holder.as_deref().and_then(|holder| check_person(origin, "holder", holder, &mut account_problems));
        let owner =
            account.owner.as_deref().and_then(|owner| check_person(origin, "owner", owner, &mut account_problems));
        if directory.accounts.contains_key(&key) {
            account_problems.push(origin.problem("name", format!("the account `{name}` is listed twice")));
            continue;
        }
        // An entry with a bad kind was reported above; it is checked through but not kept.
        let Some(kind) = kind else { continue };
        let account = Account {
            name: key.clone(),
            kind,
            holder,
            owner,
            service: account.service.as_deref().map(str::to_string),
            said_by: account.said_by,
        };
        let listed_before = match previous.accounts.get(&key) {
            Some(AccountEntry::Listed(kept)) => Some(kept),
            _ => None,
        };
        directory.accounts.insert(key, AccountEntry::Listed(shared_with(listed_before, account)));
    }

    for (origin, person) in merged(people_table(), people, snapshots, people_plan) {
        let origin = &origin;
        let Some(id_text) = &person.id else { continue };
        let id = match PersonId::parse(id_text) {
            Ok(id) => id,
            Err(message) => {
                problems.push(origin.problem("id", message));
                continue;
            }
        };
        if directory.people.contains_key(&id) {
            problems.push(origin.problem("id", format!("the person `{id}` is listed twice")));
            continue;
        }
        let discord_id = person.discord_id.as_deref().and_then(|text| match Snowflake::parse(text) {
            Ok(snowflake) => Some(snowflake),
            Err(message) => {
                problems.push(origin.problem("discord_id", message));
                None
            }
        });
        if let Some(discord_id) = discord_id {
            if let Some(other) = directory.people_by_discord.insert(discord_id, id.clone()) {
                problems.push(origin.problem("discord_id", format!("{discord_id} is also `{other}`'s Discord id")));
            }
        }
        let manager = person.manager.as_deref().and_then(|manager| check_person(origin, "manager", manager, problems));
        if manager.as_ref() == Some(&id) {
            problems.push(origin.problem("manager", "a person cannot be their own manager"));
        }
        let delegates = person
            .delegates
            .iter()
            .filter_map(|delegate| check_person(origin, "delegates", delegate, problems))
            .collect();
        for role in &person.roles {
            if PersonId::parse(role).is_err() {
                problems.push(origin.problem(
                    "roles",
                    format!("`{role}` is not a role name (lower-case words such as helpdesk, admin, developer, soc)"),
                ));
            }
        }
        let compiled = Person {
            id: id.clone(),
            name: person.name.as_deref().unwrap_or_default().to_string(),
            discord_id,
            manager,
            team: person.team.as_deref().map(str::to_string),
            roles: person.roles.iter().map(|role| role.to_ascii_lowercase()).collect(),
            workstations: person.workstations.iter().map(|name| short_hostname(name)).collect(),
            delegates,
            said_by: person.said_by,
        };
        let compiled = shared_with(previous.people.get(&id), compiled);
        for account in &person.accounts {
            let key = account.to_ascii_lowercase();
            match directory.accounts.get(&key) {
                Some(existing) if existing.holder() != Some(&id) => {
                    implied_problems.push(
                        origin.problem("accounts", format!("the account `{key}` is already held by someone else")),
                    );
                }
                Some(_) => {}
                None => {
                    directory.accounts.insert(key, AccountEntry::HeldBy(Arc::clone(&compiled)));
                }
            }
        }
        directory.people.insert(id, compiled);
    }

    problems.append(&mut account_problems);
    problems.append(&mut implied_problems);

    let assets_plan = MergePlan::new(&assets_table(), &assets, snapshots);
    directory.assets.reserve(assets_plan.first_of.len());
    for (origin, asset) in merged(assets_table(), assets, snapshots, assets_plan) {
        let origin = &origin;
        let Some(hostname) = &asset.hostname else { continue };
        let key = short_hostname(hostname);
        if key.is_empty() {
            problems.push(origin.problem("hostname", "must not be empty"));
            continue;
        }
        let duplicate = directory.assets.contains_key(&key);
        if duplicate {
            problems.push(origin.problem("hostname", format!("the hostname `{hostname}` is listed twice")));
        }
        let kind = asset.kind.as_deref().and_then(|text| {
            let kind = AssetKind::from_id(text);
            if kind.is_none() {
                let known: Vec<&str> = AssetKind::ALL.iter().map(|kind| kind.id()).collect();
                problems.push(origin.problem("kind", format!("`{text}` is not one of {}", known.join(", "))));
            }
            kind
        });
        let criticality = match asset.criticality.as_deref() {
            Some(text) => Criticality::from_id(text).unwrap_or_else(|| {
                problems
                    .push(origin.problem("criticality", format!("`{text}` is not one of low, medium, high, critical")));
                Criticality::Medium
            }),
            // Domain controllers are critical unless someone says otherwise.
            None if kind == Some(AssetKind::DomainController) => Criticality::Critical,
            None => Criticality::Medium,
        };
        let mut ips = Vec::new();
        for text in &asset.ips {
            match text.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(other) = directory.assets_by_ip.insert(ip, key.clone()) {
                        problems.push(origin.problem("ips", format!("{ip} is also `{other}`'s address")));
                    }
                    ips.push(ip);
                }
                Err(_) => problems.push(origin.problem("ips", format!("`{text}` is not an IP address"))),
            }
        }
        let owner = asset.owner.as_deref().and_then(|owner| check_person(origin, "owner", owner, problems));
        let service_accounts: Vec<String> =
            asset.service_accounts.iter().map(|name| name.to_ascii_lowercase()).collect();
        for name in &service_accounts {
            if let Some(account) = directory.accounts.get(name) {
                if account.kind() != AccountKind::Service {
                    problems.push(origin.problem(
                        "service_accounts",
                        format!("`{name}` is a {} account, not a service account", account.kind().id()),
                    ));
                }
            }
        }
        let shares = asset
            .shares
            .iter()
            .filter_map(|(name, owner)| {
                let owner = owner.as_deref().and_then(|owner| check_person(origin, "shares", owner, problems));
                Some(Share { name: name.clone()?.trim_start_matches('\\').to_ascii_lowercase(), owner })
            })
            .collect();
        let edr_ids = asset
            .edr_ids
            .iter()
            .filter(|(vendor, id)| {
                let valid = !vendor.is_empty() && !id.trim().is_empty();
                if !valid {
                    problems.push(origin.problem("edr_ids", "an EDR id needs a vendor and an id"));
                }
                valid
            })
            .map(|(vendor, id)| EdrId { vendor: vendor.to_ascii_lowercase(), id: id.trim().to_string() })
            .collect();
        // A duplicate or an entry without a valid kind was reported above and is not kept.
        let Some(kind) = kind.filter(|_| !duplicate) else { continue };
        let compiled = Asset {
            hostname: hostname.to_string(),
            ips,
            kind,
            owner,
            criticality,
            edr_ids,
            service_accounts,
            shares,
            said_by: asset.said_by,
        };
        let compiled = shared_with(previous.assets.get(&key), compiled);
        directory.assets.insert(key, compiled);
    }
    directory.people = sorted_by_key(directory.people);
    directory.accounts = sorted_by_key(directory.accounts);
    directory.assets = sorted_by_key(directory.assets);
    directory
}

/// The previous directory's entry when it is the same as the one just compiled (most are, sync
/// after sync), else the new one.
fn shared_with<V: PartialEq>(previous: Option<&Arc<V>>, compiled: V) -> Arc<V> {
    match previous {
        Some(kept) if **kept == compiled => Arc::clone(kept),
        _ => Arc::new(compiled),
    }
}

/// A compiled table: in key order, its room no larger than its entries.
fn sorted_by_key<K: Ord, V>(mut table: IndexMap<K, V>) -> IndexMap<K, V> {
    table.sort_unstable_keys();
    table.shrink_to_fit();
    table
}
