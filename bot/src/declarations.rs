//! Activity declared in advance (`/expect`): a person says "I will connect from A to B as X
//! between T1 and T2, because …", approves a push, and a matching alert in that window is then
//! vouched for by the declaration (`vouch_playbook::advance` decides when it applies).

use serde_json::json;
use vouch_playbook::advance::{AdvanceVouch, PendingDeclaration};
use vouch_playbook::engine::{PushOutcome, PushRecord};
use vouch_playbook::{Actor, AuditKind, Snowflake, Timestamp};
use vouch_storage::{NewRecord, StorageError};

use crate::service::Service;
use crate::verification::{PushAsked, PushSubject, PushToSend};

impl Service {
    /// Records a declaration asked for by `actor`, waiting on their push. Durable on return.
    /// Blocking.
    pub fn request_declaration(
        &self,
        actor: &Actor,
        pending: PendingDeclaration,
        summary: String,
        now: Timestamp,
    ) -> Result<PushAsked, StorageError> {
        let Some(person) = actor.person.clone() else {
            return Ok(PushAsked::Refused("this Discord account is not a person in the directory".to_string()));
        };
        let cooling_down = self.push_cool_down.refusal(pending.discord_id, now);
        self.store
            .write(|transaction| {
                let waiting =
                    transaction.pending_declaration(pending.discord_id)?.filter(|waiting| waiting.expires_at > now);
                let detail = json!({"scope": pending.scope, "from": pending.valid_from, "until": pending.valid_until, "reason": pending.reason});
                let refusal = match (cooling_down, waiting) {
                    (Some(reason), _) => Some(reason),
                    (None, Some(_)) => Some("a push for an earlier declaration is still waiting to be approved".to_string()),
                    (None, None) => None,
                };
                if let Some(reason) = refusal {
                    transaction.append_audit(NewRecord {
                        at: now,
                        case_id: None,
                        kind: AuditKind::DeclarationRefused,
                        actor: Some(actor),
                        playbook_version: None,
                        detail: json!({"request": detail, "reason": reason, "pushed": false}),
                    })?;
                    return Ok(PushAsked::Refused(reason));
                }
                transaction.put_pending_declaration(&pending);
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id: None,
                    kind: AuditKind::DeclarationRequested,
                    actor: Some(actor),
                    playbook_version: None,
                    detail,
                })?;
                Ok(PushAsked::Sent(PushToSend {
                    subject: PushSubject::Declaration { discord_id: pending.discord_id },
                    person,
                    summary,
                }))
            })?
            .wait()
    }

    /// Records the push sent for a declaration; its deadline, or `None` if the request is gone.
    pub fn declaration_push_sent(
        &self,
        discord_id: Snowflake,
        push: PushRecord,
    ) -> Result<Option<Timestamp>, StorageError> {
        self.store
            .write(|transaction| {
                let Some(mut pending) = transaction.pending_declaration(discord_id)? else { return Ok(None) };
                if pending.push.is_some() {
                    return Ok(None);
                }
                pending.push = Some(push);
                transaction.put_pending_declaration(&pending);
                Ok(Some(pending.expires_at))
            })?
            .wait()
    }

    /// Ends a declaration request: in force once its push is approved (numbered `D-n`), else
    /// not, audited either way; a refused push is told to the SOC. Blocking.
    pub fn finish_declaration(
        &self,
        discord_id: Snowflake,
        outcome: PushOutcome,
        now: Timestamp,
    ) -> Result<Option<AdvanceVouch>, StorageError> {
        // (whether a request was waiting, the declaration it became)
        let (waited, declared) = self
            .store
            .write(|transaction| {
                let Some(pending) = transaction.pending_declaration(discord_id)? else { return Ok((false, None)) };
                transaction.remove_pending_declaration(discord_id);
                let record = |kind, detail| NewRecord { at: now, case_id: None, kind, actor: None, playbook_version: None, detail };
                match (&outcome, pending.push.clone()) {
                    (PushOutcome::Approved, Some(push)) => {
                        let id = transaction.allocate_advance_id(true)?;
                        let declared = pending.declared(id, push);
                        transaction.put_advance_vouch(&declared);
                        transaction.append_audit(record(AuditKind::Declared, json!(declared)))?;
                        Ok((true, Some(declared)))
                    }
                    _ => {
                        let denied = matches!(outcome, PushOutcome::Denied | PushOutcome::Fraud);
                        transaction.append_audit(record(
                            AuditKind::DeclarationRefused,
                            json!({"scope": pending.scope, "by": pending.by, "outcome": outcome, "pushed": true}),
                        ))?;
                        if denied {
                            transaction.queue_notice(&format!(
                                "Discord account {discord_id} declared activity as {} ({} from {} to {}), and the push to verify it was refused: that account may not be who it claims. Nothing was declared.",
                                pending.by.name, pending.scope.account, pending.scope.source, pending.scope.target
                            ))?;
                        }
                        Ok((true, None))
                    }
                }
            })?
            .wait()?;
        if waited && declared.is_none() {
            self.push_cool_down.start(discord_id, now);
        }
        Ok(declared)
    }
}
