//! `vouch check-config` and `vouch run` on broken configuration.

use crate::support::Workspace;

#[test]
fn check_config_lists_every_problem_and_run_refuses_to_start() {
    let workspace = Workspace::new("");
    std::fs::write(
        workspace.folder.path().join("directory.toml"),
        "[[people]]\nid = \"alice\"\nname = \"A\"\nmanager = \"ghost\"\n\n[[assets]]\nhostname = \"WS-1\"\nkind = \"laptop\"\nowner = \"nobody\"\n",
    )
    .expect("write");
    let settings = std::fs::read_to_string(workspace.config())
        .expect("read")
        .replace("grouping_window_minutes = 30", "grouping_window_minutes = -4\nport = 80");
    std::fs::write(workspace.config(), settings).expect("write");
    let config = workspace.config();
    let config = config.to_str().expect("path");

    let (code, stdout, stderr) = workspace.run_command(&["check-config", "--config", config]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    for fragment in [
        "vouch.toml:4: ingest.grouping_window_minutes: must be from 0 to 10080",
        "vouch.toml:5: ingest.port: unknown key",
        "directory.toml:4: people[0].manager: `ghost` is not a person",
        "directory.toml:8: assets[0].kind: `laptop` is not one of",
        "directory.toml:9: assets[0].owner: `nobody` is not a person",
    ] {
        assert!(stderr.contains(fragment), "missing {fragment:?} in:\n{stderr}");
    }
    assert!(stderr.contains("5 problem(s)"), "{stderr}");

    let (code, _, stderr) = workspace.run_command(&["run", "--config", config]);
    assert_eq!(code, 2, "run refuses a broken config: {stderr}");
    assert!(!workspace.folder.path().join("data").exists(), "nothing was created");

    let valid = Workspace::new("");
    let valid_config = valid.config();
    let (code, stdout, _) = valid.run_command(&["check-config", "--config", valid_config.to_str().expect("path")]);
    assert_eq!(code, 0);
    assert!(stdout.contains("valid (4 people, 7 assets, playbook Lateral movement v1)"), "{stdout}");
}
