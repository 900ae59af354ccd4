//! One budget per channel for everything Vouch sends to it: Discord counts posting and editing
//! messages in a channel against the same bucket (about 5 per 5 s), says where the bucket stands
//! on every answer (`X-RateLimit-Remaining`, `X-RateLimit-Reset-After`), and bans clients that
//! keep sending inside a 429's `retry_after`. The budget is learned from those answers, on both
//! the `https://` path (serenity's own limiter on, which tracks posts and edits apart) and the
//! `http://` path (limiter off), so Vouch waits instead of being refused.

use std::collections::HashMap;
use std::time::Duration;

use serenity::all::ChannelId;
use tokio::time::Instant;

/// What Vouch assumes of a channel it has not heard about yet: Discord's usual message limit.
const ASSUMED_LIMIT: u32 = 5;
const ASSUMED_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
struct Budget {
    limit: u32,
    remaining: u32,
    /// When the bucket next gives room; until then `remaining` is all there is.
    resets_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct ChannelBudgets {
    channels: HashMap<ChannelId, Budget>,
}

impl ChannelBudgets {
    /// Waits until the channel may take one more post or edit, and counts it.
    pub(super) async fn reserve(&mut self, channel_id: ChannelId) {
        let now = Instant::now();
        let budget = self.channels.entry(channel_id).or_insert(Budget {
            limit: ASSUMED_LIMIT,
            remaining: ASSUMED_LIMIT,
            resets_at: now + ASSUMED_WINDOW,
        });
        if budget.remaining == 0 && now < budget.resets_at {
            tokio::time::sleep_until(budget.resets_at).await;
        }
        let now = Instant::now();
        if now >= budget.resets_at {
            // The next answer says how much room there really is; until then, assume a fresh
            // window (the request being sent is the only one in flight, so at worst it is the
            // one Discord refuses, and the refusal is learned from).
            budget.remaining = budget.limit;
            budget.resets_at = now + ASSUMED_WINDOW;
        }
        budget.remaining = budget.remaining.saturating_sub(1);
    }

    /// Learns where the channel's bucket stands from an answer's headers.
    pub(super) fn learn(&mut self, channel_id: ChannelId, headers: &reqwest::header::HeaderMap) {
        let number = |name: &str| {
            headers.get(name).and_then(|value| value.to_str().ok()).and_then(|text| text.parse::<f64>().ok())
        };
        let (Some(remaining), Some(reset_after)) = (number("x-ratelimit-remaining"), number("x-ratelimit-reset-after"))
        else {
            return;
        };
        let limit = number("x-ratelimit-limit").map_or(ASSUMED_LIMIT, |limit| limit.clamp(1.0, 1000.0) as u32);
        let reset_after = Duration::from_secs_f64(reset_after.clamp(0.0, 3600.0));
        self.channels.insert(
            channel_id,
            Budget {
                limit,
                remaining: remaining.clamp(0.0, f64::from(limit)) as u32,
                resets_at: Instant::now() + reset_after,
            },
        );
    }

    /// A 429: nothing more to this channel until `retry_after`, or a whole window when the
    /// answer did not say (a window is never shorter than what Discord asks).
    pub(super) fn refused(&mut self, channel_id: ChannelId, retry_after: Option<Duration>) {
        let now = Instant::now();
        let wait = retry_after.unwrap_or(ASSUMED_WINDOW).max(Duration::from_millis(50));
        let budget = self.channels.entry(channel_id).or_insert(Budget {
            limit: ASSUMED_LIMIT,
            remaining: 0,
            resets_at: now + wait,
        });
        budget.remaining = 0;
        budget.resets_at = budget.resets_at.max(now + wait);
    }
}
