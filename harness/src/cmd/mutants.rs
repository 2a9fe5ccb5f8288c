//! `capring mutants`: the negative controls run, each of which must fail by its expected
//! clause (the running and the table are `capring_judge::mutants`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use capring_judge::catalog::check_programs;
use capring_judge::profile::Profile;
use capring_judge::{mutants, scenario};
use capring_observe::interrupt;
use clap::Args;

/// `capring mutants`'s options (the subcommand's help text is in the binary).
#[derive(Args)]
pub(crate) struct MutantsArgs {
    /// Profile of the mutant tracer.
    #[arg(long, default_value = "fixtures/mutants/ref-tracer-mutant.toml")]
    tracer: PathBuf,
    /// The mutant catalog.
    #[arg(long, default_value = "fixtures/mutants/mutants.toml")]
    mutants: PathBuf,
    /// Only mutants whose name matches this glob.
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write each control's run to DIR/runs/<control>.json (readable back by
    /// `RunRecord::load`; `cargo xtask record-runs` keeps them under fixtures/runs/).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// `capring mutants`: runs the controls and prints whether each was caught. Returns the exit
/// code: 0 when every control was caught, 1 otherwise, 2 on bad input.
pub(crate) fn execute(a: MutantsArgs) -> Result<i32> {
    let profile = match Profile::load(&a.tracer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("capring: {e}");
            return Ok(2);
        }
    };
    let mut list = match mutants::load(&a.mutants) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("capring: {e:#}");
            return Ok(2);
        }
    };
    if let Some(g) = &a.only {
        list.retain(|m| scenario::glob_match(g, &m.name));
    }
    if let Err(e) = check_programs(&profile) {
        eprintln!("capring: {e}");
        return Ok(2);
    }
    interrupt::install()?;
    let dir = a.mutants.parent().unwrap_or(std::path::Path::new("."));
    let results = mutants::run_all(&profile, dir, &list, &scenario::builtin(), |name| {
        eprintln!("capring: control {name}")
    })?;
    if let Some(dir) = &a.out {
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        for r in &results {
            if let Some(rec) = &r.record {
                std::fs::write(
                    runs.join(format!("{}.json", r.mutant.name)),
                    serde_json::to_vec(rec)?,
                )?;
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", mutants::table(&results));
    }
    if let Some(sig) = interrupt::requested() {
        return Ok(interrupt::exit_code(sig));
    }
    Ok(if results.iter().all(|r| r.caught) {
        0
    } else {
        1
    })
}
