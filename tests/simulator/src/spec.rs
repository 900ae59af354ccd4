//! Discord's official OpenAPI description, used to check every request body the bot sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

struct Operation {
    method: String,
    template: String,
    segments: Vec<String>,
    /// The `application/json` request body schema, if the operation takes one.
    schema: Option<Value>,
}

pub struct Spec {
    components: Value,
    operations: Vec<Operation>,
    validators: Mutex<HashMap<usize, Arc<jsonschema::Validator>>>,
}

impl Spec {
    pub fn load(text: &str) -> Result<Spec, String> {
        let document: Value = serde_json::from_str(text).map_err(|error| format!("openapi.json: {error}"))?;
        let paths = document["paths"].as_object().ok_or("openapi.json has no paths")?;
        let mut operations = Vec::new();
        for (template, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, operation) in item {
                if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    continue;
                }
                let schema = operation.pointer("/requestBody/content/application~1json/schema").cloned();
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: template.clone(),
                    segments: template.trim_start_matches('/').split('/').map(str::to_string).collect(),
                    schema,
                });
            }
        }
        Ok(Spec { components: document["components"].clone(), operations, validators: Mutex::default() })
    }

    /// Finds the operation for a concrete path (`/channels/123/messages`), preferring the
    /// template with the most literal segments (`/users/@me/channels` over `/users/{id}/...`).
    fn operation(&self, method: &str, path: &str) -> Option<usize> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.operations
            .iter()
            .enumerate()
            .filter(|(_, operation)| operation.method == method && operation.segments.len() == segments.len())
            .filter(|(_, operation)| {
                operation.segments.iter().zip(&segments).all(|(template, actual)| {
                    (template.starts_with('{') && template.ends_with('}') && !actual.is_empty()) || template == actual
                })
            })
            .max_by_key(|(_, operation)| operation.segments.iter().filter(|segment| !segment.starts_with('{')).count())
            .map(|(index, _)| index)
    }

    /// Checks a request against the description: the endpoint exists, and its JSON body (if
    /// any) validates against the operation's request body schema.
    pub fn check(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(), String> {
        let Some(index) = self.operation(method, path) else {
            return Err(format!("{method} {path}: no such endpoint in Discord's API description"));
        };
        let operation = &self.operations[index];
        let (Some(schema), Some(body)) = (&operation.schema, body) else {
            return Ok(());
        };
        let validator = self.validator(index, schema)?;
        let errors: Vec<String> =
            validator.iter_errors(body).take(8).map(|error| format!("{} {}", error.instance_path, error)).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{method} {} body rejected by the official schema: {}", operation.template, errors.join("; ")))
        }
    }

    fn validator(&self, index: usize, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let mut validators = self.validators.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(validator) = validators.get(&index) {
            return Ok(Arc::clone(validator));
        }
        // The operation's schema refers to `#/components/schemas/...`; wrap it in a document that
        // carries the components so those references resolve.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.components,
            "allOf": [schema],
        });
        let validator = Arc::new(
            jsonschema::draft202012::new(&root).map_err(|error| format!("cannot compile the schema: {error}"))?,
        );
        validators.insert(index, Arc::clone(&validator));
        Ok(validator)
    }
}
