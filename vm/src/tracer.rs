//! `cargo xtask vm-test --tracer PROFILE`: what of a tracer profile must be in the guest, and
//! how the guest's verdicts compare with the profile's `[[expect]]` entries.
//!
//! The profile is read as the TOML file `harness/PROFILE.md` documents, for the few keys that
//! name files: `binary`, `catalog`, the workload commands and `rules_engine.binary`. Each
//! program is resolved as `capring` resolves it in the guest: a path with a `/` relative to
//! the profile, a bare name in the guest's `/bin` (the static project binaries) or else in
//! `PATH`, which on the host is where the file is copied from and in the guest is where it
//! is found again (same absolute paths; see [`crate::closure`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::one_line;
use crate::error::{Error, IoCtx, Result};

/// The `PATH` of a tracer's guest commands: the guest's own `/bin` first, then where Debian
/// installs programs (the host's, copied at the same paths).
pub const GUEST_PATH: &str = "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin";

/// One `[[expect]]` entry of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Expect {
    /// The scenario name.
    pub scenario: String,
    /// The clause id.
    pub clause: String,
    /// `pass`, `fail`, `fail-unsupported` or `n/a`.
    pub verdict: String,
}

#[derive(Debug, Default, Deserialize)]
struct Workload {
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    per_event: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RulesEngine {
    binary: String,
}

/// The keys of a profile that name files (the others are capring's business).
#[derive(Debug, Deserialize)]
struct Raw {
    name: String,
    binary: String,
    #[serde(default)]
    catalog: Option<String>,
    #[serde(default)]
    workload: Option<Workload>,
    #[serde(default)]
    rules_engine: Option<RulesEngine>,
    #[serde(default, rename = "expect")]
    expectations: Vec<Expect>,
}

/// What the guest needs to judge one tracer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerFiles {
    /// The profile's `name` (snapshots go under `snapshots/<name>/`).
    pub name: String,
    /// The profile, absolute (in the guest: `closure::guest_path` of it).
    pub profile: PathBuf,
    /// Host programs to copy with what they need (closure).
    pub programs: Vec<PathBuf>,
    /// Other files to copy (the profile, its catalog).
    pub data: Vec<PathBuf>,
    /// The profile's `[[expect]]` entries: the verdicts the guest must give.
    pub expectations: Vec<Expect>,
}

/// Where to look for a program named by a bare name, besides the guest's `/bin`.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// `$CAPRING_BIN_DIR` of the host, if set: searched first, as capring does (the guest gets
    /// the same variable, and the files at the same paths).
    pub bin_dir: Option<PathBuf>,
    /// `$PATH` of the host.
    pub path: String,
}

/// Where a program named `spec` in `profile_dir` is, as the guest's capring would find it:
/// `None` for a project binary of the guest's `/bin`.
pub(crate) fn resolve_program(
    spec: &str,
    profile_dir: &Path,
    guest_bins: &[String],
    search: &Search,
) -> std::result::Result<Option<PathBuf>, String> {
    if spec.contains('/') {
        let p = profile_dir.join(spec);
        return if p.is_file() {
            Ok(Some(p))
        } else if p.exists() {
            Err(format!("{} is not a file", p.display()))
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    if guest_bins.iter().any(|b| b == spec) {
        return Ok(None);
    }
    search
        .bin_dir
        .iter()
        .cloned()
        .chain(std::env::split_paths(&search.path))
        .map(|d| d.join(spec))
        .find(|p| p.is_file())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "'{spec}' is not a guest binary (vm/guest.toml), nor in $CAPRING_BIN_DIR or PATH"
            )
        })
}

/// A name usable as a directory of `snapshots/`.
pub fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "tracer".into(),
        t => t.to_string(),
    }
}

impl TracerFiles {
    /// Reads `profile` (made absolute against the current directory) and resolves its files.
    pub fn load(profile: &Path, guest_bins: &[String], search: &Search) -> Result<Self> {
        let profile = std::path::absolute(profile).ctx(profile)?;
        let text = std::fs::read_to_string(&profile).ctx(&profile)?;
        let raw: Raw =
            toml::from_str(&text).map_err(|e| Error::parse(&profile, one_line(&e.to_string())))?;
        let dir = profile.parent().unwrap_or(Path::new("/")).to_path_buf();
        let bad = |what: &str, e: String| Error::parse(&profile, format!("{what}: {e}"));
        let mut programs = Vec::new();
        let mut add = |what: &str, spec: &str| -> Result<()> {
            if let Some(p) =
                resolve_program(spec, &dir, guest_bins, search).map_err(|e| bad(what, e))?
            {
                if !programs.contains(&p) {
                    programs.push(p);
                }
            }
            Ok(())
        };
        add("binary", &raw.binary)?;
        if let Some(w) = &raw.workload {
            for c in std::iter::once(&w.command).chain(w.per_event.values()) {
                if let Some(first) = c.first() {
                    add("workload", first)?;
                }
            }
        }
        if let Some(r) = &raw.rules_engine {
            add("rules_engine.binary", &r.binary)?;
        }
        let mut data = vec![profile.clone()];
        if let Some(c) = raw.catalog.as_deref().filter(|c| *c != "builtin") {
            let p = dir.join(c);
            if !p.is_file() {
                return Err(bad("catalog", format!("{} does not exist", p.display())));
            }
            data.push(p);
        }
        Ok(TracerFiles {
            name: raw.name,
            profile,
            programs,
            data,
            expectations: raw.expectations,
        })
    }
}

/// A case where capring's verdict is known to differ from the expectation
/// (`subjects.toml` next to the profile, `[[disagreement]]`; `subject` is a profile name or `*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KnownCase {
    /// The profile name it applies to, or `*` for every one.
    pub subject: String,
    /// The scenario name.
    pub scenario: String,
    /// The clause id.
    pub clause: String,
    /// The verdict capring gives instead.
    pub capring: String,
}

#[derive(Debug, Deserialize)]
struct Disagreement {
    #[serde(default)]
    cases: Vec<KnownCase>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    disagreement: Vec<Disagreement>,
}

/// The known disagreements of `subjects.toml` in `dir`, if that file exists.
pub fn known_cases(dir: &Path) -> Result<Vec<KnownCase>> {
    let path = dir.join("subjects.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let m: Manifest =
        toml::from_str(&text).map_err(|e| Error::parse(&path, one_line(&e.to_string())))?;
    Ok(m.disagreement.into_iter().flat_map(|d| d.cases).collect())
}

/// A verdict of `results.json` (`pass`, `fail`, `unsupported`, `not_applicable`) spelled as
/// in `[[expect]]`.
pub(crate) fn expect_spelling(verdict: &str) -> &str {
    match verdict {
        "unsupported" => "fail-unsupported",
        "not_applicable" => "n/a",
        v => v,
    }
}

/// One expectation the guest did not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The scenario name.
    pub scenario: String,
    /// The clause id.
    pub clause: String,
    /// What the profile (or a known disagreement) says.
    pub expected: String,
    /// What the guest said (`None`: the clause was not judged although its scenario ran).
    pub got: Option<String>,
    /// The guest's `observed` text for the clause (empty when it was not judged).
    pub observed: String,
}

/// Compares the guest's `results.json` with the expectations. Scenarios that did not run at
/// all (`--scenario GLOB`) are skipped; a clause of a scenario that ran but is missing is a
/// mismatch.
pub fn compare(
    subject: &str,
    expectations: &[Expect],
    known: &[KnownCase],
    results: &serde_json::Value,
) -> Vec<Mismatch> {
    let rows: Vec<&serde_json::Value> = results["results"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for x in expectations {
        if !rows.iter().any(|r| r["scenario"] == x.scenario.as_str()) {
            continue;
        }
        let expected = known
            .iter()
            .find(|k| {
                (k.subject == subject || k.subject == "*")
                    && k.scenario == x.scenario
                    && k.clause == x.clause
            })
            .map_or(x.verdict.clone(), |k| k.capring.clone());
        let row = rows
            .iter()
            .find(|r| r["scenario"] == x.scenario.as_str() && r["clause"] == x.clause.as_str());
        let got = row.map(|r| expect_spelling(r["verdict"].as_str().unwrap_or("?")).to_string());
        if got.as_deref() != Some(expected.as_str()) {
            out.push(Mismatch {
                scenario: x.scenario.clone(),
                clause: x.clause.clone(),
                expected,
                got,
                observed: row.map(|r| text(r, "observed")).unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn x(scenario: &str, clause: &str, verdict: &str) -> Expect {
        Expect {
            scenario: scenario.into(),
            clause: clause.into(),
            verdict: verdict.into(),
        }
    }

    fn results(rows: &[(&str, &str, &str)]) -> serde_json::Value {
        json!({"results": rows.iter().map(|(s, c, v)| json!({"scenario": s, "clause": c, "verdict": v, "observed": "seen"})).collect::<Vec<_>>()})
    }

    #[test]
    fn verdicts_are_compared_in_the_expect_spelling() {
        let xs = [
            x("help", "help.lists-kernel-caps", "fail-unsupported"),
            x("s", "a", "n/a"),
        ];
        let r = results(&[
            ("help", "help.lists-kernel-caps", "unsupported"),
            ("s", "a", "not_applicable"),
        ]);
        assert!(compare("t", &xs, &[], &r).is_empty());
        let r = results(&[
            ("help", "help.lists-kernel-caps", "fail"),
            ("s", "a", "pass"),
        ]);
        let m = compare("t", &xs, &[], &r);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].expected.as_str(), m[0].got.as_deref()),
            ("fail-unsupported", Some("fail"))
        );
        assert_eq!(m[1].observed, "seen");
    }

    #[test]
    fn a_scenario_that_did_not_run_is_skipped_but_a_missing_clause_is_a_mismatch() {
        let xs = [
            x("ran", "a", "pass"),
            x("ran", "b", "pass"),
            x("filtered-out", "a", "fail"),
        ];
        let m = compare("t", &xs, &[], &results(&[("ran", "a", "pass")]));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].clause.as_str(), m[0].got.as_ref()), ("b", None));
    }

    #[test]
    fn a_known_disagreement_replaces_the_expectation_for_its_subject_only() {
        let xs = [x("rules-x", "rules.y", "fail-unsupported")];
        let known = [KnownCase {
            subject: "*".into(),
            scenario: "rules-x".into(),
            clause: "rules.y".into(),
            capring: "n/a".into(),
        }];
        let r = results(&[("rules-x", "rules.y", "not_applicable")]);
        assert!(compare("bpftrace", &xs, &known, &r).is_empty());
        let only_other = [KnownCase {
            subject: "dnsmasq".into(),
            ..known[0].clone()
        }];
        assert_eq!(compare("bpftrace", &xs, &only_other, &r).len(), 1);
    }

    #[test]
    fn safe_names_cannot_escape_the_snapshot_directory() {
        assert_eq!(safe_name("bpftrace"), "bpftrace");
        assert_eq!(safe_name("../../etc"), "_.._etc");
        assert_eq!(safe_name("my tracer/v2"), "my_tracer_v2");
        assert_eq!(safe_name(".."), "tracer");
    }
}
