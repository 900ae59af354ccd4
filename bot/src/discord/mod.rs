//! Discord, spoken through serenity: the client, the effect worker that posts and edits cards
//! and pings people, and (in [`handler`]) the answers to clicks and commands.
//!
//! Decisions are never made here. A click becomes a `CaseEvent` for the engine, written to the
//! store before it is answered; everything slow (posts, pings, edits) is an effect the store
//! queued with the change, carried out here in order and retried until done.

pub mod custom_id;
mod handler;
pub mod render;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serenity::all::{
    ChannelId, ClientBuilder, CreateMessage, CreateThread, EditMessage, GatewayIntents, Http, HttpBuilder, MessageId,
    Nonce, RoleId, ShardManager, UserId,
};
use tokio::sync::Notify;
use tokio::time::Instant;
use vouch_config::DiscordSettings;
use vouch_playbook::engine::{IsolationAction, PingReason, Side};
use vouch_playbook::{CaseId, Effect, Snowflake};
use vouch_storage::{CardRef, PendingEffect};

use crate::service::Service;

/// Discord lets a channel take 5 messages per 5 seconds; Vouch paces itself to stay inside.
const CHANNEL_POSTS: usize = 5;
const CHANNEL_WINDOW: Duration = Duration::from_secs(5);
/// How often the worker looks for pending effects when nothing wakes it.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Backoff after a failed effect: doubling from the first step up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// A request Discord refuses (4xx other than 429) is tried this often before it is given up.
const REFUSED_ATTEMPTS: u32 = 3;

/// Whether Discord answered with a client error other than a rate limit: trying again will not help.
fn refused_by_discord(error: &anyhow::Error) -> bool {
    let status = error.downcast_ref::<serenity::Error>().and_then(|error| match error {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response)) => Some(response.status_code),
        _ => None,
    });
    status.is_some_and(|status| status.is_client_error() && status.as_u16() != 429)
}

/// A running Discord connection.
pub struct DiscordHandle {
    shard_manager: Arc<ShardManager>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DiscordHandle {
    pub async fn shutdown(self) {
        self.shard_manager.shutdown_all().await;
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Builds serenity's HTTP client. An `http://` base is used as serenity's proxy (its rate
/// limiter must then be off: serenity 0.12.5 only honours the proxy that way). An `https://`
/// base keeps the limiter on: `discord.com` is resolved to the base's address and the optional
/// extra root certificate is trusted, so TLS is verified as usual.
pub async fn build_http(settings: &DiscordSettings) -> anyhow::Result<Http> {
    let token = settings.token.expose();
    let builder = HttpBuilder::new(token).default_allowed_mentions(render::no_mentions());
    if settings.api_base.starts_with("http://") {
        return Ok(builder.proxy(settings.api_base.clone()).ratelimiter_disabled(true).build());
    }
    let Some(host_port) = settings.api_base.strip_prefix("https://") else {
        bail!("discord.api_base must start with http:// or https://");
    };
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if host_port != "discord.com" {
        let with_port = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:443") };
        let address = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} has no address"))?;
        client = client.resolve("discord.com", address);
    }
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem).context("discord.ca_file is not a PEM certificate")?;
        client = client.add_root_certificate(certificate);
    }
    Ok(builder.client(client.build().context("cannot build the HTTP client")?).build())
}

/// Connects to Discord and starts the effect worker.
pub async fn start(settings: DiscordSettings, service: Arc<Service>) -> anyhow::Result<DiscordHandle> {
    let http = build_http(&settings).await?;
    // serenity falls back to the real gateway when this lookup fails; Vouch refuses instead,
    // so a misconfigured base never silently talks to discord.com.
    let gateway = http.get_gateway().await.context("cannot get the gateway address from the Discord API")?;
    tracing::info!(gateway = %gateway.url, api = %settings.api_base, "connecting to Discord");
    let handler = handler::Handler { settings: settings.clone(), service: Arc::clone(&service) };
    let mut client = ClientBuilder::new_with_http(http, GatewayIntents::GUILDS)
        .event_handler(handler)
        .await
        .context("cannot build the Discord client")?;
    let http = Arc::clone(&client.http);
    let shard_manager = Arc::clone(&client.shard_manager);
    let client_task = tokio::spawn(async move {
        if let Err(error) = client.start().await {
            tracing::error!(error = %error, "the Discord client stopped");
        }
    });
    let worker = Worker { http, settings, service, pacing: HashMap::new(), backoff: HashMap::new() };
    let worker_task = tokio::spawn(worker.run());
    Ok(DiscordHandle { shard_manager, tasks: vec![client_task, worker_task] })
}

/// Carries out queued effects, in order per case, pacing posts per channel.
struct Worker {
    http: Arc<Http>,
    settings: DiscordSettings,
    service: Arc<Service>,
    pacing: HashMap<ChannelId, VecDeque<Instant>>,
    /// Cases whose last effect failed: how many times in a row, and when to try again.
    backoff: HashMap<CaseId, (u32, Instant)>,
}

fn channel(id: Snowflake) -> ChannelId {
    ChannelId::new(id.get())
}

impl Worker {
    async fn run(mut self) {
        let wake: Arc<Notify> = Arc::clone(&self.service.effects_ready);
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %format!("{error:#}"), "carrying out effects failed; will retry");
            }
            let _ = tokio::time::timeout(RETRY_EVERY, notified).await;
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T, vouch_storage::StorageError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let service = Arc::clone(&self.service);
        Ok(tokio::task::spawn_blocking(move || work(&service)).await??)
    }

    /// One pass over everything pending. A case whose effect fails keeps its later effects
    /// for the next pass, so its messages never come out of order.
    async fn pass(&mut self) -> anyhow::Result<()> {
        if self.blocking(crate::timers::digest_due).await? {
            let text = self.blocking(crate::timers::digest_text).await?;
            let triage = channel(self.settings.triage_channel_id);
            self.pace(triage).await;
            triage
                .send_message(&self.http, CreateMessage::new().content(text).allowed_mentions(render::no_mentions()))
                .await?;
        }
        let pending = self.blocking(|service| service.store.pending_effects(500)).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut blocked: HashSet<CaseId> = HashSet::new();
        // Only the last card update of a case in this pass is needed: it shows the latest state.
        let mut last_update: HashMap<CaseId, u64> = HashMap::new();
        for item in &pending {
            if item.effect == Effect::UpdateCard {
                last_update.insert(item.case_id, item.seq);
            }
        }
        let now = Instant::now();
        for item in pending {
            if blocked.contains(&item.case_id) {
                continue;
            }
            if self.backoff.get(&item.case_id).is_some_and(|(_, retry_at)| *retry_at > now) {
                blocked.insert(item.case_id);
                continue;
            }
            let superseded = item.effect == Effect::UpdateCard && last_update.get(&item.case_id) != Some(&item.seq);
            let outcome = if superseded { Ok(()) } else { self.perform(&item).await };
            match outcome {
                Ok(()) => {
                    let seq = item.seq;
                    self.blocking(move |service| service.store.complete_effect(seq)).await?;
                    self.backoff.remove(&item.case_id);
                }
                Err(error)
                    if refused_by_discord(&error)
                        && self.backoff.get(&item.case_id).map_or(0, |(failures, _)| *failures) + 1
                            >= REFUSED_ATTEMPTS =>
                {
                    // Discord keeps refusing (a deleted message, a missing permission): retrying
                    // forever would block every later effect of the case. Give up on this one,
                    // say so in the audit log, and go on.
                    tracing::error!(error = %format!("{error:#}"), case_id = %item.case_id, effect = ?item.effect, "Discord refused an effect; giving up on it");
                    let (seq, case_id) = (item.seq, item.case_id);
                    let detail = serde_json::json!({"effect": item.effect, "error": format!("{error:#}")});
                    let now = self.service.clock.now();
                    self.blocking(move |service| {
                        service.store.record("effect.abandoned", Some(case_id), None, detail, now)?;
                        service.store.complete_effect(seq)
                    })
                    .await?;
                    self.backoff.remove(&item.case_id);
                }
                Err(error) => {
                    let failures = self.backoff.get(&item.case_id).map_or(0, |(failures, _)| *failures) + 1;
                    let delay = BACKOFF_FIRST.saturating_mul(1 << failures.min(6).saturating_sub(1)).min(BACKOFF_CAP);
                    self.backoff.insert(item.case_id, (failures, Instant::now() + delay));
                    tracing::warn!(
                        error = %format!("{error:#}"),
                        case_id = %item.case_id,
                        effect = ?item.effect,
                        failures,
                        retry_in_ms = delay.as_millis() as u64,
                        "effect failed; will retry"
                    );
                    blocked.insert(item.case_id);
                }
            }
        }
        Ok(())
    }

    /// Waits until the channel may take another message.
    async fn pace(&mut self, channel_id: ChannelId) {
        let posts = self.pacing.entry(channel_id).or_default();
        let now = Instant::now();
        while posts.front().is_some_and(|sent| now.duration_since(*sent) >= CHANNEL_WINDOW) {
            posts.pop_front();
        }
        if posts.len() >= CHANNEL_POSTS {
            if let Some(oldest) = posts.front().copied() {
                tokio::time::sleep_until(oldest + CHANNEL_WINDOW).await;
            }
            posts.pop_front();
        }
        posts.push_back(Instant::now());
    }

    async fn card(&self, case_id: CaseId) -> anyhow::Result<Option<CardRef>> {
        self.blocking(move |service| service.store.card(case_id)).await
    }

    async fn post_in_thread(&mut self, case_id: CaseId, message: CreateMessage) -> anyhow::Result<()> {
        let card = self.card(case_id).await?.context("the card is not posted yet")?;
        let thread = channel(card.thread_id.unwrap_or(card.message_id));
        self.pace(thread).await;
        thread.send_message(&self.http, message).await?;
        Ok(())
    }

    async fn perform(&mut self, item: &PendingEffect) -> anyhow::Result<()> {
        let case_id = item.case_id;
        let case = self.blocking(move |service| service.store.case(case_id)).await?;
        let service = Arc::clone(&self.service);
        let playbook = &service.playbook;
        match &item.effect {
            Effect::PostCard => {
                if self.card(case_id).await?.is_some() {
                    return Ok(());
                }
                let triage = channel(self.settings.triage_channel_id);
                self.pace(triage).await;
                // The nonce makes a repeated post (after a crash between posting and recording
                // it) come back as the same message instead of a second card.
                let message = CreateMessage::new()
                    .embed(render::card_embed(&case, playbook, service.on_call_line().as_deref()))
                    .components(render::card_components(&case, playbook))
                    .allowed_mentions(render::no_mentions())
                    .nonce(Nonce::String(format!("vouch-{}", case.id.number())))
                    .enforce_nonce(true);
                let posted = triage.send_message(&self.http, message).await?;
                let thread_name = render::thread_name(&case);
                let thread_id = match triage
                    .create_thread_from_message(&self.http, posted.id, CreateThread::new(thread_name))
                    .await
                {
                    Ok(thread) => thread.id,
                    // A thread started on a message takes the message's id; if it exists already
                    // (the earlier attempt got that far), that is the thread.
                    Err(error) if error.to_string().contains("already been created") => ChannelId::new(posted.id.get()),
                    Err(error) => return Err(error.into()),
                };
                let card = CardRef {
                    channel_id: Snowflake::parse(&triage.get().to_string()).map_err(anyhow::Error::msg)?,
                    message_id: Snowflake::parse(&posted.id.get().to_string()).map_err(anyhow::Error::msg)?,
                    thread_id: Some(Snowflake::parse(&thread_id.get().to_string()).map_err(anyhow::Error::msg)?),
                };
                self.blocking(move |service| service.store.set_card(case_id, &card)).await?;
                tracing::info!(case_id = %case.id, message_id = %posted.id, "card posted");
                Ok(())
            }
            Effect::UpdateCard => {
                let Some(card) = self.card(case_id).await? else { return Ok(()) };
                let edit = EditMessage::new()
                    .embed(render::card_embed(&case, playbook, service.on_call_line().as_deref()))
                    .components(render::card_components(&case, playbook))
                    .allowed_mentions(render::no_mentions());
                channel(card.channel_id).edit_message(&self.http, MessageId::new(card.message_id.get()), edit).await?;
                Ok(())
            }
            Effect::PingPerson { person, reason } => {
                let reminder = *reason == PingReason::Reminder;
                match person.discord_id {
                    Some(discord_id) => {
                        let user = UserId::new(discord_id.get());
                        let text = render::confirmation_text(&case, &format!("<@{}>", discord_id.get()), reminder);
                        let message = CreateMessage::new()
                            .content(text.clone())
                            .components(render::confirmation_buttons(&case, false))
                            .allowed_mentions(render::mention_only_user(user));
                        self.post_in_thread(case_id, message).await?;
                        if self.settings.dm_confirmers {
                            let dm = user.create_dm_channel(&self.http).await?;
                            self.pace(dm.id).await;
                            let direct = CreateMessage::new()
                                .content(render::confirmation_text(&case, &render::inert(&person.name, 100), reminder))
                                .components(render::confirmation_buttons(&case, false))
                                .allowed_mentions(render::no_mentions());
                            dm.id.send_message(&self.http, direct).await?;
                        }
                        Ok(())
                    }
                    None => {
                        let text = format!(
                            "<@&{}> {} should confirm this movement but has no Discord id in the directory; please reach them another way.",
                            self.settings.soc_role_id.get(),
                            render::inert(&person.name, 100)
                        );
                        let role = RoleId::new(self.settings.soc_role_id.get());
                        self.post_in_thread(
                            case_id,
                            CreateMessage::new().content(text).allowed_mentions(render::mention_only_role(role)),
                        )
                        .await
                    }
                }
            }
            Effect::NotifySoc { message } => {
                let role = RoleId::new(self.settings.soc_role_id.get());
                let text = format!("<@&{}> {}", role.get(), render::inert(message, 1500));
                self.post_in_thread(
                    case_id,
                    CreateMessage::new().content(text).allowed_mentions(render::mention_only_role(role)),
                )
                .await
            }
            Effect::PageOnCall { reason, secondary, reminder } => {
                let role = RoleId::new(self.settings.oncall_role_id.unwrap_or(self.settings.soc_role_id).get());
                let (primary, second) = service.on_call();
                let person = if *secondary { second.or(primary) } else { primary };
                let user = person.and_then(|person| person.discord_id).map(|id| UserId::new(id.get()));
                let lead = match (reminder, secondary) {
                    (true, _) => "Reminder: nobody has acknowledged this page yet. ",
                    (false, true) => "The page was not acknowledged; paging the secondary. ",
                    (false, false) => "",
                };
                let who = match user {
                    Some(user) => format!("<@{}> <@&{}>", user.get(), role.get()),
                    None => format!("<@&{}>", role.get()),
                };
                let text = format!(
                    "{lead}{who} On-call, you are paged for {}: {}. Acknowledge when you are on it.",
                    case.id,
                    render::inert(reason, 1500)
                );
                let allowed = match user {
                    Some(user) => render::mention_only_user_and_role(user, role),
                    None => render::mention_only_role(role),
                };
                let message = CreateMessage::new()
                    .content(text.clone())
                    .components(render::acknowledge_buttons(&case))
                    .allowed_mentions(allowed);
                self.post_in_thread(case_id, message).await?;
                if let Some(user) = user {
                    let dm = user.create_dm_channel(&self.http).await?;
                    self.pace(dm.id).await;
                    let direct = CreateMessage::new()
                        .content(format!("{lead}You are paged for {}: {}.", case.id, render::inert(reason, 1500)))
                        .components(render::acknowledge_buttons(&case))
                        .allowed_mentions(render::no_mentions());
                    dm.id.send_message(&self.http, direct).await?;
                }
                Ok(())
            }
            Effect::ProposeIsolation { side } => {
                let system = match side {
                    Side::Source => &case.alert().source,
                    Side::Target => &case.alert().target,
                };
                let text = format!(
                    "Isolating the {} system **{}** is proposed. A SOC member can request it with the Isolate button on the card.",
                    if *side == Side::Source { "source" } else { "target" },
                    render::inert(&system.label(), 200)
                );
                self.post_in_thread(case_id, CreateMessage::new().content(text).allowed_mentions(render::no_mentions()))
                    .await
            }
            Effect::CallIsolationWebhook { request_id } => {
                let Some(request) = case.isolations.iter().find(|request| &request.id == request_id).cloned() else {
                    return Ok(());
                };
                let entries =
                    crate::webhooks::outbox_entries(&case, request_id, &service.webhooks, service.clock.now());
                let names: Vec<String> = service.webhooks.iter().map(|webhook| webhook.name.clone()).collect();
                if !entries.is_empty() {
                    let now = service.clock.now();
                    self.blocking(move |service| {
                        for entry in &entries {
                            service.store.enqueue_outbox(entry, now)?;
                        }
                        Ok(())
                    })
                    .await?;
                    service.outbox_ready.notify_one();
                    tracing::info!(case_id = %case.id, request_id = %request.id, "isolation request queued for delivery");
                }
                let verb = match request.action {
                    IsolationAction::Isolate => "Isolation",
                    IsolationAction::Release => "Release of the isolation",
                };
                let mut text = format!(
                    "{verb} of **{}** was requested by {}",
                    render::inert(&case.system(request.side).label(), 200),
                    render::inert(&request.requested_by.name, 100)
                );
                if let Some(approver) = &request.approved_by {
                    text.push_str(&format!(" and approved by {}", render::inert(&approver.name, 100)));
                }
                if names.is_empty() {
                    let role = RoleId::new(self.settings.soc_role_id.get());
                    text = format!(
                        "<@&{}> {text}, but no isolation webhook is configured: contain the host through the EDR console.",
                        role.get()
                    );
                    return self
                        .post_in_thread(
                            case_id,
                            CreateMessage::new().content(text).allowed_mentions(render::mention_only_role(role)),
                        )
                        .await;
                }
                text.push_str(&format!("; delivering to {} ({}).", names.join(", "), request.id));
                self.post_in_thread(case_id, CreateMessage::new().content(text).allowed_mentions(render::no_mentions()))
                    .await
            }
            Effect::Announce { message } => {
                self.post_in_thread(
                    case_id,
                    CreateMessage::new().content(render::inert(message, 1900)).allowed_mentions(render::no_mentions()),
                )
                .await
            }
            // The deadline is stored with the case; the reminder timer reads it from there.
            Effect::ScheduleReminder { .. } => Ok(()),
            Effect::Refused { .. } => Ok(()),
        }
    }
}
