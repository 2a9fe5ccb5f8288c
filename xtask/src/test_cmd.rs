//! `cargo xtask test`: the project's one test command (README, `.ci/run`).
//!
//! 1. Installs what the tests need when running as root on Debian (clang, llvm, libbpf-dev,
//!    libcap2-bin for capsh, chromium for the HTML report's browser test, qemu-system-x86,
//!    the musl target, and the third-party subjects' packages listed in
//!    fixtures/tracers/third-party/subjects.toml: iputils-ping, wireshark-common,
//!    dnsmasq-base, bpftrace, libbpf-tools), else prints the command.
//! 2. Mounts tracefs if needed (classic tracepoints need it, bpftrace and execsnoop too; the
//!    host does not mount it).
//! 3. Builds the whole workspace (the harness tests drive the built binaries), then the
//!    fault binaries of the negative controls (`ref-tracer-mutant`, `ref-rules-mutant`), which
//!    need the `faults` feature of capring-reference. They are built by name, never with
//!    `--bins`: that would rebuild the production `ref-tracer` and `ref-rules` with the
//!    feature, over the production binaries the tests use.
//! 4. Runs `cargo nextest run --workspace` (profile `ci` under CI, which writes JUnit).
//! 5. Fuzzes the `--capabilities` grammar against its model for `--fuzz-seconds`
//!    (`cargo xtask fuzz`; a failing input is saved under `fuzz/regressions/`).
//! 6. Runs the conformance suite inside QEMU on every kernel of vm/kernels.toml
//!    (`cargo xtask vm-test --kernel all`, with `--require-snapshots` under CI; the negative
//!    controls, `capring mutants`, run in the one kernel vm/guest.toml names), then
//!    measures the minimal capability sets on each (`--minimize`, compared with
//!    snapshots/minimal-sets/), unless `--no-vm`.
//! 7. Judges a third-party tracer inside a guest: `cargo xtask vm-test --kernel 6.1 --tracer
//!    fixtures/tracers/third-party/bpftrace.toml` (its verdicts against the profile's
//!    `[[expect]]`, its snapshots under snapshots/bpftrace/), unless `--no-vm`.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::prereq;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the QEMU kernel matrix (host tests only).
    #[arg(long)]
    pub no_vm: bool,
    /// Seconds of grammar fuzzing after the tests (0 skips it).
    #[arg(long, default_value_t = 45)]
    pub fuzz_seconds: u64,
    /// nextest profile (default: `ci` when $CI is set, else `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// Extra arguments for nextest (after `--`), e.g. a filter expression.
    #[arg(last = true)]
    pub nextest_args: Vec<String>,
}

/// The third-party tracer judged in a guest, and the kernel. One kernel keeps CI within its
/// budget (the tracer's files make a 220 MiB initramfs); bpftrace runs on every kernel of the
/// matrix (vm/README.md), so `--kernel all` is a manual run.
const TRACER_IN_VM: (&str, &str) = ("6.1", "fixtures/tracers/third-party/bpftrace.toml");

/// The negative controls' binaries (`required-features = ["faults"]`).
pub const FAULT_BINARIES: &[&str] = &["ref-tracer-mutant", "ref-rules-mutant"];

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("xtask test: {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn mount_tracefs() {
    if let Err(e) = capring_spec::sys::mount_tracefs() {
        eprintln!(
            "xtask test: warning: cannot mount tracefs ({e}); tests of perf tracepoints will fail"
        );
    }
}

pub fn execute(args: &TestArgs) -> Result<()> {
    prereq::bpf_toolchain()?;
    prereq::capsh()?;
    prereq::subjects()?;
    prereq::chromium()?;
    prereq::musl_target()?;
    if !args.no_vm {
        prereq::qemu()?;
    }
    mount_tracefs();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(
        "cargo build --workspace --all-targets",
        Command::new(&cargo).args(["build", "--workspace", "--all-targets"]),
    )?;
    let mut faults = Command::new(&cargo);
    faults.args(["build", "-p", "capring-reference", "--features", "faults"]);
    for bin in FAULT_BINARIES {
        faults.args(["--bin", bin]);
    }
    run(
        "cargo build -p capring-reference --features faults (the fault binaries)",
        &mut faults,
    )?;
    let profile = args.profile.clone().unwrap_or_else(|| {
        if std::env::var_os("CI").is_some() {
            "ci".into()
        } else {
            "default".into()
        }
    });
    let mut nextest = Command::new(&cargo);
    nextest.args(["nextest", "run", "--workspace", "--profile", &profile]);
    nextest.args(&args.nextest_args);
    // Snapshots are compared, never written, during the test command.
    nextest.env("INSTA_UPDATE", "no");
    run(
        &format!("cargo nextest run --workspace --profile {profile}"),
        &mut nextest,
    )?;
    if args.fuzz_seconds > 0 {
        eprintln!(
            "xtask test: cargo xtask fuzz --seconds {}",
            args.fuzz_seconds
        );
        crate::fuzz::fuzz(&crate::fuzz::FuzzArgs {
            seconds: args.fuzz_seconds,
        })?;
    }
    if !args.no_vm {
        let mut vm = Command::new(&cargo);
        vm.args(["xtask", "vm-test", "--kernel", "all"]);
        // CI has a snapshot for every kernel and scenario: a missing one fails there.
        if std::env::var_os("CI").is_some() {
            vm.arg("--require-snapshots");
        }
        let shown: Vec<String> = vm
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        run(&format!("cargo {}", shown.join(" ")), &mut vm)?;
        // The measured minimal sets per kernel (about 40 s a kernel under TCG).
        let mut minimize = Command::new(&cargo);
        minimize.args(["xtask", "vm-test", "--kernel", "all", "--minimize"]);
        if std::env::var_os("CI").is_some() {
            minimize.arg("--require-snapshots");
        }
        minimize.env("INSTA_UPDATE", "no");
        run("cargo xtask vm-test --kernel all --minimize", &mut minimize)?;

        prereq::bpftrace()?;
        let mut tracer = Command::new(&cargo);
        tracer.args(["xtask", "vm-test", "--no-build"]);
        tracer.args(["--kernel", TRACER_IN_VM.0, "--tracer", TRACER_IN_VM.1]);
        if std::env::var_os("CI").is_some() {
            tracer.arg("--require-snapshots");
        }
        let shown: Vec<String> = tracer
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        run(&format!("cargo {}", shown.join(" ")), &mut tracer)?;
    }
    Ok(())
}
