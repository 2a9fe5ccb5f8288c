//! `capring report DIR`: the results of an earlier run, printed again and rendered as an HTML
//! page or Perfetto traces; and the output steps `check` and `observe` share with it.
//!
//! Why: a check in a VM or in CI leaves a `--out` directory (results.json and
//! runs/<scenario>.json); looking at it should not need root or a second run. A directory of
//! recorded runs without results.json (`fixtures/runs/reference/`) is judged again from the
//! runs, by the same checks.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::catalog::{judge_records, Outcome, ScenarioRun};
use crate::check_cmd::Format;
use crate::html::{self, Meta, ScenarioView};
use crate::lanes::{failure_marks, Lanes, RingSets};
use crate::perfetto::{self, TraceInfo};
use crate::report::TableStyle;
use crate::results::Report;
use crate::run::RunRecord;
use crate::Observation;

/// When the human table is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum ColorWhen {
    /// Only on a terminal (and not with NO_COLOR set).
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    fn choice(self) -> anstream::ColorChoice {
        match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        }
    }
}

/// How a judged report is shown: the same options for `capring check` and `capring report`,
/// so that a report read back later prints exactly as the run did.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Colour the human table: auto (only on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub(crate) color: ColorWhen,
    /// Quiet: the human table shows only the failures that count (nothing when all pass);
    /// no progress or summary on stderr. Other formats are printed whole.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write the HTML report (one self-contained page: verdicts, SPEC text, per-thread ring
    /// timelines) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write one Perfetto (Chrome Trace Event JSON) file per scenario into DIR.
    #[arg(long, value_name = "DIR")]
    pub perfetto: Option<PathBuf>,
}

/// `capring report`'s options (the subcommand's help text is in the binary).
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A `capring check --out` directory (results.json, runs/<scenario>.json), or a directory
    /// of recorded runs (*.json, *.json.gz) or one such file, which are judged again.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// How the report is shown.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Prints the report on standard output in `format`.
pub(crate) fn print_report(
    report: &Report,
    format: Format,
    color: ColorWhen,
    quiet: bool,
) -> Result<()> {
    let text = match format {
        Format::Human => report.table(TableStyle { paint: true, quiet }),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Junit => report.junit(),
        Format::Tap => report.tap(),
    };
    let mut out = anstream::AutoStream::new(std::io::stdout().lock(), color.choice());
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The sections of a check's scenarios, in catalog order.
pub(crate) fn views_of_runs(runs: &[ScenarioRun]) -> Vec<ScenarioView> {
    runs.iter()
        .map(|(s, outcome)| match outcome {
            Outcome::Ran(r) => match r.as_ref() {
                Ok(rec) => ScenarioView::of_record(&s.name, rec),
                Err(skip) => ScenarioView::not_run(&s.name, &s.description, skip.to_string()),
            },
            Outcome::NoPlan(no) => {
                ScenarioView::not_run(&s.name, &s.description, format!("no run: {no:?}"))
            }
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes the HTML page of a report; says on stderr how big it is and how long rendering
/// (the lanes of `views` included) took, unless `quiet`.
pub(crate) fn write_html(
    path: &Path,
    report: &Report,
    views: impl FnOnce() -> Vec<ScenarioView>,
    quiet: bool,
) -> Result<()> {
    let started = std::time::Instant::now();
    let page = html::page(&Meta::of_report(report), &report.results, &views());
    let rendered = started.elapsed();
    write_file(path, page.as_bytes())?;
    if !quiet {
        eprintln!(
            "capring: wrote {} ({} KiB, rendered in {:.1} ms)",
            path.display(),
            page.len() / 1024,
            rendered.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// A run and the name the report gives it: its scenario, or its file's name when several
/// runs of one scenario are reported together (a directory of negative controls).
pub(crate) type NamedRun<'r> = (&'r str, &'r RunRecord);

/// Writes `DIR/<name>.json`, one Perfetto trace per run.
pub(crate) fn write_perfetto_dir(
    dir: &Path,
    report: &Report,
    records: &[NamedRun<'_>],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, rec) in records {
        let lanes = Lanes::of_record(rec);
        let own = report.results.iter().filter(|r| r.scenario == *name);
        let failures = failure_marks(own, lanes.end_ns);
        let info = TraceInfo {
            tracer: report.tracer.clone(),
            scenario: name.to_string(),
            kernel: report.kernel.clone(),
            feature_key: report.feature_key.clone(),
        };
        let doc = perfetto::trace(&lanes, &failures, &info);
        write_file(
            &dir.join(format!("{name}.json")),
            &serde_json::to_vec(&doc)?,
        )?;
    }
    Ok(())
}

/// The records of a check's runs, named by their scenarios.
pub(crate) fn records_of_runs(runs: &[ScenarioRun]) -> Vec<NamedRun<'_>> {
    runs.iter()
        .filter_map(|(s, o)| match o {
            Outcome::Ran(r) => r.as_ref().as_ref().ok().map(|rec| (s.name.as_str(), rec)),
            Outcome::NoPlan(_) => None,
        })
        .collect()
}

/// `observe --html` / `--perfetto`: the timeline of one command, without a plan (only the
/// Privileged and Unprivileged rings are known) and without verdicts.
pub fn write_observation(
    obs: &Observation,
    command: &[String],
    html_path: Option<&Path>,
    perfetto_path: Option<&Path>,
) -> Result<()> {
    let facts = capring_spec::facts::probe().ok();
    let last = crate::observer::cap_last_cap();
    let lanes = Lanes::build(
        &obs.timeline,
        &RingSets::observed(&obs.timeline),
        obs.wall.as_nanos() as u64,
        last,
    );
    let cmd = command.join(" ");
    let kernel = facts
        .as_ref()
        .map_or("unknown".into(), |f| f.kernel_release.clone());
    let feature_key = facts.as_ref().map_or("unknown".into(), |f| f.feature_key());
    if let Some(path) = html_path {
        let meta = Meta {
            title: format!("capring observe: {cmd}"),
            tracer: command.first().cloned().unwrap_or_default(),
            kernel: kernel.clone(),
            feature_key: feature_key.clone(),
            summary: Some(format!("{} (no plan: only the Privileged ring, E = the root's first P, and the Unprivileged ring, E = ∅, are known)", obs.exit)),
        };
        let view = ScenarioView {
            name: "observe".into(),
            description: String::new(),
            command: command.to_vec(),
            exit: Some(obs.exit.to_string()),
            lanes: Some(lanes.clone()),
            note: None,
        };
        write_file(path, html::page(&meta, &[], &[view]).as_bytes())?;
    }
    if let Some(path) = perfetto_path {
        let info = TraceInfo {
            tracer: cmd,
            scenario: "observe".into(),
            kernel,
            feature_key,
        };
        let doc = perfetto::trace(&lanes, &[], &info);
        write_file(path, &serde_json::to_vec(&doc)?)?;
    }
    Ok(())
}

/// Why a directory cannot be reported on (bad input).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirError {
    #[error("{0}: no such directory or recorded run")]
    NotFound(PathBuf),
    #[error("{0}: neither results.json nor recorded runs (*.json, *.json.gz)")]
    Empty(PathBuf),
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
}

fn is_run_file(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    (name.ends_with(".json") || name.ends_with(".json.gz")) && name != "results.json"
}

/// A run file's name without `.json` / `.json.gz`.
fn run_name(p: &Path) -> String {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.strip_suffix(".json").unwrap_or(name).to_string()
}

/// The records of a directory (`DIR/runs/` when there is one, else DIR itself), named by
/// their files.
fn load_records(dir: &Path) -> Result<Vec<(String, RunRecord)>, DirError> {
    let runs = dir.join("runs");
    let from = if runs.is_dir() {
        runs
    } else {
        dir.to_path_buf()
    };
    let unreadable = |path: &Path, e: &dyn std::fmt::Display| DirError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&from)
        .map_err(|e| unreadable(&from, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_run_file(p))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            RunRecord::load(p)
                .map(|r| (run_name(p), r))
                .map_err(|e| unreadable(p, &format!("{e:#}")))
        })
        .collect()
}

/// The report and the runs of a directory, the runs in the report's scenario order.
/// A single recorded run (a file) is judged like a directory holding only it.
pub(crate) fn load_dir(dir: &Path) -> Result<(Report, Vec<(String, RunRecord)>), DirError> {
    if dir.is_file() {
        let rec = RunRecord::load(dir).map_err(|e| DirError::Unreadable {
            path: dir.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        let records = vec![(run_name(dir), rec)];
        return Ok((judge_records(&records), records));
    }
    if !dir.is_dir() {
        return Err(DirError::NotFound(dir.to_path_buf()));
    }
    let mut records = load_records(dir)?;
    let results = dir.join("results.json");
    let report = if results.is_file() {
        let text = std::fs::read_to_string(&results).map_err(|e| DirError::Unreadable {
            path: results.clone(),
            message: e.to_string(),
        })?;
        serde_json::from_str::<Report>(&text).map_err(|e| DirError::Unreadable {
            path: results.clone(),
            message: e.to_string(),
        })?
    } else if records.is_empty() {
        return Err(DirError::Empty(dir.to_path_buf()));
    } else {
        let catalog: Vec<String> = crate::scenario::builtin()
            .into_iter()
            .map(|s| s.name)
            .collect();
        let rank = |name: &str| catalog.iter().position(|n| n == name).unwrap_or(usize::MAX);
        records.sort_by(|(a, x), (b, y)| {
            let key = |n: &str, r: &RunRecord| (rank(&r.plan.scenario.name), n.to_string());
            key(a, x).cmp(&key(b, y))
        });
        judge_records(&records)
    };
    let order: Vec<&str> = report.results.iter().map(|r| r.scenario.as_str()).collect();
    let rank = |name: &str| order.iter().position(|n| *n == name).unwrap_or(usize::MAX);
    records.sort_by_key(|(name, _)| rank(name));
    Ok((report, records))
}

/// A section per scenario of the report, with its run when there is one.
fn views_of_records(report: &Report, records: &[(String, RunRecord)]) -> Vec<ScenarioView> {
    let mut names: Vec<&str> = Vec::new();
    for r in &report.results {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    let mut views: Vec<ScenarioView> = names
        .iter()
        .map(|n| match records.iter().find(|(name, _)| name == n) {
            Some((_, rec)) => ScenarioView::of_record(n, rec),
            None => {
                ScenarioView::not_run(n, "", "no recorded run: the scenario did not run".into())
            }
        })
        .collect();
    for (name, rec) in records {
        if !names.contains(&name.as_str()) {
            views.push(ScenarioView::of_record(name, rec));
        }
    }
    views
}

/// `capring report`.
pub fn execute(a: &ReportArgs) -> Result<i32> {
    let (report, records) = match load_dir(&a.dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("capring: {e}");
            return Ok(2);
        }
    };
    print_report(&report, a.output.format, a.output.color, a.output.quiet)?;
    if let Some(path) = &a.output.html {
        write_html(
            path,
            &report,
            || views_of_records(&report, &records),
            a.output.quiet,
        )?;
    }
    if let Some(dir) = &a.output.perfetto {
        let named: Vec<NamedRun<'_>> = records.iter().map(|(n, r)| (n.as_str(), r)).collect();
        write_perfetto_dir(dir, &report, &named)?;
    }
    Ok(if report.failed_must().is_empty() {
        0
    } else {
        1
    })
}
