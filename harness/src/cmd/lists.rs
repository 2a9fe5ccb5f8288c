//! `capring scenarios` and `capring clauses`: the catalog and the clauses, listed.

use std::path::PathBuf;

use anyhow::Result;
use capring_judge::catalog::load_scenarios;
use clap::Args;

/// The options of `capring scenarios` and `capring clauses`.
#[derive(Args)]
pub(crate) struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// A scenario catalog other than the built-in one.
    #[arg(long, value_name = "FILE")]
    scenarios: Option<PathBuf>,
}

/// `capring scenarios`: each scenario, its events by role and its clauses.
pub(crate) fn scenarios(a: ListArgs) -> Result<i32> {
    let scenarios = load_scenarios(a.scenarios.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&scenarios)?);
        return Ok(0);
    }
    for s in &scenarios {
        let roles: Vec<String> = s
            .select
            .iter()
            .map(|r| serde_json::to_value(r).map(|v| v.as_str().unwrap_or("?").to_string()))
            .collect::<Result<_, _>>()?;
        println!("{}\n  {}", s.name, s.description);
        if !roles.is_empty() {
            println!("  events by role: {}", roles.join(", "));
        }
        println!("  clauses: {}", s.clauses.join(", "));
    }
    Ok(0)
}

/// `capring clauses`: each clause of spec/SPEC.md and the scenarios that cover it.
pub(crate) fn clauses(a: ListArgs) -> Result<i32> {
    let scenarios = load_scenarios(a.scenarios.as_deref())?;
    let clauses = capring_spec::clauses::all();
    let covering = |id: &str| -> Vec<String> {
        scenarios
            .iter()
            .filter(|s| s.clauses.iter().any(|c| c == id))
            .map(|s| s.name.clone())
            .collect()
    };
    if a.json {
        let doc: Vec<_> = clauses
            .iter()
            .map(|c| serde_json::json!({"clause": c, "scenarios": covering(&c.id)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    for c in &clauses {
        let cov = covering(&c.id);
        println!(
            "{:<32} {:<6} {}\n  seed: {}\n  scenarios: {}",
            c.id,
            c.level.to_string(),
            c.text,
            c.seed,
            if cov.is_empty() {
                "(none)".to_string()
            } else {
                cov.join(", ")
            }
        );
    }
    Ok(0)
}
