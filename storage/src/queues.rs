//! The work the bot carries out after a change: queued effects, outbox entries, where cards are,
//! and named points in time.

use vouch_playbook::{CaseId, Timestamp};

use crate::codec::decode;
use crate::{keys, CardRef, OutboxEntry, PendingEffect, RedrawWanted, Result, Store, UndeliveredEffect};

impl Store {
    /// Effects not yet carried out, oldest first.
    pub fn pending_effects(&self, limit: usize) -> Result<Vec<PendingEffect>> {
        self.on_current(|generation| {
            generation
                .scan_prefix(keys::EFFECT_PREFIX)
                .take(limit)
                .map(|entry| {
                    let (key, value) = entry?;
                    let mut pending: PendingEffect = decode(&value, "effect")?;
                    pending.seq = keys::seq_of_effect(&key)?;
                    Ok(pending)
                })
                .collect()
        })
    }

    /// Marks effects done. Durable when this returns, so they are not carried out again.
    pub fn complete_effects(&self, seqs: &[u64]) -> Result<()> {
        self.write(|transaction| {
            transaction.remove_effects(seqs);
            Ok(())
        })?
        .wait()
    }

    /// Drops effects that need no carrying out (a card update superseded by a later one), without
    /// waiting for a flush: if a crash loses this, the effect is merely carried out again.
    pub fn forget_effects(&self, seqs: &[u64]) -> Result<()> {
        self.write(|transaction| {
            transaction.remove_effects(seqs);
            Ok(())
        })
        .map(crate::Pending::without_waiting)
    }

    /// Cards that should be drawn again, by case.
    pub fn redraws_wanted(&self) -> Result<Vec<RedrawWanted>> {
        self.values_under(keys::REDRAW_PREFIX, "redraw")
    }

    /// Clears wishes to redraw cards once they were drawn (each unless a newer change asked
    /// again), in one write, without waiting for a flush: if a crash loses this, a card is merely
    /// drawn once more.
    pub fn clear_redraws(&self, drawn: &[RedrawWanted]) -> Result<()> {
        self.write(|transaction| drawn.iter().try_for_each(|wanted| transaction.clear_redraw(wanted)))
            .map(crate::Pending::without_waiting)
    }

    /// The chat effects of a case that no chat service carried, oldest first.
    pub fn undelivered(&self, case_id: CaseId) -> Result<Vec<UndeliveredEffect>> {
        let kept: Vec<KeptUndelivered> = self.values_under(&keys::undelivered_prefix(case_id), "undelivered effect")?;
        Ok(kept
            .into_iter()
            .flat_map(|kept| match kept {
                KeptUndelivered::One(effect) => vec![effect],
                KeptUndelivered::Together(effects) => effects,
            })
            .collect())
    }

    /// Outbound calls waiting to be made, by id.
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.values_under(keys::OUTBOX_PREFIX, "outbox entry")
    }

    /// Notices waiting to be posted to the SOC channel, oldest first.
    pub fn notices(&self) -> Result<Vec<crate::Notice>> {
        self.values_under(keys::NOTICE_PREFIX, "notice")
    }

    /// Takes a posted notice off the queue. Durable on return.
    pub fn complete_notice(&self, seq: u64) -> Result<()> {
        self.write(|transaction| {
            transaction.remove_notice(seq);
            Ok(())
        })?
        .wait()
    }

    /// Every directory source's last good snapshot, as the JSON it was stored as (its owner
    /// parses it straight into its own type: a large snapshot is never a `serde_json::Value`).
    pub fn directory_snapshots(&self) -> Result<Vec<Vec<u8>>> {
        self.on_current(|generation| {
            generation
                .scan_prefix(keys::DIRECTORY_SNAPSHOT_PREFIX)
                .map(|entry| {
                    let (_, value) = entry?;
                    crate::codec::decode_json(&value, "directory snapshot")
                })
                .collect()
        })
    }

    /// How many directory snapshots were written so far: it changes when any replica keeps one.
    pub fn directory_version(&self) -> Result<u64> {
        self.on_current(|generation| match generation.get(keys::META_DIRECTORY_VERSION)? {
            Some(value) => keys::decode_u64(&value, "directory version"),
            None => Ok(0),
        })
    }

    /// One directory source's last good snapshot, as the JSON it was stored as.
    pub fn directory_snapshot(&self, source: &str) -> Result<Option<Vec<u8>>> {
        self.on_current(|generation| match generation.get(keys::directory_snapshot(source))? {
            Some(value) => crate::codec::decode_json(&value, "directory snapshot").map(Some),
            None => Ok(None),
        })
    }

    /// Every vouch in advance asked for and still waiting on its push.
    pub fn pending_advances(&self) -> Result<Vec<vouch_playbook::advance::PendingAdvance>> {
        self.values_under(keys::PENDING_ADVANCE_PREFIX, "pending advance vouch")
    }

    /// Every vouch given in advance, by id.
    pub fn advance_vouches(&self) -> Result<Vec<vouch_playbook::advance::AdvanceVouch>> {
        self.values_under(keys::ADVANCE_VOUCH_PREFIX, "advance vouch")
    }

    /// Every Discord account bound to a person.
    pub fn identity_links(&self) -> Result<Vec<vouch_playbook::identity::IdentityLink>> {
        self.values_under(keys::IDENTITY_LINK_PREFIX, "identity link")
    }

    /// Every link asked for and still waiting on its push.
    pub fn pending_links(&self) -> Result<Vec<vouch_playbook::identity::PendingLink>> {
        self.values_under(keys::PENDING_LINK_PREFIX, "pending link")
    }

    /// Every value stored under a key prefix, in key order.
    fn values_under<T: serde::de::DeserializeOwned>(&self, prefix: &[u8], what: &str) -> Result<Vec<T>> {
        self.on_current(|generation| {
            generation
                .scan_prefix(prefix)
                .map(|entry| {
                    let (_, value) = entry?;
                    decode(&value, what)
                })
                .collect()
        })
    }

    /// Where a case's card was posted, once it was.
    pub fn card(&self, case_id: CaseId) -> Result<Option<CardRef>> {
        self.on_current(|generation| match generation.get(keys::card(case_id))? {
            Some(value) => Ok(Some(decode(&value, "card")?)),
            None => Ok(None),
        })
    }

    /// Records where a case's card was posted. Durable on return.
    pub fn set_card(&self, case_id: CaseId, card: &CardRef) -> Result<()> {
        self.write(|transaction| {
            transaction.set_card(case_id, card);
            Ok(())
        })?
        .wait()
    }

    /// A named point in time kept across restarts.
    pub fn marker(&self, name: &str) -> Result<Option<Timestamp>> {
        self.on_current(|generation| match generation.get(keys::marker(name))? {
            Some(value) => Ok(Some(Timestamp::from_unix_millis(keys::decode_u64(&value, "marker")? as i64))),
            None => Ok(None),
        })
    }
}

/// What one `u/` key holds: the effects one change kept as undelivered, together, or (stores
/// written before) a single effect.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum KeptUndelivered {
    One(UndeliveredEffect),
    Together(Vec<UndeliveredEffect>),
}
