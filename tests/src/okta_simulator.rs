//! Okta's management API for Okta Verify push on 127.0.0.1, answering as Okta's OpenAPI
//! description documents: `GET /api/v1/users/{id or login}`, `GET /api/v1/users/{userId}/factors`,
//! `POST /api/v1/users/{userId}/factors/{factorId}/verify` (a push challenge, answered 201
//! `WAITING` with a poll link, and with `_embedded.challenge.correctAnswer` when the request asks
//! for number matching) and `GET …/transactions/{transactionId}` (`WAITING`, then `SUCCESS`,
//! `REJECTED` or `TIMEOUT`).
//!
//! Requests are checked as Okta does: `Authorization: SSWS <API token>`, a `User-Agent` on push
//! verification, a verify body that is empty or `{"useNumberMatchingChallenge": true}`; errors
//! come in Okta's shape (`errorCode`, `errorSummary`, `errorId`, `errorCauses`). Faults on demand:
//! 5xx, malformed bodies, a poll link on another host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub use crate::duo_simulator::PushAnswer;

/// A user of the simulated organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaUser {
    pub id: String,
    pub login: String,
    /// `ACTIVE`, `SUSPENDED`, `DEPROVISIONED`, …
    pub status: String,
    /// Has an active Okta Verify push factor (else only a TOTP factor).
    pub push_enrolled: bool,
    /// How they answer a push, on which status poll (1: the first).
    pub answer: PushAnswer,
    pub on_poll: u32,
}

impl OktaUser {
    pub fn active(id: &str, login: &str, answer: PushAnswer) -> OktaUser {
        OktaUser {
            id: id.to_string(),
            login: login.to_string(),
            status: "ACTIVE".to_string(),
            push_enrolled: true,
            answer,
            on_poll: 2,
        }
    }

    fn push_factor_id(&self) -> String {
        format!("opf{}", self.id.trim_start_matches("00u"))
    }
}

/// A fault the next requests meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OktaFault {
    ServerError,
    Malformed,
}

/// One request the simulator accepted: method, path and JSON body (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct OktaRequest {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
}

#[derive(Debug, Default)]
pub struct OktaWorld {
    pub api_token: String,
    pub users: Vec<OktaUser>,
    pub faults: Vec<OktaFault>,
    pub requests: Vec<OktaRequest>,
    pub refused_tokens: u32,
    /// The next push challenge answers with a poll link on another host.
    pub foreign_poll_link_next: bool,
    /// The number the last number-matching challenge asked for.
    pub last_number: Option<u32>,
    /// Transaction id → (user id, polls so far).
    transactions: BTreeMap<String, (String, u32)>,
}

pub struct OktaSimulator {
    server: crate::loopback::LoopbackServer,
    pub world: Arc<Mutex<OktaWorld>>,
}

impl OktaSimulator {
    pub async fn start(world: OktaWorld) -> OktaSimulator {
        let world = Arc::new(Mutex::new(world));
        let router = Router::new()
            .route("/api/v1/users/{user}", get(user))
            .route("/api/v1/users/{user}/factors", get(factors))
            .route("/api/v1/users/{user}/factors/{factor}/verify", post(verify))
            .route("/api/v1/users/{user}/factors/{factor}/transactions/{transaction}", get(transaction))
            .with_state(Arc::clone(&world));
        OktaSimulator { server: crate::loopback::LoopbackServer::start(router).await, world }
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, OktaWorld> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn error(status: StatusCode, code: &str, summary: &str) -> Response {
    (
        status,
        Json(json!({"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oaeSimulated0000", "errorCauses": []})),
    )
        .into_response()
}

/// The checks every request meets, and the fault it may meet instead: the answer to give now,
/// or `None` to go on. Records the request when its token is accepted.
fn admit(
    world: &mut OktaWorld,
    headers: &HeaderMap,
    method: &str,
    path: String,
    body: Option<Value>,
) -> Option<Response> {
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("SSWS "));
    if token != Some(world.api_token.as_str()) {
        world.refused_tokens += 1;
        return Some(error(StatusCode::UNAUTHORIZED, "E0000011", "Invalid token provided"));
    }
    world.requests.push(OktaRequest { method: method.to_string(), path, body });
    match (!world.faults.is_empty()).then(|| world.faults.remove(0)) {
        Some(OktaFault::ServerError) => {
            Some(error(StatusCode::INTERNAL_SERVER_ERROR, "E0000009", "Internal Server Error"))
        }
        Some(OktaFault::Malformed) => Some((StatusCode::OK, "{\"factorResult\": ").into_response()),
        None => None,
    }
}

fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, "E0000007", &format!("Not found: Resource not found: {what} (User)"))
}

async fn user(State(world): State<Arc<Mutex<OktaWorld>>>, Path(user): Path<String>, headers: HeaderMap) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(answer) = admit(&mut world, &headers, "GET", format!("/api/v1/users/{user}"), None) {
        return answer;
    }
    match world.users.iter().find(|known| known.id == user || known.login.eq_ignore_ascii_case(&user)) {
        Some(found) => Json(json!({
            "id": found.id,
            "status": found.status,
            "profile": {"login": found.login, "email": found.login},
            "_links": {"self": {"href": format!("/api/v1/users/{}", found.id)}}
        }))
        .into_response(),
        None => not_found(&user),
    }
}

async fn factors(State(world): State<Arc<Mutex<OktaWorld>>>, Path(user): Path<String>, headers: HeaderMap) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(answer) = admit(&mut world, &headers, "GET", format!("/api/v1/users/{user}/factors"), None) {
        return answer;
    }
    let Some(found) = world.users.iter().find(|known| known.id == user) else { return not_found(&user) };
    let mut listed = vec![
        json!({"id": "uft1totp0000", "factorType": "token:software:totp", "provider": "GOOGLE", "status": "ACTIVE"}),
    ];
    if found.push_enrolled {
        listed.push(json!({"id": found.push_factor_id(), "factorType": "push", "provider": "OKTA", "status": "ACTIVE", "profile": {"credentialId": found.login}}));
    }
    Json(Value::Array(listed)).into_response()
}

async fn verify(
    State(world): State<Arc<Mutex<OktaWorld>>>,
    Path((user, factor)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => Some(value),
            Err(_) => return error(StatusCode::BAD_REQUEST, "E0000003", "The request body was not well-formed."),
        }
    };
    let path = format!("/api/v1/users/{user}/factors/{factor}/verify");
    if let Some(answer) = admit(&mut world, &headers, "POST", path, parsed.clone()) {
        return answer;
    }
    if headers.get("user-agent").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "E0000001",
            "Api validation failed: User-Agent is required to verify a push factor",
        );
    }
    let number_matching = match &parsed {
        None => false,
        Some(value) if *value == json!({"useNumberMatchingChallenge": true}) => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: a push challenge takes no passCode",
            )
        }
    };
    let Some(found) = world.users.iter().find(|known| known.id == user).cloned() else { return not_found(&user) };
    if !found.push_enrolled || found.push_factor_id() != factor {
        return error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {factor} (UserFactor)"),
        );
    }
    let transaction = format!("v2mst.sim{:06}", world.transactions.len() + 1);
    world.transactions.insert(transaction.clone(), (user.clone(), 0));
    let host = if std::mem::take(&mut world.foreign_poll_link_next) {
        "http://127.0.0.2:9".to_string()
    } else {
        format!("http://{}", headers.get("host").and_then(|value| value.to_str().ok()).unwrap_or("127.0.0.1"))
    };
    let href = format!("{host}/api/v1/users/{user}/factors/{factor}/transactions/{transaction}");
    let mut answer = json!({
        "expiresAt": "2026-12-02T00:05:00.000Z",
        "factorResult": "WAITING",
        "_links": {
            "poll": {"href": href, "hints": {"allow": ["GET"]}},
            "cancel": {"href": href, "hints": {"allow": ["DELETE"]}}
        }
    });
    if number_matching {
        let number = 10 + (world.transactions.len() as u32 * 37) % 90;
        world.last_number = Some(number);
        answer["_embedded"] = json!({"challenge": {"correctAnswer": number}});
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn transaction(
    State(world): State<Arc<Mutex<OktaWorld>>>,
    Path((user, factor, transaction)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = format!("/api/v1/users/{user}/factors/{factor}/transactions/{transaction}");
    if let Some(answer) = admit(&mut world, &headers, "GET", path, None) {
        return answer;
    }
    let Some((owner, polls)) = world.transactions.get_mut(&transaction) else {
        return error(StatusCode::NOT_FOUND, "E0000007", "Not found: Resource not found: transaction (Transaction)");
    };
    if *owner != user {
        return error(StatusCode::NOT_FOUND, "E0000007", "Not found: Resource not found: transaction (Transaction)");
    }
    *polls += 1;
    let polls = *polls;
    let Some(found) = world.users.iter().find(|known| known.id == user) else { return not_found(&user) };
    if polls < found.on_poll {
        return Json(json!({"expiresAt": "2026-12-02T00:05:00.000Z", "factorResult": "WAITING", "profile": {"credentialId": found.login}}))
            .into_response();
    }
    let result = match found.answer {
        PushAnswer::Approve => "SUCCESS",
        // Okta Verify's "No, it's not me" rejects the push.
        PushAnswer::Deny | PushAnswer::Fraud => "REJECTED",
        PushAnswer::Timeout => "TIMEOUT",
    };
    Json(json!({"factorResult": result, "profile": {"credentialId": found.login}})).into_response()
}
