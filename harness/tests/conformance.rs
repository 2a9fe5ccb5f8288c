//! The conformance suite run on this host, one test per scenario and per mutant:
//!
//! * `scenario::NAME`: the reference tracer passes every MUST clause of the scenario, and the
//!   run's capability summary matches `snapshots/` for this environment's feature key
//!   (`cargo insta review` accepts changes).
//! * `mutant::NAME`: the mutant fails by the clause `fixtures/mutants/mutants.toml` expects.
//!
//! Needs root (CI runs as root): without it every test fails, loudly.

use std::path::{Path, PathBuf};

use capring_judge::catalog::{judge, run_scenario, Outcome};
use capring_judge::checks::Verdict;
use capring_judge::profile::Profile;
use capring_judge::{mutants, scenario, snapshot};
use capring_spec::clauses::Level;
use libtest_mimic::{Arguments, Failed, Trial};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require_root() -> Result<(), Failed> {
    if !capring_spec::sys::is_root() {
        return Err("this test needs root (CI runs as root)".into());
    }
    Ok(())
}

fn require_binaries(profile: &Profile) -> Result<(), Failed> {
    capring_judge::catalog::check_programs(profile)
        .map_err(|e| format!("{e}: build the workspace first (cargo build --workspace)").into())
}

fn scenario_trial(s: scenario::Scenario) -> Result<(), Failed> {
    require_root()?;
    let profile = Profile::load(&root().join("fixtures/tracers/ref-tracer.toml"))
        .map_err(|e| e.to_string())?;
    require_binaries(&profile)?;
    let base = capring_spec::facts::probe().map_err(|e| e.to_string())?;
    let outcome = run_scenario(&profile, &s, &base, true);
    let results = judge(&profile, &s, &outcome, &base);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.counts_as_failure() && r.level == Level::Must)
        .map(|r| {
            format!(
                "{}: expected {} → observed {}",
                r.clause, r.expected, r.observed
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(format!("MUST clauses failed:\n  {}", failed.join("\n  ")).into());
    }
    let record = match outcome {
        Outcome::Ran(r) => match *r {
            Ok(rec) => rec,
            Err(e) => return Err(format!("scenario {} did not run: {e}", s.name).into()),
        },
        // The reference has every interface and every role: a scenario it cannot run here
        // (no tracefs, no cgroup v2) is a failure of this machine's set-up, not a pass.
        Outcome::NoPlan(no) => {
            let all_na = results.iter().all(|r| r.verdict == Verdict::NotApplicable);
            return Err(format!(
                "scenario {} has no plan here ({no:?}; all N/A: {all_na})",
                s.name
            )
            .into());
        }
    };
    let summary = snapshot::summarize(&record);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_snapshot_suffix(record.plan.facts.feature_key());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = s.name.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_json_snapshot!(name, summary))
    }))
    .map_err(|_| {
        Failed::from("the capability summary differs from snapshots/ (run `cargo insta review`)")
    })
}

fn mutant_trial(m: mutants::Mutant) -> Result<(), Failed> {
    require_root()?;
    let profile = Profile::load(&root().join("fixtures/mutants/ref-tracer-mutant.toml"))
        .map_err(|e| e.to_string())?;
    require_binaries(&profile)?;
    let results = mutants::run_all(
        &profile,
        &root().join("fixtures/mutants"),
        std::slice::from_ref(&m),
        &scenario::builtin(),
        |_| {},
    )
    .map_err(|e| format!("{e:#}"))?;
    let r = &results[0];
    if r.caught {
        println!(
            "{} caught by {} (failed: {})",
            m.name,
            m.expected_clause,
            r.failed.join(", ")
        );
        Ok(())
    } else {
        Err(format!(
            "control {} ({}) was NOT caught by {} ({}); failed clauses: [{}]{}",
            m.name,
            m.fault,
            m.expected_clause,
            r.expected_verdict,
            r.failed.join(", "),
            r.problem
                .as_ref()
                .map(|p| format!("; it does not count: {p}"))
                .unwrap_or_default()
        )
        .into())
    }
}

/// The controls of `mutants.toml`. Until `mutants::Mutant` knows the `also_fails` and
/// `may_fail` lists, they are set aside here so that the rest of each entry still parses.
fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = scenario::builtin()
        .into_iter()
        .map(|s| Trial::test(format!("scenario::{}", s.name), move || scenario_trial(s)))
        .collect();
    let list = mutants::load(&root().join("fixtures/mutants/mutants.toml"))
        .expect("fixtures/mutants/mutants.toml parses");
    trials.extend(
        list.into_iter()
            .map(|m| Trial::test(format!("mutant::{}", m.name), move || mutant_trial(m))),
    );
    libtest_mimic::run(&args, trials).exit();
}
