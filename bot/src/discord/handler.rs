//! Answers to gateway events: clicks, form submissions, slash commands, and start-up work.
//!
//! Every click is written to the store (answer, refusal or form opened) before Discord gets its
//! answer, which comes right after the write, well within the 3 seconds Discord allows. Posting
//! and pinging are left to the effect dispatcher.

use std::sync::Arc;

use serde_json::json;
use serenity::all::{
    ActionRowComponent, ButtonStyle, CommandInteraction, CommandOptionType, ComponentInteraction, Context,
    CreateActionRow, CreateButton, CreateCommand, CreateCommandOption, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateModal, EventHandler, GuildId, InputTextStyle, Interaction, Member,
    ModalInteraction, Ready, RoleId, User,
};
use vouch_config::DiscordSettings;
use vouch_playbook::engine::ConfirmVerdict;
use vouch_playbook::{Actor, AuditKind, CaseEvent, CaseId, CaseState, EventKind, Snowflake};

use super::custom_id::{Action, ComponentId};
use super::render;
use crate::service::{CaseRequest, Change, Service};
use crate::verification::PushAsked;

/// Cases on one page of `/cases`: ten lines stay well within a message's 2 000 characters.
const CASES_PER_PAGE: usize = 10;

/// The form field that carries a justification.
const JUSTIFICATION_FIELD: &str = "justification";

pub(super) struct Handler {
    pub(super) settings: DiscordSettings,
    pub(super) service: Arc<Service>,
}

/// What became of a click, for the answer Discord gets.
enum Outcome {
    Refused(String),
    /// The id is well-formed but names no case (one from another Vouch, or made up).
    NoSuchCase(CaseId),
    /// Recorded; the dispatcher is woken for its effects once the interaction is answered (see
    /// [`Handler::hand_over_effects`]).
    Applied {
        case: Box<vouch_playbook::Case>,
        verdict: Option<ConfirmVerdict>,
    },
    Failed,
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        // serenity runs this again on every re-identify: everything here is idempotent (a bulk
        // overwrite of the commands, and a nudge to the worker, which posts each card once).
        tracing::info!(user = %ready.user.name, session = %ready.session_id, "connected to Discord");
        let guild = GuildId::new(self.settings.guild_id.get());
        let commands = vec![
            CreateCommand::new("case").description("Show a case").add_option(
                CreateCommandOption::new(CommandOptionType::String, "id", "The case id, such as LM-42").required(true),
            ),
            CreateCommand::new("cases").description("List the open cases"),
            CreateCommand::new("oncall").description("Who is paged when a case is escalated"),
        ];
        // Linking needs a push provider to verify with.
        let commands = if self.service.pushes.is_some() {
            let mut commands = commands;
            commands.push(
                CreateCommand::new("link")
                    .description("Link this Discord account to you in the directory (a push to your phone confirms it)")
                    .add_option(
                        CreateCommandOption::new(
                            CommandOptionType::String,
                            "person",
                            "Your directory id, such as alice",
                        )
                        .required(true),
                    ),
            );
            commands.push(CreateCommand::new("unlink").description("Unlink this Discord account from its person"));
            commands.push(
                CreateCommand::new("approvals")
                    .description("Standing approvals and declarations in force, to second or revoke"),
            );
            let text = |name: &str, description: &str| {
                CreateCommandOption::new(CommandOptionType::String, name, description).required(true)
            };
            commands.push(
                CreateCommand::new("expect")
                    .description("Declare a movement you will make, so its alerts are vouched for (a push confirms it)")
                    .add_option(text("source", "The host you connect from, such as WS-17"))
                    .add_option(text("target", "The host you connect to, such as SRV-DB-01"))
                    .add_option(text("account", "The account you connect as"))
                    .add_option(
                        CreateCommandOption::new(CommandOptionType::Integer, "hours", "For how long (1 to 24 hours)")
                            .min_int_value(1)
                            .max_int_value(24)
                            .required(true),
                    )
                    .add_option(text("reason", "Why, in a few words"))
                    .add_option(
                        CreateCommandOption::new(
                            CommandOptionType::Integer,
                            "starts_in_minutes",
                            "When it starts, in minutes from now (default now)",
                        )
                        .min_int_value(0)
                        .max_int_value(1440),
                    ),
            );
            commands
        } else {
            commands
        };
        if let Err(error) = guild.set_commands(&ctx.http, commands).await {
            tracing::warn!(error = %error, "cannot register the slash commands");
        }
        self.service.effects_ready.notify_one();
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        // A replica stepping down may still hear the gateway for a moment: the leader answers.
        if self.standing_by() {
            return;
        }
        match interaction {
            Interaction::Component(component) => self.on_component(&ctx, &component).await,
            Interaction::Modal(modal) => self.on_modal(&ctx, &modal).await,
            Interaction::Command(command) => self.on_command(&ctx, &command).await,
            _ => {}
        }
    }
}

pub(super) fn ephemeral(text: impl Into<String>) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new().content(text).ephemeral(true).allowed_mentions(render::no_mentions()),
    )
}

/// The engine's refusal of a click or a form, said privately; for an account that must be linked
/// first, with how to link it here.
fn refused(reason: &str) -> CreateInteractionResponse {
    if reason == vouch_playbook::engine::NOT_LINKED {
        return ephemeral(format!("This isn't yours to answer: {reason} with /link and your directory id."));
    }
    ephemeral(format!("This isn't yours to answer: {reason}."))
}

/// What a form's text field `name` holds (empty when absent).
pub(super) fn form_field(modal: &ModalInteraction, name: &str) -> String {
    modal
        .data
        .components
        .iter()
        .flat_map(|row| row.components.iter())
        .find_map(|component| match component {
            ActionRowComponent::InputText(input) if input.custom_id == name => input.value.clone(),
            _ => None,
        })
        .unwrap_or_default()
}

fn snowflake(id: u64) -> Option<Snowflake> {
    Snowflake::parse(&id.to_string()).ok()
}

impl Handler {
    /// Who clicked: the person their Discord account is linked to (`/link`), else the person the
    /// directory names for that account.
    pub(super) fn actor(&self, user: &User, member: Option<&Member>) -> Actor {
        let discord_id = snowflake(user.id.get());
        let directory = self.service.directory.get();
        let linked = discord_id.and_then(|id| self.service.links.person(id)).and_then(|id| directory.person(&id));
        let person = linked.or_else(|| discord_id.and_then(|id| directory.person_by_discord(id)));
        let soc_role = RoleId::new(self.settings.soc_role_id.get());
        Actor {
            discord_id,
            person: person.map(|person| person.id.clone()),
            name: person.map_or_else(|| user.name.clone(), |person| person.name.clone()),
            soc: member.is_some_and(|member| member.roles.contains(&soc_role)),
            roles: person.map(|person| person.roles.clone()).unwrap_or_default(),
            linked: linked.is_some(),
        }
    }

    /// A page of the open cases, newest first, below case `before` (from the newest when
    /// `None`), with a button for the next page when there is one; `None` when the store could
    /// not be read.
    async fn open_cases_page(&self, before: Option<CaseId>) -> Option<CreateInteractionResponseMessage> {
        let filter = vouch_playbook::case_list::CaseFilter {
            states: Some(CaseState::ALL.iter().copied().filter(|state| !state.is_finished()).collect()),
            ..Default::default()
        };
        let page = self.blocking(move |service| service.store.case_page(&filter, before, CASES_PER_PAGE)).await?;
        let lines: Vec<String> = page
            .cases
            .iter()
            .map(|case| {
                format!(
                    "**{}** {} → {} ({} alert(s)): {}",
                    case.id,
                    render::inert(&case.source, 60),
                    render::inert(&case.target, 60),
                    case.alert_count,
                    render::state_label(case.state)
                )
            })
            .collect();
        let heading = match (before, lines.is_empty()) {
            (None, true) => "No open cases.".to_string(),
            (Some(_), true) => "No more open cases.".to_string(),
            (None, false) => "Open cases, newest first:".to_string(),
            (Some(before), false) => format!("Open cases before {before}, newest first:"),
        };
        let buttons = match page.next_before {
            Some(next) => vec![CreateActionRow::Buttons(vec![CreateButton::new(
                super::custom_id::ComponentId::CasesBefore(next).to_string(),
            )
            .label(format!("Older than {next}"))
            .style(ButtonStyle::Secondary)])],
            None => Vec::new(),
        };
        Some(
            CreateInteractionResponseMessage::new()
                .content(render::cap(&format!("{heading}\n{}", lines.join("\n")), 1900))
                .components(buttons)
                .allowed_mentions(render::no_mentions()),
        )
    }

    /// `/link person`: records the request and sends a push to that person; only their approval
    /// binds this account to them.
    async fn link(&self, user: &User, member: Option<&Member>, named: &str) -> String {
        let actor = self.actor(user, member);
        let Some(discord_id) = actor.discord_id else {
            return "This Discord account has no id Vouch can read.".to_string();
        };
        let Ok(person_id) = vouch_playbook::PersonId::parse(&named.trim().to_ascii_lowercase()) else {
            return format!("`{}` is not a directory id.", render::inert(named, 64));
        };
        let Some(person) = self.service.directory.get().person(&person_id).cloned() else {
            return format!("Nobody in the directory is `{person_id}`.");
        };
        let lifetime = self.service.playbook.push_lifetime_millis();
        // The account's id, not its chosen name: the phone shows no text the requester wrote.
        let summary = format!("Link Discord account {} to {} in Vouch", discord_id, person.name);
        let now = self.service.clock.now();
        let requesting = actor.clone();
        let requested = self
            .blocking(move |service| service.request_link(&requesting, discord_id, person_id, summary, lifetime, now))
            .await;
        match requested {
            Some(PushAsked::Sent(push)) => {
                self.service.send_push(push);
                format!(
                    "A push was sent to {}'s phone. Once they approve it, this Discord account answers in Vouch as them.",
                    render::inert(&person.name, 100)
                )
            }
            Some(PushAsked::Refused(reason)) => format!("Not linked: {}.", render::inert(&reason, 300)),
            None => "Vouch could not record this; please try again.".to_string(),
        }
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Service) -> Result<T, vouch_storage::StorageError> + Send + 'static,
    ) -> Option<T> {
        let service = Arc::clone(&self.service);
        match tokio::task::spawn_blocking(move || work(&service)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::error!(error = %error, "the store refused a click");
                None
            }
            Err(error) => {
                tracing::error!(error = %error, "a click's store task failed");
                None
            }
        }
    }

    /// Records a click that never reached a case (a malformed or forged id).
    async fn record_refusal(&self, actor: &Actor, detail: serde_json::Value) {
        let actor = actor.clone();
        self.blocking(move |service| service.record(AuditKind::RefusedInvalidClick, None, Some(&actor), detail)).await;
    }

    /// Applies a click's event through the engine and records it; durable on return.
    async fn apply(
        &self,
        case_id: CaseId,
        kind: EventKind,
        actor: &Actor,
        detail: serde_json::Value,
        event: CaseEvent,
        redrawn_in_answer: bool,
    ) -> Outcome {
        let verdict = match &event {
            CaseEvent::Confirm { verdict, .. } => Some(*verdict),
            _ => None,
        };
        let request = CaseRequest { redrawn_in_answer, ..CaseRequest::new(case_id, kind, actor, detail, event) };
        match self.service.apply_durably(request, self.service.clock.now()).await {
            Ok(Change::Applied { case }) => Outcome::Applied { case, verdict },
            Ok(Change::Refused { reason }) => Outcome::Refused(reason),
            Ok(Change::NoSuchCase) => Outcome::NoSuchCase(case_id),
            Err(error) => {
                tracing::error!(error = %error, case_id = %case_id, "the store refused a click");
                Outcome::Failed
            }
        }
    }

    /// Wakes the dispatcher for a click's effects (and any redraw of the card), once the click
    /// is answered.
    fn hand_over_effects(&self) {
        self.service.effects_ready.notify_one();
    }

    /// Answers an interaction; false when Discord did not take the answer.
    fn standing_by(&self) -> bool {
        self.service.store.fence() == vouch_storage::Fence::Standby
    }

    pub(super) async fn respond(
        &self,
        ctx: &Context,
        response: CreateInteractionResponse,
        answer: impl AsyncRespond,
    ) -> bool {
        // This replica stopped leading while it worked on the answer (its change was refused as
        // fenced): the leader answers the interaction, not a replica that changed nothing.
        if self.standing_by() {
            tracing::info!("no longer leading: leaving the interaction to the leader");
            return false;
        }
        match answer.send(ctx, response).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(error = %error, "cannot answer an interaction");
                false
            }
        }
    }

    async fn on_component(&self, ctx: &Context, component: &ComponentInteraction) {
        let actor = self.actor(&component.user, component.member.as_ref());
        let detail = json!({
            "custom_id": component.data.custom_id,
            "message_id": component.message.id.get().to_string(),
            "channel_id": component.channel_id.get().to_string(),
        });
        let id = match ComponentId::parse(&component.data.custom_id) {
            Ok(ComponentId::Case(id)) => id,
            Ok(ComponentId::Vouch(button)) => return self.change_vouch(ctx, component, actor, button).await,
            Ok(ComponentId::CasesBefore(before)) => {
                // The next page replaces the one clicked on (a private message, so only its reader
                // sees it turn).
                let response = match self.open_cases_page(Some(before)).await {
                    Some(message) => CreateInteractionResponse::UpdateMessage(message),
                    None => ephemeral("Vouch could not read its cases; please try again."),
                };
                self.respond(ctx, response, component).await;
                return;
            }
            Err(reason) => {
                self.record_refusal(&actor, json!({"request": detail, "reason": reason})).await;
                self.respond(ctx, ephemeral(format!("This button isn't one Vouch can act on: {reason}.")), component)
                    .await;
                return;
            }
        };
        let case_id = id.case_id;
        if id.action == Action::ExpectAgain {
            return self.open_approval_form(ctx, component, &actor, case_id, detail).await;
        }
        // Closing, and vouching for a critical system, ask for a justification first: the case
        // says when one is needed, and the engine refuses the event without it.
        let needs_form = match &id.action {
            Action::Close => actor.soc,
            Action::Confirm(ConfirmVerdict::Expected) => {
                let case = self.blocking(move |service| service.store.case(case_id)).await;
                case.is_some_and(|case| case.vouching_needs_justification(&actor))
            }
            _ => false,
        };
        if needs_form {
            let recorded_actor = actor.clone();
            let recorded = self
                .blocking(move |service| {
                    service.record(AuditKind::FormOpened, Some(case_id), Some(&recorded_actor), detail)
                })
                .await;
            if recorded.is_none() {
                self.respond(ctx, ephemeral("Vouch could not record this click; please try again."), component).await;
                return;
            }
            let title = match id.action {
                Action::Close => format!("Close {case_id} as expected"),
                _ => format!("Vouch for {case_id}"),
            };
            let input =
                CreateInputText::new(InputTextStyle::Paragraph, "Why is this movement expected?", JUSTIFICATION_FIELD)
                    .required(true)
                    .min_length(3)
                    .max_length(1000);
            let modal = CreateModal::new(id.to_string(), title).components(vec![CreateActionRow::InputText(input)]);
            self.respond(ctx, CreateInteractionResponse::Modal(modal), component).await;
            return;
        }
        let acknowledging = id.action == Action::Acknowledge;
        // Confirmation and acknowledgement buttons live on pings in the thread, every other
        // button on the card. Deciding by the button, not by the stored card reference, holds
        // even for a click that beats the recording of where the card was posted.
        let on_card = !matches!(id.action, Action::Confirm(_) | Action::Acknowledge);
        let (kind, event) = match id.action {
            Action::Answer { question, answer } => {
                (EventKind::ClickAnswer, CaseEvent::Answer { question, answer, by: actor.clone() })
            }
            Action::AskOwner => (EventKind::ClickAskOwner, CaseEvent::AskConfirmation { by: actor.clone() }),
            Action::Escalate => (EventKind::ClickEscalate, CaseEvent::Escalate { by: actor.clone(), reason: None }),
            // Only non-SOC members get here; the engine refuses them and the refusal is recorded.
            Action::Close => {
                (EventKind::ClickClose, CaseEvent::Close { by: actor.clone(), justification: String::new() })
            }
            Action::Confirm(verdict) => {
                (EventKind::ClickConfirm, CaseEvent::Confirm { verdict, by: actor.clone(), justification: None })
            }
            Action::Isolate(side) => (EventKind::ClickIsolate, CaseEvent::Isolate { side, by: actor.clone() }),
            Action::Release(side) => (EventKind::ClickRelease, CaseEvent::ReleaseIsolation { side, by: actor.clone() }),
            Action::Acknowledge => (EventKind::ClickAcknowledge, CaseEvent::Acknowledge { by: actor.clone() }),
            // Opens its form above.
            Action::ExpectAgain => return,
        };
        // A click on the card is answered with the redrawn card, so the change queues no card
        // update of its own: it would only repeat that edit and spend the channel's budget. That
        // holds when the clicked message is the card (or the card is not recorded yet, when the
        // click came before the recording of its post).
        let redrawn_in_answer = on_card
            && match self.service.store.card(case_id) {
                Ok(card) => card.is_none_or(|card| card.message_id.get() == component.message.id.get()),
                Err(_) => false,
            };
        let outcome = self.apply(case_id, kind, &actor, detail, event, redrawn_in_answer).await;
        let changed = matches!(outcome, Outcome::Applied { .. });
        let response = match outcome {
            Outcome::Failed => ephemeral("Vouch could not record this click; please try again."),
            Outcome::NoSuchCase(case_id) => ephemeral(format!("There is no case {case_id}; nothing was changed.")),
            Outcome::Refused(reason) => refused(&reason),
            Outcome::Applied { case, verdict } => {
                if on_card {
                    let playbook = &self.service.playbook;
                    CreateInteractionResponse::UpdateMessage(
                        CreateInteractionResponseMessage::new()
                            .embed(render::card_embed(&case, playbook, self.service.on_call_line().as_deref()))
                            .components(render::card_components(&case, playbook))
                            .allowed_mentions(render::no_mentions()),
                    )
                } else {
                    // A confirmation request: record the answer on it and retire its buttons.
                    let answered = match verdict {
                        Some(ConfirmVerdict::Expected) => "Expected",
                        Some(ConfirmVerdict::NotExpected) => "Not expected",
                        Some(ConfirmVerdict::NotMe) => "Not me",
                        None if acknowledging => "Acknowledged",
                        None => "Done",
                    };
                    // An answer held for a push keeps its buttons: if the push is not approved,
                    // the person may answer again.
                    let held = case.pending_verification.as_ref().is_some_and(|pending| pending.by.same_person(&actor));
                    let content = if held {
                        format!(
                            "{}\n**{answered}**, answered by {}: it counts once they approve the push sent to their phone.",
                            component.message.content,
                            render::inert(&actor.name, 100)
                        )
                    } else {
                        format!(
                            "{}\n**{answered}**, answered by {}.",
                            component.message.content,
                            render::inert(&actor.name, 100)
                        )
                    };
                    let buttons = if acknowledging {
                        render::acknowledge_buttons(&case)
                    } else {
                        render::confirmation_buttons(&case, !held)
                    };
                    CreateInteractionResponse::UpdateMessage(
                        CreateInteractionResponseMessage::new()
                            .content(render::cap(&content, 1900))
                            .components(buttons)
                            .allowed_mentions(render::no_mentions()),
                    )
                }
            }
        };
        let answered = self.respond(ctx, response, component).await;
        if !changed {
            return;
        }
        if redrawn_in_answer && !answered {
            // Discord did not take the redrawn card: the dispatcher draws it instead.
            self.blocking(move |service| service.queue_card_update(case_id)).await;
        }
        self.hand_over_effects();
    }

    async fn on_modal(&self, ctx: &Context, modal: &ModalInteraction) {
        let actor = self.actor(&modal.user, modal.member.as_ref());
        let justification = form_field(modal, JUSTIFICATION_FIELD);
        let detail = json!({"custom_id": modal.data.custom_id, "justification": justification});
        let id = match ComponentId::parse(&modal.data.custom_id) {
            Ok(ComponentId::Case(id)) if id.action == Action::ExpectAgain => {
                return self.propose_approval(ctx, modal, actor, id.case_id).await;
            }
            Ok(ComponentId::Case(id)) => id,
            Ok(ComponentId::Vouch(_) | ComponentId::CasesBefore(_)) => {
                let reason = "this form does not exist".to_string();
                self.record_refusal(&actor, json!({"request": detail, "reason": reason})).await;
                self.respond(ctx, ephemeral(format!("This form isn't one Vouch can act on: {reason}.")), modal).await;
                return;
            }
            Err(reason) => {
                self.record_refusal(&actor, json!({"request": detail, "reason": reason})).await;
                self.respond(ctx, ephemeral(format!("This form isn't one Vouch can act on: {reason}.")), modal).await;
                return;
            }
        };
        let (kind, event) = match id.action {
            Action::Close => {
                (EventKind::FormClose, CaseEvent::Close { by: actor.clone(), justification: justification.clone() })
            }
            Action::Confirm(ConfirmVerdict::Expected) => (
                EventKind::FormConfirm,
                CaseEvent::Confirm {
                    verdict: ConfirmVerdict::Expected,
                    by: actor.clone(),
                    justification: Some(justification.clone()),
                },
            ),
            _ => {
                let reason = "this form does not exist".to_string();
                self.record_refusal(&actor, json!({"request": detail, "reason": reason})).await;
                self.respond(ctx, ephemeral(format!("This form isn't one Vouch can act on: {reason}.")), modal).await;
                return;
            }
        };
        let response = match self.apply(id.case_id, kind, &actor, detail, event, false).await {
            Outcome::Failed => ephemeral("Vouch could not record this; please try again."),
            Outcome::NoSuchCase(case_id) => ephemeral(format!("There is no case {case_id}; nothing was changed.")),
            Outcome::Refused(reason) => refused(&reason),
            Outcome::Applied { case, .. } => {
                let response = ephemeral(format!("Recorded. {}", render::state_line(&case)));
                self.respond(ctx, response, modal).await;
                self.hand_over_effects();
                return;
            }
        };
        self.respond(ctx, response, modal).await;
    }

    async fn on_command(&self, ctx: &Context, command: &CommandInteraction) {
        let text = match command.data.name.as_str() {
            "case" => {
                let id_text =
                    command.data.options.first().and_then(|option| option.value.as_str()).unwrap_or("").to_string();
                match id_text.parse::<CaseId>() {
                    Err(reason) => reason,
                    Ok(case_id) => {
                        let found = self
                            .blocking(move |service| {
                                Ok((service.store.case(case_id).ok(), service.store.card(case_id)?))
                            })
                            .await;
                        match found {
                            Some((Some(case), card)) => {
                                let link = card
                                    .map(|card| {
                                        format!(
                                            "\nhttps://discord.com/channels/{}/{}/{}",
                                            self.settings.guild_id.get(),
                                            card.channel_id.get(),
                                            card.message_id.get()
                                        )
                                    })
                                    .unwrap_or_default();
                                format!(
                                    "**{}**: {} → {}, {} alert(s). {}{link}",
                                    case.id,
                                    render::inert(&case.alert().source.label(), 100),
                                    render::inert(&case.alert().target.label(), 100),
                                    case.alert_count,
                                    render::state_line(&case)
                                )
                            }
                            _ => format!("There is no case {case_id}."),
                        }
                    }
                }
            }
            "cases" => {
                let response = match self.open_cases_page(None).await {
                    Some(message) => CreateInteractionResponse::Message(message.ephemeral(true)),
                    None => ephemeral("Vouch could not read its cases; please try again."),
                };
                self.respond(ctx, response, command).await;
                return;
            }
            "oncall" => match self.settings.oncall_role_id {
                Some(role) => format!("Escalations page the <@&{}> role.", role.get()),
                None => format!(
                    "No on-call role is configured; escalations page the SOC role <@&{}>.",
                    self.settings.soc_role_id.get()
                ),
            },
            "link" => {
                let named =
                    command.data.options.first().and_then(|option| option.value.as_str()).unwrap_or("").to_string();
                self.link(&command.user, command.member.as_deref(), &named).await
            }
            "expect" => self.declare(command).await,
            "approvals" => return self.list_approvals(ctx, command).await,
            "unlink" => {
                let actor = self.actor(&command.user, command.member.as_deref());
                match actor.discord_id {
                    Some(discord_id) => {
                        let now = self.service.clock.now();
                        let unlinking = actor.clone();
                        match self.blocking(move |service| service.unlink(&unlinking, discord_id, now)).await {
                            Some(Some(person)) => format!("This Discord account is no longer linked to {person}."),
                            Some(None) => "This Discord account is not linked to anyone.".to_string(),
                            None => "Vouch could not record this; please try again.".to_string(),
                        }
                    }
                    None => "This Discord account has no id Vouch can read.".to_string(),
                }
            }
            other => format!("Vouch has no /{other} command."),
        };
        self.respond(ctx, ephemeral(render::cap(&text, 1900)), command).await;
    }
}

/// Anything that can answer an interaction (a click, a form, a command).
pub(super) trait AsyncRespond {
    async fn send(self, ctx: &Context, response: CreateInteractionResponse) -> serenity::Result<()>;
}

impl AsyncRespond for &ComponentInteraction {
    async fn send(self, ctx: &Context, response: CreateInteractionResponse) -> serenity::Result<()> {
        self.create_response(&ctx.http, response).await
    }
}

impl AsyncRespond for &ModalInteraction {
    async fn send(self, ctx: &Context, response: CreateInteractionResponse) -> serenity::Result<()> {
        self.create_response(&ctx.http, response).await
    }
}

impl AsyncRespond for &CommandInteraction {
    async fn send(self, ctx: &Context, response: CreateInteractionResponse) -> serenity::Result<()> {
        self.create_response(&ctx.http, response).await
    }
}
