//! Vouch's SCIM 2.0 server (RFC 7643 resources, RFC 7644 protocol), so an identity provider
//! (Okta, Entra ID, ...) pushes people to Vouch: `/scim/v2/Users` and `/scim/v2/Groups` with
//! create, read, replace, patch, delete and `eq` filters, the enterprise extension's `manager`,
//! behind the source's own bearer token.
//!
//! The resources are kept as the source's state inside its snapshot; every accepted request
//! derives the source's people from them and lands through the directory keeper (durable,
//! audited, in effect) before it is answered. A request that breaks the schema changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use vouch_config::{DirectorySource, ScimSource, SourceKind, SourceSnapshot, SyncedPerson};
use vouch_playbook::model::cap;
use vouch_playbook::Timestamp;

use super::{DirectoryKeeper, PushError};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Longest value kept from one attribute.
const MAX_VALUE: usize = 256;
/// Most members of one group, most resources of one kind.
const MAX_MEMBERS: usize = 10_000;
const MAX_RESOURCES: usize = 200_000;

/// A user as the identity provider sent it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct User {
    id: String,
    user_name: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    emails: Vec<String>,
    active: bool,
    /// The manager's SCIM id.
    #[serde(default)]
    manager: Option<String>,
    #[serde(default)]
    discord_id: Option<String>,
    created: Timestamp,
    last_modified: Timestamp,
    version: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Group {
    id: String,
    display_name: String,
    #[serde(default)]
    external_id: Option<String>,
    /// Members' SCIM ids.
    #[serde(default)]
    members: Vec<String>,
    created: Timestamp,
    last_modified: Timestamp,
    version: u64,
}

/// Every resource the identity provider pushed (the source's state).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Resources {
    #[serde(default)]
    users: BTreeMap<String, User>,
    #[serde(default)]
    groups: BTreeMap<String, Group>,
    #[serde(default)]
    next_id: u64,
}

impl Resources {
    fn of(snapshot: Option<&SourceSnapshot>) -> Resources {
        snapshot
            .and_then(|snapshot| snapshot.state.clone())
            .and_then(|state| serde_json::from_value(state).ok())
            .unwrap_or_default()
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:016x}", self.next_id)
    }

    /// The person id a user is known by in Vouch: the local part of the user name.
    fn person_id(user: &User) -> String {
        user.user_name.split('@').next().unwrap_or(&user.user_name).to_ascii_lowercase()
    }

    /// The source's snapshot: active users as people, with manager, roles by group, accounts.
    fn snapshot(&self, source: &DirectorySource, settings: &ScimSource, now: Timestamp) -> SourceSnapshot {
        let person_of = |id: &str| self.users.get(id).filter(|user| user.active).map(Resources::person_id);
        let people = self
            .users
            .values()
            .filter(|user| user.active)
            .map(|user| {
                let roles = self
                    .groups
                    .values()
                    .filter(|group| group.members.contains(&user.id))
                    .filter_map(|group| {
                        let name = group.display_name.to_ascii_lowercase();
                        settings.roles.iter().find(|(mapped, _)| *mapped == name).map(|(_, role)| role.clone())
                    })
                    .collect();
                let mut accounts = vec![Resources::person_id(user), user.user_name.to_ascii_lowercase()];
                accounts.dedup();
                SyncedPerson {
                    id: Resources::person_id(user),
                    origin: format!("/scim/v2/Users/{}", user.id),
                    name: user.display_name.clone(),
                    discord_id: user.discord_id.clone(),
                    manager: user.manager.as_deref().and_then(person_of),
                    team: None,
                    roles,
                    workstations: Vec::new(),
                    accounts,
                }
            })
            .collect();
        SourceSnapshot {
            source: source.name.clone(),
            synced_at: Some(now),
            cursor: None,
            full_synced_at: None,
            people,
            accounts: Vec::new(),
            assets: Vec::new(),
            state: serde_json::to_value(self).ok(),
        }
    }
}

/// A SCIM error answer (RFC 7644 §3.12).
#[derive(Debug)]
pub struct ScimError {
    status: StatusCode,
    scim_type: Option<&'static str>,
    detail: String,
}

impl ScimError {
    fn bad(scim_type: &'static str, detail: impl Into<String>) -> ScimError {
        ScimError { status: StatusCode::BAD_REQUEST, scim_type: Some(scim_type), detail: detail.into() }
    }

    fn not_found(what: &str, id: &str) -> ScimError {
        ScimError { status: StatusCode::NOT_FOUND, scim_type: None, detail: format!("no {what} has the id {id}") }
    }

    fn conflict(detail: impl Into<String>) -> ScimError {
        ScimError { status: StatusCode::CONFLICT, scim_type: Some("uniqueness"), detail: detail.into() }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body =
            json!({"schemas": [ERROR_SCHEMA], "status": self.status.as_u16().to_string(), "detail": self.detail});
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        scim_json(self.status, body)
    }
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/scim+json")], body.to_string()).into_response()
}

struct ScimState {
    keeper: Arc<DirectoryKeeper>,
    source: DirectorySource,
    settings: ScimSource,
    clock: Arc<dyn crate::Clock>,
}

/// The `/scim/v2` routes for the configured SCIM source, if there is one.
pub fn routes(keeper: Arc<DirectoryKeeper>, clock: Arc<dyn crate::Clock>) -> Option<Router> {
    let source = keeper.sources().iter().find(|source| matches!(source.kind, SourceKind::Scim(_)))?.clone();
    let SourceKind::Scim(settings) = &source.kind else { return None };
    let settings = settings.clone();
    let state = Arc::new(ScimState { keeper, source, settings, clock });
    let router = Router::new()
        .route("/scim/v2/ServiceProviderConfig", get(service_provider_config))
        .route("/scim/v2/Users", get(list_users).post(create_user))
        .route("/scim/v2/Users/{id}", get(get_user).put(replace_user).patch(patch_user).delete(delete_user))
        .route("/scim/v2/Groups", get(list_groups).post(create_group))
        .route("/scim/v2/Groups/{id}", get(get_group).put(replace_group).patch(patch_group).delete(delete_group))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_scim_token))
        .with_state(state);
    Some(router)
}

async fn require_scim_token(State(state): State<Arc<ScimState>>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if crate::auth::bearer_matches(header, &state.settings.token) {
        next.run(request).await
    } else {
        ScimError { status: StatusCode::UNAUTHORIZED, scim_type: None, detail: "missing or wrong bearer token".into() }
            .into_response()
    }
}

async fn service_provider_config() -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": 200},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                "description": "The token configured for this source in vouch.toml"}],
        }),
    )
}

// ---- reading bodies -----------------------------------------------------------------------------

/// A body declares the schema it follows (RFC 7644 §3.3, §3.5.2).
fn require_schema(object: &Map<String, Value>, schema: &str) -> Result<(), ScimError> {
    let schemas = object.get("schemas").and_then(Value::as_array);
    if schemas.is_some_and(|schemas| schemas.iter().any(|declared| declared == schema)) {
        Ok(())
    } else {
        Err(ScimError::bad("invalidSyntax", format!("schemas must include {schema}")))
    }
}

/// A required, non-empty text attribute.
fn required_text(value: &Value, attribute: &str) -> Result<String, ScimError> {
    text_value(value, attribute)?
        .ok_or_else(|| ScimError::bad("invalidValue", format!("{attribute} must not be empty")))
}

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, ScimError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ScimError::bad("invalidSyntax", "the body must be a JSON object")),
        Err(error) => Err(ScimError::bad("invalidSyntax", format!("the body is not valid JSON: {error}"))),
    }
}

fn text_value(value: &Value, attribute: &str) -> Result<Option<String>, ScimError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.chars().count() <= MAX_VALUE => {
            Ok(Some(cap(text, MAX_VALUE)).filter(|text| !text.is_empty()))
        }
        Value::String(_) => {
            Err(ScimError::bad("invalidValue", format!("{attribute} is longer than {MAX_VALUE} characters")))
        }
        _ => Err(ScimError::bad("invalidValue", format!("{attribute} must be a string"))),
    }
}

fn bool_value(value: &Value, attribute: &str) -> Result<bool, ScimError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        // Some identity providers send booleans as strings ("False").
        Value::String(text) if text.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(text) if text.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ScimError::bad("invalidValue", format!("{attribute} must be a boolean"))),
    }
}

/// The manager reference: `{"value": id}` or the id itself.
fn manager_value(value: &Value) -> Result<Option<String>, ScimError> {
    match value {
        Value::Object(object) => object.get("value").map_or(Ok(None), |value| text_value(value, "manager.value")),
        other => text_value(other, "manager"),
    }
}

/// A dotted attribute path in a JSON object (`name.formatted`), extension URNs included.
fn attribute<'a>(object: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(found) = object.get(path) {
        return Some(found);
    }
    // `urn:...:User:employeeNumber` addresses `employeeNumber` inside the extension object.
    if let Some((schema, name)) = path.rsplit_once(':') {
        if let Some(Value::Object(extension)) = object.get(schema) {
            return extension.get(name);
        }
    }
    let (head, rest) = path.split_once('.')?;
    match object.get(head)? {
        Value::Object(child) => attribute(child, rest),
        _ => None,
    }
}

/// Applies one attribute of a user (by its SCIM name, lower-cased) to the user.
fn set_user_attribute(user: &mut User, name: &str, value: &Value, settings: &ScimSource) -> Result<(), ScimError> {
    let lowered = name.to_ascii_lowercase();
    match lowered.as_str() {
        "username" => user.user_name = required_text(value, "userName")?,
        "externalid" => user.external_id = text_value(value, "externalId")?,
        "displayname" | "name.formatted" => user.display_name = text_value(value, name)?,
        "active" => user.active = bool_value(value, "active")?,
        "emails" => {
            user.emails = match value {
                Value::Array(items) => items
                    .iter()
                    .take(16)
                    .filter_map(|item| item.get("value").and_then(Value::as_str).map(|email| cap(email, MAX_VALUE)))
                    .collect(),
                Value::Null => Vec::new(),
                _ => return Err(ScimError::bad("invalidValue", "emails must be a list")),
            }
        }
        "name" => {
            if let Some(formatted) = value.get("formatted") {
                user.display_name = text_value(formatted, "name.formatted")?;
            }
        }
        _ if lowered == format!("{}:manager", ENTERPRISE.to_ascii_lowercase()) || lowered == "manager" => {
            user.manager = manager_value(value)?
        }
        _ if lowered == ENTERPRISE.to_ascii_lowercase() => {
            if let Some(manager) = value.get("manager") {
                user.manager = manager_value(manager)?;
            }
        }
        _ => {}
    }
    if let Some(attribute_path) = &settings.discord_id_attribute {
        if lowered == attribute_path.to_ascii_lowercase() {
            user.discord_id = text_value(value, attribute_path)?;
        }
    }
    Ok(())
}

/// A user from a full representation (POST, PUT): every attribute not given is cleared.
fn user_from(object: &Map<String, Value>, mut user: User, settings: &ScimSource) -> Result<User, ScimError> {
    require_schema(object, USER_SCHEMA)?;
    let user_name = object.get("userName").ok_or_else(|| ScimError::bad("invalidValue", "userName is required"))?;
    user.user_name = required_text(user_name, "userName")?;
    user.external_id = object.get("externalId").map_or(Ok(None), |value| text_value(value, "externalId"))?;
    user.display_name = match object.get("displayName") {
        Some(value) => text_value(value, "displayName")?,
        None => attribute(object, "name.formatted").map_or(Ok(None), |value| text_value(value, "name.formatted"))?,
    };
    user.active = object.get("active").map_or(Ok(true), |value| bool_value(value, "active"))?;
    user.emails.clear();
    if let Some(emails) = object.get("emails") {
        set_user_attribute(&mut user, "emails", emails, settings)?;
    }
    user.manager = attribute(object, &format!("{ENTERPRISE}:manager")).map_or(Ok(None), manager_value)?;
    user.discord_id = match &settings.discord_id_attribute {
        Some(path) => attribute(object, path).map_or(Ok(None), |value| text_value(value, path))?,
        None => None,
    };
    Ok(user)
}

fn user_json(user: &User, settings: &ScimSource) -> Value {
    let mut body = json!({
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "id": user.id,
        "userName": user.user_name,
        "active": user.active,
        "emails": user.emails.iter().enumerate().map(|(index, email)| json!({"value": email, "primary": index == 0})).collect::<Vec<_>>(),
        ENTERPRISE: {"manager": user.manager.as_ref().map(|id| json!({"value": id}))},
        "meta": {"resourceType": "User", "created": user.created, "lastModified": user.last_modified,
                 "location": format!("/scim/v2/Users/{}", user.id), "version": format!("W/\"{}\"", user.version)},
    });
    if let Some(name) = &user.display_name {
        body["displayName"] = json!(name);
        body["name"] = json!({"formatted": name});
    }
    if let Some(external) = &user.external_id {
        body["externalId"] = json!(external);
    }
    if let (Some(path), Some(discord)) = (&settings.discord_id_attribute, &user.discord_id) {
        match path.rsplit_once(':') {
            Some((schema, name)) if schema.starts_with("urn:") => {
                if !body[schema].is_object() {
                    body[schema] = json!({});
                }
                body[schema][name] = json!(discord);
            }
            _ => body[path.as_str()] = json!(discord),
        }
    }
    body
}

fn group_json(group: &Group) -> Value {
    let mut body = json!({
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
        "members": group.members.iter().map(|id| json!({"value": id, "$ref": format!("/scim/v2/Users/{id}")})).collect::<Vec<_>>(),
        "meta": {"resourceType": "Group", "created": group.created, "lastModified": group.last_modified,
                 "location": format!("/scim/v2/Groups/{}", group.id), "version": format!("W/\"{}\"", group.version)},
    });
    if let Some(external) = &group.external_id {
        body["externalId"] = json!(external);
    }
    body
}

fn members_from(value: &Value) -> Result<Vec<String>, ScimError> {
    match value {
        Value::Array(items) if items.len() <= MAX_MEMBERS => items
            .iter()
            .map(|item| {
                item.get("value")
                    .and_then(Value::as_str)
                    .map(|id| cap(id, MAX_VALUE))
                    .ok_or_else(|| ScimError::bad("invalidValue", "each member is {\"value\": id}"))
            })
            .collect(),
        Value::Array(_) => Err(ScimError::bad("invalidValue", format!("at most {MAX_MEMBERS} members"))),
        Value::Null => Ok(Vec::new()),
        _ => Err(ScimError::bad("invalidValue", "members must be a list")),
    }
}

// ---- filters --------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
}

/// `attribute eq "value"`: the only filter identity providers need to find a resource.
fn equality_filter(filter: &str, allowed: &[&str]) -> Result<(String, String), ScimError> {
    let invalid =
        || ScimError::bad("invalidFilter", format!("only `{} eq \"value\"` filters are supported", allowed.join("|")));
    let mut parts = filter.trim().splitn(3, ' ');
    let (Some(name), Some(operator), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if !operator.eq_ignore_ascii_case("eq") || !allowed.iter().any(|known| known.eq_ignore_ascii_case(name)) {
        return Err(invalid());
    }
    let value = value.trim();
    let value = value.strip_prefix('"').and_then(|value| value.strip_suffix('"')).ok_or_else(invalid)?;
    Ok((name.to_ascii_lowercase(), value.replace("\\\"", "\"")))
}

fn list_response(resources: Vec<Value>, query: &ListQuery) -> Response {
    let total = resources.len();
    let start = query.start_index.unwrap_or(1).max(1);
    let count = query.count.unwrap_or(100).min(200);
    let page: Vec<Value> = resources.into_iter().skip(start - 1).take(count).collect();
    scim_json(
        StatusCode::OK,
        json!({"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start, "itemsPerPage": page.len(), "Resources": page}),
    )
}

// ---- handlers ---------------------------------------------------------------------------------

impl ScimState {
    async fn resources(&self) -> Resources {
        Resources::of(self.keeper.snapshots.lock().await.get(&self.source.name))
    }

    /// Changes the resources and lands the result; answers what `change` returns.
    async fn change<T>(
        &self,
        change: impl FnOnce(&mut Resources, Timestamp) -> Result<T, ScimError>,
    ) -> Result<T, ScimError> {
        let now = self.clock.now();
        let outcome = self
            .keeper
            .push(&self.source, now, |snapshot| {
                let mut resources = Resources::of(snapshot);
                let value = change(&mut resources, now)?;
                if resources.users.len() > MAX_RESOURCES || resources.groups.len() > MAX_RESOURCES {
                    return Err(ScimError::bad("tooMany", format!("at most {MAX_RESOURCES} users and groups")));
                }
                Ok((resources.snapshot(&self.source, &self.settings, now), value))
            })
            .await;
        match outcome {
            Ok(value) => Ok(value),
            Err(PushError::Refused(error)) => Err(error),
            Err(PushError::NotKept(reason)) => Err(ScimError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                scim_type: None,
                detail: format!("the change was not kept: {reason}"),
            }),
        }
    }
}

async fn list_users(
    State(state): State<Arc<ScimState>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ScimError> {
    let resources = state.resources().await;
    let filter =
        query.filter.as_deref().map(|filter| equality_filter(filter, &["userName", "externalId"])).transpose()?;
    let found = resources
        .users
        .values()
        .filter(|user| match &filter {
            Some((name, value)) if name == "username" => user.user_name.eq_ignore_ascii_case(value),
            Some((_, value)) => user.external_id.as_deref() == Some(value.as_str()),
            None => true,
        })
        .map(|user| user_json(user, &state.settings))
        .collect();
    Ok(list_response(found, &query))
}

async fn get_user(State(state): State<Arc<ScimState>>, Path(id): Path<String>) -> Result<Response, ScimError> {
    let resources = state.resources().await;
    let user = resources.users.get(&id).ok_or_else(|| ScimError::not_found("user", &id))?;
    Ok(scim_json(StatusCode::OK, user_json(user, &state.settings)))
}

fn user_name_taken(resources: &Resources, user_name: &str, except: Option<&str>) -> bool {
    resources
        .users
        .values()
        .any(|other| Some(other.id.as_str()) != except && other.user_name.eq_ignore_ascii_case(user_name))
}

async fn create_user(State(state): State<Arc<ScimState>>, body: Bytes) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let settings = state.settings.clone();
    let user = state
        .change(|resources, now| {
            let mut user = user_from(&object, User::default(), &settings)?;
            if user_name_taken(resources, &user.user_name, None) {
                return Err(ScimError::conflict(format!("a user named {} exists", user.user_name)));
            }
            user.id = resources.new_id();
            (user.created, user.last_modified, user.version) = (now, now, 1);
            resources.users.insert(user.id.clone(), user.clone());
            Ok(user)
        })
        .await?;
    let mut response = scim_json(StatusCode::CREATED, user_json(&user, &state.settings));
    if let Ok(location) = format!("/scim/v2/Users/{}", user.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn replace_user(
    State(state): State<Arc<ScimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let settings = state.settings.clone();
    let user = state
        .change(|resources, now| {
            let existing = resources.users.get(&id).cloned().ok_or_else(|| ScimError::not_found("user", &id))?;
            let mut user = user_from(&object, existing.clone(), &settings)?;
            if user_name_taken(resources, &user.user_name, Some(&id)) {
                return Err(ScimError::conflict(format!("a user named {} exists", user.user_name)));
            }
            (user.id, user.created, user.last_modified, user.version) =
                (id.clone(), existing.created, now, existing.version + 1);
            resources.users.insert(id.clone(), user.clone());
            Ok(user)
        })
        .await?;
    Ok(scim_json(StatusCode::OK, user_json(&user, &state.settings)))
}

/// The operations of a PatchOp body, checked.
fn patch_operations(object: &Map<String, Value>) -> Result<Vec<(String, Option<String>, Value)>, ScimError> {
    require_schema(object, PATCH_SCHEMA)?;
    let Some(Value::Array(operations)) = object.get("Operations") else {
        return Err(ScimError::bad("invalidSyntax", "Operations must be a list"));
    };
    operations
        .iter()
        .take(1000)
        .map(|operation| {
            let op = operation.get("op").and_then(Value::as_str).map(str::to_ascii_lowercase);
            let Some(op) = op.filter(|op| ["add", "replace", "remove"].contains(&op.as_str())) else {
                return Err(ScimError::bad("invalidSyntax", "each operation's op is add, replace or remove"));
            };
            let path = operation.get("path").and_then(Value::as_str).map(str::to_string);
            let value = operation.get("value").cloned().unwrap_or(Value::Null);
            if op != "remove" && value.is_null() {
                return Err(ScimError::bad("noTarget", format!("a {op} operation needs a value")));
            }
            if path.is_none() && !value.is_object() {
                return Err(ScimError::bad("noTarget", "an operation without a path needs an object value"));
            }
            Ok((op, path, value))
        })
        .collect()
}

async fn patch_user(
    State(state): State<Arc<ScimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let operations = patch_operations(&object)?;
    let settings = state.settings.clone();
    let user = state
        .change(|resources, now| {
            let mut user = resources.users.get(&id).cloned().ok_or_else(|| ScimError::not_found("user", &id))?;
            for (op, path, value) in operations {
                let pairs: Vec<(String, Value)> = match (&path, value) {
                    (Some(path), _) if op == "remove" => vec![(path.clone(), Value::Null)],
                    (Some(path), value) => vec![(path.clone(), value)],
                    (None, Value::Object(fields)) => fields.into_iter().collect(),
                    (None, _) => Vec::new(),
                };
                for (name, value) in pairs {
                    if name.eq_ignore_ascii_case("userName") && value.is_null() {
                        return Err(ScimError::bad("mutability", "userName cannot be removed"));
                    }
                    set_user_attribute(&mut user, &name, &value, &settings)?;
                }
            }
            if user_name_taken(resources, &user.user_name, Some(&id)) {
                return Err(ScimError::conflict(format!("a user named {} exists", user.user_name)));
            }
            (user.last_modified, user.version) = (now, user.version + 1);
            resources.users.insert(id.clone(), user.clone());
            Ok(user)
        })
        .await?;
    Ok(scim_json(StatusCode::OK, user_json(&user, &state.settings)))
}

async fn delete_user(State(state): State<Arc<ScimState>>, Path(id): Path<String>) -> Result<Response, ScimError> {
    state
        .change(|resources, _| {
            resources.users.remove(&id).ok_or_else(|| ScimError::not_found("user", &id))?;
            for group in resources.groups.values_mut() {
                group.members.retain(|member| member != &id);
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn group_from(object: &Map<String, Value>, mut group: Group) -> Result<Group, ScimError> {
    require_schema(object, GROUP_SCHEMA)?;
    let name = object.get("displayName").ok_or_else(|| ScimError::bad("invalidValue", "displayName is required"))?;
    group.display_name = required_text(name, "displayName")?;
    group.external_id = object.get("externalId").map_or(Ok(None), |value| text_value(value, "externalId"))?;
    group.members = object.get("members").map_or(Ok(Vec::new()), members_from)?;
    Ok(group)
}

async fn list_groups(
    State(state): State<Arc<ScimState>>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ScimError> {
    let resources = state.resources().await;
    let filter =
        query.filter.as_deref().map(|filter| equality_filter(filter, &["displayName", "externalId"])).transpose()?;
    let found = resources
        .groups
        .values()
        .filter(|group| match &filter {
            Some((name, value)) if name == "displayname" => group.display_name.eq_ignore_ascii_case(value),
            Some((_, value)) => group.external_id.as_deref() == Some(value.as_str()),
            None => true,
        })
        .map(group_json)
        .collect();
    Ok(list_response(found, &query))
}

async fn get_group(State(state): State<Arc<ScimState>>, Path(id): Path<String>) -> Result<Response, ScimError> {
    let resources = state.resources().await;
    let group = resources.groups.get(&id).ok_or_else(|| ScimError::not_found("group", &id))?;
    Ok(scim_json(StatusCode::OK, group_json(group)))
}

fn unknown_members(resources: &Resources, members: &[String]) -> Result<(), ScimError> {
    match members.iter().find(|member| !resources.users.contains_key(*member)) {
        Some(member) => Err(ScimError::bad("invalidValue", format!("no user has the id {member}"))),
        None => Ok(()),
    }
}

async fn create_group(State(state): State<Arc<ScimState>>, body: Bytes) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let group = state
        .change(|resources, now| {
            let mut group = group_from(&object, Group::default())?;
            unknown_members(resources, &group.members)?;
            if resources.groups.values().any(|other| other.display_name.eq_ignore_ascii_case(&group.display_name)) {
                return Err(ScimError::conflict(format!("a group named {} exists", group.display_name)));
            }
            group.id = resources.new_id();
            (group.created, group.last_modified, group.version) = (now, now, 1);
            resources.groups.insert(group.id.clone(), group.clone());
            Ok(group)
        })
        .await?;
    Ok(scim_json(StatusCode::CREATED, group_json(&group)))
}

async fn replace_group(
    State(state): State<Arc<ScimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let group = state
        .change(|resources, now| {
            let existing = resources.groups.get(&id).cloned().ok_or_else(|| ScimError::not_found("group", &id))?;
            let mut group = group_from(&object, existing.clone())?;
            unknown_members(resources, &group.members)?;
            (group.id, group.created, group.last_modified, group.version) =
                (id.clone(), existing.created, now, existing.version + 1);
            resources.groups.insert(id.clone(), group.clone());
            Ok(group)
        })
        .await?;
    Ok(scim_json(StatusCode::OK, group_json(&group)))
}

/// Adds members (known users only) to a group, each once.
fn add_members(resources: &Resources, group: &mut Group, value: &Value) -> Result<(), ScimError> {
    let added = members_from(value)?;
    unknown_members(resources, &added)?;
    for member in added {
        if !group.members.contains(&member) {
            group.members.push(member);
        }
    }
    Ok(())
}

/// `members[value eq "id"]`: the member a remove operation names.
fn member_in_path(path: &str) -> Option<String> {
    let inner = path.strip_prefix("members[")?.strip_suffix(']')?;
    equality_filter(inner, &["value"]).ok().map(|(_, value)| value)
}

async fn patch_group(
    State(state): State<Arc<ScimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let object = parse_body(&body)?;
    let operations = patch_operations(&object)?;
    let group = state
        .change(|resources, now| {
            let mut group = resources.groups.get(&id).cloned().ok_or_else(|| ScimError::not_found("group", &id))?;
            for (op, path, value) in operations {
                let path_lowered = path.as_deref().map(str::to_ascii_lowercase);
                match (op.as_str(), path_lowered.as_deref()) {
                    ("add", Some("members")) => add_members(resources, &mut group, &value)?,
                    ("replace", Some("members")) => {
                        let members = members_from(&value)?;
                        unknown_members(resources, &members)?;
                        group.members = members;
                    }
                    ("remove", Some("members")) => match value {
                        Value::Null => group.members.clear(),
                        value => {
                            let removed = members_from(&value)?;
                            group.members.retain(|member| !removed.contains(member));
                        }
                    },
                    ("remove", Some(_)) if path.as_deref().and_then(member_in_path).is_some() => {
                        let removed = path.as_deref().and_then(member_in_path).unwrap_or_default();
                        group.members.retain(|member| member != &removed);
                    }
                    ("add" | "replace", Some("displayname")) => {
                        group.display_name = required_text(&value, "displayName")?;
                    }
                    ("add" | "replace", None) => {
                        if let Some(name) = value.get("displayName") {
                            group.display_name = required_text(name, "displayName")?;
                        }
                        if let Some(members) = value.get("members") {
                            add_members(resources, &mut group, members)?;
                        }
                    }
                    (_, Some("externalid")) => group.external_id = text_value(&value, "externalId")?,
                    (_, path) => {
                        return Err(ScimError::bad(
                            "invalidPath",
                            format!("cannot {op} {}", path.unwrap_or("the group")),
                        ))
                    }
                }
            }
            (group.last_modified, group.version) = (now, group.version + 1);
            resources.groups.insert(id.clone(), group.clone());
            Ok(group)
        })
        .await?;
    Ok(scim_json(StatusCode::OK, group_json(&group)))
}

async fn delete_group(State(state): State<Arc<ScimState>>, Path(id): Path<String>) -> Result<Response, ScimError> {
    state
        .change(|resources, _| {
            resources.groups.remove(&id).map(|_| ()).ok_or_else(|| ScimError::not_found("group", &id))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
