//! Host benchmarks (never timed tests):
//!
//! * `cargo xtask bench harness`: the whole scenario catalog observed (ptrace) ÷ the same
//!   runs unobserved, and one `ref-tracer --print-rings` ÷ spawning `/bin/true`.
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

fn time_check(bin: &Path, observe: bool) -> Result<Duration> {
    let start = Instant::now();
    let mut cmd = Command::new(bin.join("capring"));
    cmd.args([
        "check",
        "--tracer",
        "fixtures/tracers/ref-tracer.toml",
        "--format",
        "json",
    ])
    .current_dir(workspace())
    .env("CAPRING_BIN_DIR", bin)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if !observe {
        cmd.arg("--no-observe");
    }
    cmd.status().context("running capring check")?;
    Ok(start.elapsed())
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn harness(args: &HarnessArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench harness runs the conformance catalog and needs root");
    }
    let bin = build_release()?;
    let (mut obs, mut bare) = (Vec::new(), Vec::new());
    for i in 0..args.repeat.max(1) {
        eprintln!(
            "bench: catalog run {} of {} (observed, then unobserved)",
            i + 1,
            args.repeat
        );
        obs.push(time_check(&bin, true)?);
        bare.push(time_check(&bin, false)?);
    }
    let (o, b) = (median(obs), median(bare));
    let rings = time_spawns(
        args.spawns,
        &bin.join("ref-tracer"),
        &["--events", "execve", "--print-rings"],
    )?;
    let truth = time_spawns(args.spawns, Path::new("/bin/true"), &[])?;
    let r1 = o.as_secs_f64() / b.as_secs_f64();
    let r2 = rings.as_secs_f64() / truth.as_secs_f64();
    println!(
        "catalog observed   {:>9.3} s  (median of {})",
        o.as_secs_f64(),
        args.repeat
    );
    println!("catalog unobserved {:>9.3} s", b.as_secs_f64());
    println!("ratio observed/unobserved      {r1:.3}   (goal <= 1.3)");
    println!(
        "--print-rings {:>9.3} ms  /bin/true {:>7.3} ms  ratio {r2:.2}   (goal <= 3)",
        rings.as_secs_f64() * 1e3,
        truth.as_secs_f64() * 1e3
    );
    let path = write_result(
        "harness",
        &json!({
            "catalog_observed_s": o.as_secs_f64(), "catalog_unobserved_s": b.as_secs_f64(), "ratio": r1,
            "print_rings_ms": rings.as_secs_f64() * 1e3, "bin_true_ms": truth.as_secs_f64() * 1e3, "spawn_ratio": r2,
            "repeat": args.repeat, "spawns": args.spawns,
        }),
    )?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// CLOCK_MONOTONIC in ns: the clock of the ring log's `t_ns` (reference/src/rings.rs). A
/// copy, not a call: xtask cannot depend on the reference crate, whose build script needs the
/// clang that xtask itself installs.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench ring-share loads eBPF programs and needs root");
    }
    let bin = build_release()?;
    let log = workspace().join("target/bench/ring-log.jsonl");
    std::fs::create_dir_all(log.parent().expect("has a parent"))?;
    let _ = std::fs::remove_file(&log);
    let mut workload = Command::new(bin.join("ref-workload"))
        .args([
            "--duration",
            &format!("{}", args.seconds + 5.0),
            "--rate",
            &args.rate.to_string(),
            "--kinds",
            "exec,open",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ref-workload")?;
    let t0 = monotonic_ns();
    let tracer = Command::new(bin.join("ref-tracer"))
        .args([
            "--events",
            &args.events,
            "--duration",
            &args.seconds.to_string(),
            "--output",
            "/dev/null",
            "--ring-log",
        ])
        .arg(&log)
        .stderr(Stdio::piped())
        .output()
        .context("running ref-tracer")?;
    let t1 = monotonic_ns();
    let _ = workload.kill();
    let _ = workload.wait();
    if !tracer.status.success() {
        bail!(
            "ref-tracer failed: {}",
            String::from_utf8_lossy(&tracer.stderr)
        );
    }
    let text = std::fs::read_to_string(&log)?;
    let mut points: Vec<(u64, bool, String)> = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let t = v["t_ns"].as_u64().context("t_ns")?;
        let non_empty = v["effective"].as_array().is_some_and(|a| !a.is_empty());
        points.push((t, non_empty, v["ring"].as_str().unwrap_or("").to_string()));
    }
    let first = points.first().context("empty ring log")?;
    // From spawn to the first drop the process is in the Privileged ring (E = P).
    let mut non_empty = first.0.saturating_sub(t0);
    let mut config = 0;
    for w in points.windows(2) {
        if w[0].1 {
            non_empty += w[1].0 - w[0].0;
            if w[0].2 == "required" {
                config += w[1].0 - w[0].0;
            }
        }
    }
    if let Some(last) = points.last().filter(|p| p.1) {
        non_empty += t1.saturating_sub(last.0);
    }
    let total = t1 - t0;
    let requested = points
        .iter()
        .filter(|p| p.2.starts_with("requested"))
        .count();
    let share = non_empty as f64 / total as f64 * 100.0;
    let stderr = String::from_utf8_lossy(&tracer.stderr);
    let summary_line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("events;"))
        .unwrap_or("")
        .to_string();
    println!(
        "run {:.3} s, {} transitions, {requested} Requested raises",
        total as f64 / 1e9,
        points.len()
    );
    println!(
        "before the first drop {:.3} ms, Required ring {:.3} ms",
        first.0.saturating_sub(t0) as f64 / 1e6,
        config as f64 / 1e6
    );
    println!("share of time with a non-empty effective set: {share:.3} %   (goal <= 1 %)");
    println!("{summary_line}");
    let path = write_result(
        "ring-share",
        &json!({
            "seconds": total as f64 / 1e9, "transitions": points.len(), "requested_raises": requested,
            "privileged_start_ms": first.0.saturating_sub(t0) as f64 / 1e6, "required_ms": config as f64 / 1e6,
            "non_empty_share_percent": share, "events": args.events, "tracer_summary": summary_line,
        }),
    )?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}
