//! `ci/tracer-check.sh`, the script behind the tracer CI action, run on the example tracer
//! repository (`fixtures/tracer-repo/`): it must leave a JUnit file and an HTML report that
//! say what capring found, and exit as capring did (0 on the passing example, 1 on a
//! negative control, 2 on bad input).
//!
//! The real runs need root (the tracer loads eBPF programs) and the built reference binaries
//! (`cargo xtask test` builds them); without either the tests fail, saying what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capring-tracer-ci-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where cargo put capring, and the reference binaries beside it.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_capring"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn need(binaries: &[&str]) {
    if !capring_spec::sys::is_root() {
        panic!("needs root (CI runs as root): the example tracer loads eBPF programs");
    }
    for b in binaries {
        let p = bin_dir().join(b);
        assert!(
            p.is_file(),
            "{} is not built (cargo xtask test builds it)",
            p.display()
        );
    }
}

/// `ci/tracer-check.sh ARGS` with the built binaries first on PATH.
fn script(args: &[&str]) -> Output {
    let path = std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    Command::new("bash")
        .arg(root().join("ci/tracer-check.sh"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// (test cases, failures) of a JUnit file, read with a strict XML parser.
fn junit(path: &Path) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let cases: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|n| {
            format!(
                "{} {}",
                n.attribute("classname").unwrap_or(""),
                n.attribute("name").unwrap_or("")
            )
        })
        .collect();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    (cases, failures)
}

fn clauses_of(scenario: &str) -> usize {
    capring_judge::scenario::builtin()
        .into_iter()
        .find(|s| s.name == scenario)
        .unwrap()
        .clauses
        .len()
}

#[test]
fn the_example_repository_passes_with_junit_and_html() {
    need(&["ref-tracer", "ref-workload"]);
    let out = scratch("example");
    let profile = root().join("fixtures/tracer-repo/capring.toml");
    let r = script(&[
        "--profile",
        profile.to_str().unwrap(),
        "--capring",
        env!("CARGO_BIN_EXE_capring"),
        "--out",
        out.to_str().unwrap(),
        "--scenario",
        "steady-state",
        "--scenario",
        "usage-unknown-event",
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    let (cases, failures) = junit(&out.join("junit/host.xml"));
    assert_eq!(
        cases.len(),
        clauses_of("steady-state") + clauses_of("usage-unknown-event"),
        "{cases:?}"
    );
    assert_eq!(failures, 0);
    assert!(
        cases
            .iter()
            .any(|c| c.starts_with("steady-state ring.no-excess")),
        "{cases:?}"
    );
    let html = std::fs::read_to_string(out.join("host/report.html")).unwrap();
    assert!(
        html.contains(r#"data-scenario="steady-state""#)
            && html.contains("<svg class=\"timeline\"")
    );
    assert!(html.contains("example-tracer"), "the page names the tracer");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("host/results.json")).unwrap()).unwrap();
    assert_eq!(results["tracer"], "example-tracer");
}

/// A tracer that never drops: the script fails as capring does, and says why in JUnit and
/// in the page.
#[test]
fn a_failing_tracer_fails_the_job() {
    need(&["ref-tracer-mutant", "ref-workload"]);
    let out = scratch("failing");
    let base = std::fs::read_to_string(root().join("fixtures/tracer-repo/capring.toml")).unwrap();
    let profile = out.join("never-drops.toml");
    let text = base
        .replace("binary = \"./tracer\"", "binary = \"ref-tracer-mutant\"")
        .replacen(
            "[events]",
            "[env]\nCAPRING_MUTANT = \"never-drops\"\n\n[events]",
            1,
        );
    assert!(text.contains("ref-tracer-mutant") && text.contains("[env]"));
    std::fs::write(&profile, text).unwrap();
    let r = script(&[
        "--profile",
        profile.to_str().unwrap(),
        "--capring",
        env!("CARGO_BIN_EXE_capring"),
        "--out",
        out.to_str().unwrap(),
        "--scenario",
        "steady-state",
    ]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let (_, failures) = junit(&out.join("junit/host.xml"));
    assert!(failures >= 5, "never-drops fails many clauses: {failures}");
    let html = std::fs::read_to_string(out.join("host/report.html")).unwrap();
    assert!(
        html.contains(r#"data-clause="ring.unprivileged.empty""#)
            && html.contains("class=\"failure fail\"")
    );
}

#[test]
fn bad_input_exits_2() {
    let profile = root().join("fixtures/tracer-repo/capring.toml");
    let p = profile.to_str().unwrap();
    let capring = env!("CARGO_BIN_EXE_capring");
    for args in [
        vec!["--capring", capring],
        vec!["--profile", "/nonexistent.toml", "--capring", capring],
        vec!["--profile", p, "--capring", "/nonexistent/capring"],
        vec!["--profile", p, "--capring", capring, "--kernel", "6.1"],
        vec!["--profile", p, "--bogus"],
    ] {
        let r = script(&args);
        assert_eq!(
            r.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

/// The action passes only flags the script takes, and calls the script next to it.
#[test]
fn the_action_calls_the_script_with_its_flags() {
    let action = std::fs::read_to_string(root().join("ci/tracer-action/action.yml")).unwrap();
    let script = std::fs::read_to_string(root().join("ci/tracer-check.sh")).unwrap();
    assert!(action.contains("$GITHUB_ACTION_PATH/../tracer-check.sh"));
    let run = &action[action.find("run: |").expect("a run step")..];
    let flags: Vec<&str> = run
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    assert!(flags.len() >= 5, "{flags:?}");
    for f in flags {
        assert!(
            script.contains(&format!("        {f})")),
            "the script takes no {f}"
        );
    }
}
