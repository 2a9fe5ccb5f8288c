//! Property tests of the `--capabilities` contract, end to end.
//!
//! * `print_rings_agrees_with_the_oracle`: generated add/drop/bypass/help values and
//!   `CAPABILITIES_*` environments (valid and invalid names, case variants, numbers,
//!   duplicates, conflicts, unknown keys and events) go through the real
//!   `ref-tracer --print-rings`; its exit code and JSON must equal the oracle's verdict.
//! * `sampled_runs_conform`: a few valid combinations run for real under the observer and
//!   must pass the ring clauses.
//!
//! Failing cases are kept in `proptest-regressions/` and replayed first. `PROPTEST_CASES`
//! scales the number of cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use capring_harness::check_cmd::judge;
use capring_harness::profile::Profile;
use capring_harness::scenario::{Scenario, ScenarioFaults, Target};
use capring_spec::catalog::Catalog;
use capring_spec::clauses::Level;
use capring_spec::facts::{self, EnvFacts};
use capring_spec::options::{self, CapEnv};
use capring_spec::oracle::{self, EXIT_USAGE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tracer_binary() -> PathBuf {
    let profile = Profile::load(&root().join("fixtures/tracers/ref-tracer.toml")).expect("profile");
    profile
        .resolve_program(&profile.binary)
        .unwrap_or_else(|e| panic!("{e}: build the workspace first (cargo build --workspace)"))
}

fn cap_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u8..=40).prop_map(|n| capring_spec::caps::Cap::new(n).unwrap().name()),
        2 => (0u8..=40).prop_map(|n| capring_spec::caps::Cap::new(n).unwrap().name().to_uppercase()),
        2 => (0u8..=40).prop_map(|n| capring_spec::caps::Cap::new(n).unwrap().name().trim_start_matches("cap_").to_string()),
        1 => (0u8..=63).prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["cap_sys_admn", "cap_nope", "CAP_", "sys-admin", "64", "-1", " cap_kill "]).prop_map(String::from),
    ]
}

fn cap_list() -> impl Strategy<Value = String> {
    prop::collection::vec(cap_name(), 0..4).prop_map(|v| v.join(","))
}

fn bypass_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1", "0", "true", "false", "yes", "", "True"]).prop_map(String::from)
}

fn cap_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => cap_list().prop_map(|l| format!("add={l}")),
        3 => cap_list().prop_map(|l| format!("drop={l}")),
        2 => bypass_value().prop_map(|v| format!("bypass={v}")),
        1 => Just("help".to_string()),
        1 => prop::sample::select(vec!["frob=1", "bypass", "ADD=cap_kill", "add"]).prop_map(String::from),
    ]
}

fn env_value(list: bool) -> impl Strategy<Value = Option<String>> {
    if list {
        prop::option::weighted(0.3, cap_list()).boxed()
    } else {
        prop::option::weighted(0.3, bypass_value()).boxed()
    }
}

fn events() -> impl Strategy<Value = Vec<String>> {
    let names = vec![
        "execve",
        "openat",
        "module_load",
        "sched_process_exec",
        "net_packet",
        "exec",
    ];
    prop::sample::subsequence(names, 1..=3).prop_map(|v| v.into_iter().map(String::from).collect())
}

#[derive(Debug, Clone)]
struct Case {
    values: Vec<String>,
    env: CapEnv,
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
            env: CapEnv { bypass, add, drop },
            events,
        })
}

fn run_print_rings(bin: &Path, c: &Case) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("--events")
        .arg(c.events.join(","))
        .arg("--print-rings");
    for v in &c.values {
        cmd.arg("--capabilities").arg(v);
    }
    for (k, v) in [
        (options::ENV_BYPASS, &c.env.bypass),
        (options::ENV_ADD, &c.env.add),
        (options::ENV_DROP, &c.env.drop),
    ] {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("ref-tracer runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn check_case(bin: &Path, facts: &EnvFacts, c: &Case) -> Result<(), TestCaseError> {
    let (code, stdout, stderr) = run_print_rings(bin, c);
    prop_assert!(!stderr.contains("panicked"), "panic: {}", stderr);
    let expected =
        options::parse_and_resolve(&c.values, &c.env, facts.cap_last_cap, &facts.kernel_release)
            .and_then(|o| oracle::evaluate(&o, &c.events, &Catalog::builtin(), facts));
    match expected {
        Err(e) => {
            prop_assert_eq!(
                code,
                Some(EXIT_USAGE),
                "oracle: usage error {}; stderr {}",
                e,
                stderr
            );
            prop_assert_eq!(stderr.trim().lines().count(), 1, "one line: {}", stderr);
        }
        Ok(oracle::Outcome::Help) => {
            prop_assert_eq!(code, Some(0));
            prop_assert!(stdout.contains("cap_chown"), "help lists capabilities");
        }
        Ok(outcome) => {
            prop_assert_eq!(code, Some(outcome.exit_code()), "stderr {}", stderr);
            let doc: serde_json::Value = serde_json::from_str(&stdout)
                .map_err(|e| TestCaseError::fail(format!("{e}: {stdout}")))?;
            prop_assert_eq!(&doc["result"], &serde_json::to_value(&outcome).unwrap());
        }
    }
    Ok(())
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
fn print_rings_agrees_with_the_oracle() {
    let bin = tracer_binary();
    let facts = facts::probe().expect("facts");
    runner(cases(96))
        .run(&case(), |c| check_case(&bin, &facts, &c))
        .unwrap();
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
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
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
            let outcome = capring_harness::check_cmd::run_scenario(&profile, &s, &base, true);
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
