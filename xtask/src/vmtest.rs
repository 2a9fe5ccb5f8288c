//! `vm-test`, `kernels update|list` and `bench vm`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use capring_vm::accel::{Accel, AccelChoice};
use capring_vm::apt;
use capring_vm::cache::CacheState;
use capring_vm::catalog::{Catalog, Keyring, Lock};
use capring_vm::closure;
use capring_vm::guest::GuestConfig;
use capring_vm::initramfs::Initramfs;
use capring_vm::keyring::{self, KeyringState};
use capring_vm::outcome::Outcome;
use capring_vm::protocol::ExitStatus;
use capring_vm::qemu::RunReport;
use capring_vm::session::{self, KernelSpec, Paths, PreparedKernel, RunOptions, MUSL_TARGET};
use capring_vm::settings::{Drill, GuestCommand, GuestSettings};
use capring_vm::tracer::{self, TracerFiles};

use crate::{prereq, snapshots, workspace, VmTestArgs};

/// Everything needed before the first boot.
struct Prepared {
    paths: Paths,
    kernels: Vec<PreparedKernel>,
    base: Vec<u8>,
    guest: GuestConfig,
    qemu: PathBuf,
    /// `--tracer`: the profile judged instead of the reference.
    tracer: Option<TracerFiles>,
    /// Guest memory (more when the initramfs holds a tracer's libraries).
    memory_mb: u32,
}

fn load_guest(paths: &Paths, a: &VmTestArgs) -> Result<GuestConfig> {
    let p = a
        .guest_config
        .clone()
        .unwrap_or_else(|| paths.guest.clone());
    Ok(GuestConfig::load(&p)?)
}

/// Builds the musl packages of the guest config; a failed build is reported
/// and whatever binaries exist are used (missing listed ones fail below).
fn build_guest_packages(paths: &Paths, guest: &GuestConfig) -> Result<()> {
    if guest.packages.is_empty() {
        return Ok(());
    }
    prereq::bpf_toolchain()?;
    let packages: Vec<String> = guest
        .packages
        .iter()
        .flat_map(|p| ["-p".to_string(), p.clone()])
        .collect();
    musl_build(paths, &packages, &guest.packages.join(", "))?;
    for f in &guest.feature_builds {
        musl_build(paths, &f.cargo_args(), &f.bins.join(", "))?;
    }
    Ok(())
}

/// `cargo build --release --target MUSL_TARGET ARGS`; a failure is a warning naming `what`.
fn musl_build(paths: &Paths, args: &[String], what: &str) -> Result<()> {
    eprintln!(
        "building guest binaries: cargo build --release --target {MUSL_TARGET} {}",
        args.join(" ")
    );
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&paths.workspace)
        .args(["build", "--release", "--target", MUSL_TARGET])
        .args(args)
        .status()
        .context("running cargo build for the guest binaries")?;
    if !st.success() {
        eprintln!("warning: the musl build of {what} failed ({st}); using whatever binaries exist");
    }
    Ok(())
}

fn guest_binaries(
    paths: &Paths,
    guest: &GuestConfig,
    config: &std::path::Path,
) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for name in &guest.binaries {
        let p = paths.musl_bin(name);
        if !p.is_file() {
            return Err(capring_vm::Error::MissingGuestBinary {
                name: name.clone(),
                config: config.to_path_buf(),
                path: p,
            }
            .into());
        }
        out.push((name.clone(), p));
    }
    Ok(out)
}

/// Builds the agent and the guest binaries, packs the shared part of the initramfs and makes
/// sure every kernel of `--kernel` is in the cache: everything before the first boot.
fn prepare(a: &VmTestArgs) -> Result<Prepared> {
    let paths = Paths::new(&workspace());
    let catalog = Catalog::load(&paths.catalog)?;
    let lock = Lock::load(&paths.lock)?;
    let guest = load_guest(&paths, a)?;
    let specs = session::parse_kernel_arg(&a.kernel, &catalog)?;
    let qemu = prereq::qemu()?;
    prereq::musl_target()?;

    // Build everything before the first boot.
    let agent = if a.no_build {
        paths.musl_bin("vm-agent")
    } else {
        session::build_agent(&paths)?
    };
    if !agent.is_file() {
        bail!(
            "guest agent {} not built (drop --no-build)",
            agent.display()
        );
    }
    if !a.no_build {
        build_guest_packages(&paths, &guest)?;
    }
    let (base, tracer, memory_mb) = pack_initramfs(&paths, a, &guest, &agent)?;
    let mut cache = paths.cache();
    cache.verbose = a.verbose;
    let mut kernels = Vec::new();
    for spec in &specs {
        kernels.push(prepare_kernel(spec, &catalog, &lock, &cache)?);
    }
    Ok(Prepared {
        paths,
        kernels,
        base,
        guest,
        qemu,
        tracer,
        memory_mb,
    })
}

/// The initramfs every kernel boots (agent, guest binaries, fixtures/, the measured tables
/// and, with `--tracer`, the tracer's files), the tracer's files, and the guest memory in MiB
/// that initramfs needs.
fn pack_initramfs(
    paths: &Paths,
    a: &VmTestArgs,
    guest: &GuestConfig,
    agent: &std::path::Path,
) -> Result<(Vec<u8>, Option<TracerFiles>, u32)> {
    let config_path = a
        .guest_config
        .clone()
        .unwrap_or_else(|| paths.guest.clone());
    let bins = guest_binaries(paths, guest, &config_path)?;
    let fixtures = paths.workspace.join("fixtures");
    let mut fs = session::base_fs(agent, &bins, Some(&fixtures))?;
    let tracer = match &a.tracer {
        Some(profile) => Some(add_tracer(&mut fs, profile, &a.guest_file, guest)?),
        None => None,
    };
    // The measured tables `capring check` judges the Required ring against, where it looks
    // for them: /snapshots/minimal-sets next to /fixtures.
    let tables = paths.workspace.join("snapshots/minimal-sets");
    if tables.is_dir() {
        fs.dir("snapshots")?;
        fs.tree(&tables, "snapshots/minimal-sets")?;
    }
    let base = fs.to_bytes();
    let memory_mb = match &tracer {
        Some(_) => session::memory_for(base.len() as u64),
        None => 512,
    };
    eprintln!(
        "initramfs: agent + {} binaries + fixtures/ + snapshots/minimal-sets/{} = {:.1} MiB (guest memory {memory_mb} MiB)",
        bins.len(),
        if tracer.is_some() {
            " + the tracer's files"
        } else {
            ""
        },
        base.len() as f64 / (1 << 20) as f64
    );
    Ok((base, tracer, memory_mb))
}

/// Resolves one `--kernel` entry to a verified image in the cache (fetching it if needed) and
/// says on stderr where it came from.
fn prepare_kernel(
    spec: &KernelSpec,
    catalog: &Catalog,
    lock: &Lock,
    cache: &capring_vm::cache::KernelCache,
) -> Result<PreparedKernel> {
    let k = session::prepare_kernel(spec, catalog, lock, cache)?;
    let how = match (&k.entry, k.ensured.network_requests) {
        (None, _) => "local image".to_string(),
        (Some(_), 0) => "cached".to_string(),
        (Some(_), n) => format!("fetched, {n} network requests"),
    };
    let pkg = k
        .entry
        .as_ref()
        .map(|e| format!("{} {}", e.package, e.version))
        .unwrap_or_default();
    eprintln!(
        "kernel {}: {} {pkg} ({how})",
        k.label, k.ensured.image.release
    );
    Ok(k)
}

/// Copies a tracer's profile, catalog, programs and their libraries (and `--guest-file`s)
/// into `fs` at their host paths.
fn add_tracer(
    fs: &mut Initramfs,
    profile: &std::path::Path,
    extra: &[PathBuf],
    guest: &GuestConfig,
) -> Result<TracerFiles> {
    let started = Instant::now();
    let t = TracerFiles::load(profile, &guest.binaries, &host_search())?;
    let before = fs.data_bytes();
    let mut libs = 0;
    for p in &t.programs {
        libs += closure::place_program(fs, p)
            .with_context(|| format!("copying {} into the guest", p.display()))?
            .len();
    }
    for p in &t.data {
        closure::place_data(fs, p)
            .with_context(|| format!("copying {} into the guest", p.display()))?;
    }
    for p in extra {
        let abs = std::path::absolute(p).with_context(|| p.display().to_string())?;
        closure::place(fs, &abs)
            .with_context(|| format!("copying {} into the guest", p.display()))?;
    }
    eprintln!(
        "tracer {}: {} program{} ({}) + {libs} libraries, {:.1} MiB, in {:.2}s",
        t.name,
        t.programs.len(),
        if t.programs.len() == 1 { "" } else { "s" },
        t.programs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        (fs.data_bytes() - before) as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(t)
}

fn commands(p: &Prepared, a: &VmTestArgs, kernel: &str) -> Result<Vec<GuestCommand>> {
    let vcpus = p.guest.vcpus;
    Ok(match (&a.run, &p.tracer) {
        (Some(cmdline), _) => vec![GuestCommand {
            name: "run".into(),
            argv: cmdline.split_whitespace().map(str::to_string).collect(),
            timeout_secs: a.run_timeout,
            ok_codes: Vec::new(),
        }],
        (None, Some(t)) => vec![p
            .guest
            .tracer_command(
                &closure::guest_path(&t.profile).to_string_lossy(),
                a.scenario.as_deref(),
                vcpus,
            )
            .map_err(|e| anyhow!("{}: {e}", p.paths.guest.display()))?],
        (None, None) => p.guest.commands_with(
            a.minimize.then_some("minimize"),
            kernel,
            a.scenario.as_deref(),
            vcpus,
        ),
    })
}

/// Where the host looks for a tracer's programs named by a bare name.
fn host_search() -> tracer::Search {
    tracer::Search {
        bin_dir: std::env::var_os(BIN_DIR)
            .filter(|v| !v.is_empty())
            .map(|v| std::path::absolute(PathBuf::from(v)).unwrap_or_default()),
        path: std::env::var("PATH").unwrap_or_default(),
    }
}

/// capring's own search directory for programs named by a bare name.
const BIN_DIR: &str = "CAPRING_BIN_DIR";

/// The guest commands' environment: a tracer's programs are found at their host paths
/// (through `PATH`, or `$CAPRING_BIN_DIR` when the host sets it).
fn guest_env(p: &Prepared) -> Vec<(String, String)> {
    let mut env = p.guest.env.clone();
    if p.tracer.is_some() {
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), tracer::GUEST_PATH.into()));
        }
        if let Some(d) = host_search().bin_dir {
            env.push((BIN_DIR.into(), d.to_string_lossy().into_owned()));
        }
    }
    env
}

fn choose_accel(p: &Prepared, choice: AccelChoice, verbose: bool) -> Result<Accel> {
    let verdict_file = p.paths.out_root.join("accel.json");
    let first = &p.kernels[0];
    let mut probe = || -> capring_vm::Result<bool> {
        eprintln!(
            "probing KVM: booting kernel {} under KVM (must say HELLO within 8 s)…",
            first.label
        );
        let mut opts = RunOptions::new(p.qemu.clone(), Accel::Kvm);
        opts.boot_timeout = Duration::from_secs(8);
        opts.verbose = verbose;
        let s = session::settings(Vec::new(), &p.guest.results_dir, Vec::new());
        let out = p.paths.out_root.join("kvm-probe");
        // KVM may hang the guest (nested setups) or make QEMU itself fail (e.g. "failed to
        // set MSR"): either way it is unusable here, and TCG is used.
        match session::run_vm(
            "kvm-probe",
            &first.ensured.image.vmlinuz,
            &p.base,
            &s,
            &out,
            &opts,
            &mut || {},
        ) {
            Ok(r) => Ok(r.evidence.hello),
            Err(e) => {
                eprintln!("KVM probe failed: {e}");
                Ok(false)
            }
        }
    };
    let (accel, why) = session::choose_accel(choice, &p.qemu, &verdict_file, &mut probe)?;
    eprintln!("accelerator: {accel} ({why})");
    Ok(accel)
}

/// Runs one kernel, retrying once on BOOT_TIMEOUT (under TCG if it was KVM).
fn run_one(
    p: &Prepared,
    k: &PreparedKernel,
    settings: &GuestSettings,
    opts: &RunOptions,
    on_hello: &mut dyn FnMut(),
) -> Result<RunReport> {
    // Re-verify the cached image right before booting it.
    if let Some(entry) = &k.entry {
        if let CacheState::Corrupt(why) = p.paths.cache().check(entry) {
            bail!(
                "kernel {}: cached image became corrupt ({why}); not booting it",
                k.label
            );
        }
    }
    let out = kernel_out(p, &k.label);
    let mut said_hello = false;
    let mut hello = || {
        if !said_hello {
            said_hello = true;
            on_hello();
        }
    };
    let vmlinuz = &k.ensured.image.vmlinuz;
    let r = session::run_vm(&k.label, vmlinuz, &p.base, settings, &out, opts, &mut hello)?;
    if r.outcome != Outcome::BootTimeout {
        return Ok(r);
    }
    let mut retry = opts.clone();
    retry.accel = Accel::Tcg;
    retry.boot_timeout = opts
        .boot_timeout
        .max(session::default_boot_timeout(Accel::Tcg));
    eprintln!(
        "[{}] BOOT_TIMEOUT under {}; retrying once under tcg",
        k.label, opts.accel
    );
    let mut s = settings.clone();
    s.nonce = session::nonce();
    Ok(session::run_vm(
        &k.label, vmlinuz, &p.base, &s, &out, &retry, &mut hello,
    )?)
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into())
}

/// `cmds`: what the guest was asked to run (an exit code a command accepts counts as ok).
fn results_summary(r: &RunReport, cmds: &[GuestCommand]) -> String {
    let total = r.commands.len();
    let accepted = |name: &str, status: &str| {
        let st = status.parse::<ExitStatus>();
        match (cmds.iter().find(|c| c.name == name), st) {
            (Some(c), Ok(st)) => c.accepts(st),
            (None, Ok(st)) => st.success(),
            _ => false,
        }
    };
    let ok = r.commands.iter().filter(|(n, s)| accepted(n, s)).count();
    let mut s = format!("{ok}/{total} commands ok");
    if let Some((o, n)) = r.tap {
        s.push_str(&format!(", tap {o} ok / {n} not ok"));
    }
    if !r.files.is_empty() {
        s.push_str(&format!(", {} files", r.files.len()));
    }
    s
}

fn print_table(rows: &[(String, Result<RunReport, String>)], per_kernel: &[Vec<GuestCommand>]) {
    // Local images are labelled after their file name, which may be long.
    let w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(14);
    println!();
    println!(
        "{:<w$} {:<28} {:<5} {:<13} {:>8} {:>8}  results",
        "kernel", "release", "accel", "outcome", "boot", "run"
    );
    for ((label, r), cmds) in rows.iter().zip(per_kernel) {
        match r {
            Ok(r) => {
                println!(
                    "{:<w$} {:<28} {:<5} {:<13} {:>8} {:>8}  {}",
                    label,
                    r.release.clone().unwrap_or_else(|| "-".into()),
                    r.accel.to_string(),
                    r.outcome.to_string(),
                    fmt_secs(r.boot_secs),
                    fmt_secs(r.run_secs),
                    results_summary(r, cmds)
                );
                if r.outcome != Outcome::Pass {
                    println!("{:<w$} reason: {}", "", r.reason);
                }
            }
            Err(e) => println!("{label:<w$} {:<28} {:<5} {:<13} {e}", "-", "-", "ERROR"),
        }
    }
}

fn print_failure_details(r: &RunReport, out: &std::path::Path) {
    if r.outcome == Outcome::Pass {
        return;
    }
    eprintln!(
        "[{}] {}: {} (logs in {})",
        r.label,
        r.outcome,
        r.reason,
        out.display()
    );
    if matches!(r.outcome, Outcome::KernelPanic | Outcome::BootTimeout) {
        for l in r
            .console_tail
            .iter()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  console| {l}");
        }
        if r.console_tail
            .iter()
            .any(|l| l.contains("IO-APIC + timer doesn't work"))
        {
            eprintln!("  hint: try --append noapic");
        }
    }
    for c in &r.transcript.commands {
        if c.exit.is_some_and(|s| s.success()) {
            continue;
        }
        for l in c
            .stderr
            .iter()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  {}| {l}", c.name);
        }
    }
}

/// One kernel's result: its label, and its report or why there is none.
type Row = (String, Result<RunReport, String>);

/// `cargo xtask vm-test`: boots every kernel of `--kernel`, runs the guest commands and judges
/// the outcomes, snapshots and expected verdicts. Returns the process exit code (0: all
/// passed).
pub fn vm_test(a: &VmTestArgs) -> Result<u8> {
    let p = prepare(a)?;
    let accel = choose_accel(&p, a.accel, a.verbose)?;
    let opts = run_options(&p, a, accel);
    let drill = match a.drill.as_deref() {
        Some("panic") => Some(Drill::Panic),
        Some("hang") => Some(Drill::Hang),
        _ => None,
    };
    let per_kernel = p
        .kernels
        .iter()
        .map(|k| commands(&p, a, &k.label))
        .collect::<Result<Vec<_>>>()?;
    let rows = boot_all(&p, a, &opts, drill, &per_kernel);

    for (label, r) in &rows {
        if let Ok(r) = r {
            print_failure_details(r, &kernel_out(&p, label));
        }
    }
    print_table(&rows, &per_kernel);
    write_summary(&p, a, &rows);
    let all_pass = rows
        .iter()
        .all(|(_, r)| matches!(r, Ok(r) if r.outcome == Outcome::Pass));
    let snapshots_ok = if a.run.is_none() && a.drill.is_none() {
        check_snapshots(a, &p, &rows)?
    } else {
        true
    };
    let verdicts_ok = a.run.is_some() || check_expectations(&p, &rows)?;
    Ok(if all_pass && snapshots_ok && verdicts_ok {
        0
    } else {
        1
    })
}

/// The QEMU options shared by every kernel of the run, from the flags and the prepared guest.
fn run_options(p: &Prepared, a: &VmTestArgs, accel: Accel) -> RunOptions {
    let mut opts = RunOptions::new(p.qemu.clone(), accel);
    if let Some(b) = a.boot_timeout {
        opts.boot_timeout = Duration::from_secs(b);
    }
    opts.verbose = a.verbose;
    opts.extra_append = a.append.clone();
    opts.memory_mb = p.memory_mb;
    opts.cpus = p.guest.vcpus;
    opts
}

/// Boots every kernel with its commands, staggered: the next VM starts only after the
/// previous one said HELLO (or ended), and at most `--jobs` run at once. Rows come back in
/// kernel order.
fn boot_all(
    p: &Prepared,
    a: &VmTestArgs,
    opts: &RunOptions,
    drill: Option<Drill>,
    per_kernel: &[Vec<GuestCommand>],
) -> Vec<Row> {
    let jobs = a.jobs as usize;
    let vcpus = opts.cpus;
    std::thread::scope(|scope| {
        let (hello_tx, hello_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<RunReport, String>)>();
        let mut running = 0;
        let mut results: Vec<Option<Result<RunReport, String>>> = vec![None; p.kernels.len()];
        for (i, k) in p.kernels.iter().enumerate() {
            while running >= jobs {
                if let Ok((j, r)) = done_rx.recv() {
                    results[j] = Some(r);
                }
                running -= 1;
            }
            let mut s =
                session::settings(per_kernel[i].clone(), &p.guest.results_dir, guest_env(p));
            s.drill = drill;
            let (hello_tx, done_tx) = (hello_tx.clone(), done_tx.clone());
            eprintln!(
                "[{}] booting {} under {}, {} vCPU{}…",
                k.label,
                k.ensured.image.release,
                opts.accel,
                vcpus,
                if vcpus == 1 { "" } else { "s" }
            );
            scope.spawn(move || {
                let started = Instant::now();
                let label = k.label.clone();
                let mut on_hello = || {
                    eprintln!(
                        "[{label}] guest up after {:.2}s",
                        started.elapsed().as_secs_f64()
                    );
                    let _ = hello_tx.send(());
                };
                let r = run_one(p, k, &s, opts, &mut on_hello).map_err(|e| format!("{e:#}"));
                let _ = hello_tx.send(());
                let _ = done_tx.send((i, r));
            });
            running += 1;
            let _ = hello_rx.recv();
        }
        drop(done_tx);
        while running > 0 {
            match done_rx.recv() {
                Ok((j, r)) => results[j] = Some(r),
                Err(_) => break,
            }
            running -= 1;
        }
        p.kernels
            .iter()
            .zip(results)
            .map(|(k, r)| {
                (
                    k.label.clone(),
                    r.unwrap_or_else(|| Err("no result".into())),
                )
            })
            .collect()
    })
}

/// Writes `summary.json` (every kernel's report or error) next to the per-kernel output
/// directories and says where the artifacts are.
fn write_summary(p: &Prepared, a: &VmTestArgs, rows: &[Row]) {
    let summary: Vec<serde_json::Value> = rows
        .iter()
        .map(|(l, r)| match r {
            Ok(r) => serde_json::json!({"kernel": l, "report": r}),
            Err(e) => serde_json::json!({"kernel": l, "error": e}),
        })
        .collect();
    let artifacts = kernel_out(p, "<kernel>");
    let _ = std::fs::write(
        artifacts.with_file_name("summary.json"),
        serde_json::to_string_pretty(&summary).unwrap_or_default(),
    );
    println!(
        "artifacts: {}/ (console.log, protocol.log, results/)",
        artifacts.display()
    );
    if a.verbose {
        println!("network requests: {}", apt::network_requests());
    }
}

/// Compares each passing kernel's summaries with snapshots/ (a tracer's with
/// snapshots/<its name>/), one line per kernel. False when some differ, or are missing while
/// `--require-snapshots` is set.
fn check_snapshots(
    a: &VmTestArgs,
    p: &Prepared,
    rows: &[(String, Result<RunReport, String>)],
) -> Result<bool> {
    let policy = snapshots::Policy::from_env(a.record_snapshots);
    let (dir, shown) = snapshot_dir(&p.paths.workspace, p.tracer.as_ref());
    if policy.record || policy.accept {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut ok = true;
    for ((label, r), k) in rows.iter().zip(&p.kernels) {
        if !matches!(r, Ok(r) if r.outcome == Outcome::Pass) {
            continue;
        }
        let results = kernel_out(p, label).join("results");
        if a.minimize {
            ok &= snapshots::minimal_sets(label, &results, policy, a.require_snapshots)?;
            continue;
        }
        let Some(c) = snapshots::compare(label, &results, &dir, policy)? else {
            if a.guest_config.is_none() {
                ok = false;
                println!("[{label}] snapshots: the guest returned no summaries/ to compare");
            } else {
                println!("[{label}] snapshots: none returned (custom guest configuration)");
            }
            continue;
        };
        let key = c.main_key();
        let tracer_arg = a
            .tracer
            .as_ref()
            .map(|t| format!(" --tracer {}", t.display()))
            .unwrap_or_default();
        let record = format!(
            "cargo xtask vm-test --kernel {}{tracer_arg} --record-snapshots",
            kernel_arg(k)
        );
        if !c.written.is_empty() {
            println!(
                "[{label}] snapshots: wrote {} ({shown}*@vm-{label}.*.snap, feature key {key}): review and commit them",
                c.written.len(),
            );
        }
        if !c.missing.is_empty() {
            let what = if c.matched.is_empty() && c.differ.is_empty() && c.written.is_empty() {
                format!("no snapshots exist for this kernel (feature key {key})")
            } else {
                format!("no snapshot yet for {}", c.missing.join(", "))
            };
            if a.require_snapshots {
                ok = false;
                println!("[{label}] error: {what}, and --require-snapshots is set; record them with `{record}`, review and commit them");
            } else {
                println!("[{label}] {what}; record them with `{record}`");
            }
        }
        if !c.differ.is_empty() {
            ok = false;
            println!(
                "[{label}] snapshots differ: {} (review with `cargo insta review`, or accept with INSTA_UPDATE=always)",
                c.differ.join(", ")
            );
        } else if c.missing.is_empty() && c.written.is_empty() {
            println!("[{label}] snapshots: {} match", c.matched.len());
        }
    }
    Ok(ok)
}

/// A kernel's artifacts: `target/vm-test/<kernel>/`, or for a tracer given with `--tracer`
/// `target/vm-test/tracers/<name>/<kernel>/`, so it does not overwrite the reference's.
fn kernel_out(p: &Prepared, label: &str) -> PathBuf {
    match &p.tracer {
        None => p.paths.out_root.join(label),
        Some(t) => p
            .paths
            .out_root
            .join("tracers")
            .join(tracer::safe_name(&t.name))
            .join(label),
    }
}

/// Where a run's snapshots live: `snapshots/` for the reference, `snapshots/<name>/` for a
/// tracer given with `--tracer` (its scenario names would collide with the reference's).
fn snapshot_dir(workspace: &std::path::Path, tracer: Option<&TracerFiles>) -> (PathBuf, String) {
    match tracer {
        None => (workspace.join("snapshots"), "snapshots/".into()),
        Some(t) => {
            let name = tracer::safe_name(&t.name);
            (
                workspace.join("snapshots").join(&name),
                format!("snapshots/{name}/"),
            )
        }
    }
}

/// `--tracer`: each judged kernel's verdicts (results.json) against the profile's
/// `[[expect]]` (and the known disagreements of a `subjects.toml` beside it). Without
/// expectations, the tracer's own verdict stands: a kernel where `capring check` exited 1
/// (a MUST clause failed) fails, as `capring check` would.
fn check_expectations(p: &Prepared, rows: &[(String, Result<RunReport, String>)]) -> Result<bool> {
    let Some(t) = &p.tracer else { return Ok(true) };
    let known = tracer::known_cases(t.profile.parent().unwrap_or(std::path::Path::new("/")))?;
    let mut ok = true;
    for (label, r) in rows {
        let Ok(r) = r else { continue };
        if r.outcome != Outcome::Pass {
            continue;
        }
        let path = kernel_out(p, label).join("results").join("results.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            ok = false;
            println!("[{label}] {}: the guest returned no results.json", t.name);
            continue;
        };
        let results: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        ok &= judge_kernel(label, t, &known, r, &results);
    }
    Ok(ok)
}

/// "92 clause verdicts: 0 pass, 23 fail, …" of one results.json.
fn tally(results: &serde_json::Value) -> String {
    let rows = results["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let count = |v: &str| rows.iter().filter(|x| x["verdict"] == v).count();
    format!(
        "{} clause verdicts: {} pass, {} fail, {} unsupported, {} n/a",
        rows.len(),
        count("pass"),
        count("fail"),
        count("unsupported"),
        count("not_applicable")
    )
}

/// One kernel's verdicts against the expectations (or capring's own exit code); prints one
/// line, plus one per differing clause.
fn judge_kernel(
    label: &str,
    t: &TracerFiles,
    known: &[tracer::KnownCase],
    r: &RunReport,
    results: &serde_json::Value,
) -> bool {
    let tally = tally(results);
    if t.expectations.is_empty() {
        let code = r
            .commands
            .iter()
            .find(|(n, _)| n == "check")
            .map(|(_, s)| s.as_str());
        let passed = code == Some("code=0");
        println!(
            "[{label}] {}: {tally}; capring check {}",
            t.name,
            if passed {
                "passed (every MUST clause)"
            } else {
                "failed (a MUST clause; see results/report.tap)"
            }
        );
        return passed;
    }
    let miss = tracer::compare(&t.name, &t.expectations, known, results);
    if miss.is_empty() {
        println!(
            "[{label}] {}: {tally}; every [[expect]] of the profile holds",
            t.name
        );
        return true;
    }
    println!(
        "[{label}] {}: {tally}; {} of {} [[expect]] differ:",
        t.name,
        miss.len(),
        t.expectations.len()
    );
    for m in &miss {
        println!(
            "[{label}]   {} {}: expected {}, got {} ({})",
            m.scenario,
            m.clause,
            m.expected,
            m.got.as_deref().unwrap_or("no verdict"),
            m.observed
        );
    }
    false
}

/// What to pass as `--kernel` to run this kernel again.
fn kernel_arg(k: &PreparedKernel) -> String {
    match &k.entry {
        Some(_) => k.label.clone(),
        None => k.ensured.image.vmlinuz.display().to_string(),
    }
}

fn changed_note(changed: bool) -> &'static str {
    if changed {
        " (updated)"
    } else {
        " (unchanged)"
    }
}

pub fn kernels_update(only: &[String], strict: bool, verbose: bool) -> Result<u8> {
    let paths = Paths::new(&workspace());
    let catalog = Catalog::load(&paths.catalog)?;
    let mut lock = Lock::load(&paths.lock)?;
    let mut cache = paths.cache();
    cache.verbose = verbose;
    for s in only {
        if !catalog.kernel.contains_key(s) {
            bail!(
                "unknown series {s:?} (known: {})",
                catalog.series().join(", ")
            );
        }
    }
    let series: Vec<String> = if only.is_empty() {
        catalog.series()
    } else {
        only.to_vec()
    };
    let mut failed = 0;
    // Keyring packages first: the suites of the mirrors they sign are verified with them.
    let mut keyring_mirrors: Vec<(&str, &str)> = Vec::new();
    for s in &series {
        let m = catalog.kernel[s].mirror.as_str();
        let from_package = matches!(catalog.mirror[m].keyring, Keyring::Package(_));
        if from_package && !keyring_mirrors.iter().any(|(k, _)| *k == m) {
            keyring_mirrors.push((m, s));
        }
    }
    for (m, first_series) in keyring_mirrors {
        eprint!("keyring of mirror {m}: resolving… ");
        match keyring::resolve(&cache, &catalog, m, first_series) {
            Ok(e) => {
                let changed = lock.keyring.get(m) != Some(&e);
                eprintln!("{} {}{}", e.package, e.version, changed_note(changed));
                lock.keyring.insert(m.to_string(), e);
            }
            Err(e) => {
                failed += 1;
                eprintln!();
                eprintln!("warning: {e}");
            }
        }
    }
    for s in &series {
        eprint!("kernel {s}: resolving… ");
        match session::resolve(s, &catalog, &lock, &cache) {
            Ok(e) => {
                let changed = lock.kernel.get(s) != Some(&e);
                eprintln!("{} {}{}", e.package, e.version, changed_note(changed));
                lock.kernel.insert(s.clone(), e);
            }
            Err(e) => {
                failed += 1;
                eprintln!();
                eprintln!("warning: {e}");
            }
        }
    }
    lock.save(&paths.lock)?;
    println!(
        "wrote {} ({} kernels, {} keyrings); network requests: {}",
        paths.lock.display(),
        lock.kernel.len(),
        lock.keyring.len(),
        apt::network_requests()
    );
    Ok(if strict && failed > 0 { 1 } else { 0 })
}

pub fn kernels_list() -> Result<u8> {
    let paths = Paths::new(&workspace());
    let catalog = Catalog::load(&paths.catalog)?;
    let lock = Lock::load(&paths.lock)?;
    let cache = paths.cache();
    for s in catalog.series() {
        match lock.kernel.get(&s) {
            Some(e) => {
                let state = match cache.check(e) {
                    CacheState::Valid(i) => format!("cached ({})", i.release),
                    CacheState::Missing => "not cached".into(),
                    CacheState::Corrupt(w) => format!("CORRUPT: {w}"),
                };
                println!(
                    "{s:<6} {} {} [{}] {}",
                    e.package,
                    e.version,
                    &e.sha256[..12],
                    state
                );
            }
            None => println!(
                "{s:<6} (not locked; source {})",
                catalog.describe(&catalog.kernel[&s])
            ),
        }
    }
    for (m, mirror) in &catalog.mirror {
        let Keyring::Package(k) = &mirror.keyring else {
            continue;
        };
        match lock.keyring.get(m) {
            Some(e) => {
                let state = match keyring::check(&cache, e, &k.file) {
                    KeyringState::Valid(_) => "cached".to_string(),
                    KeyringState::Missing => "not cached".into(),
                    KeyringState::Corrupt(w) => format!("CORRUPT: {w}"),
                };
                println!(
                    "keyring of mirror {m}: {} {} [{}] {state}",
                    e.package,
                    e.version,
                    &e.sha256[..12]
                );
            }
            None => println!(
                "keyring of mirror {m}: (not locked; package {} from {} {})",
                k.package, k.mirror, k.suite
            ),
        }
    }
    Ok(0)
}

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "all")]
    pub kernel: String,
    #[arg(long, default_value = "auto", env = "VM_TEST_ACCEL", value_parser = crate::parse_accel)]
    pub accel: AccelChoice,
    /// Guest configuration for the full run (default: vm/guest.toml).
    #[arg(long)]
    pub guest_config: Option<PathBuf>,
    #[arg(long)]
    pub no_build: bool,
}

pub fn bench_vm(b: &BenchArgs) -> Result<u8> {
    let a = VmTestArgs {
        kernel: b.kernel.clone(),
        scenario: None,
        accel: b.accel,
        jobs: 1,
        guest_config: b.guest_config.clone(),
        run: None,
        run_timeout: 300,
        drill: None,
        append: Vec::new(),
        boot_timeout: None,
        no_build: b.no_build,
        verbose: false,
        record_snapshots: false,
        require_snapshots: false,
        minimize: false,
        tracer: None,
        guest_file: Vec::new(),
    };
    let p = prepare(&a)?;
    let accel = choose_accel(&p, a.accel, false)?;
    let mut opts = RunOptions::new(p.qemu.clone(), accel);
    let catalog = Catalog::load(&p.paths.catalog)?;
    let lock = Lock::load(&p.paths.lock)?;
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>8} {:>9}  full outcome",
        "kernel", "bare-boot", "bare-total", "full-total", "ratio", "net-reqs"
    );
    let mut any_fail = false;
    let mut rerun_net = 0;
    for k in &p.kernels {
        // Bare and full boots get the same machine.
        opts.cpus = p.guest.vcpus;
        let full_cmds = commands(&p, &a, &k.label)?;
        let bare = session::settings(Vec::new(), &p.guest.results_dir, Vec::new());
        let out = p.paths.out_root.join("bench").join(&k.label);
        let rb = session::run_vm(
            &k.label,
            &k.ensured.image.vmlinuz,
            &p.base,
            &bare,
            &out.join("bare"),
            &opts,
            &mut || {},
        )?;
        let full = session::settings(full_cmds, &p.guest.results_dir, p.guest.env.clone());
        let rf = session::run_vm(
            &k.label,
            &k.ensured.image.vmlinuz,
            &p.base,
            &full,
            &out.join("full"),
            &opts,
            &mut || {},
        )?;
        // A cached re-run must not touch the network.
        let spec = match &k.entry {
            Some(_) => KernelSpec::Series(k.label.clone()),
            None => KernelSpec::Local(k.ensured.image.vmlinuz.clone()),
        };
        let again = session::prepare_kernel(&spec, &catalog, &lock, &p.paths.cache())
            .map_err(|e| anyhow!("re-preparing {}: {e}", k.label))?;
        rerun_net += again.ensured.network_requests;
        let bare_boot = rb.boot_secs.unwrap_or(f64::NAN);
        println!(
            "{:<8} {:>9.2}s {:>9.2}s {:>9.2}s {:>7.2}x {:>9}  {}",
            k.label,
            bare_boot,
            rb.total_secs,
            rf.total_secs,
            rf.total_secs / bare_boot,
            again.ensured.network_requests,
            rf.outcome
        );
        any_fail |= rb.outcome != Outcome::Pass || rf.outcome != Outcome::Pass;
    }
    println!("network requests (cached re-runs): {rerun_net}");
    Ok(if any_fail { 1 } else { 0 })
}
