//! One Windows event, rendered in every shape Vouch accepts, the way each shipper or SIEM writes
//! it: flat (NXLog), Winlogbeat, the event's XML as JSON (and OpenWEC's JSON), an Elastic document
//! after Elastic's Windows pipeline (fields moved into ECS), a Kibana detection alert, an OCSF
//! record (class fields, the rest under `unmapped`), and a Splunk webhook row with the event's XML
//! names or with the classic `WinEventLog` names.
//!
//! The corpus test and the "same event, same movement" checks feed Vouch every shape of the same
//! event through these.

use serde_json::{json, Map, Value};

/// A shape an event can arrive in, with the format Vouch is asked to read it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    FlatNxlog,
    Winlogbeat,
    XmlAsJson,
    OpenWec,
    ElasticPipeline,
    KibanaAlert,
    Ocsf,
    SplunkXmlNames,
    SplunkClassicNames,
}

impl Shape {
    pub const ALL: [Shape; 9] = [
        Shape::FlatNxlog,
        Shape::Winlogbeat,
        Shape::XmlAsJson,
        Shape::OpenWec,
        Shape::ElasticPipeline,
        Shape::KibanaAlert,
        Shape::Ocsf,
        Shape::SplunkXmlNames,
        Shape::SplunkClassicNames,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Shape::FlatNxlog => "windows/flat",
            Shape::Winlogbeat => "windows/winlogbeat",
            Shape::XmlAsJson => "windows/xml-json",
            Shape::OpenWec => "windows/openwec",
            Shape::ElasticPipeline => "ecs/elastic-pipeline",
            Shape::KibanaAlert => "ecs/kibana-alert",
            Shape::Ocsf => "ocsf/windows-mapping",
            Shape::SplunkXmlNames => "splunk/xml-names",
            Shape::SplunkClassicNames => "splunk/classic-names",
        }
    }

    /// The `?format=` Vouch is given for this shape.
    pub fn format(self) -> &'static str {
        match self {
            Shape::FlatNxlog | Shape::Winlogbeat | Shape::XmlAsJson | Shape::OpenWec => "windows",
            Shape::ElasticPipeline | Shape::KibanaAlert => "ecs",
            Shape::Ocsf => "ocsf",
            Shape::SplunkXmlNames | Shape::SplunkClassicNames => "splunk",
        }
    }
}

/// Fields of a flat event that describe the record, not the event's own data.
const RECORD_FIELDS: [&str; 25] = [
    "EventID",
    "Hostname",
    "Channel",
    "SourceName",
    "RecordNumber",
    "EventTime",
    "EventReceivedTime",
    "@timestamp",
    "@version",
    "Category",
    "EventType",
    "Keywords",
    "Opcode",
    "OpcodeValue",
    "ProviderGuid",
    "Severity",
    "SeverityValue",
    "SourceModuleName",
    "SourceModuleType",
    "Task",
    "ThreadID",
    "Version",
    "host",
    "port",
    "tags",
];

/// The pieces of a flat event that every shape rearranges.
struct Parts {
    event_id: u64,
    host: String,
    channel: String,
    provider: String,
    record: String,
    time: String,
    failed: bool,
    data: Map<String, Value>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn parts(event: &Value) -> Parts {
    let object = event.as_object().expect("a flat event is an object");
    let get = |key: &str| object.get(key).map(text).unwrap_or_default();
    let event_id = object.get("EventID").map(text).and_then(|id| id.parse().ok()).expect("a flat event has an EventID");
    let failed = get("EventType").to_ascii_uppercase().contains("FAILURE") || event_id == 4625;
    let data = object
        .iter()
        .filter(|(key, _)| !RECORD_FIELDS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), Value::String(text(value))))
        .collect();
    Parts {
        event_id,
        host: get("Hostname"),
        channel: get("Channel"),
        provider: if get("SourceName").is_empty() {
            "Microsoft-Windows-Security-Auditing".to_string()
        } else {
            get("SourceName")
        },
        record: if get("RecordNumber").is_empty() { "1".to_string() } else { get("RecordNumber") },
        time: if get("@timestamp").is_empty() { "2026-11-30T10:00:00Z".to_string() } else { get("@timestamp") },
        failed,
        data,
    }
}

/// Renders a flat Windows event (NXLog's shape, as the OTRF datasets hold it) in `shape`.
pub fn render(event: &Value, shape: Shape) -> Value {
    let parts = parts(event);
    match shape {
        Shape::FlatNxlog => event.clone(),
        Shape::Winlogbeat => json!({
            "@timestamp": parts.time,
            "winlog": winlog(&parts, parts.data.clone()),
        }),
        Shape::XmlAsJson => json!({"Event": {
            "System": {
                "Provider": {"@Name": parts.provider},
                "EventID": {"#text": parts.event_id.to_string()},
                "Computer": parts.host,
                "Channel": parts.channel,
                "EventRecordID": parts.record,
                "Keywords": keyword_mask(parts.failed),
                "TimeCreated": {"@SystemTime": parts.time},
            },
            "EventData": {"Data": parts.data.iter()
                .map(|(name, value)| json!({"@Name": name, "#text": value}))
                .collect::<Vec<_>>()},
        }}),
        Shape::OpenWec => json!({
            "System": {
                "Provider": {"Name": parts.provider},
                "EventID": parts.event_id,
                "Computer": parts.host,
                "Channel": parts.channel,
                "EventRecordID": parts.record.parse::<u64>().unwrap_or(1),
                "Keywords": keyword_mask(parts.failed),
                "TimeCreated": {"SystemTime": parts.time},
            },
            "EventData": parts.data,
            "OpenWEC": {"IpAddress": "192.0.2.10", "Subscription": {"Name": "lateral-movement"}},
        }),
        Shape::ElasticPipeline => elastic(&parts),
        Shape::KibanaAlert => {
            let mut document = elastic(&parts);
            let object = document.as_object_mut().expect("object");
            object.insert("kibana.alert.uuid".to_string(), json!(format!("alert-{}-{}", parts.event_id, parts.record)));
            object.insert("kibana.alert.rule.name".to_string(), json!("Lateral movement from a workstation"));
            object.insert("kibana.alert.rule.rule_id".to_string(), json!("vouch-corpus-rule"));
            object.insert("kibana.alert.severity".to_string(), json!("high"));
            object.insert("kibana.alert.original_time".to_string(), json!(parts.time));
            document
        }
        Shape::Ocsf => ocsf(&parts),
        Shape::SplunkXmlNames => {
            let mut row = parts.data.clone();
            add_splunk_record_fields(&mut row, &parts);
            splunk(row)
        }
        Shape::SplunkClassicNames => splunk(classic_row(&parts)),
    }
}

/// The keyword mask the event's XML carries for an audit success or failure.
fn keyword_mask(failed: bool) -> &'static str {
    if failed {
        "0x8010000000000000"
    } else {
        "0x8020000000000000"
    }
}

fn winlog(parts: &Parts, event_data: Map<String, Value>) -> Value {
    json!({
        "event_id": parts.event_id.to_string(),
        "computer_name": parts.host,
        "channel": parts.channel,
        "provider_name": parts.provider,
        "record_id": parts.record,
        "keywords": [if parts.failed { "Audit Failure" } else { "Audit Success" }],
        "event_data": event_data,
    })
}

fn take(data: &mut Map<String, Value>, name: &str) -> Option<Value> {
    data.remove(name).filter(|value| value.as_str().is_some_and(|text| !text.is_empty() && text != "-"))
}

const LOGON_TYPE_NAMES: [(&str, &str); 11] = [
    ("2", "Interactive"),
    ("3", "Network"),
    ("4", "Batch"),
    ("5", "Service"),
    ("7", "Unlock"),
    ("8", "NetworkCleartext"),
    ("9", "NewCredentials"),
    ("10", "RemoteInteractive"),
    ("11", "CachedInteractive"),
    ("12", "CachedRemoteInteractive"),
    ("13", "CachedUnlock"),
];

/// The event after Elastic's Windows ingest pipeline: the account, client, logon type and
/// process moved out of `winlog.event_data` into ECS fields, the logon type written by name,
/// the forwarding collector as `agent`.
fn elastic(parts: &Parts) -> Value {
    let mut data = parts.data.clone();
    let mut document = Map::new();
    let mut put = |path: &str, value: Option<Value>| {
        if let Some(value) = value {
            document.insert(path.to_string(), value);
        }
    };
    let logon_like = matches!(parts.event_id, 4624 | 4625 | 4768 | 4769 | 4771 | 4776);
    if logon_like {
        put("user.name", take(&mut data, "TargetUserName"));
        put("user.domain", take(&mut data, "TargetDomainName"));
    } else if parts.event_id == 4648 {
        put("user.name", take(&mut data, "SubjectUserName"));
        put("user.domain", take(&mut data, "SubjectDomainName"));
        put("user.effective.name", take(&mut data, "TargetUserName"));
        put("user.effective.domain", take(&mut data, "TargetDomainName"));
    } else if let Some(user) = take(&mut data, "User") {
        let user = text(&user);
        match user.split_once('\\') {
            Some((domain, name)) => {
                put("user.domain", Some(json!(domain)));
                put("user.name", Some(json!(name)));
            }
            None => put("user.name", Some(json!(user))),
        }
    } else {
        put("user.name", take(&mut data, "SubjectUserName"));
        put("user.domain", take(&mut data, "SubjectDomainName"));
    }
    put("source.ip", take(&mut data, "IpAddress").or_else(|| take(&mut data, "SourceIp")));
    put(
        "source.port",
        take(&mut data, "IpPort").filter(|port| port != "0").map(|port| json!(text(&port).parse::<u64>().unwrap_or(0))),
    );
    put("source.domain", take(&mut data, "WorkstationName").or_else(|| take(&mut data, "SourceHostname")));
    put("destination.ip", take(&mut data, "DestinationIp"));
    put("destination.domain", take(&mut data, "DestinationHostname"));
    put(
        "destination.port",
        take(&mut data, "DestinationPort").map(|port| json!(text(&port).parse::<u64>().unwrap_or(0))),
    );
    if let Some(initiated) = take(&mut data, "Initiated") {
        put("network.direction", Some(json!(if text(&initiated) == "true" { "egress" } else { "ingress" })));
    }
    if let Some(logon_type) = take(&mut data, "LogonType") {
        let number = text(&logon_type);
        let name = LOGON_TYPE_NAMES.iter().find(|(id, _)| *id == number).map(|(_, name)| *name).unwrap_or("Unknown");
        put("winlog.logon.type", Some(json!(name)));
    }
    put("process.executable", take(&mut data, "ProcessName").or_else(|| take(&mut data, "Image")));
    put("process.command_line", take(&mut data, "CommandLine"));
    put("process.parent.executable", take(&mut data, "ParentImage"));
    put("@timestamp", Some(json!(parts.time)));
    put("event.code", Some(json!(parts.event_id.to_string())));
    put("event.outcome", Some(json!(if parts.failed { "failure" } else { "success" })));
    put("host.name", Some(json!(parts.host)));
    // The events were forwarded: the agent is the collector's, not the host's.
    put("agent.name", Some(json!("wec01")));
    put("agent.id", Some(json!("0d5e2f6a-collector")));
    put("winlog", Some(winlog(parts, data)));
    Value::Object(document)
}

fn ocsf(parts: &Parts) -> Value {
    let mut data = parts.data.clone();
    let authentication = matches!(parts.event_id, 4624 | 4625 | 4648 | 4672 | 4768 | 4769 | 4771 | 4776);
    let process = parts.event_id == 4688 || (parts.event_id == 1 && parts.provider.contains("Sysmon"));
    let class = if authentication {
        3002
    } else if process {
        1007
    } else {
        2004
    };
    let name_of = |value: Option<Value>| value.map(|value| text(&value));
    let mut activity = Map::new();
    let actor_user = json!({"name": name_of(take(&mut data, "SubjectUserName")), "domain": name_of(take(&mut data, "SubjectDomainName"))});
    let user = json!({"name": name_of(take(&mut data, "TargetUserName")), "domain": name_of(take(&mut data, "TargetDomainName"))});
    activity.insert(
        "actor".to_string(),
        json!({
            "user": actor_user,
            "process": {"file": {"path": name_of(take(&mut data, "ProcessName"))}},
        }),
    );
    activity.insert("user".to_string(), user);
    let port = take(&mut data, "IpPort").map(|port| json!(text(&port).parse::<u64>().unwrap_or(0)));
    activity.insert(
        "src_endpoint".to_string(),
        json!({
            "ip": name_of(take(&mut data, "IpAddress").or_else(|| take(&mut data, "SourceIp"))),
            "port": port,
            "name": name_of(take(&mut data, "WorkstationName")),
            "hostname": name_of(take(&mut data, "SourceHostname")),
        }),
    );
    // An authentication's destination is the machine that logged it (or, for explicit
    // credentials, the server named); a network or process event names its own.
    let destination_host = match parts.event_id {
        4648 => name_of(take(&mut data, "TargetServerName")),
        _ if authentication => Some(parts.host.clone()),
        _ => None,
    };
    activity.insert(
        "dst_endpoint".to_string(),
        json!({
            "hostname": name_of(take(&mut data, "DestinationHostname")).or(destination_host),
            "ip": name_of(take(&mut data, "DestinationIp")),
            "port": take(&mut data, "DestinationPort").map(|port| json!(text(&port).parse::<u64>().unwrap_or(0))),
        }),
    );
    if let Some(logon_type) = take(&mut data, "LogonType") {
        activity.insert("logon_type_id".to_string(), json!(text(&logon_type).parse::<u64>().unwrap_or(0)));
    }
    activity.insert("logon_process".to_string(), json!({"name": name_of(take(&mut data, "LogonProcessName"))}));
    if process {
        activity.insert(
            "process".to_string(),
            json!({
                "file": {"path": name_of(take(&mut data, "Image"))},
                "cmd_line": name_of(take(&mut data, "CommandLine")),
                "parent_process": {"file": {"path": name_of(take(&mut data, "ParentImage"))}},
                "user": {"name": name_of(take(&mut data, "User"))},
            }),
        );
    }
    data.insert("EventCode".to_string(), json!(parts.event_id.to_string()));
    data.insert("RecordNumber".to_string(), json!(parts.record));
    data.insert("SourceName".to_string(), json!(parts.provider));
    data.insert("Channel".to_string(), json!(parts.channel));
    let mut record = json!({
        "class_uid": class,
        "activity_id": 1,
        "time": parts.time,
        "status_id": if parts.failed { 2 } else { 1 },
        "severity_id": 1,
        "device": {"hostname": parts.host},
        "metadata": {"product": {"name": "Microsoft Windows", "vendor_name": "Microsoft"}, "version": "1.1.0",
                     "uid": format!("ocsf-{}-{}", parts.event_id, parts.record)},
        "unmapped": data,
    });
    let object = record.as_object_mut().expect("object");
    if class == 2004 {
        object.insert(
            "finding_info".to_string(),
            json!({"uid": format!("finding-{}", parts.record), "title": "Windows event"}),
        );
        object.insert("evidences".to_string(), json!([Value::Object(activity)]));
    } else {
        object.extend(activity);
    }
    record
}

/// The classic `WinEventLog` rendering: the account fields as one list (subject first, target
/// last), the rest under the event's display names.
fn classic_row(parts: &Parts) -> Map<String, Value> {
    let mut data = parts.data.clone();
    let mut row = Map::new();
    let subject = take(&mut data, "SubjectUserName").map(|value| text(&value)).unwrap_or_else(|| "-".to_string());
    let subject_domain =
        take(&mut data, "SubjectDomainName").map(|value| text(&value)).unwrap_or_else(|| "-".to_string());
    let target = take(&mut data, "TargetUserName").map(|value| text(&value));
    let target_domain = take(&mut data, "TargetDomainName").map(|value| text(&value));
    match (target, target_domain) {
        (Some(target), domain) => {
            row.insert("Account_Name".to_string(), json!([subject, target]));
            row.insert(
                "Account_Domain".to_string(),
                json!([subject_domain, domain.unwrap_or_else(|| "-".to_string())]),
            );
        }
        (None, _) => {
            row.insert("Account_Name".to_string(), json!(subject));
            row.insert("Account_Domain".to_string(), json!(subject_domain));
        }
    }
    let renames = [
        ("LogonType", "Logon_Type"),
        ("IpAddress", "Source_Network_Address"),
        ("IpPort", "Source_Port"),
        ("WorkstationName", "Workstation_Name"),
        ("ProcessName", "Process_Name"),
        ("LogonProcessName", "Logon_Process"),
        ("AuthenticationPackageName", "Authentication_Package"),
        ("TargetServerName", "Target_Server_Name"),
        ("TargetInfo", "Additional_Information"),
        ("TargetOutboundUserName", "Network_Account_Name"),
        ("TargetOutboundDomainName", "Network_Account_Domain"),
        ("ShareName", "Share_Name"),
        ("RelativeTargetName", "Relative_Target_Name"),
        ("ServiceName", "Service_Name"),
        ("ServiceFileName", "Service_File_Name"),
        ("TaskName", "Task_Name"),
        ("Workstation", "Source_Workstation"),
        ("Status", "Result_Code"),
    ];
    for (xml, classic) in renames {
        if let Some(value) = data.remove(xml) {
            row.insert(classic.to_string(), value);
        }
    }
    // Sysmon's and the rest keep the event's own names in the classic rendering too.
    row.extend(data);
    add_splunk_record_fields(&mut row, parts);
    row
}

/// The fields Splunk's Windows add-on gives every row, whichever rendering.
fn add_splunk_record_fields(row: &mut Map<String, Value>, parts: &Parts) {
    row.insert("EventCode".to_string(), json!(parts.event_id.to_string()));
    row.insert("ComputerName".to_string(), json!(parts.host));
    row.insert("LogName".to_string(), json!(parts.channel));
    row.insert("SourceName".to_string(), json!(parts.provider));
    row.insert("RecordNumber".to_string(), json!(parts.record));
    row.insert("Keywords".to_string(), json!(if parts.failed { "Audit Failure" } else { "Audit Success" }));
    row.insert("_time".to_string(), json!(parts.time));
}

fn splunk(row: Map<String, Value>) -> Value {
    json!({
        "sid": "scheduler__soc__search__RMD5lateral_at_1764496800_42",
        "search_name": "Lateral movement",
        "app": "search",
        "owner": "soc",
        "results_link": "http://127.0.0.1:8000/app/search/search?q=%7Cloadjob",
        "result": Value::Object(row),
    })
}
