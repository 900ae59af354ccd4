//! A store several replicas share (PostgreSQL): what each may change ([`Fence`]), the campaign
//! for the lead, the check before acting on the outside world, and hearing of work another
//! replica's change left. On sled there is one process, which may change everything.

use std::time::Duration;

use crate::engine::Engine;
use crate::postgres::Campaign;
use crate::{Result, StorageError, Store};

/// What a process may change in a store that several replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Everything, unchecked: the only process (sled), or a tool run by hand.
    Alone,
    /// Everything, as the leader of this epoch: every change but those any replica makes checks
    /// in its own transaction that the epoch is still the database's, and is refused (and this
    /// process becomes a standby) when another replica took the lead meanwhile.
    Leader(u64),
    /// Only the changes any replica makes (alerts taken, directory pushes); the rest are refused.
    Standby,
}

impl Store {
    /// What this process may change now.
    pub fn fence(&self) -> Fence {
        *self.fence.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets what this process may change: the leadership says, as it wins or loses the lead.
    pub fn set_fence(&self, fence: Fence) {
        *self.fence.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = fence;
    }

    /// Checks, just before acting on the outside world (posting to chat, calling a webhook),
    /// that this process still leads: a leader paused past its lease must not act on what it
    /// read before the pause. One read of the epoch; `Fenced` (and standing by) when it moved.
    pub fn confirm_lead(&self) -> Result<()> {
        match self.fence() {
            Fence::Alone => Ok(()),
            Fence::Standby => Err(StorageError::NotLeader),
            Fence::Leader(epoch) => {
                let current = self.on_current(|generation| match &generation.engine {
                    Engine::Postgres(postgres) => postgres.leader_epoch(),
                    Engine::Sled { .. } => Ok(epoch),
                })?;
                if current == epoch {
                    return Ok(());
                }
                self.set_fence(Fence::Standby);
                Err(StorageError::Fenced { epoch, current })
            }
        }
    }

    /// On PostgreSQL, a listener for changes (by any replica) that leave work for the leader;
    /// `None` on sled, where every change is this process's own.
    pub fn listen_for_work(&self) -> Result<Option<crate::WorkListener>> {
        self.on_current(|generation| match &generation.engine {
            Engine::Postgres(postgres) => postgres.listen_for_work().map(Some),
            Engine::Sled { .. } => Ok(None),
        })
    }

    /// One try to lead the replicas sharing this PostgreSQL store (see [`Campaign`]).
    pub fn campaign(&self, holder: &str, stale_after: Duration) -> Result<Campaign> {
        self.on_current(|generation| match &generation.engine {
            Engine::Postgres(postgres) => postgres.campaign(holder, stale_after),
            Engine::Sled { .. } => Err(StorageError::Conflict("a sled store has one process, which leads".to_string())),
        })
    }
}
