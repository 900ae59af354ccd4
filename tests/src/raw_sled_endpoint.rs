//! The ingest baseline: the same HTTP stack as Vouch (axum on tokio, on loopback) taking the same
//! request (bearer token, JSON body, the alert normalized the same way) and making the alert
//! alone durable in raw sled: one insert, acknowledged after a flush that covers it, flushes
//! shared by every waiting request (one flusher thread, group commit). What Vouch does beyond
//! this (grouping, the case, its audit record, indexes and effects) is what the ratio measures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

struct Endpoint {
    db: sled::Db,
    token: String,
    next_key: AtomicU64,
    /// Inserts made so far (each request's ticket), and the flusher's wake-up.
    requested: Mutex<u64>,
    wake: Condvar,
    /// How many inserts the last finished flush covered.
    flushed: tokio::sync::watch::Sender<u64>,
}

/// A running baseline endpoint; stops its server and flusher when dropped.
pub struct RawSledEndpoint {
    pub address: SocketAddr,
    endpoint: Arc<Endpoint>,
    /// Held so the server listens as long as the endpoint lives.
    _server: crate::loopback::LoopbackServer,
    _folder: tempfile::TempDir,
}

impl Drop for RawSledEndpoint {
    fn drop(&mut self) {
        // The server stops with its handle; the flusher stops when it sees this.
        *self.endpoint.requested.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = u64::MAX;
        self.endpoint.wake.notify_all();
    }
}

impl RawSledEndpoint {
    /// Starts the endpoint on 127.0.0.1, taking `POST /api/v1/alerts` with `token`.
    pub async fn start(token: &str) -> RawSledEndpoint {
        let folder = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(folder.path())
            .flush_every_ms(None)
            .cache_capacity(16 << 20)
            .open()
            .expect("sled opens");
        let (flushed, _) = tokio::sync::watch::channel(0u64);
        let endpoint = Arc::new(Endpoint {
            db,
            token: format!("Bearer {token}"),
            next_key: AtomicU64::new(0),
            requested: Mutex::new(0),
            wake: Condvar::new(),
            flushed,
        });
        let flusher = Arc::clone(&endpoint);
        std::thread::spawn(move || flush_until_stopped(&flusher));
        let app = axum::Router::new()
            .route("/api/v1/alerts", axum::routing::post(take_alert))
            .with_state(Arc::clone(&endpoint));
        let server = crate::loopback::LoopbackServer::start(app).await;
        RawSledEndpoint { address: server.address, endpoint, _server: server, _folder: folder }
    }
}

fn flush_until_stopped(endpoint: &Endpoint) {
    let mut covered = 0u64;
    loop {
        let target = {
            let mut requested = endpoint.requested.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            while *requested == covered {
                requested = endpoint.wake.wait(requested).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            *requested
        };
        if target == u64::MAX {
            return;
        }
        endpoint.db.flush().expect("flush");
        covered = target;
        endpoint.flushed.send_replace(covered);
    }
}

async fn take_alert(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let authorized =
        headers.get("authorization").and_then(|value| value.to_str().ok()) == Some(endpoint.token.as_str());
    if !authorized {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else { return StatusCode::BAD_REQUEST };
    if vouch_playbook::normalize::normalize(&payload, None, vouch::now()).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    let key = endpoint.next_key.fetch_add(1, Ordering::Relaxed);
    if endpoint.db.insert(key.to_be_bytes(), body.as_ref()).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    // The ticket is taken after the insert, so the flush that reaches it covers the insert.
    let ticket = {
        let mut requested = endpoint.requested.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *requested += 1;
        *requested
    };
    endpoint.wake.notify_one();
    let mut flushed = endpoint.flushed.subscribe();
    if flushed.wait_for(|covered| *covered >= ticket).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::ACCEPTED
}
