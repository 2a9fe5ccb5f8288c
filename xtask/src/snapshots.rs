//! Per-kernel snapshots: each guest returns `summaries/<scenario>.json` (the capability
//! summary `capring check --out` writes); they are compared with
//! `snapshots/<scenario>@vm-<kernel>.<feature key>.snap` through insta, so a change shows as
//! a diff and `cargo insta review` (or `INSTA_UPDATE=always`) accepts it.
//!
//! With `--minimize`, the guest returns `minimal-sets/<tracer>@<feature key>.json` instead
//! (`capring minimize`), kept as `snapshots/minimal-sets/<tracer>@vm-<kernel>.<feature
//! key>.json`: plain JSON, because `capring check` reads these tables to judge the Required
//! ring ([`minimal_sets`]).

use std::path::Path;

use anyhow::{Context, Result};

/// Compares every summary of one kernel; returns the scenarios whose snapshot differs, or
/// `None` when the guest returned no summaries at all.
pub fn compare(kernel: &str, results: &Path) -> Result<Option<Vec<String>>> {
    let dir = results.join("summaries");
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut differ = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("unknown")
            .to_string();
        let key = value["feature_key"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(crate::workspace().join("snapshots"));
        settings.set_snapshot_suffix(format!("vm-{kernel}.{key}"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_json_snapshot!(name.as_str(), value))
        }))
        .is_ok();
        if !ok {
            differ.push(name);
        }
    }
    Ok(Some(differ))
}

/// Compares the measured tables one kernel returned with the committed ones; a missing one
/// is written (and `INSTA_UPDATE=always` overwrites), a different one is written next to
/// it as `.json.new` for review. True when every table matches (or was written).
pub fn minimal_sets(kernel: &str, results: &Path) -> Result<bool> {
    let dir = results.join("minimal-sets");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("[{kernel}] the guest returned no {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        println!("[{kernel}] minimal sets: the guest returned no table");
        return Ok(false);
    }
    let update = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always");
    let snapshots = crate::workspace().join("snapshots/minimal-sets");
    let mut ok = true;
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some((tracer, key)) = name.split_once('@') else {
            continue;
        };
        let target = snapshots.join(format!("{tracer}@vm-{kernel}.{key}"));
        let text = std::fs::read_to_string(&path)?;
        let new: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let old: Option<serde_json::Value> = std::fs::read_to_string(&target)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let human = path.with_extension("txt");
        let write = |to: &Path| -> Result<()> {
            std::fs::write(to, &text).with_context(|| format!("writing {}", to.display()))?;
            if human.is_file() {
                std::fs::copy(&human, to.with_extension("txt"))?;
            }
            Ok(())
        };
        match old {
            Some(old) if old == new => println!("[{kernel}] minimal sets: {name} matches"),
            Some(_) if !update => {
                let review = target.with_extension("json.new");
                std::fs::write(&review, &text)?;
                ok = false;
                println!(
                    "[{kernel}] minimal sets differ: review {} against {} (accept with INSTA_UPDATE=always)",
                    review.display(),
                    target.display()
                );
            }
            _ => {
                write(&target)?;
                println!("[{kernel}] minimal sets: wrote {}", target.display());
            }
        }
    }
    Ok(ok)
}
