//! Raw Windows Security, System and Sysmon events, flat as NXLog, Winlogbeat's `event_data` or a
//! Splunk result row carries them.
//!
//! Which end of the movement the logging machine is depends on the event: a logon (4624), a share
//! access (5140/5145) or a service install (4697/7045) is logged on the target; explicit
//! credentials (4648) on the source; Sysmon network events say which side initiated.

use serde_json::Value;

use super::{finish, logon_type, pointer, short, system, techniques, FieldProblem, Fields};
use crate::model::{
    cap, Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Program, Protocol, Severity, System,
    MAX_LONG_FIELD,
};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    normalize_fields(Fields::new(payload), payload, received_at, AlertFormat::Windows, None)
}

/// Shared with the Splunk format, whose `result` row is often exactly such an event.
pub(crate) fn normalize_fields(
    fields: Fields<'_>,
    raw: &Value,
    received_at: Timestamp,
    format: AlertFormat,
    source_alert_id: Option<String>,
) -> Result<Alert, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let event_id = match fields.number("EventID").or_else(|| fields.number("EventCode")) {
        Some(number) if number.fract() == 0.0 && (0.0..=65535.0).contains(&number) => number as u32,
        Some(_) => {
            problems.push(FieldProblem::new("/EventID", "an event id is a whole number from 0 to 65535"));
            return Err(problems);
        }
        None => {
            problems.push(FieldProblem::new("/EventID", "a Windows event needs its EventID"));
            return Err(problems);
        }
    };
    let logging_host = fields.first_text(&["Hostname", "Computer", "ComputerName", "host.name"]);
    let channel = fields.first_text(&["Channel", "LogName"]).unwrap_or_default().to_ascii_lowercase();
    let is_sysmon = channel.contains("sysmon") || fields.text("SourceName").is_some_and(|name| name.contains("Sysmon"));
    let observed_at = fields.timestamp(&["UtcTime", "@timestamp", "TimeCreated", "EventTime"]);
    let source_alert_id = source_alert_id.or_else(|| {
        let record = fields.text("RecordNumber").or_else(|| fields.text("EventRecordID"))?;
        Some(format!("{}:{}:{}", logging_host.as_deref().unwrap_or("?"), channel, record))
    });

    let mut alert = Alert {
        source_alert_id: source_alert_id.map(|id| cap(&id, 512)),
        format,
        source_product: if is_sysmon { "Sysmon" } else { "Windows event log" }.to_string(),
        source: System::default(),
        target: System::default(),
        account: None,
        acting_as: None,
        connection: ConnectionKind::Unknown,
        protocol: Protocol::Unknown,
        port: None,
        logon_type: None,
        program: None,
        share: None,
        file: None,
        mitre: Vec::new(),
        severity: Severity::Unknown,
        rule: Some(DetectionRule {
            id: Some(format!("windows-{event_id}")),
            name: Some(event_name(event_id, is_sysmon).to_string()),
        }),
        observed_at,
        received_at,
        raw: raw.clone(),
    };
    let account_of = |name: &str, domain: &str| {
        fields.text(name).and_then(|user| Account::parse(&user)).map(|account| match fields.text(domain) {
            Some(domain) if account.domain.is_none() => Account::with_domain(&account.name, Some(&domain)),
            _ => account,
        })
    };

    match (event_id, is_sysmon) {
        (1, true) => {
            // A process was created. Started by a remote-execution host it is the landing of a
            // movement on this machine; otherwise this machine is where the movement starts.
            let program = Program::from_parts(
                fields.text("Image").as_deref(),
                fields.text("CommandLine").as_deref(),
                fields.text("ParentImage").as_deref(),
            );
            let parent = program.as_ref().and_then(Program::parent_key).unwrap_or_default();
            let image = program.as_ref().and_then(Program::key).unwrap_or_default();
            // The remote-execution host starting up is itself the landing (PowerShell remoting
            // starts wsmprovhost.exe for the session), and so is anything it starts.
            let (landed, parent) = if ["wmiprvse.exe", "wsmprovhost.exe", "winrshost.exe"].contains(&image.as_str()) {
                (true, image.clone())
            } else {
                (
                    ["wmiprvse.exe", "wsmprovhost.exe", "services.exe", "winrshost.exe"].contains(&parent.as_str()),
                    parent,
                )
            };
            let this_host = system(logging_host.clone(), &[], Vec::new());
            if landed {
                alert.target = this_host;
                let (connection, protocol, technique) = match parent.as_str() {
                    "wmiprvse.exe" => (ConnectionKind::RemoteExecution, Protocol::Wmi, "T1047"),
                    "wsmprovhost.exe" | "winrshost.exe" => {
                        (ConnectionKind::RemoteExecution, Protocol::Winrm, "T1021.006")
                    }
                    _ => (ConnectionKind::RemoteExecution, Protocol::Smb, "T1569.002"),
                };
                alert.connection = connection;
                alert.protocol = protocol;
                alert.mitre = techniques([technique.to_string()]);
            } else {
                alert.source = this_host;
                let name = program.as_ref().and_then(Program::key).unwrap_or_default();
                let (protocol, destination) =
                    destination_from_command_line(&name, fields.text("CommandLine").as_deref());
                alert.protocol = protocol;
                alert.connection = protocol.default_connection();
                alert.target = system(destination, &[], Vec::new());
            }
            // Sysmon's `User` is the process's own identity; the event's `Domain` column is not.
            alert.account = fields.text("User").and_then(|user| Account::parse(&user));
            alert.program = program;
        }
        (3, true) => {
            let initiated = fields.text("Initiated").is_some_and(|text| text.eq_ignore_ascii_case("true"));
            let source_name = fields.text("SourceHostname");
            let destination_name = fields.text("DestinationHostname");
            let source_ips = fields.texts("SourceIp");
            let destination_ips = fields.texts("DestinationIp");
            // The logging machine is the side that initiated, or the side that accepted.
            let (source_name, destination_name) = if initiated {
                (source_name.or(logging_host.clone()), destination_name)
            } else {
                (source_name, destination_name.or(logging_host.clone()))
            };
            alert.source = system(source_name, &source_ips, Vec::new());
            alert.target = system(destination_name, &destination_ips, Vec::new());
            alert.port = fields.port(&["DestinationPort"], &mut problems);
            alert.protocol = alert.port.and_then(Protocol::from_port).unwrap_or(Protocol::Unknown);
            alert.connection = alert.protocol.default_connection();
            alert.account = fields.text("User").and_then(|user| Account::parse(&user));
            alert.program = Program::from_parts(fields.text("Image").as_deref(), None, None);
            alert.mitre = techniques(technique_for_protocol(alert.protocol).map(str::to_string));
        }
        (4624, _) | (4625, _) => {
            alert.target = system(logging_host.clone(), &[], Vec::new());
            let workstation = fields.text("WorkstationName");
            alert.source = system(workstation, &fields.texts("IpAddress"), Vec::new());
            alert.account = account_of("TargetUserName", "TargetDomainName");
            alert.logon_type = logon_type(&fields, &["LogonType"], &mut problems);
            alert.program = Program::from_parts(fields.text("ProcessName").as_deref(), None, None);
            let logon_process = fields.text("LogonProcessName").unwrap_or_default().to_ascii_lowercase();
            match alert.logon_type {
                Some(10) => {
                    alert.connection = ConnectionKind::RemoteAccess;
                    alert.protocol = Protocol::Rdp;
                    alert.port = Some(3389);
                    alert.mitre = techniques(["T1021.001".to_string()]);
                }
                Some(9) => {
                    // Type 9 keeps the caller's identity locally and presents other credentials
                    // on the network; with the seclogo process it is the pass-the-hash pattern.
                    alert.acting_as = account_of("TargetOutboundUserName", "TargetOutboundDomainName");
                    if logon_process == "seclogo" {
                        alert.connection = ConnectionKind::AlternateAuthentication;
                        alert.mitre = techniques(["T1550.002".to_string()]);
                    }
                    // On a type 9 logon the machine is the one the user sits at, not a target.
                    alert.source = std::mem::take(&mut alert.target);
                }
                Some(3) => {
                    alert.mitre = techniques(["T1021".to_string()]);
                }
                _ => {}
            }
        }
        (4648, _) => {
            // Explicit credentials: logged where the user is, naming the server they reached.
            alert.source = system(logging_host.clone(), &[], Vec::new());
            let server = fields.text("TargetServerName").filter(|name| name != "localhost");
            alert.target = system(server, &fields.texts("IpAddress"), Vec::new());
            alert.account = account_of("SubjectUserName", "SubjectDomainName");
            alert.acting_as = account_of("TargetUserName", "TargetDomainName");
            alert.program = Program::from_parts(fields.text("ProcessName").as_deref(), None, None);
            alert.port = fields.port(&["IpPort"], &mut problems).filter(|port| *port != 0);
            let target_info = fields.text("TargetInfo").unwrap_or_default().to_ascii_lowercase();
            alert.protocol = if target_info.starts_with("termsrv/") {
                Protocol::Rdp
            } else if target_info.starts_with("cifs/") {
                Protocol::Smb
            } else if target_info.starts_with("http/") || target_info.starts_with("wsman/") {
                Protocol::Winrm
            } else {
                alert.port.and_then(Protocol::from_port).unwrap_or(Protocol::Unknown)
            };
            alert.connection = alert.protocol.default_connection();
            alert.mitre = techniques(technique_for_protocol(alert.protocol).map(str::to_string));
        }
        (5140, _) | (5145, _) => {
            alert.target = system(logging_host.clone(), &[], Vec::new());
            alert.source = system(None, &fields.texts("IpAddress"), Vec::new());
            alert.account = account_of("SubjectUserName", "SubjectDomainName");
            alert.connection = ConnectionKind::FileTransfer;
            alert.protocol = Protocol::Smb;
            // IpPort is the client's ephemeral port; share access itself is SMB on 445.
            alert.port = Some(445);
            alert.share = short(fields.text("ShareName"));
            alert.file = fields.text("RelativeTargetName").map(|file| cap(&file, MAX_LONG_FIELD));
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
        (4697, _) | (7045, _) => {
            // A service was installed: how PsExec-style tools run their payload on the target.
            alert.target = system(logging_host.clone(), &[], Vec::new());
            alert.account =
                account_of("SubjectUserName", "SubjectDomainName").or_else(|| account_of("AccountName", "Domain"));
            let image = fields.first_text(&["ServiceFileName", "ImagePath"]);
            alert.program = Program::from_parts(None, image.as_deref(), None).map(|mut program| {
                program.name = fields.text("ServiceName").map(|name| cap(&name, 256));
                program
            });
            alert.connection = ConnectionKind::RemoteExecution;
            alert.protocol = Protocol::Smb;
            alert.mitre = techniques(["T1021.002".to_string(), "T1569.002".to_string()]);
        }
        (other, _) => {
            problems.push(FieldProblem::new(
                pointer("EventID"),
                format!(
                    "event {other} is not one Vouch reads as lateral movement \
                     (4624, 4625, 4648, 5140, 5145, 4697, 7045, Sysmon 1 and 3)"
                ),
            ));
        }
    }
    finish(alert, problems)
}

fn event_name(event_id: u32, is_sysmon: bool) -> &'static str {
    match (event_id, is_sysmon) {
        (1, true) => "Sysmon: process created",
        (3, true) => "Sysmon: network connection",
        (4624, _) => "An account logged on",
        (4625, _) => "An account failed to log on",
        (4648, _) => "A logon with explicit credentials",
        (5140, _) => "A network share was accessed",
        (5145, _) => "A network share object was checked",
        (4697, _) | (7045, _) => "A service was installed",
        _ => "Windows event",
    }
}

fn technique_for_protocol(protocol: Protocol) -> Option<&'static str> {
    Some(match protocol {
        Protocol::Rdp => "T1021.001",
        Protocol::Smb => "T1021.002",
        Protocol::Dcom => "T1021.003",
        Protocol::Ssh => "T1021.004",
        Protocol::Vnc => "T1021.005",
        Protocol::Winrm => "T1021.006",
        _ => return None,
    })
}

fn looks_like_a_tool(file: &str) -> bool {
    let lowered = file.to_ascii_lowercase();
    [".exe", ".dll", ".ps1", ".bat", ".vbs", ".scr", ".sys"].iter().any(|extension| lowered.ends_with(extension))
}

/// Reads the destination from the command lines of common clients: `mstsc /v:host`,
/// `ssh user@host`, `putty -ssh host`.
fn destination_from_command_line(executable: &str, command_line: Option<&str>) -> (Protocol, Option<String>) {
    let words: Vec<&str> = command_line.unwrap_or("").split_whitespace().collect();
    match executable {
        "mstsc.exe" => {
            let host = words.iter().find_map(|word| {
                let lowered = word.to_ascii_lowercase();
                lowered.strip_prefix("/v:").map(|_| word[3..].split(':').next().unwrap_or("").to_string())
            });
            (Protocol::Rdp, host)
        }
        "ssh.exe" | "ssh" | "putty.exe" | "plink.exe" => {
            let host = words
                .iter()
                .skip(1)
                .rev()
                .find(|word| !word.starts_with('-'))
                .map(|word| word.rsplit('@').next().unwrap_or(word).trim_matches('"').to_string());
            (Protocol::Ssh, host)
        }
        _ => (Protocol::Unknown, None),
    }
}
