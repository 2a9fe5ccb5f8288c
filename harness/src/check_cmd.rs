//! `capring check`: run the scenario catalog against a tracer profile and judge every
//! clause. Exits non-zero when a MUST clause fails (unless the profile expects it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capring_spec::facts;

use crate::checks::{self, Verdict};
use crate::profile::Profile;
use crate::report::{ClauseResult, Report};
use crate::run::{self, RunRecord, Skip};
use crate::scenario::{self, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Junit,
    Tap,
}

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
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Also write results.json, report.tap, junit.xml, timelines/<scenario>.json and
    /// summaries/<scenario>.json (the per-kernel snapshot material) here.
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
}

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

/// A scenario with what running it gave.
pub type ScenarioRun = (Scenario, Result<RunRecord, Skip>);

/// Judges one run into clause results (expected failures applied).
pub fn judge(
    profile: &Profile,
    s: &Scenario,
    outcome: &Result<RunRecord, Skip>,
    base: &facts::EnvFacts,
) -> Vec<ClauseResult> {
    s.clauses
        .iter()
        .map(|clause| {
            let (verdict, expected, observed) = match outcome {
                Ok(rec) => {
                    let c = checks::check(clause, rec);
                    (c.verdict, c.expected, c.observed)
                }
                Err(Skip::NotApplicable(why)) => {
                    (Verdict::NotApplicable, String::new(), why.clone())
                }
                Err(Skip::Harness(why)) => (
                    Verdict::Fail,
                    "the scenario runs".to_string(),
                    format!("harness error: {why}"),
                ),
            };
            let expected_failure = profile
                .expected_failure(clause, &s.name, base)
                .map(|x| x.reason.clone());
            ClauseResult {
                scenario: s.name.clone(),
                clause: clause.clone(),
                level: checks::level(clause),
                verdict,
                expected_failure,
                expected,
                observed,
            }
        })
        .collect()
}

/// Where [`run_catalog`] is: a scenario starts, or one finished (with its wall time and its
/// verdicts).
pub enum Progress<'a> {
    Start {
        index: usize,
        total: usize,
        name: &'a str,
    },
    Done {
        index: usize,
        total: usize,
        name: &'a str,
        elapsed: std::time::Duration,
        results: &'a [ClauseResult],
    },
}

/// Runs the selected scenarios, `jobs` at a time (those that [`Scenario::runs_alone`] with
/// nothing next to them), in catalog order; returns the report and the raw runs in that order.
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
        let (index, name) = (i + 1, s.name.as_str());
        progress(Progress::Start { index, total, name });
        let started = std::time::Instant::now();
        let outcome = run::run_with(profile, s, &base, observe);
        let judged = judge(profile, s, &outcome, &base);
        progress(Progress::Done {
            index,
            total,
            name,
            elapsed: started.elapsed(),
            results: &judged,
        });
        (judged, outcome)
    });
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for (s, (judged, outcome)) in scenarios.iter().zip(done) {
        results.extend(judged);
        runs.push((s.clone(), outcome));
    }
    Ok((
        Report {
            tracer: profile.name.clone(),
            feature_key: base.feature_key(),
            kernel: base.kernel_release.clone(),
            results,
        },
        runs,
    ))
}

/// `timelines/<scenario>.json`, serialized straight from the run (no intermediate JSON tree:
/// under emulation building one doubled the time to write the catalog's outputs).
#[derive(serde::Serialize)]
struct TimelineDoc<'a> {
    scenario: &'a str,
    feature_key: String,
    expectation: &'a run::Expectation,
    exit: &'a crate::launch::ExitInfo,
    stdout_lines: usize,
    stderr: &'a str,
    timeline: &'a crate::timeline::Timeline,
}

pub fn write_outputs(dir: &Path, report: &Report, runs: &[ScenarioRun]) -> Result<()> {
    let tl = dir.join("timelines");
    let sm = dir.join("summaries");
    for d in [&tl, &sm] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.tap"), report.tap())?;
    std::fs::write(dir.join("junit.xml"), report.junit())?;
    for (s, r) in runs {
        if let Ok(rec) = r {
            let doc = TimelineDoc {
                scenario: &s.name,
                feature_key: rec.facts.feature_key(),
                expectation: &rec.expectation,
                exit: &rec.observation.exit,
                stdout_lines: rec.observation.stdout_lines.len(),
                stderr: &rec.observation.stderr,
                timeline: &rec.observation.timeline,
            };
            // Compact: a timeline holds every thread's sets at every entry (megabytes pretty
            // printed, slow to write and to send from a VM); `jq .` shows it indented.
            std::fs::write(
                tl.join(format!("{}.json", s.name)),
                serde_json::to_vec(&doc)?,
            )?;
            let summary = crate::snapshot::summarize(rec);
            std::fs::write(
                sm.join(format!("{}.json", s.name)),
                serde_json::to_string_pretty(&summary)?,
            )?;
        }
    }
    Ok(())
}

/// Bad input: one line, exit 2.
fn input_error(message: impl std::fmt::Display) -> Result<i32> {
    eprintln!("capring: {message}");
    Ok(2)
}

pub fn execute(args: &CheckArgs) -> Result<i32> {
    let profile = match Profile::load(&args.tracer) {
        Ok(p) => p,
        Err(e) => return input_error(e),
    };
    let all = match load_scenarios(args.scenarios.as_deref()) {
        Ok(s) => s,
        Err(e) => return input_error(format!("{e:#}")),
    };
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
        return input_error(format!(
            "no scenario matches {:?} (see `capring scenarios`)",
            args.scenario
        ));
    }
    let started = std::time::Instant::now();
    let jobs = usize::from(args.jobs);
    let (report, runs) = run_catalog(&profile, &selected, !args.no_observe, jobs, |p| match p {
        Progress::Start { index, total, name } => eprintln!("capring: [{index}/{total}] {name}"),
        Progress::Done {
            index,
            total,
            name,
            elapsed,
            results,
        } => {
            let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
            eprintln!(
                "capring: [{index}/{total}] {name}: {} pass, {} fail, {} n/a ({:.2} s)",
                count(Verdict::Pass),
                count(Verdict::Fail),
                count(Verdict::NotApplicable),
                elapsed.as_secs_f64()
            );
        }
    })?;
    match args.format {
        Format::Human => print!("{}", report.human()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Junit => print!("{}", report.junit()),
        Format::Tap => print!("{}", report.tap()),
    }
    if let Some(dir) = &args.out {
        let writing = std::time::Instant::now();
        write_outputs(dir, &report, &runs)?;
        eprintln!(
            "capring: wrote {} in {:.2} s",
            dir.display(),
            writing.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "capring: {} ({:.1} s)",
        report.summary(),
        started.elapsed().as_secs_f64()
    );
    Ok(if report.failed_must().is_empty() {
        0
    } else {
        1
    })
}
