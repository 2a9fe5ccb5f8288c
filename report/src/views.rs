//! The pages and traces of runs: the sections of the HTML report and the Perfetto traces of
//! a check's runs, of a directory's records (`capring report`), or of one observed command
//! (`capring observe --html / --perfetto`).
//!
//! Why one module: `check`, `report` and `observe` write the same page and the same traces
//! from different sources; each builds its views here and nothing of it parses arguments.

use std::path::Path;

use anyhow::{Context, Result};
use capring_judge::catalog::{Outcome, ScenarioRun};
use capring_judge::results::Report;
use capring_judge::run::RunRecord;
use capring_observe::Observation;

use crate::html::{self, Meta, ScenarioView};
use crate::lanes::{failure_marks, Lanes, RingSets};
use crate::perfetto::{self, TraceInfo};

/// The sections of a check's scenarios, in catalog order.
pub fn views_of_runs(runs: &[ScenarioRun]) -> Vec<ScenarioView> {
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

/// Writes `bytes` to `path`, creating its directory.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes the HTML page of a report; says on stderr how big it is and how long rendering
/// (the lanes of `views` included) took, unless `quiet`.
pub fn write_html(
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
pub type NamedRun<'r> = (&'r str, &'r RunRecord);

/// Writes `DIR/<name>.json`, one Perfetto trace per run.
pub fn write_perfetto_dir(dir: &Path, report: &Report, records: &[NamedRun<'_>]) -> Result<()> {
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
pub fn records_of_runs(runs: &[ScenarioRun]) -> Vec<NamedRun<'_>> {
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
    let last = capring_observe::observer::cap_last_cap();
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

/// A section per scenario of the report, with its run when there is one.
pub fn views_of_records(report: &Report, records: &[(String, RunRecord)]) -> Vec<ScenarioView> {
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
