//! The REST side: `/api/v10/...`, every request checked against the official description.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::world::{
    channel_json, message_json, user_json, Channel, RequestRecord, StoredMessage, World, APPLICATION_ID, BOT_USER_ID,
    GUILD_ID,
};
use crate::Inner;

/// Discord's documented limits the schema leaves out.
const MAX_CONTENT_CHARS: usize = 2000;
const MAX_EMBED_TOTAL_CHARS: usize = 6000;

pub(crate) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Timings (an interaction's answer) are taken when the request arrives, before the
    // simulator's own checks of the body, so a bigger body is not charged for our validation.
    let received_at = Instant::now();
    let response = respond(&inner, &method, &uri, &headers, &body, received_at);
    inner.changed.notify_waiters();
    response
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn respond(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    received_at: Instant,
) -> Response {
    let Some(path) = uri.path().strip_prefix("/api/v10") else {
        return json_response(StatusCode::NOT_FOUND, json!({"message": "404: Not Found", "code": 0}));
    };
    let path = path.to_string();
    let mut world = inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let parsed: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => Some(value),
            Err(error) => {
                world.violations.push(format!("{method} {path}: the body is not JSON: {error}"));
                None
            }
        }
    };
    if let Err(violation) = inner.spec.check(method.as_str(), &path, parsed.as_ref()) {
        world.violations.push(violation);
    }
    if let Some(body) = &parsed {
        check_limits(&mut world, method.as_str(), &path, body);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let needs_bot_token = !matches!(segments.first(), Some(&"interactions") | Some(&"webhooks"));
    let authorized = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == format!("Bot {}", world.token));
    let response = if needs_bot_token && !authorized {
        world.violations.push(format!("{method} {path}: missing or wrong bot token"));
        json_response(StatusCode::UNAUTHORIZED, json!({"message": "401: Unauthorized", "code": 0}))
    } else if let Some(index) =
        world.injected_path_failures.iter().position(|(fragment, _)| path.contains(fragment.as_str()))
    {
        let (_, status) = world.injected_path_failures.remove(index);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        json_response(status, json!({"message": "Missing Permissions", "code": 50013}))
    } else if let Some(status) = world.injected_failures.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(status, json!({"message": "injected failure", "code": 0}))
    } else {
        route(inner, &mut world, method, &segments, parsed.as_ref(), received_at)
    };
    let retry_after = response
        .headers()
        .get("x-ratelimit-reset-after")
        .filter(|_| response.status() == StatusCode::TOO_MANY_REQUESTS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    world.requests.push(RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        status: response.status().as_u16(),
        body: parsed,
        at: Instant::now(),
        retry_after,
    });
    response
}

fn check_limits(world: &mut World, method: &str, path: &str, body: &Value) {
    let content = body.get("content").or_else(|| body.pointer("/data/content")).and_then(Value::as_str);
    if let Some(content) = content {
        if content.chars().count() > MAX_CONTENT_CHARS {
            world.violations.push(format!("{method} {path}: content over {MAX_CONTENT_CHARS} characters"));
        }
    }
    let embeds = body.get("embeds").or_else(|| body.pointer("/data/embeds")).and_then(Value::as_array);
    if let Some(embeds) = embeds {
        let total: usize = embeds.iter().map(embed_chars).sum();
        if total > MAX_EMBED_TOTAL_CHARS {
            world
                .violations
                .push(format!("{method} {path}: embeds total {total} characters, over {MAX_EMBED_TOTAL_CHARS}"));
        }
    }
}

fn embed_chars(embed: &Value) -> usize {
    let text = |pointer: &str| embed.pointer(pointer).and_then(Value::as_str).map_or(0, |text| text.chars().count());
    let fields: usize = embed["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|field| {
            field["name"].as_str().map_or(0, |text| text.chars().count())
                + field["value"].as_str().map_or(0, |text| text.chars().count())
        })
        .sum();
    text("/title") + text("/description") + text("/footer/text") + text("/author/name") + fields
}

fn parse_id(text: &str) -> Option<u64> {
    text.parse().ok()
}

fn not_found(world: &mut World, method: &Method, segments: &[&str]) -> Response {
    world.violations.push(format!("{method} /{}: the simulator has no such object or endpoint", segments.join("/")));
    json_response(StatusCode::NOT_FOUND, json!({"message": "Unknown", "code": 10003}))
}

fn route(
    inner: &Inner,
    world: &mut World,
    method: &Method,
    segments: &[&str],
    body: Option<&Value>,
    received_at: Instant,
) -> Response {
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    match (method.as_str(), segments) {
        ("GET", ["gateway"]) => json_response(StatusCode::OK, json!({"url": inner.gateway_url})),
        ("GET", ["gateway", "bot"]) => json_response(
            StatusCode::OK,
            json!({"url": inner.gateway_url, "shards": 1,
                   "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}),
        ),
        ("GET", ["users", "@me"]) => json_response(StatusCode::OK, user_json(BOT_USER_ID, "Vouch", true)),
        ("POST", ["channels", channel, "messages"]) => {
            let Some(channel_id) = parse_id(channel).filter(|id| world.channels.contains_key(id)) else {
                return not_found(world, method, segments);
            };
            if let Some(limited) = rate_limit(world, channel_id) {
                return limited;
            }
            // Discord answers a repeated nonce with the message it already created, when the
            // sender asks it to enforce nonces.
            let nonce = body.get("nonce").map(|nonce| nonce.to_string().trim_matches('"').to_string());
            if body.get("enforce_nonce").and_then(Value::as_bool) == Some(true) {
                if let Some(existing) = world.messages.iter().find(|message| {
                    message.channel_id == channel_id && message.nonce.is_some() && message.nonce == nonce
                }) {
                    return with_rate_headers(json_response(StatusCode::OK, existing.json.clone()), world, channel_id);
                }
            }
            let id = world.snowflake();
            let guild = guild_of(world, channel_id);
            let json = message_json(id, channel_id, guild, body, user_json(BOT_USER_ID, "Vouch", true));
            world.messages.push(StoredMessage {
                id,
                channel_id,
                json: json.clone(),
                ephemeral_for: None,
                nonce,
                edits: 0,
            });
            with_rate_headers(json_response(StatusCode::OK, json), world, channel_id)
        }
        ("PATCH", ["channels", channel, "messages", message]) => {
            let (Some(channel_id), Some(message_id)) = (parse_id(channel), parse_id(message)) else {
                return not_found(world, method, segments);
            };
            if world.message(message_id).is_none_or(|message| message.channel_id != channel_id) {
                return not_found(world, method, segments);
            }
            // Discord counts edits against the channel's message bucket, shared with posts.
            if let Some(limited) = rate_limit(world, channel_id) {
                return limited;
            }
            match edit_message(world, channel_id, message_id, body) {
                Some(json) => with_rate_headers(json_response(StatusCode::OK, json), world, channel_id),
                None => not_found(world, method, segments),
            }
        }
        ("POST", ["channels", channel, "messages", message, "threads"]) => {
            let (Some(channel_id), Some(message_id)) = (parse_id(channel), parse_id(message)) else {
                return not_found(world, method, segments);
            };
            if world.message(message_id).is_none() {
                return not_found(world, method, segments);
            }
            if world.channels.contains_key(&message_id) {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "A thread has already been created for this message", "code": 160004}),
                );
            }
            // A thread started from a message takes the message's id, as on Discord.
            let thread = Channel {
                id: message_id,
                kind: 11,
                name: body["name"].as_str().unwrap_or("thread").to_string(),
                parent_id: Some(channel_id),
                recipient: None,
            };
            let json = channel_json(&thread, GUILD_ID);
            world.channels.insert(message_id, thread);
            json_response(StatusCode::CREATED, json)
        }
        ("POST", ["users", "@me", "channels"]) => {
            let Some(recipient) = body["recipient_id"].as_str().and_then(parse_id) else {
                return not_found(world, method, segments);
            };
            let existing =
                world.channels.values().find(|channel| channel.kind == 1 && channel.recipient == Some(recipient));
            let channel = match existing {
                Some(channel) => channel.clone(),
                None => {
                    let id = world.snowflake();
                    let channel =
                        Channel { id, kind: 1, name: String::new(), parent_id: None, recipient: Some(recipient) };
                    world.channels.insert(id, channel.clone());
                    channel
                }
            };
            json_response(StatusCode::OK, channel_json(&channel, GUILD_ID))
        }
        ("POST", ["interactions", id, token, "callback"]) => {
            let Some(interaction_id) = parse_id(id) else { return not_found(world, method, segments) };
            let Some(record) = world.interactions.get(&interaction_id).cloned() else {
                return not_found(world, method, segments);
            };
            if record.token != *token {
                return not_found(world, method, segments);
            }
            if record.response.is_some() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "Interaction has already been acknowledged.", "code": 40060}),
                );
            }
            if record.dispatched_at.elapsed() > Duration::from_secs(3) {
                world.violations.push(format!("interaction {interaction_id} answered after Discord's 3 s deadline"));
            }
            apply_callback(world, &record, body);
            if let Some(stored) = world.interactions.get_mut(&interaction_id) {
                stored.response = Some((body.clone(), received_at));
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("PATCH", ["webhooks", application, token, "messages", "@original"]) => {
            let target = interaction_by_token(world, application, token)
                .and_then(|record| original_message(world, &record))
                .map(|message| (message.channel_id, message.id));
            match target.and_then(|(channel_id, message_id)| edit_message(world, channel_id, message_id, body)) {
                Some(json) => json_response(StatusCode::OK, json),
                None => not_found(world, method, segments),
            }
        }
        ("POST", ["webhooks", application, token]) => {
            let Some(record) = interaction_by_token(world, application, token) else {
                return not_found(world, method, segments);
            };
            let json = create_interaction_message(world, &record, body);
            json_response(StatusCode::OK, json)
        }
        ("PUT", ["applications", application, "guilds", _guild, "commands"]) => {
            if parse_id(application) != Some(APPLICATION_ID) {
                return not_found(world, method, segments);
            }
            let commands: Vec<Value> = body
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|mut command| {
                    let id = world.snowflake();
                    command["id"] = json!(id.to_string());
                    command["application_id"] = json!(APPLICATION_ID.to_string());
                    command["guild_id"] = json!(GUILD_ID.to_string());
                    command["version"] = json!(id.to_string());
                    command["type"] = command.get("type").cloned().unwrap_or(json!(1));
                    command["default_member_permissions"] = json!(null);
                    command["nsfw"] = json!(false);
                    command
                })
                .collect();
            world.commands = commands.clone();
            json_response(StatusCode::OK, Value::Array(commands))
        }
        _ => not_found(world, method, segments),
    }
}

fn guild_of(world: &World, channel_id: u64) -> Option<u64> {
    world.channels.get(&channel_id).filter(|channel| channel.kind != 1).map(|_| GUILD_ID)
}

fn rate_limit(world: &mut World, channel_id: u64) -> Option<Response> {
    let (limit, window) = world.channel_limit?;
    let now = Instant::now();
    let recent = world.recent_posts.entry(channel_id).or_default();
    while recent.front().is_some_and(|at| now.duration_since(*at) >= window) {
        recent.pop_front();
    }
    if recent.len() < limit {
        recent.push_back(now);
        return None;
    }
    let retry_after = window.saturating_sub(now.duration_since(recent[0])).as_secs_f64().max(0.001);
    world.rate_limited += 1;
    let mut response = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false, "code": 20028}),
    );
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(headers, "retry-after", format!("{}", retry_after.ceil() as u64));
    set(headers, "x-ratelimit-limit", limit.to_string());
    set(headers, "x-ratelimit-remaining", "0".to_string());
    set(headers, "x-ratelimit-reset-after", format!("{retry_after:.3}"));
    set(headers, "x-ratelimit-reset", reset_epoch(retry_after));
    set(headers, "x-ratelimit-bucket", format!("channel-{channel_id}"));
    set(headers, "x-ratelimit-scope", "shared".to_string());
    Some(response)
}

fn reset_epoch(after_seconds: f64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    format!("{:.3}", now + after_seconds)
}

/// Tells the sender where the channel's bucket stands, as Discord does on every response.
fn with_rate_headers(mut response: Response, world: &World, channel_id: u64) -> Response {
    let Some((limit, window)) = world.channel_limit else { return response };
    let used = world.recent_posts.get(&channel_id).map_or(0, |recent| recent.len());
    let reset_after = world
        .recent_posts
        .get(&channel_id)
        .and_then(|recent| recent.front())
        .map_or(window.as_secs_f64(), |first| window.saturating_sub(first.elapsed()).as_secs_f64());
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", limit.saturating_sub(used).to_string()),
        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
        ("x-ratelimit-reset", reset_epoch(reset_after)),
        ("x-ratelimit-bucket", format!("channel-{channel_id}")),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

fn edit_message(world: &mut World, channel_id: u64, message_id: u64, body: &Value) -> Option<Value> {
    let message =
        world.messages.iter_mut().find(|message| message.id == message_id && message.channel_id == channel_id)?;
    for key in ["content", "embeds", "components", "flags"] {
        if let Some(value) = body.get(key) {
            message.json[key] = value.clone();
        }
    }
    message.json["edited_timestamp"] = json!(crate::world::now_rfc3339());
    message.edits += 1;
    Some(message.json.clone())
}

fn interaction_by_token(world: &World, application: &str, token: &str) -> Option<crate::world::InteractionRecord> {
    if parse_id(application) != Some(APPLICATION_ID) {
        return None;
    }
    world.interactions.values().find(|record| record.token == token).cloned()
}

/// The message an interaction's `@original` refers to: its own response message, or for a
/// component click answered by updating, the clicked message.
fn original_message<'a>(world: &'a World, record: &crate::world::InteractionRecord) -> Option<&'a StoredMessage> {
    let response_type = record.response.as_ref().and_then(|(body, _)| body["type"].as_u64());
    match response_type {
        Some(6) | Some(7) => record.message_id.and_then(|id| world.message(id)),
        _ => world
            .messages
            .iter()
            .rev()
            .find(|message| message.json["interaction_id"].as_str() == Some(&record.id.to_string())),
    }
}

fn create_interaction_message(world: &mut World, record: &crate::world::InteractionRecord, data: &Value) -> Value {
    let id = world.snowflake();
    let guild = guild_of(world, record.channel_id);
    let mut json = message_json(id, record.channel_id, guild, data, user_json(BOT_USER_ID, "Vouch", true));
    json["interaction_id"] = json!(record.id.to_string());
    let ephemeral = data["flags"].as_u64().is_some_and(|flags| flags & 64 != 0);
    world.messages.push(StoredMessage {
        id,
        channel_id: record.channel_id,
        json: json.clone(),
        ephemeral_for: ephemeral.then_some(record.user_id),
        nonce: None,
        edits: 0,
    });
    json
}

fn apply_callback(world: &mut World, record: &crate::world::InteractionRecord, body: &Value) {
    let data = body.get("data").cloned().unwrap_or(json!({}));
    match body["type"].as_u64() {
        Some(4) => {
            create_interaction_message(world, record, &data);
        }
        Some(7) => {
            if let Some(message_id) = record.message_id {
                let channel_id = world.message(message_id).map(|message| message.channel_id);
                if let Some(channel_id) = channel_id {
                    edit_message(world, channel_id, message_id, &data);
                }
            }
        }
        // Deferred answers (5, 6) and modals (9) change no message by themselves.
        _ => {}
    }
}
