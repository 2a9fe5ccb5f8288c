//! Host benchmarks (never timed tests):
//!
//! * `cargo xtask bench harness`: the cost of observation. Each scenario of the catalog, and
//!   an exec storm, run observed (ptrace) and unobserved; both end on the same condition (the
//!   scenario's number of event lines) under the same workload, and the figure is the time
//!   from launch to that line, read from the recorded runs: the waits around it (the
//!   steady-state minimum, teardown) are the same in both modes and left out. Also events
//!   per second of the steady state, and one `ref-tracer --print-rings` ÷ `/bin/true`.
//! * `cargo xtask bench ring-share`: an exec storm under `ref-tracer`; the share of time with
//!   a non-empty effective set, from `--ring-log` (process start to exit, configuration
//!   included).
//!
//! Release builds; results are printed and written to `target/bench/*.json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build_release() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: building release binaries");
    let ok = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "capring-harness",
            "-p",
            "capring-reference",
            "--bins",
        ])
        .current_dir(workspace())
        .status()?
        .success();
    if !ok {
        bail!("cargo build --release failed");
    }
    Ok(workspace().join("target/release"))
}

fn write_result(name: &str, value: &serde_json::Value) -> Result<PathBuf> {
    let dir = workspace().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    Ok(path)
}

fn time_spawns(n: u32, program: &Path, args: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..n {
        let st = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if st.code().is_none() {
            bail!("{} was killed", program.display());
        }
    }
    Ok(start.elapsed() / n)
}

#[derive(clap::Args)]
pub struct HarnessArgs {
    /// Repetitions of each catalog run (the median is used).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Spawns for the --print-rings comparison.
    #[arg(long, default_value_t = 200)]
    spawns: u32,
}

/// One `capring check` of a catalog into `out` (its runs/<scenario>.json are read afterwards).
fn run_check(
    bin: &Path,
    profile: &str,
    scenarios: Option<&str>,
    observe: bool,
    out: &Path,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(out);
    let mut cmd = Command::new(bin.join("capring"));
    cmd.args(["check", "--tracer", profile, "--format", "json", "--out"])
        .arg(out)
        .current_dir(workspace())
        .env("CAPRING_BIN_DIR", bin)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(s) = scenarios {
        cmd.args(["--scenarios", s]);
    }
    if !observe {
        cmd.arg("--no-observe");
    }
    cmd.status().context("running capring check")?;
    Ok(())
}

/// What one run's event lines say: launch → first event, launch → the line that ends it.
#[derive(Clone, Copy)]
struct Timing {
    first_s: f64,
    last_s: f64,
    lines: usize,
}

impl Timing {
    fn rate(&self) -> f64 {
        self.lines.saturating_sub(1) as f64 / (self.last_s - self.first_s).max(1e-9)
    }
}

/// Per scenario: the times of its event lines up to the scenario's own count (what ends the
/// run in both modes). Teardown, the steady-state minimum and the exit are left out: they
/// are waits, not work, and the same in both modes.
fn timings(out: &Path) -> Result<Vec<(String, Timing)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(out.join("runs"))? {
        let path = e?.path();
        let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let want = rec["plan"]["stop_after_events"].as_u64().unwrap_or(0) as usize;
        let events: Vec<f64> = rec["observation"]["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["event"].as_bool() == Some(true))
            .filter_map(|l| l["t_ns"].as_u64())
            .map(|t| t as f64 / 1e9)
            .take(want)
            .collect();
        if want < 2 || events.len() < want {
            continue; // runs not expected to emit their lines (usage, drop failures, help)
        }
        let name = rec["plan"]["scenario"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let t = Timing {
            first_s: events[0],
            last_s: events[want - 1],
            lines: want,
        };
        v.push((name, t));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median timing per scenario over `repeat` runs of one mode.
fn repeated(
    bin: &Path,
    profile: &str,
    scenarios: Option<&str>,
    observe: bool,
    repeat: usize,
) -> Result<Vec<(String, Timing)>> {
    let out = workspace().join("target/bench/check");
    let mut all: Vec<Vec<(String, Timing)>> = Vec::new();
    for _ in 0..repeat {
        run_check(bin, profile, scenarios, observe, &out)?;
        all.push(timings(&out)?);
    }
    let mut merged = Vec::new();
    for (name, t0) in &all[0] {
        let of = |f: fn(&Timing) -> f64| {
            median(
                all.iter()
                    .filter_map(|r| r.iter().find(|(m, _)| m == name))
                    .map(|(_, t)| f(t))
                    .collect(),
            )
        };
        let t = Timing {
            first_s: of(|t| t.first_s),
            last_s: of(|t| t.last_s),
            lines: t0.lines,
        };
        merged.push((name.clone(), t));
    }
    Ok(merged)
}

/// Prints one mode against the other, per scenario; returns the sums of the time to the line
/// that ends each run (observed, unobserved).
fn compare(title: &str, obs: &[(String, Timing)], bare: &[(String, Timing)]) -> (f64, f64) {
    println!("{title}");
    println!(
        "  {:<24} {:>12} {:>12} {:>9} {:>9} {:>6}",
        "scenario", "to-end obs", "to-end bare", "ev/s obs", "ev/s bare", "ratio"
    );
    let (mut so, mut sb) = (0.0, 0.0);
    for (name, o) in obs {
        let Some((_, b)) = bare.iter().find(|(n, _)| n == name) else {
            continue;
        };
        so += o.last_s;
        sb += b.last_s;
        println!(
            "  {name:<24} {:>10.3} s {:>10.3} s {:>9.0} {:>9.0} {:>6.2}",
            o.last_s,
            b.last_s,
            o.rate(),
            b.rate(),
            o.last_s / b.last_s
        );
    }
    (so, sb)
}

fn per_scenario(v: &[(String, Timing)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = v
        .iter()
        .map(|(n, t)| {
            let doc = json!({"to_end_s": t.last_s, "first_event_s": t.first_s,
                "lines": t.lines, "events_per_s": t.rate()});
            (n.clone(), doc)
        })
        .collect();
    map.into()
}

pub fn harness(args: &HarnessArgs) -> Result<()> {
    if !capring_spec::sys::is_root() {
        bail!("bench harness runs the conformance catalog and needs root");
    }
    let bin = build_release()?;
    let repeat = args.repeat.max(1);
    let reference = "fixtures/tracers/ref-tracer.toml";
    let storm = "fixtures/bench/ref-tracer-storm.toml";
    let storm_scenarios = Some("fixtures/bench/scenarios.toml");
    eprintln!("bench: the catalog and an exec storm, observed and unobserved, {repeat} times each");
    let obs = repeated(&bin, reference, None, true, repeat)?;
    let bare = repeated(&bin, reference, None, false, repeat)?;
    let storm_obs = repeated(&bin, storm, storm_scenarios, true, repeat)?;
    let storm_bare = repeated(&bin, storm, storm_scenarios, false, repeat)?;
    let (so, sb) = compare(
        "the catalog (launch to the line that ends each run)",
        &obs,
        &bare,
    );
    let (to, tb) = compare("exec storm", &storm_obs, &storm_bare);
    let (r1, r3) = (so / sb, to / tb);
    println!("catalog: observed {so:.3} s, unobserved {sb:.3} s: observation cost {r1:.3}   (goal <= 1.3)");
    println!("exec storm: observed {to:.3} s, unobserved {tb:.3} s: observation cost {r3:.3}");
    let rings = time_spawns(
        args.spawns,
        &bin.join("ref-tracer"),
        &["--events", "execve", "--print-rings"],
    )?;
    let truth = time_spawns(args.spawns, Path::new("/bin/true"), &[])?;
    let r2 = rings.as_secs_f64() / truth.as_secs_f64();
    println!(
        "--print-rings {:>9.3} ms  /bin/true {:>7.3} ms  ratio {r2:.2}   (goal <= 3)",
        rings.as_secs_f64() * 1e3,
        truth.as_secs_f64() * 1e3
    );
    let path = write_result(
        "harness",
        &json!({
            "catalog_observed_s": so, "catalog_unobserved_s": sb, "observation_cost": r1,
            "storm_observed_s": to, "storm_unobserved_s": tb, "storm_observation_cost": r3,
            "observed": per_scenario(&obs), "unobserved": per_scenario(&bare),
            "storm_observed": per_scenario(&storm_obs), "storm_unobserved": per_scenario(&storm_bare),
            "print_rings_ms": rings.as_secs_f64() * 1e3, "bin_true_ms": truth.as_secs_f64() * 1e3,
            "spawn_ratio": r2, "repeat": repeat, "spawns": args.spawns,
        }),
    )?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

#[derive(clap::Args)]
pub struct RingShareArgs {
    /// Seconds of exec storm.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Events traced (sched_process_exec raises cap_sys_ptrace per new program).
    #[arg(long, default_value = "execve,openat,sched_process_exec")]
    events: String,
    /// Exec rate asked of the workload, per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
}

pub fn ring_share(args: &RingShareArgs) -> Result<()> {
    if !capring_spec::sys::is_root() {
        bail!("bench ring-share loads eBPF programs and needs root");
    }
    let log = workspace().join("target/bench/ring-log.jsonl");
    std::fs::create_dir_all(log.parent().expect("has a parent"))?;
    let _ = std::fs::remove_file(&log);
    let (t0, t1, stderr) = run_with_ring_log(args, &log)?;
    let points = ring_points(&std::fs::read_to_string(&log)?)?;
    let first = points.first().context("empty ring log")?;
    // From spawn to the first drop the process is in the Privileged ring (E = P).
    let mut non_empty = first.t.saturating_sub(t0);
    let mut config = 0;
    for w in points.windows(2) {
        if w[0].non_empty {
            non_empty += w[1].t - w[0].t;
            if w[0].ring == "required" {
                config += w[1].t - w[0].t;
            }
        }
    }
    if let Some(last) = points.last().filter(|p| p.non_empty) {
        non_empty += t1.saturating_sub(last.t);
    }
    let total = t1 - t0;
    let requested = points
        .iter()
        .filter(|p| p.ring.starts_with("requested"))
        .count();
    let share = non_empty as f64 / total as f64 * 100.0;
    let summary_line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("events;"))
        .unwrap_or("")
        .to_string();
    let privileged_ms = first.t.saturating_sub(t0) as f64 / 1e6;
    println!(
        "run {:.3} s, {} transitions, {requested} Requested raises",
        total as f64 / 1e9,
        points.len()
    );
    println!(
        "before the first drop {privileged_ms:.3} ms, Required ring {:.3} ms",
        config as f64 / 1e6
    );
    println!("share of time with a non-empty effective set: {share:.3} %   (goal <= 1 %)");
    println!("{summary_line}");
    let path = write_result(
        "ring-share",
        &json!({
            "seconds": total as f64 / 1e9, "transitions": points.len(), "requested_raises": requested,
            "privileged_start_ms": privileged_ms, "required_ms": config as f64 / 1e6,
            "non_empty_share_percent": share, "events": args.events, "tracer_summary": summary_line,
        }),
    )?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// Runs ref-tracer with `--ring-log` under an exec storm; returns the monotonic start and
/// end of the tracer's run and its stderr.
fn run_with_ring_log(args: &RingShareArgs, log: &Path) -> Result<(u64, u64, String)> {
    let bin = build_release()?;
    let mut workload = Command::new(bin.join("ref-workload"))
        .args(["--duration", &format!("{}", args.seconds + 5.0)])
        .args(["--rate", &args.rate.to_string(), "--kinds", "exec,open"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ref-workload")?;
    let t0 = capring_spec::sys::monotonic_ns();
    let tracer = Command::new(bin.join("ref-tracer"))
        .args(["--events", &args.events])
        .args(["--duration", &args.seconds.to_string()])
        .args(["--output", "/dev/null", "--ring-log"])
        .arg(log)
        .stderr(Stdio::piped())
        .output()
        .context("running ref-tracer")?;
    let t1 = capring_spec::sys::monotonic_ns();
    let _ = workload.kill();
    let _ = workload.wait();
    let stderr = String::from_utf8_lossy(&tracer.stderr).into_owned();
    if !tracer.status.success() {
        bail!("ref-tracer failed: {stderr}");
    }
    Ok((t0, t1, stderr))
}

/// One line of the reference's ring log: when, whether E was non-empty, which ring.
struct RingPoint {
    t: u64,
    non_empty: bool,
    ring: String,
}

fn ring_points(text: &str) -> Result<Vec<RingPoint>> {
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            Ok(RingPoint {
                t: v["t_ns"].as_u64().context("t_ns")?,
                non_empty: v["effective"].as_array().is_some_and(|a| !a.is_empty()),
                ring: v["ring"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect()
}

#[derive(clap::Args)]
pub struct InterruptArgs {
    /// Interrupts per misbehaviour.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

/// Starts `capring check` on misbehave.sh in `mode`; returns it once the script logged a pid.
fn start_misbehaving(bin: &Path, mode: &str, dir: &Path) -> Result<std::process::Child> {
    let fx = workspace().join("fixtures/tracers/misbehaving");
    let profile = dir.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"misbehave-{mode}\"\nbinary = \"{}\"\nargs = [\"{mode}\"]\ncatalog = \"{}\"\n",
            fx.join("misbehave.sh").display(),
            fx.join("misbehave.catalog.toml").display()
        ),
    )?;
    let pids = dir.join("pids");
    std::fs::write(&pids, "")?;
    let child = Command::new(bin.join("capring"))
        .args([
            "check",
            "--format",
            "json",
            "--scenario",
            "interrupt-paranoid",
            "--scenarios",
        ])
        .arg(fx.join("scenarios.toml"))
        .arg("--tracer")
        .arg(&profile)
        .env("CAPRING_TEST_PIDS", &pids)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let end = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&pids)?.trim().is_empty() {
        if Instant::now() > end {
            bail!("misbehave.sh {mode} never started");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Into the run: configuration for `hang`, the steady state for the others.
    std::thread::sleep(Duration::from_millis(300));
    Ok(child)
}

/// `cargo xtask bench interrupt`: SIGINT to `capring check` → its exit, while the tracer
/// hangs, ignores SIGTERM or floods stdout (goal: under 1 s).
pub fn interrupt(args: &InterruptArgs) -> Result<()> {
    if !capring_spec::sys::is_root() {
        bail!("bench interrupt changes perf_event_paranoid through capring and needs root");
    }
    let bin = build_release()?;
    let dir = workspace().join("target/bench/interrupt");
    std::fs::create_dir_all(&dir)?;
    let mut doc = serde_json::Map::new();
    for mode in ["hang", "ignore-term", "flood"] {
        let mut delays = Vec::new();
        for _ in 0..args.repeat.max(1) {
            let mut child = start_misbehaving(&bin, mode, &dir)?;
            let sent = Instant::now();
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let status = child.wait()?;
            delays.push(sent.elapsed().as_secs_f64() * 1e3);
            if status.code() != Some(130) {
                bail!("capring ended with {status} after SIGINT ({mode})");
            }
        }
        let max = delays.iter().copied().fold(0.0, f64::max);
        let med = median(delays.clone());
        println!(
            "{mode:<12} SIGINT to exit: median {med:>7.1} ms, max {max:>7.1} ms   (goal < 1000 ms)"
        );
        doc.insert(
            mode.into(),
            json!({"median_ms": med, "max_ms": max, "delays_ms": delays}),
        );
    }
    let path = write_result("interrupt", &doc.into())?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}
