//! Vouch's own JSON format, for senders that can shape their payload. Its JSON Schema is
//! `playbook/schemas/native-alert.schema.json`; every field is checked and each mistake is
//! reported with its JSON pointer.

use serde_json::{Map, Value};

use super::{finish, system, FieldProblem};
use crate::model::{
    cap, Account, Alert, AlertFormat, ConnectionKind, DetectionRule, Outcome, Program, Protocol, Severity, System,
    TechniqueId, MAX_LIST_ITEMS, MAX_LONG_FIELD, MAX_SHORT_FIELD,
};
use crate::time::Timestamp;

const KNOWN_FIELDS: [&str; 19] = [
    "vouch_alert",
    "id",
    "product",
    "source",
    "target",
    "account",
    "acting_as",
    "connection",
    "protocol",
    "port",
    "outcome",
    "logon_type",
    "program",
    "share",
    "file",
    "mitre",
    "severity",
    "rule",
    "observed_at",
];

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let Some(object) = payload.as_object() else {
        return Err(vec![FieldProblem::new("", "the alert must be a JSON object")]);
    };
    for key in object.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            problems.push(FieldProblem::new(format!("/{}", escape(key)), "unknown field"));
        }
    }
    match object.get("vouch_alert") {
        Some(Value::Number(number)) if number.as_u64() == Some(1) => {}
        _ => problems.push(FieldProblem::new("/vouch_alert", "must be 1, the version of this format")),
    }
    let mut reader = Reader { object, problems: &mut problems };
    let source_alert_id = reader.string("id", 512, false);
    let product = reader.string("product", MAX_SHORT_FIELD, false);
    let source = reader.system("source");
    let target = reader.system("target");
    let account = reader.account("account");
    let acting_as = reader.account("acting_as");
    let protocol = reader.string("protocol", 32, false).map(|name| match name.as_str() {
        known if Protocol::from_name(known) != Protocol::Other || known == "other" => Protocol::from_name(known),
        _ => {
            reader.problem(
                "/protocol",
                "one of rdp, ssh, smb, scp, ftp, winrm, dcom, wmi, vnc, http_api, other, unknown",
            );
            Protocol::Unknown
        }
    });
    let protocol = protocol.unwrap_or(Protocol::Unknown);
    let connection = match reader.string("connection", 64, false) {
        Some(name) => match serde_json::from_value::<ConnectionKind>(Value::String(name)) {
            Ok(kind) => kind,
            Err(_) => {
                reader.problem(
                    "/connection",
                    "one of remote_access, file_transfer, api, alternate_authentication, token_manipulation, remote_execution, unknown",
                );
                ConnectionKind::Unknown
            }
        },
        None => protocol.default_connection(),
    };
    let port = reader.integer("port", 1, 65535).map(|port| port as u16);
    let logon_type = reader.integer("logon_type", 0, 13).map(|kind| kind as u8);
    let outcome = match reader.string("outcome", 16, false).as_deref() {
        None | Some("unknown") => Outcome::Unknown,
        Some("success") => Outcome::Success,
        Some("failure") => Outcome::Failure,
        Some(_) => {
            reader.problem("/outcome", "one of success, failure, unknown");
            Outcome::Unknown
        }
    };
    let program = reader.program("program");
    let share = reader.string("share", MAX_SHORT_FIELD, false);
    let file = reader.string("file", MAX_LONG_FIELD, false);
    let mitre = reader.techniques("mitre");
    let severity = match reader.string("severity", 32, false) {
        Some(name) => match Severity::from_name(&name) {
            Severity::Unknown if name != "unknown" => {
                reader.problem("/severity", "one of informational, low, medium, high, critical, unknown");
                Severity::Unknown
            }
            severity => severity,
        },
        None => Severity::Unknown,
    };
    let rule = reader.rule("rule");
    let observed_at = match reader.string("observed_at", 64, false) {
        Some(text) => {
            let parsed = Timestamp::parse(&text);
            if parsed.is_none() {
                reader.problem("/observed_at", "an RFC 3339 time such as 2026-11-28T09:30:00Z");
            }
            parsed
        }
        None => None,
    };
    if source.is_none() && target.is_none() {
        problems.push(FieldProblem::new("/target", "required: the system that was reached (or at least /source)"));
    }
    let alert = Alert {
        source_alert_id,
        format: AlertFormat::Native,
        source_product: product.unwrap_or_else(|| "unknown".to_string()),
        source: source.unwrap_or_default(),
        target: target.unwrap_or_default(),
        account,
        acting_as,
        connection,
        protocol,
        outcome,
        port,
        logon_type,
        program,
        share,
        file,
        mitre,
        severity,
        rule,
        observed_at,
        received_at,
        raw: payload.clone(),
        not_a_movement: None,
    };
    finish(alert, problems)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

struct Reader<'a> {
    object: &'a Map<String, Value>,
    problems: &'a mut Vec<FieldProblem>,
}

impl Reader<'_> {
    fn problem(&mut self, pointer: &str, message: &str) {
        self.problems.push(FieldProblem::new(pointer, message));
    }

    fn string_in(
        &mut self,
        object: &Map<String, Value>,
        prefix: &str,
        key: &str,
        max: usize,
        allow_empty: bool,
    ) -> Option<String> {
        let pointer = format!("{prefix}/{key}");
        match object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.chars().count() > max => {
                self.problem(&pointer, &format!("longer than {max} characters"));
                None
            }
            Some(Value::String(text)) if text.trim().is_empty() && !allow_empty => {
                self.problem(&pointer, "must not be empty");
                None
            }
            Some(Value::String(text)) => Some(cap(text, max)),
            Some(_) => {
                self.problem(&pointer, "must be a string");
                None
            }
        }
    }

    fn string(&mut self, key: &str, max: usize, allow_empty: bool) -> Option<String> {
        let object = self.object;
        self.string_in(object, "", key, max, allow_empty)
    }

    fn integer(&mut self, key: &str, minimum: i64, maximum: i64) -> Option<i64> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => match number.as_i64() {
                Some(value) if (minimum..=maximum).contains(&value) => Some(value),
                _ => {
                    self.problem(&format!("/{key}"), &format!("must be a whole number from {minimum} to {maximum}"));
                    None
                }
            },
            Some(_) => {
                self.problem(&format!("/{key}"), "must be a number");
                None
            }
        }
    }

    fn object_at(&mut self, key: &str) -> Option<&'_ Map<String, Value>> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                self.problems.push(FieldProblem::new(format!("/{key}"), "must be an object"));
                None
            }
        }
    }

    fn unknown_keys(&mut self, object: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                self.problem(&format!("{prefix}/{}", escape(key)), "unknown field");
            }
        }
    }

    fn string_list(&mut self, object: &Map<String, Value>, pointer: &str, max: usize) -> Vec<String> {
        match object.get(pointer.rsplit('/').next().unwrap_or_default()) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() > MAX_LIST_ITEMS => {
                self.problem(pointer, &format!("at most {MAX_LIST_ITEMS} items"));
                Vec::new()
            }
            Some(Value::Array(items)) => {
                let mut texts = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::String(text) if text.chars().count() <= max => texts.push(text.clone()),
                        _ => self.problem(
                            &format!("{pointer}/{index}"),
                            &format!("must be a string of at most {max} characters"),
                        ),
                    }
                }
                texts
            }
            Some(_) => {
                self.problem(pointer, "must be an array of strings");
                Vec::new()
            }
        }
    }

    fn system(&mut self, key: &str) -> Option<System> {
        let object = self.object_at(key)?.clone();
        let prefix = format!("/{key}");
        self.unknown_keys(&object, &prefix, &["hostname", "ips", "edr_ids"]);
        let hostname = self.string_in(&object, &prefix, "hostname", MAX_SHORT_FIELD, false);
        let ip_texts = self.string_list(&object, &format!("{prefix}/ips"), 64);
        for (index, text) in ip_texts.iter().enumerate() {
            if text.parse::<std::net::IpAddr>().is_err() {
                self.problem(&format!("{prefix}/ips/{index}"), "not an IP address");
            }
        }
        let edr_ids = self.string_list(&object, &format!("{prefix}/edr_ids"), MAX_SHORT_FIELD);
        let system = system(hostname, &ip_texts, edr_ids);
        if system.is_unknown() {
            self.problem(&prefix, "give at least a hostname, an IP or an EDR id");
            return None;
        }
        Some(system)
    }

    fn account(&mut self, key: &str) -> Option<Account> {
        match self.object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.chars().count() <= MAX_SHORT_FIELD && !text.trim().is_empty() => {
                Account::parse(text)
            }
            Some(Value::Object(object)) => {
                let object = object.clone();
                let prefix = format!("/{key}");
                self.unknown_keys(&object, &prefix, &["name", "domain"]);
                let name = self.string_in(&object, &prefix, "name", MAX_SHORT_FIELD, false);
                let domain = self.string_in(&object, &prefix, "domain", MAX_SHORT_FIELD, false);
                match name {
                    Some(name) => Some(Account::with_domain(&name, domain.as_deref())),
                    None => {
                        if !object.contains_key("name") {
                            self.problem(&format!("{prefix}/name"), "required");
                        }
                        None
                    }
                }
            }
            Some(_) => {
                self.problem(&format!("/{key}"), "an account name (`DOMAIN\\name`) or {\"name\", \"domain\"}");
                None
            }
        }
    }

    fn program(&mut self, key: &str) -> Option<Program> {
        let object = self.object_at(key)?.clone();
        let prefix = format!("/{key}");
        self.unknown_keys(&object, &prefix, &["name", "path", "command_line", "parent"]);
        let name = self.string_in(&object, &prefix, "name", MAX_SHORT_FIELD, false);
        let path = self.string_in(&object, &prefix, "path", MAX_LONG_FIELD, false);
        let command_line = self.string_in(&object, &prefix, "command_line", MAX_LONG_FIELD, false);
        let parent = self.string_in(&object, &prefix, "parent", MAX_LONG_FIELD, false);
        let mut program =
            Program::from_parts(path.as_deref().or(name.as_deref()), command_line.as_deref(), parent.as_deref())?;
        if name.is_some() {
            program.name = name;
        }
        Some(program)
    }

    fn techniques(&mut self, key: &str) -> Vec<TechniqueId> {
        let object = self.object;
        let texts = self.string_list(object, &format!("/{key}"), 16);
        let mut ids = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            match TechniqueId::parse(text) {
                Some(id) => ids.push(id),
                None => self.problem(&format!("/{key}/{index}"), "a MITRE ATT&CK technique id such as T1021.001"),
            }
        }
        ids
    }

    fn rule(&mut self, key: &str) -> Option<DetectionRule> {
        let object = self.object_at(key)?.clone();
        let prefix = format!("/{key}");
        self.unknown_keys(&object, &prefix, &["id", "name"]);
        let id = self.string_in(&object, &prefix, "id", MAX_SHORT_FIELD, false);
        let name = self.string_in(&object, &prefix, "name", MAX_SHORT_FIELD, false);
        (id.is_some() || name.is_some()).then_some(DetectionRule { id, name })
    }
}
