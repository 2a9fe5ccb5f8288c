//! The observer: runs a command under ptrace and records its capability timeline.
//!
//! Mechanism (works in a static musl build: no `PTRACE_GET_SYSCALL_INFO`, no libseccomp):
//!
//! * The child (see [`crate::launch`]) drops bounding caps, installs the fault filter, then a
//!   filter returning `SECCOMP_RET_TRACE` for capset, prctl(PR_CAPBSET_DROP | PR_CAP_AMBIENT |
//!   PR_SET_KEEPCAPS | PR_SET_SECUREBITS), the set*id calls, setgroups, execve(at), bpf and
//!   perf_event_open, then `PTRACE_TRACEME` and stops itself.
//! * The tracer (one dedicated thread: ptrace belongs to a thread) sets `TRACESECCOMP | TRACECLONE
//!   | TRACEFORK | TRACEVFORK | TRACEEXEC | EXITKILL | TRACESYSGOOD`. At a seccomp stop it reads
//!   the registers (and the capset data), resumes with `PTRACE_SYSCALL`, and at the following
//!   syscall-exit stop reads `rax` and the `/proc/PID/task/*/status` of every thread of the
//!   process. Entry/exit is tracked per tid by the tracer itself.
//! * Waits use `__WALL | __WNOTHREAD`, so other children of the calling process are never reaped.
//! * Other threads read stdout/stderr, take samples and enforce the timeout; entries are merged by
//!   timestamp at the end.
//!
//! Seccomp precedence: an injected `SECCOMP_RET_ERRNO` beats `SECCOMP_RET_TRACE`, so a faulted
//! capset is never seen by the tracer; the launch records a `fault` entry instead.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use capring_spec::caps::CapSet;
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::launch::{self as l, Prepared};
pub use crate::launch::{ExitInfo, Faults, LaunchSpec, ObserveError};
use crate::timeline::{cap_text, compact, Entry, Kind, ThreadCaps, Timeline};

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Observation {
    pub timeline: Timeline,
    pub exit: ExitInfo,
    /// Lines of stdout with their arrival time (ns since launch), without the newline.
    pub stdout_lines: Vec<(u64, String)>,
    /// stderr (lossy UTF-8, at most 4 MiB kept).
    pub stderr: String,
    pub root_pid: i32,
    /// Launch to the end of the last process.
    pub wall: Duration,
}

const STDERR_LIMIT: usize = 4 << 20;

/// Runs `spec` and returns its timeline. The tracer runs on a fresh thread of its own, so this
/// may be called from any thread (and concurrently).
pub fn run(spec: &LaunchSpec) -> Result<Observation, ObserveError> {
    let spec = spec.clone();
    std::thread::Builder::new()
        .name("capring-tracer".into())
        .spawn(move || run_here(&spec))
        .map_err(ObserveError::os("spawn tracer thread"))?
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// `/proc/sys/kernel/cap_last_cap` (40 if unreadable).
pub fn cap_last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

// ---------------------------------------------------------------------------------------------
// /proc reading

/// The capability state of one thread.
pub fn read_thread(pid: i32, tid: i32) -> Option<ThreadCaps> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    parse_status(pid, tid, &text)
}

fn parse_status(pid: i32, tid: i32, text: &str) -> Option<ThreadCaps> {
    let mut t = ThreadCaps {
        pid,
        tid,
        comm: String::new(),
        effective: CapSet::EMPTY,
        permitted: CapSet::EMPTY,
        inheritable: CapSet::EMPTY,
        bounding: CapSet::EMPTY,
        ambient: CapSet::EMPTY,
        uids: None,
    };
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let set = || CapSet::from_hex(value);
        match key {
            "Name" => t.comm = value.to_string(),
            "Uid" => {
                let v: Vec<u32> = value
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [r, e, s, f] = v[..] {
                    t.uids = Some([r, e, s, f]);
                }
            }
            "CapInh" => t.inheritable = set()?,
            "CapPrm" => t.permitted = set()?,
            "CapEff" => t.effective = set()?,
            "CapBnd" => t.bounding = set()?,
            "CapAmb" => t.ambient = set()?,
            _ => continue,
        }
        seen += 1;
    }
    (seen >= 6).then_some(t)
}

/// Every readable thread of one process, by tid.
pub fn read_process(pid: i32) -> Vec<ThreadCaps> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids.into_iter()
        .filter_map(|tid| read_thread(pid, tid))
        .collect()
}

fn read_processes(pids: &BTreeSet<i32>) -> Vec<ThreadCaps> {
    pids.iter().flat_map(|&p| read_process(p)).collect()
}

/// The thread-group id of a task (from `/proc/TID/status`).
fn tgid_of(tid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `root` and its descendants by parent pid (used when not tracing).
fn descendants(root: i32) -> BTreeSet<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                // pid (comm) state ppid …; comm may contain spaces and parens
                if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                    if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok())
                    {
                        parent.push((pid, ppid));
                    }
                }
            }
        }
    }
    let mut set = BTreeSet::from([root]);
    loop {
        let before = set.len();
        for &(pid, ppid) in &parent {
            if set.contains(&ppid) {
                set.insert(pid);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.retain(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
    set
}

// ---------------------------------------------------------------------------------------------
// shared state between the tracer, the pipe readers and the monitor

struct Shared {
    t0: Instant,
    root: i32,
    observe: bool,
    /// Live processes (tgids) known to the tracer.
    live: Mutex<BTreeSet<i32>>,
    entries: Mutex<Vec<Entry>>,
    lines: Mutex<Vec<(u64, String)>>,
    done: AtomicBool,
    timed_out: AtomicBool,
    stopped_after_lines: AtomicBool,
    /// When SIGTERM was sent because of `stop_after_lines`.
    term_sent: Mutex<Option<Instant>>,
    wake: Condvar,
    wake_lock: Mutex<()>,
    /// The workload, started by the monitor thread at the first attach (or at `companion_at`).
    /// Never by the ptrace thread: its `__WNOTHREAD` waits would then see the workload as one
    /// more child to wait for.
    companion: Option<Arc<l::Companion>>,
    companion_at: Instant,
    companion_requested: AtomicBool,
    /// Without ptrace the attach is invisible: the monitor starts the companion when a BPF
    /// program appears that was not loaded at launch (near enough for the overhead benchmark,
    /// which must give both modes the same workload).
    programs_at_launch: Option<BTreeSet<u32>>,
}

impl Shared {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn tree(&self) -> BTreeSet<i32> {
        if self.observe {
            self.live.lock().unwrap().clone()
        } else {
            descendants(self.root)
        }
    }

    /// SIGKILL (or another signal) to every process of the tree.
    fn kill_tree(&self, sig: i32) {
        if !self.observe {
            unsafe { libc::kill(-self.root, sig) };
        }
        for pid in self.tree() {
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn sample(&self, detail: String) {
        let threads = read_processes(&self.tree());
        let t_ns = self.now();
        self.entries.lock().unwrap().push(Entry {
            t_ns,
            pid: self.root,
            tid: self.root,
            kind: Kind::Sample,
            syscall: None,
            detail,
            result: None,
            from_tid: None,
            threads,
        });
    }

    /// Asks the monitor thread to start the companion now.
    fn request_companion(&self) {
        if self.companion.is_some() && !self.companion_requested.swap(true, Ordering::SeqCst) {
            self.notify();
        }
    }

    fn notify(&self) {
        let _g = self.wake_lock.lock().unwrap();
        self.wake.notify_all();
    }
}

fn stdout_reader(shared: Arc<Shared>, out: File, spec: &LaunchSpec) {
    let mut reader = BufReader::new(out);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let t = shared.now();
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        n += 1;
        shared
            .lines
            .lock()
            .unwrap()
            .push((t, String::from_utf8_lossy(&buf).into_owned()));
        if spec.sample_on_stdout {
            shared.sample(format!("stdout line {n}"));
        }
        if spec.stop_after_lines == Some(n)
            && !shared.stopped_after_lines.swap(true, Ordering::SeqCst)
        {
            *shared.term_sent.lock().unwrap() = Some(Instant::now());
            unsafe { libc::kill(shared.root, libc::SIGTERM) };
            shared.notify();
        }
    }
}

fn stderr_reader(mut err: File) -> String {
    let mut all = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match err.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => {
                if all.len() < STDERR_LIMIT {
                    all.extend_from_slice(&chunk[..k.min(STDERR_LIMIT - all.len())]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// Timeout, the SIGKILL 2 s after a `stop_after_lines` SIGTERM, and periodic samples.
fn monitor(shared: Arc<Shared>, timeout: Duration, every: Option<Duration>) {
    let deadline = shared.t0 + timeout;
    let mut next_sample = every.map(|d| shared.t0 + d);
    let mut killed_after_term = false;
    let mut guard = shared.wake_lock.lock().unwrap();
    while !shared.done.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline && !shared.timed_out.load(Ordering::SeqCst) {
            shared.timed_out.store(true, Ordering::SeqCst);
            shared.kill_tree(libc::SIGKILL);
        }
        let term = *shared.term_sent.lock().unwrap();
        if let Some(at) = term {
            if !killed_after_term && now >= at + Duration::from_secs(2) {
                killed_after_term = true;
                shared.kill_tree(libc::SIGKILL);
            }
        }
        let companion_due = shared.companion.as_ref().is_some_and(|c| !c.started());
        let program_appeared = || {
            shared
                .programs_at_launch
                .as_ref()
                .is_some_and(|before| !crate::run::loaded_programs().is_subset(before))
        };
        if companion_due
            && (now >= shared.companion_at
                || shared.companion_requested.load(Ordering::SeqCst)
                || program_appeared())
        {
            if let Some(c) = &shared.companion {
                c.start();
            }
        }
        if let (Some(at), Some(d)) = (next_sample, every) {
            if now >= at {
                drop(guard);
                shared.sample("periodic".into());
                guard = shared.wake_lock.lock().unwrap();
                next_sample = Some(at + d);
            }
        }
        // After the timeout, keep killing periodically (new forks racing the first kill).
        let mut wait = Duration::from_millis(50);
        if now < deadline {
            wait = wait.min(deadline - now);
        }
        if let Some(at) = next_sample {
            wait = wait.min(at.saturating_duration_since(now));
        }
        if companion_due {
            wait = wait.min(shared.companion_at.saturating_duration_since(now));
            if shared.programs_at_launch.is_some() {
                wait = wait.min(Duration::from_millis(5));
            }
        }
        if shared.timed_out.load(Ordering::SeqCst) || killed_after_term {
            shared.kill_tree(libc::SIGKILL);
        }
        guard = shared
            .wake
            .wait_timeout(guard, wait.max(Duration::from_millis(1)))
            .unwrap()
            .0;
    }
}

// ---------------------------------------------------------------------------------------------
// the tracer

/// A traced syscall between its seccomp (entry) stop and its exit stop.
struct Pending {
    name: &'static str,
    detail: String,
    /// Attaches a probe (starts the companion when it succeeds).
    attach: bool,
}

struct Task {
    pid: i32,
    pending: Option<Pending>,
    /// The initial SIGSTOP of an auto-attached task has been consumed.
    initial_stop_seen: bool,
}

struct Tracer {
    shared: Arc<Shared>,
    tasks: HashMap<i32, Task>,
    entries: Vec<Entry>,
    /// Index of the start entry of a task whose creator event has not been seen yet.
    start_entry: HashMap<i32, usize>,
    root_exit: Option<ExitInfo>,
    last: u8,
}

fn syscall_name(nr: i64) -> &'static str {
    match nr {
        126 => "capset",
        157 => "prctl",
        105 => "setuid",
        106 => "setgid",
        113 => "setreuid",
        114 => "setregid",
        116 => "setgroups",
        117 => "setresuid",
        119 => "setresgid",
        122 => "setfsuid",
        123 => "setfsgid",
        59 => "execve",
        322 => "execveat",
        321 => "bpf",
        298 => "perf_event_open",
        _ => "unknown",
    }
}

// `bpf(2)` commands the timeline names (uapi `enum bpf_cmd`).
const BPF_MAP_CREATE: u64 = 0;
const BPF_PROG_LOAD: u64 = 5;
const BPF_PROG_ATTACH: u64 = 8;
const BPF_RAW_TRACEPOINT_OPEN: u64 = 17;
const BPF_LINK_CREATE: u64 = 28;

/// `perf_event_open`, or a `bpf` command that attaches a program: the tracer has started
/// attaching its probes, so its events can fire from now on.
fn is_attach(nr: i64, first_arg: u64) -> bool {
    nr == libc::SYS_perf_event_open
        || (nr == libc::SYS_bpf
            && matches!(
                first_arg,
                BPF_PROG_ATTACH | BPF_RAW_TRACEPOINT_OPEN | BPF_LINK_CREATE
            ))
}

fn bpf_cmd(cmd: u64) -> String {
    match cmd {
        BPF_MAP_CREATE => "BPF_MAP_CREATE".into(),
        BPF_PROG_LOAD => "BPF_PROG_LOAD".into(),
        BPF_PROG_ATTACH => "BPF_PROG_ATTACH".into(),
        BPF_RAW_TRACEPOINT_OPEN => "BPF_RAW_TRACEPOINT_OPEN".into(),
        BPF_LINK_CREATE => "BPF_LINK_CREATE".into(),
        n => format!("bpf cmd {n}"),
    }
}

fn id_text(v: u64) -> String {
    let v = v as u32;
    if v == u32::MAX {
        "-1".into()
    } else {
        v.to_string()
    }
}

fn read_mem(tid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 || len == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        Pid::from_raw(tid),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )
    .ok()?;
    (n == len).then_some(buf)
}

/// A NUL-terminated string from the tracee, reading page by page (at most 4096 bytes).
fn read_cstr(tid: i32, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut a = addr;
    while out.len() < 4096 {
        let chunk = (4096 - (a % 4096)) as usize;
        let bytes = read_mem(tid, a, chunk)?;
        if let Some(i) = bytes.iter().position(|&b| b == 0) {
            out.extend_from_slice(&bytes[..i]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&bytes);
        a += chunk as u64;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn read_argv(tid: i32, addr: u64) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..32u64 {
        let Some(p) = read_mem(tid, addr + 8 * i, 8) else {
            break;
        };
        let p = u64::from_ne_bytes(p.try_into().unwrap());
        if p == 0 {
            return out;
        }
        out.push(read_cstr(tid, p).unwrap_or_else(|| "?".into()));
    }
    if addr != 0 {
        out.push("…".into());
    }
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

/// The `detail` of a traced call, from its entry registers and memory.
fn describe(tid: i32, nr: i64, a: [u64; 6], last: u8) -> String {
    match nr {
        l::NR_CAPSET => {
            let Some(hdr) = read_mem(tid, a[0], 8) else {
                return "unreadable header".into();
            };
            let (version, target) = (u32_at(&hdr, 0), u32_at(&hdr, 4) as i32);
            let words = match version {
                0x1998_0330 => 1,
                0x2007_1026 | 0x2008_0522 => 2,
                v => return format!("version {v:#x}"),
            };
            let Some(data) = read_mem(tid, a[1], 12 * words) else {
                return format!("version {version:#x}, no data");
            };
            let field = |i: usize| {
                let lo = u32_at(&data, 4 * i) as u64;
                let hi = if words == 2 {
                    u32_at(&data, 12 + 4 * i) as u64
                } else {
                    0
                };
                CapSet::from_bits(lo | hi << 32)
            };
            let mut s = format!(
                "eff={} prm={} inh={}",
                compact(field(0), last),
                compact(field(1), last),
                compact(field(2), last)
            );
            if target != 0 && target != tid {
                s.push_str(&format!(" target={target}"));
            }
            s
        }
        l::NR_PRCTL => match a[0] {
            l::PR_CAPBSET_DROP => format!("PR_CAPBSET_DROP, {}", cap_text(a[1])),
            l::PR_CAP_AMBIENT => match a[1] {
                1 => format!("PR_CAP_AMBIENT, IS_SET, {}", cap_text(a[2])),
                2 => format!("PR_CAP_AMBIENT, RAISE, {}", cap_text(a[2])),
                3 => format!("PR_CAP_AMBIENT, LOWER, {}", cap_text(a[2])),
                4 => "PR_CAP_AMBIENT, CLEAR_ALL".into(),
                op => format!("PR_CAP_AMBIENT, {op}, {}", a[2]),
            },
            l::PR_SET_KEEPCAPS => format!("PR_SET_KEEPCAPS, {}", a[1]),
            l::PR_SET_SECUREBITS => format!("PR_SET_SECUREBITS, {}", securebits(a[1])),
            op => format!("{op}, {}", a[1]),
        },
        105 | 106 | 122 | 123 => id_text(a[0]),
        113 | 114 => format!("{}, {}", id_text(a[0]), id_text(a[1])),
        117 | 119 => format!("{}, {}, {}", id_text(a[0]), id_text(a[1]), id_text(a[2])),
        116 => {
            let n = a[0] as usize;
            let gids = read_mem(tid, a[1], 4 * n.min(32))
                .map(|b| {
                    b.chunks(4)
                        .map(|c| u32_at(c, 0).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            format!("{n}, [{gids}{}]", if n > 32 { ", …" } else { "" })
        }
        l::NR_EXECVE => {
            let path = read_cstr(tid, a[0]).unwrap_or_else(|| "?".into());
            format!("{path} {:?}", read_argv(tid, a[1]))
        }
        l::NR_EXECVEAT => {
            let path = read_cstr(tid, a[1]).unwrap_or_else(|| "?".into());
            format!(
                "dirfd={} {path} {:?} flags={:#x}",
                a[0] as i32,
                read_argv(tid, a[2]),
                a[4]
            )
        }
        l::NR_BPF => {
            let mut s = bpf_cmd(a[0]);
            if a[0] == BPF_MAP_CREATE || a[0] == BPF_PROG_LOAD {
                if let Some(attr) = read_mem(tid, a[1], 4) {
                    let what = if a[0] == BPF_MAP_CREATE {
                        "map_type"
                    } else {
                        "prog_type"
                    };
                    s.push_str(&format!(" {what}={}", u32_at(&attr, 0)));
                }
            }
            s
        }
        l::NR_PERF_EVENT_OPEN => {
            let (ty, config) = read_mem(tid, a[0], 16)
                .map(|b| {
                    (
                        u32_at(&b, 0),
                        u64::from_ne_bytes(b[8..16].try_into().unwrap()),
                    )
                })
                .unwrap_or((u32::MAX, 0));
            let ty = match ty {
                0 => "hardware".to_string(),
                1 => "software".to_string(),
                2 => "tracepoint".to_string(),
                3 => "hw_cache".to_string(),
                4 => "raw".to_string(),
                5 => "breakpoint".to_string(),
                n => n.to_string(),
            };
            format!(
                "type={ty} config={config} pid={} cpu={}",
                a[1] as i32, a[2] as i32
            )
        }
        _ => format!("{:#x}, {:#x}, {:#x}", a[0], a[1], a[2]),
    }
}

fn securebits(v: u64) -> String {
    const NAMES: [&str; 8] = [
        "NOROOT",
        "NOROOT_LOCKED",
        "NO_SETUID_FIXUP",
        "NO_SETUID_FIXUP_LOCKED",
        "KEEP_CAPS",
        "KEEP_CAPS_LOCKED",
        "NO_CAP_AMBIENT_RAISE",
        "NO_CAP_AMBIENT_RAISE_LOCKED",
    ];
    let names: Vec<&str> = (0..8)
        .filter(|i| v & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect();
    format!(
        "{v:#x} ({})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join("|")
        }
    )
}

impl Tracer {
    fn push(
        &mut self,
        pid: i32,
        tid: i32,
        kind: Kind,
        detail: String,
        threads: Vec<ThreadCaps>,
    ) -> usize {
        self.entries.push(Entry {
            t_ns: self.shared.now(),
            pid,
            tid,
            kind,
            syscall: None,
            detail,
            result: None,
            from_tid: None,
            threads,
        });
        self.entries.len() - 1
    }

    /// Resume a stopped task; PTRACE_SYSCALL while a traced call waits for its exit stop.
    /// Resumes a stopped task, delivering signal number `sig` (0 = none). Raw numbers, not
    /// nix's `Signal`: real-time signals (e.g. a psx-style broadcast) must be re-injected too.
    fn resume(&self, tid: i32, sig: i32) {
        let pending = self.tasks.get(&tid).is_some_and(|t| t.pending.is_some());
        let request = if pending {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        // SAFETY: ptrace on a task we trace; a vanished task just gives ESRCH.
        unsafe {
            libc::ptrace(
                request,
                tid,
                std::ptr::null_mut::<libc::c_void>(),
                sig as libc::c_long,
            );
        }
    }

    /// A task not seen before: register it and record its start (creator possibly unknown yet).
    fn new_task(&mut self, tid: i32, from: Option<(i32, bool)>) -> bool {
        // `start_entry` also holds tasks that already ended before their creator's event arrived.
        if self.tasks.contains_key(&tid) || self.start_entry.contains_key(&tid) {
            return false;
        }
        let pid = tgid_of(tid).unwrap_or(tid);
        self.tasks.insert(
            tid,
            Task {
                pid,
                pending: None,
                initial_stop_seen: false,
            },
        );
        let is_process = pid == tid;
        if is_process {
            self.shared.live.lock().unwrap().insert(pid);
        }
        let kind = if is_process {
            Kind::ProcessStart
        } else {
            Kind::ThreadStart
        };
        let detail = match from {
            Some((_, true)) => "vfork".to_string(),
            Some((_, false)) | None if is_process => "fork".to_string(),
            _ => String::new(),
        };
        let threads = read_process(pid);
        let idx = self.push(pid, tid, kind, detail, threads);
        match from {
            Some((creator, _)) => self.entries[idx].from_tid = Some(creator),
            None => {
                self.start_entry.insert(tid, idx);
            }
        }
        true
    }

    fn on_exit(&mut self, tid: i32, exit: ExitInfo, how: String) {
        let task = self.tasks.remove(&tid);
        let pid = task.as_ref().map(|t| t.pid).unwrap_or(tid);
        if pid == tid {
            self.push(pid, tid, Kind::ProcessExit, how, Vec::new());
            let rest = {
                let mut live = self.shared.live.lock().unwrap();
                live.remove(&pid);
                live.len()
            };
            if pid == self.shared.root {
                self.root_exit = Some(exit);
                // The command is over: nothing it left behind may outlive it.
                if rest > 0 {
                    self.shared.kill_tree(libc::SIGKILL);
                }
            }
        } else {
            self.push(pid, tid, Kind::ThreadExit, how, Vec::new());
        }
    }

    fn on_seccomp(&mut self, tid: i32) {
        let Ok(regs) = ptrace::getregs(Pid::from_raw(tid)) else {
            return;
        };
        let nr = regs.orig_rax as i64;
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let detail = describe(tid, nr, args, self.last);
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.pending = Some(Pending {
                name: syscall_name(nr),
                detail,
                attach: is_attach(nr, args[0]),
            });
        }
    }

    fn on_syscall_exit(&mut self, tid: i32) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(p) = task.pending.take() else { return };
        let pid = task.pid;
        let result = ptrace::getregs(Pid::from_raw(tid))
            .map(|r| r.rax as i64)
            .ok();
        if p.attach && result.is_some_and(|r| r >= 0) {
            self.shared.request_companion();
        }
        let threads = read_process(pid);
        let idx = self.push(pid, tid, Kind::Syscall, p.detail, threads);
        self.entries[idx].syscall = Some(p.name.to_string());
        self.entries[idx].result = result;
    }

    fn on_exec(&mut self, tid: i32) {
        let former = ptrace::getevent(Pid::from_raw(tid))
            .map(|v| v as i32)
            .unwrap_or(tid);
        let mut pending = None;
        if former != tid {
            // A non-leader thread exec'd: it now has the leader's tid; the old tid is gone.
            if let Some(mut t) = self.tasks.remove(&former) {
                pending = t.pending.take();
            }
        }
        let task = self.tasks.entry(tid).or_insert(Task {
            pid: tid,
            pending: None,
            initial_stop_seen: true,
        });
        task.pid = tid;
        task.initial_stop_seen = true;
        let pending = pending.or_else(|| task.pending.take());
        task.pending = None;
        let (name, detail) = match pending {
            Some(p) => (p.name, p.detail),
            None => ("execve", String::new()),
        };
        let threads = read_process(tid);
        let idx = self.push(tid, tid, Kind::Exec, detail, threads);
        let e = &mut self.entries[idx];
        e.syscall = Some(name.to_string());
        e.result = Some(0);
        e.from_tid = (former != tid).then_some(former);
    }

    fn on_fork_event(&mut self, tid: i32, event: i32) {
        let Ok(new) = ptrace::getevent(Pid::from_raw(tid)) else {
            return;
        };
        let new = new as i32;
        let vfork = event == Event::PTRACE_EVENT_VFORK as i32;
        if !self.new_task(new, Some((tid, vfork))) {
            // Its first stop arrived before this event: fill in the creator.
            if let Some(idx) = self.start_entry.remove(&new) {
                self.entries[idx].from_tid = Some(tid);
                if vfork {
                    self.entries[idx].detail = "vfork".into();
                }
            }
        }
    }

    fn run_loop(&mut self) -> Result<(), ObserveError> {
        loop {
            let status = match wait_any() {
                Ok(s) => s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Ok(()),
                Err(errno) => {
                    return Err(ObserveError::Ptrace {
                        what: "waitpid",
                        tid: -1,
                        errno,
                    })
                }
            };
            match status {
                Wait::Exited(tid, code) => self.on_exit(
                    tid,
                    ExitInfo {
                        code: Some(code),
                        ..Default::default()
                    },
                    format!("code {code}"),
                ),
                Wait::Signaled(tid, sig) => self.on_exit(
                    tid,
                    ExitInfo {
                        signal: Some(sig),
                        ..Default::default()
                    },
                    format!("signal {}", l::signal_name(sig)),
                ),
                Wait::Stopped(tid, sig) => {
                    self.new_task(tid, None);
                    let task = self.tasks.get_mut(&tid).expect("registered above");
                    if sig == libc::SIGSTOP && !task.initial_stop_seen {
                        task.initial_stop_seen = true;
                        self.resume(tid, 0);
                        continue;
                    }
                    task.initial_stop_seen = true;
                    match ptrace::getsiginfo(Pid::from_raw(tid)) {
                        // group-stop: let it go on (job control is not emulated)
                        Err(Errno::EINVAL) => self.resume(tid, 0),
                        Err(_) => {} // gone
                        Ok(_) => self.resume(tid, sig),
                    }
                }
                Wait::Event(tid, event) => {
                    self.new_task(tid, None);
                    if let Some(t) = self.tasks.get_mut(&tid) {
                        t.initial_stop_seen = true;
                    }
                    match event {
                        e if e == Event::PTRACE_EVENT_SECCOMP as i32 => {
                            self.on_seccomp(tid);
                        }
                        e if e == Event::PTRACE_EVENT_CLONE as i32
                            || e == Event::PTRACE_EVENT_FORK as i32
                            || e == Event::PTRACE_EVENT_VFORK as i32 =>
                        {
                            self.on_fork_event(tid, e)
                        }
                        e if e == Event::PTRACE_EVENT_EXEC as i32 => self.on_exec(tid),
                        _ => {}
                    }
                    self.resume(tid, 0);
                }
                Wait::SyscallStop(tid) => {
                    self.on_syscall_exit(tid);
                    self.resume(tid, 0);
                }
                Wait::Other => {}
            }
        }
    }
}

/// A decoded wait status. nix's `WaitStatus` cannot represent a stop by a real-time signal
/// (its `Signal` enum has none) and reports EINVAL instead, so the loop decodes statuses
/// itself.
enum Wait {
    Exited(i32, i32),
    Signaled(i32, i32),
    Stopped(i32, i32),
    Event(i32, i32),
    SyscallStop(i32),
    Other,
}

fn wait_any() -> Result<Wait, Errno> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid with a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::__WNOTHREAD) };
    if pid < 0 {
        return Err(Errno::last());
    }
    Ok(if libc::WIFEXITED(status) {
        Wait::Exited(pid, libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Wait::Signaled(pid, libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        if event != 0 {
            Wait::Event(pid, event)
        } else if sig == libc::SIGTRAP | 0x80 {
            Wait::SyscallStop(pid)
        } else {
            Wait::Stopped(pid, sig)
        }
    } else {
        Wait::Other
    })
}

fn fault_entries(
    spec: &LaunchSpec,
    root: i32,
    t_ns: u64,
    threads: Vec<ThreadCaps>,
    last: u8,
) -> Vec<Entry> {
    let mut notes = Vec::new();
    if !spec.bounding_drop.is_empty() {
        notes.push(format!(
            "bounding_drop {} (before exec)",
            compact(spec.bounding_drop, last)
        ));
    }
    if spec.faults.capset_eperm {
        notes.push("capset -> EPERM (seccomp; such calls are not traced)".to_string());
    }
    if spec.faults.capbset_drop_eperm {
        notes.push(
            "prctl(PR_CAPBSET_DROP) -> EPERM (seccomp; such calls are not traced)".to_string(),
        );
    }
    notes
        .into_iter()
        .map(|detail| Entry {
            t_ns,
            pid: root,
            tid: root,
            kind: Kind::Fault,
            syscall: None,
            detail,
            result: None,
            from_tid: None,
            threads: threads.clone(),
        })
        .collect()
}

/// Joins a helper thread, giving up (leaving it detached) after `limit`.
fn join_within<T: Send + 'static>(h: std::thread::JoinHandle<T>, limit: Duration) -> Option<T> {
    let end = Instant::now() + limit;
    while !h.is_finished() {
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    h.join().ok()
}

fn run_here(spec: &LaunchSpec) -> Result<Observation, ObserveError> {
    let prepared = Prepared::new(spec)?;
    let last = cap_last_cap();
    // Listed before the child exists, so none of its programs can be in it.
    let programs_at_launch =
        (!spec.observe && spec.companion.is_some()).then(crate::run::loaded_programs);
    let t0 = Instant::now();
    let l::Spawned {
        pid: root,
        stdout: child_stdout,
        stderr: child_stderr,
        errors: mut child_errors,
    } = l::spawn(&prepared)?;
    let shared = Arc::new(Shared {
        t0,
        root,
        observe: spec.observe,
        live: Mutex::new(BTreeSet::from([root])),
        entries: Mutex::new(Vec::new()),
        lines: Mutex::new(Vec::new()),
        done: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        stopped_after_lines: AtomicBool::new(false),
        term_sent: Mutex::new(None),
        wake: Condvar::new(),
        wake_lock: Mutex::new(()),
        companion: spec.companion.clone(),
        companion_at: t0 + spec.companion_fallback,
        companion_requested: AtomicBool::new(false),
        programs_at_launch,
    });
    let wait_flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;

    // Handshake: the traced child stops itself right before execve.
    let mut tracer = Tracer {
        shared: shared.clone(),
        tasks: HashMap::new(),
        entries: Vec::new(),
        start_entry: HashMap::new(),
        root_exit: None,
        last,
    };
    if spec.observe {
        let status = loop {
            match waitpid(Pid::from_raw(root), Some(wait_flags)) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        match status {
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(l::read_setup_error(&mut child_errors).unwrap_or_else(|| {
                    ObserveError::Handshake(format!("child ended: {status:?}"))
                }));
            }
            other => {
                unsafe { libc::kill(root, libc::SIGKILL) };
                let _ = waitpid(Pid::from_raw(root), Some(wait_flags));
                return Err(ObserveError::Handshake(format!("{other:?}")));
            }
        }
        let options = Options::PTRACE_O_TRACESECCOMP
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_EXITKILL
            | Options::PTRACE_O_TRACESYSGOOD;
        if let Err(errno) = ptrace::setoptions(Pid::from_raw(root), options) {
            unsafe { libc::kill(root, libc::SIGKILL) };
            let _ = waitpid(Pid::from_raw(root), Some(wait_flags));
            return Err(ObserveError::Ptrace {
                what: "setoptions",
                tid: root,
                errno,
            });
        }
        tracer.tasks.insert(
            root,
            Task {
                pid: root,
                pending: None,
                initial_stop_seen: true,
            },
        );
        let threads = if spec.faults.any() || !spec.bounding_drop.is_empty() {
            read_process(root)
        } else {
            Vec::new()
        };
        tracer
            .entries
            .extend(fault_entries(spec, root, shared.now(), threads, last));
    } else {
        if let Some(err) = l::read_setup_error(&mut child_errors) {
            let _ = waitpid(Pid::from_raw(root), Some(wait_flags));
            return Err(err);
        }
        tracer.entries.extend(fault_entries(
            spec,
            root,
            shared.now(),
            read_process(root),
            last,
        ));
    }

    let out_thread = {
        let (shared, spec) = (shared.clone(), spec.clone());
        std::thread::Builder::new()
            .name("capring-stdout".into())
            .spawn(move || stdout_reader(shared, child_stdout, &spec))
            .map_err(ObserveError::os("spawn stdout reader"))?
    };
    let err_thread = std::thread::Builder::new()
        .name("capring-stderr".into())
        .spawn(move || stderr_reader(child_stderr))
        .map_err(ObserveError::os("spawn stderr reader"))?;
    let mon_thread = {
        let shared = shared.clone();
        let (timeout, every) = (spec.timeout, spec.sample_every);
        std::thread::Builder::new()
            .name("capring-monitor".into())
            .spawn(move || monitor(shared, timeout, every))
            .map_err(ObserveError::os("spawn monitor"))?
    };

    let result = if spec.observe {
        let _ = ptrace::cont(Pid::from_raw(root), None);
        let r = tracer.run_loop();
        if r.is_err() {
            // Never leave anything behind; EXITKILL also covers this thread ending.
            shared.kill_tree(libc::SIGKILL);
            while !matches!(waitpid(None, Some(wait_flags)), Err(Errno::ECHILD)) {}
        }
        r
    } else {
        loop {
            match waitpid(Pid::from_raw(root), Some(WaitPidFlag::__WNOTHREAD)) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(_, code)) => {
                    tracer.on_exit(
                        root,
                        ExitInfo {
                            code: Some(code),
                            ..Default::default()
                        },
                        format!("code {code}"),
                    );
                    break;
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    tracer.on_exit(
                        root,
                        ExitInfo {
                            signal: Some(sig as i32),
                            ..Default::default()
                        },
                        format!("signal {}", sig.as_str()),
                    );
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        // Leftovers of an unobserved run: its process group and known descendants.
        unsafe { libc::kill(-root, libc::SIGKILL) };
        Ok(())
    };
    let wall = t0.elapsed();
    shared.done.store(true, Ordering::SeqCst);
    shared.notify();
    let _ = mon_thread.join();
    let setup_error = if spec.observe {
        l::read_setup_error(&mut child_errors)
    } else {
        None
    };
    // The readers end at EOF; a descendant that escaped could hold the pipe open: don't wait forever.
    let _ = join_within(out_thread, Duration::from_secs(2));
    let stderr = join_within(err_thread, Duration::from_secs(2)).unwrap_or_default();
    result?;
    if let Some(err) = setup_error {
        return Err(err);
    }

    let mut exit = tracer.root_exit.unwrap_or_default();
    exit.timed_out = shared.timed_out.load(Ordering::SeqCst);
    exit.stopped_after_lines = shared.stopped_after_lines.load(Ordering::SeqCst);
    let mut entries = tracer.entries;
    entries.append(&mut shared.entries.lock().unwrap());
    let mut timeline = Timeline {
        command: spec.command_line(),
        root_pid: root,
        entries,
    };
    timeline.sort();
    let stdout_lines = std::mem::take(&mut *shared.lines.lock().unwrap());
    Ok(Observation {
        timeline,
        exit,
        stdout_lines,
        stderr,
        root_pid: root,
        wall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tref-tracer\nTgid:\t10\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapPrm:\t000000c000000000\nCapEff:\t0000008000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n";
        let t = parse_status(10, 11, text).unwrap();
        assert_eq!(t.comm, "ref-tracer");
        assert_eq!(t.effective.names(), vec!["cap_bpf"]);
        assert_eq!(t.permitted.names(), vec!["cap_perfmon", "cap_bpf"]);
        assert_eq!(t.uids, Some([0, 0, 0, 0]));
        assert!(parse_status(1, 1, "Name:\tx\n").is_none());
    }

    #[test]
    fn reads_own_threads() {
        let me = std::process::id() as i32;
        let threads = read_process(me);
        assert!(!threads.is_empty());
        assert!(threads.iter().all(|t| t.pid == me));
    }
}
