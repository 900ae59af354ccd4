//! Isolation webhooks: each request becomes outbox entries (one per configured webhook) in the
//! store before anything is sent; a worker delivers them, signed (Standard Webhooks), retried
//! with exponential backoff and jitter, never under a new id.
//!
//! URLs come only from the configuration; an alert can name a host but never where to send.
//! Redirects are not followed and every request has a timeout.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vouch_config::{DeliverySettings, WebhookPreset, WebhookSettings};
use vouch_playbook::engine::{IsolationAction, IsolationRequest, Side};
use vouch_playbook::{Actor, Case, CaseEvent, EventKind, Timestamp};
use vouch_storage::OutboxEntry;

use crate::auth::sign;
use crate::service::{CaseRequest, Service};

/// What is stored for one delivery: everything needed to send it again identically.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub request_id: String,
    pub webhook: String,
    pub url: String,
    /// The exact JSON body; retries send these bytes again.
    pub body: String,
    /// Set when the request cannot be made at all (say, no EDR id for the vendor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impossible: Option<String>,
}

fn person(actor: &Actor) -> Value {
    json!({"person": actor.person, "name": actor.name, "discord_id": actor.discord_id})
}

/// The EDR id of a system for a vendor: from the directory first, else from the alert.
fn edr_id(case: &Case, side: Side, vendor: &str) -> Option<String> {
    case.asset(side)
        .and_then(|asset| asset.edr_ids.iter().find(|id| id.vendor == vendor).map(|id| id.id.clone()))
        .or_else(|| (vendor == "generic").then(|| case.system(side).edr_ids.first().cloned()).flatten())
}

/// The generic body, documented by `bot/schemas/isolation-webhook.schema.json`.
pub fn generic_body(case: &Case, request: &IsolationRequest) -> Value {
    let system = case.system(request.side);
    let mut edr_ids = serde_json::Map::new();
    if let Some(asset) = case.asset(request.side) {
        for id in &asset.edr_ids {
            edr_ids.insert(id.vendor.clone(), json!(id.id));
        }
    }
    if !system.edr_ids.is_empty() {
        edr_ids.entry("alert").or_insert(json!(system.edr_ids));
    }
    json!({
        "type": "vouch.isolation",
        "id": request.id,
        "action": match request.action { IsolationAction::Isolate => "isolate", IsolationAction::Release => "release" },
        "case_id": case.id,
        "side": request.side,
        "target": {
            "hostname": case.asset(request.side).map(|asset| asset.hostname.clone()).or_else(|| system.hostname.clone()),
            "ips": system.ips,
            "edr_ids": edr_ids,
        },
        "reason": case.escalation.as_ref().and_then(|decision| decision.text.clone()).unwrap_or_else(|| "lateral movement escalated in Vouch".to_string()),
        "mitre": case.alert().mitre,
        "requested_by": person(&request.requested_by),
        "approved_by": request.approved_by.as_ref().map(person),
        "requested_at": request.at,
    })
}

/// Builds the delivery of one request to one webhook, in the webhook's own shape.
pub fn delivery(case: &Case, request: &IsolationRequest, webhook: &WebhookSettings) -> Delivery {
    let isolate = request.action == IsolationAction::Isolate;
    let comment = format!("Vouch {} for {}", request.id, case.id);
    let vendor_id = |vendor: &str| edr_id(case, request.side, vendor);
    let missing =
        |vendor: &str| Some(format!("the directory has no {vendor} id for {}", case.system(request.side).label()));
    let (url, body, impossible) = match webhook.preset {
        WebhookPreset::Generic => (webhook.url.clone(), generic_body(case, request), None),
        WebhookPreset::CrowdStrike => {
            let action = if isolate { "contain" } else { "lift_containment" };
            let url = format!("{}/devices/entities/devices-actions/v2?action_name={action}", webhook.url);
            match vendor_id("crowdstrike") {
                Some(aid) => (url, json!({"ids": [aid]}), None),
                None => (url, json!({"ids": []}), missing("crowdstrike")),
            }
        }
        WebhookPreset::Defender => {
            let action = if isolate { "isolate" } else { "unisolate" };
            match vendor_id("defender") {
                Some(id) => {
                    let body = if isolate {
                        json!({"Comment": comment, "IsolationType": "Full"})
                    } else {
                        json!({"Comment": comment})
                    };
                    (format!("{}/api/machines/{id}/{action}", webhook.url), body, None)
                }
                None => (webhook.url.clone(), json!({}), missing("defender")),
            }
        }
        WebhookPreset::SentinelOne => {
            let action = if isolate { "disconnect" } else { "connect" };
            let url = format!("{}/web/api/v2.1/agents/actions/{action}", webhook.url);
            // An empty filter would act on every agent: refused, never sent.
            match vendor_id("sentinelone") {
                Some(id) => (url, json!({"filter": {"ids": [id]}}), None),
                None => (url, json!({"filter": {"ids": []}}), missing("sentinelone")),
            }
        }
        WebhookPreset::Elastic => {
            let action = if isolate { "isolate" } else { "unisolate" };
            let url = format!("{}/api/endpoint/action/{action}", webhook.url);
            match vendor_id("elastic") {
                Some(id) => (url, json!({"endpoint_ids": [id], "comment": comment}), None),
                None => (url, json!({"endpoint_ids": [], "comment": comment}), missing("elastic")),
            }
        }
    };
    Delivery { request_id: request.id.clone(), webhook: webhook.name.clone(), url, body: body.to_string(), impossible }
}

/// The outbox entries for a request, with stable ids (`<request id>:<webhook name>`).
pub fn outbox_entries(case: &Case, request_id: &str, webhooks: &[WebhookSettings], now: Timestamp) -> Vec<OutboxEntry> {
    let Some(request) = case.isolations.iter().find(|request| request.id == request_id) else { return Vec::new() };
    webhooks
        .iter()
        .map(|webhook| OutboxEntry {
            id: format!("{}:{}", request.id, webhook.name),
            case_id: case.id,
            created_at: now,
            attempts: 0,
            next_attempt_at: None,
            payload: serde_json::to_value(delivery(case, request, webhook)).unwrap_or(Value::Null),
        })
        .collect()
}

enum Outcome {
    Delivered(u16),
    Retry { after: Option<Duration>, detail: String },
    Failed(String),
}

/// Delivers outbox entries until each is accepted or given up on.
pub struct Deliverer {
    pub service: Arc<Service>,
    pub webhooks: Vec<WebhookSettings>,
    pub policy: DeliverySettings,
    client: reqwest::Client,
    crowdstrike_tokens: tokio::sync::Mutex<std::collections::HashMap<String, (String, tokio::time::Instant)>>,
}

impl Deliverer {
    pub fn new(
        service: Arc<Service>,
        webhooks: Vec<WebhookSettings>,
        policy: DeliverySettings,
    ) -> anyhow::Result<Deliverer> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_millis(policy.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Deliverer { service, webhooks, policy, client, crowdstrike_tokens: Default::default() })
    }

    pub async fn run(self) {
        let wake = Arc::clone(&self.service.outbox_ready);
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = match self.pass().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "delivering isolation requests failed; will retry");
                    Some(Duration::from_secs(1))
                }
            };
            let wait = next.unwrap_or(Duration::from_secs(5)).min(Duration::from_secs(5));
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// Delivers what is due; returns how long until the next entry is.
    async fn pass(&self) -> anyhow::Result<Option<Duration>> {
        let service = Arc::clone(&self.service);
        let entries = tokio::task::spawn_blocking(move || service.store.outbox()).await??;
        let now = self.service.clock.now();
        let mut next: Option<Duration> = None;
        for entry in entries {
            if let Some(at) = entry.next_attempt_at {
                if at > now {
                    let wait = Duration::from_millis(at.millis_since(now).max(0) as u64);
                    next = Some(next.map_or(wait, |current| current.min(wait)));
                    continue;
                }
            }
            if let Some(at) = self.attempt(entry).await? {
                let wait = Duration::from_millis(at.millis_since(self.service.clock.now()).max(0) as u64);
                next = Some(next.map_or(wait, |current| current.min(wait)));
            }
        }
        Ok(next)
    }

    fn webhook(&self, name: &str) -> Option<&WebhookSettings> {
        self.webhooks.iter().find(|webhook| webhook.name == name)
    }

    /// Makes one attempt; returns when the next one is due, if the entry stays pending.
    async fn attempt(&self, mut entry: OutboxEntry) -> anyhow::Result<Option<Timestamp>> {
        let delivery: Delivery = serde_json::from_value(entry.payload.clone())?;
        // Only the leader calls webhooks, checked against the database just before the call.
        let service = Arc::clone(&self.service);
        tokio::task::spawn_blocking(move || service.store.confirm_lead()).await??;
        entry.attempts += 1;
        tracing::info!(id = %entry.id, attempt = entry.attempts, webhook = %delivery.webhook, "delivering an isolation request");
        let outcome = match (&delivery.impossible, self.webhook(&delivery.webhook)) {
            (Some(reason), _) => Outcome::Failed(reason.clone()),
            (None, None) => Outcome::Failed(format!("the webhook {} is no longer configured", delivery.webhook)),
            (None, Some(webhook)) => self.send(&entry, &delivery, webhook).await,
        };
        let now = self.service.clock.now();
        let service = Arc::clone(&self.service);
        match outcome {
            Outcome::Delivered(status) => {
                tracing::info!(id = %entry.id, status, attempts = entry.attempts, "isolation request delivered");
                self.finish(entry, &delivery, true, format!("HTTP {status}"), now).await.map(|()| None)
            }
            Outcome::Retry { after, detail } if entry.attempts < self.policy.max_attempts => {
                let delay =
                    after.unwrap_or_else(|| self.backoff(&entry)).min(Duration::from_millis(self.policy.max_retry_ms));
                let next_attempt_at = now.plus_millis(delay.as_millis() as i64);
                entry.next_attempt_at = Some(next_attempt_at);
                tracing::warn!(id = %entry.id, attempt = entry.attempts, retry_in_ms = delay.as_millis() as u64, detail = %detail, "isolation delivery failed; will retry");
                let record = json!({"id": entry.id, "attempt": entry.attempts, "result": detail, "retry_in_ms": delay.as_millis() as u64});
                tokio::task::spawn_blocking(move || service.settle_outbox(&entry, false, record)).await??;
                Ok(Some(next_attempt_at))
            }
            Outcome::Retry { detail, .. } => {
                let detail = format!("gave up after {} attempts, last: {detail}", entry.attempts);
                self.finish(entry, &delivery, false, detail, now).await.map(|()| None)
            }
            Outcome::Failed(detail) => self.finish(entry, &delivery, false, detail, now).await.map(|()| None),
        }
    }

    /// Tells the engine, then removes the entry. A crash in between re-sends the same request
    /// under the same id, which a receiver deduplicating on `webhook-id` ignores.
    async fn finish(
        &self,
        entry: OutboxEntry,
        delivery: &Delivery,
        ok: bool,
        detail: String,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let service = Arc::clone(&self.service);
        let event = CaseEvent::IsolationDelivered {
            request_id: delivery.request_id.clone(),
            webhook: delivery.webhook.clone(),
            ok,
            detail: detail.clone(),
        };
        let record = json!({"id": entry.id, "attempt": entry.attempts, "ok": ok, "result": detail});
        let case_id = entry.case_id;
        tokio::task::spawn_blocking(move || {
            let vouch = Actor::vouch();
            service.apply(CaseRequest::new(case_id, EventKind::WebhookResult, &vouch, record.clone(), event), now)?;
            service.settle_outbox(&entry, true, record)
        })
        .await??;
        self.service.effects_ready.notify_one();
        Ok(())
    }

    /// Exponential backoff with ±20% jitter, so many retries do not arrive together.
    fn backoff(&self, entry: &OutboxEntry) -> Duration {
        let exponent = entry.attempts.saturating_sub(1).min(20);
        let base = self.policy.first_retry_ms.saturating_mul(1u64 << exponent).min(self.policy.max_retry_ms);
        let seed = entry.id.bytes().fold(u64::from(entry.attempts) ^ 0x9e37_79b9_7f4a_7c15, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        });
        let jitter_permille = (seed % 401) as i64 - 200;
        let millis = (base as i64 + base as i64 * jitter_permille / 1000).max(1) as u64;
        Duration::from_millis(millis)
    }

    async fn send(&self, entry: &OutboxEntry, delivery: &Delivery, webhook: &WebhookSettings) -> Outcome {
        let timestamp = self.service.clock.now().unix_millis() / 1000;
        let signatures: Vec<String> = webhook
            .secrets
            .iter()
            .filter(|secret| secret.expose().starts_with("whsec_"))
            .map(|secret| sign(secret, &entry.id, timestamp, delivery.body.as_bytes()))
            .collect();
        let mut request = self
            .client
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("webhook-id", &entry.id)
            .header("webhook-timestamp", timestamp.to_string())
            .body(delivery.body.clone());
        if !signatures.is_empty() {
            request = request.header("webhook-signature", signatures.join(" "));
        }
        let current = webhook.secrets.first().map(|secret| secret.expose().to_string()).unwrap_or_default();
        request = match webhook.preset {
            WebhookPreset::Generic => request,
            WebhookPreset::CrowdStrike => match self.crowdstrike_token(webhook).await {
                Ok(token) => request.bearer_auth(token),
                Err(outcome) => return outcome,
            },
            WebhookPreset::Defender => request.bearer_auth(current),
            WebhookPreset::SentinelOne => request.header("authorization", format!("ApiToken {current}")),
            WebhookPreset::Elastic => {
                request.header("authorization", format!("ApiKey {current}")).header("kbn-xsrf", "true")
            }
        };
        match request.send().await {
            Ok(response) => classify(response.status().as_u16(), retry_after(response.headers())),
            Err(error) => Outcome::Retry { after: None, detail: format!("network error: {}", without_url(&error)) },
        }
    }

    /// CrowdStrike's OAuth2 client-credentials token, cached until shortly before it expires.
    async fn crowdstrike_token(&self, webhook: &WebhookSettings) -> Result<String, Outcome> {
        let mut tokens = self.crowdstrike_tokens.lock().await;
        if let Some((token, expires)) = tokens.get(&webhook.name) {
            if *expires > tokio::time::Instant::now() {
                return Ok(token.clone());
            }
        }
        let secret = webhook.secrets.first().map(|secret| secret.expose().to_string()).unwrap_or_default();
        let form = [("client_id", webhook.client_id.clone().unwrap_or_default()), ("client_secret", secret)];
        let response =
            self.client.post(format!("{}/oauth2/token", webhook.url)).form(&form).send().await.map_err(|error| {
                Outcome::Retry { after: None, detail: format!("token request failed: {}", without_url(&error)) }
            })?;
        let status = response.status().as_u16();
        if status != 200 && status != 201 {
            return Err(match classify(status, retry_after(response.headers())) {
                Outcome::Delivered(_) => Outcome::Failed(format!("token request answered {status}")),
                other => other,
            });
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| Outcome::Retry { after: None, detail: "the token answer is not JSON".to_string() })?;
        let token = body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Outcome::Failed("no access_token in the token answer".to_string()))?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(1800).saturating_sub(60).max(30);
        tokens
            .insert(webhook.name.clone(), (token.clone(), tokio::time::Instant::now() + Duration::from_secs(lifetime)));
        Ok(token)
    }
}

/// 2xx delivered; 408, 429 and 5xx retried; any other answer is final.
fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        408 | 429 | 500..=599 => Outcome::Retry { after: retry_after, detail: format!("HTTP {status}") },
        _ => Outcome::Failed(format!("HTTP {status}")),
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// reqwest's errors can carry the URL; the webhook URL may hold a token, so it is left out.
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    //! Each preset produces its vendor's documented request shape.

    use serde_json::json;
    use vouch_config::{Secret, WebhookPreset, WebhookSettings};
    use vouch_playbook::engine::{IsolationAction, Side};
    use vouch_playbook::facts::{AssetFacts, AssetKind, Criticality, EdrId, Facts, History};
    use vouch_playbook::normalize::normalize;
    use vouch_playbook::{apply, open_case, Actor, Case, CaseEvent, CaseId, Playbook, Timestamp};

    use super::{delivery, generic_body};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_764_320_000_000);

    fn escalated_case(edr: &[(&str, &str)]) -> Case {
        let playbook = Playbook::builtin();
        let alert = normalize(
            &json!({"vouch_alert": 1, "source": {"hostname": "WS-17"}, "target": {"hostname": "SRV-DB-01", "ips": ["10.0.5.1"]},
                    "account": "alice", "protocol": "rdp", "mitre": ["T1021.001"]}),
            None,
            NOW,
        )
        .expect("alert");
        let facts = Facts {
            target: Some(AssetFacts {
                hostname: "SRV-DB-01".to_string(),
                kind: AssetKind::Server,
                criticality: Criticality::High,
                owner: None,
                edr_ids: edr
                    .iter()
                    .map(|(vendor, id)| EdrId { vendor: vendor.to_string(), id: id.to_string() })
                    .collect(),
                service_accounts: Vec::new(),
                shares: Vec::new(),
            }),
            ..Facts::default()
        };
        let opening = open_case(&playbook, &alert, &facts, &History::default(), NOW);
        let (case, _) = Case::open(CaseId::new(7).expect("id"), &playbook, alert, facts, opening, NOW);
        let sam = Actor {
            discord_id: None,
            person: None,
            name: "Sam".to_string(),
            soc: true,
            roles: Vec::new(),
            linked: false,
        };
        let (case, _) = apply(
            &playbook,
            case,
            CaseEvent::Escalate { by: sam.clone(), reason: Some("owner denied".to_string()) },
            NOW,
        )
        .expect("escalated");
        let (case, _) = apply(&playbook, case, CaseEvent::Isolate { side: Side::Target, by: sam }, NOW)
            .expect("isolation requested");
        case
    }

    fn webhook(preset: WebhookPreset) -> WebhookSettings {
        WebhookSettings {
            name: "edr".to_string(),
            url: "https://edr.example.invalid".to_string(),
            preset,
            secrets: vec![Secret::new("token".to_string(), "test".to_string())],
            client_id: Some("client".to_string()),
        }
    }

    #[test]
    fn presets_build_their_vendors_requests() {
        let case = escalated_case(&[
            ("crowdstrike", "aid-1"),
            ("defender", "mdatp-1"),
            ("sentinelone", "s1-1"),
            ("elastic", "el-1"),
        ]);
        let request = &case.isolations[0];
        assert_eq!(request.action, IsolationAction::Isolate);
        let cases = [
            (
                WebhookPreset::CrowdStrike,
                "https://edr.example.invalid/devices/entities/devices-actions/v2?action_name=contain",
                json!({"ids": ["aid-1"]}),
            ),
            (
                WebhookPreset::Defender,
                "https://edr.example.invalid/api/machines/mdatp-1/isolate",
                json!({"Comment": "Vouch LM-7-target-isolate-1 for LM-7", "IsolationType": "Full"}),
            ),
            (
                WebhookPreset::SentinelOne,
                "https://edr.example.invalid/web/api/v2.1/agents/actions/disconnect",
                json!({"filter": {"ids": ["s1-1"]}}),
            ),
            (
                WebhookPreset::Elastic,
                "https://edr.example.invalid/api/endpoint/action/isolate",
                json!({"endpoint_ids": ["el-1"], "comment": "Vouch LM-7-target-isolate-1 for LM-7"}),
            ),
        ];
        for (preset, url, body) in cases {
            let built = delivery(&case, request, &webhook(preset));
            assert_eq!(built.url, url, "{preset:?}");
            assert_eq!(serde_json::from_str::<serde_json::Value>(&built.body).expect("JSON"), body, "{preset:?}");
            assert!(built.impossible.is_none(), "{preset:?}");
        }
    }

    #[test]
    fn a_missing_edr_id_is_never_sent_as_an_empty_filter() {
        let case = escalated_case(&[]);
        let built = delivery(&case, &case.isolations[0], &webhook(WebhookPreset::SentinelOne));
        assert!(built.impossible.as_deref().is_some_and(|reason| reason.contains("no sentinelone id")), "{built:?}");
        let generic = generic_body(&case, &case.isolations[0]);
        assert_eq!(generic["action"], "isolate");
        assert_eq!(generic["target"]["hostname"], "SRV-DB-01");
        assert_eq!(generic["target"]["ips"], json!(["10.0.5.1"]));
        assert_eq!(generic["reason"], "owner denied");
        assert_eq!(generic["mitre"], json!(["T1021.001"]));
    }
}
