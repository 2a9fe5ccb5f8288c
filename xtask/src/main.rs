//! `cargo xtask`: project automation.
//!
//! * `cargo xtask vm-test --kernel SERIES|all|PATH/TO/bzImage` boots each kernel in QEMU and
//!   runs the suite inside it (commands from vm/guest.toml); the series are those of
//!   vm/kernels.toml. `--tracer PROFILE` judges that tracer in the guests instead of the
//!   reference (its programs and their libraries copied in; vm/README.md).
//! * `cargo xtask kernels update` re-pins vm/kernels.lock from vm/kernels.toml.
//! * `cargo xtask ci-matrix` rewrites the kernel matrix of ci/github-actions.yml from
//!   vm/kernels.toml.
//! * `cargo xtask bench vm` compares full runs with bare boots; `bench harness` and
//!   `bench ring-share` measure the harness and the reference tracer on the host.
//! * `cargo xtask fuzz --seconds N` runs the grammar fuzz target for a bounded time.
//! * `cargo xtask test` is the project's test command (README, `.ci/run`).
//! * `cargo xtask record-runs` re-records the runs under fixtures/runs/ (needs root).
//! * `cargo xtask dist` builds capring alone for a tracer's CI (static musl binary, shell
//!   completions, man pages) into target/dist/.
//! * `cargo xtask screenshots` renders the HTML reports of recorded runs in headless
//!   Chromium and writes the screenshots under docs/.

mod bench_host;
mod ci_matrix;
mod dist;
mod fuzz;
mod prereq;
mod record_runs;
mod screenshots;
mod snapshots;
mod test_cmd;
mod vmtest;

use std::path::PathBuf;
use std::process::ExitCode;

use capring_vm::accel::AccelChoice;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "capring project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot kernels in QEMU and run the conformance suite inside each.
    VmTest(VmTestArgs),
    /// Manage the kernel lock file (vm/kernels.lock).
    Kernels {
        #[command(subcommand)]
        cmd: KernelsCmd,
    },
    /// The project's test command: install prerequisites, build, nextest, then the kernel
    /// matrix in QEMU.
    Test(test_cmd::TestArgs),
    /// Re-record the real runs the checks are unit-tested on (fixtures/runs/; needs root).
    RecordRuns,
    /// Build capring alone for a tracer's CI: a static musl binary, shell completions and
    /// man pages in target/dist/.
    Dist,
    /// Render the HTML reports of recorded runs in headless Chromium and write the
    /// screenshots under docs/ (installs chromium when missing, as root on Debian).
    Screenshots,
    /// Fuzz the --capabilities grammar against its model for a bounded time; a failing
    /// input is saved under fuzz/regressions/.
    Fuzz(fuzz::FuzzArgs),
    /// Rewrite the kernel matrix of ci/github-actions.yml from vm/kernels.toml.
    CiMatrix {
        /// Print the generated workflow instead of writing it.
        #[arg(long)]
        print: bool,
        /// Exit 1 if the workflow is not current, without writing it.
        #[arg(long, conflicts_with = "print")]
        check: bool,
    },
    /// Benchmarks (speed goals live here, never in tests).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

/// The flags of `cargo xtask vm-test` (also used by `bench vm`).
#[derive(clap::Args, Clone)]
pub struct VmTestArgs {
    /// A kernel series of vm/kernels.toml (comma-separated for several), `all`, or
    /// PATH/TO/bzImage. `cargo xtask kernels list` shows the series.
    #[arg(long)]
    pub kernel: String,
    /// Only run scenarios matching this glob (passed to the guest command).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Accelerator: auto probes KVM once per host boot and falls back to TCG.
    #[arg(long, default_value = "auto", env = "VM_TEST_ACCEL", value_parser = parse_accel)]
    pub accel: AccelChoice,
    /// VMs running at once; each start waits for the previous VM's HELLO.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub jobs: u32,
    /// Guest configuration (default: vm/guest.toml).
    #[arg(long)]
    pub guest_config: Option<PathBuf>,
    /// Run this one command in the guest instead of the configured ones
    /// (split on whitespace; e.g. "/init --selftest").
    #[arg(long)]
    pub run: Option<String>,
    /// Per-command timeout in the guest for --run, in seconds.
    #[arg(long, default_value_t = 300)]
    pub run_timeout: u64,
    /// Ask the guest agent for a fault drill instead of running commands.
    #[arg(long, value_parser = ["panic", "hang"])]
    pub drill: Option<String>,
    /// Extra kernel command-line arguments (repeatable), e.g. --append noapic.
    #[arg(long)]
    pub append: Vec<String>,
    /// Boot deadline (spawn to HELLO) in seconds; default 20 (TCG) / 10 (KVM).
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Do not build the musl binaries (use what is in target/).
    #[arg(long)]
    pub no_build: bool,
    /// Run the guest's `only_with = "minimize"` command instead of the check: measure the
    /// minimal capability sets of every reference event (`capring minimize`) and compare
    /// them with snapshots/minimal-sets/ref-tracer@vm-<kernel>.<feature key>.json
    /// (missing ones are written with --record-snapshots, changed ones with
    /// INSTA_UPDATE=always). The reference only: not with --tracer.
    #[arg(long, conflicts_with_all = ["run", "scenario", "drill", "tracer"])]
    pub minimize: bool,
    /// Echo protocol lines and apt output; print the network-request counter.
    #[arg(long, short)]
    pub verbose: bool,
    /// Write the snapshots a kernel does not have yet (snapshots/*@vm-KERNEL.*.snap), e.g.
    /// for a new kernel; changed ones still need review (`cargo insta review`).
    #[arg(long)]
    pub record_snapshots: bool,
    /// Fail when a kernel has no snapshot for a scenario (CI: every kernel has them).
    #[arg(long, conflicts_with = "record_snapshots")]
    pub require_snapshots: bool,
    /// Judge this tracer profile in the guests instead of the reference: its programs, their
    /// shared libraries, the profile and its catalog are copied into the initramfs at their
    /// host paths; snapshots go to snapshots/<profile name>/, and the guest's verdicts are
    /// compared with the profile's [[expect]] entries. With --run, that command runs instead
    /// (with the tracer's files in the guest: e.g. the tracer by hand).
    #[arg(long, value_name = "PROFILE", conflicts_with = "drill")]
    pub tracer: Option<PathBuf>,
    /// With --tracer: also copy this host file or directory into the guest at the same path
    /// (what the tracer opens by itself: a dlopen'ed library, a data file). Repeatable.
    #[arg(long, value_name = "PATH", requires = "tracer")]
    pub guest_file: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum KernelsCmd {
    /// Resolve every series of vm/kernels.toml and rewrite vm/kernels.lock.
    Update {
        /// Only these series (repeatable); others keep their lock entries.
        #[arg(long)]
        series: Vec<String>,
        /// Exit non-zero if any series could not be resolved.
        #[arg(long)]
        strict: bool,
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show the lock entries and whether each kernel is cached.
    List,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Per kernel: full run ÷ bare boot-to-HELLO, and a cached re-run's network requests.
    Vm(vmtest::BenchArgs),
    /// Whole scenario catalog observed ÷ unobserved; one --print-rings ÷ spawning /bin/true.
    Harness(bench_host::HarnessArgs),
    /// Exec storm under ref-tracer: share of time with a non-empty effective set.
    RingShare(bench_host::RingShareArgs),
    /// SIGINT to `capring check` → its exit, while the tracer hangs, ignores SIGTERM or
    /// floods stdout.
    Interrupt(bench_host::InterruptArgs),
}

fn parse_accel(s: &str) -> Result<AccelChoice, String> {
    s.parse()
}

/// The workspace root (the parent of xtask/), so commands work from any directory.
pub fn workspace() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

fn main() -> ExitCode {
    // Behave like a normal CLI when piped into `head`.
    // SAFETY: at the top of main, before any thread exists; restoring the default SIGPIPE
    // action installs no handler, so nothing can run in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli: Cli = capring_cli::parse_or_exit("cargo xtask");
    let r = match cli.cmd {
        Cmd::VmTest(a) => vmtest::vm_test(&a),
        Cmd::Kernels {
            cmd:
                KernelsCmd::Update {
                    series,
                    strict,
                    verbose,
                },
        } => vmtest::kernels_update(&series, strict, verbose),
        Cmd::Kernels {
            cmd: KernelsCmd::List,
        } => vmtest::kernels_list(),
        Cmd::CiMatrix { print, check } => ci_matrix::run(print, check),
        Cmd::Bench {
            what: BenchCmd::Vm(a),
        } => vmtest::bench_vm(&a),
        Cmd::Bench {
            what: BenchCmd::Harness(a),
        } => bench_host::harness(&a).map(|()| 0),
        Cmd::Bench {
            what: BenchCmd::RingShare(a),
        } => bench_host::ring_share(&a).map(|()| 0),
        Cmd::Bench {
            what: BenchCmd::Interrupt(a),
        } => bench_host::interrupt(&a).map(|()| 0),
        Cmd::RecordRuns => record_runs::execute(),
        Cmd::Dist => dist::execute(),
        Cmd::Screenshots => screenshots::execute(),
        Cmd::Fuzz(a) => match fuzz::fuzz(&a) {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("xtask fuzz: {e:#}");
                Ok(1)
            }
        },
        Cmd::Test(a) => match test_cmd::execute(&a) {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("xtask test: {e:#}");
                Ok(1)
            }
        },
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the error chain without repeating what a cause already said.
            let mut msg = String::new();
            for cause in e.chain() {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&c);
                }
            }
            eprintln!(
                "error: {}",
                msg.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::from(2)
        }
    }
}
