//! Elastic Security detection alerts (ECS fields, nested or dotted).

use serde_json::Value;

use super::windows_event::{alert_from_event, Envelope, EventRecord};
use super::{finish, logon_type, short, system, techniques, windows, FieldProblem, Fields};
use crate::model::{
    short_hostname, Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Outcome, Program, Protocol, Severity,
    System,
};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let fields = Fields::new(payload);
    // A Windows event shipped by Winlogbeat or Elastic Agent (its `winlog.*` beside the ECS
    // fields) means what the event means; the ECS side adds the detection's own facts.
    if let Some(mut record) = windows::record_from_winlog(&fields)? {
        offer_renamed_fields(&mut record, &fields);
        // The product that says so, else Elastic Security for a detection alert; a plain
        // shipped event keeps the event's own product, noted as having come through Elastic.
        let detection = fields.value("kibana.alert.rule").is_some() || fields.text("kibana.alert.uuid").is_some();
        let stated =
            short(fields.text("observer.product")).or_else(|| detection.then(|| "Elastic Security".to_string()));
        let mut alert = alert_from_event(
            &record,
            Envelope {
                format: AlertFormat::Ecs,
                source_product: stated.clone(),
                source_alert_id: alert_id(&fields),
                raw: payload,
                received_at,
            },
        )?;
        alert.mitre.extend(techniques(technique_texts(&fields)));
        alert.severity = severity(&fields).unwrap_or(alert.severity);
        if let Some(rule) = rule(&fields) {
            alert.rule = Some(rule);
        }
        if stated.is_none() {
            alert.source_product = format!("{} via Elastic", alert.source_product);
        }
        return Ok(alert);
    }
    let mut problems = Vec::new();

    let source = system(
        fields.first_text(&["source.domain", "source.address", "source.hostname"]),
        &[fields.texts("source.ip"), fields.texts("source.address")].concat(),
        Vec::new(),
    );
    // When the alert has no explicit destination, the host that logged the event is the target
    // of an inbound logon and the source of an outbound connection; ECS says which by direction.
    let direction = fields.text("network.direction").unwrap_or_default().to_ascii_lowercase();
    // `agent.id` is the host's own EDR agent only when the agent runs there; an agent that
    // collects events forwarded from other machines is the collector, not the host.
    let host_name = fields.first_text(&["host.hostname", "host.name"]);
    let agent_on_host = match (fields.first_text(&["agent.hostname", "agent.name"]), &host_name) {
        (Some(agent), Some(host)) => short_hostname(&agent) == short_hostname(host),
        _ => true,
    };
    let host =
        system(host_name, &fields.texts("host.ip"), if agent_on_host { fields.texts("agent.id") } else { Vec::new() });
    let destination = system(
        fields.first_text(&["destination.domain", "destination.address"]),
        &[fields.texts("destination.ip"), fields.texts("destination.address")].concat(),
        Vec::new(),
    );
    // A destination given only by IP is the logging host when the host has that IP.
    let destination = match &destination {
        System { hostname: None, ips, .. } if !ips.is_empty() && ips.iter().any(|ip| host.ips.contains(ip)) => {
            System { hostname: host.hostname.clone(), ips: ips.clone(), edr_ids: host.edr_ids.clone() }
        }
        _ => destination,
    };
    let (source, target) = if !destination.is_unknown() {
        let source =
            if source.is_unknown() && matches!(direction.as_str(), "outbound" | "egress") { host } else { source };
        (source, destination)
    } else if matches!(direction.as_str(), "outbound" | "egress") {
        (host, destination)
    } else {
        (source, host)
    };

    let account = fields
        .first_text(&["user.name", "winlog.event_data.SubjectUserName"])
        .and_then(|name| Account::parse(&name))
        .map(|account| match fields.text("user.domain") {
            Some(domain) if account.domain.is_none() => Account::with_domain(&account.name, Some(&domain)),
            _ => account,
        });
    let acting_as = fields
        .first_text(&["user.effective.name", "user.target.name", "winlog.event_data.TargetOutboundUserName"])
        .and_then(|name| Account::parse(&name))
        .map(|account| match fields.text("user.effective.domain") {
            Some(domain) if account.domain.is_none() => Account::with_domain(&account.name, Some(&domain)),
            _ => account,
        });

    let port = fields.port(&["destination.port"], &mut problems);
    let protocol = fields
        .first_text(&["network.protocol", "network.application"])
        .map(|name| Protocol::from_name(&name))
        .filter(|protocol| *protocol != Protocol::Unknown)
        .or_else(|| port.and_then(Protocol::from_port))
        .unwrap_or(Protocol::Unknown);
    let logon_type = logon_type(&fields, &["winlog.event_data.LogonType", "winlog.logon.type_id"], &mut problems);
    let mut connection = protocol.default_connection();
    if logon_type == Some(10) {
        connection = ConnectionKind::RemoteAccess;
    }

    let program = Program::from_parts(
        fields.first_text(&["process.executable", "process.name"]).as_deref(),
        fields.text("process.command_line").as_deref(),
        fields.first_text(&["process.parent.executable", "process.parent.name"]).as_deref(),
    );

    let technique_texts = technique_texts(&fields);
    if let Some(action) = fields.text("event.action") {
        if action.contains("pass-the-hash") {
            connection = ConnectionKind::AlternateAuthentication;
        }
    }
    let mitre = techniques(technique_texts);

    let severity = severity(&fields).unwrap_or(Severity::Unknown);
    let rule = rule(&fields);
    let outcome = fields.text("event.outcome").map(|outcome| Outcome::from_name(&outcome)).unwrap_or_default();

    let alert = Alert {
        source_alert_id: alert_id(&fields),
        format: AlertFormat::Ecs,
        source_product: short(fields.text("observer.product")).unwrap_or_else(|| "Elastic Security".to_string()),
        source,
        target,
        account,
        acting_as,
        connection,
        protocol,
        outcome,
        port,
        logon_type,
        program,
        share: short(fields.text("file.share").or_else(|| fields.text("winlog.event_data.ShareName"))),
        file: short(fields.text("file.path")),
        mitre,
        severity,
        rule,
        observed_at: fields.timestamp(&["kibana.alert.original_time", "@timestamp"]),
        received_at,
        raw: payload.clone(),
        not_a_movement: None,
    };
    finish(alert, problems)
}

fn alert_id(fields: &Fields<'_>) -> Option<String> {
    short(fields.first_text(&["kibana.alert.uuid", "event.id", "_id"]))
}

/// Elastic puts ATT&CK ids in the rule's threat list and, for raw ECS events, in `threat.*`.
fn technique_texts(fields: &Fields<'_>) -> Vec<String> {
    let mut technique_texts = Vec::new();
    for threat_path in ["kibana.alert.rule.threat", "threat"] {
        let threats = match fields.value(threat_path) {
            Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
            Some(item @ Value::Object(_)) => vec![item],
            _ => Vec::new(),
        };
        for threat in threats.into_iter().take(16) {
            let threat_fields = Fields::new(threat);
            let techniques_value = threat_fields.value("technique");
            let technique_list = match techniques_value {
                Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
                Some(item @ Value::Object(_)) => vec![item],
                _ => Vec::new(),
            };
            for technique in technique_list.into_iter().take(16) {
                let technique_fields = Fields::new(technique);
                technique_texts.extend(technique_fields.texts("id"));
                if let Some(Value::Array(subtechniques)) = technique_fields.value("subtechnique") {
                    for subtechnique in subtechniques.iter().take(16) {
                        technique_texts.extend(Fields::new(subtechnique).texts("id"));
                    }
                }
            }
        }
    }
    technique_texts.extend(fields.texts("threat.technique.id"));
    technique_texts.extend(fields.texts("threat.technique.subtechnique.id"));
    technique_texts
}

fn severity(fields: &Fields<'_>) -> Option<Severity> {
    fields
        .first_text(&["kibana.alert.severity", "event.severity_name"])
        .map(|name| Severity::from_name(&name))
        .filter(|severity| *severity != Severity::Unknown)
        .or_else(|| fields.number("kibana.alert.risk_score").map(Severity::from_score))
}

fn rule(fields: &Fields<'_>) -> Option<DetectionRule> {
    let rule = DetectionRule {
        id: short(fields.first_text(&["kibana.alert.rule.rule_id", "kibana.alert.rule.uuid", "rule.id"])),
        name: short(fields.first_text(&["kibana.alert.rule.name", "rule.name"])),
    };
    (rule.id.is_some() || rule.name.is_some()).then_some(rule)
}

/// Elastic's Windows pipelines move some event fields out of `winlog.event_data` into ECS
/// fields; each is read back under the event's own name (the event data wins when both exist).
fn offer_renamed_fields(record: &mut EventRecord, fields: &Fields<'_>) {
    let renamed: [(&'static str, &[&str]); 22] = [
        ("TargetUserName", &["user.effective.name", "user.target.name", "user.name"]),
        ("TargetDomainName", &["user.effective.domain", "user.target.domain", "user.domain"]),
        ("SubjectUserName", &["user.name"]),
        ("SubjectDomainName", &["user.domain"]),
        ("IpAddress", &["source.ip"]),
        ("IpPort", &["source.port"]),
        ("WorkstationName", &["source.domain"]),
        ("LogonType", &["winlog.logon.type"]),
        ("ProcessName", &["process.executable"]),
        ("TargetServerName", &["destination.domain"]),
        ("ShareName", &["file.share"]),
        ("RelativeTargetName", &["file.path"]),
        ("ServiceName", &["service.name"]),
        ("Image", &["process.executable"]),
        ("CommandLine", &["process.command_line"]),
        ("ParentImage", &["process.parent.executable"]),
        ("User", &["user.name"]),
        ("SourceIp", &["source.ip"]),
        ("SourceHostname", &["source.domain"]),
        ("DestinationIp", &["destination.ip"]),
        ("DestinationHostname", &["destination.domain"]),
        ("DestinationPort", &["destination.port"]),
    ];
    for (name, paths) in renamed {
        record.offer(name, fields.first_text(paths));
    }
    if let Some(direction) = fields.text("network.direction") {
        let outbound = matches!(direction.to_ascii_lowercase().as_str(), "outbound" | "egress");
        record.offer("Initiated", Some(outbound.to_string()));
    }
}
