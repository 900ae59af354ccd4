//! OCSF Detection Finding (class 2004) and Authentication (class 3002) events.

use serde_json::Value;

use super::windows::scalar_text;
use super::windows_event::{alert_from_event, Envelope, EventRecord, EVENT_FIELDS};
use super::{finish, logon_type, pointer, short, system, techniques, FieldProblem, Fields};
use crate::model::{
    Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Outcome, Program, Protocol, Severity, System,
};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let fields = Fields::new(payload);
    let mut problems = Vec::new();
    let class = fields.number("class_uid").unwrap_or(-1.0);
    // A Windows event mapped to OCSF keeps its id (`metadata.event_code`, or `EventCode` among
    // the fields OCSF has no place for) and means what the event means.
    if let Some(record) = windows_record(&fields, class as i64)? {
        let mut alert = alert_from_event(
            &record,
            Envelope {
                format: AlertFormat::Ocsf,
                source_product: short(fields.first_text(&["metadata.product.name", "metadata.product.vendor_name"])),
                source_alert_id: short(fields.first_text(&["finding_info.uid", "metadata.uid"])),
                raw: payload,
                received_at,
            },
        )?;
        alert.mitre.extend(techniques(attack_technique_texts(&fields)));
        alert.severity = severity(&fields);
        if let Some(rule) = rule(&fields).filter(|_| class as i64 == 2004) {
            alert.rule = Some(rule);
        }
        return Ok(alert);
    }
    // A finding carries the activity in its first evidence; an authentication event is the activity.
    let activity = match class as i64 {
        2004 => match fields.value("evidences") {
            Some(Value::Array(evidences)) if !evidences.is_empty() => Fields::new(&evidences[0]),
            _ => {
                problems.push(FieldProblem::new(
                    "/evidences",
                    "a detection finding needs at least one evidence naming the endpoints",
                ));
                return Err(problems);
            }
        },
        3002 => fields,
        _ => {
            problems.push(FieldProblem::new(
                pointer("class_uid"),
                "Vouch reads OCSF class 2004 (Detection Finding) and 3002 (Authentication)",
            ));
            return Err(problems);
        }
    };

    let endpoint = |prefix: &str| -> System {
        system(
            activity.first_text(&[
                &format!("{prefix}.hostname"),
                &format!("{prefix}.name"),
                &format!("{prefix}.domain"),
            ]),
            &activity.texts(&format!("{prefix}.ip")),
            activity.texts(&format!("{prefix}.uid")),
        )
    };
    let user_at = |prefix: &str| -> Option<Account> {
        let name = activity.text(&format!("{prefix}.name"))?;
        let account = Account::parse(&name)?;
        Some(match activity.text(&format!("{prefix}.domain")) {
            Some(domain) if account.domain.is_none() => Account::with_domain(&account.name, Some(&domain)),
            _ => account,
        })
    };
    // OCSF names the requester as `actor.user` and the account authenticated as `user`. When the
    // requester is the machine itself (a computer account, SYSTEM: how Windows logons are
    // requested) the account that moved is `user`; a person requesting other credentials is
    // the initiator acting as `user`.
    let (account, acting_as) = match (user_at("actor.user"), user_at("user")) {
        (Some(actor), Some(user)) if actor.looks_like_system_account() => (Some(user), None),
        (Some(actor), Some(user)) if actor.key() != user.key() => (Some(actor), Some(user)),
        (Some(actor), _) => (Some(actor), None),
        (None, user) => (user, None),
    };

    let port = activity.port(&["dst_endpoint.port"], &mut problems);
    let protocol = activity
        .first_text(&["connection_info.protocol_name", "service.name", "auth_protocol"])
        .map(|name| Protocol::from_name(&name))
        .filter(|protocol| !matches!(protocol, Protocol::Unknown | Protocol::Other))
        .or_else(|| port.and_then(Protocol::from_port))
        .unwrap_or(Protocol::Unknown);
    let logon_type = logon_type(&activity, &["logon_type_id"], &mut problems);
    let connection = if logon_type == Some(10) { ConnectionKind::RemoteAccess } else { protocol.default_connection() };

    let program = Program::from_parts(
        activity
            .first_text(&["actor.process.file.path", "actor.process.name", "process.file.path", "process.name"])
            .as_deref(),
        activity.first_text(&["actor.process.cmd_line", "process.cmd_line"]).as_deref(),
        activity
            .first_text(&[
                "actor.process.parent_process.file.path",
                "actor.process.parent_process.name",
                "process.parent_process.name",
            ])
            .as_deref(),
    );

    let technique_texts = attack_technique_texts(&fields);
    let mitre = techniques(technique_texts);

    let severity = severity(&fields);
    let rule = rule(&fields);
    let outcome = outcome(&fields);

    let alert = Alert {
        source_alert_id: short(fields.first_text(&["finding_info.uid", "metadata.uid"])),
        format: AlertFormat::Ocsf,
        source_product: short(fields.first_text(&["metadata.product.name", "metadata.product.vendor_name"]))
            .unwrap_or_else(|| "OCSF".to_string()),
        source: endpoint("src_endpoint"),
        target: endpoint("dst_endpoint"),
        account,
        acting_as,
        connection,
        protocol,
        outcome,
        port,
        logon_type,
        program,
        share: None,
        file: None,
        mitre,
        severity,
        rule,
        observed_at: fields.timestamp(&["time", "finding_info.created_time"]),
        received_at,
        raw: payload.clone(),
        not_a_movement: None,
    };
    finish(alert, problems)
}

fn attack_technique_texts(fields: &Fields<'_>) -> Vec<String> {
    let mut technique_texts = Vec::new();
    for attacks_path in ["finding_info.attacks", "attacks"] {
        if let Some(Value::Array(attacks)) = fields.value(attacks_path) {
            for attack in attacks.iter().take(16) {
                let attack = Fields::new(attack);
                technique_texts.extend(attack.texts("technique.uid"));
                technique_texts.extend(attack.texts("sub_technique.uid"));
            }
        }
    }
    technique_texts
}

fn severity(fields: &Fields<'_>) -> Severity {
    match fields.number("severity_id").map(|id| id as i64) {
        Some(1) => Severity::Informational,
        Some(2) => Severity::Low,
        Some(3) => Severity::Medium,
        Some(4) => Severity::High,
        Some(5) | Some(6) => Severity::Critical,
        _ => fields.text("severity").map(|name| Severity::from_name(&name)).unwrap_or(Severity::Unknown),
    }
}

fn rule(fields: &Fields<'_>) -> Option<DetectionRule> {
    let rule = DetectionRule {
        id: short(fields.first_text(&["finding_info.analytic.uid", "finding_info.uid"])),
        name: short(fields.first_text(&["finding_info.analytic.name", "finding_info.title", "message"])),
    };
    (rule.id.is_some() || rule.name.is_some()).then_some(rule)
}

/// OCSF's `status_id`: 1 success, 2 failure.
fn outcome(fields: &Fields<'_>) -> Outcome {
    match fields.number("status_id").map(|id| id as i64) {
        Some(1) => Outcome::Success,
        Some(2) => Outcome::Failure,
        _ => fields.text("status").map(|status| Outcome::from_name(&status)).unwrap_or_default(),
    }
}

/// The Windows event inside an OCSF record, with the event's fields read from the OCSF classes
/// that hold them: the subject is the actor, the logged-on or targeted user is `user`, the
/// client is `src_endpoint`, the process `actor.process` (Authentication) or `process` (Process
/// Activity), and whatever OCSF has no place for is under `unmapped` by its own name.
fn windows_record(fields: &Fields<'_>, class: i64) -> Result<Option<EventRecord>, Vec<FieldProblem>> {
    let code = fields.first_text(&["metadata.event_code", "unmapped.EventCode", "unmapped.EventID"]);
    let Some(code) = code else { return Ok(None) };
    let Ok(event_id) = code.trim().parse::<u32>() else {
        return Err(vec![FieldProblem::new("/metadata/event_code", "an event id is a whole number from 0 to 65535")]);
    };
    // A finding names the activity in its first evidence.
    let evidence = match fields.value("evidences") {
        Some(Value::Array(evidences)) if class == 2004 && !evidences.is_empty() => Fields::new(&evidences[0]),
        _ => *fields,
    };
    let mut record = EventRecord::new(event_id);
    record.logging_host = fields.first_text(&["device.hostname", "device.name", "dst_endpoint.hostname"]);
    record.channel = fields.first_text(&["unmapped.Channel", "unmapped.LogName", "metadata.log_name"]);
    record.provider =
        fields.first_text(&["unmapped.SourceName", "metadata.log_provider", "metadata.product.feature.name"]);
    record.record_id = fields.first_text(&["unmapped.RecordNumber", "unmapped.EventRecordID"]);
    record.observed_at = fields.timestamp(&["time"]);
    record.stated_outcome = outcome(fields);
    let from_classes: [(&'static str, &[&str]); 24] = [
        ("SubjectUserName", &["actor.user.name"]),
        ("SubjectDomainName", &["actor.user.domain"]),
        ("TargetUserName", &["user.name"]),
        ("TargetDomainName", &["user.domain"]),
        ("IpAddress", &["src_endpoint.ip"]),
        ("IpPort", &["src_endpoint.port"]),
        ("WorkstationName", &["src_endpoint.name", "src_endpoint.hostname"]),
        ("Workstation", &["src_endpoint.name", "src_endpoint.hostname"]),
        ("LogonType", &["logon_type_id", "logon_type"]),
        ("LogonProcessName", &["logon_process.name"]),
        ("AuthenticationPackageName", &["auth_protocol"]),
        ("ProcessName", &["actor.process.file.path", "actor.process.name"]),
        ("TargetServerName", &["dst_endpoint.hostname", "dst_endpoint.name"]),
        ("ServiceName", &["service.name"]),
        ("Status", &["status_code"]),
        ("Image", &["process.file.path", "process.name"]),
        ("CommandLine", &["process.cmd_line"]),
        ("ParentImage", &["process.parent_process.file.path", "actor.process.file.path"]),
        ("User", &["process.user.name", "actor.user.name"]),
        ("DestinationIp", &["dst_endpoint.ip"]),
        ("DestinationPort", &["dst_endpoint.port"]),
        ("DestinationHostname", &["dst_endpoint.hostname"]),
        ("SourceIp", &["src_endpoint.ip"]),
        ("SourceHostname", &["src_endpoint.hostname", "src_endpoint.name"]),
    ];
    for (name, paths) in from_classes {
        record.offer(name, evidence.first_text(paths).or_else(|| fields.first_text(paths)));
    }
    for name in EVENT_FIELDS {
        record.offer(name, fields.value(&format!("unmapped.{name}")).and_then(scalar_text));
    }
    Ok(Some(record))
}
