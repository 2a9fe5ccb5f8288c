//! Per-kernel snapshots: each guest returns `summaries/<scenario>.json` (the capability
//! summary `capring check --out` writes); each is compared with
//! `snapshots/<scenario>@vm-<kernel>.<feature key>.snap`, or for a tracer judged with
//! `vm-test --tracer PROFILE` with `snapshots/<profile name>/<scenario>@vm-<kernel>.<key>.snap`
//! (a directory per tracer: scenario names are the same for every tracer).
//!
//! The files are in insta's format, so `cargo insta review` reviews the pending `.snap.new`
//! files written for changed summaries, but the comparison is done here rather than through
//! insta's assertion macro: a kernel without snapshots, or a changed summary, is a result to
//! report in one line, never a panic with a backtrace. A kernel (or local image) without
//! snapshots is not a failure unless asked for (`--require-snapshots`, what CI uses);
//! `--record-snapshots` writes them.
//!
//! With `--minimize`, the guest returns `minimal-sets/<tracer>@<feature key>.json` instead
//! (`capring minimize`), kept as `snapshots/minimal-sets/<tracer>@vm-<kernel>.<feature
//! key>.json`: plain JSON, because `capring check` reads these tables to judge the Required
//! ring ([`minimal_sets`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The header insta writes (and expects) above a JSON snapshot.
const HEADER: &str = "---\nsource: xtask/src/snapshots.rs\n---\n";

/// What to do with summaries that have no snapshot yet, or differ from theirs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Write missing snapshots (`--record-snapshots`).
    pub record: bool,
    /// Overwrite differing snapshots (`INSTA_UPDATE=always`).
    pub accept: bool,
    /// Write `<snap>.new` next to a differing snapshot for `cargo insta review` (not in CI,
    /// like insta).
    pub pending: bool,
}

impl Policy {
    /// `INSTA_UPDATE` and `CI` as insta reads them, plus `--record-snapshots`.
    pub fn from_env(record: bool) -> Policy {
        let update = std::env::var("INSTA_UPDATE").unwrap_or_default();
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        Policy {
            record,
            accept: update == "always",
            pending: update != "no" && !ci,
        }
    }
}

/// The snapshots of one kernel, by scenario name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub matched: Vec<String>,
    /// No snapshot yet (and not recorded).
    pub missing: Vec<String>,
    /// Recorded now (`--record-snapshots`) or accepted (`INSTA_UPDATE=always`).
    pub written: Vec<String>,
    pub differ: Vec<String>,
    /// The feature keys the summaries carried, with how many carried each (scenarios that
    /// set perf_event_paranoid carry their own).
    pub feature_keys: BTreeMap<String, usize>,
}

impl Comparison {
    /// The key most summaries carried: the kernel's own.
    pub fn main_key(&self) -> &str {
        self.feature_keys
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("unknown", |(k, _)| k.as_str())
    }
}

/// The snapshot file of `scenario` on `kernel` with `key`.
pub fn snapshot_path(dir: &Path, scenario: &str, kernel: &str, key: &str) -> PathBuf {
    dir.join(format!("{scenario}@vm-{kernel}.{key}.snap"))
}

/// The file content insta would write for `value`.
pub fn render(value: &Value) -> Result<String> {
    Ok(format!(
        "{HEADER}{}\n",
        serde_json::to_string_pretty(value)?
    ))
}

/// The JSON body of a snapshot file (after insta's `---` header), if it parses.
pub fn stored_value(text: &str) -> Option<Value> {
    let rest = text.strip_prefix("---\n")?;
    let (_, body) = rest.split_once("\n---\n")?;
    serde_json::from_str(body).ok()
}

/// Compares every summary one kernel returned with `dir`; `None` when the guest returned no
/// summaries at all.
pub fn compare(
    kernel: &str,
    results: &Path,
    dir: &Path,
    policy: Policy,
) -> Result<Option<Comparison>> {
    let summaries = results.join("summaries");
    if !summaries.is_dir() {
        return Ok(None);
    }
    let files = capring_judge::measured::json_files(&summaries)
        .with_context(|| format!("reading {}", summaries.display()))?;
    let mut c = Comparison::default();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
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
        *c.feature_keys.entry(key.clone()).or_default() += 1;
        let snap = snapshot_path(dir, &name, kernel, &key);
        compare_one(&snap, &value, policy)?.push_into(&mut c, name);
    }
    Ok(Some(c))
}

enum One {
    Match,
    Missing,
    Written,
    Differ,
}

impl One {
    fn push_into(self, c: &mut Comparison, name: String) {
        match self {
            One::Match => c.matched.push(name),
            One::Missing => c.missing.push(name),
            One::Written => c.written.push(name),
            One::Differ => c.differ.push(name),
        }
    }
}

fn write(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}

fn compare_one(snap: &Path, value: &Value, policy: Policy) -> Result<One> {
    let pending = snap.with_extension("snap.new");
    let stored = match std::fs::read_to_string(snap) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", snap.display())),
    };
    let body = render(value)?;
    let one = match stored.as_deref().map(stored_value) {
        None if policy.record || policy.accept => {
            write(snap, &body)?;
            One::Written
        }
        None => One::Missing,
        Some(Some(old)) if &old == value => One::Match,
        Some(_) if policy.accept => {
            write(snap, &body)?;
            One::Written
        }
        Some(_) => {
            if policy.pending {
                write(&pending, &body)?;
            }
            return Ok(One::Differ);
        }
    };
    // A pending file left over from an earlier run is stale now.
    let _ = std::fs::remove_file(&pending);
    Ok(one)
}

/// Compares the measured tables one kernel returned with the committed ones. A missing one
/// is written with `--record-snapshots` or `INSTA_UPDATE=always`, and is a failure with
/// `--require-snapshots` (CI); a different one is written next to it as `.json.new` for
/// review (`INSTA_UPDATE=always` overwrites). True when every table matches (or was written).
pub fn minimal_sets(kernel: &str, results: &Path, policy: Policy, require: bool) -> Result<bool> {
    let dir = results.join("minimal-sets");
    let files = capring_judge::measured::json_files(&dir)
        .with_context(|| format!("[{kernel}] the guest returned no {}", dir.display()))?;
    if files.is_empty() {
        println!("[{kernel}] minimal sets: the guest returned no table");
        return Ok(false);
    }
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
            None if require && !(policy.record || policy.accept) => {
                ok = false;
                println!(
                    "[{kernel}] error: no measured table {} and --require-snapshots is set; record it with `cargo xtask vm-test --kernel {kernel} --minimize --record-snapshots`, review and commit it",
                    target.display()
                );
            }
            None if !(policy.record || policy.accept) => {
                println!(
                    "[{kernel}] minimal sets: no table {} yet; record it with --record-snapshots",
                    target.display()
                );
            }
            Some(_) if !policy.accept => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guest(dir: &Path, summaries: &[Value]) -> PathBuf {
        let results = dir.join("results");
        std::fs::create_dir_all(results.join("summaries")).unwrap();
        for s in summaries {
            let name = s["scenario"].as_str().unwrap();
            std::fs::write(
                results.join("summaries").join(format!("{name}.json")),
                s.to_string(),
            )
            .unwrap();
        }
        results
    }

    fn summary(name: &str, effective: &str) -> Value {
        json!({"scenario": name, "feature_key": "sysadmin.paranoid3", "effective": effective, "call": "prctl ×40"})
    }

    #[test]
    fn a_kernel_without_snapshots_is_missing_until_recorded_then_matches() {
        let d = tempfile::tempdir().unwrap();
        let snaps = d.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let results = guest(d.path(), &[summary("a", "{}"), summary("b", "{}")]);
        let c = compare("5.4", &results, &snaps, Policy::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.missing, ["a", "b"]);
        assert!(c.matched.is_empty() && c.written.is_empty() && c.differ.is_empty());
        assert_eq!(
            std::fs::read_dir(&snaps).unwrap().count(),
            0,
            "nothing written"
        );

        let record = Policy {
            record: true,
            ..Policy::default()
        };
        let c = compare("5.4", &results, &snaps, record).unwrap().unwrap();
        assert_eq!(c.written, ["a", "b"]);
        let path = snapshot_path(&snaps, "a", "5.4", "sysadmin.paranoid3");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(HEADER) && text.contains("\"prctl ×40\""),
            "{text}"
        );
        assert_eq!(stored_value(&text), Some(summary("a", "{}")));

        let c = compare("5.4", &results, &snaps, Policy::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.matched, ["a", "b"]);
        assert_eq!(c.main_key(), "sysadmin.paranoid3");
    }

    #[test]
    fn a_changed_summary_differs_and_leaves_a_pending_file_for_review() {
        let d = tempfile::tempdir().unwrap();
        let snaps = d.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let path = snapshot_path(&snaps, "a", "6.1", "sysadmin.paranoid3");
        std::fs::write(&path, render(&summary("a", "{}")).unwrap()).unwrap();
        let results = guest(d.path(), &[summary("a", "{cap_bpf}")]);
        let review = Policy {
            pending: true,
            ..Policy::default()
        };
        let c = compare("6.1", &results, &snaps, review).unwrap().unwrap();
        assert_eq!(c.differ, ["a"]);
        let pending = std::fs::read_to_string(path.with_extension("snap.new")).unwrap();
        assert_eq!(stored_value(&pending), Some(summary("a", "{cap_bpf}")));
        // --record-snapshots never overwrites a reviewed snapshot.
        let record = Policy {
            record: true,
            ..Policy::default()
        };
        let c = compare("6.1", &results, &snaps, record).unwrap().unwrap();
        assert_eq!(c.differ, ["a"]);
        // INSTA_UPDATE=always accepts it; the pending file goes.
        let accept = Policy {
            accept: true,
            ..Policy::default()
        };
        let c = compare("6.1", &results, &snaps, accept).unwrap().unwrap();
        assert_eq!(c.written, ["a"]);
        assert!(!path.with_extension("snap.new").exists());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(stored_value(&text), Some(summary("a", "{cap_bpf}")));
    }

    #[test]
    fn no_summaries_is_none_and_a_broken_snapshot_differs() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            compare("x", d.path(), d.path(), Policy::default()).unwrap(),
            None
        );
        let snaps = d.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let path = snapshot_path(&snaps, "a", "x", "sysadmin.paranoid3");
        std::fs::write(&path, "not a snapshot").unwrap();
        let results = guest(d.path(), &[summary("a", "{}")]);
        let c = compare("x", &results, &snaps, Policy::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.differ, ["a"]);
    }

    /// The committed snapshots are what `render` writes: recording or accepting them again
    /// changes no byte. Also those of tracers run with `--tracer` (`snapshots/<name>/`).
    #[test]
    fn committed_snapshots_are_in_the_rendered_format() {
        let dir = crate::workspace().join("snapshots");
        let mut dirs = vec![dir.clone()];
        dirs.extend(
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir()),
        );
        let mut checked = 0;
        for d in dirs {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !(name.contains("@vm-") && name.ends_with(".snap")) {
                    continue;
                }
                let text = std::fs::read_to_string(e.path()).unwrap();
                let value = stored_value(&text).unwrap_or_else(|| panic!("{name}: unreadable"));
                assert_eq!(render(&value).unwrap(), text, "{name}");
                checked += 1;
            }
        }
        assert!(checked > 0, "no VM snapshots in {}", dir.display());
    }
}
