//! `capring minimize` on this host: the reference's whole catalog measured for real (about
//! 20 s; this is the measurement CI runs on a kernel), compared with the table committed for
//! this environment under `snapshots/minimal-sets/`. A change shows as a difference of
//! minimal sets, observed rings or Requested verdicts; re-measure with
//! `capring minimize --tracer fixtures/tracers/ref-tracer.toml --out snapshots/minimal-sets`
//! and review the diff.
//!
//! Needs root (CI runs as root) and the workspace built: without them it fails, loudly.
//! Run it under `flock /tmp/capring-host.lock` like the other host tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use capring_judge::measured::{EventSetResult, Table};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What must not change between two measurements of the same kernel and environment.
fn essentials(e: &EventSetResult) -> String {
    let requested: Vec<String> = e
        .requested
        .iter()
        .map(|r| format!("{} {:?}", r.operation, r.verdict))
        .collect();
    format!(
        "{}: minimal {:?} exhaustive {} observed {:?} missing {} too permissive {} requested {:?}{}",
        e.events.join("+"),
        e.minimal_sets,
        e.exhaustive,
        e.observed,
        e.missing,
        e.too_permissive,
        requested,
        e.failed
            .as_deref()
            .map_or(String::new(), |f| format!(" FAILED {f}"))
    )
}

#[test]
fn the_host_measurement_matches_the_committed_table() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "capring minimize needs root (CI runs as root)");
    let out = std::env::temp_dir().join(format!("capring-minimize-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_capring"))
        .args(["minimize", "--tracer"])
        .arg(root().join("fixtures/tracers/ref-tracer.toml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "capring minimize failed ({}):\n{stderr}",
        run.status
    );
    // One progress line per run on stderr.
    assert!(stderr.contains("] run 1: Baseline"), "{stderr}");
    let written: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let measured: Table =
        serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
    let name = written[0].file_name().unwrap();
    let committed_path = root().join("snapshots/minimal-sets").join(name);
    let committed: Table = serde_json::from_str(
        &std::fs::read_to_string(&committed_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: no table is committed for this environment; review and commit {}",
                committed_path.display(),
                written[0].display()
            )
        }),
    )
    .unwrap();
    let now: Vec<String> = measured.entries.iter().map(essentials).collect();
    let then: Vec<String> = committed.entries.iter().map(essentials).collect();
    assert_eq!(
        now,
        then,
        "measured on {} now, committed from {}: the table differs (new one: {})",
        measured.kernel,
        committed.kernel,
        written[0].display()
    );
    let _ = std::fs::remove_dir_all(&out);
}
