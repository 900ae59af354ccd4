//! A Microsoft identity platform and Microsoft Graph on 127.0.0.1, answering as Microsoft
//! documents them: the client-credentials token endpoint (`/{tenant}/oauth2/v2.0/token`, form
//! fields checked, AADSTS errors), and Graph v1.0's `users` (with `$expand=manager`), the users
//! delta query (`/users/delta`: an enumeration ending in `@odata.deltaLink`, then only what
//! changed, removals as `@removed`, manager changes as `manager@delta`), a group's `members` and
//! `devices` (with `$expand=registeredOwners`), paged by `$top` with `@odata.nextLink`, bearer
//! tokens checked, and throttling (429 with `Retry-After`) on demand.
//! It records every request and counts any sent before a `Retry-After` had passed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// What the simulated tenant holds and how it behaves; tests change it between syncs.
#[derive(Debug, Default)]
pub struct GraphWorld {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Users as Graph returns them (`id`, `userPrincipalName`, `displayName`, ...).
    pub users: Vec<Value>,
    /// User id → manager's user id.
    pub managers: BTreeMap<String, String>,
    /// Group id → member user ids.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Devices as Graph returns them, with their registered owners' user ids.
    pub devices: Vec<(Value, Vec<String>)>,
    /// The next this many Graph requests are throttled.
    pub throttle_next: u32,
    pub retry_after_seconds: u64,
    pub throttled: u32,
    /// Requests that came before the last `Retry-After` had passed.
    pub early_retries: u32,
    /// The tenant's change counter, and which user changed (or was deleted) at each change: what
    /// a delta link answers from.
    version: u64,
    changes: Vec<(u64, String)>,
    retry_not_before: Option<Instant>,
    tokens: Vec<String>,
    pub requests: Vec<String>,
}

pub struct GraphSimulator {
    server: crate::loopback::LoopbackServer,
    pub world: Arc<Mutex<GraphWorld>>,
}

impl GraphWorld {
    /// Gives a user a new manager, as an administrator would in Entra.
    pub fn set_manager(&mut self, user: &str, manager: &str) {
        self.managers.insert(user.to_string(), manager.to_string());
        self.changed(user);
    }

    /// Deletes a user.
    pub fn remove_user(&mut self, user: &str) {
        self.users.retain(|existing| existing["id"] != user);
        self.managers.remove(user);
        self.changed(user);
    }

    fn changed(&mut self, user: &str) {
        self.version += 1;
        self.changes.push((self.version, user.to_string()));
    }

    /// A user as the delta query returns it: its properties and its manager as `manager@delta`.
    fn delta_user(&self, user: &Value) -> Value {
        let mut user = user.clone();
        let id = user["id"].as_str().unwrap_or_default().to_string();
        if let Some(manager) = self.managers.get(&id) {
            user["manager@delta"] = json!([{"@odata.type": "#microsoft.graph.user", "id": manager}]);
        }
        user
    }
}

impl GraphSimulator {
    pub async fn start(world: GraphWorld) -> GraphSimulator {
        let world = Arc::new(Mutex::new(world));
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/v1.0/users", get(users))
            .route("/v1.0/users/delta", get(users_delta))
            .route("/v1.0/groups/{id}/members", get(members))
            .route("/v1.0/devices", get(devices))
            .with_state(Arc::clone(&world));
        GraphSimulator { server: crate::loopback::LoopbackServer::start(router).await, world }
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    pub fn with_world<T>(&self, change: impl FnOnce(&mut GraphWorld) -> T) -> T {
        change(&mut self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

fn identity_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({"error": error, "error_description": description, "error_codes": [], "timestamp": "2026-12-01 00:00:00Z"})))
        .into_response()
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message, "innerError": {"request-id": "sim"}}})))
        .into_response()
}

async fn token(
    State(world): State<Arc<Mutex<GraphWorld>>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    world.requests.push(format!("POST /{tenant}/oauth2/v2.0/token"));
    let form_encoded = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: the request body must be a form",
        );
    }
    if tenant != world.tenant {
        return identity_error(StatusCode::BAD_REQUEST, "invalid_request", "AADSTS90002: Tenant not found.");
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: unsupported grant type",
        );
    }
    if form.get("client_id") != Some(&world.client_id) {
        return identity_error(StatusCode::BAD_REQUEST, "unauthorized_client", "AADSTS700016: Application not found.");
    }
    if form.get("client_secret") != Some(&world.client_secret) {
        return identity_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if form.get("scope").map(String::as_str) != Some(GRAPH_SCOPE) {
        return identity_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let token = format!("sim-token-{}", world.tokens.len() + 1);
    world.tokens.push(token.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))
        .into_response()
}

/// The checks every Graph request meets first: the token, throttling, `$top`. `Some` is the
/// refusal to answer instead.
fn refusal(
    world: &mut GraphWorld,
    headers: &HeaderMap,
    request: String,
    query: &BTreeMap<String, String>,
) -> Option<Response> {
    world.requests.push(request);
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !token.is_some_and(|token| world.tokens.iter().any(|known| known == token)) {
        return Some(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty or invalid.",
        ));
    }
    if world.retry_not_before.is_some_and(|not_before| Instant::now() < not_before) {
        world.early_retries += 1;
    }
    if world.throttle_next > 0 {
        world.throttle_next -= 1;
        world.throttled += 1;
        world.retry_not_before = Some(Instant::now() + Duration::from_secs(world.retry_after_seconds));
        let mut response = graph_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Too many requests.");
        response.headers_mut().insert("retry-after", world.retry_after_seconds.to_string().parse().expect("header"));
        return Some(response);
    }
    if let Some(top) = query.get("$top") {
        if !top.parse::<usize>().is_ok_and(|top| (1..=999).contains(&top)) {
            return Some(graph_error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Invalid page size specified.",
            ));
        }
    }
    None
}

/// One page of `items` per `$top` and `$skiptoken`, with the next link Graph would give.
fn page(base: &str, path: &str, query: &BTreeMap<String, String>, items: Vec<Value>) -> Response {
    Json(page_body(base, path, query, items)).into_response()
}

fn page_body(base: &str, path: &str, query: &BTreeMap<String, String>, items: Vec<Value>) -> Value {
    let top: usize = query.get("$top").and_then(|top| top.parse().ok()).unwrap_or(100);
    let skip: usize = query.get("$skiptoken").and_then(|token| token.parse().ok()).unwrap_or(0);
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let mut body =
        json!({"@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{path}"), "value": value});
    if skip + top < total {
        let mut next: Vec<String> = query
            .iter()
            .filter(|(key, _)| key.as_str() != "$skiptoken")
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        next.push(format!("$skiptoken={}", skip + top));
        body["@odata.nextLink"] = json!(format!("{base}/v1.0/{path}?{}", next.join("&")));
    }
    body
}

fn base_of(headers: &HeaderMap) -> String {
    format!("http://{}", headers.get("host").and_then(|value| value.to_str().ok()).unwrap_or("127.0.0.1"))
}

async fn users(
    State(world): State<Arc<Mutex<GraphWorld>>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(response) = refusal(&mut world, &headers, "GET /v1.0/users".to_string(), &query) {
        return response;
    }
    let expand = query.get("$expand").map(String::as_str);
    if !matches!(expand, None | Some("manager") | Some("manager($select=id)")) {
        return graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", "Invalid $expand.");
    }
    let known =
        ["id", "userPrincipalName", "displayName", "mail", "onPremisesSamAccountName", "accountEnabled", "department"];
    let select: Vec<&str> = query.get("$select").map(|select| select.split(',').collect()).unwrap_or_default();
    if let Some(unknown) = select.iter().find(|field| !known.contains(field) && !field.starts_with("extension_")) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!("Could not find a property named '{unknown}'."),
        );
    }
    let items = world
        .users
        .iter()
        .map(|user| {
            let mut user = user.clone();
            if expand.is_some() {
                let id = user["id"].as_str().unwrap_or_default().to_string();
                if let Some(manager) = world.managers.get(&id) {
                    user["manager"] = json!({"@odata.type": "#microsoft.graph.user", "id": manager});
                }
            }
            user
        })
        .collect();
    page(&base_of(&headers), "users", &query, items)
}

async fn members(
    State(world): State<Arc<Mutex<GraphWorld>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(response) = refusal(&mut world, &headers, format!("GET /v1.0/groups/{id}/members"), &query) {
        return response;
    }
    let Some(members) = world.groups.get(&id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("Resource '{id}' does not exist."),
        );
    };
    let items = members.iter().map(|member| json!({"@odata.type": "#microsoft.graph.user", "id": member})).collect();
    page(&base_of(&headers), &format!("groups/{id}/members"), &query, items)
}

async fn devices(
    State(world): State<Arc<Mutex<GraphWorld>>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(response) = refusal(&mut world, &headers, "GET /v1.0/devices".to_string(), &query) {
        return response;
    }
    let expand = query.get("$expand").is_some_and(|expand| expand.starts_with("registeredOwners"));
    let items = world
        .devices
        .iter()
        .map(|(device, owners)| {
            let mut device = device.clone();
            if expand {
                device["registeredOwners"] = json!(owners
                    .iter()
                    .map(|owner| json!({"@odata.type": "#microsoft.graph.user", "id": owner}))
                    .collect::<Vec<_>>());
            }
            device
        })
        .collect();
    page(&base_of(&headers), "devices", &query, items)
}

async fn users_delta(
    State(world): State<Arc<Mutex<GraphWorld>>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let token = query.get("$deltatoken").cloned();
    let request = if token.is_some() { "GET /v1.0/users/delta (delta link)" } else { "GET /v1.0/users/delta" };
    if let Some(response) = refusal(&mut world, &headers, request.to_string(), &query) {
        return response;
    }
    if query.contains_key("$expand") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "$expand is not supported with delta.",
        );
    }
    let base = base_of(&headers);
    let delta_link = json!(format!("{base}/v1.0/users/delta?$deltatoken={}", world.version));
    match token {
        Some(token) => {
            let Ok(since) = token.parse::<u64>() else {
                return graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", "The delta token is not valid.");
            };
            let mut changed: Vec<&String> =
                world.changes.iter().filter(|(version, _)| *version > since).map(|(_, user)| user).collect();
            changed.sort();
            changed.dedup();
            let value: Vec<Value> = changed
                .into_iter()
                .map(|id| match world.users.iter().find(|user| user["id"] == id.as_str()) {
                    Some(user) => world.delta_user(user),
                    None => json!({"id": id, "@removed": {"reason": "deleted"}}),
                })
                .collect();
            Json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users", "value": value, "@odata.deltaLink": delta_link}))
                .into_response()
        }
        None => {
            // The enumeration pages like any list; its last page ends the round with the delta link.
            let users: Vec<Value> = world.users.iter().map(|user| world.delta_user(user)).collect();
            let mut body = page_body(&base, "users/delta", &query, users);
            if body.get("@odata.nextLink").is_none() {
                body["@odata.deltaLink"] = delta_link;
            }
            Json(body).into_response()
        }
    }
}
