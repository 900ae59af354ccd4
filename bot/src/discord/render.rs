//! How a case looks in Discord: the card (embed and buttons), confirmation requests, notices.
//!
//! Every string that came from an alert is passed through [`inert`]: markdown is escaped,
//! mentions are broken, and the length is capped. Messages also carry `allowed_mentions` that
//! name exactly who may be pinged, so even a missed escape cannot ping anyone.

use serenity::builder::{CreateActionRow, CreateAllowedMentions, CreateButton, CreateEmbed, CreateEmbedFooter};
use serenity::model::application::ButtonStyle;
use serenity::model::id::{RoleId, UserId};
use vouch_playbook::definition::{CaseAction, ContextSection};
use vouch_playbook::engine::{
    ConfirmVerdict, Confirmer, HeldAnswer, IsolateOffer, IsolationAction, IsolationStatus, ScenarioVerdict, Side,
};
use vouch_playbook::model::{Account, Outcome, System};
use vouch_playbook::{Case, CaseState, Playbook};

use super::custom_id::{Action, ButtonId};

/// Discord's limits for embed parts.
const FIELD_VALUE_MAX: usize = 1024;
const EMBED_BUDGET: usize = 5800;
const TITLE_MAX: usize = 256;
const BUTTON_LABEL_MAX: usize = 80;

/// Makes untrusted text safe to show: escapes markdown, breaks mentions, caps the length.
pub fn inert(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for character in text.chars() {
        match character {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '[' | ']' | '(' | ')' | '-' | ':' => {
                out.push('\\');
                out.push(character);
            }
            // A zero-width space after '@' keeps `@everyone` and `@here` from being mentions.
            '@' => out.push_str("@\u{200b}"),
            character if character.is_control() => out.push(' '),
            character => out.push(character),
        }
    }
    cap(&out, max_chars)
}

/// Caps text at `max_chars` characters, marking the cut.
pub fn cap(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    // Never leave a dangling escape at the cut.
    if kept.ends_with('\\') {
        kept.pop();
    }
    kept.push('…');
    kept
}

pub fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new().empty_users().empty_roles().everyone(false).replied_user(false)
}

pub fn mention_only_user(user: UserId) -> CreateAllowedMentions {
    CreateAllowedMentions::new().users(vec![user]).empty_roles().everyone(false).replied_user(false)
}

pub fn mention_only_user_and_role(user: UserId, role: RoleId) -> CreateAllowedMentions {
    CreateAllowedMentions::new().users(vec![user]).roles(vec![role]).everyone(false).replied_user(false)
}

/// The on-call page's button.
pub fn acknowledge_buttons(case: &Case) -> Vec<CreateActionRow> {
    let acknowledged = case.page.as_ref().is_some_and(|page| page.acknowledged.is_some());
    vec![CreateActionRow::Buttons(vec![button(
        ButtonId::new(case.id, Action::Acknowledge),
        "Acknowledge",
        ButtonStyle::Primary,
        acknowledged,
    )])]
}

pub fn mention_only_role(role: RoleId) -> CreateAllowedMentions {
    CreateAllowedMentions::new().empty_users().roles(vec![role]).everyone(false).replied_user(false)
}

fn system_line(system: &System, asset: Option<&vouch_playbook::facts::AssetFacts>) -> String {
    let mut line = inert(&system.label(), 200);
    if system.hostname.is_some() && !system.ips.is_empty() {
        let ips: Vec<String> = system.ips.iter().take(3).map(ToString::to_string).collect();
        line.push_str(&format!(" ({})", inert(&ips.join(", "), 120)));
    }
    match asset {
        Some(asset) => {
            line.push_str(&format!("\n{} · criticality {}", asset.kind.id().replace('_', " "), asset.criticality.id()));
            match &asset.owner {
                Some(owner) => line.push_str(&format!(" · owner {}", inert(&owner.name, 100))),
                None => line.push_str(" · owner unknown"),
            }
        }
        None => line.push_str("\nnot in the directory"),
    }
    line
}

fn account_line(
    account: Option<&Account>,
    facts: Option<&vouch_playbook::facts::AccountFacts>,
    kind_hint: &str,
) -> String {
    let Some(account) = account else { return "unknown".to_string() };
    let mut line = inert(&account.to_string(), 200);
    match facts {
        Some(facts) => {
            line.push_str(&format!(" · {} account", facts.kind.id()));
            if let Some(holder) = &facts.holder {
                line.push_str(&format!(" of {}", inert(&holder.person.name, 100)));
                if !holder.roles.is_empty() {
                    line.push_str(&format!(" ({})", inert(&holder.roles.join(", "), 100)));
                }
            }
            if let Some(service) = &facts.service {
                line.push_str(&format!(" · runs {}", inert(service, 100)));
            }
            if let Some(owner) = &facts.owner {
                line.push_str(&format!(" · owner {}", inert(&owner.name, 100)));
            }
        }
        None => line.push_str(&format!(" · {kind_hint}, not in the directory")),
    }
    line
}

/// The discussion thread's name: plain text (names render no markdown), at most 100 characters.
pub fn thread_name(case: &Case) -> String {
    let clean = |text: &str| -> String { text.chars().filter(|character| !character.is_control()).collect() };
    cap(&format!("{} {} → {}", case.id, clean(&case.alert().source.label()), clean(&case.alert().target.label())), 100)
}

/// The one-line state shown at the top of the card.
/// How the answers that needed a push stand: verified, waiting, or denied.
fn verification_text(case: &Case) -> String {
    let mut lines = Vec::new();
    for verdict in &case.confirmation.verdicts {
        if let Some(push) = &verdict.verified {
            lines.push(format!(
                "✅ {}: {}, verified with {}",
                inert(&verdict.by.name, 100),
                verdict_label(verdict.verdict),
                inert(&push.provider, 40)
            ));
        }
    }
    if let Some(pending) = &case.pending_verification {
        let answer = match &pending.answer {
            HeldAnswer::Confirm { verdict, .. } => verdict_label(*verdict),
            HeldAnswer::CloseAsExpected { .. } => "Close as expected",
        };
        let sent = match &pending.push {
            Some(push) => format!("sent with {}", inert(&push.provider, 40)),
            None => "being sent".to_string(),
        };
        lines.push(format!(
            "⏳ {}: {answer}, held until they approve the push ({sent}; until <t:{}:t>)",
            inert(&pending.by.name, 100),
            pending.expires_at.unix_millis().div_euclid(1000)
        ));
    }
    if let Some(denied) = &case.push_denied {
        lines.push(format!(
            "⛔ {} {}: closing as expected takes two SOC members",
            inert(&denied.by.name, 100),
            inert(denied.text.as_deref().unwrap_or("denied a push"), 200)
        ));
        if let Some(first) = &case.close_asked_by {
            lines.push(format!("{} asked to close; a second SOC member must close too", inert(&first.by.name, 100)));
        }
    }
    lines.join("\n")
}

fn verdict_label(verdict: ConfirmVerdict) -> &'static str {
    match verdict {
        ConfirmVerdict::Expected => "Expected",
        ConfirmVerdict::NotExpected => "Not expected",
        ConfirmVerdict::NotMe => "Not me",
    }
}

/// A state in a few words, for lists.
pub fn state_label(state: CaseState) -> &'static str {
    match state {
        CaseState::Open => "open, waiting for the SOC",
        CaseState::AwaitingConfirmation => "waiting for a confirmation",
        CaseState::Escalated => "escalated",
        CaseState::ClosedExpected => "closed as expected",
    }
}

pub fn state_line(case: &Case) -> String {
    if let Some(pending) = &case.pending_verification {
        return format!("Waiting for {} to approve the push sent to their phone.", inert(&pending.by.name, 100));
    }
    match case.state {
        CaseState::Open => match case.confirmation.verdicts.last() {
            Some(verdict) => {
                format!("Open: {} answered {:?}; the SOC decides.", inert(&verdict.by.name, 100), verdict.verdict)
            }
            None => "Open: waiting for the SOC's triage.".to_string(),
        },
        CaseState::AwaitingConfirmation => match case.confirmation.current_confirmer() {
            Some(confirmer) => format!("Waiting for {} to confirm.", inert(&confirmer.label(), 200)),
            None => "Waiting for a confirmation.".to_string(),
        },
        CaseState::Escalated => match &case.escalation {
            Some(decision) => format!("Escalated by {}. On-call has been paged.", inert(&decision.by.name, 100)),
            None => "Escalated. On-call has been paged.".to_string(),
        },
        CaseState::ClosedExpected => match &case.resolution {
            Some(decision) => match &decision.verified {
                Some(push) => format!(
                    "Closed as expected by {}, verified with {}.",
                    inert(&decision.by.name, 100),
                    inert(&push.provider, 40)
                ),
                None => format!("Closed as expected by {}.", inert(&decision.by.name, 100)),
            },
            None => "Closed as expected.".to_string(),
        },
    }
}

fn colour(state: CaseState) -> u32 {
    match state {
        CaseState::Open => 0xE6_7E_22,
        CaseState::AwaitingConfirmation => 0xF1_C4_0F,
        CaseState::Escalated => 0xE7_4C_3C,
        CaseState::ClosedExpected => 0x2E_CC_71,
    }
}

/// Collects embed fields within Discord's limits.
struct Fields {
    fields: Vec<(String, String, bool)>,
    used: usize,
}

impl Fields {
    fn add(&mut self, name: &str, value: String, inline: bool) {
        let value = if value.trim().is_empty() { "—".to_string() } else { value };
        let value = cap(&value, FIELD_VALUE_MAX);
        let cost = name.chars().count() + value.chars().count();
        if self.fields.len() >= 25 || self.used + cost > EMBED_BUDGET {
            return;
        }
        self.used += cost;
        self.fields.push((name.to_string(), value, inline));
    }
}

fn account_text(case: &Case) -> String {
    let alert = case.alert();
    let kind_hint = case.opening.account_kind.id();
    let mut accounts = account_line(alert.account.as_ref(), case.facts.account.as_ref(), kind_hint);
    if let Some(acting_as) = &alert.acting_as {
        accounts.push_str(&format!(
            "\nacting as {}",
            account_line(Some(acting_as), case.facts.acting_as.as_ref(), "unknown kind")
        ));
    }
    accounts
}

fn connection_text(alert: &vouch_playbook::Alert) -> String {
    let mut connection = format!("{} over {}", alert.connection.label(), alert.protocol.label());
    if let Some(port) = alert.port {
        connection.push_str(&format!(", port {port}"));
    }
    if let Some(logon_type) = alert.logon_type {
        connection.push_str(&format!(", Windows logon type {logon_type}"));
    }
    match alert.outcome {
        Outcome::Success => connection.push_str(", succeeded"),
        Outcome::Failure => connection.push_str("\n**Failed attempt**: the logon or ticket was refused"),
        Outcome::Unknown => {}
    }
    if let Some(share) = &alert.share {
        connection.push_str(&format!("\nshare {}", inert(share, 200)));
    }
    if let Some(file) = &alert.file {
        connection.push_str(&format!(", file {}", inert(file, 200)));
    }
    connection
}

fn program_text(alert: &vouch_playbook::Alert) -> String {
    match &alert.program {
        Some(program) => {
            let mut text = inert(program.name.as_deref().unwrap_or("unknown"), 200);
            if let Some(command_line) = &program.command_line {
                text.push_str(&format!("\n{}", inert(command_line, 400)));
            }
            if let Some(parent) = &program.parent {
                text.push_str(&format!("\nstarted by {}", inert(parent, 200)));
            }
            text
        }
        None => "not in the alert".to_string(),
    }
}

pub fn card_embed(case: &Case, playbook: &Playbook, on_call: Option<&str>) -> CreateEmbed {
    let alert = case.alert();
    let title = cap(
        &format!("{} · {} → {}", case.id, inert(&alert.source.label(), 100), inert(&alert.target.label(), 100)),
        TITLE_MAX,
    );
    let description = state_line(case);
    let mut fields = Fields { fields: Vec::new(), used: title.chars().count() + description.chars().count() + 64 };
    for (section, _) in playbook.context_sections() {
        match section {
            ContextSection::Systems => {
                fields.add("Source", system_line(&alert.source, case.facts.source.as_ref()), true);
                fields.add("Target", system_line(&alert.target, case.facts.target.as_ref()), true);
            }
            ContextSection::Accounts => fields.add("Account", account_text(case), false),
            ContextSection::Connection => fields.add("Connection", connection_text(alert), true),
            ContextSection::Program => fields.add("Program", program_text(alert), true),
        }
    }
    let mut detection = String::new();
    if let Some(rule) = &alert.rule {
        detection.push_str(&inert(rule.name.as_deref().or(rule.id.as_deref()).unwrap_or("unnamed rule"), 200));
    }
    if !detection.is_empty() {
        detection.push('\n');
    }
    detection.push_str(&format!(
        "severity {} · {}",
        serde_json::to_value(alert.severity)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default(),
        inert(&alert.source_product, 100)
    ));
    if !alert.mitre.is_empty() {
        let ids: Vec<&str> = alert.mitre.iter().map(|id| id.as_str()).collect();
        detection.push_str(&format!("\nMITRE {}", ids.join(", ")));
    }
    fields.add("Detection", detection, true);
    fields.add(
        "Alerts",
        format!(
            "{} alert(s), first {}, last {}",
            case.alert_count,
            case.opened_at.to_rfc3339(),
            case.last_alert_at.to_rfc3339()
        ),
        true,
    );

    let scenarios: Vec<String> = case
        .opening
        .scenarios
        .iter()
        .map(|scenario| {
            let mark = match scenario.verdict {
                ScenarioVerdict::Matched => "✅ fits",
                ScenarioVerdict::NotMatched => "❌ does not fit",
                ScenarioVerdict::Undetermined => "❔ cannot tell",
            };
            let reason = scenario
                .evidence
                .iter()
                .find(|evidence| {
                    !evidence.supporting
                        && match scenario.verdict {
                            ScenarioVerdict::Matched => false,
                            ScenarioVerdict::NotMatched => evidence.outcome == vouch_playbook::engine::Truth::No,
                            ScenarioVerdict::Undetermined => evidence.outcome == vouch_playbook::engine::Truth::Unknown,
                        }
                })
                .map(|evidence| format!(": {}", inert(&evidence.detail, 160)))
                .unwrap_or_default();
            format!("{mark} **{}**{reason}", inert(&scenario.title, 80))
        })
        .collect();
    fields.add("Known harmless scenarios", scenarios.join("\n"), false);
    if !case.opening.concerns.is_empty() {
        let concerns: Vec<String> =
            case.opening.concerns.iter().map(|concern| format!("⚠️ {}", inert(concern, 300))).collect();
        fields.add("Concerns", concerns.join("\n"), false);
    }
    for hint in &case.opening.hints {
        let title = playbook.question(&hint.question).map(|question| question.title.clone()).unwrap_or_default();
        let mut value = inert(&hint.prompt, 300);
        if let Some(suggested) = &hint.suggested {
            let label = playbook
                .question(&hint.question)
                .and_then(|question| question.answer(suggested))
                .map(|answer| answer.label.clone())
                .unwrap_or_else(|| suggested.to_string());
            value.push_str(&format!("\nHint: **{}**", inert(&label, 80)));
        }
        for line in hint.evidence.iter().take(3) {
            value.push_str(&format!("\n· {}", inert(line, 200)));
        }
        if let Some(answer) = case.answers.get(&hint.question) {
            let label = playbook
                .question(&hint.question)
                .and_then(|question| question.answer(&answer.answer))
                .map(|answer| answer.label.clone())
                .unwrap_or_else(|| answer.answer.to_string());
            value.push_str(&format!("\nAnswered **{}** by {}", inert(&label, 80), inert(&answer.by.name, 100)));
        }
        fields.add(&cap(&title, 250), value, false);
    }
    let history = &case.opening.history;
    let mut history_text = if history.seen == 0 {
        "First time this movement is seen.".to_string()
    } else {
        format!("Seen {} time(s) before", history.seen)
    };
    if !history.confirmed_expected.is_empty() {
        let last = &history.confirmed_expected[history.confirmed_expected.len() - 1];
        history_text.push_str(&format!(
            "; confirmed expected {} time(s), last by {} on {}",
            history.confirmed_expected.len(),
            inert(&last.by, 100),
            last.at.to_rfc3339()
        ));
    }
    fields.add("History", history_text, false);
    let chain: Vec<String> = case
        .confirmation
        .chain
        .iter()
        .enumerate()
        .map(|(index, confirmer)| {
            let marker = match case.confirmation.current {
                Some(current) if current == index => "→ ",
                _ => "",
            };
            format!("{marker}{}", inert(&confirmer.label(), 200))
        })
        .collect();
    fields.add("Who vouches", chain.join("\n"), false);
    let verification = verification_text(case);
    if !verification.is_empty() {
        fields.add("Verification", verification, false);
    }
    if let Some(on_call) = on_call {
        let mut line = format!("On call now: {}", inert(on_call, 200));
        if let Some(page) = &case.page {
            match &page.acknowledged {
                Some(decision) => line.push_str(&format!("\nPage acknowledged by {}", inert(&decision.by.name, 100))),
                None => line.push_str("\nPaged; not acknowledged yet"),
            }
        }
        fields.add("On call", line, false);
    }
    if !case.isolations.is_empty() {
        let lines: Vec<String> = case
            .isolations
            .iter()
            .map(|request| {
                let verb = if request.action == IsolationAction::Isolate { "isolate" } else { "release" };
                let state = match (request.status, request.deliveries.is_empty()) {
                    (IsolationStatus::AwaitingApproval, _) => "awaiting a second SOC member".to_string(),
                    (IsolationStatus::Requested, true) => "sending".to_string(),
                    (IsolationStatus::Requested, false) => request
                        .deliveries
                        .iter()
                        .map(|(webhook, ok)| {
                            format!("{} {}", inert(webhook, 40), if *ok { "delivered" } else { "failed" })
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                format!("{verb} {}: {state}", inert(&case.system(request.side).label(), 100))
            })
            .collect();
        fields.add("Isolation", lines.join("\n"), false);
    }

    let mut embed = CreateEmbed::new()
        .title(title)
        .description(description)
        .colour(colour(case.state))
        .footer(CreateEmbedFooter::new(format!("Playbook {} {}", playbook.name, case.playbook_version)));
    for (name, value, inline) in fields.fields {
        embed = embed.field(name, value, inline);
    }
    embed
}

fn button(id: ButtonId, label: &str, style: ButtonStyle, disabled: bool) -> CreateButton {
    CreateButton::new(id.to_string()).label(cap(label, BUTTON_LABEL_MAX)).style(style).disabled(disabled)
}

/// The card's buttons: one row per question, then the actions, each live only when the case
/// offers it ([`Case::offers`]); labels come from the playbook's `[[actions]]`.
pub fn card_components(case: &Case, playbook: &Playbook) -> Vec<CreateActionRow> {
    let offers = case.offers();
    let mut rows = Vec::new();
    for question in playbook.questions.iter().take(3) {
        let chosen = case.answers.get(&question.id).map(|answer| &answer.answer);
        let buttons: Vec<CreateButton> = question
            .answers
            .iter()
            .take(5)
            .map(|answer| {
                let selected = chosen == Some(&answer.id);
                let label = if selected { format!("✓ {}", answer.label) } else { answer.label.clone() };
                let style = if selected { ButtonStyle::Success } else { ButtonStyle::Secondary };
                let id =
                    ButtonId::new(case.id, Action::Answer { question: question.id.clone(), answer: answer.id.clone() });
                button(id, &label, style, !offers.answer)
            })
            .collect();
        rows.push(CreateActionRow::Buttons(buttons));
    }
    let label =
        |action: CaseAction| playbook.action(action).map_or(action.default_label(), |action| action.label.as_str());
    let mut actions = vec![
        button(
            ButtonId::new(case.id, Action::AskOwner),
            label(CaseAction::AskOwner),
            ButtonStyle::Primary,
            !offers.ask_owner,
        ),
        button(
            ButtonId::new(case.id, Action::Escalate),
            label(CaseAction::Escalate),
            ButtonStyle::Danger,
            !offers.escalate,
        ),
        button(
            ButtonId::new(case.id, Action::Close),
            label(CaseAction::CloseExpected),
            ButtonStyle::Success,
            !offers.close,
        ),
    ];
    // A case closed as expected may become a standing approval (who may propose it is decided on
    // the click).
    if vouch_playbook::advance::approval_offered(case, playbook) {
        actions.push(button(
            ButtonId::new(case.id, Action::ExpectAgain),
            "Expect this again",
            ButtonStyle::Secondary,
            false,
        ));
    }
    rows.push(CreateActionRow::Buttons(actions));
    let mut isolation_buttons = Vec::new();
    for side in [Side::Source, Side::Target] {
        let end = if side == Side::Source { "source" } else { "target" };
        let offer = offers.isolation(side);
        if let Some(isolate) = offer.isolate {
            let label = match isolate {
                IsolateOffer::Approve => format!("Approve isolating {end}"),
                IsolateOffer::Request => format!("Isolate {end}"),
            };
            let id = ButtonId::new(case.id, Action::Isolate(side));
            isolation_buttons.push(button(id, &label, ButtonStyle::Danger, !offer.system_known));
        }
        if offer.release {
            isolation_buttons.push(button(
                ButtonId::new(case.id, Action::Release(side)),
                &format!("Release {end}"),
                ButtonStyle::Secondary,
                false,
            ));
        }
    }
    if !isolation_buttons.is_empty() {
        rows.push(CreateActionRow::Buttons(isolation_buttons));
    }
    rows
}

/// The question put to a confirmer.
pub fn confirmation_text(case: &Case, mention: &str, reminder: bool) -> String {
    let alert = case.alert();
    let account = alert
        .initiating_account()
        .map(|account| inert(&account.to_string(), 120))
        .unwrap_or_else(|| "an unknown account".to_string());
    let lead = if reminder { "Reminder: " } else { "" };
    let role = match case.confirmation.current_confirmer() {
        Some(Confirmer::Person { role, .. }) => format!(" as {}", role.label()),
        _ => String::new(),
    };
    cap(
        &format!(
            "{lead}{mention}, you are asked{role} to vouch for this: **{account}** connected from **{}** to **{}** ({} over {}). Did you expect it?",
            inert(&alert.source.label(), 120),
            inert(&alert.target.label(), 120),
            alert.connection.label(),
            alert.protocol.label(),
        ),
        1900,
    )
}

pub fn confirmation_buttons(case: &Case, disabled: bool) -> Vec<CreateActionRow> {
    use vouch_playbook::engine::ConfirmVerdict;
    vec![CreateActionRow::Buttons(vec![
        button(
            ButtonId::new(case.id, Action::Confirm(ConfirmVerdict::Expected)),
            "Expected",
            ButtonStyle::Success,
            disabled,
        ),
        button(
            ButtonId::new(case.id, Action::Confirm(ConfirmVerdict::NotExpected)),
            "Not expected",
            ButtonStyle::Danger,
            disabled,
        ),
        button(
            ButtonId::new(case.id, Action::Confirm(ConfirmVerdict::NotMe)),
            "Not me / wrong person",
            ButtonStyle::Secondary,
            disabled,
        ),
    ])]
}

/// The daily digest's text.
pub fn digest_text(digest: &crate::timers::Digest) -> String {
    let in_advance = if digest.vouched_in_advance > 0 {
        format!(" ({} vouched for in advance)", digest.vouched_in_advance)
    } else {
        String::new()
    };
    let mut text = format!(
        "**Vouch digest**: {} open case(s). Last 24 h: {} closed as expected{in_advance}, {} escalated, {} host(s) isolated.",
        digest.open.len(),
        digest.closed_expected,
        digest.escalated,
        digest.isolated
    );
    for line in digest.open.iter().take(25) {
        text.push_str(&format!(
            "\n• **{}** {} → {}: {} ({} h {} min)",
            line.case_id,
            inert(&line.source, 60),
            inert(&line.target, 60),
            line.state.id().replace('_', " "),
            line.waited_minutes / 60,
            line.waited_minutes % 60
        ));
    }
    if digest.open.len() > 25 {
        text.push_str(&format!("\n… and {} more (see /cases).", digest.open.len() - 25));
    }
    cap(&text, 1900)
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn hostile_text_is_inert() {
        let cases = [
            ("@everyone", "@\u{200b}everyone"),
            ("<@123>", "\\<@\u{200b}123\\>"),
            ("**bold** _x_ `code`", "\\*\\*bold\\*\\* \\_x\\_ \\`code\\`"),
            ("[link](http://x)", "\\[link\\]\\(http\\://x\\)"),
            ("line\nbreak", "line break"),
        ];
        for (input, expected) in cases {
            assert_eq!(inert(input, 100), expected, "{input}");
        }
        // Cutting inside an escape drops the lone backslash rather than escaping the ellipsis.
        let long = inert(&"*".repeat(50), 12);
        assert_eq!(long, r"\*\*\*\*\*…");
    }
}

#[cfg(test)]
mod digest_tests {
    use super::digest_text;
    use crate::timers::Digest;

    #[test]
    fn the_digest_counts_cases_vouched_for_in_advance_among_those_closed() {
        let digest = |vouched_in_advance| Digest {
            open: Vec::new(),
            closed_expected: 3,
            vouched_in_advance,
            escalated: 1,
            isolated: 0,
        };
        assert!(digest_text(&digest(2)).contains("3 closed as expected (2 vouched for in advance), 1 escalated"));
        assert!(digest_text(&digest(0)).contains("3 closed as expected, 1 escalated"));
    }
}
