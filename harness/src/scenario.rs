//! The scenario catalog (`fixtures/scenarios/scenarios.toml`): runs under imposed
//! conditions, each judged by the clauses it lists.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const BUILTIN: &str = include_str!("../../fixtures/scenarios/scenarios.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Tracer,
    Rules,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFaults {
    #[serde(default)]
    pub capset_eperm: bool,
    #[serde(default)]
    pub capbset_drop_eperm: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    Tracefs,
    Cgroup2,
    Setpcap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub target: Target,
    /// Events to select; absent = the profile's defaults; empty = none at all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub cli: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub faults: ScenarioFaults,
    #[serde(default)]
    pub bounding_drop: Vec<String>,
    #[serde(default)]
    pub paranoid: Option<i32>,
    #[serde(default)]
    pub lines: Option<usize>,
    #[serde(default)]
    pub needs: Vec<Need>,
    #[serde(default)]
    pub rules_args: Vec<String>,
    pub clauses: Vec<String>,
}

impl Scenario {
    /// Whether the scenario must run with no other scenario next to it (`capring check
    /// --jobs`): `perf_event_paranoid` is one value for the whole machine, and a drop-failure
    /// run judges the kernel's whole BPF program list before and after.
    pub fn runs_alone(&self) -> bool {
        self.paranoid.is_some() || self.faults.capset_eperm || self.faults.capbset_drop_eperm
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scenario: Vec<Scenario>,
}

pub fn parse(text: &str, path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let shown = path.display().to_string();
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        ScenarioError::Parse {
            path: shown.clone(),
            message: format!("line {line}: {}", e.message().replace('\n', " ")),
        }
    })?;
    let clauses = capring_spec::clauses::all();
    let mut seen = std::collections::BTreeSet::new();
    for s in &file.scenario {
        if !seen.insert(s.name.clone()) {
            return Err(ScenarioError::Parse {
                path: shown.clone(),
                message: format!("scenario '{}' is defined twice", s.name),
            });
        }
        for c in &s.clauses {
            if !clauses.iter().any(|k| &k.id == c) {
                return Err(ScenarioError::Parse {
                    path: shown.clone(),
                    message: format!("scenario '{}' names unknown clause '{c}'", s.name),
                });
            }
        }
        for cap in &s.bounding_drop {
            capring_spec::caps::parse_name(cap).map_err(|e| ScenarioError::Parse {
                path: shown.clone(),
                message: format!("scenario '{}': bounding_drop: {e}", s.name),
            })?;
        }
    }
    Ok(file.scenario)
}

/// The built-in catalog.
pub fn builtin() -> Vec<Scenario> {
    parse(BUILTIN, Path::new("fixtures/scenarios/scenarios.toml")).expect("checked by a unit test")
}

/// Glob match with `*` and `?` (for `--scenario`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses() {
        let s = builtin();
        assert!(s.len() >= 25);
    }

    /// Every MUST clause of SPEC.md is covered by at least one scenario.
    #[test]
    fn every_must_clause_has_a_scenario() {
        let scenarios = builtin();
        let uncovered: Vec<String> = capring_spec::clauses::all()
            .into_iter()
            .filter(|c| c.level == capring_spec::clauses::Level::Must)
            .filter(|c| !scenarios.iter().any(|s| s.clauses.contains(&c.id)))
            .map(|c| c.id)
            .collect();
        assert!(
            uncovered.is_empty(),
            "MUST clauses without a scenario: {uncovered:?}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("usage-*", "usage-bad-bypass"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("r?les-*", "rules-default"));
        assert!(!glob_match("usage-*", "rules-default"));
    }

    #[test]
    fn unknown_clause_is_refused() {
        let err = parse(
            "[[scenario]]\nname='a'\ndescription='d'\nclauses=['nope']\n",
            Path::new("s.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
