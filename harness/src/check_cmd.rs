//! `capring check`: run the scenario catalog against a tracer profile and judge every
//! clause. Exits non-zero when a MUST clause fails (unless the profile expects it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::catalog::{check_programs, load_scenarios, run_catalog, Outcome, Progress, ScenarioRun};
use crate::checks::Verdict;
use crate::profile::Profile;
use crate::results::Report;
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
