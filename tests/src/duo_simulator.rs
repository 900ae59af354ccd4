//! Duo's Auth API v2 on 127.0.0.1, checking requests the way Duo documents it does: HTTP Basic
//! credentials of the integration key and an HMAC-SHA512 hex signature of the
//! canonical request, recomputed here from what arrived (the `Date` header, method, `Host`
//! header, path, and the parameters decoded and encoded again in canonical form), a `Date` within
//! five minutes, POST parameters form-encoded. Errors come in Duo's shape
//! (`{"stat": "FAIL", "code", "message", "message_detail"}`).
//!
//! Serves `preauth`, `auth` (push, `async=1` only) and `auth_status`, with users whose push is
//! approved, denied, reported as fraud or left to time out after a number of polls, users Duo
//! lets in without a second factor, users without a push device, and faults on demand (5xx,
//! malformed bodies, slow answers). It records every request it accepted and counts those whose
//! signature it refused.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// How a user answers a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    Approve,
    Deny,
    /// "This wasn't me": Duo's `fraud` status.
    Fraud,
    /// Never answered: Duo's `timeout` status.
    Timeout,
}

/// A user as the simulated Duo account knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuoUser {
    /// Has a phone that takes pushes, and answers on the given status poll (1: the first).
    Push { answer: PushAnswer, on_poll: u32 },
    /// Duo lets them in without a second factor (`preauth` answers `allow`).
    Bypass,
    /// Duo denies them (`preauth` answers `deny`).
    Denied,
    /// Enrolled with a device that takes no pushes (a hardware token).
    NoPushDevice,
}

/// A fault the next requests meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuoFault {
    ServerError,
    /// An answer that is not Duo's JSON.
    Malformed,
    /// An answer that only comes after this long.
    Slow(Duration),
}

/// One request the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuoRequest {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct DuoWorld {
    pub integration_key: String,
    pub secret_key: String,
    pub users: BTreeMap<String, DuoUser>,
    /// Faults for the next requests, first first.
    pub faults: Vec<DuoFault>,
    pub requests: Vec<DuoRequest>,
    pub refused_signatures: u32,
    /// Transaction id → (user, status polls so far).
    transactions: BTreeMap<String, (String, u32)>,
}

pub struct DuoSimulator {
    server: crate::loopback::LoopbackServer,
    pub world: Arc<Mutex<DuoWorld>>,
}

impl DuoSimulator {
    pub async fn start(world: DuoWorld) -> DuoSimulator {
        let world = Arc::new(Mutex::new(world));
        let router = Router::new()
            .route("/auth/v2/preauth", post(call))
            .route("/auth/v2/auth", post(call))
            .route("/auth/v2/auth_status", get(call))
            .with_state(Arc::clone(&world));
        DuoSimulator { server: crate::loopback::LoopbackServer::start(router).await, world }
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, DuoWorld> {
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn fail(status: StatusCode, code: u32, message: &str, detail: Option<&str>) -> Response {
    let mut body = json!({"stat": "FAIL", "code": code, "message": message});
    if let Some(detail) = detail {
        body["message_detail"] = json!(detail);
    }
    (status, Json(body)).into_response()
}

fn ok(response: Value) -> Response {
    Json(json!({"stat": "OK", "response": response})).into_response()
}

/// Percent-encoding as Duo canonicalizes: unreserved characters stay, other bytes `%XX`.
fn duo_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` text (also a query string) into pairs.
fn form_pairs(text: &str) -> Option<Vec<(String, String)>> {
    fn decode(part: &str) -> Option<String> {
        let bytes = part.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    index += 2;
                }
                byte => out.push(byte),
            }
            index += 1;
        }
        String::from_utf8(out).ok()
    }
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split('&')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(key)?, decode(value)?))
        })
        .collect()
}

/// The hex HMAC-SHA512 signature Duo expects for a canonical request. (Duo also accepts the
/// older HMAC-SHA1; Vouch never sends it, so the simulator refuses it.)
fn expected_signature(secret_key: &str, canonical: &str) -> String {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret_key.as_bytes()).expect("any key");
    mac.update(canonical.as_bytes());
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn call(
    State(world): State<Arc<Mutex<DuoWorld>>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (!world.faults.is_empty()).then(|| world.faults.remove(0))
    };
    match fault {
        Some(DuoFault::ServerError) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "<html>Internal Server Error</html>").into_response()
        }
        Some(DuoFault::Malformed) => return (StatusCode::OK, "{\"stat\": \"OK\", \"response\": ").into_response(),
        Some(DuoFault::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_string);
    // POST parameters are form-encoded in the body; GET parameters are in the query.
    let text = if method == Method::POST {
        if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
            return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", Some("Content-Type"));
        }
        String::from_utf8_lossy(&body).into_owned()
    } else {
        query.unwrap_or_default()
    };
    let Some(pairs) = form_pairs(&text) else {
        return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", None);
    };
    let mut encoded: Vec<(String, String)> =
        pairs.iter().map(|(key, value)| (duo_encode(key), duo_encode(value))).collect();
    encoded.sort();
    let canonical_params = encoded.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join("&");

    let mut world = world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The Date must be there, in RFC 2822 form, and within five minutes of now.
    let Some(date) = header("date") else {
        world.refused_signatures += 1;
        return fail(StatusCode::UNAUTHORIZED, 40101, "Missing request credentials", Some("Date"));
    };
    let fresh = chrono::DateTime::parse_from_rfc2822(&date)
        .is_ok_and(|at| (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_seconds().abs() <= 300);
    if !fresh {
        world.refused_signatures += 1;
        return fail(StatusCode::UNAUTHORIZED, 40105, "Request has expired", Some("Date"));
    }
    let credentials = header("authorization")
        .and_then(|value| value.strip_prefix("Basic ").map(str::to_string))
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|text| text.split_once(':').map(|(key, signature)| (key.to_string(), signature.to_string())));
    let Some((integration_key, signature)) = credentials else {
        world.refused_signatures += 1;
        return fail(StatusCode::UNAUTHORIZED, 40101, "Missing request credentials", None);
    };
    if integration_key != world.integration_key {
        world.refused_signatures += 1;
        return fail(StatusCode::UNAUTHORIZED, 40102, "Invalid integration key in request credentials", None);
    }
    let host = header("host").unwrap_or_default().to_ascii_lowercase();
    let canonical = [date.as_str(), method.as_str(), host.as_str(), uri.path(), canonical_params.as_str()].join("\n");
    if signature != expected_signature(&world.secret_key, &canonical) {
        world.refused_signatures += 1;
        return fail(StatusCode::UNAUTHORIZED, 40103, "Invalid signature in request credentials", None);
    }

    let params: BTreeMap<String, String> = pairs.into_iter().collect();
    world.requests.push(DuoRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        params: params.clone(),
    });
    let missing = |name: &str| fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", Some(name));
    match uri.path() {
        "/auth/v2/preauth" => {
            let Some(username) = params.get("username") else { return missing("username") };
            match world.users.get(username) {
                None => ok(
                    json!({"result": "enroll", "status_msg": "Enroll an authentication device to proceed", "enroll_portal_url": "https://127.0.0.1/portal"}),
                ),
                Some(DuoUser::Bypass) => ok(json!({"result": "allow", "status_msg": "Allowing unknown user"})),
                Some(DuoUser::Denied) => ok(json!({"result": "deny", "status_msg": "Your account is disabled"})),
                Some(DuoUser::NoPushDevice) => {
                    ok(json!({"result": "auth", "status_msg": "Account is active", "devices": [
                        {"device": "DPFZRS9FB0D46QFTM891", "type": "token", "capabilities": ["mobile_otp"]}
                    ]}))
                }
                Some(DuoUser::Push { .. }) => {
                    ok(json!({"result": "auth", "status_msg": "Account is active", "devices": [
                        {"device": "DPFZRS9FB0D46QFTM890", "type": "phone", "number": "XXX-XXX-0100", "name": "", "capabilities": ["auto", "push", "sms", "phone", "mobile_otp"]}
                    ]}))
                }
            }
        }
        "/auth/v2/auth" => {
            let Some(username) = params.get("username").cloned() else { return missing("username") };
            if params.get("factor").map(String::as_str) != Some("push") {
                return missing("factor");
            }
            if params.get("async").map(String::as_str) != Some("1") {
                return missing("async");
            }
            if !matches!(world.users.get(&username), Some(DuoUser::Push { .. })) {
                return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", Some("username"));
            }
            let txid = format!("45f7c92b-f45f-4862-8545-{:012}", world.transactions.len() + 1);
            world.transactions.insert(txid.clone(), (username, 0));
            ok(json!({"txid": txid}))
        }
        "/auth/v2/auth_status" => {
            let Some(txid) = params.get("txid").cloned() else { return missing("txid") };
            let Some((username, polls)) = world.transactions.get_mut(&txid) else {
                return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", Some("txid"));
            };
            *polls += 1;
            let (username, polls) = (username.clone(), *polls);
            let Some(DuoUser::Push { answer, on_poll }) = world.users.get(&username).copied() else {
                return fail(StatusCode::BAD_REQUEST, 40002, "Invalid request parameters", Some("txid"));
            };
            if polls < on_poll {
                return ok(
                    json!({"result": "waiting", "status": "pushed", "status_msg": "Pushed a login request to your device..."}),
                );
            }
            match answer {
                PushAnswer::Approve => {
                    ok(json!({"result": "allow", "status": "allow", "status_msg": "Success. Logging you in..."}))
                }
                PushAnswer::Deny => {
                    ok(json!({"result": "deny", "status": "deny", "status_msg": "Login request denied."}))
                }
                PushAnswer::Fraud => {
                    ok(json!({"result": "deny", "status": "fraud", "status_msg": "Fraudulent login request reported."}))
                }
                PushAnswer::Timeout => {
                    ok(json!({"result": "deny", "status": "timeout", "status_msg": "Login timed out."}))
                }
            }
        }
        _ => fail(StatusCode::NOT_FOUND, 40401, "Resource not found", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's own check agrees with the signature Duo publishes for its client
    /// libraries (HMAC-SHA512 over a host and method in mixed case, non-ASCII parameters), so
    /// it holds Vouch to Duo's rule, not to Vouch's reading of it.
    #[test]
    fn the_published_signature_is_accepted() {
        let pairs = [
            (
                "\u{469a}\u{287b}\u{35d0}\u{8ef3}\u{6727}\u{502a}\u{0810}\u{d091}\u{c8}\u{c170}",
                "\u{0f45}\u{1a76}\u{341a}\u{654c}\u{c23f}\u{9b09}\u{abe2}\u{8343}\u{1b27}\u{60d0}",
            ),
            (
                "\u{7449}\u{7e4b}\u{ccfb}\u{59ff}\u{fe5f}\u{83b7}\u{adcc}\u{900c}\u{cfd1}\u{7813}",
                "\u{8db7}\u{5022}\u{92d3}\u{42ef}\u{207d}\u{8730}\u{acfe}\u{5617}\u{0946}\u{4e30}",
            ),
            (
                "\u{7470}\u{9314}\u{901c}\u{9eae}\u{40d8}\u{4201}\u{82d8}\u{8c70}\u{1d31}\u{a042}",
                "\u{17d9}\u{0ba8}\u{9358}\u{aadf}\u{a42a}\u{48be}\u{fb96}\u{6fe9}\u{b7ff}\u{32f3}",
            ),
            (
                "\u{c2c5}\u{2c1d}\u{2620}\u{3617}\u{96b3}F\u{8605}\u{20e8}\u{ac21}\u{5934}",
                "\u{fba9}\u{41aa}\u{bd83}\u{840b}\u{2615}\u{3e6e}\u{652d}\u{a8b5}\u{d56b}U",
            ),
        ];
        let body: String = pairs
            .iter()
            .map(|(key, value)| format!("{}={}", duo_encode(key), duo_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let decoded = form_pairs(&body).expect("form");
        let mut encoded: Vec<(String, String)> =
            decoded.iter().map(|(key, value)| (duo_encode(key), duo_encode(value))).collect();
        encoded.sort();
        let params = encoded.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join("&");
        let canonical =
            ["Fri, 07 Dec 2012 17:18:00 -0000", "POST", "foo.bar52.com", "/Foo/BaR2/qux", &params].join("\n");
        assert_eq!(
            expected_signature("gtdfxv9YgVBYcF6dl2Eq17KUQJN2PLM2ODVTkvoT", &canonical),
            "0508065035a03b2a1de2f453e629e791d180329e157f65df6b3e0f08299d4321e1c5c7a7c7ee6b9e5fc80d1fb6fbf3ad5eb7c44dd3b3985a02c37aca53ec3698"
        );
    }
}
