//! Turns what SIEMs and EDRs send into one [`Alert`].
//!
//! Each format is a pure function from a parsed JSON value to an alert or to the list of fields
//! that are wrong (as JSON pointers). Nothing here trusts the input: strings are capped, numbers
//! are range-checked, and nothing panics on odd shapes.

mod ecs;
mod native;
mod ocsf;
mod splunk;
mod windows;
mod windows_event;

pub use windows_event::{logon_type_meaning, LogonTypeMeaning, LOGON_TYPES};

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::model::{
    cap, Alert, AlertFormat, ConnectionKind, System, TechniqueId, MAX_LIST_ITEMS, MAX_LONG_FIELD, MAX_SHORT_FIELD,
};
use crate::time::Timestamp;

/// Deepest JSON nesting accepted; deeper payloads are refused before they are walked.
pub const MAX_JSON_DEPTH: usize = 64;

/// One thing wrong with a payload: where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub pointer: String,
    pub message: String,
}

impl FieldProblem {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> FieldProblem {
        FieldProblem { pointer: pointer.into(), message: message.into() }
    }
}

/// Picks the format from the payload's shape.
pub fn detect_format(payload: &Value) -> Option<AlertFormat> {
    let object = payload.as_object()?;
    if object.contains_key("vouch_alert") {
        return Some(AlertFormat::Native);
    }
    if object.contains_key("class_uid") {
        return Some(AlertFormat::Ocsf);
    }
    if object.get("result").is_some_and(Value::is_object)
        && (object.contains_key("sid") || object.contains_key("search_name"))
    {
        return Some(AlertFormat::Splunk);
    }
    if object.contains_key("EventID") || object.contains_key("EventCode") {
        return Some(AlertFormat::Windows);
    }
    let has_ecs_root = ["kibana", "source", "destination", "host", "user", "process", "event", "winlog", "ecs"]
        .iter()
        .any(|key| object.contains_key(*key))
        || object.keys().any(|key| {
            key.starts_with("kibana.alert.") || key.starts_with("source.") || key.starts_with("destination.")
        });
    has_ecs_root.then_some(AlertFormat::Ecs)
}

/// Normalizes a payload in the given format (or the detected one).
pub fn normalize(
    payload: &Value,
    format: Option<AlertFormat>,
    received_at: Timestamp,
) -> Result<Alert, Vec<FieldProblem>> {
    if json_depth(payload) > MAX_JSON_DEPTH {
        return Err(vec![FieldProblem::new("", format!("the payload is nested deeper than {MAX_JSON_DEPTH} levels"))]);
    }
    if !payload.is_object() {
        return Err(vec![FieldProblem::new("", "the alert must be a JSON object")]);
    }
    let Some(format) = format.or_else(|| detect_format(payload)) else {
        return Err(vec![FieldProblem::new(
            "",
            "could not tell the format; send ?format=native|ecs|ocsf|splunk|windows",
        )]);
    };
    let mut alert = match format {
        AlertFormat::Native => native::normalize(payload, received_at)?,
        AlertFormat::Ecs => ecs::normalize(payload, received_at)?,
        AlertFormat::Ocsf => ocsf::normalize(payload, received_at)?,
        AlertFormat::Splunk => splunk::normalize(payload, received_at)?,
        AlertFormat::Windows => windows::normalize(payload, received_at)?,
    };
    alert.mitre.sort();
    alert.mitre.dedup();
    alert.mitre.truncate(MAX_LIST_ITEMS);
    // What the techniques name outranks what the protocol suggested.
    if alert.mitre.iter().any(|id| id.as_str().starts_with("T1550")) {
        alert.connection = ConnectionKind::AlternateAuthentication;
    } else if alert.mitre.iter().any(|id| id.as_str().starts_with("T1134")) {
        alert.connection = ConnectionKind::TokenManipulation;
    }
    take_share_from_unc_path(&mut alert);
    if alert.source.is_unknown() && alert.target.is_unknown() && alert.not_a_movement.is_none() {
        return Err(vec![FieldProblem::new(
            "",
            "the alert names neither a source nor a target system, so it describes no movement",
        )]);
    }
    Ok(alert)
}

/// A file named by a UNC path (`\\FILESRV\projects$\plan.docx`) names its share and its
/// server too: the share is `projects$`, and the server is the target when the alert had only
/// the target's IP or nothing.
fn take_share_from_unc_path(alert: &mut Alert) {
    let unc = [alert.file.clone(), alert.share.clone()].into_iter().flatten().find(|path| path.starts_with("\\\\"));
    let Some(path) = unc else { return };
    let Some(rest) = path.strip_prefix("\\\\") else { return };
    let mut parts = rest.splitn(3, '\\');
    let (Some(server), Some(share)) = (parts.next(), parts.next()) else { return };
    let file = parts.next();
    if server.is_empty() || share.is_empty() {
        return;
    }
    if server != "*" && server != "?" && alert.target.hostname.is_none() {
        alert.target.hostname = Some(cap(server, MAX_SHORT_FIELD));
    }
    if alert.share.as_deref().is_none_or(|known| known.starts_with("\\\\")) {
        alert.share = Some(cap(share, MAX_SHORT_FIELD));
    }
    // The rest of the path is the file, unless the event named the file on its own.
    if let Some(file) = file.filter(|file| !file.is_empty()) {
        if alert.file.as_deref().is_none_or(|known| known.starts_with("\\\\")) {
            alert.file = Some(cap(file, MAX_LONG_FIELD));
        }
    }
}

fn json_depth(value: &Value) -> usize {
    // Iterative, so that a hostile payload cannot exhaust the stack while being measured.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if depth > MAX_JSON_DEPTH {
            return depth;
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// Reads fields by dotted path from payloads that may nest (`{"source": {"ip": ..}}`), flatten
/// (`{"source.ip": ..}`) or mix both, as ECS and OCSF senders do.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    root: &'a Value,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(root: &'a Value) -> Fields<'a> {
        Fields { root }
    }

    pub(crate) fn root(&self) -> &'a Value {
        self.root
    }

    pub(crate) fn value(&self, path: &str) -> Option<&'a Value> {
        lookup(self.root, path).filter(|value| !value.is_null())
    }

    /// A field as text: strings as they are, numbers and booleans printed. Empty and "-" are absent.
    pub(crate) fn text(&self, path: &str) -> Option<String> {
        let value = self.value(path)?;
        let value = match value {
            Value::Array(items) => items.first()?,
            other => other,
        };
        let text = match value {
            Value::String(text) => text.trim().to_string(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return None,
        };
        (!text.is_empty() && text != "-").then_some(text)
    }

    pub(crate) fn first_text(&self, paths: &[&str]) -> Option<String> {
        paths.iter().find_map(|path| self.text(path))
    }

    /// Every string found at `path` (a string, or an array of strings).
    pub(crate) fn texts(&self, path: &str) -> Vec<String> {
        match self.value(path) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| match item {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(number) => Some(number.to_string()),
                    _ => None,
                })
                .take(MAX_LIST_ITEMS)
                .collect(),
            Some(_) => self.text(path).into_iter().collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn number(&self, path: &str) -> Option<f64> {
        match self.value(path)? {
            Value::Number(number) => number.as_f64(),
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    /// A port number, rejected unless it fits 0..=65535; 0 is the senders' "not known".
    pub(crate) fn port(&self, paths: &[&str], problems: &mut Vec<FieldProblem>) -> Option<u16> {
        for path in paths {
            if let Some(number) = self.number(path) {
                if number == 0.0 {
                    return None;
                }
                if number.fract() == 0.0 && (1.0..=65535.0).contains(&number) {
                    return Some(number as u16);
                }
                problems.push(FieldProblem::new(
                    pointer(path),
                    "a port must be a whole number from 0 (not known) to 65535",
                ));
                return None;
            }
        }
        None
    }

    pub(crate) fn timestamp(&self, paths: &[&str]) -> Option<Timestamp> {
        paths.iter().find_map(|path| match self.value(path)? {
            Value::String(text) => Timestamp::parse(text),
            Value::Number(number) => number.as_f64().and_then(Timestamp::from_epoch_number),
            _ => None,
        })
    }
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(found) = object.get(path) {
        return Some(found);
    }
    // Try every split point: `a.b.c` may be stored as {"a": {"b.c": ..}} or {"a.b": {"c": ..}}.
    let mut split_at = path.len();
    while let Some(dot) = path[..split_at].rfind('.') {
        if let Some(child) = object.get(&path[..dot]) {
            if let Some(found) = lookup(child, &path[dot + 1..]) {
                return Some(found);
            }
        }
        split_at = dot;
    }
    None
}

/// A dotted path as a JSON pointer, for error messages.
pub(crate) fn pointer(path: &str) -> String {
    format!("/{}", path.replace('~', "~0").replace('/', "~1").replace('.', "/"))
}

/// Builds a system from a hostname and IP texts; IPs that do not parse are ignored, except that
/// a hostname-looking "IP" is kept as the hostname when no hostname was given.
pub(crate) fn system(hostname: Option<String>, ip_texts: &[String], edr_ids: Vec<String>) -> System {
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut hostname = hostname
        .map(|name| cap(name.trim_start_matches('\\'), MAX_SHORT_FIELD))
        .filter(|name| !name.is_empty() && name != "-" && name != "localhost");
    // An IP where a hostname belongs (`source.domain: "127.0.0.1"`) is an IP.
    if let Some(ip) = hostname.as_deref().and_then(|name| name.parse::<IpAddr>().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
        hostname = None;
    }
    for text in ip_texts {
        let text = text.trim();
        match text.parse::<IpAddr>() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) if hostname.is_none() && !text.is_empty() && text != "-" => {
                hostname = Some(cap(text.trim_start_matches('\\'), MAX_SHORT_FIELD));
            }
            Err(_) => {}
        }
    }
    ips.truncate(MAX_LIST_ITEMS);
    let mut edr_ids: Vec<String> =
        edr_ids.iter().map(|id| cap(id, MAX_SHORT_FIELD)).filter(|id| !id.is_empty()).collect();
    edr_ids.dedup();
    edr_ids.truncate(MAX_LIST_ITEMS);
    System { hostname, ips, edr_ids }
}

pub(crate) fn techniques(texts: impl IntoIterator<Item = String>) -> Vec<TechniqueId> {
    texts.into_iter().filter_map(|text| TechniqueId::parse(&text)).take(MAX_LIST_ITEMS).collect()
}

pub(crate) fn short(text: Option<String>) -> Option<String> {
    text.map(|text| cap(&text, MAX_SHORT_FIELD)).filter(|text| !text.is_empty())
}

pub(crate) fn logon_type(fields: &Fields<'_>, paths: &[&str], problems: &mut Vec<FieldProblem>) -> Option<u8> {
    for path in paths {
        if let Some(number) = fields.number(path) {
            if number.fract() == 0.0 && (0.0..=13.0).contains(&number) {
                return Some(number as u8);
            }
            problems.push(FieldProblem::new(pointer(path), "a Windows logon type is a whole number from 0 to 13"));
            return None;
        }
    }
    None
}

pub(crate) fn finish(alert: Alert, problems: Vec<FieldProblem>) -> Result<Alert, Vec<FieldProblem>> {
    if problems.is_empty() {
        Ok(alert)
    } else {
        Err(problems)
    }
}
