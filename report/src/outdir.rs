//! The `--out` directory: written by `capring check`, read back by `capring report`.
//!
//! Why: a check in a VM or in CI leaves a `--out` directory (results.json and
//! runs/<scenario>.json); looking at it should not need root or a second run. A directory of
//! recorded runs without results.json (`fixtures/runs/reference/`) is judged again from the
//! runs, by the same checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use capring_judge::catalog::{judge_records, Outcome, ScenarioRun};
use capring_judge::results::Report;
use capring_judge::run::RunRecord;

use crate::render;

/// Writes what `capring check --out DIR` leaves: results.json, report.tap, junit.xml,
/// runs/<scenario>.json (each run's plan and timeline, readable back by `RunRecord::load`)
/// and summaries/<scenario>.json (the per-kernel snapshot material).
pub fn write_outputs(dir: &Path, report: &Report, runs: &[ScenarioRun]) -> Result<()> {
    let runs_dir = dir.join("runs");
    let sm = dir.join("summaries");
    for d in [&runs_dir, &sm] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.tap"), render::tap(report))?;
    std::fs::write(dir.join("junit.xml"), render::junit(report))?;
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
            serde_json::to_string_pretty(&capring_judge::snapshot::summarize(rec))?,
        )?;
    }
    Ok(())
}

/// Why a directory cannot be reported on (bad input).
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Neither a directory nor a file: the path.
    #[error("{0}: no such directory or recorded run")]
    NotFound(PathBuf),
    /// A directory without results.json or recorded runs: the path.
    #[error("{0}: neither results.json nor recorded runs (*.json, *.json.gz)")]
    Empty(PathBuf),
    /// A file that cannot be read or parsed.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
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
pub fn load_dir(dir: &Path) -> Result<(Report, Vec<(String, RunRecord)>), DirError> {
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
        let catalog: Vec<String> = capring_judge::scenario::builtin()
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
