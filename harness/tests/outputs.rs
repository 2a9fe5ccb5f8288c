//! What capring writes for people and tools, read back from outside:
//!
//! * Perfetto traces (`observe --perfetto`, `report --perfetto`), read by an independent
//!   reader of the Trace Event Format that knows nothing of the writer's types (plain
//!   `serde_json::Value`): every non-metadata event has ph/ts/pid/tid, complete slices on one
//!   track nest (no partial overlap), every thread has exactly one `thread_name`. The reader
//!   is shown to reject traces that break each rule.
//! * `report`: `--color`, `--quiet`, bad input; `completions` and `man`.
//!
//! The recorded runs (`fixtures/runs/`) need no root; `observe` of a real command does (CI
//! runs as root), and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capring_judge::run::RunRecord;
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capring-outputs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn capring(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capring"))
        .args(args)
        .output()
        .unwrap()
}

/// Microseconds as the viewers read them: integer nanoseconds.
fn ns(v: &Value) -> Option<i64> {
    v.as_f64().map(|us| (us * 1000.0).round() as i64)
}

/// What an independent reader finds wrong with a Chrome Trace Event document.
fn format_problems(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(events) = doc["traceEvents"].as_array() else {
        return vec!["no traceEvents array".into()];
    };
    let mut names: BTreeMap<i64, usize> = BTreeMap::new();
    let mut tids = BTreeSet::new();
    let mut slices: BTreeMap<(i64, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let (Some(ph), Some(pid)) = (e["ph"].as_str(), e["pid"].as_i64()) else {
            problems.push(format!("event {i} lacks ph or pid: {e}"));
            continue;
        };
        if ph == "M" {
            if e["name"] == "thread_name" {
                match (e["tid"].as_i64(), e["args"]["name"].as_str()) {
                    (Some(tid), Some(_)) => *names.entry(tid).or_default() += 1,
                    _ => problems.push(format!("thread_name without tid or args.name: {e}")),
                }
            }
            continue;
        }
        let (Some(ts), Some(tid)) = (ns(&e["ts"]), e["tid"].as_i64()) else {
            problems.push(format!("event {i} ({ph}) lacks ts or tid: {e}"));
            continue;
        };
        tids.insert(tid);
        match ph {
            "X" => match ns(&e["dur"]).filter(|d| *d >= 0) {
                Some(dur) => slices.entry((pid, tid)).or_default().push((ts, ts + dur)),
                None => problems.push(format!("complete event without a duration: {e}")),
            },
            "i" | "I" if !matches!(e["s"].as_str(), None | Some("g" | "p" | "t")) => {
                problems.push(format!("instant event with scope {}: {e}", e["s"]))
            }
            "i" | "I" | "B" | "E" | "C" => {}
            other => problems.push(format!("unexpected phase {other}: {e}")),
        }
    }
    for tid in &tids {
        if names.get(tid) != Some(&1) {
            problems.push(format!(
                "tid {tid} has {} thread_name events",
                names.get(tid).unwrap_or(&0)
            ));
        }
    }
    for ((pid, tid), mut v) in slices {
        // Longest first at equal starts; a slice must end inside every open one.
        v.sort_by_key(|(a, b)| (*a, -*b));
        let mut open: Vec<i64> = Vec::new();
        for (a, b) in v {
            while open.last().is_some_and(|end| *end <= a) {
                open.pop();
            }
            if open.last().is_some_and(|end| b > *end) {
                problems.push(format!(
                    "pid {pid} tid {tid}: slice [{a}, {b}] ns overlaps its parent partially"
                ));
            }
            open.push(b);
        }
    }
    problems
}

#[test]
fn the_reader_rejects_broken_traces() {
    let meta = |tid: i64| json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": "t"}});
    let x = |ts: f64, dur: f64| json!({"ph": "X", "name": "s", "ts": ts, "dur": dur, "pid": 1, "tid": 2});
    let good = json!({"traceEvents": [meta(2), x(0.0, 10.0), x(2.0, 3.0), x(10.0, 1.0)]});
    assert_eq!(format_problems(&good), Vec::<String>::new());
    let overlap = json!({"traceEvents": [meta(2), x(0.0, 10.0), x(5.0, 10.0)]});
    assert!(format_problems(&overlap)[0].contains("overlaps"));
    let twice = json!({"traceEvents": [meta(2), meta(2), x(0.0, 1.0)]});
    assert!(format_problems(&twice)[0].contains("2 thread_name"));
    let unnamed = json!({"traceEvents": [x(0.0, 1.0)]});
    assert!(format_problems(&unnamed)[0].contains("0 thread_name"));
    let no_ts = json!({"traceEvents": [meta(2), {"ph": "i", "name": "c", "pid": 1, "tid": 2}]});
    assert!(format_problems(&no_ts)[0].contains("lacks ts"));
}

/// The threads of a recorded run, from its timeline.
fn tids_of(rec: &RunRecord) -> BTreeSet<i64> {
    let t = &rec.observation.timeline;
    t.entries
        .iter()
        .flat_map(|e| std::iter::once(e.tid).chain(e.threads.iter().map(|t| t.tid)))
        .map(i64::from)
        .collect()
}

fn tracks(doc: &Value, ph: &str) -> BTreeSet<i64> {
    doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == ph && (ph != "M" || e["name"] == "thread_name"))
        .map(|e| e["tid"].as_i64().unwrap())
        .collect()
}

/// Every recorded run, reference and controls, as Perfetto traces.
#[test]
fn recorded_runs_export_valid_traces() {
    for set in ["reference", "controls"] {
        let dir = scratch(&format!("perfetto-{set}"));
        let src = root().join("fixtures/runs").join(set);
        let out = capring(&[
            "report",
            src.to_str().unwrap(),
            "--perfetto",
            dir.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
        let mut seen = 0;
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let rec = RunRecord::load(&path).unwrap();
            let stem = path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".json.gz", "");
            let file = dir.join(format!("{stem}.json"));
            let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(
                format_problems(&doc),
                Vec::<String>::new(),
                "{}",
                file.display()
            );
            assert_eq!(
                tracks(&doc, "M"),
                tids_of(&rec),
                "{}: one track per thread",
                file.display()
            );
            let calls = rec
                .observation
                .timeline
                .calls()
                .filter(|(_, c, _, inj)| c.changes_capabilities() || c.is_privileged() || *inj)
                .count();
            let instants = doc["traceEvents"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["ph"] == "i" && e["s"] == "t")
                .count();
            assert_eq!(
                instants,
                calls,
                "{}: one instant per marked call",
                file.display()
            );
            seen += 1;
        }
        assert!(seen > 0);
    }
}

fn need_root() {
    if !capring_spec::sys::is_root() {
        panic!("needs root (CI runs as root): capsh changes capabilities");
    }
}

/// `observe --perfetto` and `--html` of a real command: capsh drops from the bounding set,
/// sets its own E/P/I, and starts a shell with a child.
#[test]
fn observe_exports_a_valid_trace_and_page() {
    need_root();
    let dir = scratch("observe");
    let (trace, page) = (dir.join("t.json"), dir.join("t.html"));
    let out = capring(&[
        "observe",
        "--perfetto",
        trace.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
        "--",
        "capsh",
        "--drop=cap_net_raw",
        "--caps=cap_chown,cap_kill+eip",
        "--",
        "-c",
        "sleep 0.05 & wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert_eq!(format_problems(&doc), Vec::<String>::new());
    let events = doc["traceEvents"].as_array().unwrap();
    let processes = events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .count();
    assert!(
        processes >= 2,
        "capsh and its shell's child: {processes} processes"
    );
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "i" && e["name"] == "capset"),
        "the capset is an instant"
    );
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert!(
        slices
            .iter()
            .any(|s| s["args"]["E"] == "{cap_chown, cap_kill}"),
        "E after the capset is a slice's args"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("class=\"timeline\"") && html.contains("data-syscall=\"capset\""));
}

#[test]
fn report_colour_and_quiet() {
    let run = root().join("fixtures/runs/controls/never-drops.json.gz");
    let run = run.to_str().unwrap();
    let always = capring(&["report", run, "--quiet", "--color", "always"]);
    assert_eq!(always.status.code(), Some(1), "a MUST clause fails");
    let text = String::from_utf8(always.stdout).unwrap();
    assert!(
        !text.is_empty() && text.lines().all(|l| l.contains("\x1b[1m\x1b[31mFAIL")),
        "{text}"
    );
    for when in ["never", "auto"] {
        // auto: stdout is a pipe here, not a terminal.
        let out = capring(&["report", run, "--quiet", "--color", when]);
        let plain = String::from_utf8(out.stdout).unwrap();
        assert!(!plain.contains('\x1b'), "--color {when}: {plain}");
        assert_eq!(plain.lines().count(), text.lines().count());
    }
    let full = String::from_utf8(capring(&["report", run, "--color", "never"]).stdout).unwrap();
    assert!(
        full.lines().count() > text.lines().count() + 2 && full.contains("PASS"),
        "{full}"
    );
    let reference = capring(&[
        "report",
        root().join("fixtures/runs/reference").to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(
        (reference.status.code(), reference.stdout.len()),
        (Some(0), 0),
        "nothing fails: nothing printed"
    );
}

#[test]
fn report_bad_input_is_one_line() {
    let out = capring(&["report", "/nonexistent/results"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/results"));
    let empty = scratch("empty");
    let out = capring(&["report", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn completions_and_man_pages() {
    let bash = String::from_utf8(capring(&["completions", "bash"]).stdout).unwrap();
    assert!(
        bash.contains("complete") && bash.contains("report") && bash.contains("--perfetto"),
        "{bash}"
    );
    let zsh = String::from_utf8(capring(&["completions", "zsh"]).stdout).unwrap();
    assert!(zsh.starts_with("#compdef capring"), "{zsh}");
    let dir = scratch("man");
    assert!(capring(&["man", dir.to_str().unwrap()]).status.success());
    let main = std::fs::read_to_string(dir.join("capring.1")).unwrap();
    assert!(main.contains(".TH capring"), "{main}");
    let check = std::fs::read_to_string(dir.join("capring-check.1")).unwrap();
    assert!(check.contains("html") && check.contains("quiet"), "{check}");
    assert!(
        !dir.join("capring-man.1").exists(),
        "the hidden command has no page"
    );
}

/// JUnit of a real run whose tracer writes ANSI colours, a NUL byte, a bell and XML
/// delimiters to stderr: a strict XML parser reads it, the text survives without the
/// control characters.
#[test]
fn junit_of_a_tracer_writing_control_bytes_parses_strictly() {
    need_root();
    let dir = scratch("hostile");
    let profile = dir.join("hostile.toml");
    let script = r"printf '\033[1;31mfatal\033[0m \000 nul \a bell ]]> </failure> &\n' >&2; echo second >&2; exit 2";
    std::fs::write(
        &profile,
        format!(
            "name = \"hostile\"\nbinary = \"/bin/sh\"\nargs = [\"-c\", {script:?}, \"hostile\"]\n\
             [capabilities]\nraw = [\"--capabilities\", \"{{value}}\"]\n"
        ),
    )
    .unwrap();
    let out = capring(&[
        "check",
        "--tracer",
        profile.to_str().unwrap(),
        "--scenario",
        "usage-unknown-key",
        "--format",
        "junit",
    ]);
    let junit = String::from_utf8(out.stdout).expect("JUnit is UTF-8");
    // usage.exit is a SHOULD: its failure (two lines) is reported, the exit status stays 0.
    assert_eq!(out.status.code(), Some(0), "{junit}");
    assert!(!junit.contains('\0') && !junit.contains('\x1b') && !junit.contains('\x07'));
    let doc = roxmltree::Document::parse(&junit).unwrap_or_else(|e| panic!("{e}: {junit}"));
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap_or_else(|| panic!("no failure element: {junit}"));
    let text: String = failure.descendants().filter_map(|n| n.text()).collect();
    assert!(text.contains("fatal") && text.contains("nul"), "{text:?}");
    assert!(text.contains("]]> </failure> &"), "{text:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
