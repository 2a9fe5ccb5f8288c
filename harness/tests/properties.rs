//! Property tests of the `--capabilities` contract, end to end.
//!
//! * `print_rings_agrees_with_the_model`: generated add/drop/bypass/help values and
//!   `CAPABILITIES_*` environments (valid and invalid names in every spelling and case,
//!   numbers, white space, duplicates, conflicts, unknown keys and events) go through the
//!   real `ref-tracer --print-rings`. Its exit code, and the options it prints, must be what
//!   the independent grammar model (`capring-grammar-model`, written from SPEC.md) says;
//!   `--capabilities help` must list exactly the kernel's capabilities. Nothing here calls
//!   the parser or the oracle the tracer runs.
//! * `sampled_runs_conform`: a few valid combinations run for real under the observer and
//!   must pass the ring clauses.
//!
//! Failing cases are kept in `proptest-regressions/` and replayed first. `PROPTEST_CASES`
//! scales the number of cases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use capring_grammar_model::grammar::{self, Environment, Resolved, Source, NAMED_CAPABILITIES};
use capring_judge::catalog::judge;
use capring_judge::profile::Profile;
use capring_judge::scenario::{Scenario, ScenarioFaults, Target};
use capring_spec::clauses::Level;
use capring_spec::facts;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The tracer's exit codes (SPEC.md, `usage.exit` and the README).
const EXIT_USAGE: i32 = 2;
const EXIT_CAPABILITY: i32 = 3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tracer_binary() -> PathBuf {
    let profile = Profile::load(&root().join("fixtures/tracers/ref-tracer.toml")).expect("profile");
    profile
        .resolve_program(&profile.binary)
        .unwrap_or_else(|e| panic!("{e}: build the workspace first (cargo build --workspace)"))
}

/// The running kernel's highest capability, read here rather than through the probe the
/// tracer uses.
fn cap_last_cap() -> u8 {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").expect("cap_last_cap");
    text.trim().parse().expect("cap_last_cap is a number")
}

fn bare_name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMED_CAPABILITIES.to_vec()).prop_map(|(_, n)| n.to_string())
}

fn cap_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => bare_name().prop_map(|n| format!("cap_{n}")),
        2 => bare_name().prop_map(|n| format!("CAP_{}", n.to_uppercase())),
        2 => bare_name(),
        1 => bare_name().prop_map(|n| n.to_uppercase()),
        1 => bare_name().prop_map(|n| format!("Cap_{n}")),
        1 => (0u16..=70).prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "cap_sys_admn", "cap_nope", "CAP_", "sys-admin", "64", "-1", "+5", "007", " cap_kill ",
            "cap_cap_kill", "ca\u{17f}_kill", "\u{212a}ill", "256", "",
        ]).prop_map(String::from),
    ]
}

fn cap_list() -> impl Strategy<Value = String> {
    prop::collection::vec(cap_name(), 0..4).prop_map(|v| v.join(","))
}

fn bypass_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "1", "0", "true", "false", "yes", "", "True", " 1", "  ",
    ])
    .prop_map(String::from)
}

fn cap_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => cap_list().prop_map(|l| format!("add={l}")),
        3 => cap_list().prop_map(|l| format!("drop={l}")),
        2 => bypass_value().prop_map(|v| format!("bypass={v}")),
        1 => Just("help".to_string()),
        1 => prop::sample::select(vec!["frob=1", "bypass", "ADD=cap_kill", "add", "help=1", " help"])
            .prop_map(String::from),
    ]
}

fn env_value(list: bool) -> impl Strategy<Value = Option<String>> {
    if list {
        prop::option::weighted(0.3, cap_list()).boxed()
    } else {
        prop::option::weighted(0.3, bypass_value()).boxed()
    }
}

/// The reference tracer's events (README); `exec` is not one.
const EVENTS: [&str; 5] = [
    "execve",
    "openat",
    "module_load",
    "sched_process_exec",
    "net_packet",
];

fn events() -> impl Strategy<Value = Vec<String>> {
    let mut names = EVENTS.to_vec();
    names.push("exec");
    prop::sample::subsequence(names, 1..=3).prop_map(|v| v.into_iter().map(String::from).collect())
}

#[derive(Debug, Clone)]
struct Case {
    values: Vec<String>,
    env: Environment,
    events: Vec<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(cap_value(), 0..4),
        env_value(false),
        env_value(true),
        env_value(true),
        events(),
    )
        .prop_map(|(values, bypass, add, drop, events)| Case {
            values,
            env: Environment { bypass, add, drop },
            events,
        })
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_print_rings(bin: &Path, c: &Case) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("--events")
        .arg(c.events.join(","))
        .arg("--print-rings");
    for v in &c.values {
        // `--capabilities=VALUE`: a value is never mistaken for a flag.
        cmd.arg(format!("--capabilities={v}"));
    }
    for (k, v) in [
        ("CAPABILITIES_BYPASS", &c.env.bypass),
        ("CAPABILITIES_ADD", &c.env.add),
        ("CAPABILITIES_DROP", &c.env.drop),
    ] {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("ref-tracer runs");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A capability as `--print-rings` prints it (`cap_kill`, or a number past the named ones).
fn cap_number(printed: &serde_json::Value) -> Result<u8, TestCaseError> {
    let s = printed
        .as_str()
        .ok_or_else(|| TestCaseError::fail(format!("capability {printed} is not a string")))?;
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    NAMED_CAPABILITIES
        .iter()
        .find(|(_, n)| s.strip_prefix("cap_") == Some(n))
        .map(|(i, _)| *i)
        .ok_or_else(|| TestCaseError::fail(format!("unknown capability {s:?} printed")))
}

fn cap_numbers(printed: &serde_json::Value) -> Result<BTreeSet<u8>, TestCaseError> {
    printed
        .as_array()
        .ok_or_else(|| TestCaseError::fail(format!("{printed} is not a list")))?
        .iter()
        .map(cap_number)
        .collect()
}

/// The options `--print-rings` printed, in the model's terms.
fn printed_options(o: &serde_json::Value) -> Result<Resolved, TestCaseError> {
    let source = match o["bypass_source"].as_str() {
        Some("default") => Source::Default,
        Some("cli") => Source::Cli,
        Some("env") => Source::Env,
        other => return Err(TestCaseError::fail(format!("bypass_source {other:?}"))),
    };
    let flag = |k: &str| {
        o[k].as_bool()
            .ok_or_else(|| TestCaseError::fail(format!("{k} is not a bool in {o}")))
    };
    Ok(Resolved {
        help: flag("help")?,
        bypass: flag("bypass")?,
        bypass_source: source,
        add: cap_numbers(&o["add"])?,
        drop: cap_numbers(&o["drop"])?,
    })
}

/// `help.lists-kernel-caps`: exactly 0..=cap_last_cap, each named where it has a name.
fn check_help_listing(stdout: &str, last: u8) -> Result<(), TestCaseError> {
    let listed: BTreeSet<u8> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    prop_assert_eq!(
        listed,
        (0..=last).collect::<BTreeSet<u8>>(),
        "help: {}",
        stdout
    );
    for (n, name) in NAMED_CAPABILITIES.iter().filter(|(n, _)| *n <= last) {
        let want = format!("cap_{name}");
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()));
        prop_assert!(
            line.is_some_and(|l| l.split_whitespace().any(|w| w == want)),
            "help does not name {} as {}: {:?}",
            n,
            want,
            line
        );
    }
    Ok(())
}

/// What the model predicted for a case (the test counts them, so it cannot pass on one kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    UsageError,
    Help,
    UnknownEvent,
    Accepted,
}

fn check_case(bin: &Path, last: u8, c: &Case) -> Result<Verdict, TestCaseError> {
    let out = run_print_rings(bin, c);
    prop_assert!(!out.stderr.contains("panicked"), "panic: {}", out.stderr);
    let usage_error = |why: String| -> Result<(), TestCaseError> {
        prop_assert_eq!(out.code, Some(EXIT_USAGE), "{}; stderr {}", why, out.stderr);
        prop_assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one line: {}",
            out.stderr
        );
        Ok(())
    };
    let model = match grammar::resolve(&c.values, &c.env, last) {
        Err(e) => {
            return usage_error(format!("model: usage error {e:?}")).map(|()| Verdict::UsageError)
        }
        Ok(m) => m,
    };
    if model.help {
        // Help answers before events are looked at (README: `ref-tracer --capabilities help`).
        prop_assert_eq!(out.code, Some(0), "help; stderr {}", out.stderr);
        return check_help_listing(&out.stdout, last).map(|()| Verdict::Help);
    }
    if let Some(e) = c.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return usage_error(format!("unknown event {e}")).map(|()| Verdict::UnknownEvent);
    }
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| TestCaseError::fail(format!("{e}: {} / {}", out.stdout, out.stderr)))?;
    prop_assert_eq!(printed_options(&doc["options"])?, model.clone());
    prop_assert_eq!(&doc["events"], &serde_json::json!(c.events));
    let outcome = doc["result"]["outcome"].as_str();
    match out.code {
        Some(0) => {
            prop_assert_eq!(outcome, Some("runs"));
            prop_assert_eq!(doc["result"]["bypass"].as_bool(), Some(model.bypass));
        }
        Some(EXIT_CAPABILITY) => prop_assert_eq!(outcome, Some("cannot-run")),
        other => prop_assert!(
            false,
            "exit {:?} for accepted options; stderr {}",
            other,
            out.stderr
        ),
    }
    Ok(Verdict::Accepted)
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: n,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/properties.txt"
            )),
        )),
        ..Config::default()
    })
}

#[test]
fn print_rings_agrees_with_the_model() {
    let bin = tracer_binary();
    let last = cap_last_cap();
    let seen = std::cell::RefCell::new(BTreeMap::<Verdict, u32>::new());
    runner(cases(256))
        .run(&case(), |c| {
            let verdict = check_case(&bin, last, &c)?;
            *seen.borrow_mut().entry(verdict).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    eprintln!("cases by the model's verdict: {seen:?}");
    for v in [
        Verdict::UsageError,
        Verdict::Help,
        Verdict::UnknownEvent,
        Verdict::Accepted,
    ] {
        assert!(
            seen.contains_key(&v),
            "no {v:?} case was generated: {seen:?}"
        );
    }
}

/// Only valid, runnable combinations: bypass/add/drop of ordinary capabilities.
fn runnable_case() -> impl Strategy<Value = (Vec<String>, BTreeMap<String, String>)> {
    let name = prop::sample::select(vec![
        "cap_kill",
        "CAP_LEASE",
        "chown",
        "cap_sys_ptrace",
        "cap_fowner",
    ]);
    (
        prop::option::of(prop::sample::select(vec!["bypass=1", "bypass=0"])),
        prop::option::of(name.clone().prop_map(|n| format!("add={n}"))),
        prop::option::of(prop::sample::select(vec![
            "CAPABILITIES_BYPASS",
            "CAPABILITIES_DROP",
        ])),
    )
        .prop_map(|(b, a, e)| {
            let values: Vec<String> = b.map(String::from).into_iter().chain(a).collect();
            let env = e
                .map(|k| {
                    let v = if k == "CAPABILITIES_BYPASS" {
                        "1"
                    } else {
                        "cap_mknod"
                    };
                    BTreeMap::from([(k.to_string(), v.to_string())])
                })
                .unwrap_or_default();
            (values, env)
        })
        .prop_filter("add and drop must not meet", |(v, e)| {
            !(v.iter().any(|x| x.contains("mknod")) && e.contains_key("CAPABILITIES_DROP"))
        })
}

#[test]
fn sampled_runs_conform() {
    assert!(
        capring_spec::sys::is_root(),
        "this test needs root (CI runs as root)"
    );
    let _ = tracer_binary();
    let profile = Profile::load(&root().join("fixtures/tracers/ref-tracer.toml")).unwrap();
    let base = facts::probe().unwrap();
    let clauses: Vec<String> = [
        "ring.required.exact",
        "ring.unprivileged.empty",
        "ring.no-excess",
        "threads.same-ring",
        "bypass.flag",
        "bypass.env",
        "add.required",
        "env.cli-wins",
    ]
    .map(String::from)
    .to_vec();
    runner(cases(6).min(12))
        .run(&runnable_case(), |(cli, env)| {
            let s = Scenario {
                name: "property".into(),
                description: "generated".into(),
                target: Target::Tracer,
                select: vec![],
                events: Some(vec!["execve".into(), "openat".into()]),
                cli,
                env,
                faults: ScenarioFaults::default(),
                bounding_drop: vec![],
                paranoid: None,
                lines: Some(5),
                needs: vec![],
                rules_args: vec![],
                clauses: clauses.clone(),
            };
            let outcome = capring_judge::catalog::run_scenario(&profile, &s, &base, true);
            let failed: Vec<String> = judge(&profile, &s, &outcome, &base)
                .into_iter()
                .filter(|r| r.counts_as_failure() && r.level == Level::Must)
                .map(|r| format!("{}: {} → {}", r.clause, r.expected, r.observed))
                .collect();
            prop_assert!(failed.is_empty(), "{:?}: {:?}", s.cli, failed);
            Ok(())
        })
        .unwrap();
}
