//! `vouch.toml`: how Vouch connects, listens and stores.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use vouch_playbook::Snowflake;

use crate::directory::{Directory, DirectoryFiles};
use crate::directory_sources::{self, DirectorySync};
use crate::reader::{SourceFile, TableReader};
use crate::schedule::{CronSchedule, OnCallRotation, Override, TimerSettings};
use crate::synced::SourceSnapshot;
use crate::ConfigProblem;
use crate::{relative_to, with_toml, Environment};

/// A secret value. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// Where it came from (`env:NAME` or `file:PATH`), which is safe to show.
    origin: String,
}

impl Secret {
    pub fn new(value: String, origin: String) -> Secret {
        Secret { value, origin }
    }

    /// The secret itself. Call this only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Secret({}, <redacted>)", self.origin)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "<secret from {}>", self.origin)
    }
}

#[derive(Debug, Clone)]
pub struct DiscordSettings {
    pub api_base: String,
    pub ca_file: Option<PathBuf>,
    pub token: Secret,
    pub guild_id: Snowflake,
    pub triage_channel_id: Snowflake,
    pub soc_role_id: Snowflake,
    pub oncall_role_id: Option<Snowflake>,
    /// Also send the confirmation request by direct message.
    pub dm_confirmers: bool,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub listen: SocketAddr,
    pub token: Secret,
    /// Standard Webhooks signing secret(s) (`whsec_...`); when set, unsigned requests are refused.
    pub signing_secrets: Vec<Secret>,
    pub grouping_window_minutes: u32,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookPreset {
    Generic,
    CrowdStrike,
    Defender,
    SentinelOne,
    Elastic,
}

impl WebhookPreset {
    const NAMES: [(&'static str, WebhookPreset); 5] = [
        ("generic", WebhookPreset::Generic),
        ("crowdstrike", WebhookPreset::CrowdStrike),
        ("defender", WebhookPreset::Defender),
        ("sentinelone", WebhookPreset::SentinelOne),
        ("elastic", WebhookPreset::Elastic),
    ];
}

impl WebhookPreset {
    pub fn id(self) -> &'static str {
        WebhookPreset::NAMES.iter().find(|(_, preset)| *preset == self).map_or("generic", |(name, _)| name)
    }
}

/// An isolation webhook. `url` is the receiver (generic) or the API's base URL (presets).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    pub preset: WebhookPreset,
    /// The first is current; more are accepted while a secret is rotated. For the generic preset
    /// these are Standard Webhooks signing secrets (`whsec_...`); for the EDR presets, the API
    /// credential (CrowdStrike's client secret, Defender's bearer token, SentinelOne's API token,
    /// Elastic's API key).
    pub secrets: Vec<Secret>,
    /// CrowdStrike's OAuth2 client id.
    pub client_id: Option<String>,
}

/// How isolation requests are delivered and retried.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub max_attempts: u32,
    pub first_retry_ms: u64,
    pub max_retry_ms: u64,
    pub timeout_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> DeliverySettings {
        DeliverySettings { max_attempts: 6, first_retry_ms: 1000, max_retry_ms: 300_000, timeout_ms: 10_000 }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absent: Vouch runs its ingest API and store without Discord.
    pub discord: Option<DiscordSettings>,
    pub ingest: IngestSettings,
    pub storage: crate::storage::StorageSettings,
    pub directory: DirectorySettings,
    pub webhooks: Vec<WebhookSettings>,
    pub delivery: DeliverySettings,
    pub timers: TimerSettings,
    pub oncall: Option<OnCallRotation>,
    /// Absent: answers count as clicked, and what needs verification (standing approvals,
    /// linking chat accounts) is not offered.
    pub verification: Option<crate::verification::VerificationSettings>,
    /// Absent: closed cases stay in the store.
    pub retention: Option<crate::retention::RetentionSettings>,
    /// Where `oncall.people` is written, to report people the directory lacks.
    pub(crate) oncall_line: Option<usize>,
}

/// The directory: the local overlay files and how the synced sources are kept.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub overlay: DirectoryFiles,
    pub sync: DirectorySync,
}

impl DirectorySettings {
    /// Compiles the directory from the overlay files (read again now) and the sources'
    /// snapshots: the directory, the overlay's problems, and the synced entries' problems.
    /// Entries compiled the same as in `previous` (the directory in use) are shared with it.
    pub fn compile(
        &self,
        snapshots: &[&SourceSnapshot],
        previous: &Directory,
    ) -> (Directory, Vec<ConfigProblem>, Vec<ConfigProblem>) {
        let (mut directory, overlay, synced) =
            crate::directory::load_with_snapshots(&self.overlay, snapshots, previous);
        // How fresh the directory is depends on the sources Vouch reads; a source that pushes
        // (SCIM) is as fresh as its last change, however long ago that was.
        let pulled = |name: &str| {
            self.sync.sources.iter().any(|source| {
                source.name == name && !matches!(source.kind, crate::directory_sources::SourceKind::Scim(_))
            })
        };
        directory.synced_at = snapshots
            .iter()
            .filter(|snapshot| pulled(&snapshot.source))
            .filter_map(|snapshot| snapshot.synced_at)
            .min();
        (directory, overlay, synced)
    }
}

/// What a settings file yields even when parts of it are wrong, so the files it names can still
/// be checked in the same pass.
pub(crate) struct CompiledSettings {
    pub(crate) settings: Option<Settings>,
    pub(crate) directory_files: Option<DirectoryFiles>,
    pub(crate) playbook_file: Option<PathBuf>,
}

/// Reads a secret reference: `{ env = "NAME" }` or `{ file = "PATH" }`, never a literal.
pub(crate) fn secret(
    table: &TableReader<'_>,
    key: &'static str,
    base: &Path,
    environment: &dyn Environment,
    required: bool,
) -> Option<Secret> {
    if table.is_string(key) {
        table.problem(key, "secrets are not written in the config: use { env = \"NAME\" } or { file = \"PATH\" }");
        return None;
    }
    match table.table(key) {
        Some(reference) => resolve_secret(&reference, base, environment),
        None => {
            if required {
                table.problem(key, "is required: { env = \"NAME\" } or { file = \"PATH\" }");
            }
            None
        }
    }
}

/// An optional secret reference.
fn secret_optional(
    table: &TableReader<'_>,
    key: &'static str,
    base: &Path,
    environment: &dyn Environment,
) -> Option<Secret> {
    secret(table, key, base, environment, false)
}

fn resolve_secret(reference: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<Secret> {
    let env = reference.string("env");
    let file = reference.string("file");
    reference.finish();
    match (env, file) {
        (Some(name), None) => match environment.var(&name) {
            Some(value) if !value.trim().is_empty() => {
                Some(Secret::new(value.trim().to_string(), format!("env:{name}")))
            }
            _ => {
                reference.problem("env", format!("the environment variable {name} is not set"));
                None
            }
        },
        (None, Some(path)) => {
            let full = relative_to(base, &path);
            match std::fs::read_to_string(&full) {
                Ok(value) if !value.trim().is_empty() => {
                    Some(Secret::new(value.trim().to_string(), format!("file:{}", full.display())))
                }
                Ok(_) => {
                    reference.problem("file", format!("{} is empty", full.display()));
                    None
                }
                Err(error) => {
                    reference.problem("file", format!("cannot read {}: {error}", full.display()));
                    None
                }
            }
        }
        _ => {
            reference.table_problem("give exactly one of env or file");
            None
        }
    }
}

fn snowflake(table: &TableReader<'_>, key: &'static str, required: bool) -> Option<Snowflake> {
    let text = if required { table.required_string(key) } else { table.string(key) }?;
    match Snowflake::parse(&text) {
        Ok(id) => Some(id),
        Err(message) => {
            table.problem(key, message);
            None
        }
    }
}

pub(crate) fn compile(file: &SourceFile, base: &Path, environment: &dyn Environment) -> CompiledSettings {
    with_toml(file, |root| {
        let discord = root.table("discord").and_then(|discord| {
            let api_base = discord.string("api_base").unwrap_or_else(|| "https://discord.com".to_string());
            if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                discord.problem("api_base", "must be an http(s) URL");
            }
            let ca_file = discord.string("ca_file").map(|path| relative_to(base, &path));
            if let Some(path) = &ca_file {
                if !path.is_file() {
                    discord.problem("ca_file", format!("{} does not exist", path.display()));
                }
            }
            let token = secret(&discord, "token", base, environment, true);
            let guild_id = snowflake(&discord, "guild_id", true);
            let triage_channel_id = snowflake(&discord, "triage_channel_id", true);
            let soc_role_id = snowflake(&discord, "soc_role_id", true);
            let oncall_role_id = snowflake(&discord, "oncall_role_id", false);
            let dm_confirmers = discord.boolean("dm_confirmers").unwrap_or(false);
            discord.finish();
            Some(DiscordSettings {
                api_base: api_base.trim_end_matches('/').to_string(),
                ca_file,
                token: token?,
                guild_id: guild_id?,
                triage_channel_id: triage_channel_id?,
                soc_role_id: soc_role_id?,
                oncall_role_id,
                dm_confirmers,
            })
        });

        let ingest = match root.table("ingest") {
            Some(ingest) => {
                let listen_text = ingest.string("listen").unwrap_or_else(|| "127.0.0.1:8080".to_string());
                let listen = match listen_text.parse::<SocketAddr>() {
                    Ok(address) => Some(address),
                    Err(_) => {
                        ingest.problem("listen", "must be an address and port, such as 0.0.0.0:8080");
                        None
                    }
                };
                let token = secret(&ingest, "token", base, environment, true);
                let signing_secrets: Vec<Secret> = ingest
                    .tables("signing_secrets")
                    .iter()
                    .filter_map(|reference| {
                        let secret = resolve_secret(reference, base, environment)?;
                        if !secret.expose().starts_with("whsec_") {
                            reference.table_problem("a signing secret has the form whsec_<base64>");
                            return None;
                        }
                        Some(secret)
                    })
                    .collect();
                let grouping_window_minutes = ingest.integer("grouping_window_minutes", 0..10_081).unwrap_or(30) as u32;
                let max_body_bytes =
                    ingest.integer("max_body_bytes", 1024..16 * 1024 * 1024 + 1).unwrap_or(1024 * 1024) as usize;
                ingest.finish();
                match (listen, token) {
                    (Some(listen), Some(token)) => {
                        Some(IngestSettings { listen, token, signing_secrets, grouping_window_minutes, max_body_bytes })
                    }
                    _ => None,
                }
            }
            None => {
                root.problem("ingest", "the [ingest] table is required (listen address and token)");
                None
            }
        };

        let storage = match root.table("storage") {
            Some(storage) => crate::storage::compile(&storage, base, environment),
            None => {
                root.problem("storage", "the [storage] table is required (data_dir)");
                None
            }
        };

        let mut directory_sync = DirectorySync::default();
        let directory_files = match root.table("directory") {
            Some(directory) => {
                let file = directory.required_string("file").map(|path| relative_to(base, &path));
                let assets_csv = directory.string("assets_csv").map(|path| relative_to(base, &path));
                let people_csv = directory.string("people_csv").map(|path| relative_to(base, &path));
                directory_sync = directory_sources::compile(&directory, base, environment);
                directory.finish();
                file.map(|file| DirectoryFiles { file, assets_csv, people_csv })
            }
            None => {
                root.problem("directory", "the [directory] table is required (file)");
                None
            }
        };

        let playbook_file = root.table("playbook").and_then(|playbook| {
            let file = playbook.string("file").map(|path| relative_to(base, &path));
            playbook.finish();
            file
        });

        let mut webhook_names = Vec::new();
        let webhooks: Vec<WebhookSettings> = root
            .tables("webhooks")
            .iter()
            .filter_map(|webhook| {
                let name = webhook.required_string("name");
                let url = webhook.required_string("url");
                if let Some(url) = &url {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        webhook.problem("url", "must be an http(s) URL");
                    }
                }
                let preset_name = webhook.string("preset").unwrap_or_else(|| "generic".to_string());
                let preset =
                    WebhookPreset::NAMES.iter().find(|(known, _)| *known == preset_name).map(|(_, preset)| *preset);
                if preset.is_none() {
                    webhook.problem("preset", "one of generic, crowdstrike, defender, sentinelone, elastic");
                }
                let secret = secret(webhook, "secret", base, environment, true);
                let previous_secret = secret_optional(webhook, "previous_secret", base, environment);
                let client_id = webhook.string("client_id");
                if preset == Some(WebhookPreset::CrowdStrike) && client_id.is_none() {
                    webhook.problem("client_id", "the crowdstrike preset needs the OAuth2 client_id");
                }
                if preset == Some(WebhookPreset::Generic)
                    && secret.as_ref().is_some_and(|secret| !secret.expose().starts_with("whsec_"))
                {
                    webhook
                        .problem("secret", "a generic webhook signs with a Standard Webhooks secret (whsec_<base64>)");
                }
                webhook.finish();
                if let Some(name) = &name {
                    if webhook_names.contains(name) {
                        webhook.problem("name", format!("another webhook is already called `{name}`"));
                    }
                    webhook_names.push(name.clone());
                }
                let mut secrets = vec![secret?];
                secrets.extend(previous_secret);
                Some(WebhookSettings {
                    name: name?,
                    url: url?.trim_end_matches('/').to_string(),
                    preset: preset?,
                    secrets,
                    client_id,
                })
            })
            .collect();

        let delivery = match root.table("delivery") {
            Some(table) => {
                let defaults = DeliverySettings::default();
                let delivery = DeliverySettings {
                    max_attempts: table
                        .integer("max_attempts", 1..21)
                        .map_or(defaults.max_attempts, |value| value as u32),
                    first_retry_ms: table
                        .integer("first_retry_ms", 10..3_600_001)
                        .map_or(defaults.first_retry_ms, |value| value as u64),
                    max_retry_ms: table
                        .integer("max_retry_ms", 10..86_400_001)
                        .map_or(defaults.max_retry_ms, |value| value as u64),
                    timeout_ms: table
                        .integer("timeout_ms", 100..120_001)
                        .map_or(defaults.timeout_ms, |value| value as u64),
                };
                table.finish();
                delivery
            }
            None => DeliverySettings::default(),
        };

        let cron = |table: &TableReader<'_>, key: &'static str| -> Option<CronSchedule> {
            let text = table.string(key)?;
            CronSchedule::parse(&text).map_err(|message| table.problem(key, message)).ok()
        };
        let timers = match root.table("timers") {
            Some(table) => {
                let check_every = table.integer("check_every_seconds", 1..3601).unwrap_or(30) as u64;
                let business_hours = cron(&table, "business_hours");
                let digest = cron(&table, "digest");
                table.finish();
                TimerSettings { check_every: std::time::Duration::from_secs(check_every), business_hours, digest }
            }
            None => TimerSettings::default(),
        };
        let mut oncall_line = None;
        let oncall = root.table("oncall").and_then(|table| {
            oncall_line = table.file.line_of(table.span_of("people"));
            let people: Vec<vouch_playbook::PersonId> = table
                .strings("people")
                .iter()
                .filter_map(|id| {
                    vouch_playbook::PersonId::parse(id).map_err(|message| table.problem("people", message)).ok()
                })
                .collect();
            if people.is_empty() {
                table.problem("people", "name at least one person, in turn order");
            }
            let handoff = cron(&table, "handoff");
            if handoff.is_none() && table.string_is_absent("handoff") {
                table.problem("handoff", "is required: a cron expression for when the next person takes over");
            }
            let start = table.required_string("start").and_then(|text| {
                vouch_playbook::Timestamp::parse(&text).or_else(|| {
                    table.problem("start", "an RFC 3339 time, such as 2026-11-02T09:00:00Z");
                    None
                })
            });
            let overrides: Vec<Override> = table
                .tables("overrides")
                .iter()
                .filter_map(|cover| {
                    let person = cover.required_string("person").and_then(|id| {
                        vouch_playbook::PersonId::parse(&id).map_err(|message| cover.problem("person", message)).ok()
                    });
                    let time = |key: &'static str| {
                        cover.required_string(key).and_then(|text| {
                            vouch_playbook::Timestamp::parse(&text).or_else(|| {
                                cover.problem(key, "an RFC 3339 time");
                                None
                            })
                        })
                    };
                    let (from, until) = (time("from"), time("until"));
                    cover.finish();
                    if let (Some(from), Some(until)) = (from, until) {
                        if until <= from {
                            cover.problem("until", "must be after from");
                            return None;
                        }
                    }
                    Some(Override { person: person?, from: from?, until: until? })
                })
                .collect();
            table.finish();
            Some(OnCallRotation { people, handoff: handoff?, start: start?, overrides })
        });

        let verification =
            root.table("verification").and_then(|table| crate::verification::compile(&table, base, environment));
        let retention = root.table("retention").and_then(|table| crate::retention::compile(&table, base));

        let settings = match (ingest, storage) {
            (Some(ingest), Some(storage)) => Some(Settings {
                discord,
                ingest,
                storage,
                directory: DirectorySettings {
                    overlay: directory_files.clone().unwrap_or_default(),
                    sync: directory_sync,
                },
                webhooks,
                delivery,
                timers,
                oncall,
                verification,
                retention,
                oncall_line,
            }),
            _ => None,
        };
        CompiledSettings { settings, directory_files, playbook_file }
    })
    .unwrap_or(CompiledSettings { settings: None, directory_files: None, playbook_file: None })
}
