//! The directory read from Microsoft Entra ID through Microsoft Graph (a simulator that answers as
//! Microsoft documents): client credentials, users with their manager, group members as roles,
//! devices with their owners, paging through `@odata.nextLink`, throttling honoured; a manager
//! changed in Entra is asked after the next sync; a revoked secret keeps the last good directory.

use std::time::{Duration, Instant};

use serde_json::json;
use vouch_tests::graph_simulator::{GraphSimulator, GraphWorld};

use crate::support::{client, get_json, native_alert, post_alert, Workspace, GRAPH_SECRET, INGEST_TOKEN};

const TENANT: &str = "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6";
const CLIENT: &str = "7f6e5d4c-3b2a-1908-f7e6-d5c4b3a29180";
const HELPDESK_GROUP: &str = "11111111-2222-3333-4444-555555555555";

fn user(id: &str, login: &str, name: &str) -> serde_json::Value {
    json!({"id": id, "userPrincipalName": format!("{login}@corp.example"), "displayName": name,
           "accountEnabled": true, "onPremisesSamAccountName": login, "mail": format!("{login}@corp.example")})
}

async fn sync_now(base: &str) -> serde_json::Value {
    let response =
        client().post(format!("{base}/api/v1/directory/sync")).bearer_auth(INGEST_TOKEN).send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

async fn first_asked(base: &str, id: &str, target: &str) -> serde_json::Value {
    let (status, body) = post_alert(base, &native_alert(id, "WS-17", target, "CORP\\alice")).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("new")), "{body}");
    let (_, case) = get_json(base, &format!("/api/v1/cases/{}", body["case_id"].as_str().expect("id"))).await;
    case
}

#[tokio::test(flavor = "multi_thread")]
async fn entra_id_through_graph_gives_managers_roles_and_devices_and_a_bad_secret_keeps_the_last_directory() {
    let mut world = GraphWorld::default();
    world.tenant = TENANT.to_string();
    world.client_id = CLIENT.to_string();
    world.client_secret = GRAPH_SECRET.to_string();
    world.retry_after_seconds = 1;
    // The first Graph request is throttled: Vouch must wait as asked, then go on.
    world.throttle_next = 1;
    world.users = vec![
        user("u-bob", "bob", "Bob Stone"),
        user("u-carol", "carol", "Carol Diaz"),
        user("u-alice", "alice", "Alice Martin"),
        user("u-dave", "dave", "Dave Kim"),
        // Hostile input: a user without a userPrincipalName is reported and left out.
        json!({"id": "u-broken", "displayName": "No UPN"}),
    ];
    world.managers.insert("u-alice".to_string(), "u-bob".to_string());
    world.groups.insert(HELPDESK_GROUP.to_string(), vec!["u-alice".to_string()]);
    world.devices = vec![(
        json!({"id": "d-1", "deviceId": "a1", "displayName": "WS-17", "accountEnabled": true}),
        vec!["u-alice".to_string()],
    )];
    let graph = GraphSimulator::start(world).await;

    let workspace = Workspace::new("");
    std::fs::write(workspace.config().with_file_name("directory.toml"), "# nothing local\n").expect("write");
    // (A key right after the workspace's [directory] table belongs to it: with four people, one
    // deletion is 25%, over the default 20% limit.)
    workspace.append_settings(&format!(
        "max_removed_percent = 50\n[[directory.sources]]\nname = \"entra\"\nkind = \"graph\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"VOUCH_GRAPH_SECRET\" }}\nauthority = \"{base}\"\ngraph_url = \"{base}\"\npage_size = 2\n\
         [directory.sources.roles]\n\"{HELPDESK_GROUP}\" = \"helpdesk\"\n",
        base = graph.base()
    ));
    let vouch = workspace.start();
    let started = Instant::now();
    let synced = loop {
        let metrics =
            client().get(format!("{}/metrics", vouch.base)).send().await.expect("sent").text().await.expect("text");
        if metrics.contains("vouch_directory_syncs_total{source=\"entra\",outcome=\"applied\"} 1") {
            break metrics;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no sync within 30 s:\n{metrics}\n{}", vouch.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(synced.contains("vouch_directory_syncs_total"), "{synced}");
    graph.with_world(|world| {
        assert_eq!(
            (world.throttled, world.early_retries),
            (1, 0),
            "the 429's Retry-After was honoured: {:?}",
            world.requests
        );
        let user_pages = world.requests.iter().filter(|request| request.as_str() == "GET /v1.0/users/delta").count();
        assert_eq!(user_pages, 1 + 3, "one throttled try, then three pages of two: {:?}", world.requests);
    });
    let log = vouch.log_once_it_says("no userPrincipalName", 1).await;
    assert!(log.contains("no userPrincipalName"), "the broken user is reported");

    // alice's manager in Entra is asked; her helpdesk role and her own device are known.
    let case = first_asked(&vouch.base, "graph-1", "SRV-DB-01").await;
    assert_eq!(case["confirmers"][0]["person"]["id"], "bob", "{case}");
    let evidence = case["scenarios"][0]["evidence"].to_string();
    assert!(evidence.contains("roles of the account's holder: helpdesk"), "{evidence}");
    assert!(evidence.contains("source is the account holder's own workstation: yes"), "{evidence}");

    // Her manager changes in Entra; after the next sync the new one is asked.
    graph.with_world(|world| world.set_manager("u-alice", "u-carol"));
    let synced = sync_now(&vouch.base).await;
    assert_eq!(synced["sources"][0]["outcome"], "applied", "{synced}");
    assert!(synced.to_string().contains("manager_changed"), "{synced}");
    // That sync followed the delta link: only the changed user came back.
    graph.with_world(|world| {
        assert!(
            world.requests.iter().any(|request| request == "GET /v1.0/users/delta (delta link)"),
            "{:?}",
            world.requests
        )
    });
    let log = vouch.log_once_it_says("users=1", 1).await;
    assert!(log.contains("users=1"), "the incremental read returned one user: {log}");

    // A user deleted in Entra is gone after the next (incremental) sync.
    graph.with_world(|world| world.remove_user("u-dave"));
    let synced = sync_now(&vouch.base).await;
    assert!(synced.to_string().contains("\"person_removed\"") && synced.to_string().contains("dave"), "{synced}");
    assert_eq!(first_asked(&vouch.base, "graph-2", "SRV-APP-02").await["confirmers"][0]["person"]["id"], "carol");

    // The app's secret is revoked: the sync is refused, the last good directory stays.
    graph.with_world(|world| world.client_secret = "rotated-elsewhere".to_string());
    let refused = sync_now(&vouch.base).await;
    assert_eq!(refused["sources"][0]["outcome"], "refused", "{refused}");
    assert!(refused.to_string().contains("AADSTS7000215"), "{refused}");
    assert_eq!(first_asked(&vouch.base, "graph-3", "SRV-APP-03").await["confirmers"][0]["person"]["id"], "carol");
    assert_eq!(vouch.terminate(), 0);
    workspace.assert_audit_intact();
}
