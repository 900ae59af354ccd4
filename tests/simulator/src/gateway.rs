//! The Gateway: Hello, Identify → READY, Resume → replay + RESUMED, heartbeats, dispatches,
//! and dropped connections on demand.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::world::{user_json, APPLICATION_ID, BOT_USER_ID, GUILD_ID};
use crate::Inner;

/// Dispatched events, numbered; a resuming session gets what it missed.
#[derive(Default)]
pub(crate) struct GatewayLog {
    pub(crate) seq: u64,
    pub(crate) events: Vec<(u64, String, Value)>,
    pub(crate) session_id: Option<String>,
}

pub(crate) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            if let Err(error) = connection(stream, inner).await {
                tracing::debug!(%error, "gateway connection ended");
            }
        });
    }
}

fn dispatch_frame(seq: u64, name: &str, data: &Value) -> Message {
    Message::Text(json!({"op": 0, "s": seq, "t": name, "d": data}).to_string())
}

async fn connection(stream: TcpStream, inner: Arc<Inner>) -> Result<(), String> {
    let mut socket = tokio_tungstenite::accept_async(stream).await.map_err(|error| error.to_string())?;
    let mut drops = inner.drop_generation.subscribe();
    drops.borrow_and_update();
    let mut events = inner.events.subscribe();
    socket
        .send(Message::Text(json!({"op": 10, "d": {"heartbeat_interval": 41250}}).to_string()))
        .await
        .map_err(|error| error.to_string())?;
    // The last event this connection delivered; `None` until it identified or resumed.
    let mut delivered: Option<u64> = None;
    loop {
        tokio::select! {
            // A drop asked for before an event is dispatched must win: otherwise the event could
            // still go out on the dying connection, and a test of what happens across a drop
            // would not test one.
            biased;
            changed = drops.changed() => {
                if changed.is_ok() {
                    // Drop the TCP connection without a close frame, like a network failure.
                    return Ok(());
                }
            }
            event = events.recv() => {
                if event.is_err() && !matches!(event, Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) {
                    return Ok(());
                }
                if let Some(last) = delivered {
                    let pending: Vec<(u64, String, Value)> = {
                        let log = inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        log.events.iter().filter(|(seq, _, _)| *seq > last).cloned().collect()
                    };
                    for (seq, name, data) in pending {
                        if drops.has_changed().unwrap_or(true) {
                            return Ok(());
                        }
                        socket.send(dispatch_frame(seq, &name, &data)).await.map_err(|error| error.to_string())?;
                        delivered = Some(seq);
                    }
                }
            }
            frame = socket.next() => {
                let Some(Ok(frame)) = frame else { return Ok(()) };
                if matches!(frame, Message::Close(_)) && inner.unanswered_close.load(std::sync::atomic::Ordering::SeqCst) {
                    // Reading on would send the close reply; hold the connection open unread.
                    let _ = drops.changed().await;
                    return Ok(());
                }
                let Message::Text(text) = frame else { continue };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else { continue };
                match payload["op"].as_u64() {
                    Some(1) => {
                        let seq = inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).seq;
                        socket.send(Message::Text(json!({"op": 11, "d": seq}).to_string())).await.map_err(|error| error.to_string())?;
                    }
                    Some(2) => {
                        let token_ok = payload["d"]["token"].as_str().map(|token| token.trim_start_matches("Bot "))
                            == Some(inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).token.as_str());
                        if !token_ok {
                            socket.send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                code: 4004.into(),
                                reason: "Authentication failed.".into(),
                            }))).await.ok();
                            return Ok(());
                        }
                        inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).gateway_identifies += 1;
                        let (seq, ready) = {
                            let mut log = inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                            let session_id = format!("session-{}", log.seq + 1);
                            log.session_id = Some(session_id.clone());
                            log.seq += 1;
                            let ready = json!({
                                "v": 10,
                                "user": user_json(BOT_USER_ID, "Vouch", true),
                                "guilds": [{"id": GUILD_ID.to_string(), "unavailable": true}],
                                "session_id": session_id,
                                "resume_gateway_url": inner.gateway_url,
                                "shard": [0, 1],
                                "application": {"id": APPLICATION_ID.to_string(), "flags": 0},
                            });
                            (log.seq, ready)
                        };
                        socket.send(dispatch_frame(seq, "READY", &ready)).await.map_err(|error| error.to_string())?;
                        delivered = Some(seq);
                    }
                    Some(6) => {
                        let resumed_from = payload["d"]["seq"].as_u64().unwrap_or(0);
                        let session = payload["d"]["session_id"].as_str().map(str::to_string);
                        let (valid, pending, seq) = {
                            let mut log = inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                            let valid = session.is_some() && session == log.session_id;
                            let pending: Vec<(u64, String, Value)> =
                                log.events.iter().filter(|(seq, _, _)| *seq > resumed_from).cloned().collect();
                            log.seq += 1;
                            (valid, pending, log.seq)
                        };
                        if !valid {
                            socket.send(Message::Text(json!({"op": 9, "d": false}).to_string())).await.map_err(|error| error.to_string())?;
                            continue;
                        }
                        inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).gateway_resumes += 1;
                        for (event_seq, name, data) in pending {
                            socket.send(dispatch_frame(event_seq, &name, &data)).await.map_err(|error| error.to_string())?;
                        }
                        socket.send(dispatch_frame(seq, "RESUMED", &json!({}))).await.map_err(|error| error.to_string())?;
                        delivered = Some(seq);
                    }
                    _ => {}
                }
                inner.changed.notify_waiters();
            }
        }
    }
}
