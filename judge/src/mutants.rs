//! Proving the suite can fail: run each negative control of `fixtures/mutants/mutants.toml`
//! in its scenario and check that it fails by the expected clause — for the right reason.
//!
//! A control is caught only when its run really happened: a run that errored in the harness,
//! or a tracer that crashed (killed by a signal capring did not send, or a Rust panic), makes
//! every clause look failed without proving anything, so it counts as *not* caught. Every
//! other clause the control fails must be listed in its entry (`also_fails`, with the
//! reason), and every clause listed there must fail: a control that fails for a different
//! reason than intended shows, and so does a check that went blind. Clauses that fail only
//! sometimes (a sample landing in a short window) go in `may_fail`.

use std::path::Path;

use anyhow::{Context, Result};
use capring_spec::facts;
use serde::{Deserialize, Serialize};

use crate::catalog::{judge, run_scenario, Outcome};
use crate::profile::Profile;
use crate::scenario::Scenario;

/// A clause a control fails besides the one it exists for (`also_fails`, `may_fail`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlsoFails {
    /// The clause id.
    pub clause: String,
    /// Why the fault makes it fail (or only sometimes).
    pub reason: String,
}

/// One negative control (`[[mutant]]` of `fixtures/mutants/mutants.toml`): the reference with
/// one deliberate fault, and the clause that must catch it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// The fault's name, unique; the run passes it to the faulty build as `CAPRING_MUTANT`.
    pub name: String,
    /// What the faulty tracer does, as its author would have written it.
    pub fault: String,
    /// The scenario it runs in.
    pub scenario: String,
    /// The clause the control exists for: it must fail.
    pub expected_clause: String,
    /// Other clauses this control fails in its scenario, and why.
    #[serde(default)]
    pub also_fails: Vec<AlsoFails>,
    /// Clauses it may fail or not, depending on timing (a sample that lands in a short
    /// window), and why.
    #[serde(default)]
    pub may_fail: Vec<AlsoFails>,
    /// The profile to run it with, relative to the catalog (default: the `--tracer` one).
    #[serde(default)]
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    mutant: Vec<Mutant>,
}

/// What running one control gave.
#[derive(Debug, Clone, Serialize)]
pub struct MutantResult {
    /// The control.
    pub mutant: Mutant,
    /// Clauses that failed in the mutant's scenario.
    pub failed: Vec<String>,
    /// The expected clause failed, the run proves something (no crash, no harness error),
    /// and the other failures match the entry: every `also_fails` clause failed, and none
    /// that is neither there nor in `may_fail`.
    pub caught: bool,
    /// What the expected clause itself said (verdict and observation).
    pub expected_verdict: String,
    /// Why the control does not count, when it does not.
    pub problem: Option<String>,
    /// The run itself, for `capring mutants --out`.
    #[serde(skip)]
    pub record: Option<Box<crate::run::RunRecord>>,
}

/// The controls of a catalog file, each clause it names checked against SPEC.md.
pub fn load(path: &Path) -> Result<Vec<Mutant>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let clauses = capring_spec::clauses::all();
    for m in &file.mutant {
        let listed = m.also_fails.iter().chain(&m.may_fail).map(|a| &a.clause);
        for c in std::iter::once(&m.expected_clause).chain(listed) {
            anyhow::ensure!(
                clauses.iter().any(|k| &k.id == c),
                "{}: mutant {} names unknown clause {c}",
                path.display(),
                m.name
            );
        }
    }
    Ok(file.mutant)
}

/// Why a run proves nothing, if it does not.
fn run_problem(outcome: &Outcome) -> Option<String> {
    let rec = match outcome {
        Outcome::NoPlan(no) => return Some(format!("no run: {no:?}")),
        Outcome::Ran(r) => match r.as_ref() {
            Err(e) => return Some(e.to_string()),
            Ok(rec) => rec,
        },
    };
    let exit = &rec.observation.exit;
    if exit.interrupted {
        return Some("capring was interrupted".into());
    }
    if let (Some(sig), false, false) = (exit.signal, exit.stopped_by_harness, exit.timed_out) {
        return Some(format!("the tracer crashed: {exit} (signal {sig})"));
    }
    if rec.observation.stderr().contains("panicked at") {
        return Some("the tracer panicked".into());
    }
    None
}

/// Runs one control.
fn run_one(
    profile: &Profile,
    m: &Mutant,
    scenarios: &[Scenario],
    base: &facts::EnvFacts,
) -> Result<MutantResult> {
    let mut scenario = scenarios
        .iter()
        .find(|s| s.name == m.scenario)
        .with_context(|| format!("mutant {}: no scenario named {}", m.name, m.scenario))?
        .clone();
    let listed = m.also_fails.iter().chain(&m.may_fail).map(|a| &a.clause);
    for c in std::iter::once(&m.expected_clause).chain(listed) {
        if !scenario.clauses.contains(c) {
            scenario.clauses.push(c.clone());
        }
    }
    let mut p = profile.clone();
    p.env.insert("CAPRING_MUTANT".into(), m.name.clone());
    let outcome = run_scenario(&p, &scenario, base, true);
    let results = judge(&p, &scenario, &outcome, base);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.verdict.is_failure())
        .map(|r| r.clause.clone())
        .collect();
    let expected_verdict = results
        .iter()
        .find(|r| r.clause == m.expected_clause)
        .map(|r| format!("{}: {}", r.label(), r.observed))
        .unwrap_or_else(|| "not judged".into());
    let unlisted: Vec<&String> = failed
        .iter()
        .filter(|c| {
            **c != m.expected_clause
                && !m
                    .also_fails
                    .iter()
                    .chain(&m.may_fail)
                    .any(|a| &a.clause == *c)
        })
        .collect();
    let stale: Vec<&String> = m
        .also_fails
        .iter()
        .map(|a| &a.clause)
        .filter(|c| !failed.contains(*c))
        .collect();
    let problem = run_problem(&outcome)
        .or_else(|| {
            (!unlisted.is_empty())
                .then(|| format!("it also fails clauses its entry does not list: {unlisted:?}"))
        })
        .or_else(|| {
            (!stale.is_empty()).then(|| {
                format!(
                    "its entry says it also fails {stale:?}, which passed (a stale entry, or a blind check)"
                )
            })
        });
    let record = match outcome {
        Outcome::Ran(r) => r.ok().map(Box::new),
        Outcome::NoPlan(_) => None,
    };
    Ok(MutantResult {
        caught: problem.is_none() && failed.contains(&m.expected_clause),
        expected_verdict,
        mutant: m.clone(),
        failed,
        problem,
        record,
    })
}

/// Runs every given control with `profile` (or the control's own profile, resolved against
/// `catalog_dir`).
pub fn run_all(
    profile: &Profile,
    catalog_dir: &Path,
    mutants: &[Mutant],
    scenarios: &[Scenario],
    mut progress: impl FnMut(&str),
) -> Result<Vec<MutantResult>> {
    let base = facts::probe().context("probing the environment")?;
    let mut out = Vec::new();
    for m in mutants {
        if capring_observe::interrupt::requested().is_some() {
            break;
        }
        progress(&m.name);
        let own;
        let p = match &m.profile {
            Some(rel) => {
                own = Profile::load(&catalog_dir.join(rel)).map_err(|e| anyhow::anyhow!("{e}"))?;
                &own
            }
            None => profile,
        };
        let result = run_one(p, m, scenarios, &base);
        if result.is_err() {
            crate::run::TracefsMount::restore();
        }
        out.push(result?);
    }
    crate::run::TracefsMount::restore();
    Ok(out)
}

/// The human table of `capring mutants`: one row per control; a control not caught gets
/// what its clause said and why it does not count.
pub fn table(results: &[MutantResult]) -> String {
    let mut s = format!(
        "{:<28} {:<34} {:<7} failed clauses\n",
        "control", "expected clause", "caught"
    );
    for r in results {
        s.push_str(&format!(
            "{:<28} {:<34} {:<7} {}\n",
            r.mutant.name,
            r.mutant.expected_clause,
            if r.caught { "yes" } else { "NO" },
            r.failed.join(", ")
        ));
        if !r.caught {
            s.push_str(&format!(
                "{:<28} {} said: {}\n",
                "", r.mutant.expected_clause, r.expected_verdict
            ));
            if let Some(p) = &r.problem {
                s.push_str(&format!("{:<28} does not count: {p}\n", ""));
            }
        }
    }
    s
}
