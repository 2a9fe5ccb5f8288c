//! The one place that reads the kernel's view of a thread and names what the kernel says.
//!
//! Why a module of its own: the reference tracer (verifying its own rings), the harness's
//! observer (judging any tracer) and the facts probe all read `/proc/PID/task/TID/status`,
//! `cap_last_cap`, syscall numbers, errno and signal values, and the kernel's BPF program
//! list. Before this module each had its own parser with its own fallbacks, and they
//! disagreed in small ways (a missing `cap_last_cap` meant 40 in one place and `LAST_NAMED`
//! in another). Here there is one [`ThreadCaps`], one parser and one answer.
//!
//! The data types and the pure parser are always available; everything that reads the
//! running system is behind the `probe` feature, like `crate::facts::probe`.

use serde::{Deserialize, Serialize};

use crate::caps::CapSet;

/// The capability state of one thread, as `/proc/PID/task/TID/status` shows it.
///
/// The five sets are the `Cap*:` lines (bit n = capability n, see [`CapSet`]); E ⊆ P
/// always holds in the kernel, and the rings are judged on E.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCaps {
    /// The process (thread-group id) the thread belongs to.
    pub pid: i32,
    /// The thread's own id (equal to `pid` for the main thread).
    pub tid: i32,
    /// `Name:` (the thread's comm).
    pub comm: String,
    /// E, `CapEff:`: what the kernel checks now; the ring the thread is on.
    pub effective: CapSet,
    /// P, `CapPrm:`: the limit E can be raised to without exec.
    pub permitted: CapSet,
    /// I, `CapInh:`: kept across execve(2) (`ring.inheritable-ambient.empty`).
    pub inheritable: CapSet,
    /// B, `CapBnd:`: the limit on what execve(2) can grant (`ring.bounding.cleared`).
    pub bounding: CapSet,
    /// A, `CapAmb:`: kept, and made effective, across execve(2) of a program without file
    /// capabilities.
    pub ambient: CapSet,
    /// Real, effective, saved and filesystem uid (`Uid:` line), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uids: Option<[u32; 4]>,
    /// The `State:` letter (`R`, `S`, `Z`, …); `?` when absent.
    #[serde(default = "unknown_state", skip_serializing_if = "is_unknown_state")]
    pub state: char,
    /// The `SigBlk:` mask (bit n-1 = signal n). Only the reference's ring manager uses it.
    #[serde(skip)]
    pub blocked: u64,
}

fn unknown_state() -> char {
    '?'
}

fn is_unknown_state(c: &char) -> bool {
    *c == '?'
}

impl ThreadCaps {
    /// A thread with every set empty (for building examples and tests).
    pub fn empty(pid: i32, tid: i32) -> ThreadCaps {
        ThreadCaps {
            pid,
            tid,
            comm: String::new(),
            effective: CapSet::EMPTY,
            permitted: CapSet::EMPTY,
            inheritable: CapSet::EMPTY,
            bounding: CapSet::EMPTY,
            ambient: CapSet::EMPTY,
            uids: None,
            state: '?',
            blocked: 0,
        }
    }

    /// True when the five capability sets (not the names or ids) are equal.
    pub fn same_sets(&self, other: &ThreadCaps) -> bool {
        self.effective == other.effective
            && self.permitted == other.permitted
            && self.inheritable == other.inheritable
            && self.bounding == other.bounding
            && self.ambient == other.ambient
    }

    /// A zombie or dead thread: its credentials no longer matter.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of a `status` file. `None` unless all five capability lines are there
/// and readable (a thread that is being torn down can show a truncated file).
pub fn parse_status(pid: i32, tid: i32, text: &str) -> Option<ThreadCaps> {
    let mut t = ThreadCaps::empty(pid, tid);
    let mut sets = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let mut set = |target: &mut CapSet| -> Option<()> {
            *target = CapSet::from_hex(value)?;
            sets += 1;
            Some(())
        };
        match key {
            "Name" => t.comm = value.to_string(),
            "State" => t.state = value.chars().next().unwrap_or('?'),
            "SigBlk" => t.blocked = u64::from_str_radix(value, 16).ok()?,
            "Uid" => {
                let v: Vec<u32> = value
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [r, e, s, f] = v[..] {
                    t.uids = Some([r, e, s, f]);
                }
            }
            "CapInh" => set(&mut t.inheritable)?,
            "CapPrm" => set(&mut t.permitted)?,
            "CapEff" => set(&mut t.effective)?,
            "CapBnd" => set(&mut t.bounding)?,
            "CapAmb" => set(&mut t.ambient)?,
            _ => {}
        }
    }
    (sets == 5).then_some(t)
}

#[cfg(feature = "probe")]
mod probe_impl {
    use std::collections::BTreeSet;
    use std::io;

    use super::{parse_status, ThreadCaps};

    /// Whether the effective user is root: the tests and commands that change machine
    /// state ask this first, so they can say "needs root" instead of failing obscurely.
    pub fn is_root() -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    /// CLOCK_MONOTONIC in nanoseconds: the clock of the reference's ring log (`t_ns`) and of
    /// the benchmarks that line their own readings up with it.
    pub fn monotonic_ns() -> u64 {
        // CLOCK_MONOTONIC exists on every kernel Linux has had since 2.6; a failure here
        // would mean no clock at all.
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is readable");
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    }

    /// Where tracefs lives: tracers that attach to tracepoints (bpftrace, perf-based
    /// ones) need it mounted, and a fresh VM or container often has not.
    pub const TRACEFS: &str = "/sys/kernel/tracing";

    /// Mounts tracefs at [`TRACEFS`] unless it is already usable. `Ok(true)` when this call
    /// made the mount (the caller undoes it with [`unmount_tracefs`]), `Ok(false)` when it
    /// was already there.
    pub fn mount_tracefs() -> io::Result<bool> {
        let events = std::path::Path::new(TRACEFS).join("events");
        if events.is_dir() {
            return Ok(false);
        }
        nix::mount::mount(
            Some("nodev"),
            TRACEFS,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )?;
        if events.is_dir() {
            Ok(true)
        } else {
            // Not a usable tracefs after all: leave nothing behind.
            let _ = unmount_tracefs();
            Err(io::Error::other(format!(
                "{TRACEFS} mounted but has no events/"
            )))
        }
    }

    /// Detaches the tracefs mount [`mount_tracefs`] made.
    pub fn unmount_tracefs() -> io::Result<()> {
        nix::mount::umount2(TRACEFS, nix::mount::MntFlags::MNT_DETACH)?;
        Ok(())
    }

    /// `/proc/sys/kernel/cap_last_cap`: the highest capability the running kernel knows.
    pub fn cap_last_cap() -> io::Result<u8> {
        let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/sys/kernel/cap_last_cap: unexpected content {text:?}"),
            )
        })
    }

    /// One thread's sets; `None` when it is gone or its file is unreadable.
    pub fn read_thread(pid: i32, tid: i32) -> Option<ThreadCaps> {
        thread_status(pid, tid).ok().flatten()
    }

    /// One thread's sets; `Ok(None)` when the thread is gone, an error when its file cannot
    /// be read or parsed (for callers that must fail closed, like the reference's ring
    /// manager verifying a transition).
    pub fn thread_status(pid: i32, tid: i32) -> io::Result<Option<ThreadCaps>> {
        let path = format!("/proc/{pid}/task/{tid}/status");
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_status(pid, tid, &text).map(Some).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("unparsable {path}"))
            }),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The tids of one process, sorted (empty when the process is gone).
    pub fn task_ids(pid: i32) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        let mut tids: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        tids
    }

    /// Every readable thread of one process, by tid.
    pub fn read_process(pid: i32) -> Vec<ThreadCaps> {
        task_ids(pid)
            .into_iter()
            .filter_map(|tid| read_thread(pid, tid))
            .collect()
    }

    /// The calling thread's sets (from `/proc/thread-self/status`, no capget).
    pub fn own_thread() -> io::Result<ThreadCaps> {
        let text = std::fs::read_to_string("/proc/thread-self/status")?;
        // SAFETY: getpid and gettid have no preconditions and cannot fail.
        let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
        parse_status(pid, tid, &text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "unparsable /proc/thread-self/status",
            )
        })
    }

    /// The thread-group id of a task (`Tgid:` of `/proc/TID/status`).
    pub fn tgid_of(tid: i32) -> Option<i32> {
        let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Ids of every BPF program loaded in the kernel (a `BPF_PROG_GET_NEXT_ID` walk; needs
    /// CAP_SYS_ADMIN, and gives an empty set without it).
    pub fn loaded_programs() -> BTreeSet<u32> {
        const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
        let mut ids = BTreeSet::new();
        let mut attr = [0u32; 4]; // start_id, next_id, open_flags, pad
        loop {
            // SAFETY: attr is a valid, zero-padded bpf_attr prefix for this command, and
            // the kernel writes only next_id inside it.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_GET_NEXT_ID,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr) as u32,
                )
            };
            if r != 0 {
                break;
            }
            ids.insert(attr[1]);
            attr[0] = attr[1];
        }
        ids
    }

    /// capset(2) of the calling thread only (a raw system call, version 3 header): E, P and
    /// I as given. Returns the errno on failure. Async-signal-safe (no allocation, no lock),
    /// so the reference's ring manager may call it from its broadcast signal handler.
    pub fn capset_thread(effective: u64, permitted: u64, inheritable: u64) -> Result<(), i32> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let header = Header {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let word = |set: u64, i: u32| (set >> (32 * i)) as u32;
        let data = [0, 1].map(|i| Data {
            effective: word(effective, i),
            permitted: word(permitted, i),
            inheritable: word(inheritable, i),
        });
        // SAFETY: capset(2) reads a valid v3 header and two data words that live across the
        // call; the raw syscall affects only the calling thread.
        let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            // SAFETY: reading errno right after the failed call.
            Err(unsafe { *libc::__errno_location() })
        }
    }

    /// `EPERM` for 1: the errno's symbolic name (from nix, which takes it from libc).
    pub fn errno_name(errno: i32) -> Option<String> {
        match nix::errno::Errno::from_raw(errno) {
            nix::errno::Errno::UnknownErrno => None,
            e => Some(format!("{e:?}")),
        }
    }

    /// The signal's name (`SIGTERM`), or `signal N` for a number Linux does not name (from
    /// nix, which takes it from libc).
    pub fn signal_name(sig: i32) -> String {
        nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"))
    }

    /// The name of an x86_64 system call the observer traces (libc's numbers); `None` for
    /// others.
    pub fn syscall_name(nr: i64) -> Option<&'static str> {
        NAMES.iter().find(|(n, _)| *n == nr).map(|(_, name)| *name)
    }

    /// Every system call the observer may stop at, with its name.
    pub const NAMES: &[(i64, &str)] = &[
        (libc::SYS_capset, "capset"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_setuid, "setuid"),
        (libc::SYS_setgid, "setgid"),
        (libc::SYS_setreuid, "setreuid"),
        (libc::SYS_setregid, "setregid"),
        (libc::SYS_setresuid, "setresuid"),
        (libc::SYS_setresgid, "setresgid"),
        (libc::SYS_setfsuid, "setfsuid"),
        (libc::SYS_setfsgid, "setfsgid"),
        (libc::SYS_setgroups, "setgroups"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_socket, "socket"),
        (libc::SYS_init_module, "init_module"),
        (libc::SYS_finit_module, "finit_module"),
    ];

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_own_threads_and_limits() {
            let me = std::process::id() as i32;
            let threads = read_process(me);
            assert!(!threads.is_empty());
            assert!(threads.iter().all(|t| t.pid == me && !t.comm.is_empty()));
            assert!(cap_last_cap().unwrap() >= 36);
            assert_eq!(own_thread().unwrap().pid, me);
            assert_eq!(tgid_of(me), Some(me));
        }

        #[test]
        fn names_from_libc() {
            assert_eq!(errno_name(libc::EPERM).as_deref(), Some("EPERM"));
            assert_eq!(errno_name(libc::EACCES).as_deref(), Some("EACCES"));
            assert_eq!(errno_name(99999), None);
            assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
            assert_eq!(signal_name(99), "signal 99");
            assert_eq!(syscall_name(126), Some("capset"));
            assert_eq!(syscall_name(321), Some("bpf"));
            assert_eq!(syscall_name(0), None);
        }
    }
}

#[cfg(feature = "probe")]
pub use probe_impl::{
    cap_last_cap, capset_thread, errno_name, is_root, loaded_programs, monotonic_ns, mount_tracefs,
    own_thread, read_process, read_thread, signal_name, syscall_name, task_ids, tgid_of,
    thread_status, unmount_tracefs, NAMES as SYSCALLS, TRACEFS,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tref-tracer\nState:\tS (sleeping)\nTgid:\t10\nUid:\t0\t0\t0\t0\nSigBlk:\t0000000000010000\nCapInh:\t0000000000000000\nCapPrm:\t000000c000000000\nCapEff:\t0000008000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n";
        let t = parse_status(10, 11, text).unwrap();
        assert_eq!(
            (t.pid, t.tid, t.comm.as_str(), t.state),
            (10, 11, "ref-tracer", 'S')
        );
        assert_eq!(t.effective.names(), vec!["cap_bpf"]);
        assert_eq!(t.permitted.names(), vec!["cap_perfmon", "cap_bpf"]);
        assert_eq!(t.uids, Some([0, 0, 0, 0]));
        assert_eq!(t.blocked, 1 << 16);
        assert!(!t.is_dead());
        // Truncated (a thread being torn down) or garbled files give nothing.
        assert!(parse_status(1, 1, "Name:\tx\nCapEff:\t0\n").is_none());
        assert!(parse_status(1, 1, &text.replace("0000008000000000", "zz")).is_none());
    }

    #[test]
    fn serde_skips_private_fields() {
        let mut t = ThreadCaps::empty(1, 2);
        t.blocked = 7;
        let json = serde_json::to_string(&t).unwrap();
        assert!(
            !json.contains("blocked") && !json.contains("state"),
            "{json}"
        );
        let back: ThreadCaps = serde_json::from_str(&json).unwrap();
        assert_eq!((back.blocked, back.state), (0, '?'));
    }
}
