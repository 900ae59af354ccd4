//! Reads Microsoft Entra ID through Microsoft Graph into a [`SourceSnapshot`]: a client
//! credentials token from the identity platform, users with their manager
//! (`$expand=manager`), members of the groups mapped to roles, devices with their registered
//! owners, every list followed through `@odata.nextLink`, and throttling (429 with
//! `Retry-After`) honoured.
//!
//! Graph's answers are hostile input: objects without the fields Vouch needs are reported with
//! their id and left out; values are capped.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use vouch_config::{GraphSource, SourceSnapshot, SyncedAsset, SyncedPerson};
use vouch_playbook::model::cap;
use vouch_playbook::Timestamp;

const MAX_VALUE: usize = 256;
/// Pages followed per list at most (999 objects each): beyond that a directory is not one.
const MAX_PAGES: usize = 10_000;
/// Throttled answers waited out per request before the sync gives up.
const MAX_THROTTLES: u32 = 5;
/// The longest `Retry-After` honoured; a longer one fails the sync (the next one will retry).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum GraphSyncError {
    #[error("the identity platform refused the client credentials: {0}")]
    Token(String),
    #[error("Graph answered {url} with {status}: {detail}")]
    Status { url: String, status: u16, detail: String },
    #[error("cannot reach {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("Graph answered {url} with something that is not a list of objects")]
    Shape { url: String },
    #[error("the CA file {path} is not usable: {reason}")]
    CaFile { path: String, reason: String },
}

/// What reading Entra found, and the objects it left out with why.
pub struct GraphRead {
    pub snapshot: SourceSnapshot,
    pub skipped: Vec<String>,
}

struct Graph<'a> {
    source: &'a GraphSource,
    client: reqwest::Client,
    token: String,
}

/// Reads Entra. Users come from a delta query: the first read (and a full one, on the
/// `full_sync` schedule) enumerates them and ends with a delta link; later reads follow that
/// link and get only what changed since, merged into the users kept in `previous`. Group
/// members and devices are read whole each time.
pub async fn read(
    name: &str,
    source: &GraphSource,
    now: Timestamp,
    previous: Option<&SourceSnapshot>,
) -> Result<GraphRead, GraphSyncError> {
    let mut builder = reqwest::Client::builder().timeout(source.timeout).redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &source.ca_file {
        let ca_error = |reason: String| GraphSyncError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).map_err(|error| ca_error(error.to_string()))?);
    }
    let client = builder
        .build()
        .map_err(|error| GraphSyncError::Transport { url: source.graph_url.clone(), reason: error.to_string() })?;
    let token = token(&client, source).await?;
    let graph = Graph { source, client, token };

    let incremental = SourceSnapshot::to_continue(previous, &source.full_sync, now);
    let mut users: BTreeMap<String, Value> = incremental
        .and_then(|previous| previous.state.as_ref())
        .and_then(|state| state["users"].as_object())
        .map(|users| users.iter().map(|(id, user)| (id.clone(), user.clone())).collect())
        .unwrap_or_default();
    let start = match incremental.and_then(|previous| previous.cursor.clone()) {
        Some(delta_link) => delta_link,
        None => {
            let mut select =
                "id,userPrincipalName,displayName,mail,onPremisesSamAccountName,accountEnabled,department,manager"
                    .to_string();
            if let Some(property) = &source.discord_id_property {
                select.push(',');
                select.push_str(property);
            }
            format!("{}/v1.0/users/delta?$select={select}&$top={}", source.graph_url, source.page_size)
        }
    };
    let (changes, delta_link) = graph.delta(&start).await?;
    let changed = changes.len();
    for change in changes {
        apply_user_change(&mut users, change);
    }
    tracing::info!(
        source = name,
        read = if incremental.is_some() { "incremental" } else { "full" },
        users = changed,
        "read Entra ID users"
    );
    let user_list: Vec<Value> = users.values().cloned().collect();
    let mut members_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, _) in &source.roles {
        let members = graph.list(&format!("/v1.0/groups/{group}/members?$select=id&$top={}", source.page_size)).await?;
        members_of.insert(group.clone(), members.iter().filter_map(|member| text(member, "id")).collect());
    }
    let devices = graph
        .list(&format!(
            "/v1.0/devices?$select=id,deviceId,displayName,operatingSystem,accountEnabled&$expand=registeredOwners($select=id)&$top={}",
            source.page_size
        ))
        .await?;
    let mut read = assemble(name, source, now, &user_list, &members_of, &devices);
    read.snapshot.cursor = Some(delta_link);
    read.snapshot.full_synced_at = match incremental {
        Some(previous) => previous.full_synced_at,
        None => Some(now),
    };
    read.snapshot.state = Some(serde_json::json!({"users": users}));
    Ok(read)
}

/// Folds one entry of a delta page into the users kept: a removal, or the properties that
/// changed (a manager change arrives as `manager@delta`).
fn apply_user_change(users: &mut BTreeMap<String, Value>, change: Value) {
    let Some(id) = change["id"].as_str().map(str::to_string) else { return };
    if change.get("@removed").is_some() {
        users.remove(&id);
        return;
    }
    let user = users.entry(id).or_insert_with(|| serde_json::json!({}));
    let Some(change) = change.as_object() else { return };
    for (key, value) in change {
        if key == "manager@delta" {
            let manager =
                value.as_array().and_then(|managers| managers.iter().find(|manager| manager.get("@removed").is_none()));
            match manager.and_then(|manager| manager["id"].as_str()) {
                Some(manager) => user["manager"] = serde_json::json!({"id": manager}),
                None => {
                    if let Some(object) = user.as_object_mut() {
                        object.remove("manager");
                    }
                }
            }
        } else if !key.starts_with("@odata.") {
            user[key.as_str()] = value.clone();
        }
    }
}

async fn token(client: &reqwest::Client, source: &GraphSource) -> Result<String, GraphSyncError> {
    let url = format!("{}/{}/oauth2/v2.0/token", source.authority, source.tenant_id);
    // The scope is Graph's resource id, whichever host serves Graph.
    let form = [
        ("client_id", source.client_id.as_str()),
        ("client_secret", source.client_secret.expose()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let response = client
        .post(&url)
        .form(&form)
        .send()
        .await
        .map_err(|error| GraphSyncError::Transport { url: url.clone(), reason: error.to_string() })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["error_description"].as_str().or(body["error"].as_str()).unwrap_or("no detail");
        return Err(GraphSyncError::Token(format!("{status}: {}", cap(detail, 300))));
    }
    body["access_token"]
        .as_str()
        .filter(|token| !token.is_empty())
        .map(str::to_string)
        .ok_or_else(|| GraphSyncError::Token("the answer carried no access_token".to_string()))
}

impl Graph<'_> {
    /// A delta round from `start`: every page's entries, and the delta link that ends it.
    async fn delta(&self, start: &str) -> Result<(Vec<Value>, String), GraphSyncError> {
        let mut url = start.to_string();
        let mut entries = Vec::new();
        for _ in 0..MAX_PAGES {
            if !url.starts_with(&self.source.graph_url) {
                return Err(GraphSyncError::Status { url, status: 200, detail: "a link outside Graph".to_string() });
            }
            let page = self.get(&url).await?;
            let Some(items) = page["value"].as_array() else { return Err(GraphSyncError::Shape { url }) };
            entries.extend(items.iter().filter(|item| item.is_object()).cloned());
            if let Some(next) = page["@odata.nextLink"].as_str() {
                url = next.to_string();
                continue;
            }
            return match page["@odata.deltaLink"].as_str() {
                Some(delta) => Ok((entries, delta.to_string())),
                None => Err(GraphSyncError::Shape { url }),
            };
        }
        Err(GraphSyncError::Shape { url })
    }

    /// Every object of a list, following `@odata.nextLink`.
    async fn list(&self, path: &str) -> Result<Vec<Value>, GraphSyncError> {
        let mut url = format!("{}{path}", self.source.graph_url);
        let mut objects = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.get(&url).await?;
            let Some(items) = page["value"].as_array() else { return Err(GraphSyncError::Shape { url }) };
            objects.extend(items.iter().filter(|item| item.is_object()).cloned());
            match page["@odata.nextLink"].as_str() {
                // A next link elsewhere than Graph itself is not followed (it would carry the token).
                Some(next) if next.starts_with(&self.source.graph_url) => url = next.to_string(),
                Some(next) => {
                    return Err(GraphSyncError::Status {
                        url,
                        status: 200,
                        detail: format!("a next link outside Graph: {}", cap(next, 200)),
                    })
                }
                None => return Ok(objects),
            }
        }
        Ok(objects)
    }

    /// One request, waiting out throttling as Graph asks (`Retry-After`, in seconds).
    async fn get(&self, url: &str) -> Result<Value, GraphSyncError> {
        let mut throttled = 0;
        loop {
            let response = self
                .client
                .get(url)
                .bearer_auth(&self.token)
                .header("ConsistencyLevel", "eventual")
                .send()
                .await
                .map_err(|error| GraphSyncError::Transport { url: url.to_string(), reason: error.to_string() })?;
            let status = response.status();
            if status.as_u16() == 429 || status.as_u16() == 503 {
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(2));
                throttled += 1;
                if throttled > MAX_THROTTLES || wait > MAX_RETRY_AFTER {
                    return Err(GraphSyncError::Status {
                        url: url.to_string(),
                        status: status.as_u16(),
                        detail: format!("still throttled after {throttled} waits"),
                    });
                }
                tracing::info!(url, seconds = wait.as_secs(), "Graph throttled the sync; waiting as it asks");
                tokio::time::sleep(wait).await;
                continue;
            }
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let detail =
                    body["error"]["message"].as_str().or(body["error"]["code"].as_str()).unwrap_or("no detail");
                return Err(GraphSyncError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    detail: cap(detail, 300),
                });
            }
            return Ok(body);
        }
    }
}

fn text(object: &Value, field: &str) -> Option<String> {
    object[field].as_str().map(|value| cap(value, MAX_VALUE)).filter(|value| !value.is_empty())
}

/// The person id an Entra user has in Vouch: the on-premises login when synced from AD (so it
/// meets the same person read from LDAP), else the UPN's local part.
fn person_id(user: &Value) -> Option<String> {
    text(user, "onPremisesSamAccountName")
        .or_else(|| text(user, "userPrincipalName").map(|upn| upn.split('@').next().unwrap_or(&upn).to_string()))
        .map(|id| id.to_ascii_lowercase())
}

fn assemble(
    name: &str,
    source: &GraphSource,
    now: Timestamp,
    users: &[Value],
    members_of: &BTreeMap<String, Vec<String>>,
    devices: &[Value],
) -> GraphRead {
    let mut skipped = Vec::new();
    let mut person_by_object: BTreeMap<String, String> = BTreeMap::new();
    for user in users {
        match (text(user, "id"), person_id(user)) {
            (Some(object), Some(person)) if user["accountEnabled"].as_bool() != Some(false) => {
                person_by_object.insert(object, person);
            }
            (Some(_), Some(_)) => {}
            (object, _) => {
                skipped.push(format!("user {}: no userPrincipalName", object.unwrap_or_else(|| "without an id".into())))
            }
        }
    }
    let mut snapshot = SourceSnapshot { source: name.to_string(), synced_at: Some(now), ..SourceSnapshot::default() };
    for device in devices {
        let Some(hostname) = text(device, "displayName") else {
            skipped.push(format!("device {}: no displayName", text(device, "id").unwrap_or_default()));
            continue;
        };
        if device["accountEnabled"].as_bool() == Some(false) {
            continue;
        }
        let owner = device["registeredOwners"]
            .as_array()
            .and_then(|owners| owners.iter().find_map(|owner| text(owner, "id")))
            .and_then(|object| person_by_object.get(&object).cloned());
        snapshot.assets.push(SyncedAsset {
            hostname,
            origin: format!("devices/{}", text(device, "id").unwrap_or_default()),
            ips: Vec::new(),
            kind: Some(source.devices_kind.id().to_string()),
            criticality: source.devices_criticality.map(|level| level.id().to_string()),
            owner,
        });
    }
    for user in users {
        let (Some(object), Some(id)) = (text(user, "id"), person_id(user)) else { continue };
        if user["accountEnabled"].as_bool() == Some(false) {
            continue;
        }
        let roles = source
            .roles
            .iter()
            .filter(|(group, _)| members_of.get(group).is_some_and(|members| members.contains(&object)))
            .map(|(_, role)| role.clone())
            .collect();
        let mut accounts = vec![id.clone()];
        if let Some(upn) = text(user, "userPrincipalName") {
            accounts.push(upn.to_ascii_lowercase());
        }
        let manager = user["manager"]["id"].as_str().and_then(|object| person_by_object.get(object).cloned());
        snapshot.people.push(SyncedPerson {
            id,
            origin: format!("users/{object}"),
            name: text(user, "displayName"),
            discord_id: source.discord_id_property.as_deref().and_then(|property| text(user, property)),
            manager,
            team: text(user, "department"),
            roles,
            workstations: Vec::new(),
            accounts,
        });
    }
    // A device a person owns is their workstation.
    snapshot.give_people_their_workstations();
    GraphRead { snapshot, skipped }
}
