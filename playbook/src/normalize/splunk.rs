//! Splunk's webhook alert action: `{"sid", "search_name", "result": {...}, ...}`.
//!
//! The `result` row is whatever the search returned: often a raw Windows event (read as such),
//! otherwise CIM fields of the Network Traffic / Authentication data models.

use serde_json::Value;

use super::{finish, logon_type, short, system, techniques, windows, FieldProblem, Fields};
use crate::model::{Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Program, Protocol, Severity};
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
        windows::normalize_fields(row, payload, received_at, AlertFormat::Splunk, source_alert_id.clone()).map_err(
            |problems| {
                problems
                    .into_iter()
                    .map(|problem| FieldProblem::new(format!("/result{}", problem.pointer), problem.message))
                    .collect::<Vec<_>>()
            },
        )?
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
    };
    finish(alert, problems)
}
