//! Per-kernel snapshots: each guest returns `summaries/<scenario>.json` (the capability
//! summary `capring check --out` writes); they are compared with
//! `snapshots/<scenario>@vm-<kernel>.<feature key>.snap` through insta, so a change shows as
//! a diff and `cargo insta review` (or `INSTA_UPDATE=always`) accepts it.

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
