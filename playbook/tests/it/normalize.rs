//! Normalization, driven by data: real OTRF lateral-movement events and examples written from
//! each format's public schema. Each case reads `input → one-line summary of the alert`.

use serde_json::{json, Value};
use vouch_playbook::facts::Facts;
use vouch_playbook::model::Alert;
use vouch_playbook::movement::{judge_movement, NotAMovementKind};
use vouch_playbook::normalize::{normalize, FieldProblem};
use vouch_playbook::{AlertFormat, Timestamp};

const RECEIVED: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);

/// The fields triage depends on, in one comparable line.
fn summary(alert: &Alert) -> String {
    let system = |system: &vouch_playbook::model::System| {
        let mut parts: Vec<String> = system.hostname.iter().cloned().collect();
        parts.extend(system.ips.iter().map(ToString::to_string));
        parts.extend(system.edr_ids.iter().map(|id| format!("edr:{id}")));
        if parts.is_empty() {
            "?".to_string()
        } else {
            parts.join("/")
        }
    };
    let account = |account: &Option<vouch_playbook::model::Account>| {
        account.as_ref().map_or("-".to_string(), ToString::to_string)
    };
    format!(
        "{} -> {} | account {} | as {} | logon {} | {} {} | program {} | mitre {}",
        system(&alert.source),
        system(&alert.target),
        account(&alert.account),
        account(&alert.acting_as),
        alert.logon_type.map_or("-".to_string(), |kind| kind.to_string()),
        alert.connection.label(),
        alert.protocol.label(),
        alert.program.as_ref().and_then(|program| program.name.clone()).unwrap_or_else(|| "-".to_string()),
        alert.mitre.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    )
}

fn check(payload: &Value, format: Option<AlertFormat>, expected: &str) -> Alert {
    let alert = normalize(payload, format, RECEIVED)
        .unwrap_or_else(|problems| panic!("normalization failed: {problems:?}\n{payload}"));
    assert_eq!(summary(&alert), expected, "\npayload: {payload}");
    assert_eq!(&alert.raw, payload, "the raw payload is kept verbatim");
    alert
}

fn check_rejected(payload: &Value, format: Option<AlertFormat>, expected: &[(&str, &str)]) {
    let problems: Vec<FieldProblem> = normalize(payload, format, RECEIVED).expect_err("the payload must be rejected");
    for (pointer, fragment) in expected {
        assert!(
            problems.iter().any(|problem| problem.pointer == *pointer && problem.message.contains(fragment)),
            "expected a problem at {pointer} mentioning {fragment:?}, got {problems:?}"
        );
    }
}

fn otrf_event(file: &str, line: usize) -> Value {
    let path = format!("{}/../tests/data/otrf/{file}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    let line_text = text.lines().nth(line - 1).unwrap_or_else(|| panic!("{file} has no line {line}"));
    serde_json::from_str(line_text).expect("each line is a JSON event")
}

#[test]
fn otrf_events_of_every_type_normalize_to_the_movement_they_record() {
    let cases: &[(&str, usize, &str)] = &[
        // Security 4624 type 3: pgustavo logs on to WORKSTATION6 over the network from .39.5.
        ("covenant_copy_smb_CreateRequest", 2,
         "172.18.39.5 -> WORKSTATION6.theshire.local | account THESHIRE.LOCAL\\pgustavo | as - | logon 3 | unknown unknown | program - | mitre T1021"),
        // 5140: the admin share IPC$ reached from .39.5.
        ("covenant_copy_smb_CreateRequest", 3,
         "172.18.39.5 -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | file transfer SMB | program - | mitre T1021.002"),
        // 5145: the implant copied onto C$ (T1570, lateral tool transfer).
        ("covenant_copy_smb_CreateRequest", 6,
         "172.18.39.5 -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | file transfer SMB | program - | mitre T1021.002,T1570"),
        // Sysmon 3 initiated on WORKSTATION5 by the System process to 445 on WORKSTATION6.
        ("covenant_copy_smb_CreateRequest", 8,
         "WORKSTATION5.theshire.local/172.18.39.5 -> 172.18.39.6 | account NT AUTHORITY\\SYSTEM | as - | logon - | file transfer SMB | program System | mitre T1021.002"),
        // Sysmon 1: WmiPrvSE on WORKSTATION6 starts the Grunt implant as pgustavo (WMI landing).
        ("covenant_sharpwmi_create_dcerpc_wmi", 18,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution WMI | program GruntHTTP2.exe | mitre T1047"),
        // Sysmon 3 from the attacker's workstation: the implant on the desktop calls WORKSTATION6.
        ("covenant_sharpwmi_create_dcerpc_wmi", 32,
         "WORKSTATION5.theshire.local/172.18.39.5 -> 172.18.39.6 | account THESHIRE\\pgustavo | as - | logon - | unknown unknown | program GruntHTTP.exe | mitre "),
        // 4624 type 3 of a computer account on the domain controller.
        ("covenant_sharpwmi_create_dcerpc_wmi", 7,
         "172.18.39.6 -> MORDORDC.theshire.local | account THESHIRE.LOCAL\\WORKSTATION6$ | as - | logon 3 | unknown unknown | program - | mitre T1021"),
        // 4697 and 7045: the PsExec-style service "Updater" installed on WORKSTATION6.
        ("empire_psexec_dcerpc_tcp_svcctl", 20,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution SMB | program Updater | mitre T1021.002,T1569.002"),
        ("empire_psexec_dcerpc_tcp_svcctl", 21,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution SMB | program Updater | mitre T1021.002,T1569.002"),
        // Sysmon 3 accepted on WORKSTATION6: RPC endpoint mapper from .39.5.
        ("empire_psexec_dcerpc_tcp_svcctl", 22,
         "172.18.39.5 -> WORKSTATION6.theshire.local/172.18.39.6 | account NT AUTHORITY\\NETWORK SERVICE | as - | logon - | remote execution DCOM | program svchost.exe | mitre T1021.003"),
        // PowerShell remoting: the session host starts on the target, then runs PowerShell.
        ("empire_psremoting_stager", 7,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution WinRM | program wsmprovhost.exe | mitre T1021.006"),
        ("empire_psremoting_stager", 13,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution WinRM | program powershell.exe | mitre T1021.006"),
        ("empire_psremoting_stager", 10,
         "WORKSTATION5.theshire.local/172.18.39.5 -> 172.18.39.6 | account THESHIRE\\pgustavo | as - | logon - | remote execution WinRM | program powershell.exe | mitre T1021.006"),
        // SMBExec: services.exe runs cmd.exe on the target; the svcctl pipe opened over IPC$.
        ("empire_smbexec_dcerpc_smb_svcctl", 8,
         "? -> WORKSTATION6.theshire.local | account NT AUTHORITY\\SYSTEM | as - | logon - | remote execution SMB | program cmd.exe | mitre T1569.002"),
        ("empire_smbexec_dcerpc_smb_svcctl", 6,
         "172.18.39.5 -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | file transfer SMB | program - | mitre T1021.002"),
        ("empire_smbexec_dcerpc_smb_svcctl", 11,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution SMB | program PGUJLOAKFQFVOMHGFQPX | mitre T1021.002,T1569.002"),
        // WMI ExecMethod: PowerShell started by WmiPrvSE as pgustavo.
        ("empire_wmi_dcerpc_wmi_IWbemServices_ExecMethod", 10,
         "? -> WORKSTATION6.theshire.local | account THESHIRE\\pgustavo | as - | logon - | remote execution WMI | program powershell.exe | mitre T1047"),
        ("empire_wmi_dcerpc_wmi_IWbemServices_ExecMethod", 26,
         "WORKSTATION5.theshire.local/172.18.39.5 -> 172.18.39.6 | account THESHIRE\\pgustavo | as - | logon - | unknown unknown | program powershell.exe | mitre "),
        // 5145 on SYSVOL by the DC's own computer account: a routine share read, no tool copied.
        ("empire_wmi_dcerpc_wmi_IWbemServices_ExecMethod", 8,
         "fe80::9582:39e0:356b:ef4e -> MORDORDC.theshire.local | account THESHIRE\\MORDORDC$ | as - | logon - | file transfer SMB | program - | mitre "),
    ];
    for (file, line, expected) in cases {
        let event = otrf_event(file, *line);
        check(&event, None, expected);
        // Splunk forwards the same event as its result row; the movement must read the same.
        let splunk =
            json!({"sid": "scheduler__admin__search__RMD5", "search_name": "Lateral movement", "result": event});
        let alert = check(&splunk, None, expected);
        assert_eq!(alert.format, AlertFormat::Splunk);
        assert_eq!(alert.rule.as_ref().and_then(|rule| rule.name.as_deref()), Some("Lateral movement"));
    }
}

#[test]
fn every_otrf_event_either_normalizes_or_is_refused_with_a_reason() {
    let directory = format!("{}/../tests/data/otrf", env!("CARGO_MANIFEST_DIR"));
    let mut normalized = 0;
    for entry in std::fs::read_dir(&directory).expect("the OTRF data is in the repository") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|extension| extension.to_str()) != Some("jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).expect("readable").lines() {
            let event: Value = serde_json::from_str(line).expect("JSON");
            let event_id = event["EventID"].as_u64().expect("every event has an EventID");
            let alert = normalize(&event, None, RECEIVED)
                .unwrap_or_else(|problems| panic!("event {event_id} is read, not refused: {problems:?}"));
            assert!(alert.source_alert_id.is_some(), "the record number identifies the event");
            if event_id == 4672 {
                // Special privileges alone are no movement: read, and answered as such.
                let verdict = judge_movement(&alert, &Facts::default()).expect_err("4672 is no movement");
                assert_eq!(verdict.kind, NotAMovementKind::EventRecordsNone);
                assert!(verdict.reason.contains("4672"), "{}", verdict.reason);
            } else {
                assert!(!alert.target.is_unknown() || !alert.source.is_unknown());
                normalized += 1;
            }
        }
    }
    assert!(normalized > 200, "most OTRF events describe movement; normalized {normalized}");
}

#[test]
fn windows_events_with_a_second_account_or_rdp_normalize() {
    // Field layout as in the OTRF files, for the event types the lab capture lacks.
    let explicit_credentials = json!({
        "EventID": 4648, "Channel": "Security", "Hostname": "WS-17.corp.example", "RecordNumber": 81,
        "SubjectUserName": "alice", "SubjectDomainName": "CORP", "TargetUserName": "adm-alice",
        "TargetDomainName": "CORP", "TargetServerName": "SRV-DB-01.corp.example", "TargetInfo": "TERMSRV/SRV-DB-01",
        "ProcessName": "C:\\Windows\\System32\\mstsc.exe", "IpAddress": "10.1.2.3", "IpPort": "3389"
    });
    check(&explicit_credentials, None,
        "WS-17.corp.example -> SRV-DB-01.corp.example/10.1.2.3 | account CORP\\alice | as CORP\\adm-alice | logon - | remote access RDP | program mstsc.exe | mitre T1021.001");

    let remote_interactive = json!({
        "EventID": "4624", "Channel": "Security", "Hostname": "SRV-DB-01", "LogonType": "10",
        "IpAddress": "10.0.0.17", "WorkstationName": "WS-17", "TargetUserName": "alice", "TargetDomainName": "CORP",
        "TargetOutboundUserName": "-", "ProcessName": "C:\\Windows\\System32\\svchost.exe"
    });
    check(&remote_interactive, None,
        "WS-17/10.0.0.17 -> SRV-DB-01 | account CORP\\alice | as - | logon 10 | remote access RDP | program svchost.exe | mitre T1021.001");

    let pass_the_hash = json!({
        "EventID": 4624, "Channel": "Security", "Hostname": "WS-22", "LogonType": 9, "LogonProcessName": "seclogo",
        "TargetUserName": "bob", "TargetDomainName": "CORP", "TargetOutboundUserName": "administrator",
        "TargetOutboundDomainName": "CORP", "IpAddress": "::1", "ProcessName": "C:\\Windows\\System32\\svchost.exe"
    });
    check(&pass_the_hash, None,
        "WS-22 -> ? | account CORP\\bob | as CORP\\administrator | logon 9 | alternate authentication material unknown | program svchost.exe | mitre T1550.002");

    let rdp_client = json!({
        "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Hostname": "WS-17", "User": "CORP\\alice",
        "Image": "C:\\Windows\\System32\\mstsc.exe", "CommandLine": "mstsc.exe /v:SRV-DB-01:3389",
        "ParentImage": "C:\\Windows\\explorer.exe"
    });
    check(
        &rdp_client,
        None,
        "WS-17 -> SRV-DB-01 | account CORP\\alice | as - | logon - | remote access RDP | program mstsc.exe | mitre T1021.001",
    );
}

#[test]
fn ecs_alerts_normalize() {
    let nested = json!({
        "@timestamp": "2026-11-28T09:30:00.000Z",
        "kibana": {"alert": {"uuid": "c0ffee-1", "severity": "high", "risk_score": 73,
            "rule": {"name": "RDP from unusual source", "rule_id": "rdp-unusual",
                     "threat": [{"framework": "MITRE ATT&CK", "technique": [{"id": "T1021", "subtechnique": [{"id": "T1021.001"}]}]}]}}},
        "source": {"ip": "10.0.0.17", "domain": "WS-17"},
        "destination": {"ip": "10.0.5.1", "port": 3389},
        "host": {"name": "SRV-DB-01", "ip": ["10.0.5.1"]},
        "user": {"name": "alice", "domain": "CORP", "effective": {"name": "adm-alice"}},
        "process": {"executable": "C:\\Windows\\System32\\mstsc.exe", "command_line": "mstsc /v:SRV-DB-01",
                    "parent": {"executable": "C:\\Windows\\explorer.exe"}},
        "network": {"protocol": "rdp"},
        "winlog": {"event_data": {"LogonType": "10"}}
    });
    let alert = check(&nested, None,
        "WS-17/10.0.0.17 -> SRV-DB-01/10.0.5.1 | account CORP\\alice | as adm-alice | logon 10 | remote access RDP | program mstsc.exe | mitre T1021,T1021.001");
    assert_eq!(alert.source_alert_id.as_deref(), Some("c0ffee-1"));
    assert_eq!(alert.severity, vouch_playbook::model::Severity::High);
    assert_eq!(alert.port, Some(3389));

    // Kibana's webhook connector often sends flattened keys; an inbound logon without a
    // destination lands on the host that logged it.
    let flattened = json!({
        "kibana.alert.uuid": "c0ffee-2", "kibana.alert.rule.name": "SMB admin share", "kibana.alert.risk_score": 21,
        "source.ip": "10.0.0.40", "host.name": "FS-01", "user.name": "CORP\\svc-backup",
        "network.protocol": "smb", "winlog.event_data.ShareName": "\\\\*\\ADMIN$",
        "threat.technique.id": ["T1021.002"]
    });
    let alert = check(&flattened, Some(AlertFormat::Ecs),
        "10.0.0.40 -> FS-01 | account CORP\\svc-backup | as - | logon - | file transfer SMB | program - | mitre T1021.002");
    // The share's UNC form (`\\*\ADMIN$`) is read as the share's name.
    assert_eq!(alert.share.as_deref(), Some("ADMIN$"));
    assert_eq!(alert.severity, vouch_playbook::model::Severity::Low);
}

#[test]
fn ocsf_events_normalize() {
    let finding = json!({
        "class_uid": 2004, "category_uid": 2, "activity_id": 1, "severity_id": 4, "time": 1764322200000u64,
        "metadata": {"product": {"name": "Acme EDR", "vendor_name": "Acme"}, "version": "1.1.0"},
        "finding_info": {"uid": "f-77", "title": "Pass-the-hash suspected",
            "analytic": {"uid": "pth-1", "name": "NTLM logon with stolen hash"},
            "attacks": [{"technique": {"uid": "T1550", "name": "Use Alternate Authentication Material"},
                         "sub_technique": {"uid": "T1550.002", "name": "Pass the Hash"}}]},
        "evidences": [{
            "src_endpoint": {"hostname": "WS-22", "ip": "10.0.0.22", "uid": "agent-ws22"},
            "dst_endpoint": {"hostname": "SRV-APP-03", "ip": "10.0.5.3", "port": 445},
            "actor": {"user": {"name": "bob", "domain": "CORP"},
                      "process": {"name": "rundll32.exe", "file": {"path": "C:\\Windows\\System32\\rundll32.exe"}}},
            "user": {"name": "administrator", "domain": "CORP"}
        }]
    });
    let alert = check(&finding, None,
        "WS-22/10.0.0.22/edr:agent-ws22 -> SRV-APP-03/10.0.5.3 | account CORP\\bob | as CORP\\administrator | logon - | alternate authentication material SMB | program rundll32.exe | mitre T1550,T1550.002");
    assert_eq!(alert.source_alert_id.as_deref(), Some("f-77"));
    assert_eq!(alert.observed_at, Some(Timestamp::from_unix_millis(1_764_322_200_000)));

    let authentication = json!({
        "class_uid": 3002, "activity_id": 1, "severity_id": 1, "time": 1764322200,
        "metadata": {"uid": "auth-9", "product": {"name": "Windows"}},
        "src_endpoint": {"hostname": "WS-17", "ip": "10.0.0.17"},
        "dst_endpoint": {"hostname": "SRV-DB-01", "ip": "10.0.5.1", "port": 3389},
        "user": {"name": "alice", "domain": "CORP"},
        "logon_type_id": 10, "auth_protocol": "Kerberos"
    });
    check(&authentication, None,
        "WS-17/10.0.0.17 -> SRV-DB-01/10.0.5.1 | account CORP\\alice | as - | logon 10 | remote access RDP | program - | mitre ");
}

#[test]
fn splunk_cim_rows_normalize() {
    let row = json!({
        "sid": "rt_1764322200.42", "search_name": "SSH to production", "app": "search", "owner": "admin",
        "results_link": "http://127.0.0.1:8000/app/search",
        "result": {"src": "10.0.0.31", "src_host": "dev-laptop-7", "dest": "db-prod-2", "dest_port": "22",
                   "user": "root", "src_user": "carol", "app": "ssh", "_cd": "4:1234", "severity": "medium",
                   "process": "/usr/bin/ssh"}
    });
    let alert = check(&row, None,
        "dev-laptop-7/10.0.0.31 -> db-prod-2 | account carol | as root | logon - | remote access SSH | program ssh | mitre ");
    assert_eq!(alert.source_alert_id.as_deref(), Some("rt_1764322200.42:4:1234"));
}

#[test]
fn native_alerts_normalize() {
    let native = json!({
        "vouch_alert": 1, "id": "edr-123", "product": "Acme EDR",
        "source": {"hostname": "WS-17", "ips": ["10.0.0.17"]},
        "target": {"hostname": "SRV-DB-01", "edr_ids": ["aid-99"]},
        "account": "CORP\\alice", "acting_as": {"name": "adm-alice", "domain": "CORP"},
        "connection": "remote_access", "protocol": "rdp", "port": 3389, "logon_type": 10,
        "program": {"path": "C:\\Windows\\System32\\mstsc.exe", "command_line": "mstsc /v:SRV-DB-01"},
        "mitre": ["T1021.001"], "severity": "high", "rule": {"id": "r1", "name": "RDP to database"},
        "observed_at": "2026-11-28T09:30:00Z"
    });
    check(&native, None,
        "WS-17/10.0.0.17 -> SRV-DB-01/edr:aid-99 | account CORP\\alice | as CORP\\adm-alice | logon 10 | remote access RDP | program mstsc.exe | mitre T1021.001");
}

#[test]
fn malformed_payloads_are_refused_field_by_field() {
    check_rejected(
        &json!({"vouch_alert": 1, "target": {"hostname": 7, "ips": ["not-an-ip"]}, "port": 70000,
                "mitre": ["T99"], "severity": "apocalyptic", "colour": "red", "logon_type": -1}),
        None,
        &[
            ("/target/hostname", "string"),
            ("/target/ips/0", "IP"),
            ("/port", "65535"),
            ("/mitre/0", "MITRE"),
            ("/severity", "one of"),
            ("/colour", "unknown field"),
            ("/logon_type", "0 to 13"),
        ],
    );
    check_rejected(
        &json!({"vouch_alert": 2, "source": {}}),
        None,
        &[("/vouch_alert", "must be 1"), ("/source", "at least")],
    );
    check_rejected(
        &json!({"EventID": 4624, "LogonType": "99", "Hostname": "A"}),
        None,
        &[("/LogonType", "logon type")],
    );
    check_rejected(&json!({"EventID": 4104, "Hostname": "A"}), None, &[("/EventID", "4104")]);
    check_rejected(&json!({"class_uid": 1001}), None, &[("/class_uid", "2004")]);
    check_rejected(&json!({"class_uid": 2004, "finding_info": {}}), None, &[("/evidences", "evidence")]);
    check_rejected(&json!({"sid": "1", "result": {"EventID": 7}}), None, &[("/result/EventID", "not one Vouch reads")]);
    check_rejected(&json!({"hello": "world"}), None, &[("", "could not tell the format")]);
    check_rejected(&json!([1, 2, 3]), None, &[("", "JSON object")]);
    check_rejected(
        &json!({"source": {"port": 0}, "destination": {"port": "x"}}),
        Some(AlertFormat::Ecs),
        &[("", "neither a source nor a target")],
    );
    let mut deep = json!("bottom");
    for _ in 0..200 {
        deep = json!({"source": deep});
    }
    check_rejected(&deep, None, &[("", "nested deeper")]);
}

#[test]
fn attacker_controlled_strings_are_capped_and_cleaned() {
    let huge = "A".repeat(100_000);
    let payload = json!({
        "host": {"name": "SRV\u{0007}-01\n@everyone"}, "source": {"ip": "10.0.0.1"},
        "process": {"command_line": huge}
    });
    let alert = normalize(&payload, None, RECEIVED).expect("valid");
    assert_eq!(alert.target.hostname.as_deref(), Some("SRV -01 @everyone"), "control characters become spaces");
    let command_line = alert.program.and_then(|program| program.command_line).expect("kept");
    assert_eq!(command_line.chars().count(), vouch_playbook::model::MAX_LONG_FIELD);
    assert!(command_line.ends_with('…'));
}

/// Documents laid out as Elastic's Windows pipelines write them (the `system.security` pipeline's
/// expected outputs: the account, client and logon type moved into ECS, the logon type by name,
/// the rest left under `winlog.event_data`). Values are ours; the layout is Elastic's.
#[test]
fn elastic_pipeline_documents_mean_what_the_windows_event_means() {
    let logon = json!({
        "@timestamp": "2026-11-30T09:12:00.000Z",
        "agent": {"name": "wec01", "id": "8a1c-collector", "type": "winlogbeat"},
        "event": {"action": "logged-in", "category": ["authentication"], "code": "4624", "kind": "event",
                  "outcome": "success", "provider": "Microsoft-Windows-Security-Auditing"},
        "host": {"name": "SRV-DB-01.corp.example"},
        "process": {"executable": "C:\\Windows\\System32\\svchost.exe", "name": "svchost.exe", "pid": 1044},
        "source": {"domain": "WS-17", "ip": "10.0.0.17", "port": 50112},
        "user": {"domain": "CORP", "id": "S-1-5-21-1-2-3-1104", "name": "alice"},
        "winlog": {
            "channel": "Security", "computer_name": "SRV-DB-01.corp.example", "event_id": "4624",
            "event_data": {"AuthenticationPackageName": "Negotiate", "ElevatedToken": "Yes",
                           "LogonProcessName": "User32 ", "SubjectUserName": "SRV-DB-01$",
                           "SubjectDomainName": "CORP", "TargetLogonId": "0x8b3e2"},
            "keywords": ["Audit Success"], "logon": {"id": "0x8b3e2", "type": "RemoteInteractive"},
            "provider_name": "Microsoft-Windows-Security-Auditing", "record_id": 5874, "task": "Logon"
        }
    });
    let alert = check(&logon, None,
        "WS-17/10.0.0.17 -> SRV-DB-01.corp.example | account CORP\\alice | as - | logon 10 | remote access RDP | program svchost.exe | mitre T1021.001");
    assert_eq!((alert.format, alert.port, alert.outcome.id()), (AlertFormat::Ecs, Some(3389), "success"));
    assert!(alert.target.edr_ids.is_empty(), "a forwarding collector's agent id is not the target's EDR id");

    let share = json!({
        "@timestamp": "2026-11-30T09:15:00.000Z",
        "event": {"action": "network-share-object-access-checked", "code": "5145", "outcome": "success"},
        "host": {"name": "FS-01"},
        "source": {"ip": "10.0.0.2", "port": 50443},
        "user": {"domain": "CORP", "name": "bob"},
        "winlog": {"channel": "Security", "computer_name": "FS-01", "event_id": "5145", "record_id": 7711,
                   "event_data": {"ShareName": "\\\\*\\transfer$", "ShareLocalPath": "\\??\\D:\\transfer",
                                  "RelativeTargetName": "q4\\plan.docx", "AccessMask": "0x2",
                                  "SubjectUserName": "bob", "SubjectDomainName": "CORP"}}
    });
    let alert = check(
        &share,
        None,
        "10.0.0.2 -> FS-01 | account CORP\\bob | as - | logon - | file transfer SMB | program - | mitre ",
    );
    assert_eq!((alert.port, alert.share.as_deref()), (Some(445), Some("transfer$")));
}

#[test]
fn placeholders_loopback_names_and_unc_paths_are_read_for_what_they_mean() {
    // 4648 with IpPort "0": Windows' "not known", not a bad port.
    let explicit = json!({"EventID": 4648, "Hostname": "WS-30", "SubjectUserName": "carol",
        "TargetUserName": "carol", "TargetServerName": "SRV-DB-01", "TargetInfo": "cifs/SRV-DB-01",
        "IpAddress": "-", "IpPort": "0"});
    check(
        &explicit,
        None,
        "WS-30 -> SRV-DB-01 | account carol | as carol | logon - | file transfer SMB | program - | mitre T1021.002",
    );

    // ECS `source.domain` holding an IP is an IP; from the loopback address it is no movement.
    let loopback = json!({"source": {"domain": "127.0.0.1"}, "host": {"name": "SRV-DB-01"},
        "user": {"name": "bob"}, "event": {"outcome": "success"}, "destination": {"port": 445}});
    let alert = normalize(&loopback, Some(AlertFormat::Ecs), RECEIVED).expect("read");
    assert_eq!(alert.source.hostname, None);
    assert_eq!(judge_movement(&alert, &Facts::default()).expect_err("loopback").kind, NotAMovementKind::Loopback);

    // A file named by a UNC path names its server and share.
    let unc = json!({"source": {"ip": "10.0.0.2"}, "destination": {"ip": "10.0.6.20", "port": 445},
        "file": {"path": "\\\\FS-01\\projects$\\plan.docx"}, "user": {"name": "bob"}});
    let alert = normalize(&unc, Some(AlertFormat::Ecs), RECEIVED).expect("read");
    assert_eq!(
        (alert.target.hostname.as_deref(), alert.share.as_deref(), alert.file.as_deref()),
        (Some("FS-01"), Some("projects$"), Some("plan.docx"))
    );

    // OCSF names Windows' requesting machine account as the actor: the account that moved is `user`.
    let requested_by_machine = json!({"class_uid": 3002, "activity_id": 1, "status_id": 1, "logon_type_id": 3,
        "actor": {"user": {"name": "WIN-DC-725$", "domain": "CORP"}}, "user": {"name": "alice", "domain": "CORP"},
        "src_endpoint": {"ip": "10.0.0.17", "port": 0}, "dst_endpoint": {"hostname": "SRV-DB-01"}});
    check(
        &requested_by_machine,
        None,
        "10.0.0.17 -> SRV-DB-01 | account CORP\\alice | as - | logon 3 | unknown unknown | program - | mitre ",
    );

    // A cloud sign-in (OCSF Authentication with a source and no target) reaches no system.
    let sign_in = json!({"class_uid": 3002, "activity_id": 1, "status_id": 1, "time": 1764495120000i64,
        "metadata": {"product": {"name": "CloudTrail", "vendor_name": "AWS"}, "uid": "ct-1"},
        "user": {"name": "alice"}, "src_endpoint": {"ip": "198.51.100.7"}});
    let alert = normalize(&sign_in, None, RECEIVED).expect("read");
    assert_eq!(judge_movement(&alert, &Facts::default()).expect_err("no target").kind, NotAMovementKind::NoTarget);
}

/// The OCSF project's own mapping of a 4625 (class 3002, the subject as `actor.user` with
/// Windows' placeholders, the target account as `user`, `EventCode` under `unmapped`).
#[test]
fn an_ocsf_failed_logon_is_a_failure_and_its_placeholders_are_not_errors() {
    let failed = json!({
        "activity_id": 1, "class_uid": 3002, "category_uid": 3, "status_id": 2, "status": "0xC000006D",
        "time": 1602175307000i64, "logon_type_id": 3, "auth_protocol": "NTLM",
        "actor": {"process": {"file": {"name": "-", "path": "-"}, "pid": 0},
                  "user": {"domain": "-", "name": "-", "uid": "NULL SID"}},
        "device": {"hostname": "SRV-DB-01"}, "dst_endpoint": {"hostname": "SRV-DB-01"},
        "logon_process": {"name": "NtLmSsp "},
        "metadata": {"product": {"name": "Microsoft Windows", "vendor_name": "Microsoft"}, "uid": "a738d6e6"},
        "src_endpoint": {"ip": "10.0.0.42", "name": "WS-42", "port": 0},
        "unmapped": {"EventCode": "4625", "RecordNumber": "223742"},
        "user": {"domain": "SRV-DB-01", "name": "Administrator", "uid": "NULL SID"}
    });
    let alert = check(&failed, None,
        "WS-42/10.0.0.42 -> SRV-DB-01 | account SRV-DB-01\\Administrator | as - | logon 3 | unknown unknown | program - | mitre T1021");
    assert_eq!((alert.outcome.id(), alert.port), ("failure", None));
    // Failed and successful attempts of one movement are separate cases.
    let mut succeeded = alert.clone();
    succeeded.outcome = vouch_playbook::model::Outcome::Success;
    assert_ne!(alert.grouping_key(), succeeded.grouping_key());
}

/// Splunk rows in the classic WinEventLog rendering: the account list, display-style names, `_time`.
#[test]
fn splunk_classic_rows_are_read_like_the_event() {
    let row = json!({"sid": "rt_lateral_1", "search_name": "RDP to servers", "result": {
        "EventCode": "4624", "ComputerName": "SRV-DB-01.corp.example", "LogName": "Security",
        "Account_Name": ["SRV-DB-01$", "alice"], "Account_Domain": ["CORP", "CORP"], "Logon_Type": "10",
        "Source_Network_Address": "10.0.0.17", "Source_Port": "50112", "Workstation_Name": "WS-17",
        "Process_Name": "C:\\Windows\\System32\\svchost.exe", "Keywords": "Audit Success",
        "_time": "2026-11-30T09:12:00.000+00:00", "_cd": "12:3456"}});
    let alert = check(&row, None,
        "WS-17/10.0.0.17 -> SRV-DB-01.corp.example | account CORP\\alice | as - | logon 10 | remote access RDP | program svchost.exe | mitre T1021.001");
    assert!(alert.observed_at.is_some(), "_time is the event's time");
    assert_eq!(alert.source_alert_id.as_deref(), Some("rt_lateral_1:12:3456"));
}
