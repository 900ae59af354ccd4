//! `vouch audit export` and `vouch audit verify` on a real store.

use crate::support::{native_alert, post_alert, Workspace};

#[tokio::test]
async fn exports_round_trip_and_edits_are_detected() {
    let workspace = Workspace::new("");
    let vouch = workspace.start();
    for index in 0..5 {
        let (status, _) = post_alert(
            &vouch.base,
            &native_alert(&format!("a{index}"), "WS-17", &format!("SRV-{}", index % 2), "alice"),
        )
        .await;
        assert_eq!(status, 202);
    }
    assert_eq!(vouch.terminate(), 0);
    let config = workspace.config();
    let config = config.to_str().expect("path");
    let export = workspace.folder.path().join("audit.jsonl");
    let export_path = export.to_str().expect("path");

    let (code, stdout, stderr) =
        workspace.run_command(&["audit", "export", "--config", config, "--output", export_path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let original = std::fs::read_to_string(&export).expect("export written");
    assert_eq!(original.lines().count(), 5);
    let (code, stdout, _) = workspace.run_command(&["audit", "verify", "--config", config, "--file", export_path]);
    assert_eq!(code, 0, "the export verifies on its own: {stdout}");
    let (code, stdout, _) = workspace.run_command(&["audit", "verify", "--config", config]);
    assert_eq!(code, 0, "{stdout}");
    let head_line = stdout.clone();

    let lines: Vec<&str> = original.lines().collect();
    // (what was done to the copy, the lines of the copy, a fragment of the report)
    let mut record: serde_json::Value = serde_json::from_str(lines[1]).expect("a record");
    record["detail"]["alert_count"] = serde_json::json!(99);
    let edited = record.to_string();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("edited", vec![lines[0].into(), edited, lines[2].into(), lines[3].into(), lines[4].into()], "was altered"),
        (
            "removed",
            vec![lines[0].into(), lines[2].into(), lines[3].into(), lines[4].into()],
            "removed, inserted or reordered",
        ),
        (
            "reordered",
            vec![lines[0].into(), lines[2].into(), lines[1].into(), lines[3].into(), lines[4].into()],
            "removed, inserted or reordered",
        ),
        (
            "inserted",
            vec![lines[0].into(), lines[1].into(), lines[1].into(), lines[2].into(), lines[3].into(), lines[4].into()],
            "removed, inserted or reordered",
        ),
    ];
    for (name, copy, fragment) in cases {
        let tampered = workspace.folder.path().join(format!("{name}.jsonl"));
        std::fs::write(&tampered, copy.join("\n") + "\n").expect("write");
        let (code, stdout, _) =
            workspace.run_command(&["audit", "verify", "--config", config, "--file", tampered.to_str().expect("path")]);
        assert_eq!(code, 3, "{name}: {stdout}");
        assert!(stdout.contains(fragment), "{name}: expected {fragment:?} in {stdout}");
    }

    let (code, stdout, _) = workspace.run_command(&["audit", "export", "--config", config, "--case", "LM-1"]);
    assert_eq!(code, 0);
    assert!(stdout.lines().all(|line| line.contains("\"case_id\":\"LM-1\"")), "{stdout}");
    assert!(head_line.contains("5 records"), "{head_line}");
}
