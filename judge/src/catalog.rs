//! Running the scenario catalog and judging it: the producer of results that `capring
//! check`, `capring report`, `capring mutants` and the host tests share.
//!
//! Why a module of its own: the command-line code used to hold this (scenario loading, the
//! plan → run → judge loop, the result types), so the negative controls and the reports
//! imported a subcommand to get at it. Here a scenario's [`Outcome`] is planned
//! ([`crate::plan`], measurement included), run ([`crate::run`]) and judged
//! ([`crate::checks`]) into [`ClauseResult`]s; how they are shown is another crate's
//! business.

use std::path::Path;

use anyhow::{Context, Result};
use capring_spec::facts::{self, EnvFacts};

use crate::checks::{self, Check, Verdict};
use crate::measured;
use crate::plan::{self, NoPlan};
use crate::profile::Profile;
use crate::results::{ClauseResult, Report};
use crate::run::{self, RunRecord, Skip, TracefsMount};
use crate::scenario::{self, Scenario};

/// The scenario catalog at `path` (`--scenarios`), else the built-in one.
pub fn load_scenarios(path: Option<&Path>) -> Result<Vec<Scenario>> {
    Ok(match path {
        None => scenario::builtin(),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            scenario::parse(&text, p)?
        }
    })
}

/// What one scenario gave: its plan (or why it has none) and, when it ran, the record.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It could not be planned: unsupported by the profile, not applicable here, or bad
    /// input.
    NoPlan(NoPlan),
    /// It was planned and launched: the record, or why the run was skipped (boxed: a record
    /// holds a whole timeline).
    Ran(Box<Result<RunRecord, Skip>>),
}

/// A scenario with what running it gave.
pub type ScenarioRun = (Scenario, Outcome);

/// Judges one clause of a scenario's outcome.
fn check_one(clause: &str, outcome: &Outcome) -> Check {
    let na = |why: String| Check {
        verdict: Verdict::NotApplicable,
        expected: String::new(),
        observed: why,
        at_ns: None,
    };
    match outcome {
        Outcome::NoPlan(NoPlan::Unsupported(missing)) => checks::unsupported(clause, missing),
        Outcome::NoPlan(NoPlan::NotApplicable(why)) => na(format!("not applicable: {why}")),
        Outcome::NoPlan(NoPlan::BadInput(why)) => Check {
            verdict: Verdict::Fail,
            expected: "the scenario runs".into(),
            observed: format!("bad input: {why}"),
            at_ns: None,
        },
        Outcome::Ran(r) => match r.as_ref() {
            Ok(rec) => checks::check(clause, rec),
            Err(Skip::NotApplicable(why)) => na(why.clone()),
            Err(Skip::Harness(why)) => Check {
                verdict: Verdict::Fail,
                expected: "the scenario runs".into(),
                observed: format!("harness error: {why}"),
                at_ns: None,
            },
        },
    }
}

/// Judges one scenario's outcome into clause results (expected failures applied).
pub fn judge(
    profile: &Profile,
    s: &Scenario,
    outcome: &Outcome,
    base: &EnvFacts,
) -> Vec<ClauseResult> {
    let strict = profile.level == crate::profile::LevelChoice::Strict;
    s.clauses
        .iter()
        .map(|clause| {
            let c = check_one(clause, outcome);
            let expected_failure = profile
                .expected_failure(clause, &s.name, base)
                .map(|x| x.reason.clone());
            ClauseResult {
                scenario: s.name.clone(),
                clause: clause.clone(),
                level: checks::level(clause, strict),
                verdict: c.verdict,
                expected_failure,
                expected: c.expected,
                observed: c.observed,
                at_ns: c.at_ns,
            }
        })
        .collect()
}

/// Plans and runs one scenario, with the measured minimal sets that apply to it (see
/// [`measured::lookup`]).
pub fn run_scenario(profile: &Profile, s: &Scenario, base: &EnvFacts, observe: bool) -> Outcome {
    let measure = |facts: &EnvFacts, events: &[String]| measured::lookup(profile, facts, events);
    let options = plan::Options {
        measure: Some(&measure),
        max_timeout: None,
    };
    match plan::plan(profile, s, base, options) {
        Err(no) => Outcome::NoPlan(no),
        Ok(p) => Outcome::Ran(Box::new(run::execute(&p, observe))),
    }
}

/// Where [`run_catalog`] is: a scenario starts, or one finished (with its wall time and its
/// verdicts).
pub enum Progress<'a> {
    /// A scenario is about to run.
    Start {
        /// Its position among the selected scenarios, from 1.
        index: usize,
        /// How many scenarios were selected.
        total: usize,
        /// The scenario's name.
        name: &'a str,
    },
    /// A scenario ran and was judged.
    Done {
        /// Its position among the selected scenarios, from 1.
        index: usize,
        /// How many scenarios were selected.
        total: usize,
        /// The scenario's name.
        name: &'a str,
        /// Planning, running and judging it took this long.
        elapsed: std::time::Duration,
        /// Its clause results.
        results: &'a [ClauseResult],
    },
}

/// Runs the selected scenarios, `jobs` at a time (those that [`Scenario::runs_alone`] with
/// nothing next to them), in catalog order; returns the report and the raw runs in that order.
/// Once capring is interrupted, scenarios not yet started are left out and the report says
/// it is partial.
pub fn run_catalog(
    profile: &Profile,
    scenarios: &[Scenario],
    observe: bool,
    jobs: usize,
    progress: impl Fn(Progress<'_>) + Sync,
) -> Result<(Report, Vec<ScenarioRun>)> {
    let base = facts::probe().context("probing the environment")?;
    let total = scenarios.len();
    let done = crate::schedule::run_ordered(scenarios, jobs, Scenario::runs_alone, |i, s| {
        if capring_observe::interrupt::requested().is_some() {
            return None;
        }
        let (index, name) = (i + 1, s.name.as_str());
        progress(Progress::Start { index, total, name });
        let started = std::time::Instant::now();
        let outcome = run_scenario(profile, s, &base, observe);
        let judged = judge(profile, s, &outcome, &base);
        progress(Progress::Done {
            index,
            total,
            name,
            elapsed: started.elapsed(),
            results: &judged,
        });
        Some((judged, outcome))
    });
    TracefsMount::restore();
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for (s, item) in scenarios.iter().zip(done) {
        if let Some((judged, outcome)) = item {
            results.extend(judged);
            runs.push((s.clone(), outcome));
        }
    }
    Ok((
        Report {
            tracer: profile.name.clone(),
            feature_key: base.feature_key(),
            kernel: base.kernel_release.clone(),
            results,
            interrupted: capring_observe::interrupt::requested().is_some(),
        },
        runs,
    ))
}

/// Programs the profile names that cannot be found make every scenario meaningless: that is
/// bad input, reported before anything runs.
pub fn check_programs(profile: &Profile) -> Result<(), String> {
    profile
        .resolve_program(&profile.binary)
        .map_err(|e| format!("{}: binary: {e}", profile.path.display()))?;
    if let Some(w) = &profile.workload {
        let commands = std::iter::once(&w.command).chain(w.per_event.values());
        for c in commands {
            if let Some(p) = c.first() {
                profile
                    .resolve_program(p)
                    .map_err(|e| format!("{}: workload: {e}", profile.path.display()))?;
            }
        }
    }
    if let Some(r) = &profile.rules_engine {
        profile
            .resolve_program(&r.binary)
            .map_err(|e| format!("{}: rules_engine.binary: {e}", profile.path.display()))?;
    }
    Ok(())
}

/// Judges recorded runs again (no profile: no expected failures); each run's results carry
/// its name.
pub fn judge_records(records: &[(String, RunRecord)]) -> Report {
    let results: Vec<ClauseResult> = records
        .iter()
        .flat_map(|(name, r)| {
            r.plan.scenario.clauses.iter().map(move |clause| {
                let c = checks::check(clause, r);
                ClauseResult {
                    scenario: name.clone(),
                    clause: clause.clone(),
                    level: checks::level(clause, r.plan.strict),
                    verdict: c.verdict,
                    expected_failure: None,
                    expected: c.expected,
                    observed: c.observed,
                    at_ns: c.at_ns,
                }
            })
        })
        .collect();
    // The facts of a run the scenario did not adjust are the machine's.
    let facts = records
        .iter()
        .map(|(_, r)| r)
        .find(|r| r.plan.bounding_drop.is_empty() && r.plan.paranoid.is_none())
        .or(records.first().map(|(_, r)| r))
        .map(|r| &r.plan.facts);
    Report {
        tracer: records
            .first()
            .map_or(String::new(), |(_, r)| r.plan.tracer.clone()),
        feature_key: facts.map_or(String::new(), |f| f.feature_key()),
        kernel: facts.map_or(String::new(), |f| f.kernel_release.clone()),
        results,
        interrupted: false,
    }
}
