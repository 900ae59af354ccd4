//! The HTTP API: `POST /api/v1/alerts`, `GET /api/v1/cases[/{id}]`, `GET /healthz`, `GET /metrics`.
//!
//! Every answer to bad input is a 4xx with a JSON body saying what is wrong; the store is touched
//! only by a request that passed every check, and a 202 is sent only once the alert is on disk.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vouch_config::Secret;
use vouch_playbook::engine::{Confirmer, ScenarioAssessment};
use vouch_playbook::normalize::{normalize, FieldProblem};
use vouch_playbook::{AlertFormat, Case, CaseId};
use vouch_storage::{AuditRecord, StorageError};

use crate::service::Arrived;

use crate::auth::{bearer_matches, verify_signature};
use crate::case_pages::{CasesQuery, EventsQuery};
use crate::metrics::Metrics;
use crate::service::Service;

/// What the handlers share.
pub struct AppState {
    pub service: Arc<Service>,
    /// Whether this replica leads (runs the work that acts on the outside world).
    pub leadership: Arc<crate::leadership::LeadershipStatus>,
    pub directory: Arc<crate::directory_sync::DirectoryKeeper>,
    pub token: Secret,
    pub signing_secrets: Vec<Secret>,
    pub max_body_bytes: usize,
    pub metrics: Metrics,
    /// Signed message ids seen within the signature window, so a captured request cannot be
    /// sent again while its timestamp is still fresh.
    pub seen_signatures: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// A request that has not arrived whole within this time is answered 408 (a slow-body sender
/// cannot hold a connection open forever).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many signed message ids are remembered; past it, the oldest are forgotten first.
const SEEN_SIGNATURES_MAX: usize = 100_000;

/// One error type for the API, mapped to a status and a plain JSON body. Details of internal
/// failures are logged, not sent.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized(String),
    UnsupportedMediaType,
    BadRequest(String, Vec<FieldProblem>),
    NotFound(String),
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthorized(reason) => (StatusCode::UNAUTHORIZED, json!({"error": reason})),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": "send the alert as JSON with Content-Type: application/json"}),
            ),
            ApiError::BadRequest(reason, problems) => {
                (StatusCode::BAD_REQUEST, json!({"error": reason, "problems": problems}))
            }
            ApiError::NotFound(reason) => (StatusCode::NOT_FOUND, json!({"error": reason})),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the store cannot accept writes right now; retry later"}),
            ),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// Builds the router. Tests drive it on a real socket; `cli` serves it.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let authenticated = Router::new()
        .route("/api/v1/alerts", post(receive_alert))
        .route("/api/v1/cases", get(list_cases))
        .route("/api/v1/cases/{id}", get(get_case))
        .route("/api/v1/cases/{id}/events", get(case_events))
        .route("/api/v1/directory/sync", post(sync_directory))
        .route("/api/v1/identity/links", get(identity_links))
        .route("/api/v1/advance", get(advance_vouches))
        // Authentication runs before the body is read, so an unauthenticated sender cannot make
        // the server buffer anything.
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_bearer))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count_refusals));
    Router::new().route("/healthz", get(health)).route("/metrics", get(metrics)).merge(authenticated).with_state(state)
}

/// Healthy unless the store has failed and is not reopened yet (a full disk, say): then 503, so
/// a supervisor or load balancer sees what the senders of alerts see.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let role = if state.leadership.leads() { "leader" } else { "standby" };
    if state.service.store.is_failed() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "store_failed", "role": role}))).into_response()
    } else {
        Json(json!({
            "status": "ok",
            "role": role,
            "leader_epoch": state.leadership.epoch(),
            "store_reopened": state.service.store.reopen_count(),
        }))
        .into_response()
    }
}

async fn require_bearer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if bearer_matches(header, &state.token) {
        next.run(request).await
    } else {
        ApiError::Unauthorized("missing or wrong bearer token".to_string()).into_response()
    }
}

/// Counts every refused API request by status, wherever it was refused (auth, body limit,
/// extractor or handler).
async fn count_refusals(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        state.metrics.request_refused(response.status().as_u16());
    }
    response
}

#[derive(Debug, Deserialize)]
struct AlertQuery {
    format: Option<String>,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| {
            let media = media.trim().to_ascii_lowercase();
            media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn receive_alert(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AlertQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    accept_alert(&state, query, &headers, body).await
}

async fn accept_alert(
    state: &AppState,
    query: AlertQuery,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !state.signing_secrets.is_empty() {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        verify_signature(
            &state.signing_secrets,
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
            state.service.clock.now().unix_millis() / 1000,
        )
        .map_err(|error| ApiError::Unauthorized(error.to_string()))?;
        let id = header("webhook-id").unwrap_or_default().to_string();
        let now_seconds = state.service.clock.now().unix_millis() / 1000;
        let mut seen = state.seen_signatures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.retain(|_, at| now_seconds - *at <= crate::auth::SIGNATURE_TOLERANCE_SECONDS * 2);
        if seen.contains_key(&id) {
            return Err(ApiError::Unauthorized("this webhook-id was already received: a replayed request".to_string()));
        }
        if seen.len() >= SEEN_SIGNATURES_MAX {
            if let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(id, _)| id.clone()) {
                seen.remove(&oldest);
            }
        }
        seen.insert(id, now_seconds);
    }
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let format = match query.format.as_deref() {
        Some(name) => Some(AlertFormat::from_id(name).ok_or_else(|| {
            ApiError::BadRequest(
                "unknown format".to_string(),
                vec![FieldProblem::new("", "format must be one of native, ecs, ocsf, splunk, windows")],
            )
        })?),
        None => None,
    };
    let payload: Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest("the body is not valid JSON".to_string(), vec![FieldProblem::new("", error.to_string())])
    })?;
    let now = state.service.clock.now();
    let alert = normalize(&payload, format, now)
        .map_err(|problems| ApiError::BadRequest("the alert has problems".to_string(), problems))?;
    let format_id = alert.format.id();
    let arrived = state.service.ingest_durably(alert, now).await.map_err(|error| store_unavailable(state, &error))?;
    let ingested = match arrived {
        Arrived::Recorded(ingested) => ingested,
        Arrived::NotAMovement(not_a_movement) => {
            state.metrics.not_a_movement(format_id, not_a_movement.kind.id());
            tracing::info!(format = format_id, why = not_a_movement.kind.id(), "alert is not a lateral movement");
            let body = json!({
                "status": "not_lateral_movement",
                "why": not_a_movement.kind,
                "reason": not_a_movement.reason,
            });
            return Ok((StatusCode::OK, Json(body)).into_response());
        }
    };
    let status = serde_json::to_value(ingested.status).unwrap_or(Value::Null);
    state.metrics.alert_accepted(format_id, status.as_str().unwrap_or("unknown"));
    tracing::info!(case_id = %ingested.case_id, status = %status, format = format_id, "alert accepted");
    if ingested.for_dispatcher {
        // The effects are queued in the store with the case; the dispatcher carries them out.
        state.service.effects_ready.notify_one();
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"case_id": ingested.case_id, "status": status}))).into_response())
}

fn store_unavailable(state: &AppState, error: &StorageError) -> ApiError {
    state.metrics.store_failed();
    tracing::error!(error = %error, "the store refused a write");
    ApiError::Unavailable
}

/// How much of its audit trail a case's view carries; `events_next` links to the rest.
const EVENTS_WITH_CASE: usize = 200;

/// A page of cases, newest first, with the link to the next (`null` after the last).
async fn list_cases(State(state): State<Arc<AppState>>, Query(query): Query<CasesQuery>) -> Result<Response, ApiError> {
    let asked = query
        .compile()
        .map_err(|problems| ApiError::BadRequest("the case query has problems".to_string(), problems))?;
    let service = Arc::clone(&state.service);
    let page = tokio::task::spawn_blocking(move || service.store.case_page(&asked.filter, asked.before, asked.limit))
        .await
        .map_err(|_| ApiError::Unavailable)?
        .map_err(|error| store_unavailable(&state, &error))?;
    let next = page.next_before.map(|before| query.next_link(before.number()));
    Ok(Json(json!({"cases": page.cases, "next": next})).into_response())
}

/// A page of one case's audit trail, in order, with the link to the next.
async fn case_events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let case_id: CaseId = id.parse().map_err(|reason: String| ApiError::NotFound(reason))?;
    let (after, limit) = query
        .compile()
        .map_err(|problems| ApiError::BadRequest("the events query has problems".to_string(), problems))?;
    let service = Arc::clone(&state.service);
    let found = tokio::task::spawn_blocking(move || {
        service.store.case(case_id)?;
        service.store.case_audit_page(case_id, after, limit)
    })
    .await
    .map_err(|_| ApiError::Unavailable)?;
    let (records, next) = match found {
        Ok(page) => page,
        Err(StorageError::NoSuchCase(_)) => return Err(ApiError::NotFound(format!("there is no case {case_id}"))),
        Err(error) => return Err(store_unavailable(&state, &error)),
    };
    let next = next.map(|seq| query.next_link(case_id, seq));
    Ok(Json(json!({"events": records, "next": next})).into_response())
}

/// The Discord accounts bound to people with `/link`, and the link requests still waiting on a
/// push.
async fn identity_links(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let service = Arc::clone(&state.service);
    let (links, pending) = tokio::task::spawn_blocking(move || {
        Ok::<_, StorageError>((service.store.identity_links()?, service.store.pending_links()?))
    })
    .await
    .map_err(|_| ApiError::Unavailable)?
    .map_err(|error| store_unavailable(&state, &error))?;
    Ok(Json(json!({"links": links, "pending": pending})).into_response())
}

/// The vouches given in advance (standing approvals, declarations), and those asked for and
/// still waiting on their push.
async fn advance_vouches(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let service = Arc::clone(&state.service);
    let (vouches, pending) = tokio::task::spawn_blocking(move || {
        Ok::<_, StorageError>((service.store.advance_vouches()?, service.store.pending_advances()?))
    })
    .await
    .map_err(|_| ApiError::Unavailable)?
    .map_err(|error| store_unavailable(&state, &error))?;
    Ok(Json(json!({"vouches": vouches, "pending": pending})).into_response())
}

async fn get_case(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let case_id: CaseId = id.parse().map_err(|message: String| {
        ApiError::BadRequest("bad case id".to_string(), vec![FieldProblem::new("", message)])
    })?;
    let service = Arc::clone(&state.service);
    let found = tokio::task::spawn_blocking(move || {
        let case = service.store.case(case_id)?;
        // The first page of its audit trail; a storm case's thousands of records page on.
        let events = service.store.case_audit_page(case_id, None, EVENTS_WITH_CASE)?;
        let undelivered = service.store.undelivered(case_id)?;
        Ok::<_, StorageError>((case, events, undelivered))
    })
    .await
    .map_err(|_| ApiError::Unavailable)?;
    match found {
        Ok((case, (events, next), undelivered)) => {
            let mut view = case_view(&case, &events);
            view["undelivered_effects"] = json!(undelivered);
            view["events_next"] = json!(next.map(|seq| EventsQuery::default().next_link(case_id, seq)));
            Ok(Json(view).into_response())
        }
        Err(StorageError::NoSuchCase(id)) => Err(ApiError::NotFound(format!("case {id} does not exist"))),
        Err(error) => Err(store_unavailable(&state, &error)),
    }
}

/// The case as the API shows it: the engine's view plus the audit trail.
pub fn case_view(case: &Case, events: &[AuditRecord]) -> Value {
    let current = case.confirmation.current;
    let confirmers: Vec<Value> = case
        .confirmation
        .chain
        .iter()
        .enumerate()
        .map(|(index, confirmer)| {
            let status = match current {
                Some(asked) if asked == index => "asked",
                Some(asked) if asked > index => "passed",
                _ => "not_asked",
            };
            let (person, role) = match confirmer {
                Confirmer::Person { person, role } => (Some(person), Some(role)),
                Confirmer::Soc => (None, None),
            };
            let verdicts: Vec<&vouch_playbook::engine::RecordedVerdict> =
                case.confirmation.verdicts.iter().filter(|verdict| &verdict.confirmer == confirmer).collect();
            json!({
                "who": confirmer.label(),
                "person": person,
                "role": role,
                "status": status,
                "answers": verdicts,
            })
        })
        .collect();
    let scenarios: Vec<Value> = case
        .opening
        .scenarios
        .iter()
        .map(|scenario: &ScenarioAssessment| {
            json!({"id": scenario.id, "title": scenario.title, "matched": scenario.matched(), "verdict": scenario.verdict, "evidence": scenario.evidence})
        })
        .collect();
    let hints: serde_json::Map<String, Value> = case
        .opening
        .hints
        .iter()
        .map(|hint| {
            (
                hint.question.to_string(),
                json!({"prompt": hint.prompt, "suggested": hint.suggested, "evidence": hint.evidence}),
            )
        })
        .collect();
    json!({
        "id": case.id,
        "state": case.state.id(),
        "playbook_version": case.playbook_version,
        "opened_at": case.opened_at,
        "updated_at": case.updated_at,
        "alert": case.alert(),
        "alert_count": case.alert_count,
        "last_alert_at": case.last_alert_at,
        "account_kind": case.opening.account_kind,
        "facts": case.facts,
        "scenarios": scenarios,
        "hints": hints,
        "concerns": case.opening.concerns,
        "history": case.opening.history,
        "confirmers": confirmers,
        "reminder_due_at": case.confirmation.deadline,
        "answers": case.answers,
        "escalation": case.escalation,
        "resolution": case.resolution,
        "pending_verification": case.pending_verification,
        "push_denied": case.push_denied,
        "advance": case.advance,
        "close_asked_by": case.close_asked_by,
        "events": events,
    })
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let service = Arc::clone(&state.service);
    let counts = tokio::task::spawn_blocking(move || service.store.case_counts()).await;
    let counts = match counts {
        Ok(Ok(counts)) => counts,
        _ => Vec::new(),
    };
    let memory = crate::memory::allocator_statistics();
    let mut text = state.metrics.render(&counts, state.service.store.flush_stats(), memory);
    text.push_str(&state.directory.render_metrics());
    text.push_str(&state.leadership.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Debug, Deserialize)]
struct SyncQuery {
    source: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    full: bool,
}

/// Syncs the directory now (every source, or `?source=`), as the schedule would; `?dry_run=true`
/// only says what would change, `?full=true` reads the sources whole (deletions are seen then).
/// Answers each source's outcome.
async fn sync_directory(
    State(state): State<Arc<AppState>>,
    Query(query): Query<SyncQuery>,
) -> Result<Response, ApiError> {
    if let Some(name) = &query.source {
        if !state.directory.sources().iter().any(|source| &source.name == name) {
            return Err(ApiError::BadRequest(
                "unknown source".to_string(),
                vec![FieldProblem::new("", format!("no directory source is named `{name}`"))],
            ));
        }
    }
    let now = state.service.clock.now();
    // The sync runs to its end even if the caller hangs up: a sync stopped between storing a
    // snapshot and putting the directory in use would leave the two apart.
    let keeper = Arc::clone(&state.directory);
    let outcomes = tokio::spawn(async move {
        let request = crate::directory_sync::SyncRequest {
            source: query.source.as_deref(),
            dry_run: query.dry_run,
            full: query.full,
        };
        keeper.sync(request, now).await
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "the directory sync stopped before its end");
        ApiError::Unavailable
    })?;
    // A first load changes every entry: the answer counts them and lists the first ones, the
    // audit log holds the rest.
    let sources: Vec<Value> = outcomes
        .into_iter()
        .map(|(source, outcome)| match outcome {
            crate::directory_sync::SyncOutcome::Applied(changes) => {
                json!({"source": source, "outcome": "applied", "change_count": changes.len(), "changes": changes.listed()})
            }
            crate::directory_sync::SyncOutcome::WouldApply(changes) => {
                json!({"source": source, "outcome": "dry_run", "change_count": changes.len(), "changes": changes.listed()})
            }
            crate::directory_sync::SyncOutcome::Refused(reason) => {
                json!({"source": source, "outcome": "refused", "reason": reason})
            }
        })
        .collect();
    Ok(Json(json!({"sources": sources})).into_response())
}
