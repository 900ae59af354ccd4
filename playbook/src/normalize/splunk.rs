//! Splunk's webhook alert action: `{"sid", "search_name", "result": {...}, ...}`.
//!
//! The `result` row is whatever the search returned: often a raw Windows event (read as such),
//! otherwise CIM fields of the Network Traffic / Authentication data models.

use serde_json::Value;

use super::windows::read_event;
use super::windows_event::{alert_from_event, Envelope, EventRecord};
use super::{finish, logon_type, short, system, techniques, FieldProblem, Fields};
use crate::model::{Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Outcome, Program, Protocol, Severity};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let fields = Fields::new(payload);
    let Some(result) = fields.value("result").filter(|result| result.is_object()) else {
        return Err(vec![FieldProblem::new("/result", "a Splunk webhook carries the result row as an object")]);
    };
    let row = Fields::new(result);
    // The search id plus the row's own index time identifies this delivery.
    let source_alert_id = fields.text("sid").map(|sid| match row.text("_cd").or_else(|| row.text("_serial")) {
        Some(row_id) => format!("{sid}:{row_id}"),
        None => sid,
    });
    let rule = DetectionRule { id: short(fields.text("sid")), name: short(fields.text("search_name")) };

    let mut alert = if row.value("EventID").is_some() || row.value("EventCode").is_some() {
        let record = windows_record(&row).map_err(|problems| {
            problems
                .into_iter()
                .map(|problem| FieldProblem::new(format!("/result{}", problem.pointer), problem.message))
                .collect::<Vec<_>>()
        })?;
        alert_from_event(
            &record,
            Envelope {
                format: AlertFormat::Splunk,
                source_product: Some("Splunk".to_string()),
                source_alert_id: source_alert_id.clone(),
                raw: payload,
                received_at,
            },
        )
        .map_err(|problems| {
            problems
                .into_iter()
                .map(|problem| FieldProblem::new(format!("/result{}", problem.pointer), problem.message))
                .collect::<Vec<_>>()
        })?
    } else {
        cim(row, payload, received_at, source_alert_id.clone())?
    };
    alert.source_product = "Splunk".to_string();
    alert.source_alert_id = source_alert_id.map(|id| crate::model::cap(&id, 512));
    alert.rule = Some(rule);
    if let Some(severity) = row.text("severity").or_else(|| fields.text("severity")) {
        alert.severity = Severity::from_name(&severity);
    }
    alert
        .mitre
        .extend(techniques(row.texts("mitre_technique_id").into_iter().chain(row.texts("annotations.mitre_attack"))));
    Ok(alert)
}

fn cim(
    row: Fields<'_>,
    payload: &Value,
    received_at: Timestamp,
    source_alert_id: Option<String>,
) -> Result<Alert, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let source = system(
        row.first_text(&["src_host", "src_nt_host"]),
        &row.texts("src_ip").into_iter().chain(row.texts("src")).collect::<Vec<_>>(),
        Vec::new(),
    );
    let target = system(
        row.first_text(&["dest_host", "dest_nt_host"]),
        &row.texts("dest_ip").into_iter().chain(row.texts("dest")).collect::<Vec<_>>(),
        Vec::new(),
    );
    let account = row.first_text(&["src_user", "user"]).and_then(|name| Account::parse(&name));
    let acting_as = row
        .text("src_user")
        .and(row.text("user"))
        .and_then(|name| Account::parse(&name))
        .filter(|user| account.as_ref().is_some_and(|account| account.key() != user.key()));
    let port = row.port(&["dest_port"], &mut problems);
    let protocol = row
        .first_text(&["app", "protocol", "service"])
        .map(|name| Protocol::from_name(&name))
        .filter(|protocol| !matches!(protocol, Protocol::Unknown | Protocol::Other))
        .or_else(|| port.and_then(Protocol::from_port))
        .unwrap_or(Protocol::Unknown);
    let logon_type = logon_type(&row, &["Logon_Type", "logon_type"], &mut problems);
    let connection = if logon_type == Some(10) { ConnectionKind::RemoteAccess } else { protocol.default_connection() };
    let alert = Alert {
        source_alert_id,
        format: AlertFormat::Splunk,
        source_product: "Splunk".to_string(),
        source,
        target,
        account,
        acting_as,
        connection,
        protocol,
        outcome: row.text("action").map(|action| Outcome::from_name(&action)).unwrap_or_default(),
        port,
        logon_type,
        program: Program::from_parts(
            row.first_text(&["process_path", "process", "process_name"]).as_deref(),
            row.text("process_command_line").or_else(|| row.text("cmdline")).as_deref(),
            row.first_text(&["parent_process_path", "parent_process_name"]).as_deref(),
        ),
        share: short(row.text("share_name")),
        file: short(row.text("file_path")),
        mitre: Vec::new(),
        severity: Severity::Unknown,
        rule: None,
        observed_at: row.timestamp(&["_time"]),
        received_at,
        raw: payload.clone(),
        not_a_movement: None,
    };
    finish(alert, problems)
}

/// A Windows event in a Splunk row, whichever names the search returned: the event's XML names
/// (`TargetUserName`, from `XmlWinEventLog`), the classic `WinEventLog` names (`Account_Name`
/// listing the subject then the target, `Logon_Type`, `Source_Network_Address`, ...), or the
/// Common Information Model's (`user`, `src`, `dest`, `action`), in that order of preference.
fn windows_record(row: &Fields<'_>) -> Result<EventRecord, Vec<FieldProblem>> {
    let mut record = read_event(row.root())?;
    record.logging_host = record.logging_host.clone().or_else(|| row.first_text(&["host", "dest_nt_host", "dest"]));
    record.observed_at = record.observed_at.or_else(|| row.timestamp(&["_time"]));
    if record.stated_outcome == Outcome::Unknown {
        record.stated_outcome =
            row.first_text(&["Keywords", "Type", "action"]).map(|text| Outcome::from_name(&text)).unwrap_or_default();
    }
    // `Account_Name` (and `Account_Domain`) list the subject first and the target last; a
    // single value may be either, so it is offered as both and each event reads its own.
    for (list, subject, target) in [
        ("Account_Name", "SubjectUserName", "TargetUserName"),
        ("Account_Domain", "SubjectDomainName", "TargetDomainName"),
    ] {
        let values = list_values(row, list);
        if let (Some(first), Some(last)) = (values.first(), values.last()) {
            record.offer(subject, Some(first.clone()));
            record.offer(target, Some(last.clone()));
        }
    }
    let classic: [(&'static str, &[&str]); 22] = [
        ("LogonType", &["Logon_Type"]),
        ("IpAddress", &["Source_Network_Address", "Client_Address", "src_ip", "src"]),
        ("IpPort", &["Source_Port", "Client_Port"]),
        ("WorkstationName", &["Workstation_Name", "src_nt_host", "src_host"]),
        ("Workstation", &["Source_Workstation", "Workstation_Name", "src_nt_host"]),
        ("ProcessName", &["Process_Name", "process"]),
        ("LogonProcessName", &["Logon_Process"]),
        ("AuthenticationPackageName", &["Authentication_Package"]),
        ("TargetServerName", &["Target_Server_Name"]),
        ("TargetInfo", &["Additional_Information"]),
        ("TargetOutboundUserName", &["Network_Account_Name"]),
        ("TargetOutboundDomainName", &["Network_Account_Domain"]),
        ("ShareName", &["Share_Name"]),
        ("RelativeTargetName", &["Relative_Target_Name"]),
        ("ServiceName", &["Service_Name"]),
        ("ServiceFileName", &["Service_File_Name"]),
        ("Status", &["Result_Code", "Error_Code"]),
        ("TaskName", &["Task_Name"]),
        ("TargetUserName", &["user"]),
        ("SubjectUserName", &["src_user", "user"]),
        ("Image", &["process_path", "process"]),
        ("CommandLine", &["process_command_line", "cmdline"]),
    ];
    for (name, paths) in classic {
        record.offer(name, row.first_text(paths));
    }
    Ok(record)
}

/// A multi-valued Splunk field: a JSON array, or one value per line.
fn list_values(row: &Fields<'_>, name: &str) -> Vec<String> {
    let values = row.texts(name);
    let values = if values.len() == 1 {
        values[0].lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_string).collect()
    } else {
        values
    };
    values.into_iter().filter(|value| value != "-").collect()
}
