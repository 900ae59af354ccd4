//! What a Windows event means, whatever wrapper it arrived in.
//!
//! A wrapper (a raw forwarded event, a Winlogbeat or Elastic document, an OCSF record, a Splunk
//! row) only finds the event id and its fields and hands them over as an [`EventRecord`] keyed by
//! the event's own XML field names. Everything else, which end of the movement the logging
//! machine is, which account initiated, the connection, protocol, port, technique, outcome and
//! logon type, is decided here, once, from the tables below.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{pointer, short, system, techniques, FieldProblem};
use crate::model::{
    cap, Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Outcome, Program, Protocol, Severity, System,
    MAX_LONG_FIELD,
};
use crate::time::Timestamp;

/// Every event field the meanings below read, by its name in the event's XML. Wrappers fill these
/// (under other names when their shipper renamed them) and nothing else.
pub(crate) const EVENT_FIELDS: [&str; 44] = [
    "SubjectUserName",
    "SubjectDomainName",
    "TargetUserName",
    "TargetDomainName",
    "TargetOutboundUserName",
    "TargetOutboundDomainName",
    "LogonType",
    "LogonProcessName",
    "AuthenticationPackageName",
    "WorkstationName",
    "Workstation",
    "IpAddress",
    "IpPort",
    "ProcessName",
    "TargetServerName",
    "TargetInfo",
    "ShareName",
    "RelativeTargetName",
    "ServiceName",
    "ServiceFileName",
    "ImagePath",
    "AccountName",
    "Status",
    "TaskName",
    "RpcCallClientLocality",
    "Image",
    "CommandLine",
    "ParentImage",
    "User",
    "Initiated",
    "SourceIp",
    "SourceHostname",
    "DestinationIp",
    "DestinationHostname",
    "DestinationPort",
    "UtcTime",
    "PrivilegeList",
    "ClientProcessId",
    "TicketOptions",
    "PackageName",
    "Domain",
    "SourcePort",
    "FailureReason",
    "SubStatus",
];

/// One Windows event as a wrapper found it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventRecord {
    pub event_id: u32,
    /// The machine that logged the event.
    pub logging_host: Option<String>,
    /// The log it was written to (`Security`, `System`, `Microsoft-Windows-Sysmon/Operational`).
    pub channel: Option<String>,
    pub provider: Option<String>,
    pub record_id: Option<String>,
    pub observed_at: Option<Timestamp>,
    /// What the wrapper itself says of the outcome (an audit-failure keyword, ECS
    /// `event.outcome`, OCSF `status_id`); the event's own status code wins over it.
    pub stated_outcome: Outcome,
    data: BTreeMap<&'static str, String>,
}

impl EventRecord {
    pub(crate) fn new(event_id: u32) -> EventRecord {
        EventRecord { event_id, ..EventRecord::default() }
    }

    /// Sets a field unless it is already set or the text is a placeholder ("-", empty).
    pub(crate) fn offer(&mut self, name: &'static str, text: Option<String>) {
        let Some(text) = text else { return };
        let text = text.trim();
        if text.is_empty() || text == "-" || self.data.contains_key(name) {
            return;
        }
        self.data.insert(name, cap(text, MAX_LONG_FIELD));
    }

    fn text(&self, name: &str) -> Option<String> {
        self.data.get(name).cloned()
    }

    fn is_sysmon(&self) -> bool {
        let mentions_sysmon = |text: &Option<String>| text.as_deref().is_some_and(|text| text.contains("Sysmon"));
        mentions_sysmon(&self.channel) || mentions_sysmon(&self.provider)
    }

    fn account(&self, name: &str, domain: &str) -> Option<Account> {
        let account = self.text(name).and_then(|user| Account::parse(&user))?;
        // "NULL SID" and "-" stand for "no account" in Windows' own rendering.
        if account.name.eq_ignore_ascii_case("null sid") {
            return None;
        }
        Some(match self.text(domain) {
            Some(domain) if account.domain.is_none() => Account::with_domain(&account.name, Some(&domain)),
            _ => account,
        })
    }

    fn ips(&self, name: &str) -> Vec<String> {
        // Kerberos events write IPv4 clients as IPv4-mapped IPv6 (`::ffff:10.0.0.5`).
        self.text(name).map(|text| text.trim_start_matches("::ffff:").to_string()).into_iter().collect()
    }

    /// A port, where `0` and `-` are Windows' "not known", not a mistake.
    fn port(&self, name: &str, problems: &mut Vec<FieldProblem>) -> Option<u16> {
        let text = self.text(name)?;
        match text.parse::<u32>() {
            Ok(0) => None,
            Ok(port) if port <= 65535 => Some(port as u16),
            _ => {
                problems.push(FieldProblem::new(pointer(name), "a port is a whole number from 0 to 65535"));
                None
            }
        }
    }

    /// The logon type as a number; Elastic and OCSF also write it as a name.
    fn logon_type(&self, problems: &mut Vec<FieldProblem>) -> Option<u8> {
        let text = self.text("LogonType")?;
        if let Ok(number) = text.parse::<u8>() {
            if LOGON_TYPES.iter().any(|known| known.number == number) {
                return Some(number);
            }
        }
        if let Some(known) = LOGON_TYPES.iter().find(|known| known.name.eq_ignore_ascii_case(text.trim())) {
            return Some(known.number);
        }
        problems.push(FieldProblem::new(
            pointer("LogonType"),
            "a Windows logon type is 0, 2 to 5, or 7 to 13, or its name",
        ));
        None
    }

    /// The event's own status code: `0x0` is success, anything else a failure.
    fn status_outcome(&self) -> Option<Outcome> {
        let status = self.text("Status")?;
        let digits = status.trim().trim_start_matches("0x").trim_start_matches("0X");
        Some(match u64::from_str_radix(digits, 16) {
            Ok(0) => Outcome::Success,
            Ok(_) => Outcome::Failure,
            Err(_) => return None,
        })
    }
}

/// A Windows logon type and what it says about where the person was.
pub struct LogonTypeMeaning {
    pub number: u8,
    pub name: &'static str,
    /// The logon happened on the machine itself: no second machine took part.
    pub local: bool,
}

pub const LOGON_TYPES: [LogonTypeMeaning; 12] = [
    LogonTypeMeaning { number: 0, name: "System", local: true },
    LogonTypeMeaning { number: 2, name: "Interactive", local: true },
    LogonTypeMeaning { number: 3, name: "Network", local: false },
    LogonTypeMeaning { number: 4, name: "Batch", local: true },
    LogonTypeMeaning { number: 5, name: "Service", local: true },
    LogonTypeMeaning { number: 7, name: "Unlock", local: true },
    LogonTypeMeaning { number: 8, name: "NetworkCleartext", local: false },
    LogonTypeMeaning { number: 9, name: "NewCredentials", local: false },
    LogonTypeMeaning { number: 10, name: "RemoteInteractive", local: false },
    LogonTypeMeaning { number: 11, name: "CachedInteractive", local: true },
    LogonTypeMeaning { number: 12, name: "CachedRemoteInteractive", local: false },
    LogonTypeMeaning { number: 13, name: "CachedUnlock", local: true },
];

pub fn logon_type_meaning(number: u8) -> Option<&'static LogonTypeMeaning> {
    LOGON_TYPES.iter().find(|known| known.number == number)
}

/// Which end of a movement the machine that logged an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoggedOn {
    /// The machine reached (a logon, a share access, a service install).
    Target,
    /// The machine the movement started from (explicit credentials).
    Source,
    /// A domain controller that vouched for the credentials: neither end.
    Authority,
    /// The event says which side (Sysmon's network and process events).
    EitherSide,
}

/// What one event id means.
struct EventMeaning {
    event_id: u32,
    sysmon: bool,
    name: &'static str,
    logged_on: LoggedOn,
    /// The fields naming the initiating account (name, domain), first present wins.
    account: &'static [(&'static str, &'static str)],
    /// The field naming a second account the first acted as.
    second_account: Option<(&'static str, &'static str)>,
    connection: ConnectionKind,
    protocol: Protocol,
    port: Option<u16>,
    techniques: &'static [&'static str],
    /// The outcome the event id itself carries (4625 is a failure by definition).
    outcome: Outcome,
    /// Set when the event alone never describes a movement, with why.
    not_a_movement: Option<&'static str>,
}

const SUBJECT: (&str, &str) = ("SubjectUserName", "SubjectDomainName");
const TARGET: (&str, &str) = ("TargetUserName", "TargetDomainName");

/// What an event means unless its entry says otherwise: logged on the target, the target
/// account initiating, nothing known about the connection.
const EVENT: EventMeaning = EventMeaning {
    event_id: 0,
    sysmon: false,
    name: "",
    logged_on: LoggedOn::Target,
    account: &[TARGET],
    second_account: None,
    connection: ConnectionKind::Unknown,
    protocol: Protocol::Unknown,
    port: None,
    techniques: &[],
    outcome: Outcome::Unknown,
    not_a_movement: None,
};

/// A service installed on the target: how PsExec-style tools run their payload there.
const SERVICE_INSTALLED: EventMeaning = EventMeaning {
    name: "A service was installed",
    account: &[SUBJECT],
    connection: ConnectionKind::RemoteExecution,
    protocol: Protocol::Smb,
    port: Some(445),
    techniques: &["T1021.002", "T1569.002"],
    outcome: Outcome::Success,
    ..EVENT
};

const MEANINGS: [EventMeaning; 17] = [
    EventMeaning {
        event_id: 4624,
        name: "An account logged on",
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 4625,
        name: "An account failed to log on",
        outcome: Outcome::Failure,
        ..EVENT
    },
    EventMeaning {
        event_id: 4648,
        name: "A logon with explicit credentials",
        logged_on: LoggedOn::Source,
        account: &[SUBJECT],
        second_account: Some(TARGET),
        ..EVENT
    },
    EventMeaning {
        event_id: 4672,
        name: "Special privileges assigned to a new logon",
        account: &[SUBJECT],
        outcome: Outcome::Success,
        not_a_movement: Some(
            "event 4672 records privileges given to a logon on this machine; the logon's own event (4624) says where it came from",
        ),
        ..EVENT
    },
    EventMeaning {
        event_id: 4768,
        name: "A Kerberos ticket-granting ticket was requested",
        logged_on: LoggedOn::Authority,
        ..EVENT
    },
    EventMeaning {
        event_id: 4769,
        name: "A Kerberos service ticket was requested",
        logged_on: LoggedOn::Authority,
        ..EVENT
    },
    EventMeaning {
        event_id: 4776,
        name: "NTLM credentials were validated",
        logged_on: LoggedOn::Authority,
        ..EVENT
    },
    EventMeaning {
        event_id: 5140,
        name: "A network share was accessed",
        account: &[SUBJECT],
        connection: ConnectionKind::FileTransfer,
        protocol: Protocol::Smb,
        // IpPort is the client's ephemeral port; share access itself is SMB on 445.
        port: Some(445),
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 5145,
        name: "A network share object was checked",
        account: &[SUBJECT],
        connection: ConnectionKind::FileTransfer,
        protocol: Protocol::Smb,
        port: Some(445),
        ..EVENT
    },
    EventMeaning { event_id: 4697, ..SERVICE_INSTALLED },
    // The System log's record of the same install names the account the service runs as.
    EventMeaning { event_id: 7045, account: &[SUBJECT, ("AccountName", "Domain")], ..SERVICE_INSTALLED },
    EventMeaning {
        event_id: 4698,
        name: "A scheduled task was created",
        account: &[SUBJECT],
        connection: ConnectionKind::RemoteExecution,
        protocol: Protocol::Dcom,
        techniques: &["T1053.005"],
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 1,
        sysmon: true,
        name: "Sysmon: process created",
        logged_on: LoggedOn::EitherSide,
        account: &[("User", "")],
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 3,
        sysmon: true,
        name: "Sysmon: network connection",
        logged_on: LoggedOn::EitherSide,
        account: &[("User", "")],
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 4634,
        name: "An account was logged off",
        outcome: Outcome::Success,
        not_a_movement: Some("event 4634 records a logoff; the logon (4624) is the movement"),
        ..EVENT
    },
    EventMeaning {
        event_id: 4688,
        name: "A process was created",
        logged_on: LoggedOn::EitherSide,
        account: &[SUBJECT],
        outcome: Outcome::Success,
        ..EVENT
    },
    EventMeaning {
        event_id: 4771,
        name: "Kerberos pre-authentication failed",
        logged_on: LoggedOn::Authority,
        outcome: Outcome::Failure,
        ..EVENT
    },
];

/// The event ids Vouch reads, for messages.
pub(crate) const READ_EVENTS: &str =
    "4624, 4625, 4634, 4648, 4672, 4688, 4697, 4698, 4768, 4769, 4771, 4776, 5140, 5145, 7045, Sysmon 1 and 3";

/// Processes that run what another machine asked for, and how that machine reached them. A
/// process they start landed on this machine through a movement.
const REMOTE_EXECUTION_HOSTS: [(&str, ConnectionKind, Protocol, &str); 6] = [
    ("wmiprvse.exe", ConnectionKind::RemoteExecution, Protocol::Wmi, "T1047"),
    ("wsmprovhost.exe", ConnectionKind::RemoteExecution, Protocol::Winrm, "T1021.006"),
    ("winrshost.exe", ConnectionKind::RemoteExecution, Protocol::Winrm, "T1021.006"),
    ("services.exe", ConnectionKind::RemoteExecution, Protocol::Smb, "T1569.002"),
    ("mmc.exe", ConnectionKind::RemoteExecution, Protocol::Dcom, "T1021.003"),
    ("psexesvc.exe", ConnectionKind::RemoteExecution, Protocol::Smb, "T1569.002"),
];

/// Hosts that also run for local work: only what they start is a landing, not their own start.
const GENERIC_HOSTS: [&str; 2] = ["services.exe", "mmc.exe"];

/// Who sent the event and how it is identified, as the wrapper knows it.
pub(crate) struct Envelope<'a> {
    pub format: AlertFormat,
    pub source_product: Option<String>,
    pub source_alert_id: Option<String>,
    pub raw: &'a Value,
    pub received_at: Timestamp,
}

/// Turns an event into an alert, or says which fields are wrong, or that it describes no movement.
pub(crate) fn alert_from_event(record: &EventRecord, envelope: Envelope<'_>) -> Result<Alert, Vec<FieldProblem>> {
    let sysmon = record.is_sysmon();
    let Some(meaning) = MEANINGS.iter().find(|meaning| meaning.event_id == record.event_id && meaning.sysmon == sysmon)
    else {
        return Err(vec![FieldProblem::new(
            "/EventID",
            format!("event {} is not one Vouch reads as lateral movement ({READ_EVENTS})", record.event_id),
        )]);
    };
    let mut problems = Vec::new();
    let logging_host = record.logging_host.clone();
    let source_alert_id = envelope.source_alert_id.or_else(|| {
        let record_id = record.record_id.as_ref()?;
        Some(format!(
            "{}:{}:{}",
            logging_host.as_deref().unwrap_or("?"),
            record.channel.as_deref().unwrap_or("").to_ascii_lowercase(),
            record_id
        ))
    });
    let outcome = match meaning.outcome {
        Outcome::Unknown => record.status_outcome().unwrap_or(record.stated_outcome),
        fixed => record.status_outcome().filter(|_| fixed == Outcome::Success).unwrap_or(fixed),
    };
    let mut alert = Alert {
        source_alert_id: source_alert_id.map(|id| cap(&id, 512)),
        format: envelope.format,
        source_product: envelope
            .source_product
            .unwrap_or_else(|| if sysmon { "Sysmon" } else { "Windows event log" }.to_string()),
        source: System::default(),
        target: System::default(),
        account: meaning.account.iter().find_map(|(name, domain)| record.account(name, domain)),
        acting_as: meaning.second_account.and_then(|(name, domain)| record.account(name, domain)),
        connection: meaning.connection,
        protocol: meaning.protocol,
        outcome,
        port: meaning.port,
        logon_type: None,
        program: None,
        share: None,
        file: None,
        mitre: techniques(meaning.techniques.iter().map(|id| id.to_string())),
        severity: Severity::Unknown,
        rule: Some(DetectionRule {
            id: Some(format!("windows-{}", record.event_id)),
            name: Some(meaning.name.to_string()),
        }),
        observed_at: record.observed_at,
        received_at: envelope.received_at,
        raw: envelope.raw.clone(),
        not_a_movement: meaning.not_a_movement.map(str::to_string),
    };
    let this_host = || system(logging_host.clone(), &[], Vec::new());
    match meaning.logged_on {
        LoggedOn::Target => alert.target = this_host(),
        LoggedOn::Source => alert.source = this_host(),
        LoggedOn::Authority | LoggedOn::EitherSide => {}
    }

    match (record.event_id, sysmon) {
        (4624 | 4625, _) => read_logon(record, &mut alert, &mut problems),
        (4648, _) => {
            let server = record.text("TargetServerName").filter(|name| name != "localhost");
            alert.target = system(server, &record.ips("IpAddress"), Vec::new());
            alert.program = Program::from_parts(record.text("ProcessName").as_deref(), None, None);
            alert.port = record.port("IpPort", &mut problems);
            alert.protocol = protocol_of_service_principal(record.text("TargetInfo").as_deref())
                .or_else(|| alert.port.and_then(Protocol::from_port))
                .unwrap_or(Protocol::Unknown);
            alert.connection = alert.protocol.default_connection();
            alert.mitre = techniques(technique_for_protocol(alert.protocol).map(str::to_string));
        }
        (4672, _) => {}
        (4768 | 4771 | 4776, _) => {
            // The domain controller checked credentials for a client: where the client is, not
            // where it went.
            let workstation = record.text("Workstation").filter(|name| !name.is_empty());
            alert.source = system(workstation, &record.ips("IpAddress"), Vec::new());
            alert.protocol = Protocol::Unknown;
        }
        (4769, _) => {
            // A service ticket names the service reached: `cifs/FILESRV.corp.example` or the
            // service's computer account `FILESRV$`.
            alert.source = system(None, &record.ips("IpAddress"), Vec::new());
            let service = record.text("ServiceName").unwrap_or_default();
            if let Some((class, host)) = service.split_once('/') {
                let host = host.split(['/', ':']).next().unwrap_or(host);
                alert.target = system(Some(host.to_string()), &[], Vec::new());
                alert.protocol = protocol_of_service_principal(Some(&format!("{class}/"))).unwrap_or(Protocol::Unknown);
            } else if let Some(computer) = service.strip_suffix('$') {
                alert.target = system(Some(computer.to_string()), &[], Vec::new());
            }
            alert.connection = alert.protocol.default_connection();
            alert.mitre = techniques(technique_for_protocol(alert.protocol).map(str::to_string));
        }
        (5140 | 5145, _) => {
            alert.source = system(None, &record.ips("IpAddress"), Vec::new());
            alert.share = short(record.text("ShareName"));
            alert.file = record.text("RelativeTargetName").map(|file| cap(&file, MAX_LONG_FIELD));
            let share = alert.share.as_deref().unwrap_or("").to_ascii_lowercase();
            let mut ids = Vec::new();
            if ["c$", "admin$", "ipc$"].iter().any(|admin| share.ends_with(admin)) {
                ids.push("T1021.002".to_string());
            }
            if alert.file.as_deref().is_some_and(looks_like_a_tool) {
                ids.push("T1570".to_string());
            }
            alert.mitre = techniques(ids);
        }
        (4697 | 7045, _) => {
            // How PsExec-style tools run their payload on the target: the service's name is
            // what a renamed copy cannot hide.
            let image = record.text("ServiceFileName").or_else(|| record.text("ImagePath"));
            alert.program = Program::from_parts(None, image.as_deref(), None).map(|mut program| {
                program.name = record.text("ServiceName").map(|name| cap(&name, 256));
                program
            });
        }
        (4698, _) => {
            // Windows 10 and later say whether the task came over RPC from another machine.
            if record.text("RpcCallClientLocality").as_deref() == Some("0") {
                alert.not_a_movement =
                    Some("the scheduled task was created on this machine itself (RpcCallClientLocality 0)".to_string());
            }
            alert.program = Program::from_parts(None, record.text("TaskName").as_deref(), None);
        }
        (1, true) | (4688, false) => read_process_start(record, &mut alert),
        (3, true) => {
            let initiated = record.text("Initiated").is_some_and(|text| text.eq_ignore_ascii_case("true"));
            let (source_name, destination_name) = if initiated {
                (record.text("SourceHostname").or(logging_host.clone()), record.text("DestinationHostname"))
            } else {
                (record.text("SourceHostname"), record.text("DestinationHostname").or(logging_host.clone()))
            };
            alert.source = system(source_name, &record.ips("SourceIp"), Vec::new());
            alert.target = system(destination_name, &record.ips("DestinationIp"), Vec::new());
            alert.port = record.port("DestinationPort", &mut problems);
            alert.protocol = alert.port.and_then(Protocol::from_port).unwrap_or(Protocol::Unknown);
            alert.connection = alert.protocol.default_connection();
            alert.program = Program::from_parts(record.text("Image").as_deref(), None, None);
            alert.mitre = techniques(technique_for_protocol(alert.protocol).map(str::to_string));
        }
        _ => {}
    }
    if problems.is_empty() {
        Ok(alert)
    } else {
        Err(problems)
    }
}

fn read_logon(record: &EventRecord, alert: &mut Alert, problems: &mut Vec<FieldProblem>) {
    alert.source = system(record.text("WorkstationName"), &record.ips("IpAddress"), Vec::new());
    alert.logon_type = record.logon_type(problems);
    alert.program = Program::from_parts(record.text("ProcessName").as_deref(), None, None);
    let logon_process = record.text("LogonProcessName").unwrap_or_default().trim().to_ascii_lowercase();
    match alert.logon_type {
        Some(10 | 12) => {
            alert.connection = ConnectionKind::RemoteAccess;
            alert.protocol = Protocol::Rdp;
            alert.port = Some(3389);
            alert.mitre = techniques(["T1021.001".to_string()]);
        }
        Some(9) => {
            // Type 9 keeps the caller's identity locally and presents other credentials on the
            // network; with the seclogo process it is the pass-the-hash pattern. The machine is
            // the one the user sits at, not a target.
            alert.acting_as = record.account("TargetOutboundUserName", "TargetOutboundDomainName");
            if logon_process == "seclogo" {
                alert.connection = ConnectionKind::AlternateAuthentication;
                alert.mitre = techniques(["T1550.002".to_string()]);
            }
            alert.source = std::mem::take(&mut alert.target);
        }
        Some(3) => alert.mitre = techniques(["T1021".to_string()]),
        // Local logon types (keyboard, service, batch, unlock) are judged by the movement check.
        _ => {}
    }
}

fn read_process_start(record: &EventRecord, alert: &mut Alert) {
    // A process started by a remote-execution host is the landing of a movement on this
    // machine; otherwise this machine is where a movement starts, if the command line names
    // another machine.
    let program = Program::from_parts(
        record.text("Image").or_else(|| record.text("ProcessName")).as_deref(),
        record.text("CommandLine").as_deref(),
        record.text("ParentImage").as_deref(),
    );
    let parent = program.as_ref().and_then(Program::parent_key).unwrap_or_default();
    let image = program.as_ref().and_then(Program::key).unwrap_or_default();
    let host_of = |name: &str| REMOTE_EXECUTION_HOSTS.iter().find(|(host, ..)| *host == name);
    // The remote-execution host starting up is itself the landing (PowerShell remoting starts
    // wsmprovhost.exe for the session), and so is anything it starts.
    let landing = host_of(&image).filter(|(host, ..)| !GENERIC_HOSTS.contains(host)).or_else(|| host_of(&parent));
    let this_host = system(record.logging_host.clone(), &[], Vec::new());
    if let Some((_, connection, protocol, technique)) = landing {
        alert.target = this_host;
        alert.connection = *connection;
        alert.protocol = *protocol;
        alert.mitre = techniques([technique.to_string()]);
    } else {
        alert.source = this_host;
        let (protocol, destination) = destination_from_command_line(&image, record.text("CommandLine").as_deref());
        alert.protocol = protocol;
        alert.connection = protocol.default_connection();
        alert.target = system(destination, &[], Vec::new());
        alert.mitre = techniques(technique_for_protocol(protocol).map(str::to_string));
    }
    // Sysmon's `User` is the process's own identity.
    alert.account = record.account("User", "").or_else(|| record.account("SubjectUserName", "SubjectDomainName"));
    alert.program = program;
}

/// The protocol a Kerberos service class implies (`cifs/host`, `termsrv/host`, ...).
fn protocol_of_service_principal(principal: Option<&str>) -> Option<Protocol> {
    let lowered = principal?.to_ascii_lowercase();
    let class = lowered.split('/').next().unwrap_or("");
    Some(match class {
        "termsrv" => Protocol::Rdp,
        "cifs" => Protocol::Smb,
        "http" | "wsman" => Protocol::Winrm,
        "rpcss" => Protocol::Dcom,
        _ => return None,
    })
}

fn technique_for_protocol(protocol: Protocol) -> Option<&'static str> {
    Some(match protocol {
        Protocol::Rdp => "T1021.001",
        Protocol::Smb => "T1021.002",
        Protocol::Dcom => "T1021.003",
        Protocol::Ssh => "T1021.004",
        Protocol::Vnc => "T1021.005",
        Protocol::Winrm => "T1021.006",
        Protocol::Wmi => "T1047",
        _ => return None,
    })
}

fn looks_like_a_tool(file: &str) -> bool {
    let lowered = file.to_ascii_lowercase();
    [".exe", ".dll", ".ps1", ".bat", ".vbs", ".scr", ".sys"].iter().any(|extension| lowered.ends_with(extension))
}

/// Reads the destination from the command lines of common clients: `mstsc /v:host`,
/// `ssh user@host`, `putty -ssh host`, `psexec \\host`, `schtasks /s host`, `wmic /node:host`.
pub(crate) fn destination_from_command_line(
    executable: &str,
    command_line: Option<&str>,
) -> (Protocol, Option<String>) {
    let words: Vec<&str> = command_line.unwrap_or("").split_whitespace().collect();
    let after_flag = |flag: &str| {
        words.iter().find_map(|word| {
            let lowered = word.to_ascii_lowercase();
            lowered
                .starts_with(flag)
                .then(|| word[flag.len()..].trim_matches('"').split(':').next().unwrap_or("").to_string())
        })
    };
    let value_after = |flag: &str| {
        words
            .iter()
            .position(|word| word.eq_ignore_ascii_case(flag))
            .and_then(|index| words.get(index + 1))
            .map(|word| word.trim_matches('"').to_string())
    };
    let unc_host = || {
        words.iter().find_map(|word| {
            word.trim_matches('"').strip_prefix("\\\\").map(|rest| rest.split('\\').next().unwrap_or(rest).to_string())
        })
    };
    match executable {
        "mstsc.exe" => (Protocol::Rdp, after_flag("/v:")),
        "ssh.exe" | "ssh" | "putty.exe" | "plink.exe" => {
            let host = words
                .iter()
                .skip(1)
                .rev()
                .find(|word| !word.starts_with('-'))
                .map(|word| word.rsplit('@').next().unwrap_or(word).trim_matches('"').to_string());
            (Protocol::Ssh, host)
        }
        "psexec.exe" | "psexec64.exe" | "paexec.exe" => (Protocol::Smb, unc_host()),
        "schtasks.exe" => (Protocol::Dcom, value_after("/s")),
        "wmic.exe" => (Protocol::Wmi, after_flag("/node:")),
        "winrs.exe" => (Protocol::Winrm, after_flag("-r:").or_else(|| after_flag("/r:"))),
        _ => (Protocol::Unknown, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_a_meaning_reads_is_one_wrappers_fill() {
        for meaning in &MEANINGS {
            for (name, domain) in meaning.account.iter().chain(meaning.second_account.iter()) {
                assert!(EVENT_FIELDS.contains(name), "{name}");
                assert!(domain.is_empty() || EVENT_FIELDS.contains(domain), "{domain}");
            }
        }
    }

    /// The hosts this table reads protocols from are the playbook's remote-execution hosts, so
    /// a landing the normalizer sees is one the hints explain.
    #[test]
    fn every_remote_execution_host_is_a_playbook_family_host() {
        let playbook = crate::Playbook::builtin();
        for (host, ..) in REMOTE_EXECUTION_HOSTS {
            let known = playbook.remote_execution.iter().any(|family| family.hosts.iter().any(|known| known == host));
            assert!(known, "{host} is in no [[remote_execution]] family's hosts");
        }
    }

    #[test]
    fn command_lines_name_their_destination() {
        let cases = [
            ("mstsc.exe", "mstsc.exe /v:SRV-DB-01:3389", Protocol::Rdp, Some("SRV-DB-01")),
            ("psexec.exe", r"psexec.exe \\FILESRV -s cmd.exe", Protocol::Smb, Some("FILESRV")),
            ("schtasks.exe", "schtasks /create /s SRV-APP-02 /tn x /tr y", Protocol::Dcom, Some("SRV-APP-02")),
            ("wmic.exe", "wmic /node:SRV-7 process call create calc", Protocol::Wmi, Some("SRV-7")),
            ("ssh", "ssh -p 22 deploy@web-01", Protocol::Ssh, Some("web-01")),
            ("cmd.exe", "cmd.exe /c whoami", Protocol::Unknown, None),
        ];
        for (executable, command_line, protocol, host) in cases {
            let (found_protocol, found_host) = destination_from_command_line(executable, Some(command_line));
            assert_eq!((found_protocol, found_host.as_deref()), (protocol, host), "{command_line}");
        }
    }
}
