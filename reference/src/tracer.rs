//! `ref-tracer`: the capability rings made executable.
//!
//! Order of a run (each step in the ring named):
//! 1. Privileged (as started): parse, probe facts (file reads only), ask the oracle.
//! 2. Required: the first drop empties the bounding, inheritable and ambient sets and sets
//!    E = the Required ring on every thread. Then raise RLIMIT_MEMLOCK if needed, probe aya's
//!    features and whether the kernel has a BPF ring buffer (which of the four objects to
//!    load, see `transport`), and load/attach the selected programs.
//! 3. Unprivileged: E = ∅, P = the capabilities later Requested operations need.
//! 4. Requested, around single operations: open `/proc/kallsyms` (cap_syslog) once, and
//!    `/proc/PID/exe` (cap_sys_ptrace) for each exec whose program is not in the digest cache.
//!
//! Threads: the main thread polls the ring buffer and enriches events; a writer thread
//! writes JSON lines. Both are always on the same ring thanks to `RingManager`'s broadcast.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use capring_spec::caps::{Cap, CapSet};
use capring_spec::catalog::Catalog;
use capring_spec::facts::{self, EnvFacts, MemlockAction};
use capring_spec::options::{self, CapEnv};
use capring_spec::oracle::{self, Outcome, Rings};
use clap::Parser;
use serde_json::{json, Value};

use crate::cli::{self, EXIT_CAPABILITY, EXIT_RUNTIME};
use crate::ebpf::{self, LoadPlan, Probes, TraceEvent};
use crate::exe_hash::ExeHashCache;
use crate::faults;
use crate::kallsyms::{self, SymbolSummary};
use crate::rings::{RingLog, RingManager, RingPlan, ScopeError};
use crate::transport::Output;

const PROGRAM: &str = "ref-tracer";

/// Reference eBPF tracer that keeps its capabilities in rings: Required while configuring,
/// one Requested capability around single operations, none at all (Unprivileged) otherwise.
///
/// Exit codes: 0 success, 1 runtime error, 2 usage error, 3 capability error (a failed
/// drop, or a Required capability that is not permitted).
#[derive(Debug, Parser)]
#[command(name = "ref-tracer", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Events to trace, comma-separated: execve, openat, module_load, sched_process_exec,
    /// net_packet.
    #[arg(long, short = 'e', value_delimiter = ',')]
    pub events: Vec<String>,

    /// Capability options, repeatable: help | bypass=1|0|true|false | add=CAP[,CAP…] |
    /// drop=CAP[,CAP…]. Names: cap_sys_admin, CAP_SYS_ADMIN, sys_admin or a number.
    #[arg(long = "capabilities", short = 'C', value_name = "OPTION")]
    pub capabilities: Vec<String>,

    /// Where to write events as JSON lines ("-" = standard output).
    #[arg(long, short = 'o', default_value = "-")]
    pub output: String,

    /// Stop after this many events.
    #[arg(long)]
    pub max_events: Option<u64>,

    /// Stop after this many seconds (decimals allowed).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Print the rings the oracle computes for this machine as JSON and exit (0, or 3 when
    /// the tracer could not run), without loading anything.
    #[arg(long)]
    pub print_rings: bool,

    /// Append one JSON line per ring transition to FILE (ring, effective and permitted
    /// names, thread count, reason, monotonic time).
    #[arg(long, value_name = "FILE")]
    pub ring_log: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Environment (used unless the same key is given with --capabilities):
  CAPABILITIES_BYPASS=1|0|true|false   like --capabilities bypass=…
  CAPABILITIES_ADD=CAP[,CAP…]          like --capabilities add=…
  CAPABILITIES_DROP=CAP[,CAP…]         like --capabilities drop=…

Examples:
  ref-tracer --events execve,openat --max-events 50
  ref-tracer --capabilities help
  ref-tracer --events net_packet --print-rings
  ref-tracer --events sched_process_exec --capabilities drop=cap_sys_ptrace --ring-log rings.jsonl";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn warn(message: impl std::fmt::Display) {
    eprintln!("{PROGRAM}: warning: {message}");
}

/// `--capabilities help`: every capability the running kernel knows, marking this
/// process's permitted and bounding sets.
pub fn capability_help(facts: &EnvFacts) -> String {
    let mut out = format!(
        "Capabilities known to the running kernel {} (0..={}):\n  P = in this process's permitted set, B = in its bounding set\n\n",
        facts.kernel_release, facts.cap_last_cap
    );
    for cap in CapSet::all_up_to(faults::help_last_cap(facts.cap_last_cap)).iter() {
        out.push_str(&format!(
            "  {:>2}  {:<24} {}{}\n",
            cap.number(),
            cap.name(),
            if facts.permitted.contains(cap) {
                "P"
            } else {
                "-"
            },
            if facts.bounding.contains(cap) {
                "B"
            } else {
                "-"
            },
        ));
    }
    out.push_str(
        "\nUse: --capabilities add=CAP,… (add to the Required ring) | drop=CAP,… (remove from it) | bypass=1 (keep all)\n",
    );
    out
}

/// Runs the tracer; returns the process exit code.
pub fn run(args: Args) -> i32 {
    let mut env = CapEnv::from_lookup(|k| {
        // A value that is not UTF-8 is a bad value (a usage error), never "unset".
        std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
    });
    faults::environment(&mut env);
    let facts = match facts::probe() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot read the environment facts: {e}");
            return EXIT_RUNTIME;
        }
    };
    let mut options = match options::parse_and_resolve(
        &args.capabilities,
        &env,
        facts.cap_last_cap,
        &facts.kernel_release,
    ) {
        Ok(o) => o,
        Err(e) => cli::usage_exit(PROGRAM, e),
    };
    faults::options(&mut options, &env);
    if options.help {
        print!("{}", capability_help(&facts));
        return 0;
    }
    let catalog = Catalog::builtin();
    let outcome = match oracle::evaluate(&options, &args.events, &catalog, &facts) {
        Ok(o) => o,
        Err(e) => cli::usage_exit(PROGRAM, e),
    };
    if args.print_rings {
        let doc = json!({
            "feature_key": facts.feature_key(),
            "facts": facts,
            "options": options,
            "events": args.events,
            "result": outcome,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("plain data serializes")
        );
        return outcome.exit_code();
    }
    let (bypass, rings, warnings) = match outcome {
        Outcome::Runs {
            bypass,
            rings,
            warnings,
        } => (bypass, rings, warnings),
        Outcome::CannotRun { message, .. } => {
            match faults::cannot_run(&options, &args.events, &catalog, &facts) {
                Some(runs) => runs,
                None => {
                    eprintln!("{PROGRAM}: {message}");
                    return EXIT_CAPABILITY;
                }
            }
        }
        Outcome::Help => unreachable!("handled above"),
    };
    for w in &warnings {
        warn(w);
    }
    match trace(&args, &facts, bypass, &rings) {
        Ok(()) => 0,
        Err(Failure::Capability(message)) => {
            eprintln!("{PROGRAM}: {message}");
            EXIT_CAPABILITY
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("{PROGRAM}: {message}");
            EXIT_RUNTIME
        }
    }
}

enum Failure {
    Capability(String),
    Runtime(String),
}

const BYPASS_HINT: &str = "refusing to run with excess capabilities; to run anyway use --capabilities bypass=1 (or CAPABILITIES_BYPASS=1)";

fn open_output(path: &str) -> Result<Box<dyn Write + Send>, Failure> {
    if path == "-" {
        Ok(Box::new(std::io::stdout()))
    } else {
        File::create(path)
            .map(|f| Box::new(f) as Box<dyn Write + Send>)
            .map_err(|e| Failure::Runtime(format!("cannot create --output {path}: {e}")))
    }
}

fn raise_memlock(action: MemlockAction, need: u64) -> Result<(), String> {
    if action == MemlockAction::Nothing {
        return Ok(());
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) != 0 {
            return Err(format!(
                "getrlimit(RLIMIT_MEMLOCK): {}",
                std::io::Error::last_os_error()
            ));
        }
        let need = need as libc::rlim_t;
        let wanted = libc::rlimit {
            rlim_cur: current.rlim_cur.max(need),
            rlim_max: current.rlim_max.max(need),
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_MEMLOCK, {need}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn trace(args: &Args, facts: &EnvFacts, bypass: bool, rings: &Rings) -> Result<(), Failure> {
    let log = match &args.ring_log {
        Some(p) => Some(RingLog::create(p).map_err(|e| {
            Failure::Runtime(format!("cannot create --ring-log {}: {e}", p.display()))
        })?),
        None => None,
    };
    let output = open_output(&args.output)?;
    let mut plan = RingPlan {
        bypass,
        required: rings.required,
        config_permitted: rings.config_permitted,
        steady_permitted: rings.steady_permitted,
        clear_bounding: rings.clear_bounding,
    };
    faults::ring_plan(&mut plan, rings, facts);
    faults::before_ring_manager();
    let manager = Arc::new(
        RingManager::new(plan, log).map_err(|e| Failure::Runtime(format!("ring manager: {e}")))?,
    );
    let mut probes = configure(args, facts, rings, &manager)?;

    let enabled = |cap: Cap| {
        rings
            .requested
            .iter()
            .any(|op| op.enabled && op.capability == cap)
    };
    let symbols = if args.events.iter().any(|e| e == "module_load") && enabled(Cap::SYSLOG) {
        let summary = read_kallsyms(&manager);
        faults::after_kallsyms();
        summary
    } else {
        None
    };
    let enrichment = Enrichment {
        hash_exe: args.events.iter().any(|e| e == "sched_process_exec") && enabled(Cap::SYS_PTRACE),
        symbols,
        cache: ExeHashCache::default(),
    };

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
    let (tx, rx) = mpsc::sync_channel::<String>(4096);
    let writer = std::thread::Builder::new()
        .name("ref-tracer-out".into())
        .spawn(move || write_lines(output, rx))
        .map_err(|e| Failure::Runtime(format!("cannot start the writer thread: {e}")))?;
    eprintln!(
        "{PROGRAM}: tracing {} ({} threads on the unprivileged ring; {})",
        args.events.join(","),
        manager.thread_count(),
        probes.support()
    );
    let (emitted, cache, mut result) = pump(args, &mut probes, &manager, enrichment, tx);
    let written = writer
        .join()
        .unwrap_or(Err("writer thread panicked".into()));
    if let Err(e) = written {
        if result.is_ok() && !e.contains("Broken pipe") {
            result = Err(Failure::Runtime(format!("writing events: {e}")));
        }
    }
    eprintln!(
        "{PROGRAM}: {emitted} events; exe digests: {} computed, {} from cache",
        cache.misses, cache.hits
    );
    result
}

/// Rings 1 and 3: the first drop, loading and attaching in the Required ring, then the drop
/// to the Unprivileged ring.
fn configure(
    args: &Args,
    facts: &EnvFacts,
    rings: &Rings,
    manager: &RingManager,
) -> Result<Probes, Failure> {
    let load = || {
        let _ = aya::features();
        let plan = LoadPlan {
            events: args.events.clone(),
            cgroup_root: facts.cgroup2.as_ref().map(PathBuf::from),
            self_tgid: std::process::id(),
        };
        ebpf::load_and_attach(&plan).map_err(|e| {
            if e.is_permission_denied() && !faults::permission_error_is_runtime() {
                Failure::Capability(format!("{e} (the Required ring is {})", rings.required))
            } else {
                Failure::Runtime(e.to_string())
            }
        })
    };
    faults::before_first_drop(manager.plan()).map_err(Failure::Capability)?;
    let early = match faults::load_before_first_drop() {
        true => Some(load()?),
        false => None,
    };

    // Ring 1: the first drop. Nothing privileged has happened before this point.
    match manager.enter_required("configure: load and attach the selected eBPF programs") {
        Ok(()) => faults::after_first_drop(),
        Err(e) if faults::ignore_drop_failure() => {
            warn(format!("dropping capabilities failed, carrying on: {e}"))
        }
        Err(e) => {
            return Err(Failure::Capability(format!(
                "dropping capabilities failed: {e}; {BYPASS_HINT}"
            )))
        }
    }
    raise_memlock(rings.memlock, facts.memlock_needed())
        .map_err(|e| Failure::Capability(format!("raising the locked-memory limit failed: {e}")))?;
    let probes = match early {
        Some(p) => p,
        None => load()?,
    };
    let has_ringbuf = probes.support().output == Output::RingBuf;
    if facts.bpf_ringbuf.is_some_and(|fact| fact != has_ringbuf) {
        warn(format!(
            "the kernel's symbols say the BPF ring buffer is {}, but creating one {}: the locked-memory need was computed for the other transport",
            if has_ringbuf { "missing" } else { "there" },
            if has_ringbuf { "worked" } else { "failed" },
        ));
    }

    // Ring 3: the steady state.
    if !faults::defer_unprivileged() {
        match manager.enter_unprivileged("configuration done: wait for events") {
            Ok(()) => faults::steady_state_entered(),
            Err(_) if faults::ignore_drop_failure() => {}
            Err(e) => {
                return Err(Failure::Capability(format!(
                    "dropping to the Unprivileged ring failed: {e}; {BYPASS_HINT}"
                )))
            }
        }
    }
    Ok(probes)
}

/// What each event line gets beyond the kernel's record.
struct Enrichment {
    hash_exe: bool,
    symbols: Option<SymbolSummary>,
    cache: ExeHashCache,
}

/// The event loop: polls, enriches and hands lines to the writer until a stop signal, the
/// deadline, `--max-events` or a closed output. Returns the lines emitted, the digest cache
/// (for its counters) and the outcome; dropping `tx` lets the writer finish.
fn pump(
    args: &Args,
    probes: &mut Probes,
    manager: &RingManager,
    mut enrichment: Enrichment,
    tx: mpsc::SyncSender<String>,
) -> (u64, ExeHashCache, Result<(), Failure>) {
    let started = Instant::now();
    let deadline = args
        .duration
        .map(|s| started + Duration::from_secs_f64(s.max(0.0)));
    let mut emitted = 0u64;
    let mut result = Ok(());
    'outer: while !STOP.load(Ordering::SeqCst) {
        if deadline.is_some_and(|d| Instant::now() >= d)
            || args.max_events.is_some_and(|m| emitted >= m)
        {
            break;
        }
        let events = match probes.poll(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(e) => {
                result = Err(Failure::Runtime(format!("reading events: {e}")));
                break;
            }
        };
        for event in events {
            let line = enrich(
                &event,
                manager,
                enrichment.hash_exe,
                &mut enrichment.cache,
                enrichment.symbols.as_ref(),
            );
            if tx.send(line).is_err() {
                break 'outer; // the writer stopped: output closed
            }
            emitted += 1;
            if let Err(e) = faults::after_event(emitted, manager) {
                result = Err(Failure::Capability(format!("{e}; {BYPASS_HINT}")));
                break 'outer;
            }
            if args.max_events.is_some_and(|m| emitted >= m) {
                break 'outer;
            }
        }
    }
    (emitted, enrichment.cache, result)
}

fn write_lines(
    mut output: Box<dyn Write + Send>,
    rx: mpsc::Receiver<String>,
) -> Result<(), String> {
    let mut out = BufWriter::new(&mut output);
    for line in rx {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        // One event per flush: consumers (the harness, ref-rules) act on each line.
        out.flush().map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn read_kallsyms(manager: &RingManager) -> Option<SymbolSummary> {
    match manager.with_requested(Cap::SYSLOG, "read-kallsyms: open /proc/kallsyms", || {
        File::open("/proc/kallsyms")
    }) {
        Ok(file) => match kallsyms::summarize(file) {
            Ok(s) => Some(s),
            Err(e) => {
                warn(format!("module_load: reading /proc/kallsyms failed: {e}"));
                None
            }
        },
        Err(e) => {
            warn(format!("module_load: read-kallsyms skipped: {e}"));
            None
        }
    }
}

fn enrich(
    event: &TraceEvent,
    manager: &RingManager,
    hash_exe: bool,
    cache: &mut ExeHashCache,
    symbols: Option<&SymbolSummary>,
) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    match event {
        TraceEvent::SchedProcessExec { pid, filename, .. } if hash_exe => {
            let digest = cache.lookup(filename).or_else(|| {
                let path = format!("/proc/{pid}/exe");
                match manager.with_requested(
                    Cap::SYS_PTRACE,
                    "hash-exe: open /proc/PID/exe",
                    || File::open(&path),
                ) {
                    Ok(file) => cache.hash_open_file(file).ok(),
                    // The process may be gone already; that is an ordinary miss.
                    Err(ScopeError::Operation(_)) => None,
                    Err(e) => {
                        warn(format!("sched_process_exec: hash-exe for pid {pid}: {e}"));
                        None
                    }
                }
            });
            value["sha256"] = digest.map_or(Value::Null, Value::String);
        }
        TraceEvent::ModuleLoad { .. } => {
            if let Some(s) = symbols {
                value["kernel_symbols"] = serde_json::to_value(s).unwrap_or(Value::Null);
            }
        }
        _ => {}
    }
    value.to_string()
}
