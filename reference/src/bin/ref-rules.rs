//! `ref-rules`: the reference rules engine.
//!
//! Reads ref-tracer's JSON lines, applies the rules of `capring_reference::rules` and writes
//! one JSON line per detection. It needs no capability, so at start it empties every set
//! (bounding first, while cap_setpcap is still effective; then ambient, inheritable,
//! permitted and effective). It stays single-threaded, so that one thread is every thread.
//! Only `--allcaps` (or `CAPABILITIES_BYPASS=1|true`) keeps the capabilities it started with.

use std::io::{BufRead, BufWriter, Write};

use capring_reference::cli::{self, EXIT_CAPABILITY, EXIT_RUNTIME};
use capring_reference::rules;
use capring_spec::options::CapEnv;
use capring_spec::oracle;
use clap::Parser;

const PROGRAM: &str = "ref-rules";

/// Reference rules engine: detections over ref-tracer's events, with no capability at all.
///
/// Exit codes: 0 success, 1 runtime error, 2 usage error, 3 capability error (dropping
/// failed).
#[derive(Debug, Parser)]
#[command(
    name = "ref-rules",
    version,
    after_help = "\
Environment:
  CAPABILITIES_BYPASS=1|true   same as --allcaps
  CAPABILITIES_ADD, CAPABILITIES_DROP are ignored (with a warning): the rules engine
  does not support adding or dropping specific capabilities.

Example:
  ref-tracer --events execve,openat | ref-rules"
)]
struct Args {
    /// Keep every capability this process started with (use with caution).
    #[arg(long)]
    allcaps: bool,

    /// Not supported by the rules engine: given only to explain why, with exit code 2.
    #[arg(long = "capabilities", short = 'C', value_name = "OPTION", hide = true)]
    capabilities: Vec<String>,

    /// Read events from FILE instead of standard input.
    #[arg(long)]
    input: Option<std::path::PathBuf>,
}

fn drop_everything() -> Result<(), String> {
    let fail = |what: &str, e: caps::errors::CapsError| format!("{what} failed: {e}");
    let effective = caps::read(None, caps::CapSet::Effective).map_err(|e| fail("capget", e))?;
    if effective.contains(&caps::Capability::CAP_SETPCAP) {
        for cap in caps::runtime::thread_all_supported() {
            if caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, caps::CapSet::Bounding, cap)
                    .map_err(|e| fail(&format!("prctl(PR_CAPBSET_DROP, {cap})"), e))?;
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| fail("capset (inheritable)", e))?;
    // Clearing Permitted clears Effective too: E ⊆ P.
    caps::clear(None, caps::CapSet::Permitted).map_err(|e| fail("capset (permitted)", e))?;
    Ok(())
}

fn main() {
    let args: Args = cli::parse(PROGRAM);
    if let Some(bad) = args.capabilities.first() {
        let key = bad.split('=').next().unwrap_or(bad);
        cli::usage_exit(
            PROGRAM,
            format!("--capabilities {key} is not supported by ref-rules: it runs without capabilities; only --allcaps exists"),
        );
    }
    let env = CapEnv::from_lookup(|k| std::env::var(k).ok());
    let outcome = match oracle::evaluate_rules(args.allcaps, &env) {
        Ok(o) => o,
        Err(e) => cli::usage_exit(PROGRAM, e),
    };
    for w in &outcome.warnings {
        eprintln!("{PROGRAM}: warning: {w}");
    }
    if outcome.allcaps {
        eprintln!(
            "{PROGRAM}: warning: --allcaps: keeping every capability this process started with"
        );
    } else if let Err(e) = drop_everything() {
        eprintln!(
            "{PROGRAM}: dropping capabilities failed: {e}; refusing to run with excess capabilities (use --allcaps or CAPABILITIES_BYPASS=1 to run anyway)"
        );
        std::process::exit(EXIT_CAPABILITY);
    }

    let input: Box<dyn BufRead> = match &args.input {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => cli::usage_exit(PROGRAM, format!("cannot open --input {}: {e}", p.display())),
        },
        None => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut events, mut bad, mut detections) = (0u64, 0u64, 0u64);
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{PROGRAM}: reading input: {e}");
                std::process::exit(EXIT_RUNTIME);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            bad += 1;
            if bad <= 3 {
                eprintln!(
                    "{PROGRAM}: warning: skipping a line that is not JSON: {:.80}",
                    line
                );
            }
            continue;
        };
        events += 1;
        for d in rules::detect(&event) {
            detections += 1;
            let ok = serde_json::to_writer(&mut out, &d).is_ok()
                && writeln!(out).is_ok()
                && out.flush().is_ok();
            if !ok {
                std::process::exit(0); // output closed
            }
        }
    }
    eprintln!("{PROGRAM}: {events} events, {detections} detections, {bad} malformed lines");
}
