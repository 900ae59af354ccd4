//! Raw Windows events in the shapes shippers forward them, read into an [`EventRecord`]:
//!
//! - flat, as NXLog writes them: `{"EventID": 4624, "Hostname": .., "TargetUserName": ..}`;
//! - Winlogbeat: `{"winlog": {"event_id": "4624", "computer_name": .., "event_data": {..}}}`;
//! - the event's XML rendered to JSON, as OpenWEC and XML-to-JSON converters write it:
//!   `{"Event": {"System": {"EventID": .., "Computer": ..}, "EventData": {"Data": [{"@Name": .., "#text": ..}]}}}`,
//!   or the same without the `Event` wrapper.
//!
//! What the event means is decided in `windows_event`, the same for every shape.

use serde_json::{Map, Value};

use super::windows_event::{alert_from_event, Envelope, EventRecord, EVENT_FIELDS};
use super::{FieldProblem, Fields};
use crate::model::{Alert, AlertFormat, Outcome};
use crate::time::Timestamp;

pub(crate) fn normalize(payload: &Value, received_at: Timestamp) -> Result<Alert, Vec<FieldProblem>> {
    let record = read_event(payload)?;
    alert_from_event(
        &record,
        Envelope {
            format: AlertFormat::Windows,
            source_product: None,
            source_alert_id: None,
            raw: payload,
            received_at,
        },
    )
}

/// Finds the event in any raw shape, or says why there is none.
pub(crate) fn read_event(payload: &Value) -> Result<EventRecord, Vec<FieldProblem>> {
    let fields = Fields::new(payload);
    if let Some(record) = record_from_winlog(&fields)? {
        return Ok(record);
    }
    let xml_root = fields.value("Event").filter(|event| event.get("System").is_some()).unwrap_or(payload);
    if let Some(system) = xml_root.get("System").filter(|system| system.is_object()) {
        return record_from_xml(system, xml_root.get("EventData"));
    }
    record_from_flat(&fields)
}

fn event_id(value: Option<&Value>, pointer: &str) -> Result<Option<u32>, Vec<FieldProblem>> {
    let Some(text) = value.and_then(scalar_text) else { return Ok(None) };
    match text.trim().parse::<u32>() {
        Ok(id) if id <= 65535 => Ok(Some(id)),
        _ => Err(vec![FieldProblem::new(pointer, "an event id is a whole number from 0 to 65535")]),
    }
}

/// A JSON scalar as text; XML-to-JSON converters put an element's text under `#text` (or `$`)
/// when it also has attributes.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Object(map) => {
            ["#text", "$", "value", "Value"].iter().find_map(|key| map.get(*key).and_then(scalar_text))
        }
        _ => None,
    }
}

fn offer_all(record: &mut EventRecord, lookup: impl Fn(&str) -> Option<String>) {
    for name in EVENT_FIELDS {
        record.offer(name, lookup(name));
    }
}

/// The audit outcome in an event's keywords: the words (`Audit Failure`, `AUDIT_SUCCESS`) or the
/// keyword mask the XML carries (`0x8010000000000000` failure, `0x8020000000000000` success).
fn outcome_from_keywords(text: Option<String>) -> Outcome {
    let text = text.unwrap_or_default().to_ascii_lowercase();
    const AUDIT_FAILURE: u64 = 0x0010_0000_0000_0000;
    const AUDIT_SUCCESS: u64 = 0x0020_0000_0000_0000;
    let mask = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        // NXLog writes the mask as a signed decimal.
        None => text.parse::<i64>().ok().map(|signed| signed as u64),
    };
    if let Some(mask) = mask {
        return if mask & AUDIT_FAILURE != 0 {
            Outcome::Failure
        } else if mask & AUDIT_SUCCESS != 0 {
            Outcome::Success
        } else {
            Outcome::Unknown
        };
    }
    if text.contains("failure") {
        Outcome::Failure
    } else if text.contains("success") {
        Outcome::Success
    } else {
        Outcome::Unknown
    }
}

/// Winlogbeat's `winlog.*` (also inside Elastic documents, beside the ECS fields).
pub(crate) fn record_from_winlog(fields: &Fields<'_>) -> Result<Option<EventRecord>, Vec<FieldProblem>> {
    let Some(id) = event_id(fields.value("winlog.event_id"), "/winlog/event_id")? else { return Ok(None) };
    let mut record = EventRecord::new(id);
    record.logging_host = fields.first_text(&["winlog.computer_name", "host.hostname", "host.name"]);
    record.channel = fields.text("winlog.channel");
    record.provider = fields.text("winlog.provider_name");
    record.record_id = fields.text("winlog.record_id");
    record.observed_at = fields.timestamp(&["@timestamp", "event.created"]);
    record.stated_outcome = fields
        .text("event.outcome")
        .map(|outcome| Outcome::from_name(&outcome))
        .unwrap_or_else(|| outcome_from_keywords(fields.texts("winlog.keywords").first().cloned()));
    offer_all(&mut record, |name| fields.text(&format!("winlog.event_data.{name}")));
    Ok(Some(record))
}

fn record_from_xml(system: &Value, event_data: Option<&Value>) -> Result<EventRecord, Vec<FieldProblem>> {
    let system_fields = Fields::new(system);
    let Some(id) = event_id(system.get("EventID"), "/Event/System/EventID")? else {
        return Err(vec![FieldProblem::new("/Event/System/EventID", "a Windows event needs its EventID")]);
    };
    let mut record = EventRecord::new(id);
    record.logging_host = system.get("Computer").and_then(scalar_text);
    record.channel = system.get("Channel").and_then(scalar_text);
    record.provider = system_fields.first_text(&["Provider.@Name", "Provider.Name", "Provider"]);
    record.record_id = system.get("EventRecordID").and_then(scalar_text);
    record.observed_at = system_fields.timestamp(&["TimeCreated.@SystemTime", "TimeCreated.SystemTime", "TimeCreated"]);
    record.stated_outcome = outcome_from_keywords(system.get("Keywords").and_then(scalar_text));
    let data = event_data_map(event_data);
    offer_all(&mut record, |name| data.get(name).and_then(scalar_text));
    Ok(record)
}

/// `EventData` as a map from field name to value, whichever way the XML was turned into JSON:
/// a map already, or `{"Data": [{"@Name": "TargetUserName", "#text": "alice"}, ..]}`.
fn event_data_map(event_data: Option<&Value>) -> Map<String, Value> {
    let mut map = Map::new();
    let Some(Value::Object(event_data)) = event_data else { return map };
    let items = match event_data.get("Data") {
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => return event_data.clone(),
    };
    for item in items.into_iter().take(256) {
        let Some(object) = item.as_object() else { continue };
        let name = ["@Name", "Name", "name"].iter().find_map(|key| object.get(*key).and_then(Value::as_str));
        if let (Some(name), Some(value)) = (name, scalar_text(item)) {
            map.insert(name.to_string(), Value::String(value));
        }
    }
    map
}

fn record_from_flat(fields: &Fields<'_>) -> Result<EventRecord, Vec<FieldProblem>> {
    let id = match event_id(fields.value("EventID"), "/EventID")? {
        Some(id) => id,
        None => match event_id(fields.value("EventCode"), "/EventCode")? {
            Some(id) => id,
            None => return Err(vec![FieldProblem::new("/EventID", "a Windows event needs its EventID")]),
        },
    };
    let mut record = EventRecord::new(id);
    record.logging_host = fields.first_text(&["Hostname", "Computer", "ComputerName", "host.name"]);
    record.channel = fields.first_text(&["Channel", "LogName"]);
    record.provider = fields.first_text(&["SourceName", "ProviderName", "Provider"]);
    record.record_id = fields.first_text(&["RecordNumber", "EventRecordID"]);
    record.observed_at = fields.timestamp(&["UtcTime", "@timestamp", "TimeCreated", "EventTime"]);
    record.stated_outcome = outcome_from_keywords(fields.first_text(&["EventType", "Keywords"]));
    offer_all(&mut record, |name| fields.text(name));
    Ok(record)
}
