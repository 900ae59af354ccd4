//! An account whose request for a push (`/link`, `/expect`) came to nothing waits before it may
//! ask again: repeated requests would be pushes the person did not ask for, the stuff of push
//! fatigue. Kept in memory: a restart forgets it, which only shortens a wait.

use std::collections::BTreeMap;
use std::sync::RwLock;

use vouch_playbook::{Snowflake, Timestamp};

/// How long an account waits after a request that came to nothing.
const COOL_DOWN_MILLIS: i64 = 10 * 60 * 1000;

#[derive(Debug, Default)]
pub struct PushCoolDown {
    /// Account → until when it waits.
    until: RwLock<BTreeMap<Snowflake, Timestamp>>,
}

impl PushCoolDown {
    /// Why this account may not ask for a push now, if it may not.
    pub fn refusal(&self, discord_id: Snowflake, now: Timestamp) -> Option<String> {
        let until = self.until.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        until.get(&discord_id).filter(|until| **until > now).map(|until| {
            format!("this account's last request came to nothing; it may ask again after {}", until.to_rfc3339())
        })
    }

    /// The account's request came to nothing at `now`.
    pub fn start(&self, discord_id: Snowflake, now: Timestamp) {
        let mut until = self.until.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        until.insert(discord_id, now.plus_millis(COOL_DOWN_MILLIS));
    }
}
