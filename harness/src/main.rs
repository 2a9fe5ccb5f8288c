//! `capring`: black-box conformance checker for tracers that drop capabilities through rings.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use capring_harness::observer::cap_last_cap;
use capring_harness::timeline::FaultKind;
use capring_harness::{run, LaunchSpec};
use capring_spec::caps::{parse_name, Cap, CapSet};
use capring_spec::sys::signal_name;
use clap::{Args, CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capring",
    version,
    about,
    propagate_version = true,
    after_help = "Examples:
  capring check --tracer fixtures/tracers/ref-tracer.toml
  capring check --tracer my-tracer.toml --scenario 'bypass-*' --format junit --out results/
  capring check --tracer my-tracer.toml --out results/ --html report.html --perfetto traces/
  capring report results/ --quiet
  capring observe --html timeline.html -- capsh --drop=cap_net_raw -- -c true
  capring mutants
  capring minimize --tracer fixtures/tracers/ref-tracer.toml --out snapshots/minimal-sets
  capring clauses | less

Profiles: harness/PROFILE.md. Clauses: spec/SPEC.md. Most commands need root."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command and print its capability timeline: every thread, every credential change.
    Observe(ObserveArgs),
    /// Run the scenario catalog against a tracer profile and judge every clause.
    ///
    /// Exit status: 0 when every MUST clause passed (or is an expected failure of the
    /// profile), 1 when one failed, 2 on bad input.
    Check(capring_harness::check_cmd::CheckArgs),
    /// Run the negative controls: each mutant must fail by its expected clause.
    ///
    /// Exit status: 0 when every mutant was caught, 1 otherwise, 2 on bad input.
    Mutants(MutantsArgs),
    /// Measure the minimal capability sets each event of a tracer needs on this kernel, and
    /// compare them with the Required ring the tracer uses and the oracle's prediction.
    ///
    /// Exit status: 0 when every event set was measured, 1 when one could not be, 2 on bad
    /// input.
    Minimize(capring_harness::minimize::MinimizeArgs),
    /// List the scenarios and the clauses each one checks.
    Scenarios(ListArgs),
    /// List the clauses of spec/SPEC.md and the scenarios that cover them.
    Clauses(ListArgs),
    /// Report on an earlier `check --out DIR` (or a directory of recorded runs): print the
    /// table again, write the HTML page or Perfetto traces. Needs no root.
    ///
    /// Exit status: as `check` (0, 1 when a MUST clause failed), 2 on bad input.
    Report(capring_harness::report_cmd::ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (capring.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct MutantsArgs {
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

fn run_mutants(a: MutantsArgs) -> Result<i32> {
    use capring_harness::{mutants, profile::Profile, scenario};
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
    if let Err(e) = capring_harness::catalog::check_programs(&profile) {
        eprintln!("capring: {e}");
        return Ok(2);
    }
    capring_harness::interrupt::install()?;
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
    if let Some(sig) = capring_harness::interrupt::requested() {
        return Ok(capring_harness::interrupt::exit_code(sig));
    }
    Ok(if results.iter().all(|r| r.caught) {
        0
    } else {
        1
    })
}

#[derive(Args)]
struct ListArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// A scenario catalog other than the built-in one.
    #[arg(long, value_name = "FILE")]
    scenarios: Option<PathBuf>,
}

fn list_scenarios(a: ListArgs) -> Result<i32> {
    let scenarios = capring_harness::catalog::load_scenarios(a.scenarios.as_deref())?;
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

fn list_clauses(a: ListArgs) -> Result<i32> {
    let scenarios = capring_harness::catalog::load_scenarios(a.scenarios.as_deref())?;
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

#[derive(Args)]
struct ObserveArgs {
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

fn observe(a: ObserveArgs) -> Result<i32> {
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
    capring_harness::interrupt::install()?;
    spec.sample_every = a.sample_ms.map(Duration::from_millis);
    spec.observe = !a.no_trace;
    let obs = run(&spec).with_context(|| format!("observing {}", a.command.join(" ")))?;

    // The command's own output goes to our stderr, so that our stdout is only the timeline.
    {
        let mut err = std::io::stderr().lock();
        for line in &obs.lines {
            let tag = match line.stream {
                capring_harness::timeline::Stream::Stdout => "stdout",
                capring_harness::timeline::Stream::Stderr => "stderr",
            };
            let _ = writeln!(err, "{tag}| {}", line.text);
        }
    }
    if a.html.is_some() || a.perfetto.is_some() {
        capring_harness::report_cmd::write_observation(
            &obs,
            &a.command,
            a.html.as_deref(),
            a.perfetto.as_deref(),
        )?;
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
    if let Some(sig) = capring_harness::interrupt::requested() {
        eprintln!("capring: interrupted: the command's tree was killed");
        return Ok(capring_harness::interrupt::exit_code(sig));
    }
    if let Some(sig) = obs.exit.signal {
        eprintln!("capring: command killed by {}", signal_name(sig));
    }
    Ok(obs.exit.shell_code())
}

/// `capring.1`, and `capring-<command>.1` for each visible subcommand.
fn write_man_pages(dir: &std::path::Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command();
    // Built, the subcommands know their full usage (`capring check …`).
    cmd.build();
    let mut pages = vec![("capring".to_string(), cmd.clone())];
    // Not the hidden `man` itself, nor clap's `help`.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("capring-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli: Cli = capring_cli::parse_or_exit("capring");
    let result = match cli.command {
        Command::Observe(a) => observe(a),
        Command::Check(a) => capring_harness::check_cmd::execute(&a),
        Command::Mutants(a) => run_mutants(a),
        Command::Minimize(a) => capring_harness::minimize::execute(&a),
        Command::Scenarios(a) => list_scenarios(a),
        Command::Clauses(a) => list_clauses(a),
        Command::Report(a) => capring_harness::report_cmd::execute(&a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "capring",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man { dir } => write_man_pages(&dir),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("capring: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
