//! An identity provider provisions people to Vouch over SCIM 2.0, in the order Okta and Entra ID
//! send requests: create, find by `userName`, group membership, patch the manager, deactivate
//! (Okta's value-object patch and Entra's path patch). Bad tokens and bodies that break the
//! schema are refused with SCIM errors and change nothing; what was pushed survives a restart
//! and every change is in the audit log.

use serde_json::{json, Value};

use crate::support::{client, get_json, native_alert, post_alert, Workspace, SCIM_TOKEN};

pub(crate) const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

pub(crate) async fn scim(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = client().request(method, format!("{base}/scim/v2{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.header("content-type", "application/scim+json").body(body.to_string());
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("text");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(crate) fn user(user_name: &str, display: &str, manager: Option<&str>) -> String {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
        "userName": user_name, "name": {"formatted": display}, "active": true,
        "emails": [{"value": user_name, "primary": true, "type": "work"}],
        ENTERPRISE: {"employeeNumber": "100000000000000001"}
    });
    if let Some(manager) = manager {
        body[ENTERPRISE]["manager"] = json!({"value": manager});
    }
    body.to_string()
}

async fn first_asked(base: &str, id: &str, target: &str) -> Value {
    let (status, body) = post_alert(base, &native_alert(id, "WS-17", target, "CORP\\alice")).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("new")), "{body}");
    let (_, case) = get_json(base, &format!("/api/v1/cases/{}", body["case_id"].as_str().expect("id"))).await;
    case
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_provider_provisions_people_over_scim_and_bad_requests_change_nothing() {
    let workspace = Workspace::new("");
    std::fs::write(workspace.config().with_file_name("directory.toml"), "# nothing local\n").expect("write");
    workspace.append_settings(&format!(
        "[[directory.sources]]\nname = \"okta\"\nkind = \"scim\"\ntoken = {{ env = \"VOUCH_SCIM_TOKEN\" }}\n\
         discord_id_attribute = \"{ENTERPRISE}:employeeNumber\"\n[directory.sources.roles]\n\"IT Helpdesk\" = \"helpdesk\"\n"
    ));
    let vouch = workspace.start();
    let base = vouch.base.clone();
    let post = reqwest::Method::POST;

    // No token, the ingest token, a wrong token: 401 in SCIM's error shape.
    for token in ["", crate::support::INGEST_TOKEN, "not-the-scim-token-at-all"] {
        let (status, body) = scim(&base, reqwest::Method::GET, "/Users", token, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    }

    let (status, bob) =
        scim(&base, post.clone(), "/Users", SCIM_TOKEN, Some(&user("bob@corp.example", "Bob Stone", None))).await;
    assert_eq!(status, 201, "{bob}");
    let bob_id = bob["id"].as_str().expect("id").to_string();
    let (status, carol) =
        scim(&base, post.clone(), "/Users", SCIM_TOKEN, Some(&user("carol@corp.example", "Carol Diaz", None))).await;
    assert_eq!(status, 201, "{carol}");
    let carol_id = carol["id"].as_str().expect("id").to_string();
    let (status, alice) = scim(
        &base,
        post.clone(),
        "/Users",
        SCIM_TOKEN,
        Some(&user("alice@corp.example", "Alice Martin", Some(&bob_id))),
    )
    .await;
    assert_eq!(status, 201, "{alice}");
    assert_eq!(alice[ENTERPRISE]["manager"]["value"], bob_id.as_str());
    let alice_id = alice["id"].as_str().expect("id").to_string();

    // Bodies that break the schema: refused, nothing changed.
    let bad: [(&str, &str, &str); 5] = [
        ("not JSON", "{\"userName\": ", "invalidSyntax"),
        ("no schemas", r#"{"userName": "eve@corp.example"}"#, "invalidSyntax"),
        (
            "userName of the wrong type",
            r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": 7}"#,
            "invalidValue",
        ),
        (
            "active of the wrong type",
            r#"{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "eve@corp.example", "active": [1]}"#,
            "invalidValue",
        ),
        ("a user that exists", &user("ALICE@corp.example", "Alice again", None), "uniqueness"),
    ];
    for (what, body, scim_type) in bad {
        let (status, answer) = scim(&base, post.clone(), "/Users", SCIM_TOKEN, Some(body)).await;
        assert!(status == 400 || status == 409, "{what}: {status} {answer}");
        assert_eq!(answer["scimType"], scim_type, "{what}: {answer}");
    }
    let (_, listed) = scim(&base, reqwest::Method::GET, "/Users", SCIM_TOKEN, None).await;
    assert_eq!(listed["totalResults"], 3, "{listed}");

    // The identity provider looks users up by userName before it changes them.
    let (status, found) =
        scim(&base, reqwest::Method::GET, "/Users?filter=userName%20eq%20%22alice%40corp.example%22", SCIM_TOKEN, None)
            .await;
    assert_eq!((status, found["totalResults"].as_u64()), (200, Some(1)), "{found}");
    assert_eq!(found["Resources"][0]["id"], alice_id.as_str());
    let (status, answer) =
        scim(&base, reqwest::Method::GET, "/Users?filter=title%20co%20%22x%22", SCIM_TOKEN, None).await;
    assert_eq!((status, answer["scimType"].as_str()), (400, Some("invalidFilter")), "{answer}");

    // Group membership gives roles.
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "IT Helpdesk", "members": []});
    let (status, helpdesk) = scim(&base, post.clone(), "/Groups", SCIM_TOKEN, Some(&group.to_string())).await;
    assert_eq!(status, 201, "{helpdesk}");
    let add_member = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": alice_id}]}]});
    let path = format!("/Groups/{}", helpdesk["id"].as_str().expect("id"));
    let (status, patched) = scim(&base, reqwest::Method::PATCH, &path, SCIM_TOKEN, Some(&add_member.to_string())).await;
    assert_eq!((status, patched["members"][0]["value"].as_str()), (200, Some(alice_id.as_str())), "{patched}");

    // Alice's manager, as pushed, is asked about her movement.
    let case = first_asked(&base, "scim-1", "SRV-DB-01").await;
    assert_eq!(case["confirmers"][0]["person"]["id"], "bob", "{case}");

    // The manager changes (Entra's path patch, with its capitalised op).
    let manager = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": carol_id}]});
    let (status, patched) =
        scim(&base, reqwest::Method::PATCH, &format!("/Users/{alice_id}"), SCIM_TOKEN, Some(&manager.to_string()))
            .await;
    assert_eq!(status, 200, "{patched}");
    let case = first_asked(&base, "scim-2", "SRV-APP-02").await;
    assert_eq!(case["confirmers"][0]["person"]["id"], "carol", "{case}");

    // Deactivation, Okta's way (a value object) and Entra's way (a path and a string boolean).
    let okta = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, _) =
        scim(&base, reqwest::Method::PATCH, &format!("/Users/{carol_id}"), SCIM_TOKEN, Some(&okta.to_string())).await;
    assert_eq!(status, 200);
    let entra = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let (status, bob_now) =
        scim(&base, reqwest::Method::PATCH, &format!("/Users/{bob_id}"), SCIM_TOKEN, Some(&entra.to_string())).await;
    assert_eq!((status, bob_now["active"].as_bool()), (200, Some(false)), "{bob_now}");
    // The case that waited on carol moves on to the next person, with a note in its thread.
    let moved = crate::support::case_until(
        &base,
        "LM-2",
        std::time::Duration::from_secs(30),
        "LM-2 to stop waiting on carol",
        |case| case["events"].to_string().contains("directory.confirmer_left"),
    )
    .await;
    assert!(moved["events"].to_string().contains("is no longer in the directory"), "{moved}");
    // A patch that breaks the schema changes nothing.
    let broken = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": [true]}]});
    let (status, _) =
        scim(&base, reqwest::Method::PATCH, &format!("/Users/{bob_id}"), SCIM_TOKEN, Some(&broken.to_string())).await;
    assert_eq!(status, 400);
    assert_eq!(vouch.terminate(), 0);

    // What was pushed survives a restart: alice is still known, with no active manager left.
    let vouch = workspace.start();
    let (_, listed) = scim(&vouch.base, reqwest::Method::GET, "/Users", SCIM_TOKEN, None).await;
    assert_eq!(listed["totalResults"], 3, "{listed}");
    let case = first_asked(&vouch.base, "scim-3", "SRV-APP-03").await;
    assert_eq!(case["account_kind"], "user", "alice is still a known user: {case}");
    assert_eq!(
        (case["confirmers"][0]["who"].as_str(), case["confirmers"][0]["person"].is_null()),
        (Some("the SOC"), true),
        "her managers were deactivated, so only the SOC is left to ask: {case}"
    );
    assert_eq!(vouch.terminate(), 0);

    workspace.assert_audit_intact();
    let config = workspace.config();
    let (code, shown, _) =
        workspace.run_command(&["directory", "show", "--config", config.to_str().expect("path"), "alice"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("roles: helpdesk"), "{shown}");
    assert!(shown.contains("discord id: 100000000000000001"), "{shown}");
    assert!(shown.contains(&format!("(source okta: /scim/v2/Users/{alice_id})")), "{shown}");
    let (_, export, _) = workspace.run_command(&["audit", "export", "--config", config.to_str().expect("path")]);
    for kind in
        ["directory.person_added", "directory.manager_changed", "directory.person_removed", "directory.roles_changed"]
    {
        assert!(export.contains(&format!("\"kind\":\"{kind}\"")), "no {kind} in the audit log");
    }
}
