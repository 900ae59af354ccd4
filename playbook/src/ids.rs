//! Identifiers as types, so a case id is never confused with a person id or a message id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A case, numbered from 1 in the order cases were opened. Shown as `LM-42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CaseId(u64);

impl CaseId {
    pub const PREFIX: &'static str = "LM-";

    pub fn new(number: u64) -> Option<CaseId> {
        (number > 0).then_some(CaseId(number))
    }

    pub fn number(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{}", CaseId::PREFIX, self.0)
    }
}

impl FromStr for CaseId {
    type Err = String;

    /// Accepts `LM-42`, `lm-42` and `42`.
    fn from_str(text: &str) -> Result<CaseId, String> {
        let text = text.trim();
        let digits = text
            .get(..CaseId::PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(CaseId::PREFIX))
            .map_or(text, |_| &text[CaseId::PREFIX.len()..]);
        let valid = !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|byte| byte.is_ascii_digit());
        digits
            .parse::<u64>()
            .ok()
            .filter(|_| valid)
            .and_then(CaseId::new)
            .ok_or_else(|| format!("`{text}` is not a case id (expected LM-<number>)"))
    }
}

impl TryFrom<String> for CaseId {
    type Error = String;
    fn try_from(text: String) -> Result<CaseId, String> {
        text.parse()
    }
}

impl From<CaseId> for String {
    fn from(id: CaseId) -> String {
        id.to_string()
    }
}

/// The playbook's version; every recorded answer carries the version it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlaybookVersion(pub u32);

impl fmt::Display for PlaybookVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "v{}", self.0)
    }
}

/// Declares a string id type whose text is a lower-case slug (`account-usage`, `alice`).
macro_rules! slug_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, String> {
                if is_slug(text) {
                    Ok($name(text.to_string()))
                } else {
                    Err(format!(
                        "`{}` is not a valid {}: use 1-64 lower-case letters, digits, '-', '_' or '.'",
                        text, $what
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<$name, String> {
                $name::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

fn is_slug(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'.'))
}

slug_id!(
    /// A person in the directory.
    PersonId,
    "person id"
);
slug_id!(
    /// A playbook question (`account-usage`, `interactive`).
    QuestionId,
    "question id"
);
slug_id!(
    /// One answer of a playbook question (`expected`, `programmatic`).
    AnswerId,
    "answer id"
);
slug_id!(
    /// A known false-positive scenario (`helpdesk-remote-support`).
    ScenarioId,
    "scenario id"
);

/// A Discord snowflake (user, role, channel, guild or message id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Snowflake(u64);

impl Snowflake {
    pub fn parse(text: &str) -> Result<Snowflake, String> {
        let valid = (1..=20).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit());
        text.parse::<u64>()
            .ok()
            .filter(|number| valid && *number > 0)
            .map(Snowflake)
            .ok_or_else(|| format!("`{text}` is not a Discord id (expected digits only)"))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

impl TryFrom<String> for Snowflake {
    type Error = String;
    fn try_from(text: String) -> Result<Snowflake, String> {
        Snowflake::parse(&text)
    }
}

impl From<Snowflake> for String {
    fn from(id: Snowflake) -> String {
        id.0.to_string()
    }
}
