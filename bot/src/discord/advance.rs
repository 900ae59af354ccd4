//! The chat side of vouches given in advance: `/expect` (a declaration), "Expect this again" on a
//! case closed as expected (a standing approval, with its form), and `/approvals` (the vouches in
//! force, with second and revoke). `vouch_playbook::advance` decides who may do what; the
//! service writes it; this file reads Discord's requests and words the answers.

use serde_json::json;
use serenity::all::{
    ButtonStyle, CommandInteraction, ComponentInteraction, Context, CreateActionRow, CreateButton, CreateInputText,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateModal, InputTextStyle, ModalInteraction,
};
use vouch_playbook::advance::{AdvanceKind, AdvanceVouch, PendingAdvance, VouchScope};
use vouch_playbook::{Actor, AuditKind, CaseId, Timestamp};

use super::custom_id::{Action, ButtonId, VouchButton};
use super::handler::{ephemeral, form_field, Handler};
use super::render;
use crate::advance_vouches::AdvanceChange;
use crate::verification::PushAsked;

/// The form field that carries how many days a standing approval lasts.
const DAYS_FIELD: &str = "days";
/// Vouches listed by `/approvals`, and of those, how many get buttons (Discord allows 5 rows).
const MOST_LISTED: usize = 15;
const MOST_WITH_BUTTONS: usize = 5;

/// What a push request became, in words: `sent` once the push is on its way.
fn asked(requested: Option<PushAsked>, handler: &Handler, sent: String, not_done: &str) -> String {
    match requested {
        Some(PushAsked::Sent(push)) => {
            handler.service.send_push(push);
            sent
        }
        Some(PushAsked::Refused(reason)) => format!("{not_done}: {}.", render::inert(&reason, 300)),
        None => "Vouch could not record this; please try again.".to_string(),
    }
}

/// One line of `/approvals`: the vouch, what it covers, until when, and what it waits on.
fn vouch_line(vouch: &AdvanceVouch, now: Timestamp) -> String {
    let hosts = vouch.scope.hosts();
    let how = match &vouch.scope {
        VouchScope::Exact(exact) => {
            let program = exact.program.as_deref().map(|program| format!(", {program}")).unwrap_or_default();
            format!(" ({:?} over {:?}{})", exact.connection, exact.protocol, render::inert(&program, 40))
        }
        VouchScope::Hosts(_) => String::new(),
    };
    let stage = match &vouch.kind {
        _ if vouch.awaits_second() => " — awaits a second SOC member".to_string(),
        AdvanceKind::StandingApproval { monitor_until, .. } if now < *monitor_until => {
            format!(" — monitor period until {}", monitor_until.to_rfc3339())
        }
        _ if now < vouch.valid_from => format!(" — starts {}", vouch.valid_from.to_rfc3339()),
        _ => String::new(),
    };
    format!(
        "**{}** {} by {}: {} from {} to {}{how}, until {}{stage}",
        vouch.id,
        vouch.kind_name(),
        render::inert(&vouch.by.name, 60),
        render::inert(&hosts.account, 60),
        render::inert(&hosts.source, 60),
        render::inert(&hosts.target, 60),
        vouch.valid_until.to_rfc3339()
    )
}

fn vouch_button(vouch: &AdvanceVouch, change: AdvanceChange) -> CreateButton {
    let (label, style) = match change {
        AdvanceChange::Second => (format!("Second {}", vouch.id), ButtonStyle::Success),
        AdvanceChange::Revoke => (format!("Revoke {}", vouch.id), ButtonStyle::Danger),
    };
    let id = VouchButton { vouch: vouch.id.clone(), change };
    CreateButton::new(id.to_string()).label(label).style(style)
}

impl Handler {
    /// "Expect this again" on a case closed as expected: checks the clicker may propose it, then
    /// opens the form that asks for how long.
    pub(super) async fn open_approval_form(
        &self,
        ctx: &Context,
        component: &ComponentInteraction,
        actor: &Actor,
        case_id: CaseId,
        detail: serde_json::Value,
    ) {
        let case = self.blocking(move |service| service.store.case(case_id)).await;
        let proposed = match &case {
            Some(case) => match vouch_playbook::advance::proposal_refusal(case, &self.service.playbook, actor) {
                Some(reason) => Err(reason),
                None => Ok(()),
            },
            None => Err(format!("there is no case {case_id}")),
        };
        let (kind, request) = match &proposed {
            Ok(()) => (AuditKind::FormOpened, detail),
            Err(reason) => (AuditKind::ApprovalRefused, json!({"request": detail, "reason": reason, "pushed": false})),
        };
        let recording = actor.clone();
        let recorded =
            self.blocking(move |service| service.record(kind, Some(case_id), Some(&recording), request)).await;
        let response = match (recorded, proposed) {
            (None, _) => ephemeral("Vouch could not record this click; please try again."),
            (Some(_), Err(reason)) => ephemeral(format!("Not proposed: {}.", render::inert(&reason, 300))),
            (Some(_), Ok(())) => {
                let days = CreateInputText::new(InputTextStyle::Short, "For how many days? (1 to 90)", DAYS_FIELD)
                    .required(true)
                    .min_length(1)
                    .max_length(2);
                let id = ButtonId::new(case_id, Action::ExpectAgain);
                let modal = CreateModal::new(id.to_string(), format!("Expect {case_id}'s movement again"))
                    .components(vec![CreateActionRow::InputText(days)]);
                CreateInteractionResponse::Modal(modal)
            }
        };
        self.respond(ctx, response, component).await;
    }

    /// The form's answer: proposes the standing approval and sends the proposer a push; it is
    /// made once they approve it.
    pub(super) async fn propose_approval(
        &self,
        ctx: &Context,
        modal: &ModalInteraction,
        actor: Actor,
        case_id: CaseId,
    ) {
        let days_text = form_field(modal, DAYS_FIELD);
        let now = self.service.clock.now();
        let case = self.blocking(move |service| service.store.case(case_id)).await;
        // A number that is not one is 0 days, which the core refuses with the range.
        let days = days_text.trim().parse::<u32>().unwrap_or(0);
        let proposed = match &case {
            Some(case) => vouch_playbook::advance::propose_approval(case, &self.service.playbook, &actor, days, now),
            None => Err(format!("there is no case {case_id}")),
        };
        let summary = match &proposed {
            Ok(pending) => {
                let hosts = pending.scope.hosts();
                format!("Expect {} from {} to {} for {days} days", hosts.account, hosts.source, hosts.target)
            }
            Err(_) => String::new(),
        };
        let request = json!({"from_case": case_id, "days": render::cap(&days_text, 10)});
        let proposer = actor.clone();
        let requested = self
            .blocking(move |service| service.request_advance(&proposer, Some(case_id), proposed, request, summary, now))
            .await;
        let sent = format!(
            "A push was sent to your phone. Once you approve it, this exact movement is expected for {days} day(s) (first watched, then vouched for); see /approvals."
        );
        let text = asked(requested, self, sent, "Not proposed");
        self.respond(ctx, ephemeral(text), modal).await;
        self.service.effects_ready.notify_one();
    }

    /// `/approvals`: the vouches in force (the SOC sees all, anyone else their own), with a
    /// second and a revoke button for the newest.
    pub(super) async fn list_approvals(&self, ctx: &Context, command: &CommandInteraction) {
        let actor = self.actor(&command.user, command.member.as_deref());
        let now = self.service.clock.now();
        let response = match self.blocking(move |service| service.store.advance_vouches()).await {
            None => ephemeral("Vouch could not read its approvals; please try again."),
            Some(vouches) => {
                let mut shown: Vec<AdvanceVouch> = vouches
                    .into_iter()
                    .filter(|vouch| vouch.in_force(now) && (actor.soc || vouch.by.same_person(&actor)))
                    .collect();
                shown.sort_by_key(|vouch| std::cmp::Reverse(vouch.valid_from));
                if shown.is_empty() {
                    ephemeral("No standing approvals or declarations are in force.")
                } else {
                    let lines: Vec<String> =
                        shown.iter().take(MOST_LISTED).map(|vouch| vouch_line(vouch, now)).collect();
                    let more = shown.len().saturating_sub(MOST_LISTED);
                    let more =
                        if more > 0 { format!("\n…and {more} more (GET /api/v1/advance).") } else { String::new() };
                    let rows: Vec<CreateActionRow> = shown
                        .iter()
                        .take(MOST_WITH_BUTTONS)
                        .map(|vouch| {
                            let mut buttons = vec![vouch_button(vouch, AdvanceChange::Revoke)];
                            if vouch.awaits_second() {
                                buttons.insert(0, vouch_button(vouch, AdvanceChange::Second));
                            }
                            CreateActionRow::Buttons(buttons)
                        })
                        .collect();
                    let content = format!("{} in force, newest first:\n{}{more}", shown.len(), lines.join("\n"));
                    CreateInteractionResponse::Message(
                        CreateInteractionResponseMessage::new()
                            .content(render::cap(&content, 1900))
                            .components(rows)
                            .ephemeral(true)
                            .allowed_mentions(render::no_mentions()),
                    )
                }
            }
        };
        self.respond(ctx, response, command).await;
    }

    /// A second or revoke button from `/approvals`.
    pub(super) async fn change_vouch(
        &self,
        ctx: &Context,
        component: &ComponentInteraction,
        actor: Actor,
        button: VouchButton,
    ) {
        let now = self.service.clock.now();
        let id = button.vouch.clone();
        let changed =
            self.blocking(move |service| service.change_advance(&actor, &button.vouch, button.change, now)).await;
        let text = match changed {
            Some(Ok(vouch)) if vouch.revoked.is_some() => format!("{} is revoked.", vouch.id),
            Some(Ok(vouch)) => format!("{} is seconded and in force.", vouch.id),
            Some(Err(reason)) => format!("Not done: {}.", render::inert(&reason, 300)),
            None => "Vouch could not record this click; please try again.".to_string(),
        };
        tracing::info!(vouch = %id, answer = %text, "a vouch given in advance was changed from Discord");
        self.respond(ctx, ephemeral(text), component).await;
        self.service.effects_ready.notify_one();
    }

    /// `/expect`: records a declaration of the clicker's own movement and sends them a push;
    /// it is in force once they approve it.
    pub(super) async fn declare(&self, command: &CommandInteraction) -> String {
        let actor = self.actor(&command.user, command.member.as_deref());
        let option =
            |name: &str| command.data.options.iter().find(|option| option.name == name).map(|option| &option.value);
        let text = |name: &str| option(name).and_then(|value| value.as_str()).unwrap_or("").trim().to_string();
        let (Some(discord_id), true) = (actor.discord_id, actor.person.is_some()) else {
            return "Only a person in the directory can declare their movements.".to_string();
        };
        let directory = self.service.directory.get();
        let Some(account) = vouch_playbook::model::Account::parse(&text("account")) else {
            return "Name the account you will connect as.".to_string();
        };
        let holder = directory.account(&account.key()).and_then(|known| known.holder.clone());
        if !vouch_playbook::advance::may_declare(&actor, holder.as_ref()) {
            return format!(
                "`{}` is not an account the directory says you hold; only its holder declares its movements.",
                render::inert(&account.key(), 64)
            );
        }
        let (source, target) = (text("source"), text("target"));
        if source.is_empty() || target.is_empty() {
            return "Name both hosts.".to_string();
        }
        let scope = vouch_playbook::advance::HostsScope {
            account: account.key(),
            source: vouch_playbook::model::short_hostname(&source),
            target: vouch_playbook::model::short_hostname(&target),
        };
        let now = self.service.clock.now();
        let hours = option("hours").and_then(|value| value.as_i64()).unwrap_or(0);
        let starts_in = option("starts_in_minutes").and_then(|value| value.as_i64()).unwrap_or(0).clamp(0, 1440);
        let valid_from = now.plus_millis(starts_in * 60_000);
        let valid_until = valid_from.plus_millis(hours.clamp(0, 1000) * 3_600_000);
        if let Err(reason) = vouch_playbook::advance::declaration_window(valid_from, valid_until, now) {
            return format!("Not declared: {reason}.");
        }
        let reason = vouch_playbook::model::cap(&text("reason"), 300);
        if reason.is_empty() {
            return "Say why, in a few words.".to_string();
        }
        let lifetime = self.service.playbook.push_lifetime_millis();
        let summary = format!("Declare {} from {} to {} for {hours} h", scope.account, scope.source, scope.target);
        let described = format!(
            "{} from {} to {}, until {}",
            render::inert(&scope.account, 64),
            render::inert(&scope.source, 64),
            render::inert(&scope.target, 64),
            valid_until.to_rfc3339()
        );
        let request = json!({"scope": scope, "from": valid_from, "until": valid_until, "reason": reason});
        let pending = PendingAdvance {
            discord_id,
            target_criticality: directory.asset(&scope.target).map(|asset| asset.criticality),
            kind: AdvanceKind::Declaration { reason },
            scope: VouchScope::Hosts(scope),
            by: actor.clone(),
            valid_from,
            valid_until,
            requested_at: now,
            expires_at: now.plus_millis(lifetime),
            push: None,
        };
        let requested = self
            .blocking(move |service| service.request_advance(&actor, None, Ok(pending), request, summary, now))
            .await;
        let sent = format!(
            "A push was sent to your phone. Once you approve it, alerts of {described} are vouched for by your declaration."
        );
        asked(requested, self, sent, "Not declared")
    }
}
