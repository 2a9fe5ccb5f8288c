//! The guest agent binary, run on the host.

use std::process::Command;

#[test]
fn agent_refuses_to_run_unless_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-agent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PID 1"), "{err}");
}

#[test]
fn selftest_writes_results_and_exits_as_asked() {
    let d = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vm-agent"))
        .args(["--selftest", "--exit", "3", "--spam", "2"])
        .env("CAPRING_RESULTS", d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("selftest: line 1"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("selftest.json")).unwrap()).unwrap();
    assert_eq!(v["exit"], 3);
}

#[test]
fn selftest_bad_argument_is_one_line_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-agent"))
        .args(["--selftest", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}
