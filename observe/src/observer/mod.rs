//! The observer: runs a command under ptrace and records its capability timeline.
//!
//! Mechanism (works in a static musl build: no `PTRACE_GET_SYSCALL_INFO`, no libseccomp):
//!
//! * The child (see [`crate::launch`]) drops bounding caps, installs a filter returning
//!   `SECCOMP_RET_TRACE` for the calls in [`capring_spec::sys::SYSCALLS`] (credential calls,
//!   exec, bpf, perf_event_open, raw sockets, module loads), then `PTRACE_TRACEME` and stops
//!   itself before exec.
//! * The tracer thread ([`tracer`]) stops at each such call, decodes it ([`decode`]), injects
//!   the run's faults (the call is skipped and returns EPERM, so the attempt stays visible),
//!   and at the exit stop records the result with the sets of every thread of the process.
//!   It follows every fork, clone and exec, and samples each thread at its exit stop
//!   (`PTRACE_O_TRACEEXIT`), so even a short-lived program leaves states to judge.
//! * Other threads read stdout/stderr line by line (timestamped; event lines trigger
//!   samples), take periodic samples, start the workload, and end the run: on enough event
//!   lines (SIGTERM, then SIGKILL 2 s later), on the timeout, or when capring is interrupted.
//!   Entries are merged by timestamp at the end.
//! * Waits use `__WALL | __WNOTHREAD`, so other children of the calling process are never
//!   reaped.

mod decode;
mod tracer;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use capring_spec::sys::{loaded_programs, read_process};
use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::launch::{self as l, Prepared};
pub use crate::launch::{EventLines, ExitInfo, LaunchSpec, ObserveError};
use crate::timeline::{Condition, Entry, Event, SampleCause, Status, Stream, Timeline};

/// One line the command wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Arrival time, ns since launch.
    pub t_ns: u64,
    /// The stream it was written to.
    pub stream: Stream,
    /// Lossy UTF-8, without the newline.
    pub text: String,
    /// One of the command's event lines (see [`EventLines`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub event: bool,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observation {
    /// What every thread of the tree held, and when it changed.
    pub timeline: Timeline,
    /// How the command (the root process) ended.
    pub exit: ExitInfo,
    /// Every line of stdout and stderr in arrival order (at most [`LINE_LIMIT`] per stream).
    pub lines: Vec<Line>,
    /// Lines not kept because a stream passed [`LINE_LIMIT`] (they still counted as events).
    #[serde(default)]
    pub lines_dropped: usize,
    /// Event lines seen, kept or not.
    #[serde(default)]
    pub event_count: usize,
    /// The pid of the launched command, the root of the tree.
    pub root_pid: i32,
    /// Launch to the end of the last process.
    pub wall: Duration,
}

impl Observation {
    /// The event lines, in order.
    pub fn events(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.event)
    }

    /// Arrival time of the first event line.
    pub fn first_event(&self) -> Option<u64> {
        self.events().next().map(|l| l.t_ns)
    }

    /// The lines of one stream.
    pub fn stream(&self, stream: Stream) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(move |l| l.stream == stream)
    }

    /// stderr as one text.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        for l in self.stream(Stream::Stderr) {
            s.push_str(&l.text);
            s.push('\n');
        }
        s
    }
}

/// Lines kept per stream: a command that floods its output is still drained (and its event
/// lines counted), but memory stays bounded.
pub const LINE_LIMIT: usize = 100_000;

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

/// `/proc/sys/kernel/cap_last_cap`, for rendering (40 if unreadable).
pub fn cap_last_cap() -> u8 {
    capring_spec::sys::cap_last_cap().unwrap_or(capring_spec::caps::LAST_NAMED)
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
                let ppid = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok());
                if let Some(ppid) = ppid {
                    parent.push((pid, ppid));
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
    lines: Mutex<Vec<Line>>,
    lines_dropped: std::sync::atomic::AtomicUsize,
    event_count: std::sync::atomic::AtomicUsize,
    done: AtomicBool,
    timed_out: AtomicBool,
    stopped_by_harness: AtomicBool,
    interrupted: AtomicBool,
    /// When SIGTERM was sent to end the run.
    term_sent: Mutex<Option<Instant>>,
    /// When the first event line arrived.
    first_event_at: Mutex<Option<Instant>>,
    stop_after_events: Option<usize>,
    min_steady: Duration,
    wake: Condvar,
    wake_lock: Mutex<()>,
    /// The workload, started by the monitor thread at the first attach (or at `companion_at`).
    /// Never by the ptrace thread: its `__WNOTHREAD` waits would then see the workload as one
    /// more child to wait for.
    companion: Option<Arc<l::Companion>>,
    companion_at: Instant,
    companion_requested: AtomicBool,
    /// Without ptrace the attach is invisible: the monitor starts the companion when a BPF
    /// program appears that was not loaded at launch.
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

    /// A signal to every process of the tree.
    fn kill_tree(&self, sig: i32) {
        if !self.observe {
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-self.root, sig) };
        }
        for pid in self.tree() {
            // SAFETY: kill(2) on a process of the tree we launched.
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn record(&self, event: Event, threads: Vec<crate::timeline::ThreadCaps>) {
        let t_ns = self.now();
        self.entries.lock().unwrap().push(Entry {
            t_ns,
            pid: self.root,
            tid: self.root,
            event,
            threads,
        });
    }

    /// Every thread of the tree, stamped when the reading starts: a sample takes a while
    /// (one file per thread), and a capset made meanwhile must not look older than the state
    /// the sample saw before it.
    fn sample(&self, cause: SampleCause) {
        let t_ns = self.now();
        let threads = self.tree().into_iter().flat_map(read_process).collect();
        self.entries.lock().unwrap().push(Entry {
            t_ns,
            pid: self.root,
            tid: self.root,
            event: Event::Sample { cause },
            threads,
        });
    }

    /// SIGTERM to the root (the harness ends the run); SIGKILL follows 2 s later.
    fn stop(&self, reason: &str) {
        if self.stopped_by_harness.swap(true, Ordering::SeqCst) {
            return;
        }
        *self.term_sent.lock().unwrap() = Some(Instant::now());
        self.record(
            Event::Signal {
                signal: libc::SIGTERM,
                reason: reason.to_string(),
            },
            Vec::new(),
        );
        // SAFETY: kill(2) on the root process we launched.
        unsafe { libc::kill(self.root, libc::SIGTERM) };
        self.notify();
    }

    /// Ends the run once there were enough event lines and the steady state lasted long
    /// enough (called on each event line and by the monitor).
    fn stop_when_enough(&self) {
        let Some(n) = self.stop_after_events else {
            return;
        };
        let seen = self.event_count.load(Ordering::SeqCst);
        let steady = self
            .first_event_at
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() >= self.min_steady);
        if seen >= n && steady {
            self.stop(&format!("{seen} event lines read"));
        }
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

    fn push_line(&self, line: Line) {
        let mut lines = self.lines.lock().unwrap();
        let kept = lines.iter().filter(|l| l.stream == line.stream).count();
        if kept < LINE_LIMIT {
            lines.push(line);
        } else {
            self.lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads one stream line by line; event lines are counted, sampled, and end the run once
/// there are enough.
fn reader(shared: Arc<Shared>, pipe: File, stream: Stream, spec: &LaunchSpec) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let t_ns = shared.now();
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let event = spec.event_lines.matches(stream, &text);
        shared.push_line(Line {
            t_ns,
            stream,
            text,
            event,
        });
        if !event {
            continue;
        }
        let n = shared.event_count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            *shared.first_event_at.lock().unwrap() = Some(Instant::now());
        }
        // Event lines may flood (a tracer of every openat on a busy machine): sample the
        // first ones only; periodic samples go on.
        if spec.sample_on_event && n <= spec.stop_after_events.unwrap_or(100) {
            shared.sample(SampleCause::EventLine { n });
        }
        shared.stop_when_enough();
    }
}

/// Timeout, interrupts, the SIGKILL 2 s after the harness's SIGTERM, the workload start and
/// periodic samples.
fn monitor(shared: Arc<Shared>, timeout: Duration, every: Option<Duration>) {
    let deadline = shared.t0 + timeout;
    let mut next_sample = every.map(|d| shared.t0 + d);
    let mut guard = shared.wake_lock.lock().unwrap();
    while !shared.done.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline && !shared.timed_out.swap(true, Ordering::SeqCst) {
            shared.kill_tree(libc::SIGKILL);
        }
        if crate::interrupt::requested().is_some()
            && !shared.interrupted.swap(true, Ordering::SeqCst)
        {
            shared.record(
                Event::Signal {
                    signal: libc::SIGKILL,
                    reason: "capring was interrupted".into(),
                },
                Vec::new(),
            );
            if let Some(c) = &shared.companion {
                let _ = c.stop();
            }
        }
        // `stop` notifies through the wake lock, which this loop holds.
        drop(guard);
        shared.stop_when_enough();
        guard = shared.wake_lock.lock().unwrap();
        let term = *shared.term_sent.lock().unwrap();
        let kill_after_term = term.is_some_and(|at| now >= at + Duration::from_secs(2));
        start_companion_when_due(&shared, now);
        if let (Some(at), Some(d)) = (next_sample, every) {
            if now >= at {
                drop(guard);
                shared.sample(SampleCause::Periodic);
                guard = shared.wake_lock.lock().unwrap();
                next_sample = Some(at + d);
            }
        }
        // Keep killing while it lasts: new forks may race the first kill.
        if shared.timed_out.load(Ordering::SeqCst)
            || shared.interrupted.load(Ordering::SeqCst)
            || kill_after_term
        {
            shared.kill_tree(libc::SIGKILL);
        }
        let mut wait = Duration::from_millis(50).min(deadline.saturating_duration_since(now));
        if let Some(at) = next_sample {
            wait = wait.min(at.saturating_duration_since(now));
        }
        if shared.companion.as_ref().is_some_and(|c| !c.started()) {
            wait = wait.min(shared.companion_at.saturating_duration_since(now));
            if shared.programs_at_launch.is_some() {
                wait = wait.min(Duration::from_millis(5));
            }
        }
        guard = shared
            .wake
            .wait_timeout(guard, wait.max(Duration::from_millis(1)))
            .unwrap()
            .0;
    }
}

fn start_companion_when_due(shared: &Shared, now: Instant) {
    let Some(c) = &shared.companion else { return };
    if c.started() || shared.interrupted.load(Ordering::SeqCst) {
        return;
    }
    let program_appeared = || {
        shared
            .programs_at_launch
            .as_ref()
            .is_some_and(|before| !loaded_programs().is_subset(before))
    };
    if now >= shared.companion_at
        || shared.companion_requested.load(Ordering::SeqCst)
        || program_appeared()
    {
        c.start();
    }
}

/// The entries that say which conditions the run was launched under.
fn condition_entries(spec: &LaunchSpec, root: i32, t_ns: u64) -> Vec<Entry> {
    let mut conditions = Vec::new();
    if !spec.bounding_drop.is_empty() {
        conditions.push(Condition::BoundingDrop {
            caps: spec.bounding_drop,
        });
    }
    if let Some(value) = spec.paranoid {
        conditions.push(Condition::Paranoid { value });
    }
    conditions.extend(spec.faults.iter().map(|&fault| Condition::Fault { fault }));
    let threads = if conditions.is_empty() {
        Vec::new()
    } else {
        read_process(root)
    };
    conditions
        .into_iter()
        .map(|condition| Entry {
            t_ns,
            pid: root,
            tid: root,
            event: Event::Condition { condition },
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

fn kill_and_reap(root: i32) {
    // SAFETY: kill(2) on the child we forked.
    unsafe { libc::kill(root, libc::SIGKILL) };
    let _ = waitpid(
        Pid::from_raw(root),
        Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD),
    );
}

/// Waits for the child's stop before exec, then sets the ptrace options.
fn handshake(root: i32, errors: &mut File) -> Result<(), ObserveError> {
    let flags = WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD;
    let status = loop {
        match waitpid(Pid::from_raw(root), Some(flags)) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    match status {
        Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => {}
        Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
            return Err(l::read_setup_error(errors)
                .unwrap_or_else(|| ObserveError::Handshake(format!("child ended: {status:?}"))));
        }
        other => {
            kill_and_reap(root);
            return Err(ObserveError::Handshake(format!("{other:?}")));
        }
    }
    let options = Options::PTRACE_O_TRACESECCOMP
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACEEXEC
        | Options::PTRACE_O_TRACEEXIT
        | Options::PTRACE_O_EXITKILL
        | Options::PTRACE_O_TRACESYSGOOD;
    ptrace::setoptions(Pid::from_raw(root), options).map_err(|errno| {
        kill_and_reap(root);
        ObserveError::Ptrace {
            what: "setoptions",
            tid: root,
            errno,
        }
    })
}

/// Without ptrace: waits for the root only and kills what it left behind.
fn wait_unobserved(tracer: &mut tracer::Tracer, root: i32) {
    loop {
        let (exit, status) = match waitpid(Pid::from_raw(root), Some(WaitPidFlag::__WNOTHREAD)) {
            Err(Errno::EINTR) => continue,
            Ok(WaitStatus::Exited(_, code)) => (
                ExitInfo {
                    code: Some(code),
                    ..Default::default()
                },
                Status::Code(code),
            ),
            Ok(WaitStatus::Signaled(_, sig, _)) => (
                ExitInfo {
                    signal: Some(sig as i32),
                    ..Default::default()
                },
                Status::Signal(sig as i32),
            ),
            Ok(_) => continue,
            Err(_) => break,
        };
        tracer.root_exit = Some(exit);
        tracer.entries.push(Entry {
            t_ns: tracer.shared.now(),
            pid: root,
            tid: root,
            event: Event::ProcessExit { status },
            threads: Vec::new(),
        });
        break;
    }
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(-root, libc::SIGKILL) };
}

fn spawn_helpers(
    shared: &Arc<Shared>,
    spec: &LaunchSpec,
    stdout: File,
    stderr: File,
) -> Result<Vec<std::thread::JoinHandle<()>>, ObserveError> {
    let mut handles = Vec::new();
    for (name, pipe, stream) in [
        ("capring-stdout", stdout, Stream::Stdout),
        ("capring-stderr", stderr, Stream::Stderr),
    ] {
        let (shared, spec) = (shared.clone(), spec.clone());
        handles.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || reader(shared, pipe, stream, &spec))
                .map_err(ObserveError::os("spawn output reader"))?,
        );
    }
    Ok(handles)
}

impl Shared {
    fn new(spec: &LaunchSpec, t0: Instant, root: i32, programs: Option<BTreeSet<u32>>) -> Shared {
        Shared {
            t0,
            root,
            observe: spec.observe,
            live: Mutex::new(BTreeSet::from([root])),
            entries: Mutex::new(Vec::new()),
            lines: Mutex::new(Vec::new()),
            lines_dropped: Default::default(),
            event_count: Default::default(),
            done: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            stopped_by_harness: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            term_sent: Mutex::new(None),
            first_event_at: Mutex::new(None),
            stop_after_events: spec.stop_after_events,
            min_steady: spec.min_steady,
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            companion: spec.companion.clone(),
            companion_at: t0 + spec.companion_fallback,
            companion_requested: AtomicBool::new(false),
            programs_at_launch: programs,
        }
    }

    /// Everything recorded, once the run is over.
    fn finish(&self, spec: &LaunchSpec, tracer: tracer::Tracer, wall: Duration) -> Observation {
        let mut exit = tracer.root_exit.unwrap_or_default();
        exit.timed_out = self.timed_out.load(Ordering::SeqCst);
        exit.stopped_by_harness = self.stopped_by_harness.load(Ordering::SeqCst);
        exit.interrupted = self.interrupted.load(Ordering::SeqCst);
        let mut entries = tracer.entries;
        entries.append(&mut self.entries.lock().unwrap());
        let mut timeline = Timeline {
            command: spec.command_line(),
            root_pid: self.root,
            entries,
        };
        timeline.sort();
        Observation {
            timeline,
            exit,
            lines: std::mem::take(&mut *self.lines.lock().unwrap()),
            lines_dropped: self.lines_dropped.load(Ordering::SeqCst),
            event_count: self.event_count.load(Ordering::SeqCst),
            root_pid: self.root,
            wall,
        }
    }
}

/// Traces until the tree is gone (or, unobserved, until the root is).
fn trace(
    spec: &LaunchSpec,
    shared: &Shared,
    tracer: &mut tracer::Tracer,
) -> Result<(), ObserveError> {
    if !spec.observe {
        wait_unobserved(tracer, shared.root);
        return Ok(());
    }
    let _ = ptrace::cont(Pid::from_raw(shared.root), None);
    let r = tracer.run_loop();
    if r.is_err() {
        // Never leave anything behind; EXITKILL also covers this thread ending.
        shared.kill_tree(libc::SIGKILL);
        while !matches!(
            waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::__WNOTHREAD)),
            Err(Errno::ECHILD)
        ) {}
    }
    r
}

fn run_here(spec: &LaunchSpec) -> Result<Observation, ObserveError> {
    let prepared = Prepared::new(spec)?;
    // Listed before the child exists, so none of its programs can be in it.
    let programs_at_launch = (!spec.observe && spec.companion.is_some()).then(loaded_programs);
    let t0 = Instant::now();
    let l::Spawned {
        pid: root,
        stdout,
        stderr,
        errors: mut child_errors,
    } = l::spawn(&prepared)?;
    let shared = Arc::new(Shared::new(spec, t0, root, programs_at_launch));
    let mut tracer = tracer::Tracer::new(shared.clone(), root, spec.faults.clone());
    if spec.observe {
        handshake(root, &mut child_errors)?;
    } else if let Some(err) = l::read_setup_error(&mut child_errors) {
        let _ = waitpid(Pid::from_raw(root), Some(WaitPidFlag::__WNOTHREAD));
        return Err(err);
    }
    tracer
        .entries
        .extend(condition_entries(spec, root, shared.now()));
    let readers = spawn_helpers(&shared, spec, stdout, stderr)?;
    let mon_thread = {
        let shared = shared.clone();
        let (timeout, every) = (spec.timeout, spec.sample_every);
        std::thread::Builder::new()
            .name("capring-monitor".into())
            .spawn(move || monitor(shared, timeout, every))
            .map_err(ObserveError::os("spawn monitor"))?
    };
    let result = trace(spec, &shared, &mut tracer);
    let wall = t0.elapsed();
    shared.done.store(true, Ordering::SeqCst);
    shared.notify();
    let _ = mon_thread.join();
    let setup_error = spec
        .observe
        .then(|| l::read_setup_error(&mut child_errors))
        .flatten();
    // The readers end at EOF; a descendant that escaped could hold a pipe open: don't wait
    // forever.
    for r in readers {
        let _ = join_within(r, Duration::from_secs(2));
    }
    result?;
    if let Some(err) = setup_error {
        return Err(err);
    }
    Ok(shared.finish(spec, tracer, wall))
}
