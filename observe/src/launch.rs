//! What to run and how: [`LaunchSpec`], which output lines are events, and the fork/exec of the child.
//!
//! The child is forked by hand (not `std::process::Command`): when observing, it must stop itself
//! *after* installing the tracing seccomp filter and *before* `execve`, so that the tracer can set
//! `PTRACE_O_TRACESECCOMP` before the first traced syscall (a `SECCOMP_RET_TRACE` hit without that
//! option fails the syscall with ENOSYS). `Command::spawn` would block on exec meanwhile.
//! Everything the child needs is prepared before `fork`; after `fork` the child makes only raw
//! system calls (no allocation, no locks).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capring_spec::caps::CapSet;
use capring_spec::sys::signal_name;

use crate::timeline::{FaultKind, Stream};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// How to launch (and whether to observe) one command.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Program; without a `/` it is looked up in `PATH` (the child's `PATH` if `env_set` sets it).
    pub program: PathBuf,
    /// Its arguments, without the program name (argv\[0\] is `program` as given).
    pub args: Vec<String>,
    /// Added to (or replacing in) the inherited environment.
    pub env_set: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub env_remove: Vec<String>,
    /// Calls that fail with EPERM in every process of the tree. Observed runs inject them
    /// through ptrace (so the timeline shows each attempt); unobserved runs through a seccomp
    /// filter installed before exec.
    pub faults: Vec<FaultKind>,
    /// Capabilities removed from the child's bounding set before exec (so a root exec also lacks
    /// them in its permitted set).
    pub bounding_drop: CapSet,
    /// perf_event_paranoid the harness set for this run (recorded in the timeline only).
    pub paranoid: Option<i32>,
    /// stdin from /dev/null (otherwise inherited).
    pub stdin_null: bool,
    /// Kill the whole tree (SIGKILL) after this; the exit then says `timed_out`.
    pub timeout: Duration,
    /// Which output lines are the command's events.
    pub event_lines: EventLines,
    /// Once the command wrote this many event lines: SIGTERM to the root, SIGKILL to the tree
    /// 2 s later.
    pub stop_after_events: Option<usize>,
    /// The run is stopped for `stop_after_events` only once the steady state (from the first
    /// event line) lasted this long: periodic samples must be able to tell a parked ring from
    /// a short operation.
    pub min_steady: Duration,
    /// Take an all-threads snapshot each time an event line arrives.
    pub sample_on_event: bool,
    /// Take an all-threads snapshot periodically.
    pub sample_every: Option<Duration>,
    /// false: just launch (same faults), no ptrace (overhead benchmarks).
    pub observe: bool,
    /// Started next to the command once it attaches its first probe (see [`Companion`]).
    pub companion: Option<Arc<Companion>>,
    /// Start the companion this long after launch even if no attach was seen.
    pub companion_fallback: Duration,
}

impl LaunchSpec {
    /// Observe `program args…` with stdin from /dev/null and a 60 s timeout.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> LaunchSpec {
        LaunchSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env_set: Vec::new(),
            env_remove: Vec::new(),
            faults: Vec::new(),
            bounding_drop: CapSet::EMPTY,
            paranoid: None,
            stdin_null: true,
            timeout: Duration::from_secs(60),
            event_lines: EventLines::default(),
            stop_after_events: None,
            min_steady: Duration::ZERO,
            sample_on_event: false,
            sample_every: None,
            observe: true,
            companion: None,
            companion_fallback: Duration::from_secs(5),
        }
    }

    /// The command line, program first.
    pub fn command_line(&self) -> Vec<String> {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

/// Which lines of the command's output are its events: every non-empty line of one stream,
/// or those that match a pattern.
#[derive(Debug, Clone)]
pub struct EventLines {
    /// The stream events come on; lines of the other stream are never events.
    pub stream: Stream,
    /// A regex every event line matches (`None`: every non-empty line of `stream`).
    pub pattern: Option<regex::Regex>,
}

impl Default for EventLines {
    fn default() -> Self {
        EventLines {
            stream: Stream::Stdout,
            pattern: None,
        }
    }
}

impl EventLines {
    /// Whether `line`, read from `stream`, is an event.
    pub fn matches(&self, stream: Stream, line: &str) -> bool {
        stream == self.stream
            && !line.trim().is_empty()
            && self.pattern.as_ref().is_none_or(|p| p.is_match(line))
    }
}

/// A process started next to the observed command: the workload that makes its events fire.
///
/// It starts once the command attaches its first probe (the first successful
/// `perf_event_open`, or `bpf` `PROG_ATTACH` / `RAW_TRACEPOINT_OPEN` / `LINK_CREATE`), not at
/// launch: until then it would only compete with the command's configuration for the CPU, which
/// on a one-CPU guest under emulation doubled the time of every run. Without observation it
/// starts when a new BPF program appears in the kernel; after
/// [`LaunchSpec::companion_fallback`] it starts anyway.
pub struct Companion {
    program: PathBuf,
    args: Vec<String>,
    state: Mutex<CompanionState>,
}

enum CompanionState {
    Waiting,
    Running(Child),
    Failed(String),
    Stopped,
}

impl std::fmt::Debug for Companion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Companion")
            .field("program", &self.program)
            .field("args", &self.args)
            .finish()
    }
}

impl Companion {
    /// `program args…`, not started yet; shared between the launcher and the observer's
    /// threads, hence the `Arc`. A bare `program` is looked up in `PATH` when it starts.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Arc<Companion> {
        Arc::new(Companion {
            program: program.into(),
            args,
            state: Mutex::new(CompanionState::Waiting),
        })
    }

    /// Starts it, once; later calls (from any thread) do nothing.
    pub fn start(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, CompanionState::Waiting) {
            return;
        }
        *state = match Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => CompanionState::Running(child),
            Err(e) => CompanionState::Failed(format!("{}: {e}", self.program.display())),
        };
    }

    /// Whether it was started (successfully or not).
    pub fn started(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(|e| e.into_inner()),
            CompanionState::Waiting
        )
    }

    /// Kills and reaps it; never starts it afterwards. The error says why it could not start.
    pub fn stop(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, CompanionState::Stopped) {
            CompanionState::Running(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                Ok(())
            }
            CompanionState::Failed(e) => Err(e),
            CompanionState::Waiting | CompanionState::Stopped => Ok(()),
        }
    }
}

/// How the observed command ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal number, if it was killed.
    pub signal: Option<i32>,
    /// The timeout fired and the tree was killed.
    pub timed_out: bool,
    /// The harness ended the run (SIGTERM once enough event lines were read): a normal end.
    pub stopped_by_harness: bool,
    /// capring itself was interrupted (SIGINT/SIGTERM) and killed the tree.
    #[serde(default)]
    pub interrupted: bool,
}

impl ExitInfo {
    /// The shell's convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }

    /// It exited by itself with code 0 (a run the harness stopped usually ends by signal
    /// instead: see `stopped_by_harness`).
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) if self.stopped_by_harness => {
                write!(f, "stopped by capring (SIGTERM), exit code {c}")?
            }
            (None, Some(s)) if self.stopped_by_harness => write!(
                f,
                "stopped by capring (SIGTERM{})",
                if s == libc::SIGKILL {
                    ", then SIGKILL 2 s later"
                } else {
                    ""
                }
            )?,
            (Some(c), _) => write!(f, "exit code {c}")?,
            (None, Some(s)) => write!(f, "killed by {}", signal_name(s))?,
            (None, None) => write!(f, "unknown exit")?,
        }
        if self.timed_out {
            write!(f, " (timed out)")?;
        }
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        Ok(())
    }
}

/// Why observing failed (the command itself failing is not an error: see [`ExitInfo`]).
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The program has no `/` and is in no directory of `PATH`: its name.
    #[error("program '{0}' not found in PATH")]
    NotFound(String),
    /// An argument or variable cannot be passed to exec: the text, lossily decoded.
    #[error("argument or environment contains a NUL byte: {0:?}")]
    Nul(String),
    /// seccompiler refused the fault or tracing filter: its message.
    #[error("seccomp filter could not be compiled: {0}")]
    Filter(String),
    /// A system call of the harness itself failed (pipe, thread spawn, …).
    #[error("{what}: {source}")]
    Os {
        /// What the harness was doing.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The child failed before exec, so the command never ran.
    #[error("child setup failed before exec at '{stage}': {source}")]
    ChildSetup {
        /// The stage that failed (`dup2 stdio`, `install tracing seccomp filter`, `execve`, …).
        stage: &'static str,
        /// The errno it reported through the setup pipe.
        #[source]
        source: std::io::Error,
    },
    /// ptrace refused an operation the observer cannot do without.
    #[error("ptrace {what} on {tid}: {errno}")]
    Ptrace {
        /// The operation (`setoptions`, `waitpid`).
        what: &'static str,
        /// The thread it was about.
        tid: i32,
        /// What the kernel said.
        errno: nix::errno::Errno,
    },
    /// The child did not stop itself before exec (what it did instead).
    #[error("the child did not stop before exec as expected: {0}")]
    Handshake(String),
}

impl ObserveError {
    pub(crate) fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> ObserveError {
        move |source| ObserveError::Os { what, source }
    }
}

/// Stages the child reports through the error pipe (index into this table).
pub(crate) const STAGES: [&str; 9] = [
    "dup2 stdio",
    "reset signals",
    "setpgid",
    "prctl(PR_SET_PDEATHSIG)",
    "prctl(PR_CAPBSET_DROP) for bounding_drop",
    "install fault seccomp filter",
    "install tracing seccomp filter",
    "ptrace(PTRACE_TRACEME) / raise(SIGSTOP)",
    "execve",
];

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
) -> Result<BpfProgram, ObserveError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, TargetArch::x86_64)
        .map_err(|e| ObserveError::Filter(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| ObserveError::Filter(e.to_string()))
}

/// One rule per value: argument `arg` (masked with `mask`) equals it.
fn arg_is(arg: u8, mask: u64, values: &[u64]) -> Result<Vec<SeccompRule>, ObserveError> {
    let op = if mask == u64::MAX {
        SeccompCmpOp::Eq
    } else {
        SeccompCmpOp::MaskedEq(mask)
    };
    values
        .iter()
        .map(|v| {
            let cond = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op.clone(), *v)
                .map_err(|e| ObserveError::Filter(e.to_string()))?;
            SeccompRule::new(vec![cond]).map_err(|e| ObserveError::Filter(e.to_string()))
        })
        .collect()
}

/// The fault filter of an unobserved run (None when no fault is asked for). Observed runs
/// inject faults through ptrace instead: a seccomp error would hide the attempt from the
/// tracer, and "the tracer never tried" must stay distinguishable from "it tried and failed".
pub(crate) fn fault_filter(faults: &[FaultKind]) -> Result<Option<BpfProgram>, ObserveError> {
    if faults.is_empty() {
        return Ok(None);
    }
    let mut rules = BTreeMap::new();
    for f in faults {
        match f {
            FaultKind::CapsetEperm => rules.insert(libc::SYS_capset, vec![]),
            FaultKind::CapbsetDropEperm => rules.insert(
                libc::SYS_prctl,
                arg_is(0, u64::MAX, &[libc::PR_CAPBSET_DROP as u64])?,
            ),
        };
    }
    compile(rules, SeccompAction::Errno(libc::EPERM as u32)).map(Some)
}

/// The tracing filter: SECCOMP_RET_TRACE for the credential syscalls of interest.
pub(crate) fn trace_filter() -> Result<BpfProgram, ObserveError> {
    let mut rules = BTreeMap::new();
    for (nr, name) in capring_spec::sys::SYSCALLS {
        if !matches!(*name, "prctl" | "socket") {
            rules.insert(*nr, vec![]);
        }
    }
    let prctl = [
        libc::PR_CAPBSET_DROP,
        libc::PR_CAP_AMBIENT,
        libc::PR_SET_KEEPCAPS,
        libc::PR_SET_SECUREBITS,
    ];
    rules.insert(
        libc::SYS_prctl,
        arg_is(0, u64::MAX, &prctl.map(|o| o as u64))?,
    );
    // Raw and packet sockets only: ordinary sockets need no capability.
    let mut socket = arg_is(0, u64::MAX, &[libc::AF_PACKET as u64])?;
    socket.extend(arg_is(1, 0xf, &[libc::SOCK_RAW as u64])?);
    rules.insert(libc::SYS_socket, socket);
    compile(rules, SeccompAction::Trace(0))
}

fn cstring(bytes: &[u8]) -> Result<CString, ObserveError> {
    CString::new(bytes).map_err(|_| ObserveError::Nul(String::from_utf8_lossy(bytes).into_owned()))
}

/// Resolves `program` like execvp does, with the given PATH.
pub(crate) fn resolve(program: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, ObserveError> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path_var = path_var.map(OsStr::to_os_string).unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    });
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(ObserveError::NotFound(program.display().to_string()))
}

/// Everything the child needs, built before fork.
pub(crate) struct Prepared {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub fault: Option<BpfProgram>,
    pub trace: Option<BpfProgram>,
    pub bounding: Vec<u8>,
    pub stdin_null: bool,
    pub observe: bool,
}

impl Prepared {
    pub fn new(spec: &LaunchSpec) -> Result<Prepared, ObserveError> {
        let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        for k in &spec.env_remove {
            env.remove(OsStr::new(k));
        }
        for (k, v) in &spec.env_set {
            env.insert(k.into(), v.into());
        }
        let path = resolve(
            &spec.program,
            env.get(OsStr::new("PATH")).map(OsString::as_os_str),
        )?;
        let mut argv = vec![cstring(spec.program.as_os_str().as_bytes())?];
        for a in &spec.args {
            argv.push(cstring(a.as_bytes())?);
        }
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv)
            })
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            path: cstring(path.as_os_str().as_bytes())?,
            argv,
            envp,
            fault: if spec.observe {
                None
            } else {
                fault_filter(&spec.faults)?
            },
            trace: if spec.observe {
                Some(trace_filter()?)
            } else {
                None
            },
            bounding: spec.bounding_drop.iter().map(|c| c.number()).collect(),
            stdin_null: spec.stdin_null,
            observe: spec.observe,
        })
    }
}

/// A forked child and the parent's ends of its pipes.
pub(crate) struct Spawned {
    pub pid: i32,
    pub stdout: File,
    pub stderr: File,
    /// Reads `(stage, errno)` as two native-endian u32 if setup or exec failed; EOF at exec.
    pub errors: File,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ObserveError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ObserveError::Os {
            what: "pipe2",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The calling thread's errno (readable after fork: no allocation, no lock).
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Installs a seccomp filter in the calling (child) thread. Tries without no_new_privs first
/// (allowed with CAP_SYS_ADMIN, so the observed program's exec semantics stay untouched) and
/// falls back to setting it. Only raw syscalls: safe after fork.
fn install_filter(prog: &BpfProgram) -> libc::c_long {
    let fprog = libc::sock_fprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    let set = || {
        // SAFETY: `fprog` points at `prog`, which outlives the call; the kernel copies it.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        }
    };
    let r = set();
    if r == 0 || errno() != libc::EACCES {
        return r;
    }
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return -1;
    }
    set()
}

/// The child's descriptors: stdin (or -1 to inherit), stdout, stderr and the setup report.
type ChildFds = [i32; 4];

/// Child side after fork: sets up, then execs. Reports `(stage, errno)` on the report pipe
/// and exits 127 if a stage fails. Never returns, never allocates (only raw syscalls run
/// between fork and exec, as the child of a multithreaded parent requires).
fn child(
    p: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: ChildFds,
) -> ! {
    let stage = child_setup(p, fds).err().unwrap_or_else(|| {
        // SAFETY: path, argv and envp are NUL-terminated strings and null-terminated
        // arrays that live in the parent's memory image, copied into ours by fork.
        unsafe { libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        8
    });
    let errno = errno() as u32;
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&stage.to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: `buf` is 8 readable bytes; `fds[3]` is the report pipe's write end.
    unsafe {
        libc::write(fds[3], buf.as_ptr().cast(), 8);
        libc::_exit(127)
    }
}

/// The child's setup stages; `Err(stage)` names the one that failed (see `STAGES`).
fn child_setup(p: &Prepared, fds: ChildFds) -> Result<(), u32> {
    let [stdin_fd, out_w, err_w, _] = fds;
    let check = |ok: bool, stage: u32| if ok { Ok(()) } else { Err(stage) };
    // Every call below is a raw syscall or libc wrapper taking integers or pointers to locals
    // that outlive it; none allocates or takes a lock.
    // 0: stdio (dup2 clears O_CLOEXEC on the new descriptor).
    // SAFETY: integers only.
    check(stdin_fd < 0 || unsafe { libc::dup2(stdin_fd, 0) } >= 0, 0)?;
    // SAFETY: integers only.
    check(unsafe { libc::dup2(out_w, 1) } >= 0, 0)?;
    // SAFETY: integers only.
    check(unsafe { libc::dup2(err_w, 2) } >= 0, 0)?;
    // 1: default dispositions (Rust ignores SIGPIPE) and an empty signal mask.
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset then initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a local sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is initialised; the old mask is not wanted (null).
    let masked = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    check(masked == 0, 1)?;
    for sig in (1..32).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: SIG_DFL is always a valid disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // 2: own process group when not traced (the tracer knows every descendant otherwise).
    // SAFETY: integers only.
    check(p.observe || unsafe { libc::setpgid(0, 0) } == 0, 2)?;
    // 3: die with the launching thread.
    // SAFETY: integers only.
    let deathsig = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    check(deathsig == 0, 3)?;
    // 4: bounding drops.
    for cap in &p.bounding {
        // SAFETY: integers only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, *cap as libc::c_ulong, 0, 0, 0) };
        check(r == 0, 4)?;
    }
    // 5, 6: seccomp filters (ERRNO takes precedence over TRACE whatever the order).
    check(p.fault.as_ref().is_none_or(|f| install_filter(f) == 0), 5)?;
    check(p.trace.as_ref().is_none_or(|t| install_filter(t) == 0), 6)?;
    // 7: hand ourselves to the tracer and wait until it has set its options.
    if p.observe {
        // SAFETY: integers only.
        let traced = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        check(traced == 0, 7)?;
        // SAFETY: integers only.
        check(unsafe { libc::raise(libc::SIGSTOP) } == 0, 7)?;
    }
    Ok(())
}

/// Forks the child. With `observe`, the child is left stopped (SIGSTOP, traced) before exec.
pub(crate) fn spawn(p: &Prepared) -> Result<Spawned, ObserveError> {
    let argv: Vec<*const libc::c_char> = p
        .argv
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .envp
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let stdin = if p.stdin_null {
        Some(File::open("/dev/null").map_err(ObserveError::os("open /dev/null"))?)
    } else {
        None
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    use std::os::fd::AsRawFd;
    let fds = [
        stdin.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        rep_w.as_raw_fd(),
    ];
    // SAFETY: the child runs only `child`, which makes raw syscalls and execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(ObserveError::Os {
            what: "fork",
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        child(p, &argv, &envp, fds)
    }
    drop((out_w, err_w, rep_w, stdin));
    Ok(Spawned {
        pid,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
        errors: File::from(rep_r),
    })
}

/// Reads the child's setup report: Some(error) if setup or exec failed, None at EOF (exec done).
pub(crate) fn read_setup_error(errors: &mut File) -> Option<ObserveError> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match errors.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got < 8 {
        return None;
    }
    let stage = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
    let errno = u32::from_ne_bytes(buf[4..].try_into().unwrap()) as i32;
    Some(ObserveError::ChildSetup {
        stage: STAGES.get(stage).copied().unwrap_or("unknown"),
        source: std::io::Error::from_raw_os_error(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        assert!(trace_filter().unwrap().len() > 10);
        assert!(fault_filter(&[]).unwrap().is_none());
        let both = fault_filter(&[FaultKind::CapsetEperm, FaultKind::CapbsetDropEperm])
            .unwrap()
            .unwrap();
        assert!(!both.is_empty());
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(
            ExitInfo {
                code: Some(3),
                ..Default::default()
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ExitInfo {
                signal: Some(9),
                ..Default::default()
            }
            .shell_code(),
            137
        );
    }

    #[test]
    fn resolves_like_execvp() {
        assert!(resolve(
            Path::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin"))
        )
        .is_ok());
        assert!(matches!(
            resolve(Path::new("no-such-prog-xyz"), None),
            Err(ObserveError::NotFound(_))
        ));
    }
}
