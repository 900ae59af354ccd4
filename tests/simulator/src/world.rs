//! The simulated guild: members, channels, messages, interactions, and what the bot did.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub const BOT_USER_ID: u64 = 900_000_000_000_000_001;
pub const APPLICATION_ID: u64 = 900_000_000_000_000_002;
pub const GUILD_ID: u64 = 900_000_000_000_000_003;

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: u64,
    pub name: String,
    pub roles: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: u64,
    /// 0 text, 1 DM, 11 public thread.
    pub kind: u8,
    pub name: String,
    pub parent_id: Option<u64>,
    pub recipient: Option<u64>,
}

/// A message as Discord stores it (the JSON it returns), plus who may see it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: u64,
    pub channel_id: u64,
    pub json: Value,
    /// For ephemeral interaction responses: only this user sees the message.
    pub ephemeral_for: Option<u64>,
    pub nonce: Option<String>,
    pub edits: u32,
}

impl StoredMessage {
    pub fn content(&self) -> &str {
        self.json["content"].as_str().unwrap_or("")
    }

    /// Every `custom_id` on the message's buttons.
    pub fn custom_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for row in self.json["components"].as_array().into_iter().flatten() {
            for component in row["components"].as_array().into_iter().flatten() {
                if let Some(id) = component["custom_id"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
        ids
    }

    /// Buttons as (label, custom_id, disabled).
    pub fn buttons(&self) -> Vec<(String, String, bool)> {
        let mut buttons = Vec::new();
        for row in self.json["components"].as_array().into_iter().flatten() {
            for component in row["components"].as_array().into_iter().flatten() {
                buttons.push((
                    component["label"].as_str().unwrap_or("").to_string(),
                    component["custom_id"].as_str().unwrap_or("").to_string(),
                    component["disabled"].as_bool().unwrap_or(false),
                ));
            }
        }
        buttons
    }
}

#[derive(Debug, Clone)]
pub struct InteractionRecord {
    pub id: u64,
    pub token: String,
    pub user_id: u64,
    pub channel_id: u64,
    pub message_id: Option<u64>,
    pub dispatched_at: Instant,
    /// The callback body the bot sent, and when.
    pub response: Option<(Value, Instant)>,
}

/// A request the bot made, as the simulator answered it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Option<Value>,
    /// When the request arrived.
    pub at: Instant,
    /// For a 429, how long the sender was told to wait.
    pub retry_after: Option<Duration>,
}

pub struct World {
    next_id: u64,
    pub token: String,
    pub members: BTreeMap<u64, Member>,
    pub channels: BTreeMap<u64, Channel>,
    pub messages: Vec<StoredMessage>,
    pub interactions: HashMap<u64, InteractionRecord>,
    pub commands: Vec<Value>,
    pub violations: Vec<String>,
    pub requests: Vec<RequestRecord>,
    /// Per-channel message-create limit: at most `.0` in any `.1`.
    pub channel_limit: Option<(usize, Duration)>,
    pub recent_posts: HashMap<u64, VecDeque<Instant>>,
    pub rate_limited: u64,
    /// Status codes to answer the next requests with, whatever they are (fault injection).
    pub injected_failures: VecDeque<u16>,
    /// (path fragment, status): the next request whose path contains the fragment gets the status.
    pub injected_path_failures: Vec<(String, u16)>,
    pub gateway_identifies: u32,
    pub gateway_resumes: u32,
}

impl World {
    pub fn new(token: &str) -> World {
        World {
            next_id: 1_000_000_000_000_000_000,
            token: token.to_string(),
            members: BTreeMap::new(),
            channels: BTreeMap::new(),
            messages: Vec::new(),
            interactions: HashMap::new(),
            commands: Vec::new(),
            violations: Vec::new(),
            requests: Vec::new(),
            channel_limit: None,
            recent_posts: HashMap::new(),
            rate_limited: 0,
            injected_failures: VecDeque::new(),
            injected_path_failures: Vec::new(),
            gateway_identifies: 0,
            gateway_resumes: 0,
        }
    }

    pub fn snowflake(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn message(&self, id: u64) -> Option<&StoredMessage> {
        self.messages.iter().find(|message| message.id == id)
    }

    /// The titles of the embeds posted in a channel, in order (one per card).
    pub fn embed_titles(&self, channel_id: u64) -> Vec<String> {
        self.channel_messages(channel_id)
            .into_iter()
            .filter_map(|message| message.json["embeds"][0]["title"].as_str().map(str::to_string))
            .collect()
    }

    /// Every request that posted a message in a channel, answered or not.
    pub fn message_posts(&self, channel_id: u64) -> Vec<&RequestRecord> {
        let path = format!("/channels/{channel_id}/messages");
        self.requests.iter().filter(|request| request.method == "POST" && request.path == path).collect()
    }

    /// Requests to a channel's message bucket (posts and edits of its messages), in order.
    pub fn bucket_requests(&self, channel_id: u64) -> Vec<&RequestRecord> {
        let posts = format!("/channels/{channel_id}/messages");
        let edits = format!("/channels/{channel_id}/messages/");
        self.requests
            .iter()
            .filter(|request| {
                (request.method == "POST" && request.path == posts)
                    || (request.method == "PATCH" && request.path.starts_with(&edits))
            })
            .collect()
    }

    /// Requests to a channel's message bucket that arrived while an earlier 429's
    /// `retry_after` was still running: Discord bans clients that keep doing that.
    pub fn requests_inside_retry_after(&self, channel_id: u64) -> usize {
        let requests = self.bucket_requests(channel_id);
        requests
            .iter()
            .enumerate()
            .filter(|(index, request)| {
                requests[..*index]
                    .iter()
                    .any(|earlier| earlier.retry_after.is_some_and(|wait| request.at < earlier.at + wait))
            })
            .count()
    }

    pub fn channel_messages(&self, channel_id: u64) -> Vec<&StoredMessage> {
        self.messages.iter().filter(|message| message.channel_id == channel_id).collect()
    }
}

pub fn now_rfc3339() -> String {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = elapsed.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}000+00:00",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60,
        elapsed.subsec_millis()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

pub fn member_json(member: &Member) -> Value {
    json!({
        "user": user_json(member.user_id, &member.name, false),
        "nick": null,
        "avatar": null,
        "roles": member.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "joined_at": "2026-01-05T09:00:00.000000+00:00",
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": "2251799813685247",
        "communication_disabled_until": null,
    })
}

/// A message as Discord returns it, from what the bot sent.
pub fn message_json(id: u64, channel_id: u64, guild_id: Option<u64>, sent: &Value, author: Value) -> Value {
    let mut message = json!({
        "id": id.to_string(),
        "channel_id": channel_id.to_string(),
        "author": author,
        "content": sent.get("content").cloned().unwrap_or(json!("")),
        "timestamp": now_rfc3339(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": sent.get("embeds").cloned().unwrap_or(json!([])),
        "components": sent.get("components").cloned().unwrap_or(json!([])),
        "pinned": false,
        "type": 0,
        "flags": sent.get("flags").cloned().unwrap_or(json!(0)),
    });
    if let Some(guild_id) = guild_id {
        message["guild_id"] = json!(guild_id.to_string());
    }
    if let Some(nonce) = sent.get("nonce") {
        message["nonce"] = nonce.clone();
    }
    message
}

pub fn channel_json(channel: &Channel, guild_id: u64) -> Value {
    match channel.kind {
        1 => json!({
            "id": channel.id.to_string(),
            "type": 1,
            "last_message_id": null,
            "recipients": [user_json(channel.recipient.unwrap_or(0), "member", false)],
            "flags": 0,
        }),
        kind => {
            let mut value = json!({
                "id": channel.id.to_string(),
                "type": kind,
                "guild_id": guild_id.to_string(),
                "name": channel.name,
                "parent_id": channel.parent_id.map(|id| id.to_string()),
                "position": 0,
                "permission_overwrites": [],
                "nsfw": false,
                "flags": 0,
                "last_message_id": null,
                "rate_limit_per_user": 0,
            });
            if kind == 11 {
                value["owner_id"] = json!(BOT_USER_ID.to_string());
                value["thread_metadata"] = json!({
                    "archived": false,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": now_rfc3339(),
                    "locked": false,
                });
                value["message_count"] = json!(0);
                value["member_count"] = json!(1);
            }
            value
        }
    }
}
