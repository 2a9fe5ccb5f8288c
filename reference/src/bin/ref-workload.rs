//! `ref-workload`: generates the activity the reference tracer's eBPF events observe.
//!
//! Why it exists: tests and the conformance harness need a predictable source of
//! execve / openat / module / packet activity, on the host and inside static guests.
//! Each "round" performs one action per selected kind:
//!
//! * `exec`   spawns `/bin/true` (or this binary with `--noop` when `/bin/true` is missing);
//! * `open`   opens `/etc/hostname` for reading with a direct `openat` system call
//!   (musl's `open()` would use the older `open` system call); the tracer sees the call
//!   on entry, so a missing file still produces the event;
//! * `module` calls `finit_module(-1, "", 0)`, which fails (EBADF or EPERM) after the
//!   system call was entered, so no module is ever loaded;
//! * `net`    sends one UDP datagram to 127.0.0.1:9 (discard).
//!
//! At the end it prints one JSON line with the counts to stdout.

use std::ffi::CString;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Kind {
    Exec,
    Open,
    Module,
    Net,
}

#[derive(Debug, Parser)]
#[command(
    name = "ref-workload",
    about = "Generates exec, open, module and network activity for the reference tracer's eBPF events.",
    after_help = "Each round performs one action per selected kind. Prints a JSON summary line when done."
)]
struct Args {
    /// Run for this many seconds (default 5; cannot be combined with --count).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Stop after this many rounds instead of after a duration.
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,

    /// Rounds per second (1..=100000).
    #[arg(long, value_name = "PER_SEC", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,

    /// Comma-separated kinds to generate.
    #[arg(
        long,
        value_name = "KINDS",
        value_delimiter = ',',
        default_value = "exec,open,module,net"
    )]
    kinds: Vec<Kind>,

    /// Do nothing and exit 0 (the exec fallback target).
    #[arg(long, hide = true)]
    noop: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("'{text}' must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Successes and failures per kind.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
}

impl Tally {
    fn record(&mut self, success: bool) {
        if success {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// Everything prepared once before the first round.
struct Workload {
    exec_program: PathBuf,
    exec_args: Vec<&'static str>,
    open_path: CString,
    net_socket: Option<UdpSocket>,
}

impl Workload {
    fn prepare(kinds: &[Kind]) -> Workload {
        let (exec_program, exec_args) = if std::path::Path::new("/bin/true").exists() {
            (PathBuf::from("/bin/true"), vec![])
        } else {
            let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            (me, vec!["--noop"])
        };
        // The path is a constant without NUL bytes, so CString::new cannot fail here.
        let open_path = CString::new("/etc/hostname").unwrap_or_default();
        let net_socket = if kinds.contains(&Kind::Net) {
            UdpSocket::bind("127.0.0.1:0").ok()
        } else {
            None
        };
        Workload {
            exec_program,
            exec_args,
            open_path,
            net_socket,
        }
    }

    fn exec(&self) -> bool {
        Command::new(&self.exec_program)
            .args(&self.exec_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn open(&self) -> bool {
        // SAFETY: the path is a valid NUL-terminated string; the returned fd is closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                self.open_path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return false;
        }
        // SAFETY: `fd` was just returned by openat and is owned by nobody else.
        unsafe { libc::close(fd as libc::c_int) };
        true
    }

    /// Counts as success when the kernel answered, i.e. always: the call is meant to fail.
    fn module(&self) -> bool {
        let empty = c"";
        // SAFETY: finit_module with an invalid fd only reads the (valid, empty) string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                -1 as libc::c_int,
                empty.as_ptr(),
                0 as libc::c_int,
            )
        };
        // A successful module load would be a surprise; it is reported as a failure.
        rc != 0
    }

    fn net(&self) -> bool {
        match &self.net_socket {
            Some(socket) => socket
                .send_to(b"capring ref-workload", "127.0.0.1:9")
                .is_ok(),
            None => false,
        }
    }
}

fn main() -> ExitCode {
    // The exec target when /bin/true is missing: exit before any argument parsing, so that an
    // exec costs little more than the kernel's part (it dominates under emulation otherwise).
    if std::env::args_os().nth(1).is_some_and(|a| a == "--noop") && std::env::args_os().len() == 2 {
        return ExitCode::SUCCESS;
    }
    let args: Args = capring_cli::parse_or_exit("ref-workload");
    if args.noop {
        return ExitCode::SUCCESS;
    }

    let mut kinds = args.kinds.clone();
    kinds.sort();
    kinds.dedup();
    let workload = Workload::prepare(&kinds);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let duration = args.duration.unwrap_or(Duration::from_secs(5));

    let mut tallies: [Tally; 4] = Default::default();
    let start = Instant::now();
    let mut rounds: u64 = 0;
    loop {
        match args.count {
            Some(count) if rounds >= count => break,
            None if start.elapsed() >= duration => break,
            _ => {}
        }
        for kind in &kinds {
            let success = match kind {
                Kind::Exec => workload.exec(),
                Kind::Open => workload.open(),
                Kind::Module => workload.module(),
                Kind::Net => workload.net(),
            };
            tallies[*kind as usize].record(success);
        }
        rounds += 1;
        // Pace rounds against the start time so that slow rounds do not accumulate drift.
        let next = start + interval.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX));
        let now = Instant::now();
        if next > now {
            let sleep = next - now;
            let sleep = match args.count {
                None => sleep.min(duration.saturating_sub(start.elapsed())),
                Some(_) => sleep,
            };
            std::thread::sleep(sleep);
        }
    }

    let summary = serde_json::json!({
        "pid": std::process::id(),
        "rounds": rounds,
        "elapsed_ms": start.elapsed().as_millis() as u64,
        "exec": { "ok": tallies[Kind::Exec as usize].ok, "failed": tallies[Kind::Exec as usize].failed },
        "open": { "ok": tallies[Kind::Open as usize].ok, "failed": tallies[Kind::Open as usize].failed },
        "module": { "ok": tallies[Kind::Module as usize].ok, "failed": tallies[Kind::Module as usize].failed },
        "net": { "ok": tallies[Kind::Net as usize].ok, "failed": tallies[Kind::Net as usize].failed },
    });
    println!("{summary}");
    ExitCode::SUCCESS
}
