//! Vouch's configuration: `vouch.toml` (settings) and the directory (people, accounts, assets),
//! compiled into typed values. Loading reports every problem at once, each with its file, line
//! and key, so an operator fixes a file in one pass.
//!
//! Secrets never live in the TOML: a secret is named as `{ env = "NAME" }` or `{ file = "PATH" }`
//! and read when the configuration is loaded. [`Secret`] never prints its value.

mod directory;
mod directory_changes;
mod directory_sources;
mod reader;
mod retention;
mod schedule;
mod settings;
mod storage;
mod synced;
mod verification;

use std::fmt;
use std::path::{Path, PathBuf};

pub use directory::{Account, Asset, Directory, DirectoryFiles, Person, SaidBy, Share};
pub use directory_changes::{DirectoryChange, DirectoryChanges, Removal};
pub use directory_sources::{
    ComputerRule, DirectorySource, DirectorySync, GraphSource, LdapSource, ScimSource, SourceKind,
};
pub use retention::RetentionSettings;
pub use schedule::{CronSchedule, OnCallRotation, Override, TimerSettings};
pub use settings::{
    DeliverySettings, DirectorySettings, DiscordSettings, IngestSettings, Secret, Settings, WebhookPreset,
    WebhookSettings,
};
pub use storage::{PostgresSettings, StorageBackend, StorageSettings};
pub use synced::{SourceSnapshot, SyncedAccount, SyncedAsset, SyncedPerson};
pub use verification::{DuoSettings, OktaSettings, PushProviderSettings, VerificationSettings};

use reader::{SourceFile, TableReader};

/// One problem in the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: Option<usize>,
    /// The key path, such as `people[2].manager`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(formatter, "{}:{line}: ", self.file)?,
            None => write!(formatter, "{}: ", self.file)?,
        }
        if self.key.is_empty() {
            write!(formatter, "{}", self.message)
        } else {
            write!(formatter, "{}: {}", self.key, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration has {} problem(s):\n{}", .0.len(), .0.iter().map(|problem| format!("  {problem}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[ConfigProblem] {
        match self {
            ConfigError::Invalid(problems) => problems,
        }
    }
}

/// Settings and directory, both valid.
#[derive(Debug)]
pub struct Config {
    pub settings: Settings,
    pub directory: Directory,
    pub playbook: vouch_playbook::Playbook,
}

/// Where the process gets secrets from; tests substitute their own environment.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Loads `vouch.toml` at `path` and the files it names, reporting every problem found.
pub fn load(path: &Path, environment: &dyn Environment) -> Result<Config, ConfigError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let settings_file = match read_file(path) {
        Ok(file) => file,
        Err(problem) => return Err(ConfigError::Invalid(vec![problem])),
    };
    let compiled = settings::compile(&settings_file, &base, environment);
    let mut problems = settings_file.problems.take();

    let mut directory = Directory::default();
    if let Some(files) = &compiled.directory_files {
        let (loaded, directory_problems) = directory::load(files);
        directory = loaded;
        problems.extend(directory_problems);
    }
    let playbook = match &compiled.playbook_file {
        Some(playbook_path) => match std::fs::read_to_string(playbook_path) {
            Ok(text) => match vouch_playbook::Playbook::parse(&text) {
                Ok(playbook) => Some(playbook),
                Err(error) => {
                    problems.push(ConfigProblem {
                        file: playbook_path.display().to_string(),
                        line: None,
                        key: String::new(),
                        message: error.to_string(),
                    });
                    None
                }
            },
            Err(error) => {
                problems.push(ConfigProblem {
                    file: path.display().to_string(),
                    line: None,
                    key: "playbook.file".to_string(),
                    message: format!("cannot read {}: {error}", playbook_path.display()),
                });
                None
            }
        },
        None => Some(vouch_playbook::Playbook::builtin()),
    };
    let settings = compiled.settings;
    if let Some(settings) = &settings {
        // The rotation names people; the directory must know them (to ping them by Discord id).
        if let Some(rotation) = &settings.oncall {
            let named = rotation.people.iter().chain(rotation.overrides.iter().map(|cover| &cover.person));
            for person in named {
                if directory.person(person).is_none() && compiled.directory_files.is_some() {
                    problems.push(ConfigProblem {
                        file: path.display().to_string(),
                        line: settings.oncall_line,
                        key: "oncall".to_string(),
                        message: format!("`{person}` is not a person in the directory"),
                    });
                }
            }
        }
    }
    problems.sort_by(|left, right| (&left.file, left.line).cmp(&(&right.file, right.line)));
    match (settings, playbook, problems.is_empty()) {
        (Some(settings), Some(playbook), true) => Ok(Config { settings, directory, playbook }),
        _ => Err(ConfigError::Invalid(problems)),
    }
}

fn read_file(path: &Path) -> Result<SourceFile, ConfigProblem> {
    std::fs::read_to_string(path).map(|text| SourceFile::new(&path.display().to_string(), text)).map_err(|error| {
        ConfigProblem {
            file: path.display().to_string(),
            line: None,
            key: String::new(),
            message: format!("cannot read the file: {error}"),
        }
    })
}

/// Parses a file as TOML and hands its root table to `read`; syntax errors become problems.
fn with_toml<T>(file: &SourceFile, read: impl FnOnce(&TableReader<'_>) -> T) -> Option<T> {
    match toml_edit::ImDocument::parse(file.text().to_string()) {
        Ok(document) => {
            let root = TableReader::new(file, document.as_table(), None, String::new());
            let value = read(&root);
            root.finish();
            Some(value)
        }
        Err(error) => {
            file.problem(error.span(), "", format!("not valid TOML: {}", error.message()));
            None
        }
    }
}

/// Resolves a path given in a config file relative to that file's folder.
pub(crate) fn relative_to(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}
