//! Configuration loading through the public API, on real files in a temporary folder.

use std::collections::BTreeMap;
use std::path::Path;

use vouch_config::{load, ConfigProblem, Environment};
use vouch_playbook::facts::{AccountKind, AssetKind, Criticality};
use vouch_playbook::normalize::normalize;
use vouch_playbook::{Snowflake, Timestamp};

struct FakeEnvironment(BTreeMap<&'static str, &'static str>);

impl Environment for FakeEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|value| value.to_string())
    }
}

fn environment() -> FakeEnvironment {
    FakeEnvironment(BTreeMap::from([
        ("VOUCH_INGEST_TOKEN", "ingest-token-123"),
        ("DISCORD_TOKEN", "discord-token-456"),
    ]))
}

fn example(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).expect("example exists")
}

/// Writes the files into a fresh folder and loads `vouch.toml` from it.
fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<vouch_config::Config, vouch_config::ConfigError>) {
    let directory = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(directory.path().join(name), text).expect("write");
    }
    let result = load(&directory.path().join("vouch.toml"), &environment());
    (directory, result)
}

/// The example settings and directory, loaded.
fn example_config() -> (tempfile::TempDir, vouch_config::Config) {
    let (folder, result) = load_files(&[
        ("vouch.toml", &example("vouch.example.toml")),
        ("directory.example.toml", &example("directory.example.toml")),
    ]);
    (folder, result.unwrap_or_else(|error| panic!("{error}")))
}

#[test]
fn the_examples_load_and_the_directory_answers() {
    let (_directory, config) = example_config();
    assert_eq!(config.settings.ingest.token.expose(), "ingest-token-123");
    assert_eq!(config.settings.ingest.grouping_window_minutes, 30);
    assert!(config.settings.discord.is_none());
    let directory = &config.directory;
    assert_eq!(directory.asset("dc-01.corp.example").map(|asset| asset.criticality), Some(Criticality::Critical));
    assert_eq!(directory.account("ADM-ALICE").map(|account| account.kind), Some(AccountKind::User));
    assert_eq!(
        directory
            .person_by_discord(Snowflake::parse("100000000000000003").expect("id"))
            .map(|person| person.name.as_str()),
        Some("Carol Diaz")
    );

    let alert = normalize(
        &serde_json::json!({"vouch_alert": 1, "source": {"ips": ["10.0.0.17"]}, "target": {"hostname": "WS-42.corp.example"}, "account": "CORP\\alice", "protocol": "rdp"}),
        None,
        Timestamp::from_unix_millis(0),
    )
    .expect("valid");
    let facts = directory.facts_for(&alert);
    assert_eq!(facts.source.as_ref().map(|asset| asset.hostname.as_str()), Some("WS-17"), "found by IP");
    assert_eq!(facts.target.as_ref().map(|asset| asset.kind), Some(AssetKind::Workstation));
    let holder = facts.account.and_then(|account| account.holder).expect("alice holds the account");
    assert_eq!(holder.roles, ["helpdesk"]);
    assert_eq!(holder.manager.map(|manager| manager.delegates.len()), Some(1), "bob's delegate comes along");
}

#[test]
fn every_mistake_is_reported_at_once_with_its_place() {
    let settings = r#"
[ingest]
listen = "not an address"
token = "plain-text-secret"
colour = "blue"

[storage]
data_dir = "data"

[directory]
file = "directory.toml"

[discord]
token = { env = "MISSING_TOKEN" }
guild_id = "abc"
triage_channel_id = "222"
soc_role_id = "333"
"#;
    let directory = r#"
[[people]]
id = "alice"
name = "Alice"
manager = "nobody"
discord_id = "12x"

[[people]]
id = "alice"
name = "Alice again"

[[people]]
id = "Bad Id"
name = "?"

[[accounts]]
name = "svc-x"
kind = "robot"

[[assets]]
hostname = "WS-1"
kind = "workstation"
owner = "ghost"
ips = ["10.0.0.1", "999.1.1.1"]

[[assets]]
hostname = "ws-1.corp.example"
kind = "toaster"
flavour = "mint"
"#;
    let (_directory, result) = load_files(&[("vouch.toml", settings), ("directory.toml", directory)]);
    let error = result.expect_err("the config is wrong");
    let problems = error.problems();
    let expect = |file_suffix: &str, line: usize, key: &str, fragment: &str| {
        assert!(
            problems.iter().any(|problem: &ConfigProblem| problem.file.ends_with(file_suffix)
                && problem.line == Some(line)
                && problem.key == key
                && problem.message.contains(fragment)),
            "missing {file_suffix}:{line} {key} {fragment:?} in:\n{error}"
        );
    };
    expect("vouch.toml", 3, "ingest.listen", "address and port");
    expect("vouch.toml", 4, "ingest.token", "secrets are not written in the config");
    expect("vouch.toml", 5, "ingest.colour", "unknown key");
    expect("vouch.toml", 14, "discord.token.env", "MISSING_TOKEN is not set");
    expect("vouch.toml", 15, "discord.guild_id", "not a Discord id");
    expect("directory.toml", 5, "people[0].manager", "`nobody` is not a person");
    expect("directory.toml", 6, "people[0].discord_id", "not a Discord id");
    expect("directory.toml", 9, "people[1].id", "listed twice");
    expect("directory.toml", 13, "people[2].id", "not a valid person id");
    expect("directory.toml", 18, "accounts[0].kind", "`robot`");
    expect("directory.toml", 23, "assets[0].owner", "`ghost` is not a person");
    expect("directory.toml", 24, "assets[0].ips", "`999.1.1.1` is not an IP");
    expect("directory.toml", 27, "assets[1].hostname", "listed twice");
    expect("directory.toml", 29, "assets[1].flavour", "unknown key");
    assert!(problems.len() >= 14, "{error}");
    // Nothing secret is ever echoed back.
    assert!(!error.to_string().contains("plain-text-secret"));
}

#[test]
fn csv_exports_join_the_directory() {
    let settings = r#"
[ingest]
token = { file = "ingest.token" }
[storage]
data_dir = "data"
[directory]
file = "directory.toml"
assets_csv = "assets.csv"
people_csv = "people.csv"
"#;
    let people = "id,name,discord_id,manager,roles,workstations,accounts\nbob,Bob,100000000000000002,,admin,WS-02,bob\ndana,Dana,,bob,developer;admin,WS-31,dana;adm-dana\n";
    let assets = "hostname,ips,kind,owner,criticality,edr_ids\nWS-31,10.0.0.31,workstation,dana,low,crowdstrike:abc123\nAPP-7,10.0.9.7;10.0.9.8,preproduction,bob,,defender:xyz\n";
    let (_directory, result) = load_files(&[
        ("vouch.toml", settings),
        ("ingest.token", "from-a-file\n"),
        ("directory.toml", "[[accounts]]\nname = \"svc-ci\"\nkind = \"service\"\nowner = \"dana\"\n"),
        ("people.csv", people),
        ("assets.csv", assets),
    ]);
    let config = result.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.settings.ingest.token.expose(), "from-a-file");
    let directory = &config.directory;
    assert_eq!(directory.asset("app-7").map(|asset| asset.ips.len()), Some(2));
    assert_eq!(directory.asset("ws-31").map(|asset| asset.edr_ids[0].id.as_str()), Some("abc123"));
    assert_eq!(
        directory.account("adm-dana").and_then(|account| account.holder.clone()).map(|id| id.to_string()),
        Some("dana".to_string())
    );
    assert_eq!(
        directory.account("svc-ci").and_then(|account| account.owner.clone()).map(|id| id.to_string()),
        Some("dana".to_string())
    );

    let broken_people = "id,name,manager,shoe_size\nerin,Erin,nobody,42\n";
    let (_directory, result) = load_files(&[
        ("vouch.toml", settings),
        ("ingest.token", "t"),
        ("directory.toml", ""),
        ("people.csv", broken_people),
        ("assets.csv", "hostname,kind\nX-1,spaceship\n"),
    ]);
    let error = result.expect_err("broken CSV");
    let text = error.to_string();
    for fragment in [
        "people.csv:1: shoe_size: unknown column",
        "people.csv:2: row 1.manager: `nobody` is not a person",
        "assets.csv:2: row 1.kind: `spaceship`",
    ] {
        assert!(text.contains(fragment), "missing {fragment:?} in:\n{text}");
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let (_directory, config) = example_config();
    let debug = format!("{config:?}");
    assert!(!debug.contains("ingest-token-123"), "the token leaked into Debug output");
    assert!(debug.contains("env:VOUCH_INGEST_TOKEN"), "the origin is shown instead");
}

mod hostile {
    //! The loader answers any file with a configuration or a list of problems, never a panic.

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_settings_or_directory_text_loads_or_is_refused(
            settings in "(\\[(ingest|storage|directory|discord|timers|oncall|delivery)\\]\\n|[a-z_]{1,12} = (\"[ -~]{0,20}\"|[0-9]{1,6}|true|\\[\\]|\\{ env = \"X\" \\})\\n|\\[\\[(webhooks|people|assets)\\]\\]\\n){0,12}",
            directory in "(\\[\\[(people|accounts|assets)\\]\\]\\n|[a-z_]{1,12} = (\"[ -~]{0,20}\"|[0-9]{1,4}|\\[\"[a-z]{1,5}\"\\])\\n){0,12}",
        ) {
            let folder = tempfile::tempdir().expect("temp dir");
            std::fs::write(folder.path().join("vouch.toml"), format!("[directory]\nfile = \"d.toml\"\n{settings}")).expect("write");
            std::fs::write(folder.path().join("d.toml"), directory).expect("write");
            match vouch_config::load(&folder.path().join("vouch.toml"), &super::FakeEnvironment(Default::default())) {
                Ok(_) => {}
                Err(error) => prop_assert!(!error.problems().is_empty()),
            }
        }
    }
}

fn synced_person(id: &str, manager: Option<&str>, roles: &[&str]) -> vouch_config::SyncedPerson {
    vouch_config::SyncedPerson {
        id: id.to_string(),
        origin: format!("CN={id},OU=People,DC=corp,DC=example"),
        name: Some(format!("{id} (from AD)")),
        manager: manager.map(str::to_string),
        roles: roles.iter().map(ToString::to_string).collect(),
        accounts: vec![id.to_string(), format!("{id}@corp.example")],
        ..vouch_config::SyncedPerson::default()
    }
}

fn snapshot(
    people: Vec<vouch_config::SyncedPerson>,
    assets: Vec<vouch_config::SyncedAsset>,
) -> vouch_config::SourceSnapshot {
    vouch_config::SourceSnapshot { source: "corp-ad".to_string(), people, assets, ..Default::default() }
}

/// The overlay wins field by field; lists are the union; a synced entry's problem never blocks.
#[test]
fn synced_snapshots_merge_under_the_overlay_and_say_where_each_fact_came_from() {
    let (_folder, config) = example_config();
    let dave = synced_person("dave", Some("bob"), &["developer"]);
    // The overlay says alice's manager is bob; AD says carol. The overlay wins.
    let alice = synced_person("alice", Some("carol"), &["vpn-users"]);
    let broken = vouch_config::SyncedPerson { id: "Not A Slug!".to_string(), ..synced_person("x", None, &[]) };
    let server = vouch_config::SyncedAsset {
        hostname: "SRV-NEW-07.corp.example".to_string(),
        origin: "CN=SRV-NEW-07,OU=Servers,DC=corp,DC=example".to_string(),
        kind: Some("server".to_string()),
        owner: Some("dave".to_string()),
        ..Default::default()
    };
    let (directory, overlay_problems, synced_problems) =
        config.settings.directory.compile(&[&snapshot(vec![dave, alice, broken], vec![server])], &config.directory);
    assert!(overlay_problems.is_empty(), "{overlay_problems:?}");
    assert_eq!(synced_problems.len(), 1, "{synced_problems:?}");
    assert!(synced_problems[0].file.starts_with("source corp-ad"), "{}", synced_problems[0]);

    let alice = directory.person(&vouch_playbook::PersonId::parse("alice").expect("id")).expect("alice");
    assert_eq!(alice.manager.as_ref().map(|id| id.as_str()), Some("bob"), "the overlay's manager wins");
    assert!(alice.roles.contains(&"helpdesk".to_string()) && alice.roles.contains(&"vpn-users".to_string()));
    assert!(
        alice.said_by.field("manager").is_some_and(|origin| origin.contains("directory.example.toml")),
        "{:?}",
        alice.said_by
    );
    assert_eq!(
        directory.account("alice@corp.example").and_then(|account| account.holder.clone()),
        Some(alice.id.clone())
    );

    let dave = directory.person(&vouch_playbook::PersonId::parse("dave").expect("id")).expect("dave");
    assert!(
        dave.said_by.field("manager").is_some_and(|origin| origin.starts_with("source corp-ad: CN=dave")),
        "{:?}",
        dave.said_by
    );
    let server = directory.asset("srv-new-07").expect("synced asset");
    assert_eq!(server.owner.as_ref().map(|id| id.as_str()), Some("dave"));

    // The changes from the overlay alone to the merged directory, as the audit log records them.
    let changes: Vec<String> =
        config.directory.changes_to(&directory).listed().iter().map(ToString::to_string).collect();
    assert!(changes.contains(&"+ person dave".to_string()), "{changes:?}");
    assert!(changes.contains(&"+ asset SRV-NEW-07.corp.example".to_string()), "{changes:?}");
    assert!(changes.iter().any(|change| change.starts_with("~ person alice: roles")), "{changes:?}");
    let removal = directory.removal_to(&config.directory);
    assert!(removal.people > 0.0 && removal.assets > 0.0, "{removal:?}");
}

/// Between sources, the one listed first wins field by field and lists are the union; entries
/// only one source holds come as they are.
#[test]
fn two_sources_holding_one_person_merge_in_the_configured_order() {
    let (_folder, config) = example_config();
    let machine = |owner: &str, ip: &str| vouch_config::SyncedAsset {
        hostname: "WS-ERIN.corp.example".to_string(),
        origin: "CN=WS-ERIN".to_string(),
        kind: Some("workstation".to_string()),
        owner: Some(owner.to_string()),
        ips: vec![ip.to_string()],
        ..Default::default()
    };
    let first = snapshot(vec![synced_person("erin", Some("bob"), &["developer"])], vec![machine("erin", "10.0.0.7")]);
    let mut second = snapshot(
        vec![synced_person("erin", Some("carol"), &["vpn-users"]), synced_person("frank", None, &[])],
        vec![machine("frank", "10.0.0.8")],
    );
    second.source = "entra".to_string();
    let (directory, overlay_problems, synced_problems) =
        config.settings.directory.compile(&[&first, &second], &config.directory);
    assert!(overlay_problems.is_empty() && synced_problems.is_empty(), "{overlay_problems:?} {synced_problems:?}");

    let erin = directory.person(&vouch_playbook::PersonId::parse("erin").expect("id")).expect("erin");
    assert_eq!(erin.manager.as_ref().map(|id| id.as_str()), Some("bob"), "the first source's manager wins");
    let mut roles = erin.roles.clone();
    roles.sort();
    assert_eq!(roles, ["developer", "vpn-users"]);
    assert!(erin.said_by.field("manager").is_some_and(|origin| origin.starts_with("source corp-ad")));
    assert!(directory.person(&vouch_playbook::PersonId::parse("frank").expect("id")).is_some());
    assert_eq!(
        directory.account("erin@corp.example").and_then(|account| account.holder.clone()),
        Some(erin.id.clone())
    );

    let workstation = directory.asset("ws-erin").expect("one machine from both sources");
    assert_eq!(workstation.owner.as_ref().map(|id| id.as_str()), Some("erin"));
    assert_eq!(workstation.ips.len(), 2, "{:?}", workstation.ips);
    assert_eq!(
        directory.assets().filter(|asset| asset.hostname.eq_ignore_ascii_case("WS-ERIN.corp.example")).count(),
        1
    );
}

/// A first load changes every entry: the first thousand changes are listed, in order, and every
/// one is counted by kind; a few changes are all listed.
#[test]
fn a_large_load_lists_the_first_changes_and_counts_every_one() {
    let (_folder, config) = example_config();
    let people: Vec<_> = (0..1_500).map(|index| synced_person(&format!("p{index:05}"), None, &[])).collect();
    let machines: Vec<_> = (0..600)
        .map(|index| vouch_config::SyncedAsset {
            hostname: format!("ws{index:05}.corp.example"),
            origin: format!("CN=ws{index:05},OU=Workstations,DC=corp,DC=example"),
            kind: Some("workstation".to_string()),
            ..Default::default()
        })
        .collect();
    let synced = snapshot(people, machines);
    let (directory, _, synced_problems) = config.settings.directory.compile(&[&synced], &config.directory);
    assert!(synced_problems.is_empty(), "{synced_problems:?}");

    let changes = config.directory.changes_to(&directory);
    assert!(!changes.is_complete());
    assert_eq!(changes.listed().len(), vouch_config::DirectoryChanges::MOST_LISTED);
    assert_eq!(changes.by_kind().get("person_added"), Some(&1_500), "{:?}", changes.by_kind());
    assert_eq!(changes.by_kind().get("account_added"), Some(&3_000), "{:?}", changes.by_kind());
    assert_eq!(changes.by_kind().get("asset_added"), Some(&600), "{:?}", changes.by_kind());
    assert_eq!(changes.len(), changes.by_kind().values().sum::<usize>());
    // People come first, in key order.
    assert_eq!(changes.listed()[0].to_string(), "+ person p00000");

    let back = directory.changes_to(&config.directory);
    assert_eq!(back.by_kind().get("person_removed"), Some(&1_500));
    let none = directory.changes_to(&directory);
    assert!(none.is_empty() && none.is_complete());

    // Compiled again beside the directory in use, what did not change is that directory's own
    // entry, not a copy (a sync of a large source costs little more than one directory); what
    // changed is new.
    let mut changed = synced.clone();
    changed.people[7].manager = Some("p00001".to_string());
    let (again, _, _) = config.settings.directory.compile(&[&changed], &directory);
    assert_eq!(again.changes_to(&directory).len(), 1);
    let same = |id: &str| {
        let id = vouch_playbook::PersonId::parse(id).expect("an id");
        std::ptr::eq(directory.person(&id).expect("kept"), again.person(&id).expect("kept"))
    };
    assert!(same("p00000") && same("p01499") && !same("p00007"));
    assert!(std::ptr::eq(
        directory.asset("ws00042").expect("a machine"),
        again.asset("ws00042.corp.example").expect("a machine")
    ));
    // A person's own login is an account derived from the person, the same in both.
    let login = again.account("P00003").expect("an account");
    assert_eq!(directory.account("p00003").expect("an account"), login);
    assert_eq!(
        (login.kind, login.holder.as_ref().map(ToString::to_string)),
        (AccountKind::User, Some("p00003".into()))
    );
}

#[test]
fn the_ldap_example_compiles_its_source_and_sync_settings() {
    let mut environment = environment();
    environment.0.insert("VOUCH_LDAP_PASSWORD", "ldap-secret");
    environment.0.insert("VOUCH_SCIM_TOKEN", "scim-token-of-the-identity-provider");
    environment.0.insert("VOUCH_GRAPH_SECRET", "graph-client-secret");
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("vouch.toml"), example("vouch.ldap.example.toml")).expect("write");
    std::fs::write(folder.path().join("directory.example.toml"), example("directory.example.toml")).expect("write");
    let config = load(&folder.path().join("vouch.toml"), &environment).unwrap_or_else(|error| panic!("{error}"));
    let sync = &config.settings.directory.sync;
    assert_eq!((sync.sources.len(), sync.max_removed_share), (3, 0.2));
    assert!(sync.schedule.is_some());
    let vouch_config::SourceKind::Ldap(ldap) = &sync.sources[0].kind else { panic!("corp-ad is ldap") };
    let vouch_config::SourceKind::Graph(graph) = &sync.sources[1].kind else { panic!("entra is graph") };
    assert_eq!((graph.authority.as_str(), graph.roles.len()), ("https://login.microsoftonline.com", 1));
    let vouch_config::SourceKind::Scim(scim) = &sync.sources[2].kind else { panic!("okta is scim") };
    assert_eq!(scim.roles, vec![("it helpdesk".to_string(), "helpdesk".to_string())]);
    assert_eq!(ldap.roles.len(), 3);
    assert_eq!(ldap.computer_rules.len(), 4);
    assert_eq!(ldap.bind_password.as_ref().map(|secret| secret.expose()), Some("ldap-secret"));

    // Every mistake in a source is reported at once, with its place.
    let broken =
        "[ingest]\nlisten = \"127.0.0.1:0\"\ntoken = { env = \"VOUCH_INGEST_TOKEN\" }\n[storage]\ndata_dir = \"d\"\n\
                  [directory]\nfile = \"directory.example.toml\"\nsync = \"every day\"\n\
                  [[directory.sources]]\nname = \"ad\"\nkind = \"ldap\"\nurl = \"http://dc01\"\nbind_dn = \"cn=x\"\n\
                  base_dn = \"dc=x\"\npeople_filter = \"objectClass=user\"\nbind_password = \"literal\"\n\
                  [[directory.sources.computers]]\nkind = \"castle\"\n\
                  [[directory.sources]]\nname = \"scim\"\nkind = \"okta-magic\"\n\
                  [[directory.sources]]\nname = \"entra\"\nkind = \"graph\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
                  client_secret = { env = \"VOUCH_GRAPH_SECRET\" }\ngraph_url = \"http://graph.example\"\n";
    std::fs::write(folder.path().join("vouch.toml"), broken).expect("write");
    let error = load(&folder.path().join("vouch.toml"), &environment).expect_err("invalid");
    let text = error.to_string();
    for fragment in [
        "directory.sync",
        "must be an ldap:// or ldaps:// URL",
        "an LDAP filter in parentheses",
        "secrets are not written in the config",
        "`castle` is not a machine kind",
        "needs `under`",
        "`okta-magic` is not a source kind",
        "must be an https:// URL",
    ] {
        assert!(text.contains(fragment), "missing {fragment:?} in:\n{text}");
    }
}

/// `[verification]` for each provider, with its policy rules; and every mistake in it reported
/// at once, with where it is, never echoing a secret.
#[test]
fn verification_settings_compile_for_each_provider_and_report_every_mistake() {
    let base = "[ingest]\ntoken = { env = \"VOUCH_INGEST_TOKEN\" }\n[storage]\ndata_dir = \"d\"\n[directory]\nfile = \"directory.toml\"\n";
    let duo = format!(
        "{base}[verification]\nprovider = \"duo\"\nusername = \"{{id}}@corp.example\"\ntimeout_seconds = 90\n\
         [verification.duo]\napi_url = \"https://api-1a2b3c4d.duosecurity.com\"\nintegration_key = \"DIWJ8X6AEYOR5OMC6TQ1\"\n\
         secret_key = {{ file = \"duo.secret\" }}\n\
         [[verification.rules]]\nanswers = [\"expected\"]\nanswered_as = \"soc\"\nfrom_criticality = \"high\"\nroles = [\"Contractor\"]\n"
    );
    let (_folder, result) =
        load_files(&[("vouch.toml", &duo), ("directory.toml", ""), ("duo.secret", "duo-secret-key\n")]);
    let config = result.unwrap_or_else(|error| panic!("{error}"));
    let verification = config.settings.verification.expect("verification");
    assert_eq!(verification.username_of("alice"), "alice@corp.example");
    assert_eq!(verification.timeout.as_secs(), 90);
    assert_eq!(verification.request_timeout.as_secs(), 10);
    match &verification.provider {
        vouch_config::PushProviderSettings::Duo(duo) => {
            assert_eq!(duo.api_url, "https://api-1a2b3c4d.duosecurity.com");
            assert_eq!(duo.secret_key.expose(), "duo-secret-key");
        }
        other => panic!("not Duo: {other:?}"),
    }
    // Rules given replace the default ones; roles compare in lower case.
    let rules = &verification.policy.rules;
    assert_eq!((rules.len(), rules[0].roles.as_slice()), (1, ["contractor".to_string()].as_slice()));

    let okta = format!(
        "{base}[verification]\nprovider = \"okta\"\n[verification.okta]\norg_url = \"https://corp.okta.com/\"\n\
         api_token = {{ file = \"okta.token\" }}\nnumber_matching = false\n"
    );
    let (_folder, result) = load_files(&[("vouch.toml", &okta), ("directory.toml", ""), ("okta.token", "00abc\n")]);
    let config = result.unwrap_or_else(|error| panic!("{error}"));
    let verification = config.settings.verification.expect("verification");
    match &verification.provider {
        vouch_config::PushProviderSettings::Okta(okta) => {
            assert_eq!((okta.org_url.as_str(), okta.number_matching), ("https://corp.okta.com", false));
        }
        other => panic!("not Okta: {other:?}"),
    }
    // Without rules, the default policy: a confirmer's Expected and Not me from high systems.
    assert_eq!(verification.policy, vouch_playbook::verification::VerificationPolicy::default());

    let broken = format!(
        "{base}[verification]\nprovider = \"duo\"\nusername = \"someone\"\ntimeout_seconds = 5\n\
         [verification.duo]\napi_url = \"http://duo.example\"\nintegration_key = \"XX\"\nsecret_key = \"plain-text-secret\"\n\
         [verification.okta]\norg_url = \"https://corp.okta.com\"\n\
         [[verification.rules]]\nanswers = [\"maybe\"]\nanswered_as = \"intern\"\nfrom_criticality = \"extreme\"\n"
    );
    let (_folder, result) = load_files(&[("vouch.toml", &broken), ("directory.toml", "")]);
    let error = result.expect_err("broken verification settings").to_string();
    for fragment in [
        "verification.username",
        "must contain {id}",
        "verification.timeout_seconds",
        "verification.duo.api_url",
        "https://",
        "verification.duo.integration_key",
        "verification.duo.secret_key",
        "not written in the config",
        "provider is not \"okta\"",
        "`maybe` is not one of",
        "`intern` is not one of confirmer, soc",
        "`extreme` is not one of low, medium, high, critical",
    ] {
        assert!(error.contains(fragment), "missing `{fragment}` in:\n{error}");
    }
    assert!(!error.contains("plain-text-secret"));

    let unknown = format!("{base}[verification]\nprovider = \"authy\"\n");
    let (_folder, result) = load_files(&[("vouch.toml", &unknown), ("directory.toml", "")]);
    let error = result.expect_err("unknown provider").to_string();
    assert!(error.contains("`authy` is not one of duo, okta"), "{error}");
    let no_table = format!("{base}[verification]\nprovider = \"okta\"\n");
    let (_folder, result) = load_files(&[("vouch.toml", &no_table), ("directory.toml", "")]);
    let error = result.expect_err("no okta table").to_string();
    assert!(error.contains("needs a [verification.okta] table"), "{error}");
}

#[test]
fn the_verification_example_compiles() {
    let mut environment = environment();
    environment.0.insert("VOUCH_DUO_SECRET_KEY", "duo-secret-key-of-the-example");
    let folder = tempfile::tempdir().expect("temp dir");
    std::fs::write(folder.path().join("vouch.toml"), example("vouch.verification.example.toml")).expect("write");
    std::fs::write(folder.path().join("directory.example.toml"), example("directory.example.toml")).expect("write");
    let config = load(&folder.path().join("vouch.toml"), &environment).unwrap_or_else(|error| panic!("{error}"));
    let verification = config.settings.verification.expect("verification");
    assert_eq!(verification.policy.rules.len(), 3);
    assert!(matches!(verification.provider, vouch_config::PushProviderSettings::Duo(_)));
    assert_eq!(verification.approval_monitor_days, 7, "the standing approvals' monitor period, as documented");
}

#[test]
fn storage_settings_compile_for_each_backend_and_report_every_mistake() {
    let base = "[ingest]\ntoken = { env = \"VOUCH_INGEST_TOKEN\" }\n[directory]\nfile = \"directory.toml\"\n";
    let postgres = format!(
        "{base}[storage]\nbackend = \"postgres\"\nurl = {{ file = \"db.url\" }}\npool_size = 3\ntls = \"require\"\n\
         ca_file = \"ca.pem\"\n"
    );
    let url = "postgres://vouch:secret-password@127.0.0.1:5432/vouch";
    let (folder, result) = load_files(&[("vouch.toml", &postgres), ("directory.toml", ""), ("db.url", url)]);
    let config = result.unwrap_or_else(|error| panic!("{error}"));
    match &config.settings.storage.backend {
        vouch_config::StorageBackend::Postgres(postgres) => {
            assert_eq!((postgres.url.expose(), postgres.pool_size), (url, 3));
            assert_eq!(postgres.tls_ca_file.as_deref(), Some(folder.path().join("ca.pem").as_path()));
        }
        other => panic!("not PostgreSQL: {other:?}"),
    }
    assert!(!format!("{:?}", config.settings.storage).contains("secret-password"));
    assert!(!config.settings.storage.describe().contains("secret-password"));

    let sled = format!("{base}[storage]\ndata_dir = \"d\"\n");
    let (folder, result) = load_files(&[("vouch.toml", &sled), ("directory.toml", "")]);
    match result.unwrap_or_else(|error| panic!("{error}")).settings.storage.backend {
        vouch_config::StorageBackend::Sled { data_dir, cache_capacity_mib } => {
            assert_eq!((data_dir, cache_capacity_mib), (folder.path().join("d"), 4));
        }
        other => panic!("not sled: {other:?}"),
    }

    for (storage, fragments) in [
        (
            "backend = \"postgres\"\nurl = \"postgres://vouch:pw@db/vouch\"\ndata_dir = \"d\"\ntls = \"require\"\npool_size = 0\n",
            &[
                "storage.url",
                "not written in the config",
                "storage.data_dir",
                "is a setting of backend = \"sled\"",
                "storage.ca_file",
                "is required with tls = \"require\"",
                "storage.pool_size",
            ][..],
        ),
        ("backend = \"postgres\"\nurl = { env = \"NOT_SET\" }\ntls = \"maybe\"\n", &["NOT_SET is not set", "storage.tls", "must be \"disable\" or \"require\""][..]),
        ("backend = \"sled\"\nurl = { env = \"X\" }\n", &["storage.data_dir", "storage.url", "is a setting of backend = \"postgres\""][..]),
        ("backend = \"mysql\"\n", &["storage.backend", "must be \"sled\" (the default) or \"postgres\""][..]),
    ] {
        let text = format!("{base}[storage]\n{storage}");
        let (_folder, result) = load_files(&[("vouch.toml", &text), ("directory.toml", "")]);
        let error = result.expect_err("broken storage settings").to_string();
        for fragment in fragments {
            assert!(error.contains(fragment), "missing `{fragment}` in:\n{error}");
        }
        assert!(!error.contains("pw@db"), "{error}");
    }
}

#[test]
fn the_postgres_example_compiles() {
    let folder = tempfile::tempdir().expect("temp dir");
    let secrets = folder.path().join("secrets");
    std::fs::create_dir(&secrets).expect("dir");
    std::fs::write(secrets.join("ingest_token"), "token-1\n").expect("write");
    std::fs::write(secrets.join("database_url"), "postgres://vouch:pw@postgres:5432/vouch\n").expect("write");
    let text = example("vouch.postgres.example.toml").replace("/run/secrets", &secrets.display().to_string());
    let (_folder, result) =
        load_files(&[("vouch.toml", &text), ("directory.example.toml", &example("directory.example.toml"))]);
    let config = result.unwrap_or_else(|error| panic!("{error}"));
    match &config.settings.storage.backend {
        vouch_config::StorageBackend::Postgres(postgres) => {
            assert_eq!((postgres.url.expose(), postgres.pool_size), ("postgres://vouch:pw@postgres:5432/vouch", 8));
            assert_eq!(postgres.tls_ca_file, None);
        }
        other => panic!("not PostgreSQL: {other:?}"),
    }
}
