//! A Discord simulator for Vouch's tests (and `vouch demo`): REST under `/api/v10` over HTTP
//! or HTTPS (a `discord.com` certificate from a test CA), a Gateway WebSocket, members with
//! roles who click buttons and submit modals, per-channel rate limits with real 429 answers,
//! injected failures and dropped gateway connections.
//!
//! Every request body is checked against Discord's official OpenAPI description
//! (`openapi.json`); a mismatch is recorded in [`Simulator::violations`], which tests assert
//! empty. So is any request to an endpoint the description does not have.

mod gateway;
mod rest;
mod spec;
mod tls;
mod world;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch, Notify};

pub use world::{
    member_json, Channel, InteractionRecord, Member, RequestRecord, StoredMessage, World, APPLICATION_ID, BOT_USER_ID,
    GUILD_ID,
};

pub(crate) struct Inner {
    pub(crate) world: Mutex<World>,
    pub(crate) changed: Notify,
    pub(crate) spec: spec::Spec,
    pub(crate) gateway: Mutex<gateway::GatewayLog>,
    pub(crate) events: broadcast::Sender<()>,
    pub(crate) drop_generation: watch::Sender<u64>,
    pub(crate) gateway_url: String,
    /// When set, a client's close frame goes unanswered and the connection stays open, like a
    /// gateway that is slow or cut off: a client waiting for the reply waits forever.
    pub(crate) unanswered_close: std::sync::atomic::AtomicBool,
}

pub struct SimulatorOptions<'a> {
    /// Serve REST over HTTPS as `discord.com` (the bot resolves the name to the simulator and
    /// trusts [`Simulator::ca_pem`]); otherwise plain HTTP on the bound address.
    pub tls: bool,
    pub spec_path: &'a Path,
    pub bot_token: &'a str,
}

pub struct Simulator {
    inner: Arc<Inner>,
    rest_address: SocketAddr,
    ca_pem: Option<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Simulator {
    pub async fn start(options: SimulatorOptions<'_>) -> Result<Simulator, String> {
        let spec_text = std::fs::read_to_string(options.spec_path)
            .map_err(|error| format!("{}: {error}", options.spec_path.display()))?;
        let spec = spec::Spec::load(&spec_text)?;
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|error| error.to_string())?;
        let gateway_url = format!("ws://{}", gateway_listener.local_addr().map_err(|error| error.to_string())?);
        let rest_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|error| error.to_string())?;
        let rest_address = rest_listener.local_addr().map_err(|error| error.to_string())?;
        let (events, _) = broadcast::channel(1024);
        let (drop_generation, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            world: Mutex::new(World::new(options.bot_token)),
            changed: Notify::new(),
            spec,
            gateway: Mutex::default(),
            events,
            drop_generation,
            gateway_url,
            unanswered_close: std::sync::atomic::AtomicBool::new(false),
        });
        let router = axum::Router::new().fallback(rest::handle).with_state(Arc::clone(&inner));
        let mut tasks = vec![tokio::spawn(gateway::serve(gateway_listener, Arc::clone(&inner)))];
        let ca_pem = if options.tls {
            let authority = tls::authority()?;
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&authority.server_config));
            tasks.push(tokio::spawn(serve_tls(rest_listener, acceptor, router)));
            Some(authority.ca_pem)
        } else {
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(rest_listener, router).await;
            }));
            None
        };
        Ok(Simulator { inner, rest_address, ca_pem, tasks })
    }

    /// The base URL the bot is configured with: `https://127.0.0.1:<port>` with TLS (the bot
    /// resolves `discord.com` there and checks the certificate against [`Simulator::ca_pem`]),
    /// else `http://127.0.0.1:<port>`.
    pub fn api_base(&self) -> String {
        match self.ca_pem {
            Some(_) => format!("https://{}", self.rest_address),
            None => format!("http://{}", self.rest_address),
        }
    }

    pub fn rest_address(&self) -> SocketAddr {
        self.rest_address
    }

    /// The test CA's certificate (PEM), when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.inner.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn with_world<T>(&self, read: impl FnOnce(&World) -> T) -> T {
        read(&self.world())
    }

    pub fn add_member(&self, user_id: u64, name: &str, roles: &[u64]) {
        self.world().members.insert(user_id, Member { user_id, name: name.to_string(), roles: roles.to_vec() });
    }

    pub fn add_text_channel(&self, id: u64, name: &str) {
        self.world()
            .channels
            .insert(id, Channel { id, kind: 0, name: name.to_string(), parent_id: None, recipient: None });
    }

    /// Puts a message (as if another user posted it) in a channel; returns its id.
    pub fn post_message(&self, channel_id: u64, sent: &Value) -> u64 {
        let mut world = self.world();
        let id = world.snowflake();
        let json = world::message_json(id, channel_id, Some(GUILD_ID), sent, world::user_json(1, "someone", false));
        world.messages.push(StoredMessage { id, channel_id, json, ephemeral_for: None, nonce: None, edits: 0 });
        id
    }

    /// Limits each channel's message bucket (posts and edits of its messages count alike, as on
    /// Discord) to `posts` in any `window`, answering 429 beyond it.
    pub fn limit_channel_posts(&self, posts: usize, window: Duration) {
        self.world().channel_limit = Some((posts, window));
    }

    /// The next requests are answered with these statuses, in order, whatever they ask.
    pub fn inject_failures(&self, statuses: &[u16]) {
        self.world().injected_failures.extend(statuses.iter().copied());
    }

    /// The next `count` requests whose path contains `fragment` are answered with `status`.
    pub fn refuse_path(&self, fragment: &str, status: u16, count: usize) {
        let mut world = self.world();
        for _ in 0..count {
            world.injected_path_failures.push((fragment.to_string(), status));
        }
    }

    /// Stops injecting failures.
    pub fn clear_failures(&self) {
        self.world().injected_failures.clear();
    }

    /// Forgets the current gateway session: a resume is answered "invalid session" and the
    /// bot must identify again.
    pub fn invalidate_sessions(&self) {
        self.inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).session_id = None;
    }

    /// From now on, leaves clients' close frames unanswered (see `Inner::unanswered_close`).
    pub fn leave_close_frames_unanswered(&self) {
        self.inner.unanswered_close.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every gateway connection without a close frame.
    pub fn drop_gateway(&self) {
        self.inner.drop_generation.send_modify(|generation| *generation += 1);
    }

    pub fn violations(&self) -> Vec<String> {
        self.world().violations.clone()
    }

    /// Waits until `check` returns something, or fails the test after `timeout` saying what
    /// was awaited. Wakes on every change in the simulator, so nothing polls on a timer.
    pub async fn wait_for<T>(&self, what: &str, timeout: Duration, check: impl Fn(&World) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check(&self.world()) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let world = self.world();
                let recent: Vec<String> = world
                    .requests
                    .iter()
                    .rev()
                    .take(10)
                    .map(|request| format!("{} {} -> {}", request.method, request.path, request.status))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last requests: {recent:#?}; violations: {:#?}",
                    world.violations
                );
            }
        }
    }

    fn dispatch(&self, name: &str, data: Value) {
        {
            let mut log = self.inner.gateway.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            log.seq += 1;
            let seq = log.seq;
            log.events.push((seq, name.to_string(), data));
        }
        let _ = self.inner.events.send(());
    }

    fn new_interaction(
        &self,
        user_id: u64,
        channel_id: u64,
        message_id: Option<u64>,
    ) -> (u64, String, Value, Option<Value>) {
        let mut world = self.world();
        let id = world.snowflake();
        let token = format!("interaction-token-{id}");
        world.interactions.insert(
            id,
            InteractionRecord {
                id,
                token: token.clone(),
                user_id,
                channel_id,
                message_id,
                dispatched_at: Instant::now(),
                response: None,
            },
        );
        let member = world.members.get(&user_id).cloned().unwrap_or(Member {
            user_id,
            name: format!("user-{user_id}"),
            roles: Vec::new(),
        });
        let message = message_id.and_then(|id| world.message(id)).map(|message| message.json.clone());
        (id, token, member_json(&member), message)
    }

    fn interaction_payload(
        &self,
        kind: u8,
        id: u64,
        token: &str,
        channel_id: u64,
        member: Value,
        data: Value,
    ) -> Value {
        let is_dm = self.world().channels.get(&channel_id).is_some_and(|channel| channel.kind == 1);
        let mut payload = json!({
            "id": id.to_string(),
            "application_id": APPLICATION_ID.to_string(),
            "type": kind,
            "data": data,
            "channel_id": channel_id.to_string(),
            "channel": {"id": channel_id.to_string(), "type": if is_dm { 1 } else { 0 }},
            "token": token,
            "version": 1,
            "app_permissions": "2251799813685247",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID.to_string()},
            "context": if is_dm { 1 } else { 0 },
            "attachment_size_limit": 10485760,
        });
        if is_dm {
            payload["user"] = member["user"].clone();
        } else {
            payload["guild_id"] = json!(GUILD_ID.to_string());
            payload["guild_locale"] = json!("en-US");
            payload["member"] = member;
        }
        payload
    }

    /// A member clicks a button on a message; returns the interaction id.
    pub fn click(&self, user_id: u64, message_id: u64, custom_id: &str) -> u64 {
        let channel_id = self.world().message(message_id).map(|message| message.channel_id).unwrap_or(0);
        let (id, token, member, message) = self.new_interaction(user_id, channel_id, Some(message_id));
        let mut payload = self.interaction_payload(
            3,
            id,
            &token,
            channel_id,
            member,
            json!({"custom_id": custom_id, "component_type": 2}),
        );
        payload["message"] = message.unwrap_or(json!(null));
        self.dispatch("INTERACTION_CREATE", payload);
        id
    }

    /// A member submits a modal the bot opened; `fields` are (custom_id, value) pairs.
    pub fn submit_modal(
        &self,
        user_id: u64,
        channel_id: u64,
        message_id: Option<u64>,
        custom_id: &str,
        fields: &[(&str, &str)],
    ) -> u64 {
        let (id, token, member, message) = self.new_interaction(user_id, channel_id, message_id);
        let rows: Vec<Value> = fields
            .iter()
            .map(|(field, value)| json!({"type": 1, "components": [{"type": 4, "custom_id": field, "value": value}]}))
            .collect();
        let mut payload = self.interaction_payload(
            5,
            id,
            &token,
            channel_id,
            member,
            json!({"custom_id": custom_id, "components": rows}),
        );
        if let Some(message) = message {
            payload["message"] = message;
        }
        self.dispatch("INTERACTION_CREATE", payload);
        id
    }

    /// A member runs a slash command; `options` as Discord sends them.
    pub fn slash_command(&self, user_id: u64, channel_id: u64, name: &str, options: Value) -> u64 {
        let (id, token, member, _) = self.new_interaction(user_id, channel_id, None);
        let command_id = self
            .world()
            .commands
            .iter()
            .find(|command| command["name"] == name)
            .and_then(|command| command["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1".to_string());
        let data =
            json!({"id": command_id, "name": name, "type": 1, "options": options, "guild_id": GUILD_ID.to_string()});
        let payload = self.interaction_payload(2, id, &token, channel_id, member, data);
        self.dispatch("INTERACTION_CREATE", payload);
        id
    }

    /// Waits for the bot's callback to an interaction and returns its body.
    pub async fn response(&self, interaction_id: u64, timeout: Duration) -> Value {
        self.wait_for(&format!("the answer to interaction {interaction_id}"), timeout, |world| {
            world
                .interactions
                .get(&interaction_id)
                .and_then(|record| record.response.as_ref())
                .map(|(body, _)| body.clone())
        })
        .await
    }
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, router: axum::Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else { return };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Where the repository keeps Discord's API description (a copy of discord/discord-api-spec).
pub fn bundled_spec_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/discord-api-spec/openapi.json")
}

#[cfg(test)]
mod tests {
    //! The simulator's payloads must parse as serenity's models: serenity silently drops an
    //! event it cannot parse, and a test would then wait for an answer that never comes.

    use super::*;
    use serenity::model::prelude::{GuildChannel, Interaction, Message, PrivateChannel, RoleId};

    async fn simulator() -> Simulator {
        let spec = bundled_spec_path();
        Simulator::start(SimulatorOptions { tls: false, spec_path: &spec, bot_token: "token" }).await.expect("starts")
    }

    fn last_event(simulator: &Simulator) -> Value {
        simulator.inner.gateway.lock().expect("log").events.last().expect("an event").2.clone()
    }

    #[tokio::test]
    async fn payloads_parse_as_serenity_models() {
        let simulator = simulator().await;
        simulator.add_member(7, "olivia", &[55]);
        simulator.add_text_channel(100, "triage");
        let sent = json!({"content": "hi", "embeds": [{"title": "t", "description": "d", "color": 3, "fields": [{"name": "a", "value": "b", "inline": true}]}],
                          "components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "x"}]}]});
        let message = world::message_json(5, 100, Some(GUILD_ID), &sent, world::user_json(BOT_USER_ID, "Vouch", true));
        serde_json::from_value::<Message>(message.clone()).expect("message parses");
        simulator.world().messages.push(StoredMessage {
            id: 5,
            channel_id: 100,
            json: message,
            ephemeral_for: None,
            nonce: None,
            edits: 0,
        });

        simulator.click(7, 5, "v1:LM-1:x");
        match serde_json::from_value::<Interaction>(last_event(&simulator)).expect("component interaction parses") {
            Interaction::Component(component) => {
                assert_eq!(component.data.custom_id, "v1:LM-1:x");
                assert_eq!(component.member.expect("member").roles, vec![RoleId::new(55)]);
            }
            other => panic!("not a component interaction: {other:?}"),
        }
        simulator.submit_modal(7, 100, Some(5), "modal", &[("reason", "because")]);
        assert!(matches!(
            serde_json::from_value::<Interaction>(last_event(&simulator)).expect("modal parses"),
            Interaction::Modal(_)
        ));
        simulator.slash_command(7, 100, "case", json!([{"name": "id", "type": 3, "value": "LM-1"}]));
        assert!(matches!(
            serde_json::from_value::<Interaction>(last_event(&simulator)).expect("command parses"),
            Interaction::Command(_)
        ));

        for channel in [
            world::Channel { id: 5, kind: 11, name: "thread".into(), parent_id: Some(100), recipient: None },
            world::Channel { id: 6, kind: 0, name: "text".into(), parent_id: None, recipient: None },
        ] {
            serde_json::from_value::<GuildChannel>(world::channel_json(&channel, GUILD_ID))
                .expect("guild channel parses");
        }
        let dm = world::Channel { id: 8, kind: 1, name: String::new(), parent_id: None, recipient: Some(7) };
        serde_json::from_value::<PrivateChannel>(world::channel_json(&dm, GUILD_ID)).expect("DM channel parses");
    }
}
