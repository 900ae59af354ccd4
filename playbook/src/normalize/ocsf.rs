//! OCSF Detection Finding (class 2004) and Authentication (class 3002) events.

use serde_json::Value;

use super::{finish, logon_type, pointer, short, system, techniques, FieldProblem, Fields};
use crate::model::{Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Program, Protocol, Severity, System};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let fields = Fields::new(payload);
    let mut problems = Vec::new();
    let class = fields.number("class_uid").unwrap_or(-1.0);
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
    let (account, acting_as) = match (user_at("actor.user"), user_at("user")) {
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
    let mut connection =
        if logon_type == Some(10) { ConnectionKind::RemoteAccess } else { protocol.default_connection() };

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
    let mitre = techniques(technique_texts);
    if mitre.iter().any(|id| id.as_str().starts_with("T1550")) {
        connection = ConnectionKind::AlternateAuthentication;
    } else if mitre.iter().any(|id| id.as_str().starts_with("T1134")) {
        connection = ConnectionKind::TokenManipulation;
    }

    let severity = match fields.number("severity_id").map(|id| id as i64) {
        Some(1) => Severity::Informational,
        Some(2) => Severity::Low,
        Some(3) => Severity::Medium,
        Some(4) => Severity::High,
        Some(5) | Some(6) => Severity::Critical,
        _ => fields.text("severity").map(|name| Severity::from_name(&name)).unwrap_or(Severity::Unknown),
    };
    let rule = DetectionRule {
        id: short(fields.first_text(&["finding_info.analytic.uid", "finding_info.uid"])),
        name: short(fields.first_text(&["finding_info.analytic.name", "finding_info.title", "message"])),
    };

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
        port,
        logon_type,
        program,
        share: None,
        file: None,
        mitre,
        severity,
        rule: (rule.id.is_some() || rule.name.is_some()).then_some(rule),
        observed_at: fields.timestamp(&["time", "finding_info.created_time"]),
        received_at,
        raw: payload.clone(),
    };
    finish(alert, problems)
}
