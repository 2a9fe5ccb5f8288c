//! `capring check`: run the scenario catalog against a tracer profile and judge every
//! clause. Exits non-zero when a MUST clause fails (unless the profile expects it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capring_spec::facts::{self, EnvFacts};

use crate::checks::{self, Check, Verdict};
use crate::plan::{self, NoPlan};
use crate::profile::Profile;
use crate::report::{ClauseResult, Report};
use crate::run::{self, RunRecord, Skip, TracefsMount};
use crate::scenario::{self, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
    Junit,
    Tap,
}

/// `capring check`'s options (the subcommand's help text is in the binary).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The tracer profile (TOML; see harness/PROFILE.md).
    #[arg(long, value_name = "PROFILE")]
    pub tracer: PathBuf,
    /// Only scenarios whose name matches this glob (`*`, `?`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub scenario: Vec<String>,
    /// A scenario catalog other than the built-in one.
    #[arg(long, value_name = "FILE")]
    pub scenarios: Option<PathBuf>,
    /// Also write results.json, report.tap, junit.xml, runs/<scenario>.json (each run's plan
    /// and timeline, readable back by `RunRecord::load`) and summaries/<scenario>.json (the
    /// per-kernel snapshot material) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Launch the same runs without ptrace. Only for overhead benchmarks
    /// (`cargo xtask bench harness`): clauses that need the timeline then fail.
    #[arg(long)]
    pub no_observe: bool,
    /// Scenarios run at once. Scenarios that change or judge machine-wide state
    /// (perf_event_paranoid, injected drop failures) always run alone. Timing clauses
    /// (convergence windows, time with a non-empty effective set) assume a CPU per run: keep
    /// N at or below the CPU count.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// How the report is shown.
    #[command(flatten)]
    pub output: crate::report_cmd::OutputArgs,
}

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
/// `minimize::table::for_plan`).
pub fn run_scenario(profile: &Profile, s: &Scenario, base: &EnvFacts, observe: bool) -> Outcome {
    match plan::plan(profile, s, base) {
        Err(no) => Outcome::NoPlan(no),
        Ok(mut p) => {
            p.measured = crate::minimize::table::for_plan(profile, &p);
            Outcome::Ran(Box::new(run::execute(&p, observe)))
        }
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
        if crate::interrupt::requested().is_some() {
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
            interrupted: crate::interrupt::requested().is_some(),
        },
        runs,
    ))
}

pub(crate) fn write_outputs(dir: &Path, report: &Report, runs: &[ScenarioRun]) -> Result<()> {
    let runs_dir = dir.join("runs");
    let sm = dir.join("summaries");
    for d in [&runs_dir, &sm] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.tap"), report.tap())?;
    std::fs::write(dir.join("junit.xml"), report.junit())?;
    for (s, outcome) in runs {
        let Outcome::Ran(r) = outcome else { continue };
        let Ok(rec) = r.as_ref() else { continue };
        // Compact: a run holds every thread's sets at every entry (megabytes pretty printed,
        // slow to write and to send from a VM); `jq .` shows it indented.
        std::fs::write(
            runs_dir.join(format!("{}.json", s.name)),
            serde_json::to_vec(rec)?,
        )?;
        std::fs::write(
            sm.join(format!("{}.json", s.name)),
            serde_json::to_string_pretty(&crate::snapshot::summarize(rec))?,
        )?;
    }
    Ok(())
}

/// Bad input: one line, exit 2.
fn input_error(message: impl std::fmt::Display) -> Result<i32> {
    eprintln!("capring: {message}");
    Ok(2)
}

/// The selected scenarios, or the bad-input message.
fn select(args: &CheckArgs) -> Result<Vec<Scenario>, String> {
    let all = load_scenarios(args.scenarios.as_deref()).map_err(|e| format!("{e:#}"))?;
    let selected: Vec<Scenario> = if args.scenario.is_empty() {
        all
    } else {
        all.into_iter()
            .filter(|s| {
                args.scenario
                    .iter()
                    .any(|g| scenario::glob_match(g, &s.name))
            })
            .collect()
    };
    if selected.is_empty() {
        return Err(format!(
            "no scenario matches {:?} (see `capring scenarios`)",
            args.scenario
        ));
    }
    Ok(selected)
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

fn print_progress(p: Progress<'_>) {
    match p {
        Progress::Start { index, total, name } => eprintln!("capring: [{index}/{total}] {name}"),
        Progress::Done {
            index,
            total,
            name,
            elapsed,
            results,
        } => {
            let count = |f: fn(Verdict) -> bool| results.iter().filter(|r| f(r.verdict)).count();
            eprintln!(
                "capring: [{index}/{total}] {name}: {} pass, {} fail, {} n/a ({:.2} s)",
                count(|v| v == Verdict::Pass),
                count(Verdict::is_failure),
                count(|v| v == Verdict::NotApplicable),
                elapsed.as_secs_f64()
            );
        }
    }
}

/// `--html` and `--perfetto`.
fn write_pictures(args: &CheckArgs, report: &Report, runs: &[ScenarioRun]) -> Result<()> {
    use crate::report_cmd::{records_of_runs, views_of_runs, write_html, write_perfetto_dir};
    if let Some(path) = &args.output.html {
        write_html(path, report, || views_of_runs(runs), args.output.quiet)?;
    }
    if let Some(dir) = &args.output.perfetto {
        write_perfetto_dir(dir, report, &records_of_runs(runs))?;
    }
    Ok(())
}

/// `capring check`. Returns the exit code: 0 when no MUST clause failed unexpectedly, 1 when
/// one did, 2 on bad input (after one line on stderr), 128 + the signal when interrupted.
pub fn execute(args: &CheckArgs) -> Result<i32> {
    let profile = match Profile::load(&args.tracer) {
        Ok(p) => p,
        Err(e) => return input_error(e),
    };
    if let Err(e) = check_programs(&profile) {
        return input_error(e);
    }
    let selected = match select(args) {
        Ok(s) => s,
        Err(e) => return input_error(e),
    };
    crate::interrupt::install().context("installing the SIGINT/SIGTERM handlers")?;
    let started = std::time::Instant::now();
    let jobs = usize::from(args.jobs);
    let progress = |p: Progress<'_>| {
        if !args.output.quiet {
            print_progress(p)
        }
    };
    let (report, runs) = run_catalog(&profile, &selected, !args.no_observe, jobs, progress)?;
    crate::report_cmd::print_report(
        &report,
        args.output.format,
        args.output.color,
        args.output.quiet,
    )?;
    if let Some(dir) = &args.out {
        let writing = std::time::Instant::now();
        write_outputs(dir, &report, &runs)?;
        if !args.output.quiet {
            eprintln!(
                "capring: wrote {} in {:.2} s",
                dir.display(),
                writing.elapsed().as_secs_f64()
            );
        }
    }
    write_pictures(args, &report, &runs)?;
    if !args.output.quiet {
        eprintln!(
            "capring: {} ({:.1} s)",
            report.summary(),
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(sig) = crate::interrupt::requested() {
        return Ok(crate::interrupt::exit_code(sig));
    }
    Ok(if report.failed_must().is_empty() {
        0
    } else {
        1
    })
}
