//! `[verification]`: the push provider answers are verified with, and which answers need it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vouch_playbook::facts::Criticality;
use vouch_playbook::verification::{AnsweredAs, VerificationPolicy, VerificationRule, WeightyAnswer};

use crate::directory_sources::web_url;
use crate::reader::TableReader;
use crate::settings::{secret, Secret};
use crate::{relative_to, Environment};

/// How Vouch verifies answers out of band.
#[derive(Debug, Clone)]
pub struct VerificationSettings {
    pub provider: PushProviderSettings,
    /// How a person's directory id becomes the provider's user name: `{id}` is replaced (for
    /// example `{id}@corp.example` for an identity provider keyed by e-mail).
    pub username_template: String,
    /// How long a push may wait for the person before it counts as timed out.
    pub timeout: Duration,
    /// How long one call to the provider may take before it counts as failed (not verified).
    pub request_timeout: Duration,
    /// How often a waiting push is polled.
    pub poll_every: Duration,
    /// Only Discord accounts bound to their person with `/link` may confirm.
    pub require_linked: bool,
    /// How many days a new standing approval only marks the cases it would close, before it
    /// closes them (0: at once).
    pub approval_monitor_days: u32,
    pub policy: VerificationPolicy,
}

impl VerificationSettings {
    /// The CA file the provider's certificate is checked against, when not the system's.
    pub fn ca_file(&self) -> Option<&Path> {
        match &self.provider {
            PushProviderSettings::Duo(duo) => duo.ca_file.as_deref(),
            PushProviderSettings::Okta(okta) => okta.ca_file.as_deref(),
        }
    }

    /// The provider's user name for a person.
    pub fn username_of(&self, person_id: &str) -> String {
        self.username_template.replace("{id}", person_id)
    }
}

#[derive(Debug, Clone)]
pub enum PushProviderSettings {
    Duo(DuoSettings),
    Okta(OktaSettings),
}

/// Duo's Auth API v2.
#[derive(Debug, Clone)]
pub struct DuoSettings {
    /// `https://api-XXXXXXXX.duosecurity.com` (plain http only to 127.0.0.1).
    pub api_url: String,
    pub integration_key: String,
    pub secret_key: Secret,
    pub ca_file: Option<PathBuf>,
}

/// Okta Verify push through Okta's Factors API.
#[derive(Debug, Clone)]
pub struct OktaSettings {
    /// `https://example.okta.com` (plain http only to 127.0.0.1).
    pub org_url: String,
    pub api_token: Secret,
    /// Ask the person to pick the number Vouch shows (Okta's number matching challenge), so a
    /// push they did not start cannot be approved by reflex.
    pub number_matching: bool,
    pub ca_file: Option<PathBuf>,
}

/// Reads `[verification]`; `None` when absent or broken (the problems are reported).
pub(crate) fn compile(
    table: &TableReader<'_>,
    base: &Path,
    environment: &dyn Environment,
) -> Option<VerificationSettings> {
    let provider_name = table.required_string("provider");
    let username_template = table.string("username").unwrap_or_else(|| "{id}".to_string());
    if !username_template.contains("{id}") {
        table.problem("username", "must contain {id}, which is replaced by the person's directory id");
    }
    let timeout = Duration::from_secs(table.integer("timeout_seconds", 10..301).unwrap_or(60) as u64);
    let request_timeout = Duration::from_secs(table.integer("request_timeout_seconds", 1..31).unwrap_or(10) as u64);
    let poll_every = Duration::from_millis(table.integer("poll_interval_ms", 100..30_001).unwrap_or(2_000) as u64);
    let require_linked = table.boolean("require_linked").unwrap_or(false);
    let most_days = i64::from(vouch_playbook::advance::MOST_APPROVAL_DAYS);
    let approval_monitor_days = table.integer("approval_monitor_days", 0..most_days + 1).unwrap_or(7) as u32;
    let duo = table.table("duo");
    let okta = table.table("okta");
    let provider = match provider_name.as_deref() {
        Some("duo") => match &duo {
            Some(duo) => duo_settings(duo, base, environment).map(PushProviderSettings::Duo),
            None => {
                table.problem("duo", "provider = \"duo\" needs a [verification.duo] table");
                None
            }
        },
        Some("okta") => match &okta {
            Some(okta) => okta_settings(okta, base, environment).map(PushProviderSettings::Okta),
            None => {
                table.problem("okta", "provider = \"okta\" needs a [verification.okta] table");
                None
            }
        },
        Some(other) => {
            table.problem("provider", format!("`{other}` is not one of duo, okta"));
            None
        }
        None => None,
    };
    // The table of the provider not chosen is still checked, so a typo there is not silent.
    for (name, unused) in [("duo", &duo), ("okta", &okta)] {
        if let Some(unused) = unused.as_ref().filter(|_| provider_name.as_deref() != Some(name)) {
            unused.table_problem(format!("provider is not \"{name}\": this table is not used"));
            unused.finish();
        }
    }
    let rule_tables = table.tables("rules");
    let policy = if rule_tables.is_empty() {
        VerificationPolicy::default()
    } else {
        VerificationPolicy { rules: rule_tables.iter().filter_map(rule).collect() }
    };
    table.finish();
    Some(VerificationSettings {
        provider: provider?,
        username_template,
        timeout,
        request_timeout,
        poll_every,
        require_linked,
        approval_monitor_days,
        policy,
    })
}

fn rule(table: &TableReader<'_>) -> Option<VerificationRule> {
    let answers: Vec<WeightyAnswer> = table
        .strings("answers")
        .iter()
        .filter_map(|id| {
            let answer = WeightyAnswer::from_id(id);
            if answer.is_none() {
                let known: Vec<&str> = WeightyAnswer::ALL.iter().map(|answer| answer.id()).collect();
                table.problem("answers", format!("`{id}` is not one of {}", known.join(", ")));
            }
            answer
        })
        .collect();
    if answers.is_empty() {
        table.problem("answers", "a rule names at least one answer");
    }
    let answered_as = table.required_string("answered_as").and_then(|id| {
        let role = AnsweredAs::from_id(&id);
        if role.is_none() {
            table.problem("answered_as", format!("`{id}` is not one of confirmer, soc"));
        }
        role
    });
    let from_criticality = match table.string("from_criticality") {
        Some(id) => Criticality::from_id(&id).or_else(|| {
            table.problem("from_criticality", format!("`{id}` is not one of low, medium, high, critical"));
            None
        }),
        None => Some(Criticality::Low),
    };
    let roles = table.strings("roles").iter().map(|role| role.to_ascii_lowercase()).collect();
    table.finish();
    if answers.is_empty() {
        return None;
    }
    Some(VerificationRule { answers, answered_as: answered_as?, from_criticality: from_criticality?, roles })
}

fn required_url(table: &TableReader<'_>, key: &'static str) -> String {
    if table.string_is_absent(key) {
        table.problem(key, "is required: the provider's https:// URL");
        return String::new();
    }
    web_url(table, key, "")
}

fn ca_file(table: &TableReader<'_>, base: &Path) -> Option<PathBuf> {
    let path = table.string("ca_file").map(|path| relative_to(base, &path))?;
    if !path.is_file() {
        table.problem("ca_file", format!("{} does not exist", path.display()));
    }
    Some(path)
}

fn duo_settings(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<DuoSettings> {
    let api_url = required_url(table, "api_url");
    let integration_key = table.required_string("integration_key");
    if integration_key.as_deref().is_some_and(|key| key.len() != 20 || !key.starts_with("DI")) {
        table.problem("integration_key", "a Duo integration key is 20 characters starting with DI");
    }
    let secret_key = secret(table, "secret_key", base, environment, true);
    let ca_file = ca_file(table, base);
    table.finish();
    Some(DuoSettings { api_url, integration_key: integration_key?, secret_key: secret_key?, ca_file })
}

fn okta_settings(table: &TableReader<'_>, base: &Path, environment: &dyn Environment) -> Option<OktaSettings> {
    let org_url = required_url(table, "org_url");
    let api_token = secret(table, "api_token", base, environment, true);
    let number_matching = table.boolean("number_matching").unwrap_or(true);
    let ca_file = ca_file(table, base);
    table.finish();
    Some(OktaSettings { org_url, api_token: api_token?, number_matching, ca_file })
}
