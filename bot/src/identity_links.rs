//! Discord accounts bound to people by a push the person approved (`/link`): the requests, what
//! their pushes' ends bind (decided by `vouch_playbook::identity`), unlinking, and the bindings
//! in force, kept in memory beside the store for the click path.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde_json::json;
use vouch_playbook::engine::{PushOutcome, PushRecord};
use vouch_playbook::identity::{link_decision, IdentityLink, LinkDecision, PendingLink};
use vouch_playbook::{Actor, AuditKind, PersonId, Snowflake, Timestamp};
use vouch_storage::{NewRecord, StorageError, Store};

use crate::service::Service;
use crate::verification::{PushAsked, PushSubject, PushToSend};

/// The bindings in force: Discord account → person.
#[derive(Debug, Default)]
pub struct LinkedAccounts {
    by_account: RwLock<BTreeMap<Snowflake, PersonId>>,
}

impl LinkedAccounts {
    /// Reads the links again (a replica taking the lead: the last leader may have changed them).
    pub fn reload(&self, store: &Store) -> Result<(), StorageError> {
        let links = store.identity_links()?;
        *self.by_account.write().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            links.into_iter().map(|link| (link.discord_id, link.person)).collect();
        Ok(())
    }

    pub fn load(store: &Store) -> Result<LinkedAccounts, StorageError> {
        let links = store.identity_links()?;
        Ok(LinkedAccounts {
            by_account: RwLock::new(links.into_iter().map(|link| (link.discord_id, link.person)).collect()),
        })
    }

    pub fn person(&self, discord_id: Snowflake) -> Option<PersonId> {
        self.by_account.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&discord_id).cloned()
    }

    /// The accounts bound to a person.
    fn accounts_of(&self, person: &PersonId) -> Vec<Snowflake> {
        let links = self.by_account.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        links.iter().filter(|(_, linked)| *linked == person).map(|(account, _)| *account).collect()
    }

    fn set(&self, discord_id: Snowflake, person: Option<PersonId>) {
        let mut links = self.by_account.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match person {
            Some(person) => links.insert(discord_id, person),
            None => links.remove(&discord_id),
        };
    }
}

/// How a link request's push ended, for the bindings kept in memory.
enum LinkEnd {
    NoRequest,
    Bound(IdentityLink, Vec<IdentityLink>),
    NotBound,
}

impl Service {
    /// Records that `actor`'s Discord account asks to be bound to `person`, and the push that
    /// will ask the person. Durable on return. Blocking.
    pub fn request_link(
        &self,
        actor: &Actor,
        discord_id: Snowflake,
        person: PersonId,
        summary: String,
        lifetime_millis: i64,
        now: Timestamp,
    ) -> Result<PushAsked, StorageError> {
        let cooling_down = self.push_cool_down.refusal(discord_id, now);
        self.store
            .write(|transaction| {
                let waiting = transaction.pending_link(discord_id)?.filter(|waiting| waiting.expires_at > now);
                let refusal = match (cooling_down, waiting) {
                    (Some(reason), _) => Some(reason),
                    (None, Some(waiting)) => {
                        Some(format!("a push to {} for this account is still waiting to be approved", waiting.person))
                    }
                    (None, None) => None,
                };
                if let Some(reason) = refusal {
                    // A request refused before any push is audited like every other.
                    transaction.append_audit(NewRecord {
                        at: now,
                        case_id: None,
                        kind: AuditKind::IdentityLinkRefused,
                        actor: Some(actor),
                        playbook_version: None,
                        detail: json!({"discord_id": discord_id, "person": person, "reason": reason, "pushed": false}),
                    })?;
                    return Ok(PushAsked::Refused(reason));
                }
                let pending = PendingLink {
                    discord_id,
                    person: person.clone(),
                    requested_at: now,
                    expires_at: now.plus_millis(lifetime_millis),
                    push: None,
                };
                transaction.put_pending_link(&pending);
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id: None,
                    kind: AuditKind::IdentityLinkRequested,
                    actor: Some(actor),
                    playbook_version: None,
                    detail: json!({"discord_id": discord_id, "person": person}),
                })?;
                Ok(PushAsked::Sent(PushToSend { subject: PushSubject::Link { discord_id }, person, summary }))
            })?
            .wait()
    }

    /// Records the push sent for a link request; its deadline, or `None` if the request is gone.
    pub fn link_push_sent(&self, discord_id: Snowflake, push: PushRecord) -> Result<Option<Timestamp>, StorageError> {
        self.store
            .write(|transaction| {
                let Some(mut pending) = transaction.pending_link(discord_id)? else { return Ok(None) };
                if pending.push.is_some() {
                    return Ok(None);
                }
                pending.push = Some(push);
                transaction.put_pending_link(&pending);
                Ok(Some(pending.expires_at))
            })?
            .wait()
    }

    /// Ends a link request with its push's outcome: binds the account (ending the links it
    /// replaces) or not, audited either way; a refused push is told to the SOC. Blocking.
    pub fn finish_link(&self, discord_id: Snowflake, outcome: PushOutcome, now: Timestamp) -> Result<(), StorageError> {
        let ended = self
            .store
            .write(|transaction| {
                let Some(pending) = transaction.pending_link(discord_id)? else { return Ok(LinkEnd::NoRequest) };
                transaction.remove_pending_link(discord_id);
                let mut links = Vec::new();
                for account in std::iter::once(discord_id).chain(self.links.accounts_of(&pending.person)) {
                    links.extend(transaction.identity_link(account)?);
                }
                let decision = link_decision(&pending, &outcome, &links, now);
                let record = |kind, detail| NewRecord {
                    at: now,
                    case_id: None,
                    kind,
                    actor: None,
                    playbook_version: None,
                    detail,
                };
                match decision {
                    LinkDecision::Bind { link, replacing } => {
                        for old in &replacing {
                            transaction.remove_identity_link(old.discord_id);
                        }
                        transaction.put_identity_link(&link);
                        let replaced: Vec<_> =
                            replacing.iter().map(|old| json!({"discord_id": old.discord_id, "person": old.person})).collect();
                        transaction.append_audit(record(
                            AuditKind::IdentityLinked,
                            json!({"discord_id": discord_id, "person": link.person, "verified": link.verified, "replacing": replaced}),
                        ))?;
                        Ok(LinkEnd::Bound(link, replacing))
                    }
                    LinkDecision::NotBound { reason, concern } => {
                        transaction.append_audit(record(
                            AuditKind::IdentityLinkRefused,
                            json!({"discord_id": discord_id, "person": pending.person, "reason": reason, "outcome": outcome}),
                        ))?;
                        if concern {
                            transaction.queue_notice(&format!(
                                "Discord account {discord_id} asked to act as {} in Vouch, and {reason}: that account may not be who it claims. Nothing was linked.",
                                pending.person
                            ))?;
                        }
                        Ok(LinkEnd::NotBound)
                    }
                }
            })?
            .wait()?;
        match ended {
            LinkEnd::Bound(link, replacing) => {
                for old in replacing {
                    self.links.set(old.discord_id, None);
                }
                self.links.set(link.discord_id, Some(link.person));
            }
            LinkEnd::NotBound => self.push_cool_down.start(discord_id, now),
            // The request was already gone (ended before a restart): nothing was asked now.
            LinkEnd::NoRequest => {}
        }
        Ok(())
    }

    /// Unbinds a Discord account; the person it was bound to, if any. Durable on return. Blocking.
    pub fn unlink(
        &self,
        actor: &Actor,
        discord_id: Snowflake,
        now: Timestamp,
    ) -> Result<Option<PersonId>, StorageError> {
        let unlinked = self
            .store
            .write(|transaction| {
                let Some(link) = transaction.identity_link(discord_id)? else { return Ok(None) };
                transaction.remove_identity_link(discord_id);
                transaction.append_audit(NewRecord {
                    at: now,
                    case_id: None,
                    kind: AuditKind::IdentityUnlinked,
                    actor: Some(actor),
                    playbook_version: None,
                    detail: json!({"discord_id": discord_id, "person": link.person}),
                })?;
                Ok(Some(link.person))
            })?
            .wait()?;
        if unlinked.is_some() {
            self.links.set(discord_id, None);
        }
        Ok(unlinked)
    }

    /// Hands a push to the verification worker (after the change asking for it is durable).
    pub fn send_push(&self, push: PushToSend) {
        if let Some(pushes) = &self.pushes {
            // The worker is gone only while Vouch stops; the request then ends on restart.
            let _ = pushes.send(push);
        }
    }
}
