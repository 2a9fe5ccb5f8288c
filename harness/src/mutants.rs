//! Proving the suite can fail: run each mutant of `fixtures/mutants/mutants.toml` in its
//! scenario and check that it fails by the expected clause.

use std::path::Path;

use anyhow::{Context, Result};
use capring_spec::facts;
use serde::{Deserialize, Serialize};

use crate::check_cmd::judge;
use crate::checks::Verdict;
use crate::profile::Profile;
use crate::scenario::Scenario;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    pub name: String,
    pub fault: String,
    pub scenario: String,
    pub expected_clause: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    mutant: Vec<Mutant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MutantResult {
    pub mutant: Mutant,
    /// Clauses that failed in the mutant's scenario.
    pub failed: Vec<String>,
    pub caught: bool,
    /// What the expected clause itself said (verdict and observation), so that a mutant that
    /// got away shows why.
    pub expected_verdict: String,
}

pub fn load(path: &Path) -> Result<Vec<Mutant>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.mutant)
}

/// Runs every mutant (or those whose name matches `only`).
pub fn run_all(
    profile: &Profile,
    mutants: &[Mutant],
    scenarios: &[Scenario],
    mut progress: impl FnMut(&str),
) -> Result<Vec<MutantResult>> {
    let base = facts::probe().context("probing the environment")?;
    let mut out = Vec::new();
    for m in mutants {
        progress(&m.name);
        let mut scenario = scenarios
            .iter()
            .find(|s| s.name == m.scenario)
            .with_context(|| format!("mutant {}: no scenario named {}", m.name, m.scenario))?
            .clone();
        if !scenario.clauses.contains(&m.expected_clause) {
            scenario.clauses.push(m.expected_clause.clone());
        }
        let mut p = profile.clone();
        p.env.insert("CAPRING_MUTANT".into(), m.name.clone());
        let outcome = crate::run::run(&p, &scenario, &base);
        let results = judge(&p, &scenario, &outcome, &base);
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| r.clause.clone())
            .collect();
        let expected_verdict = results
            .iter()
            .find(|r| r.clause == m.expected_clause)
            .map(|r| format!("{}: {}", r.label(), r.observed))
            .unwrap_or_else(|| "not judged".into());
        out.push(MutantResult {
            caught: failed.contains(&m.expected_clause),
            expected_verdict,
            mutant: m.clone(),
            failed,
        });
    }
    Ok(out)
}

pub fn table(results: &[MutantResult]) -> String {
    let mut s = format!(
        "{:<24} {:<34} {:<7} failed clauses\n",
        "mutant", "expected clause", "caught"
    );
    for r in results {
        s.push_str(&format!(
            "{:<24} {:<34} {:<7} {}\n",
            r.mutant.name,
            r.mutant.expected_clause,
            if r.caught { "yes" } else { "NO" },
            r.failed.join(", ")
        ));
        if !r.caught {
            s.push_str(&format!(
                "{:<24} {} said: {}\n",
                "", r.mutant.expected_clause, r.expected_verdict
            ));
        }
    }
    s
}
