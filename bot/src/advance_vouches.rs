//! Vouches given in advance, as the service writes them: a declaration (`/expect`) or a standing
//! approval ("Expect this again" on a case closed as expected) is asked for and waits on the
//! asker's push; once approved it is numbered (`D-n`, `A-n`) and in force; a standing approval on
//! a critical system also waits on a second SOC member; the SOC or its maker may revoke either.
//! `vouch_playbook::advance` decides every rule; this file writes what it decided, audited.

use serde_json::json;
use vouch_playbook::advance::{AdvanceKind, AdvanceVouch, PendingAdvance};
use vouch_playbook::engine::{Effect, PushOutcome, PushRecord};
use vouch_playbook::{Actor, AuditKind, CaseId, Snowflake, Timestamp};
use vouch_storage::{NewRecord, StorageError, Transaction};

use crate::service::Service;
use crate::verification::{PushAsked, PushSubject, PushToSend};

/// What is done to a vouch already made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvanceChange {
    /// A second SOC member agrees to a standing approval on a critical system.
    Second,
    Revoke,
}

/// The audit kinds of a request's life: asked for, made, not made.
fn life_kinds(declaration: bool) -> (AuditKind, AuditKind, AuditKind) {
    if declaration {
        (AuditKind::DeclarationRequested, AuditKind::Declared, AuditKind::DeclarationRefused)
    } else {
        (AuditKind::ApprovalRequested, AuditKind::Approved, AuditKind::ApprovalRefused)
    }
}

/// The case a standing approval came from (its thread hears of it), none for a declaration.
fn from_case(kind: &AdvanceKind) -> Option<CaseId> {
    match kind {
        AdvanceKind::StandingApproval { from_case, .. } => Some(*from_case),
        AdvanceKind::Declaration { .. } => None,
    }
}

/// Says `message` where the vouch's people look: its case's thread for a standing approval,
/// the SOC channel for a declaration.
fn tell(transaction: &mut dyn Transaction, kind: &AdvanceKind, message: String) -> Result<(), StorageError> {
    match from_case(kind) {
        Some(case_id) => transaction.queue_effects(case_id, &[Effect::Announce { message }]).map(|_| ()),
        None => transaction.queue_notice(&message).map(|_| ()),
    }
}

impl Service {
    /// Records a vouch in advance asked for by `actor`: a standing approval from case
    /// `from_case`, else a declaration (`Err`: the core's refusal, recorded as such), waiting on
    /// their push. Durable on return. Blocking.
    pub fn request_advance(
        &self,
        actor: &Actor,
        from_case: Option<CaseId>,
        proposed: Result<PendingAdvance, String>,
        request: serde_json::Value,
        summary: String,
        now: Timestamp,
    ) -> Result<PushAsked, StorageError> {
        let (requested_kind, _, refusal_kind) = life_kinds(from_case.is_none());
        let person = actor.person.clone();
        let cooling_down = actor.discord_id.and_then(|discord_id| self.push_cool_down.refusal(discord_id, now));
        self.store
            .write(|transaction| {
                let waiting = match &proposed {
                    Ok(pending) => transaction.pending_advance(pending.discord_id)?.filter(|waiting| waiting.expires_at > now),
                    Err(_) => None,
                };
                let refusal = match (&proposed, &person, cooling_down, waiting) {
                    (Err(reason), _, _, _) => Some(reason.clone()),
                    (_, None, _, _) => Some("this Discord account is not a person in the directory".to_string()),
                    (_, _, Some(reason), _) => Some(reason),
                    (_, _, None, Some(_)) => Some("a push for an earlier request is still waiting to be approved".to_string()),
                    _ => None,
                };
                let (Ok(pending), Some(person), None) = (&proposed, &person, &refusal) else {
                    let reason = refusal.unwrap_or_default();
                    transaction.append_audit(NewRecord {
                        at: now,
                        case_id: from_case,
                        kind: refusal_kind,
                        actor: Some(actor),
                        playbook_version: None,
                        detail: json!({"request": request, "reason": reason, "pushed": false}),
                    })?;
                    return Ok(PushAsked::Refused(reason));
                };
                transaction.put_pending_advance(pending);
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id: from_case,
                    kind: requested_kind,
                    actor: Some(actor),
                    playbook_version: None,
                    detail: json!({"request": request, "scope": pending.scope, "from": pending.valid_from, "until": pending.valid_until}),
                })?;
                Ok(PushAsked::Sent(PushToSend {
                    subject: PushSubject::Advance { discord_id: pending.discord_id },
                    person: person.clone(),
                    summary,
                }))
            })?
            .wait()
    }

    /// Records the push sent for a request; its deadline, or `None` if the request is gone.
    pub fn advance_push_sent(
        &self,
        discord_id: Snowflake,
        push: PushRecord,
    ) -> Result<Option<Timestamp>, StorageError> {
        self.store
            .write(|transaction| {
                let Some(mut pending) = transaction.pending_advance(discord_id)? else { return Ok(None) };
                if pending.push.is_some() {
                    return Ok(None);
                }
                pending.push = Some(push);
                transaction.put_pending_advance(&pending);
                Ok(Some(pending.expires_at))
            })?
            .wait()
    }

    /// Ends a request: in force once its push is approved (numbered `D-n` or `A-n`), else not,
    /// audited either way; a refused push is told to the SOC. Blocking.
    pub fn finish_advance(
        &self,
        discord_id: Snowflake,
        outcome: PushOutcome,
        now: Timestamp,
    ) -> Result<Option<AdvanceVouch>, StorageError> {
        // (whether a request was waiting, the vouch it became)
        let (waited, made) = self
            .store
            .write(|transaction| {
                let Some(pending) = transaction.pending_advance(discord_id)? else { return Ok((false, None)) };
                transaction.remove_pending_advance(discord_id);
                let (_, made_kind, refused_kind) = life_kinds(pending.is_declaration());
                let case_id = from_case(&pending.kind);
                let record = |kind, detail| NewRecord { at: now, case_id, kind, actor: None, playbook_version: None, detail };
                match (&outcome, pending.push.clone()) {
                    (PushOutcome::Approved, Some(push)) => {
                        let id = transaction.allocate_advance_id(pending.is_declaration())?;
                        let made = pending.made(id, push);
                        transaction.put_advance_vouch(&made);
                        transaction.append_audit(record(made_kind, json!(made)))?;
                        if let AdvanceKind::StandingApproval { monitor_until, .. } = &made.kind {
                            let until = made.valid_until.to_rfc3339();
                            let monitor = if *monitor_until > made.valid_from {
                                format!(" Until {} it only marks the cases it would close.", monitor_until.to_rfc3339())
                            } else {
                                String::new()
                            };
                            tell(
                                transaction,
                                &made.kind,
                                format!(
                                    "Standing approval {} by {}, verified with {}: this exact movement is expected until {until}.{monitor}",
                                    made.id, made.by.name, made.verified.provider
                                ),
                            )?;
                        }
                        if made.awaits_second() {
                            transaction.queue_notice(&format!(
                                "Standing approval {} by {} is on a critical system and is not in force until a second SOC member agrees: /approvals.",
                                made.id, made.by.name
                            ))?;
                        }
                        Ok((true, Some(made)))
                    }
                    _ => {
                        let denied = matches!(outcome, PushOutcome::Denied | PushOutcome::Fraud);
                        transaction.append_audit(record(
                            refused_kind,
                            json!({"scope": pending.scope, "by": pending.by, "outcome": outcome, "pushed": true}),
                        ))?;
                        if denied {
                            let hosts = pending.scope.hosts();
                            let asked = if pending.is_declaration() { "declared activity" } else { "proposed a standing approval" };
                            transaction.queue_notice(&format!(
                                "Discord account {discord_id} {asked} as {} ({} from {} to {}), and the push to verify it was refused: that account may not be who it claims. Nothing was made.",
                                pending.by.name, hosts.account, hosts.source, hosts.target
                            ))?;
                        }
                        Ok((true, None))
                    }
                }
            })?
            .wait()?;
        if waited && made.is_none() {
            self.push_cool_down.start(discord_id, now);
        }
        Ok(made)
    }

    /// Seconds or revokes vouch `id` as `actor`: the vouch as changed, or the core's refusal
    /// (recorded either way). Blocking.
    pub fn change_advance(
        &self,
        actor: &Actor,
        id: &str,
        change: AdvanceChange,
        now: Timestamp,
    ) -> Result<Result<AdvanceVouch, String>, StorageError> {
        self.store
            .write(|transaction| {
                let vouch = transaction.advance_vouch(id)?;
                let decided = match (&vouch, change) {
                    (None, _) => Err(format!("there is no {id}")),
                    (Some(vouch), AdvanceChange::Second) => vouch_playbook::advance::second(vouch, actor, now),
                    (Some(vouch), AdvanceChange::Revoke) => vouch_playbook::advance::revoke(vouch, actor, now),
                };
                let case_id = vouch.as_ref().and_then(|vouch| from_case(&vouch.kind));
                let (Some(mut vouch), Ok(decision)) = (vouch, decided.clone()) else {
                    let reason = decided.err().unwrap_or_default();
                    transaction.append_audit(NewRecord {
                        at: now,
                        case_id,
                        kind: AuditKind::AdvanceChangeRefused,
                        actor: Some(actor),
                        playbook_version: None,
                        detail: json!({"vouch": id, "change": format!("{change:?}").to_lowercase(), "reason": reason}),
                    })?;
                    return Ok(Err(reason));
                };
                let (kind, message) = match change {
                    AdvanceChange::Second => {
                        vouch.seconded_by = Some(decision);
                        let message =
                            format!("{} seconded standing approval {}: it is in force.", actor.name, vouch.id);
                        (AuditKind::ApprovalSeconded, message)
                    }
                    AdvanceChange::Revoke => {
                        vouch.revoked = Some(decision);
                        let message = format!(
                            "{} revoked {} {}: its movement is triaged as usual again.",
                            actor.name,
                            vouch.kind_name(),
                            vouch.id
                        );
                        (AuditKind::AdvanceRevoked, message)
                    }
                };
                transaction.put_advance_vouch(&vouch);
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id,
                    kind,
                    actor: Some(actor),
                    playbook_version: None,
                    detail: json!(vouch),
                })?;
                tell(transaction, &vouch.kind, message)?;
                Ok(Ok(vouch))
            })?
            .wait()
    }
}
