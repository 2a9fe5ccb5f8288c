//! The ptrace loop: one dedicated thread that stops at every traced system call of every
//! task of the tree, records it with the sets of all threads of its process, injects the
//! run's faults, and follows forks, clones, execs and exits.
//!
//! Why by hand and not `PTRACE_GET_SYSCALL_INFO`: that call (and nix's wrapper) exists only
//! for glibc targets, and the harness also runs as a static musl binary inside the VM
//! guests. Entry and exit are told apart per task: a seccomp stop is an entry, the next
//! syscall stop of that task is its exit.

use std::collections::HashMap;
use std::sync::Arc;

use capring_spec::sys::{read_process, tgid_of};
use nix::errno::Errno;
use nix::sys::ptrace::{self, Event as PtraceEvent};
use nix::unistd::Pid;

use super::decode::decode;
use super::Shared;
use crate::launch::{ExitInfo, ObserveError};
use crate::timeline::{Call, Entry, Event, FaultKind, Status, ThreadCaps};

/// A traced syscall between its seccomp (entry) stop and its exit stop.
struct Pending {
    call: Call,
    /// The harness made it fail: the kernel skips it and the exit stop sets `-EPERM`.
    injected: bool,
}

struct Task {
    pid: i32,
    pending: Option<Pending>,
    /// The initial SIGSTOP of an auto-attached task has been consumed.
    initial_stop_seen: bool,
}

pub(super) struct Tracer {
    pub shared: Arc<Shared>,
    tasks: HashMap<i32, Task>,
    pub entries: Vec<Entry>,
    /// Index of the start entry of a task whose creator event has not been seen yet.
    start_entry: HashMap<i32, usize>,
    pub root_exit: Option<ExitInfo>,
    faults: Vec<FaultKind>,
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

/// The exit status a `PTRACE_EVENT_EXIT` stop reports (a raw wait status).
fn exit_status(raw: i64) -> Status {
    let raw = raw as libc::c_int;
    if libc::WIFSIGNALED(raw) {
        Status::Signal(libc::WTERMSIG(raw))
    } else {
        Status::Code(libc::WEXITSTATUS(raw))
    }
}

impl Tracer {
    pub fn new(shared: Arc<Shared>, root: i32, faults: Vec<FaultKind>) -> Tracer {
        let mut tasks = HashMap::new();
        tasks.insert(
            root,
            Task {
                pid: root,
                pending: None,
                initial_stop_seen: true,
            },
        );
        Tracer {
            shared,
            tasks,
            entries: Vec::new(),
            start_entry: HashMap::new(),
            root_exit: None,
            faults,
        }
    }

    fn push(&mut self, pid: i32, tid: i32, event: Event, threads: Vec<ThreadCaps>) -> usize {
        self.push_at(self.shared.now(), pid, tid, event, threads)
    }

    /// An entry stamped at `t_ns`: the moment of the stop, taken before the (slow) reads of
    /// `/proc`, so that a state is never stamped later than a change another thread made
    /// meanwhile.
    fn push_at(
        &mut self,
        t_ns: u64,
        pid: i32,
        tid: i32,
        event: Event,
        threads: Vec<ThreadCaps>,
    ) -> usize {
        self.entries.push(Entry {
            t_ns,
            pid,
            tid,
            event,
            threads,
        });
        self.entries.len() - 1
    }

    /// Resumes a stopped task, delivering signal number `sig` (0 = none);
    /// `PTRACE_SYSCALL` while a traced call waits for its exit stop. Raw numbers, not nix's
    /// `Signal`: real-time signals (e.g. a psx-style broadcast) must be re-injected too.
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

    /// A task not seen before: register it and record its start (creator possibly unknown
    /// yet). Returns false when it was known.
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
        let from_tid = from.map(|(creator, _)| creator);
        let event = if is_process {
            Event::ProcessStart {
                from_tid,
                vfork: from.is_some_and(|(_, vfork)| vfork),
            }
        } else {
            Event::ThreadStart { from_tid }
        };
        let t = self.shared.now();
        let idx = self.push_at(t, pid, tid, event, read_process(pid));
        if from.is_none() {
            self.start_entry.insert(tid, idx);
        }
        true
    }

    fn on_exit(&mut self, tid: i32, exit: ExitInfo, status: Status) {
        let pid = self.tasks.remove(&tid).map(|t| t.pid).unwrap_or(tid);
        if pid != tid {
            self.push(pid, tid, Event::ThreadExit { status }, Vec::new());
            return;
        }
        self.push(pid, tid, Event::ProcessExit { status }, Vec::new());
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
    }

    fn on_seccomp(&mut self, tid: i32) {
        let Ok(mut regs) = ptrace::getregs(Pid::from_raw(tid)) else {
            return;
        };
        let nr = regs.orig_rax as i64;
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let call = decode(tid, nr, args);
        let injected = self.faults.iter().any(|f| f.hits(&call));
        if injected {
            // Skip the call: syscall number -1 runs nothing; the exit stop sets the error.
            regs.orig_rax = u64::MAX;
            let _ = ptrace::setregs(Pid::from_raw(tid), regs);
        }
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.pending = Some(Pending { call, injected });
        }
    }

    fn on_syscall_exit(&mut self, tid: i32) {
        let Some(task) = self.tasks.get_mut(&tid) else {
            return;
        };
        let Some(p) = task.pending.take() else { return };
        let pid = task.pid;
        let result = match ptrace::getregs(Pid::from_raw(tid)) {
            Ok(mut regs) if p.injected => {
                regs.rax = (-libc::EPERM) as i64 as u64;
                let _ = ptrace::setregs(Pid::from_raw(tid), regs);
                -i64::from(libc::EPERM)
            }
            Ok(regs) => regs.rax as i64,
            Err(_) => return, // gone
        };
        if p.call.attaches() && result >= 0 {
            self.shared.request_companion();
        }
        let t = self.shared.now();
        let threads = read_process(pid);
        self.push_at(
            t,
            pid,
            tid,
            Event::Call {
                call: p.call,
                result,
                injected: p.injected,
            },
            threads,
        );
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
        let (path, argv) = match pending.map(|p| p.call) {
            Some(Call::Execve { path, argv }) => (path, argv),
            _ => (String::from("?"), Vec::new()),
        };
        let event = Event::Exec {
            path,
            argv,
            former_tid: (former != tid).then_some(former),
        };
        let t = self.shared.now();
        self.push_at(t, tid, tid, event, read_process(tid));
    }

    fn on_fork_event(&mut self, tid: i32, event: i32) {
        let Ok(new) = ptrace::getevent(Pid::from_raw(tid)) else {
            return;
        };
        let new = new as i32;
        let vfork = event == PtraceEvent::PTRACE_EVENT_VFORK as i32;
        if !self.new_task(new, Some((tid, vfork))) {
            // Its first stop arrived before this event: fill in the creator.
            if let Some(idx) = self.start_entry.remove(&new) {
                match &mut self.entries[idx].event {
                    Event::ProcessStart { from_tid, vfork: v } => {
                        *from_tid = Some(tid);
                        *v = vfork;
                    }
                    Event::ThreadStart { from_tid } => *from_tid = Some(tid),
                    _ => {}
                }
            }
        }
    }

    /// The thread is about to exit: its last sets, and its process's, while still readable.
    fn on_exit_stop(&mut self, tid: i32) {
        let pid = self.tasks.get(&tid).map(|t| t.pid).unwrap_or(tid);
        let status = ptrace::getevent(Pid::from_raw(tid)).ok().map(exit_status);
        let t = self.shared.now();
        let threads = read_process(pid);
        self.push_at(t, pid, tid, Event::Exiting { status }, threads);
    }

    fn on_event(&mut self, tid: i32, event: i32) {
        self.new_task(tid, None);
        if let Some(t) = self.tasks.get_mut(&tid) {
            t.initial_stop_seen = true;
        }
        match event {
            e if e == PtraceEvent::PTRACE_EVENT_SECCOMP as i32 => self.on_seccomp(tid),
            e if e == PtraceEvent::PTRACE_EVENT_CLONE as i32
                || e == PtraceEvent::PTRACE_EVENT_FORK as i32
                || e == PtraceEvent::PTRACE_EVENT_VFORK as i32 =>
            {
                self.on_fork_event(tid, e)
            }
            e if e == PtraceEvent::PTRACE_EVENT_EXEC as i32 => self.on_exec(tid),
            e if e == PtraceEvent::PTRACE_EVENT_EXIT as i32 => self.on_exit_stop(tid),
            _ => {}
        }
        self.resume(tid, 0);
    }

    fn on_signal_stop(&mut self, tid: i32, sig: i32) {
        self.new_task(tid, None);
        let task = self.tasks.get_mut(&tid).expect("registered above");
        if sig == libc::SIGSTOP && !task.initial_stop_seen {
            task.initial_stop_seen = true;
            self.resume(tid, 0);
            return;
        }
        task.initial_stop_seen = true;
        match ptrace::getsiginfo(Pid::from_raw(tid)) {
            // group-stop: let it go on (job control is not emulated)
            Err(Errno::EINVAL) => self.resume(tid, 0),
            Err(_) => {} // gone
            Ok(_) => self.resume(tid, sig),
        }
    }

    pub fn run_loop(&mut self) -> Result<(), ObserveError> {
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
                    Status::Code(code),
                ),
                Wait::Signaled(tid, sig) => self.on_exit(
                    tid,
                    ExitInfo {
                        signal: Some(sig),
                        ..Default::default()
                    },
                    Status::Signal(sig),
                ),
                Wait::Stopped(tid, sig) => self.on_signal_stop(tid, sig),
                Wait::Event(tid, event) => self.on_event(tid, event),
                Wait::SyscallStop(tid) => {
                    self.on_syscall_exit(tid);
                    self.resume(tid, 0);
                }
                Wait::Other => {}
            }
        }
    }
}
