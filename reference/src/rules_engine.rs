//! `ref-rules`, the reference rules engine, as a library function (`ref-rules` and the
//! negative control `ref-rules-mutant` are thin mains around [`run`]).
//!
//! It reads ref-tracer's JSON lines, applies the rules of [`crate::rules`] and writes one
//! JSON line per detection. It needs no capability, so at start it empties every set
//! (bounding first, while cap_setpcap is still effective; then ambient, inheritable,
//! permitted and effective). It stays single-threaded, so that one thread is every thread.
//! Only `--allcaps` (or `CAPABILITIES_BYPASS=1|true`) keeps the capabilities it started with.

use std::io::{BufRead, BufWriter, Write};

use capring_spec::caps::{Cap, CapSet};
use capring_spec::options::CapEnv;
use capring_spec::oracle;
use clap::Parser;

use crate::cli::{self, EXIT_CAPABILITY, EXIT_RUNTIME};
use crate::{faults, rules};

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
pub struct Args {
    /// Keep every capability this process started with (use with caution).
    #[arg(long)]
    pub allcaps: bool,

    /// Not supported by the rules engine: given only to explain why, with exit code 2.
    #[arg(long = "capabilities", short = 'C', value_name = "OPTION", hide = true)]
    pub capabilities: Vec<String>,

    /// Read events from FILE instead of standard input.
    #[arg(long)]
    pub input: Option<std::path::PathBuf>,
}

/// Empties every set except `keep` (nothing, outside the negative controls).
fn drop_everything(keep: CapSet) -> Result<(), String> {
    let fail = |what: &str, e: caps::errors::CapsError| format!("{what} failed: {e}");
    let kept: caps::CapsHashSet = caps::all()
        .into_iter()
        .filter(|c| Cap::new(c.index()).is_some_and(|n| keep.contains(n)))
        .collect();
    let effective = caps::read(None, caps::CapSet::Effective).map_err(|e| fail("capget", e))?;
    if effective.contains(&caps::Capability::CAP_SETPCAP) {
        for cap in caps::runtime::thread_all_supported() {
            if !kept.contains(&cap)
                && caps::has_cap(None, caps::CapSet::Bounding, cap).unwrap_or(false)
            {
                caps::drop(None, caps::CapSet::Bounding, cap)
                    .map_err(|e| fail(&format!("prctl(PR_CAPBSET_DROP, {cap})"), e))?;
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient)
        .map_err(|e| fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| fail("capset (inheritable)", e))?;
    // Shrinking Permitted shrinks Effective too: E ⊆ P.
    if kept.is_empty() {
        caps::clear(None, caps::CapSet::Permitted).map_err(|e| fail("capset (permitted)", e))?;
    } else {
        caps::set(None, caps::CapSet::Effective, &kept)
            .map_err(|e| fail("capset (effective)", e))?;
        caps::set(None, caps::CapSet::Permitted, &kept)
            .map_err(|e| fail("capset (permitted)", e))?;
    }
    Ok(())
}

/// Runs the rules engine; returns the process exit code. `program` names it in messages.
pub fn run(program: &str, args: Args) -> i32 {
    if let Some(bad) = args.capabilities.first() {
        let key = bad.split('=').next().unwrap_or(bad);
        cli::usage_exit(
            program,
            format!("--capabilities {key} is not supported by ref-rules: it runs without capabilities; only --allcaps exists"),
        );
    }
    let mut env = CapEnv::from_lookup(|k| {
        // A value that is not UTF-8 is a bad value (a usage error), never "unset".
        std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
    });
    faults::rules_environment(&mut env);
    let outcome = match oracle::evaluate_rules(faults::rules_allcaps_flag(args.allcaps), &env) {
        Ok(o) => o,
        Err(e) => cli::usage_exit(program, e),
    };
    for w in &outcome.warnings {
        eprintln!("{program}: warning: {w}");
    }
    if outcome.allcaps {
        eprintln!(
            "{program}: warning: --allcaps: keeping every capability this process started with"
        );
    } else if let Err(e) = drop_everything(faults::rules_keep()) {
        eprintln!(
            "{program}: dropping capabilities failed: {e}; refusing to run with excess capabilities (use --allcaps or CAPABILITIES_BYPASS=1 to run anyway)"
        );
        return EXIT_CAPABILITY;
    }
    let input: Box<dyn BufRead> = match &args.input {
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => cli::usage_exit(program, format!("cannot open --input {}: {e}", p.display())),
        },
        None => Box::new(std::io::stdin().lock()),
    };
    detect_all(program, input)
}

/// Reads events, writes detections; returns the exit code.
fn detect_all(program: &str, input: Box<dyn BufRead>) -> i32 {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (mut events, mut bad, mut detections) = (0u64, 0u64, 0u64);
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{program}: reading input: {e}");
                return EXIT_RUNTIME;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            bad += 1;
            if bad <= 3 {
                eprintln!("{program}: warning: skipping a line that is not JSON: {line:.80}");
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
                return 0; // output closed
            }
        }
    }
    eprintln!("{program}: {events} events, {detections} detections, {bad} malformed lines");
    0
}
