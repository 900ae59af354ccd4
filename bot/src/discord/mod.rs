//! Discord, spoken through serenity: the client, the chat sink that posts and edits cards and
//! pings people for the effect dispatcher (`crate::dispatch`), within each channel's budget
//! (`budget`), and (in [`handler`]) the answers to clicks and commands.
//!
//! Decisions are never made here. A click becomes a `CaseEvent` for the engine, written to the
//! store before it is answered; everything slow (posts, pings, edits) is an effect the store
//! queued with the change, which the dispatcher hands here in order and retries until done.

mod advance;
mod budget;
pub mod custom_id;
mod handler;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serenity::all::{
    ChannelId, ClientBuilder, CreateMessage, CreateThread, EditMessage, GatewayIntents, Http, HttpBuilder, Message,
    MessageId, Nonce, RoleId, ShardManager, UserId,
};
use serenity::http::{LightMethod, Request, Route};
use vouch_config::DiscordSettings;
use vouch_playbook::engine::{IsolationAction, PingReason, Side};
use vouch_playbook::{Case, CaseId, Effect, Snowflake, Timestamp};
use vouch_storage::CardRef;

use crate::dispatch::{ChatSink, SinkError};
use crate::service::Service;

/// Sorts a failed request for the dispatcher: a client error other than a rate limit is a
/// refusal (trying again will not help), anything else may work later.
fn sink_error(error: anyhow::Error) -> SinkError {
    if refused_by_discord(&error) {
        SinkError::Refused(error)
    } else {
        SinkError::Failed(error)
    }
}

/// Whether Discord answered with a client error other than a rate limit: trying again will not help.
fn refused_by_discord(error: &anyhow::Error) -> bool {
    let status = error.downcast_ref::<serenity::Error>().and_then(|error| match error {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(response)) => Some(response.status_code),
        _ => None,
    });
    status.is_some_and(|status| status.is_client_error() && status.as_u16() != 429)
}

/// How long a stopping Vouch waits for the gateway to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_millis(750);

/// A running Discord connection.
pub struct DiscordHandle {
    shard_manager: Arc<ShardManager>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DiscordHandle {
    /// Closes the gateway session and stops the dispatcher. serenity waits up to 5 s for the
    /// gateway's answer to its close frame; a stopping Vouch waits `CLOSE_GRACE` and then lets
    /// the connection go (Discord ends an unanswered session on its own), so SIGTERM stays quick.
    pub async fn shutdown(self) {
        if tokio::time::timeout(CLOSE_GRACE, self.shard_manager.shutdown_all()).await.is_err() {
            tracing::warn!("the gateway did not answer the close in time; disconnecting without it");
        }
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

/// Connects to Discord and starts the effect dispatcher with Discord as its chat sink.
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
    let sink =
        DiscordSink { http, settings, service: Arc::clone(&service), budgets: budget::ChannelBudgets::default() };
    let worker_task = tokio::spawn(crate::dispatch::Dispatcher::new(service, sink).run());
    Ok(DiscordHandle { shard_manager, tasks: vec![client_task, worker_task] })
}

/// Carries out chat effects in Discord for the dispatcher, within each channel's budget.
struct DiscordSink {
    http: Arc<Http>,
    settings: DiscordSettings,
    service: Arc<Service>,
    budgets: budget::ChannelBudgets,
}

fn channel(id: Snowflake) -> ChannelId {
    ChannelId::new(id.get())
}

impl ChatSink for DiscordSink {
    async fn carry_out(&mut self, case: &Case, effect: &Effect) -> Result<(), SinkError> {
        self.perform(case, effect).await.map_err(sink_error)
    }

    async fn post_notice(&mut self, notice: &vouch_storage::Notice) -> Result<(), SinkError> {
        let triage = channel(self.settings.triage_channel_id);
        let role = RoleId::new(self.settings.soc_role_id.get());
        // The nonce names the notice, so a post repeated after a crash between posting and
        // taking it off the queue comes back as the same message.
        let message = CreateMessage::new()
            .content(format!("<@&{}> {}", role.get(), render::inert(&notice.text, 1800)))
            .allowed_mentions(render::mention_only_role(role))
            .nonce(Nonce::String(format!("vn-{}", notice.seq)))
            .enforce_nonce(true);
        self.post(triage, &message).await.map(|_| ()).map_err(sink_error)
    }

    async fn post_digest(&mut self, slot: Timestamp, digest: &crate::timers::Digest) -> Result<(), SinkError> {
        let triage = channel(self.settings.triage_channel_id);
        // The nonce names the schedule's slot, so a post repeated after a crash between posting
        // and recording it comes back as the same message.
        let message = CreateMessage::new()
            .content(render::digest_text(digest))
            .allowed_mentions(render::no_mentions())
            .nonce(Nonce::String(format!("vd-{}", slot.unix_millis())))
            .enforce_nonce(true);
        self.post(triage, &message).await.map(|_| ()).map_err(sink_error)
    }
}

impl DiscordSink {
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T, vouch_storage::StorageError> + Send + 'static,
    ) -> anyhow::Result<T> {
        let service = Arc::clone(&self.service);
        Ok(tokio::task::spawn_blocking(move || work(&service)).await??)
    }

    /// Posts a message, within the channel's budget.
    async fn post(&mut self, channel_id: ChannelId, message: &CreateMessage) -> anyhow::Result<Message> {
        let request = Request::new(Route::ChannelMessages { channel_id }, LightMethod::Post)
            .body(Some(serde_json::to_vec(message)?));
        let response = self.send_within_budget(channel_id, request).await?;
        Ok(serde_json::from_slice(&response.bytes().await?)?)
    }

    /// Edits a message, within the channel's budget: Discord counts edits with posts.
    async fn edit(&mut self, channel_id: ChannelId, message_id: MessageId, edit: &EditMessage) -> anyhow::Result<()> {
        let request = Request::new(Route::ChannelMessage { channel_id, message_id }, LightMethod::Patch)
            .body(Some(serde_json::to_vec(edit)?));
        self.send_within_budget(channel_id, request).await.map(|_| ())
    }

    async fn send_within_budget(
        &mut self,
        channel_id: ChannelId,
        request: Request<'_>,
    ) -> anyhow::Result<reqwest::Response> {
        self.budgets.reserve(channel_id).await;
        match self.http.request(request).await {
            Ok(response) => {
                self.budgets.learn(channel_id, response.headers());
                Ok(response)
            }
            Err(error) => {
                if let serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(answer)) = &error {
                    if answer.status_code.as_u16() == 429 {
                        self.budgets.refused(channel_id, None);
                    }
                }
                Err(error.into())
            }
        }
    }

    async fn card(&self, case_id: CaseId) -> anyhow::Result<Option<CardRef>> {
        self.blocking(move |service| service.store.card(case_id)).await
    }

    async fn post_in_thread(&mut self, case_id: CaseId, message: CreateMessage) -> anyhow::Result<()> {
        let card = self.card(case_id).await?.context("the card is not posted yet")?;
        let thread = channel(card.thread_id.unwrap_or(card.message_id));
        self.post(thread, &message).await.map(|_| ())
    }

    async fn perform(&mut self, case: &Case, effect: &Effect) -> anyhow::Result<()> {
        let case_id = case.id;
        let service = Arc::clone(&self.service);
        let playbook = &service.playbook;
        match effect {
            Effect::PostCard => {
                if self.card(case_id).await?.is_some() {
                    return Ok(());
                }
                let triage = channel(self.settings.triage_channel_id);
                // The nonce makes a repeated post (after a crash between posting and recording
                // it) come back as the same message instead of a second card.
                let message = CreateMessage::new()
                    .embed(render::card_embed(case, playbook, service.on_call_line().as_deref()))
                    .components(render::card_components(case, playbook))
                    .allowed_mentions(render::no_mentions())
                    .nonce(Nonce::String(format!("vouch-{}", case.id.number())))
                    .enforce_nonce(true);
                let posted = self.post(triage, &message).await?;
                let thread_name = render::thread_name(case);
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
                    .embed(render::card_embed(case, playbook, service.on_call_line().as_deref()))
                    .components(render::card_components(case, playbook))
                    .allowed_mentions(render::no_mentions());
                self.edit(channel(card.channel_id), MessageId::new(card.message_id.get()), &edit).await?;
                Ok(())
            }
            Effect::PingPerson { person, reason } => {
                let reminder = *reason == PingReason::Reminder;
                match person.discord_id {
                    Some(discord_id) => {
                        let user = UserId::new(discord_id.get());
                        let text = render::confirmation_text(case, &format!("<@{}>", discord_id.get()), reminder);
                        let message = CreateMessage::new()
                            .content(text.clone())
                            .components(render::confirmation_buttons(case, false))
                            .allowed_mentions(render::mention_only_user(user));
                        self.post_in_thread(case_id, message).await?;
                        if self.settings.dm_confirmers {
                            let dm = user.create_dm_channel(&self.http).await?;
                            let direct = CreateMessage::new()
                                .content(render::confirmation_text(case, &render::inert(&person.name, 100), reminder))
                                .components(render::confirmation_buttons(case, false))
                                .allowed_mentions(render::no_mentions());
                            self.post(dm.id, &direct).await?;
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
                    .components(render::acknowledge_buttons(case))
                    .allowed_mentions(allowed);
                self.post_in_thread(case_id, message).await?;
                if let Some(user) = user {
                    let dm = user.create_dm_channel(&self.http).await?;
                    let direct = CreateMessage::new()
                        .content(format!("{lead}You are paged for {}: {}.", case.id, render::inert(reason, 1500)))
                        .components(render::acknowledge_buttons(case))
                        .allowed_mentions(render::no_mentions());
                    self.post(dm.id, &direct).await?;
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
                // The outbox entries were written with the change that asked for the isolation;
                // this only tells the thread.
                let names: Vec<String> = service.webhooks.iter().map(|webhook| webhook.name.clone()).collect();
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
            Effect::DirectMessage { discord_id, message } => {
                let user = UserId::new(discord_id.get());
                let dm = user.create_dm_channel(&self.http).await?;
                let direct =
                    CreateMessage::new().content(render::inert(message, 1900)).allowed_mentions(render::no_mentions());
                self.post(dm.id, &direct).await.map(|_| ())
            }
            // Never queued for the chat: the verification worker sends pushes.
            Effect::SendPush { .. } => Ok(()),
            Effect::Unknown => Ok(()),
        }
    }
}
