//! `vouch demo` runs the whole flow against the simulator and exits cleanly.

#[test]
fn the_demo_runs_the_whole_flow() {
    let output = std::process::Command::new(crate::support::binary())
        .arg("demo")
        .env("VOUCH_LOG", "warn")
        .output()
        .expect("vouch demo runs");
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{transcript}\n{}", String::from_utf8_lossy(&output.stderr));
    for line in [
        "[card] LM-1 · WS-17 → WS-42",
        "Closed as expected by Carol Diaz.",
        "This isn't yours to answer",
        "@on-call On-call, you are paged for LM-2",
        "Isolation of **SRV-DB-01** was requested by Sam Okafor",
        "\"not_lateral_movement\" (\"local_logon\")",
        "LM-2: 6 alerts, state \"escalated\"",
        "rejects: 0.",
    ] {
        assert!(transcript.contains(line), "the transcript lacks {line:?}:\n{transcript}");
    }
}
