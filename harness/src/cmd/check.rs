//! `capring check`: run the scenario catalog against a tracer profile and judge every
//! clause. Exits non-zero when a MUST clause fails (unless the profile expects it).

use std::path::PathBuf;

use anyhow::{Context, Result};
use capring_judge::catalog::{check_programs, load_scenarios, run_catalog, Progress, ScenarioRun};
use capring_judge::checks::Verdict;
use capring_judge::profile::Profile;
use capring_judge::results::Report;
use capring_judge::scenario::{self, Scenario};
use capring_observe::interrupt;
use capring_report::{outdir, views};

use super::input_error;
use super::output::OutputArgs;

/// `capring check`'s options (the subcommand's help text is in the binary).
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
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
    pub output: OutputArgs,
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
    use views::{records_of_runs, views_of_runs, write_html, write_perfetto_dir};
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
pub(crate) fn execute(args: &CheckArgs) -> Result<i32> {
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
    interrupt::install().context("installing the SIGINT/SIGTERM handlers")?;
    let started = std::time::Instant::now();
    let jobs = usize::from(args.jobs);
    let progress = |p: Progress<'_>| {
        if !args.output.quiet {
            print_progress(p)
        }
    };
    let (report, runs) = run_catalog(&profile, &selected, !args.no_observe, jobs, progress)?;
    args.output.print(&report)?;
    if let Some(dir) = &args.out {
        let writing = std::time::Instant::now();
        outdir::write_outputs(dir, &report, &runs)?;
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
    if let Some(sig) = interrupt::requested() {
        return Ok(interrupt::exit_code(sig));
    }
    Ok(if report.failed_must().is_empty() {
        0
    } else {
        1
    })
}
