//! What an audit record is about. One enum, so every kind the log can hold is listed here and a
//! refusal is always named the same way (`refused.` and the kind of what was refused).

use std::borrow::Cow;

/// Something that can happen to a case, from outside (an alert, a click, a form) or from Vouch
/// itself (a timer, a webhook's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    AlertNew,
    AlertGrouped,
    ClickAnswer,
    ClickAskOwner,
    ClickEscalate,
    ClickClose,
    ClickConfirm,
    ClickIsolate,
    ClickRelease,
    ClickAcknowledge,
    FormClose,
    FormConfirm,
    TimerDeadline,
    WebhookResult,
    /// A directory sync found that the person asked to vouch left or changed place.
    DirectoryConfirmerLeft,
    /// A push verifying an answer was sent.
    VerificationPushSent,
    /// A push verifying an answer was approved, denied, reported, or not answered in time.
    VerificationFinished,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::AlertNew => "alert.new",
            EventKind::AlertGrouped => "alert.grouped",
            EventKind::ClickAnswer => "click.answer",
            EventKind::ClickAskOwner => "click.ask_owner",
            EventKind::ClickEscalate => "click.escalate",
            EventKind::ClickClose => "click.close",
            EventKind::ClickConfirm => "click.confirm",
            EventKind::ClickIsolate => "click.isolate",
            EventKind::ClickRelease => "click.release",
            EventKind::ClickAcknowledge => "click.acknowledge",
            EventKind::FormClose => "form.close",
            EventKind::FormConfirm => "form.confirm",
            EventKind::TimerDeadline => "timer.deadline",
            EventKind::WebhookResult => "webhook.result",
            EventKind::DirectoryConfirmerLeft => "directory.confirmer_left",
            EventKind::VerificationPushSent => "verification.push_sent",
            EventKind::VerificationFinished => "verification.finished",
        }
    }
}

/// The kind of an audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// An event the engine accepted.
    Event(EventKind),
    /// An event the engine refused (or that named a case that does not exist); nothing changed.
    Refused(EventKind),
    /// A click or form whose id Vouch never issued (malformed or forged).
    RefusedInvalidClick,
    /// A click answered with a form asking for a justification.
    FormOpened,
    /// An outbound call written to the outbox, tried, or accepted by its receiver.
    OutboxEnqueued,
    OutboxAttempt,
    OutboxDelivered,
    /// An effect the chat service kept refusing, given up after a few tries.
    EffectAbandoned,
    /// The daily digest was posted.
    DigestPosted,
    /// A directory sync changed what Vouch believes (`directory.person_added`, ...).
    DirectoryChange(&'static str),
    /// A directory sync was refused (it failed, or would remove too much); the last good
    /// snapshot stays.
    DirectorySyncRefused,
    /// A Discord account asked to be bound to a person (a push went to that person), was bound,
    /// was not (denied, timed out, failed), or was unbound.
    IdentityLinkRequested,
    IdentityLinked,
    IdentityLinkRefused,
    IdentityUnlinked,
    /// Activity declared in advance: asked for (a push went to the declarer), declared (the
    /// push was approved; the declaration is in force), or not (denied, timed out, failed).
    DeclarationRequested,
    Declared,
    DeclarationRefused,
    /// A standing approval proposed from a case (a push went to the proposer), made (the push was
    /// approved), or not; seconded by another SOC member (critical systems).
    ApprovalRequested,
    Approved,
    ApprovalRefused,
    ApprovalSeconded,
    /// A standing approval or a declaration revoked before its end.
    AdvanceRevoked,
    /// A second or a revoke refused (not the person's to do, or the vouch no longer in force).
    AdvanceChangeRefused,
    /// Closed cases and their audit records moved to an archive file: the anchor that keeps the
    /// chain verifiable across the cut.
    RetentionArchived,
    /// A record written by a benchmark or a test of the store itself.
    StoreProbe,
}

impl AuditKind {
    pub fn name(self) -> Cow<'static, str> {
        match self {
            AuditKind::Event(event) => Cow::Borrowed(event.name()),
            AuditKind::Refused(event) => Cow::Owned(format!("refused.{}", event.name())),
            AuditKind::RefusedInvalidClick => Cow::Borrowed("refused.click.invalid"),
            AuditKind::FormOpened => Cow::Borrowed("click.form_opened"),
            AuditKind::OutboxEnqueued => Cow::Borrowed("outbox.enqueued"),
            AuditKind::OutboxAttempt => Cow::Borrowed("outbox.attempt"),
            AuditKind::OutboxDelivered => Cow::Borrowed("outbox.delivered"),
            AuditKind::EffectAbandoned => Cow::Borrowed("effect.abandoned"),
            AuditKind::DirectoryChange(change) => Cow::Owned(format!("directory.{change}")),
            AuditKind::DirectorySyncRefused => Cow::Borrowed("directory.sync_refused"),
            AuditKind::DigestPosted => Cow::Borrowed("digest.posted"),
            AuditKind::IdentityLinkRequested => Cow::Borrowed("identity.link_requested"),
            AuditKind::IdentityLinked => Cow::Borrowed("identity.linked"),
            AuditKind::IdentityLinkRefused => Cow::Borrowed("identity.link_refused"),
            AuditKind::IdentityUnlinked => Cow::Borrowed("identity.unlinked"),
            AuditKind::DeclarationRequested => Cow::Borrowed("advance.declaration_requested"),
            AuditKind::Declared => Cow::Borrowed("advance.declared"),
            AuditKind::DeclarationRefused => Cow::Borrowed("advance.declaration_refused"),
            AuditKind::ApprovalRequested => Cow::Borrowed("advance.approval_requested"),
            AuditKind::Approved => Cow::Borrowed("advance.approved"),
            AuditKind::ApprovalRefused => Cow::Borrowed("advance.approval_refused"),
            AuditKind::ApprovalSeconded => Cow::Borrowed("advance.seconded"),
            AuditKind::AdvanceRevoked => Cow::Borrowed("advance.revoked"),
            AuditKind::AdvanceChangeRefused => Cow::Borrowed("advance.change_refused"),
            AuditKind::RetentionArchived => Cow::Borrowed("retention.archived"),
            AuditKind::StoreProbe => Cow::Borrowed("store.probe"),
        }
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.name())
    }
}
