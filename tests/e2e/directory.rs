//! The directory read from the organisation's own LDAP (a real `slapd`): a changed manager is
//! asked after the next sync and the change is audited; a sync that would remove most people is
//! refused and reported once; with the source down, Vouch restarts and still asks the right
//! people from its stored snapshot.

use std::time::{Duration, Instant};

use crate::support::{case_until, client, get_json, native_alert, post_alert, Workspace, INGEST_TOKEN};
use vouch_tests::slapd::{self, Slapd, SUFFIX};

/// Waits until `/metrics` counts `count` syncs of the source with this outcome.
async fn syncs(base: &str, outcome: &str, count: u64) {
    let line = format!("vouch_directory_syncs_total{{source=\"corp-ad\",outcome=\"{outcome}\"}} {count}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client().get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("text");
        if metrics.contains(&line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` within 30 s:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sync_now(base: &str) -> serde_json::Value {
    sync_with(base, "").await
}

/// A sync reading the source whole (`?full=true`): the only kind that sees deletions.
async fn sync_whole(base: &str) -> serde_json::Value {
    sync_with(base, "?full=true").await
}

async fn sync_with(base: &str, query: &str) -> serde_json::Value {
    let response = client()
        .post(format!("{base}/api/v1/directory/sync{query}"))
        .bearer_auth(INGEST_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("json")
}

/// The person first asked to vouch for a new case of `account` reaching `target` from WS-17.
async fn first_asked(base: &str, id: &str, target: &str) -> String {
    let (status, body) = post_alert(base, &native_alert(id, "WS-17", target, "CORP\\alice")).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("new")), "{body}");
    let case_id = body["case_id"].as_str().expect("case id");
    let (_, case) = get_json(base, &format!("/api/v1/cases/{case_id}")).await;
    case["confirmers"][0]["person"]["id"].as_str().unwrap_or("nobody").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ldap_changes_reach_cases_are_audited_and_a_bad_sync_keeps_the_last_good_directory() {
    if !slapd::available() {
        return;
    }
    let mut ldap = Slapd::start();
    let mut entries = String::new();
    for (login, name, manager) in [
        ("bob", "Bob Stone", None),
        ("carol", "Carol Diaz", None),
        ("alice", "Alice Martin", Some("bob")),
        ("dave", "Dave Kim", Some("bob")),
        ("erin", "Erin Wu", Some("carol")),
    ] {
        entries.push_str(&slapd::person(login, name, manager, None));
    }
    entries.push_str(&slapd::computer("WS-17", "Workstations", Some("alice")));
    for server in ["SRV-DB-01", "SRV-APP-02", "SRV-APP-03"] {
        entries.push_str(&slapd::computer(server, "Servers", None));
    }
    entries.push_str(&format!(
        "dn: cn=Helpdesk,ou=Groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: Helpdesk\nmember: cn=alice,ou=People,{SUFFIX}\n\n"
    ));
    // Hostile entries: one without a login, one whose login is not an id Vouch can use and
    // whose manager is nobody the directory holds. Each is reported with its DN and left out;
    // the good entries sync all the same.
    entries.push_str(&format!(
        "dn: cn=nologin,ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: nologin\nsn: No Login\n\n"
    ));
    entries.push_str(&slapd::person("Not A Login!", "@everyone", Some("ghost"), None));
    ldap.add(&entries);

    let workspace = Workspace::new("");
    // The local overlay knows nothing: everything comes from LDAP.
    std::fs::write(workspace.config().with_file_name("directory.toml"), "# facts LDAP does not hold\n").expect("write");
    workspace.append_settings(&slapd::source_settings(&ldap));
    let vouch = workspace.start();
    syncs(&vouch.base, "applied", 1).await;

    let log = vouch.log_once_it_says("a synced directory entry was left out", 1).await;
    assert!(
        log.contains(&format!("cn=nologin,ou=People,{SUFFIX}: no sAMAccountName")),
        "the entry without a login is reported"
    );
    assert!(
        log.lines().any(|line| line.contains("a synced directory entry was left out") && line.contains("Not A Login!")),
        "the entry with a bad login is reported with where it came from"
    );

    // SRV-DB-01 has no owner, so alice's manager is asked: bob, as LDAP says.
    assert_eq!(first_asked(&vouch.base, "dir-1", "SRV-DB-01").await, "bob");

    // Her manager changes in LDAP; after the next sync her manager's successor is asked.
    ldap.modify(&format!(
        "dn: cn=alice,ou=People,{SUFFIX}\nchangetype: modify\nreplace: manager\nmanager: cn=carol,ou=People,{SUFFIX}\n"
    ));
    let synced = sync_now(&vouch.base).await;
    assert_eq!(synced["sources"][0]["outcome"], "applied", "{synced}");
    let change = &synced["sources"][0]["changes"][0];
    assert_eq!(
        (change["change"].as_str(), change["person"].as_str(), change["from"].as_str(), change["to"].as_str()),
        (Some("manager_changed"), Some("alice"), Some("bob"), Some("carol")),
        "{synced}"
    );
    assert_eq!(first_asked(&vouch.base, "dir-2", "SRV-APP-02").await, "carol");
    let log = vouch.log_once_it_says("read=\"incremental\"", 1).await;
    assert!(log.contains("read=\"incremental\""), "the second sync read only what changed: {log}");
    // The case still waiting on bob moves on: he is no longer alice's manager.
    let moved = case_until(&vouch.base, "LM-1", Duration::from_secs(30), "LM-1 to stop waiting on bob", |case| {
        case["confirmers"][0]["status"] != "asked"
    })
    .await;
    let events = moved["events"].to_string();
    assert!(
        events.contains("directory.confirmer_left") && events.contains("no longer Alice Martin's manager"),
        "{moved}"
    );

    // Three of five people vanish at once (60%, over the 20% limit): refused, twice, reported once.
    ldap.modify(&format!(
        "dn: cn=bob,ou=People,{SUFFIX}\nchangetype: delete\n\n\
         dn: cn=dave,ou=People,{SUFFIX}\nchangetype: delete\n\n\
         dn: cn=erin,ou=People,{SUFFIX}\nchangetype: delete\n"
    ));
    // An incremental read does not see deletions: nothing changes until the source is read whole.
    let incremental = sync_now(&vouch.base).await;
    assert_eq!(incremental["sources"][0]["changes"], serde_json::json!([]), "{incremental}");
    for _ in 0..2 {
        let refused = sync_whole(&vouch.base).await;
        assert_eq!(refused["sources"][0]["outcome"], "refused", "{refused}");
        assert!(
            refused["sources"][0]["reason"].as_str().unwrap_or_default().contains("60% of the people"),
            "{refused}"
        );
    }
    // A refused whole read leaves the last good snapshot in place: the next sync continues from
    // it (an incremental read, applied, nothing changed) rather than reading everything again.
    let incremental_reads = || vouch.log().matches("read=\"incremental\"").count();
    let before = incremental_reads();
    let continued = sync_now(&vouch.base).await;
    assert_eq!(continued["sources"][0]["outcome"], "applied", "{continued}");
    assert_eq!(continued["sources"][0]["changes"], serde_json::json!([]), "{continued}");
    let log = vouch.log_once_it_says("read=\"incremental\"", before + 1).await;
    assert_eq!(incremental_reads(), before + 1, "{log}");
    assert_eq!(vouch.terminate(), 0);

    // The source goes down; Vouch restarts from its stored snapshot and still asks carol.
    ldap.stop();
    let vouch = workspace.start();
    syncs(&vouch.base, "refused", 1).await;
    assert_eq!(first_asked(&vouch.base, "dir-3", "SRV-APP-03").await, "carol");
    assert_eq!(vouch.terminate(), 0);

    // The audit log holds the change and one record per refused streak, and still verifies.
    workspace.assert_audit_intact();
    let kinds = workspace.audit_kinds("directory.");
    assert_eq!(kinds.iter().filter(|kind| *kind == "directory.manager_changed").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| *kind == "directory.sync_refused").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"directory.person_added".to_string()), "the first sync added the people: {kinds:?}");

    // What Vouch believes, and who said it.
    let config = workspace.config();
    let (code, shown, _) =
        workspace.run_command(&["directory", "show", "--config", config.to_str().expect("path"), "alice"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("manager: carol  (source corp-ad: cn=alice,ou=People,dc=corp,dc=example)"), "{shown}");
    assert!(shown.contains("roles: helpdesk"), "{shown}");
    assert!(shown.contains("workstations: ws-17"), "{shown}");
}

/// With Discord: the manager LDAP names is pinged about a movement, and after the manager
/// changes in LDAP and a sync, the new manager is pinged about the next one. Then the SOC hears
/// of a refused sync in its channel, once per streak, pinging only the SOC role.
#[tokio::test(flavor = "multi_thread")]
async fn managers_from_ldap_are_pinged_and_a_refused_sync_is_told_to_the_soc_channel_once() {
    if !slapd::available() {
        return;
    }
    const BOB: u64 = 100_000_000_000_000_102;
    const CAROL: u64 = 100_000_000_000_000_103;
    let mut ldap = Slapd::start();
    ldap.add(&format!(
        "{}{}{}",
        slapd::person("bob", "Bob Stone", None, Some(&BOB.to_string())),
        slapd::person("carol", "Carol Diaz", None, Some(&CAROL.to_string())),
        slapd::person("alice", "Alice Martin", Some("bob"), None)
    ));
    let simulator = crate::support::guild(false, &[(BOB, "bob", &[]), (CAROL, "carol", &[])]).await;
    let workspace = Workspace::discord(&simulator);
    // The Discord workspace's own directory file names other people; LDAP says who these are.
    std::fs::write(workspace.config().with_file_name("directory.toml"), "# nothing local\n").expect("write");
    workspace.append_settings(&slapd::source_settings(&ldap));
    let vouch = workspace.start();
    syncs(&vouch.base, "applied", 1).await;

    let pinged = |case: String, user: u64| {
        let simulator = &simulator;
        async move {
            let card = crate::support::card(simulator, &case).await;
            let mention = format!("<@{user}>");
            simulator
                .wait_for(&format!("{user} to be pinged about {case}"), Duration::from_secs(30), |world| {
                    world
                        .channel_messages(card.id)
                        .into_iter()
                        .find(|message| message.content().contains(&mention))
                        .cloned()
                })
                .await
        }
    };
    let (_, body) = post_alert(&vouch.base, &native_alert("ping-1", "WS-17", "SRV-DB-01", "CORP\\alice")).await;
    pinged(body["case_id"].as_str().expect("case").to_string(), BOB).await;
    ldap.modify(&format!(
        "dn: cn=alice,ou=People,{SUFFIX}\nchangetype: modify\nreplace: manager\nmanager: cn=carol,ou=People,{SUFFIX}\n"
    ));
    assert_eq!(sync_now(&vouch.base).await["sources"][0]["outcome"], "applied");
    let (_, body) = post_alert(&vouch.base, &native_alert("ping-2", "WS-17", "SRV-APP-02", "CORP\\alice")).await;
    pinged(body["case_id"].as_str().expect("case").to_string(), CAROL).await;

    ldap.stop();
    for _ in 0..2 {
        let refused = sync_now(&vouch.base).await;
        assert_eq!(refused["sources"][0]["outcome"], "refused", "{refused}");
    }
    let notice = simulator
        .wait_for("the SOC to be told of the refused sync", Duration::from_secs(30), |world| {
            world
                .channel_messages(crate::support::TRIAGE_CHANNEL)
                .into_iter()
                .find(|message| message.content().contains("a sync was refused"))
                .cloned()
        })
        .await;
    // The reason (an error text from the network) is made inert like any outside text.
    let content = notice.content();
    assert!(content.contains("corp\\-ad") && content.contains("last good directory"), "{content}");
    let sent = simulator.with_world(|world| {
        world
            .requests
            .iter()
            .filter_map(|request| request.body.clone())
            .find(|body| body["content"].as_str().is_some_and(|content| content.contains("a sync was refused")))
    });
    let sent = sent.expect("the notice's request");
    assert_eq!(sent["allowed_mentions"]["roles"], serde_json::json!([crate::support::SOC_ROLE.to_string()]), "{sent}");
    assert_eq!(sent["allowed_mentions"]["parse"], serde_json::json!([]), "only the SOC role may be pinged: {sent}");
    // Both refusals were answered before this read; the second queued no notice of its own.
    let told = simulator.with_world(|world| {
        world
            .channel_messages(crate::support::TRIAGE_CHANNEL)
            .into_iter()
            .filter(|message| message.content().contains("a sync was refused"))
            .count()
    });
    assert_eq!(told, 1);
    assert_eq!(vouch.terminate(), 0);
}
