//! The normalized lateral-movement alert: one model whatever the SIEM or EDR sent.
//!
//! Every string in an [`Alert`] came from an attacker-reachable place (an event log, a hostname,
//! a command line). Normalizers cap their length with [`cap`]; the renderers escape them.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Longest hostname, account name or short field kept from an alert, in characters.
pub const MAX_SHORT_FIELD: usize = 256;
/// Longest command line or path kept from an alert, in characters.
pub const MAX_LONG_FIELD: usize = 4096;
/// At most this many IPs, EDR ids or technique ids are kept per list.
pub const MAX_LIST_ITEMS: usize = 16;

/// Cuts `text` to at most `max_chars` characters, marking the cut with an ellipsis, and drops
/// control characters that would let a field break out of its line on a card.
pub fn cap(text: &str, max_chars: usize) -> String {
    let cleaned: String = text.chars().map(|character| if character.is_control() { ' ' } else { character }).collect();
    let trimmed = cleaned.trim();
    if trimmed.chars().count() <= max_chars {
        return trimmed.to_string();
    }
    let mut kept: String = trimmed.chars().take(max_chars.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// A system at one end of the movement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edr_ids: Vec<String>,
}

impl System {
    pub fn is_unknown(&self) -> bool {
        self.hostname.is_none() && self.ips.is_empty() && self.edr_ids.is_empty()
    }

    /// The hostname without its DNS domain, lower-cased: the form the directory is keyed by.
    pub fn short_hostname(&self) -> Option<String> {
        self.hostname.as_deref().map(short_hostname)
    }

    /// How the system is named on a card: its hostname, else its first IP, else "unknown".
    pub fn label(&self) -> String {
        if let Some(hostname) = &self.hostname {
            return hostname.clone();
        }
        if let Some(ip) = self.ips.first() {
            return ip.to_string();
        }
        "unknown system".to_string()
    }
}

/// `WS-17.corp.example` and `ws-17` name the same machine.
pub fn short_hostname(hostname: &str) -> String {
    hostname.split('.').next().unwrap_or(hostname).to_ascii_lowercase()
}

/// An account as the alert names it (`CORP\alice`, `alice@corp`, `root`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Account {
    /// Splits `DOMAIN\name` and `name@domain`; keeps a bare name as it is.
    pub fn parse(text: &str) -> Option<Account> {
        let text = text.trim();
        if text.is_empty() || text == "-" {
            return None;
        }
        if let Some((domain, name)) = text.split_once('\\') {
            return Some(Account::with_domain(name, Some(domain)));
        }
        if let Some((name, domain)) = text.split_once('@') {
            // Only `user@corp.example`: anything else with an '@' (say `<@123>`) is a name.
            let plain = |part: &str| {
                !part.is_empty()
                    && part.chars().all(|character| character.is_alphanumeric() || "._-$".contains(character))
            };
            if plain(name) && plain(domain) {
                return Some(Account::with_domain(name, Some(domain)));
            }
        }
        Some(Account::with_domain(text, None))
    }

    pub fn with_domain(name: &str, domain: Option<&str>) -> Account {
        let domain = domain
            .map(str::trim)
            .filter(|domain| !domain.is_empty() && *domain != "-")
            .map(|domain| cap(domain, MAX_SHORT_FIELD));
        Account { name: cap(name, MAX_SHORT_FIELD), domain }
    }

    /// The lower-cased name without domain: the form the directory is keyed by.
    pub fn key(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    /// Computer accounts (`WS-17$`) and the operating system's own identities.
    pub fn looks_like_system_account(&self) -> bool {
        let name = self.key();
        let domain = self.domain.as_deref().unwrap_or("").to_ascii_lowercase();
        name.ends_with('$')
            || domain == "nt authority"
            || matches!(
                name.as_str(),
                "system" | "local system" | "localsystem" | "network service" | "local service" | "anonymous logon"
            )
    }
}

impl fmt::Display for Account {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.domain {
            Some(domain) => write!(formatter, "{domain}\\{}", self.name),
            None => formatter.write_str(&self.name),
        }
    }
}

/// What kind of connection the movement used, in the playbook's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionKind {
    RemoteAccess,
    FileTransfer,
    Api,
    /// Pass-the-hash, pass-the-ticket and other stolen authentication material (T1550).
    AlternateAuthentication,
    /// Token theft or impersonation (T1134).
    TokenManipulation,
    /// Remote execution of a service, WMI method or script on the target.
    RemoteExecution,
    Unknown,
}

impl ConnectionKind {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionKind::RemoteAccess => "remote access",
            ConnectionKind::FileTransfer => "file transfer",
            ConnectionKind::Api => "API",
            ConnectionKind::AlternateAuthentication => "alternate authentication material",
            ConnectionKind::TokenManipulation => "token manipulation",
            ConnectionKind::RemoteExecution => "remote execution",
            ConnectionKind::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Rdp,
    Ssh,
    Smb,
    Scp,
    Ftp,
    Winrm,
    Dcom,
    Wmi,
    Vnc,
    HttpApi,
    Other,
    Unknown,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rdp => "RDP",
            Protocol::Ssh => "SSH",
            Protocol::Smb => "SMB",
            Protocol::Scp => "SCP",
            Protocol::Ftp => "FTP",
            Protocol::Winrm => "WinRM",
            Protocol::Dcom => "DCOM",
            Protocol::Wmi => "WMI",
            Protocol::Vnc => "VNC",
            Protocol::HttpApi => "HTTP API",
            Protocol::Other => "other",
            Protocol::Unknown => "unknown",
        }
    }

    /// The id used in the playbook file and the native JSON format.
    pub fn id(self) -> &'static str {
        match self {
            Protocol::Rdp => "rdp",
            Protocol::Ssh => "ssh",
            Protocol::Smb => "smb",
            Protocol::Scp => "scp",
            Protocol::Ftp => "ftp",
            Protocol::Winrm => "winrm",
            Protocol::Dcom => "dcom",
            Protocol::Wmi => "wmi",
            Protocol::Vnc => "vnc",
            Protocol::HttpApi => "http_api",
            Protocol::Other => "other",
            Protocol::Unknown => "unknown",
        }
    }

    /// Reads the protocol names SIEMs use (`ms-wbt-server`, `rdp`, `microsoft-ds`, ...).
    pub fn from_name(name: &str) -> Protocol {
        match name.trim().to_ascii_lowercase().as_str() {
            "rdp" | "ms-wbt-server" | "ms-rdp" | "remote desktop" => Protocol::Rdp,
            "ssh" => Protocol::Ssh,
            "smb" | "smb2" | "smb3" | "cifs" | "microsoft-ds" | "netbios-ssn" => Protocol::Smb,
            "scp" | "sftp" => Protocol::Scp,
            "ftp" | "ftps" => Protocol::Ftp,
            "winrm" | "wsman" | "wsmans" | "powershell remoting" => Protocol::Winrm,
            "dcom" | "dce_rpc" | "dcerpc" | "msrpc" | "epmap" | "rpc" => Protocol::Dcom,
            "wmi" => Protocol::Wmi,
            "vnc" | "rfb" => Protocol::Vnc,
            "http" | "https" | "http_api" | "api" => Protocol::HttpApi,
            "" | "unknown" | "-" => Protocol::Unknown,
            _ => Protocol::Other,
        }
    }

    /// The well-known service behind a destination port, when there is one.
    pub fn from_port(port: u16) -> Option<Protocol> {
        Some(match port {
            3389 => Protocol::Rdp,
            22 => Protocol::Ssh,
            445 | 139 => Protocol::Smb,
            21 | 990 => Protocol::Ftp,
            5985 | 5986 => Protocol::Winrm,
            135 => Protocol::Dcom,
            5900..=5903 => Protocol::Vnc,
            80 | 443 | 8080 | 8443 => Protocol::HttpApi,
            _ => return None,
        })
    }

    /// The connection kind a protocol implies when the alert says nothing more.
    pub fn default_connection(self) -> ConnectionKind {
        match self {
            Protocol::Rdp | Protocol::Ssh | Protocol::Vnc => ConnectionKind::RemoteAccess,
            Protocol::Smb | Protocol::Scp | Protocol::Ftp => ConnectionKind::FileTransfer,
            Protocol::Winrm | Protocol::Dcom | Protocol::Wmi => ConnectionKind::RemoteExecution,
            Protocol::HttpApi => ConnectionKind::Api,
            Protocol::Other | Protocol::Unknown => ConnectionKind::Unknown,
        }
    }
}

/// The program that initiated (or, seen from the target, carried) the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl Program {
    /// Builds a program from whatever the event carries; the name is taken from the path.
    pub fn from_parts(path: Option<&str>, command_line: Option<&str>, parent: Option<&str>) -> Option<Program> {
        let path = path.map(str::trim).filter(|path| !path.is_empty() && *path != "-");
        let command_line = command_line.map(str::trim).filter(|line| !line.is_empty() && *line != "-");
        let parent = parent.map(str::trim).filter(|parent| !parent.is_empty() && *parent != "-");
        if path.is_none() && command_line.is_none() {
            return None;
        }
        Some(Program {
            name: path.map(|path| cap(executable_name(path), MAX_SHORT_FIELD)),
            path: path.map(|path| cap(path, MAX_LONG_FIELD)),
            command_line: command_line.map(|line| cap(line, MAX_LONG_FIELD)),
            parent: parent.map(|parent| cap(parent, MAX_LONG_FIELD)),
        })
    }

    /// The lower-cased executable name (`mstsc.exe`), the form matchers compare.
    pub fn key(&self) -> Option<String> {
        self.name.as_deref().map(str::to_ascii_lowercase)
    }

    pub fn parent_key(&self) -> Option<String> {
        self.parent.as_deref().map(|parent| executable_name(parent).to_ascii_lowercase())
    }
}

/// `C:\Windows\System32\mstsc.exe` → `mstsc.exe`; `/usr/bin/ssh` → `ssh`.
pub fn executable_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Unknown,
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn from_name(name: &str) -> Severity {
        match name.trim().to_ascii_lowercase().as_str() {
            "info" | "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" | "moderate" => Severity::Medium,
            "high" => Severity::High,
            "critical" | "fatal" => Severity::Critical,
            _ => Severity::Unknown,
        }
    }

    /// Elastic's 0-100 risk score and similar scales.
    pub fn from_score(score: f64) -> Severity {
        match score {
            score if score >= 90.0 => Severity::Critical,
            score if score >= 70.0 => Severity::High,
            score if score >= 40.0 => Severity::Medium,
            score if score >= 0.0 => Severity::Low,
            _ => Severity::Unknown,
        }
    }
}

/// A MITRE ATT&CK technique id such as `T1021.001`, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TechniqueId(String);

impl TechniqueId {
    pub fn parse(text: &str) -> Option<TechniqueId> {
        let text = text.trim().to_ascii_uppercase();
        let digits = text.strip_prefix('T')?;
        let (main, sub) = match digits.split_once('.') {
            Some((main, sub)) => (main, Some(sub)),
            None => (digits, None),
        };
        let main_ok = main.len() == 4 && main.bytes().all(|byte| byte.is_ascii_digit());
        let sub_ok = sub.is_none_or(|sub| sub.len() == 3 && sub.bytes().all(|byte| byte.is_ascii_digit()));
        (main_ok && sub_ok).then_some(TechniqueId(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TechniqueId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        TechniqueId::parse(&text).ok_or_else(|| format!("`{text}` is not a MITRE ATT&CK technique id"))
    }
}

impl From<TechniqueId> for String {
    fn from(id: TechniqueId) -> String {
        id.0
    }
}

impl fmt::Display for TechniqueId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectionRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether the attempt the event records worked: a failed logon is not a successful one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    #[default]
    Unknown,
}

impl Outcome {
    pub fn id(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn is_unknown(&self) -> bool {
        *self == Outcome::Unknown
    }

    /// Reads the words SIEMs use (`success`, `failure`, `failed`, `allowed`, `blocked`, ...).
    pub fn from_name(name: &str) -> Outcome {
        match name.trim().to_ascii_lowercase().as_str() {
            "success" | "succeeded" | "successful" | "allowed" | "audit success" | "ok" => Outcome::Success,
            "failure" | "failed" | "fail" | "blocked" | "denied" | "audit failure" => Outcome::Failure,
            _ => Outcome::Unknown,
        }
    }
}

/// The input format an alert arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    Native,
    Ecs,
    Ocsf,
    Splunk,
    Windows,
}

impl AlertFormat {
    pub const ALL: [AlertFormat; 5] =
        [AlertFormat::Native, AlertFormat::Ecs, AlertFormat::Ocsf, AlertFormat::Splunk, AlertFormat::Windows];

    pub fn id(self) -> &'static str {
        match self {
            AlertFormat::Native => "native",
            AlertFormat::Ecs => "ecs",
            AlertFormat::Ocsf => "ocsf",
            AlertFormat::Splunk => "splunk",
            AlertFormat::Windows => "windows",
        }
    }

    pub fn from_id(id: &str) -> Option<AlertFormat> {
        AlertFormat::ALL.into_iter().find(|format| format.id() == id)
    }
}

/// One lateral-movement alert, normalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The sender's own id for this alert, used to recognise re-deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_alert_id: Option<String>,
    pub format: AlertFormat,
    /// The product that raised the alert (`Elastic Security`, `Splunk`, `Sysmon`, ...).
    pub source_product: String,
    pub source: System,
    pub target: System,
    /// The account that initiated the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Account>,
    /// A second account the initiating account acted as (SSH `user@`, runas, explicit credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<Account>,
    pub connection: ConnectionKind,
    pub protocol: Protocol,
    /// Whether the attempt worked; alerts stored before this was read have none.
    #[serde(default, skip_serializing_if = "Outcome::is_unknown")]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The Windows logon type (3 network, 9 new credentials, 10 remote interactive, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logon_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Program>,
    /// The network share reached, for file-share access (`\\*\C$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The file reached on that share, when the event names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitre: Vec<TechniqueId>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<DetectionRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Timestamp>,
    pub received_at: Timestamp,
    /// The payload exactly as it arrived, kept for the analyst and for re-normalization.
    pub raw: serde_json::Value,
    /// Set when the event itself says it records no movement (event 4672, a task created
    /// locally), with why. Such an alert never becomes a case, so it is never stored.
    #[serde(skip)]
    pub not_a_movement: Option<String>,
}

impl Alert {
    /// The account whose person is behind the movement: the initiating account when known.
    pub fn initiating_account(&self) -> Option<&Account> {
        self.account.as_ref().or(self.acting_as.as_ref())
    }

    /// What makes two alerts "the same movement" for grouping storms into one case.
    pub fn grouping_key(&self) -> GroupingKey {
        let system = |system: &System| {
            system
                .short_hostname()
                .or_else(|| system.ips.first().map(ToString::to_string))
                .unwrap_or_else(|| "?".to_string())
        };
        let technique = self
            .mitre
            .first()
            .map(|id| id.as_str().to_string())
            .unwrap_or_else(|| format!("{}/{}", self.protocol.id(), connection_id(self.connection)));
        // A burst of failed attempts is a case of its own, not part of the movement that worked.
        let technique = if self.outcome == Outcome::Failure { format!("{technique}/failed") } else { technique };
        GroupingKey {
            source: system(&self.source),
            target: system(&self.target),
            account: self.initiating_account().map(Account::key).unwrap_or_else(|| "?".to_string()),
            technique,
        }
    }
}

fn connection_id(kind: ConnectionKind) -> &'static str {
    match kind {
        ConnectionKind::RemoteAccess => "remote_access",
        ConnectionKind::FileTransfer => "file_transfer",
        ConnectionKind::Api => "api",
        ConnectionKind::AlternateAuthentication => "alternate_authentication",
        ConnectionKind::TokenManipulation => "token_manipulation",
        ConnectionKind::RemoteExecution => "remote_execution",
        ConnectionKind::Unknown => "unknown",
    }
}

/// (source, target, account, technique): alerts sharing it within the grouping window are one case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupingKey {
    pub source: String,
    pub target: String,
    pub account: String,
    pub technique: String,
}

/// (account, source, target, protocol): the movement whose history is shown as a hint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MovementKey {
    pub account: String,
    pub source: String,
    pub target: String,
    pub protocol: Protocol,
}

impl MovementKey {
    pub fn of(alert: &Alert) -> MovementKey {
        let grouping = alert.grouping_key();
        MovementKey {
            account: grouping.account,
            source: grouping.source,
            target: grouping.target,
            protocol: alert.protocol,
        }
    }
}
