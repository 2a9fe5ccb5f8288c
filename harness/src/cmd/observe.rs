//! `capring observe`: run a command and print its capability timeline (every thread, every
//! credential change), optionally as an HTML page or a Perfetto trace.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use capring_observe::observer::cap_last_cap;
use capring_observe::timeline::{FaultKind, Stream};
use capring_observe::{interrupt, run, LaunchSpec};
use capring_report::views::write_observation;
use capring_spec::caps::{parse_name, Cap, CapSet};
use capring_spec::sys::signal_name;
use clap::Args;

/// `capring observe`'s options (the subcommand's help text is in the binary).
#[derive(Args)]
pub(crate) struct ObserveArgs {
    /// Print the timeline as JSON instead of one line per entry.
    #[arg(long)]
    json: bool,
    /// Also write the JSON timeline to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Take an all-threads snapshot every N milliseconds.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sample_ms: Option<u64>,
    /// Take an all-threads snapshot whenever the command prints a stdout (event) line.
    #[arg(long)]
    sample_on_stdout: bool,
    /// Kill the whole tree after SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    timeout: u64,
    /// Stop the command (SIGTERM, SIGKILL 2 s later) after it printed N stdout lines.
    #[arg(long, value_name = "N")]
    stop_after_lines: Option<usize>,
    /// Count only stdout lines matching this regular expression as event lines.
    #[arg(long, value_name = "REGEX")]
    event_pattern: Option<regex::Regex>,
    /// Inject a fault: capset(2) fails with EPERM.
    #[arg(long)]
    capset_eperm: bool,
    /// Inject a fault: prctl(PR_CAPBSET_DROP) fails with EPERM.
    #[arg(long)]
    capbset_drop_eperm: bool,
    /// Remove these capabilities from the bounding set before exec (comma separated).
    #[arg(long, value_name = "CAPS", value_delimiter = ',', value_parser = parse_cap)]
    bounding_drop: Vec<Cap>,
    /// Give the command /dev/null as stdin (default: inherit).
    #[arg(long)]
    stdin_null: bool,
    /// Only launch (same faults), without ptrace: no timeline beyond faults, samples and exit.
    #[arg(long)]
    no_trace: bool,
    /// Also write the timeline as a self-contained HTML page (one lane per thread) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Also write the timeline as Perfetto (Chrome Trace Event JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_cap(s: &str) -> Result<Cap, String> {
    parse_name(s).map_err(|e| e.to_string())
}

/// `capring observe`: runs the command and prints its timeline. Returns the command's own
/// exit status (as a shell reports it), or 128 + the signal when capring was interrupted.
pub(crate) fn execute(a: ObserveArgs) -> Result<i32> {
    let mut spec = LaunchSpec::new(&a.command[0], a.command[1..].iter().cloned());
    if a.capset_eperm {
        spec.faults.push(FaultKind::CapsetEperm);
    }
    if a.capbset_drop_eperm {
        spec.faults.push(FaultKind::CapbsetDropEperm);
    }
    spec.event_lines.pattern = a.event_pattern.clone();
    spec.bounding_drop = a.bounding_drop.iter().copied().collect::<CapSet>();
    spec.stdin_null = a.stdin_null;
    spec.timeout = Duration::from_secs(a.timeout);
    spec.stop_after_events = a.stop_after_lines;
    spec.sample_on_event = a.sample_on_stdout;
    interrupt::install()?;
    spec.sample_every = a.sample_ms.map(Duration::from_millis);
    spec.observe = !a.no_trace;
    let obs = run(&spec).with_context(|| format!("observing {}", a.command.join(" ")))?;

    // The command's own output goes to our stderr, so that our stdout is only the timeline.
    {
        let mut err = std::io::stderr().lock();
        for line in &obs.lines {
            let tag = match line.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let _ = writeln!(err, "{tag}| {}", line.text);
        }
    }
    if a.html.is_some() || a.perfetto.is_some() {
        write_observation(&obs, &a.command, a.html.as_deref(), a.perfetto.as_deref())?;
    }
    if let Some(path) = &a.out {
        let json = serde_json::to_string_pretty(&obs.timeline)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &obs.timeline)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", obs.timeline.render(cap_last_cap()))?;
        let procs = obs.timeline.processes();
        let threads: usize = procs.iter().map(|p| p.tids.len()).sum();
        writeln!(
            out,
            "{} ({} entries, {} processes, {} threads, {:.1} ms)",
            obs.exit,
            obs.timeline.entries.len(),
            procs.len(),
            threads,
            obs.wall.as_secs_f64() * 1e3
        )?;
    }
    out.flush()?;
    if let Some(sig) = interrupt::requested() {
        eprintln!("capring: interrupted: the command's tree was killed");
        return Ok(interrupt::exit_code(sig));
    }
    if let Some(sig) = obs.exit.signal {
        eprintln!("capring: command killed by {}", signal_name(sig));
    }
    Ok(obs.exit.shell_code())
}
