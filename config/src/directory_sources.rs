//! `[directory]`'s sync settings and `[[directory.sources]]`, compiled into typed values: where
//! the organisation keeps its people and machines, how to read them, and how often.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vouch_playbook::facts::{AssetKind, Criticality};

use crate::reader::TableReader;
use crate::relative_to;
use crate::schedule::CronSchedule;
use crate::settings::secret;
use crate::{Environment, Secret};

/// How the directory is kept in step with the organisation's own sources.
#[derive(Debug, Clone)]
pub struct DirectorySync {
    pub sources: Vec<DirectorySource>,
    /// When to sync (besides at start); `None`: only at start and on demand.
    pub schedule: Option<CronSchedule>,
    /// A sync that would remove more than this share of the people, or of the machines, a
    /// source held is refused: the last good snapshot stays.
    pub max_removed_share: f64,
    /// Facts from a snapshot older than this are marked as such on cards.
    pub stale_after: Duration,
}

impl Default for DirectorySync {
    fn default() -> DirectorySync {
        DirectorySync {
            sources: Vec::new(),
            schedule: None,
            max_removed_share: 0.2,
            stale_after: Duration::from_secs(48 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirectorySource {
    /// A short name, used in reports and as the snapshot's key.
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Ldap(Box<LdapSource>),
    /// People pushed to Vouch by an identity provider over SCIM 2.0 (Okta, Entra ID, ...).
    Scim(ScimSource),
    /// Microsoft Entra ID, read through Microsoft Graph.
    Graph(Box<GraphSource>),
}

/// Microsoft Entra ID through Microsoft Graph, with an app registration's client credentials.
#[derive(Debug, Clone)]
pub struct GraphSource {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// The identity platform (`https://login.microsoftonline.com`).
    pub authority: String,
    /// Graph itself (`https://graph.microsoft.com`).
    pub graph_url: String,
    /// An extra CA to trust (a proxy's); the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// A directory extension property holding the person's Discord id.
    pub discord_id_property: Option<String>,
    /// Group object id (lower-case) → Vouch role.
    pub roles: Vec<(String, String)>,
    /// What Entra devices are, for Vouch (they carry no OU): kind and criticality.
    pub devices_kind: AssetKind,
    pub devices_criticality: Option<Criticality>,
    pub page_size: u32,
    pub timeout: Duration,
    /// When a sync enumerates users again instead of following the delta link (only a full
    /// read starts a fresh delta round).
    pub full_sync: CronSchedule,
}

/// Vouch's SCIM 2.0 server (`/scim/v2/Users`, `/scim/v2/Groups`) for one identity provider.
#[derive(Debug, Clone)]
pub struct ScimSource {
    /// The bearer token the identity provider presents (not the ingest token).
    pub token: Secret,
    /// Group display name (lower-case) → Vouch role.
    pub roles: Vec<(String, String)>,
    /// The user attribute holding the person's Discord id: a SCIM path such as
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
    pub discord_id_attribute: Option<String>,
}

/// An LDAP directory (Active Directory or any RFC 4511 server).
#[derive(Debug, Clone)]
pub struct LdapSource {
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// The CA that signed the server's certificate (LDAPS or StartTLS); the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// Simple bind; anonymous when absent.
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub base_dn: String,
    pub people_filter: String,
    pub service_accounts_filter: String,
    /// Accounts under these DNs are service accounts whatever their object class.
    pub service_account_ous: Vec<String>,
    pub computers_filter: String,
    /// Groups whose `member` lists give roles (when entries carry no `memberOf`).
    pub groups_filter: String,
    /// The attribute holding the login name (`sAMAccountName`, `uid`).
    pub login_attribute: String,
    /// The attribute holding the person's Discord id, if the directory keeps one.
    pub discord_id_attribute: Option<String>,
    /// Group DN (lower-case) → Vouch role.
    pub roles: Vec<(String, String)>,
    /// The first rule a computer matches gives its kind and criticality.
    pub computer_rules: Vec<ComputerRule>,
    pub page_size: i32,
    pub timeout: Duration,
    /// When a sync reads everything again (the others read only what changed since the last,
    /// by `change_attribute`; only a full read sees deletions).
    pub full_sync: CronSchedule,
    /// The attribute that grows with every change of an entry: `uSNChanged` on Active
    /// Directory, `entryCSN` on OpenLDAP, `modifyTimestamp` anywhere (to the second, so entries
    /// changed in the last second read are read again).
    pub change_attribute: String,
}

/// Machines under an OU (a DN suffix) or in a group are of this kind and criticality.
#[derive(Debug, Clone)]
pub struct ComputerRule {
    /// Lower-case DN suffix.
    pub under: Option<String>,
    /// Lower-case group DN.
    pub group: Option<String>,
    pub kind: Option<AssetKind>,
    pub criticality: Option<Criticality>,
}

/// Reads `[directory]`'s sync keys and its sources; every problem is reported on the table.
pub(crate) fn compile(directory: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> DirectorySync {
    let defaults = DirectorySync::default();
    let schedule = directory
        .string("sync")
        .and_then(|text| CronSchedule::parse(&text).map_err(|message| directory.problem("sync", message)).ok());
    let max_removed_share = directory
        .integer("max_removed_percent", 0..101)
        .map_or(defaults.max_removed_share, |percent| percent as f64 / 100.0);
    let stale_after = directory
        .integer("stale_after_hours", 1..24 * 366)
        .map_or(defaults.stale_after, |hours| Duration::from_secs(hours as u64 * 3600));
    let mut sources: Vec<DirectorySource> = Vec::new();
    for table in directory.tables("sources") {
        let Some(name) = table.required_string("name") else { continue };
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character));
        if !valid_name {
            table.problem("name", "1-64 letters, digits, '-', '_' or '.'");
        }
        if sources.iter().any(|source| source.name == name) {
            table.problem("name", format!("the source `{name}` is listed twice"));
        }
        let kind = match table.required_string("kind").as_deref() {
            Some("ldap") => ldap(&table, base, environment).map(|source| SourceKind::Ldap(Box::new(source))),
            Some("scim") => scim(&table, base, environment).map(SourceKind::Scim),
            Some("graph") => graph(&table, base, environment).map(|source| SourceKind::Graph(Box::new(source))),
            Some(other) => {
                table.problem("kind", format!("`{other}` is not a source kind Vouch reads (ldap, graph, scim)"));
                None
            }
            None => None,
        };
        table.finish();
        if let (Some(kind), true) = (kind, valid_name) {
            sources.push(DirectorySource { name, kind });
        }
    }
    if sources.iter().filter(|source| matches!(source.kind, SourceKind::Scim(_))).count() > 1 {
        directory.problem("sources", "at most one scim source: identity providers push to one /scim/v2 endpoint");
    }
    DirectorySync { sources, schedule, max_removed_share, stale_after }
}

fn ldap(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<LdapSource> {
    let url = table.required_string("url");
    if let Some(url) = &url {
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            table.problem("url", "must be an ldap:// or ldaps:// URL");
        }
    }
    let starttls = table.boolean("starttls").unwrap_or(false);
    if starttls && url.as_deref().is_some_and(|url| url.starts_with("ldaps://")) {
        table.problem("starttls", "StartTLS is for ldap:// URLs; ldaps:// is already encrypted");
    }
    let ca_file = table.string("ca_file").map(|path| relative_to(base, &path));
    if let Some(path) = &ca_file {
        if !path.is_file() {
            table.problem("ca_file", format!("{} does not exist", path.display()));
        }
    }
    let bind_dn = table.string("bind_dn");
    let bind_password = secret(table, "bind_password", base, environment, false);
    if bind_dn.is_some() != bind_password.is_some() {
        table.problem("bind_dn", "give bind_dn and bind_password together (or neither, to bind anonymously)");
    }
    let base_dn = table.required_string("base_dn");
    let people_filter =
        table.string("people_filter").unwrap_or_else(|| "(&(objectClass=user)(objectCategory=person))".to_string());
    let service_accounts_filter = table
        .string("service_accounts_filter")
        .unwrap_or_else(|| "(objectClass=msDS-GroupManagedServiceAccount)".to_string());
    let computers_filter = table.string("computers_filter").unwrap_or_else(|| "(objectClass=computer)".to_string());
    let groups_filter = table.string("groups_filter").unwrap_or_else(|| "(objectClass=group)".to_string());
    for (key, filter) in [
        ("people_filter", &people_filter),
        ("service_accounts_filter", &service_accounts_filter),
        ("computers_filter", &computers_filter),
        ("groups_filter", &groups_filter),
    ] {
        if !(filter.starts_with('(') && filter.ends_with(')')) {
            table.problem(key, "an LDAP filter in parentheses, such as (objectClass=user)");
        }
    }
    let service_account_ous = table.strings("service_account_ous").iter().map(|dn| dn.to_ascii_lowercase()).collect();
    let login_attribute = table.string("login_attribute").unwrap_or_else(|| "sAMAccountName".to_string());
    let discord_id_attribute = table.string("discord_id_attribute");
    let roles = table
        .entries("roles")
        .into_iter()
        .map(|(group, role)| (group.to_ascii_lowercase(), role.to_ascii_lowercase()))
        .collect();
    let computer_rules = table
        .tables("computers")
        .iter()
        .map(|rule| {
            let under = rule.string("under").map(|dn| dn.to_ascii_lowercase());
            let group = rule.string("group").map(|dn| dn.to_ascii_lowercase());
            if under.is_none() && group.is_none() {
                rule.table_problem("a computer rule needs `under` (an OU's DN) or `group` (a group's DN)");
            }
            let kind = rule.string("kind").and_then(|text| {
                AssetKind::from_id(&text).or_else(|| {
                    rule.problem("kind", format!("`{text}` is not a machine kind"));
                    None
                })
            });
            let criticality = rule.string("criticality").and_then(|text| {
                Criticality::from_id(&text).or_else(|| {
                    rule.problem("criticality", format!("`{text}` is not one of low, medium, high, critical"));
                    None
                })
            });
            rule.finish();
            ComputerRule { under, group, kind, criticality }
        })
        .collect();
    let page_size = table.integer("page_size", 1..10_001).unwrap_or(500) as i32;
    let timeout = Duration::from_secs(table.integer("timeout_seconds", 1..601).unwrap_or(30) as u64);
    let full_sync = table.string("full_sync").unwrap_or_else(|| "0 0 3 * * *".to_string());
    let full_sync = CronSchedule::parse(&full_sync).map_err(|message| table.problem("full_sync", message)).ok();
    let change_attribute = table.string("change_attribute").unwrap_or_else(|| "modifyTimestamp".to_string());
    if change_attribute.is_empty()
        || !change_attribute.chars().all(|character| character.is_ascii_alphanumeric() || character == '-')
    {
        table.problem("change_attribute", "an attribute name such as uSNChanged, entryCSN or modifyTimestamp");
    }
    Some(LdapSource {
        url: url?,
        starttls,
        ca_file,
        bind_dn,
        bind_password,
        base_dn: base_dn?,
        people_filter,
        service_accounts_filter,
        service_account_ous,
        computers_filter,
        groups_filter,
        login_attribute,
        discord_id_attribute,
        roles,
        computer_rules,
        page_size,
        timeout,
        full_sync: full_sync?,
        change_attribute,
    })
}

fn scim(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<ScimSource> {
    let token = secret(table, "token", base, environment, true);
    if token.as_ref().is_some_and(|token| token.expose().len() < 16) {
        table.problem("token", "a SCIM token must be at least 16 characters");
    }
    let roles = table
        .entries("roles")
        .into_iter()
        .map(|(group, role)| (group.to_ascii_lowercase(), role.to_ascii_lowercase()))
        .collect();
    let discord_id_attribute = table.string("discord_id_attribute");
    Some(ScimSource { token: token?, roles, discord_id_attribute })
}

/// An https URL, or http on the loopback interface (a local test server); never plain http to
/// another machine, where the client secret and the directory would travel in clear.
pub(crate) fn web_url(table: &TableReader<'_>, key: &'static str, default: &str) -> String {
    let url = table.string(key).unwrap_or_else(|| default.to_string()).trim_end_matches('/').to_string();
    let loopback =
        ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"].iter().any(|prefix| url.starts_with(prefix));
    if !(url.starts_with("https://") || loopback) {
        table.problem(key, "must be an https:// URL (plain http only to 127.0.0.1)");
    }
    url
}

fn graph(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<GraphSource> {
    let tenant_id = table.required_string("tenant_id");
    let client_id = table.required_string("client_id");
    let client_secret = secret(table, "client_secret", base, environment, true);
    let authority = web_url(table, "authority", "https://login.microsoftonline.com");
    let graph_url = web_url(table, "graph_url", "https://graph.microsoft.com");
    let ca_file = table.string("ca_file").map(|path| relative_to(base, &path));
    if let Some(path) = &ca_file {
        if !path.is_file() {
            table.problem("ca_file", format!("{} does not exist", path.display()));
        }
    }
    let discord_id_property = table.string("discord_id_property");
    let roles = table
        .entries("roles")
        .into_iter()
        .map(|(group, role)| (group.to_ascii_lowercase(), role.to_ascii_lowercase()))
        .collect();
    let devices_kind = match table.string("devices_kind") {
        Some(text) => AssetKind::from_id(&text).unwrap_or_else(|| {
            table.problem("devices_kind", format!("`{text}` is not a machine kind"));
            AssetKind::Workstation
        }),
        None => AssetKind::Workstation,
    };
    let devices_criticality = table.string("devices_criticality").and_then(|text| {
        Criticality::from_id(&text).or_else(|| {
            table.problem("devices_criticality", format!("`{text}` is not one of low, medium, high, critical"));
            None
        })
    });
    let page_size = table.integer("page_size", 1..1000).unwrap_or(999) as u32;
    let timeout = Duration::from_secs(table.integer("timeout_seconds", 1..601).unwrap_or(30) as u64);
    let full_sync = table.string("full_sync").unwrap_or_else(|| "0 0 3 * * *".to_string());
    let full_sync = CronSchedule::parse(&full_sync).map_err(|message| table.problem("full_sync", message)).ok();
    Some(GraphSource {
        tenant_id: tenant_id?,
        client_id: client_id?,
        client_secret: client_secret?,
        authority,
        graph_url,
        ca_file,
        discord_id_property,
        roles,
        devices_kind,
        devices_criticality,
        page_size,
        timeout,
        full_sync: full_sync?,
    })
}
