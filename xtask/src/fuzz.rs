//! `cargo xtask fuzz --seconds N`: the grammar fuzz target for a bounded time.
//!
//! Why a subcommand and not the bare `cargo fuzz` line: a fresh clone has no corpus
//! directory (libFuzzer refuses a missing one), CI must not wait for ever, and a crash must
//! land where a normal test replays it. So this command
//! 1. installs cargo-fuzz when it is missing (`cargo install --locked cargo-fuzz`);
//! 2. builds the target with `-s none` (no sanitizer: runs on stable Rust) into
//!    `target/fuzz`, so CI caches it with the rest of `target/`;
//! 3. fuzzes for `--seconds` from `fuzz/corpus/capabilities` (created, git-ignored), the seeds
//!    in `fuzz/seeds/capabilities` and every saved input in `fuzz/regressions`;
//! 4. saves a crash as `fuzz/regressions/crash-<sha1>`, which
//!    `model/tests/fuzz_regressions.rs` replays through the same check in `cargo nextest`,
//!    and fails;
//! 5. prints the build time, the inputs run and the inputs per second.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The one fuzz target.
pub const TARGET: &str = "capabilities";

#[derive(clap::Args, Clone)]
pub struct FuzzArgs {
    /// How long to fuzz, in seconds (after the build).
    #[arg(long, default_value_t = 45)]
    pub seconds: u64,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo_fuzz_installed() -> bool {
    Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_installed() {
        return Ok(());
    }
    eprintln!("xtask fuzz: cargo-fuzz missing; running: cargo install --locked cargo-fuzz");
    let ok = Command::new(cargo())
        .args(["install", "--locked", "cargo-fuzz"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("`cargo install --locked cargo-fuzz` failed");
    }
    Ok(())
}

fn saved_inputs(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Copies libFuzzer's output to stderr, leaving out its line per new coverage feature and
/// its recommended dictionary (thousands of lines), and returns all of it.
fn echo_progress(stderr: impl std::io::Read) -> String {
    let mut all = String::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let per_feature =
            line.starts_with('#') && !line.contains("pulse") && !line.contains("DONE");
        let dictionary = line.starts_with('"') && line.contains("# Uses:");
        if !per_feature && !dictionary {
            eprintln!("{line}");
        }
        all.push_str(&line);
        all.push('\n');
    }
    all
}

/// `stat::number_of_executed_units: N` from libFuzzer's final statistics.
fn executed_units(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    install_cargo_fuzz()?;
    let ws = crate::workspace();
    let fuzz_dir = ws.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(TARGET);
    let regressions = fuzz_dir.join("regressions");
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let target_dir = ws.join("target").join("fuzz");
    let common = |sub: &str| {
        let mut c = Command::new(cargo());
        c.current_dir(&fuzz_dir)
            .args(["fuzz", sub, "-s", "none", "--target-dir"])
            .arg(&target_dir);
        c
    };

    let start = Instant::now();
    let built = common("build")
        .arg(TARGET)
        .status()
        .context("starting cargo fuzz build")?;
    if !built.success() {
        bail!("cargo fuzz build failed ({built})");
    }
    let build_s = start.elapsed().as_secs_f64();

    let before = saved_inputs(&regressions);
    let mut run = common("run");
    run.arg(TARGET)
        .arg(&corpus)
        .arg(fuzz_dir.join("seeds").join(TARGET))
        .arg(&regressions)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-artifact_prefix={}/", regressions.display()))
        .args(["-timeout=10", "-print_final_stats=1"])
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = run.spawn().context("starting cargo fuzz run")?;
    let stderr = echo_progress(child.stderr.take().expect("piped"));
    let status = child.wait().context("waiting for cargo fuzz run")?;
    let run_s = start.elapsed().as_secs_f64();
    let units = executed_units(&stderr);
    eprintln!(
        "xtask fuzz: build {build_s:.1} s; {} inputs in {run_s:.1} s ({} inputs/s)",
        units.map_or("?".into(), |u| u.to_string()),
        units.map_or("?".into(), |u| format!("{:.0}", u as f64 / run_s))
    );
    if !status.success() {
        let new: Vec<PathBuf> = saved_inputs(&regressions)
            .difference(&before)
            .cloned()
            .collect();
        if new.is_empty() {
            bail!("the fuzz target failed ({status}) without saving an input");
        }
        let names: Vec<String> = new.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "the fuzz target found a failing input, saved as {}; commit it with the fix \
             (`cargo nextest run -p capring-grammar-model` replays it)",
            names.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_final_statistics() {
        let stderr = "Done 864802 runs in 91 second(s)\nstat::number_of_executed_units: 864802\nstat::average_exec_per_sec:     9503\n";
        assert_eq!(executed_units(stderr), Some(864802));
        assert_eq!(executed_units("INFO: Seed: 1\n"), None);
    }
}
