//! The four capability rings, applied to **every thread** of the process.
//!
//! # Rings
//!
//! | ring | Effective set E | Permitted set P |
//! |---|---|---|
//! | [`Ring::Privileged`] (0) | E = P | as the process started |
//! | [`Ring::Required`] (1) | the plan's `required` set | `config_permitted` |
//! | [`Ring::Requested`] (2) | exactly one capability, for one operation | unchanged |
//! | [`Ring::Unprivileged`] (3) | ∅ (the steady state) | `steady_permitted` |
//!
//! The first drop ([`RingManager::enter_required`], or [`RingManager::enter_unprivileged`] straight
//! from Privileged) also clears the bounding set (when the plan says so; it needs CAP_SETPCAP
//! effective, so it is done first, before E shrinks), the Ambient set and the Inheritable set.
//! A requested scope ([`RingManager::with_requested`]) returns to the ring that was in force
//! before it, so scopes nest (Requested inside Requested inside Required returns to the outer
//! Requested, then to Required).
//!
//! Under bypass no capability system call is made at all (not even capget: the start state is
//! read from `/proc/thread-self/status`); rings are tracked in memory and transitions are still
//! logged, with the process's real E and P.
//!
//! # Why a broadcast, and how it works (a psx-like mechanism)
//!
//! `capset(2)`, `prctl(PR_CAPBSET_DROP)` and `prctl(PR_CAP_AMBIENT)` change only the *calling
//! thread*. Tracee gets "all threads on the same ring" from libcap's psx, which runs the system
//! call on every OS thread. This module does the same by hand. A transition:
//!
//! 1. takes the process-wide broadcast lock, and blocks the broadcast signal on the calling
//!    thread (so a late delivery cannot interrupt the coordinator while it writes the job);
//! 2. applies the change on the calling thread with raw system calls (`SYS_capset` with the v3
//!    header `0x20080522`, pid 0 and two data words; `SYS_prctl` for the bounding and ambient
//!    sets). If that fails nothing has changed anywhere and the error is returned;
//! 3. publishes the job in static atomics (a seqlock: odd sequence = being written) and sends a
//!    real-time signal (`SIGRTMIN() + 5`) with `tgkill` to every other tid listed in
//!    `/proc/self/task`. The handler (installed once, `SA_RESTART | SA_SIGINFO`, accepts only
//!    `SI_TKILL` signals from this process) is async-signal-safe: it reads the job, makes the
//!    same raw system calls, writes its tid, the job generation and its result (failed
//!    operation + errno) into a fixed static slot array, saves and restores `errno`, then
//!    bumps a futex word and wakes the coordinator (`FUTEX_WAKE`); no allocation, no lock.
//!    The coordinator sleeps on that word (`FUTEX_WAIT`, so it does not steal the CPU from the
//!    threads it waits for), bounded by 2 s per round, until every signalled thread has an
//!    acknowledgement for this generation. A thread that exits meanwhile is struck off. An
//!    error recorded by any thread is returned with that thread's tid;
//! 4. re-scans `/proc/self/task` until no tid is left unsignalled: a thread born during the
//!    broadcast inherited either the old or the new credentials from its parent, so it is
//!    signalled too (the job is idempotent);
//! 5. verifies, by reading `/proc/self/task/*/status`, that every live thread's CapEff, CapPrm
//!    and CapInh equal the target (and CapBnd/CapAmb once they were cleared). A mismatch on a
//!    thread that acknowledged is an error (fail closed); a mismatch on a thread that was never
//!    signalled sends the loop back to step 4 (bounded number of rounds).
//!
//! Only then is the lock released, the ring recorded and the log line written.
//!
//! # Scopes and locking
//!
//! Scope ownership is separate from the broadcast lock: a thread that holds a scope (owner tid +
//! depth + a stack of requested capabilities) may open a nested scope without deadlocking (the
//! Tracee lock is a plain mutex, and nesting deadlocks it, see tracee#2433); other threads wait
//! for the owner to close its outermost scope. The base ring cannot change from inside a scope.
//! An operation's error and a failed return-to-ring error are both reported
//! ([`ScopeError::Return`] keeps the operation error too; Tracee drops it).
//!
//! # Limitations
//!
//! * A thread that blocks the broadcast signal (or is stopped, e.g. by a debugger) never
//!   acknowledges; the transition then fails after the timeout (the error says whether the
//!   thread's `SigBlk` mask contains the signal). A process must not use `SIGRTMIN() + 5`
//!   for anything else ([`RingManager::new`] refuses a foreign handler).
//! * System calls that the kernel never restarts after a handler (`epoll_wait`, `poll`,
//!   `select`, `nanosleep` with a remaining time …) can return `EINTR` in other threads during
//!   a transition, exactly as with psx.
//! * After a failed broadcast the threads may disagree (some applied the job); the error is
//!   meant to be fatal (fail closed), as in Tracee. A failed *entry* into a requested scope is
//!   rolled back to the outer ring when any thread had changed.
//! * One manager per process: the broadcast machinery and the credentials are process-wide.
//! * At most 4096 thread acknowledgements per transition round.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use capring_spec::caps::{parse_name, Cap, CapSet};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// ---------------------------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------------------------

/// One of the four rings (see the table in the module docs). Written as `privileged`,
/// `required`, `requested(cap_NAME)` and `unprivileged` in the ring log and in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    /// Ring 0: the process as it started, every permitted capability effective. The start
    /// state; only a requested scope opened before the first drop returns to it.
    Privileged,
    /// Ring 1: configuration. E is the plan's `required` set, P is `config_permitted`.
    Required,
    /// Ring 2: one operation with exactly this capability effective (E = {cap}), inside
    /// [`RingManager::with_requested`]; P is left as it was.
    Requested(Cap),
    /// Ring 3: the steady state. E = ∅, P = `steady_permitted` (what later Requested
    /// operations need).
    Unprivileged,
}

impl Ring {
    /// The ring number of the Tracee docs (0 = most privileged).
    pub fn number(self) -> u8 {
        match self {
            Ring::Privileged => 0,
            Ring::Required => 1,
            Ring::Requested(_) => 2,
            Ring::Unprivileged => 3,
        }
    }

    fn encode(self) -> u32 {
        match self {
            Ring::Privileged => 0,
            Ring::Required => 1,
            Ring::Unprivileged => 3,
            Ring::Requested(cap) => 0x100 | cap.number() as u32,
        }
    }

    fn decode(v: u32) -> Ring {
        match v {
            0 => Ring::Privileged,
            1 => Ring::Required,
            3 => Ring::Unprivileged,
            v => Ring::Requested(Cap::new((v & 0xff) as u8).expect("encoded cap")),
        }
    }
}

impl fmt::Display for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ring::Privileged => f.write_str("privileged"),
            Ring::Required => f.write_str("required"),
            Ring::Requested(cap) => write!(f, "requested({cap})"),
            Ring::Unprivileged => f.write_str("unprivileged"),
        }
    }
}

impl FromStr for Ring {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "privileged" => Ok(Ring::Privileged),
            "required" => Ok(Ring::Required),
            "unprivileged" => Ok(Ring::Unprivileged),
            other => other
                .strip_prefix("requested(")
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("unknown ring '{other}'"))
                .and_then(|c| parse_name(c).map_err(|e| e.to_string()))
                .map(Ring::Requested),
        }
    }
}

impl Serialize for Ring {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ring {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the rings contain, computed by the oracle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPlan {
    /// `--capabilities bypass=1` (or `CAPABILITIES_BYPASS=1`): no capability system call at
    /// all; rings are only tracked and logged, with the process's real sets.
    pub bypass: bool,
    /// E during configuration.
    pub required: CapSet,
    /// P during configuration (required ∪ later-requested caps).
    pub config_permitted: CapSet,
    /// P after configuration (only what later Requested operations need).
    pub steady_permitted: CapSet,
    /// Drop every capability from the bounding set at the first drop (needs CAP_SETPCAP
    /// effective at that moment).
    pub clear_bounding: bool,
}

impl RingPlan {
    fn validate(&self) -> Result<(), RingError> {
        if !self.required.is_subset(self.config_permitted) {
            return Err(RingError::Plan(format!(
                "required {} is not a subset of config_permitted {} (missing {})",
                self.required,
                self.config_permitted,
                self.required.difference(self.config_permitted)
            )));
        }
        if !self.steady_permitted.is_subset(self.config_permitted) {
            return Err(RingError::Plan(format!(
                "steady_permitted {} is not a subset of config_permitted {} (missing {}); \
                 the permitted set can only shrink",
                self.steady_permitted,
                self.config_permitted,
                self.steady_permitted.difference(self.config_permitted)
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A failed ring transition. Every variant names the operation and the thread.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// A capability system call (or the `tgkill` that carries the broadcast) failed on one
    /// thread. On the calling thread nothing has changed yet; on another thread, some threads
    /// may already be in the new ring.
    #[error("{op} failed on thread {tid} while entering {ring}: {}", errno_text(*errno))]
    Syscall {
        /// The call as written in the message: `capset`, `prctl(PR_CAPBSET_DROP, cap_NAME)`,
        /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`, `tgkill(signal N)`, ….
        op: String,
        /// The errno it returned (`EBUSY` when a handler could not read the published job).
        errno: i32,
        /// The thread it failed on.
        tid: i32,
        /// The ring being entered.
        ring: Ring,
    },
    /// A signalled thread did not acknowledge the broadcast within 2 s (it blocks the signal,
    /// is stopped, or is stuck in the kernel).
    #[error(
        "capability broadcast for {ring}: thread {tid} did not acknowledge signal {signal} within \
         {waited_ms} ms{hint}"
    )]
    NoAck {
        /// The first thread still pending.
        tid: i32,
        /// The ring being entered.
        ring: Ring,
        /// The broadcast signal number (`SIGRTMIN() + 5`).
        signal: i32,
        /// Milliseconds waited for acknowledgements in this round.
        waited_ms: u64,
        /// Empty, or ` (the thread blocks signal N)` / ` (thread state S)` from its status.
        hint: String,
    },
    /// After the broadcast a thread that was signalled shows other sets than the ring's
    /// (fail closed: the kernel state is not what the tracer believes).
    #[error(
        "verification after entering {ring}: thread {tid} has {set} {found} (/proc/self/task/{tid}/status) \
         where {expected} was expected"
    )]
    Mismatch {
        /// The ring being entered.
        ring: Ring,
        /// The thread whose status differs.
        tid: i32,
        /// The first differing line of its status: `CapEff`, `CapPrm`, `CapInh`, `CapBnd`
        /// or `CapAmb`.
        set: &'static str,
        /// What that line says.
        found: CapSet,
        /// What the ring requires there.
        expected: CapSet,
    },
    /// Threads kept appearing: after 64 rounds of scanning `/proc/self/task` some thread was
    /// still not signalled or not verified.
    #[error("capability broadcast for {ring} (thread {tid}): the set of threads did not settle after {rounds} rounds")]
    Unstable {
        /// The ring being entered.
        ring: Ring,
        /// The coordinating (calling) thread.
        tid: i32,
        /// Rounds tried.
        rounds: usize,
    },
    /// The ring needs capabilities the permitted set no longer holds (P only shrinks), so
    /// nothing was attempted.
    #[error("cannot enter {ring} on thread {tid}: {missing} not in the permitted set {permitted}")]
    NotPermitted {
        /// The ring asked for.
        ring: Ring,
        /// The calling thread.
        tid: i32,
        /// The capabilities the ring needs in P that P lacks.
        missing: CapSet,
        /// The permitted set in force.
        permitted: CapSet,
    },
    /// The [`RingPlan`] contradicts itself (a set that must be a subset is not); the text
    /// names the sets.
    #[error("invalid ring plan: {0}")]
    Plan(String),
    /// A transition the ring order forbids: changing the base ring inside a requested scope,
    /// or going back to Required once Unprivileged was entered.
    #[error("cannot enter {to} from {from} on thread {tid}: {why}")]
    Order {
        /// The ring in force.
        from: Ring,
        /// The ring asked for.
        to: Ring,
        /// The calling thread.
        tid: i32,
        /// The rule that forbids it.
        why: &'static str,
    },
    /// Reading `/proc`, installing the signal handler or writing the ring log failed.
    #[error("{op} on thread {tid}: {source}")]
    Io {
        /// What was being done, e.g. `listing /proc/self/task`.
        op: String,
        /// The calling thread.
        tid: i32,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// Entering a requested scope failed after some thread had changed, and returning every
    /// thread to the outer ring failed too: the process is in an unknown state.
    #[error("{cause}; rolling back to {ring} also failed: {rollback}")]
    RollbackFailed {
        /// The outer ring the rollback tried to restore.
        ring: Ring,
        /// Why entering the requested ring failed.
        cause: Box<RingError>,
        /// Why the rollback failed.
        rollback: Box<RingError>,
    },
}

impl RingError {
    /// The errno of the failing system call, when there was one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RingError::Syscall { errno, .. } => Some(*errno),
            RingError::Io { source, .. } => source.raw_os_error(),
            RingError::RollbackFailed { cause, .. } => cause.errno(),
            _ => None,
        }
    }
}

/// The outcome of a failed [`RingManager::with_requested`].
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The requested ring could not be entered; the operation was not run.
    #[error("could not enter the requested ring, operation not run: {0}")]
    Enter(RingError),
    /// The operation failed; the ring was restored.
    #[error("operation failed: {0}")]
    Operation(String),
    /// Returning to the outer ring failed; the operation's error, if any, is kept too.
    #[error("{}", return_text(.error, .operation))]
    Return {
        /// Why the outer ring could not be restored.
        error: RingError,
        /// The operation's own error message, when it had failed too.
        operation: Option<String>,
    },
}

fn return_text(error: &RingError, operation: &Option<String>) -> String {
    match operation {
        None => format!("returning from the requested ring failed: {error}"),
        Some(op) => format!(
            "returning from the requested ring failed: {error}; the operation had also failed: {op}"
        ),
    }
}

fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        _ => return None,
    })
}

/// `Operation not permitted (EPERM, errno 1)`.
fn errno_text(errno: i32) -> String {
    let full = io::Error::from_raw_os_error(errno).to_string();
    let text = full.split(" (os error").next().unwrap_or(&full).to_string();
    match errno_name(errno) {
        Some(name) => format!("{text} ({name}, errno {errno})"),
        None => format!("{text} (errno {errno})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Per-thread state from /proc
// ---------------------------------------------------------------------------------------------

use capring_spec::sys::ThreadCaps;

/// The calling thread's sets (from `/proc/thread-self/status`, no capget).
pub(crate) fn own_thread_caps() -> io::Result<ThreadCaps> {
    capring_spec::sys::own_thread()
}

/// One thread of this process; `Ok(None)` when the thread is gone, an error when its status
/// cannot be read or parsed (the manager fails closed on it).
pub(crate) fn task_caps(tid: i32) -> io::Result<Option<ThreadCaps>> {
    // SAFETY: getpid cannot fail.
    capring_spec::sys::thread_status(unsafe { libc::getpid() }, tid)
}

/// The tids in `/proc/self/task`.
pub(crate) fn task_ids() -> io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            if !crate::faults::is_forgotten(tid) {
                tids.push(tid);
            }
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

fn cap_last_cap() -> u8 {
    capring_spec::sys::cap_last_cap().unwrap_or(capring_spec::caps::LAST_NAMED)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

// ---------------------------------------------------------------------------------------------
// The broadcast machinery (process-wide statics; the signal handler touches only these)
// ---------------------------------------------------------------------------------------------

const F_BOUNDING: u32 = 1;
const F_AMBIENT: u32 = 2;
const F_CAPSET: u32 = 4;

const OP_OK: u32 = 0;
const OP_BOUNDING: u32 = 1;
const OP_AMBIENT: u32 = 2;
const OP_CAPSET: u32 = 3;
const OP_BUSY: u32 = 4;
const OP_BOUNDING_READ: u32 = 5;

const SLOT_COUNT: usize = 4096;
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_ROUNDS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Job {
    flags: u32,
    bounding: u64,
    eff: u64,
    prm: u64,
    inh: u64,
}

/// One acknowledgement. `seq` is written last: it is `n + 1` for the n-th acknowledgement.
struct Slot {
    seq: AtomicU64,
    tid: AtomicI32,
    gen: AtomicU64,
    op: AtomicU32,
    arg: AtomicU32,
    errno: AtomicI32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            gen: AtomicU64::new(0),
            op: AtomicU32::new(0),
            arg: AtomicU32::new(0),
            errno: AtomicI32::new(0),
        }
    }
}

static SIGNO: AtomicI32 = AtomicI32::new(0);
static JOB_SEQ: AtomicU64 = AtomicU64::new(0);
static JOB_FLAGS: AtomicU32 = AtomicU32::new(0);
static JOB_BOUNDING: AtomicU64 = AtomicU64::new(0);
static JOB_EFF: AtomicU64 = AtomicU64::new(0);
static JOB_PRM: AtomicU64 = AtomicU64::new(0);
static JOB_INH: AtomicU64 = AtomicU64::new(0);
static NEXT_SLOT: AtomicU64 = AtomicU64::new(0);
/// Bumped after every acknowledgement; the coordinator sleeps on it with FUTEX_WAIT.
static ACK_WORD: AtomicU32 = AtomicU32::new(0);
static SLOTS: [Slot; SLOT_COUNT] = [const { Slot::new() }; SLOT_COUNT];
static BROADCAST_LOCK: Mutex<()> = Mutex::new(());
static INSTALLED: OnceLock<Result<i32, String>> = OnceLock::new();

fn errno() -> i32 {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Applies a job to the calling thread. Async-signal-safe: raw system calls only.
fn apply_job(job: &Job) -> Result<(), (u32, u32, i32)> {
    // SAFETY: raw system calls with plain integer arguments or pointers to
    // live stack memory.
    unsafe {
        if job.flags & F_BOUNDING != 0 {
            for cap in 0..64u32 {
                if job.bounding & (1u64 << cap) == 0 {
                    continue;
                }
                let r = libc::syscall(
                    libc::SYS_prctl,
                    libc::PR_CAPBSET_READ,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if r < 0 {
                    return Err((OP_BOUNDING_READ, cap, errno()));
                }
                if r == 1
                    && libc::syscall(
                        libc::SYS_prctl,
                        libc::PR_CAPBSET_DROP,
                        cap as libc::c_ulong,
                        0,
                        0,
                        0,
                    ) != 0
                {
                    return Err((OP_BOUNDING, cap, errno()));
                }
            }
        }
        if job.flags & F_AMBIENT != 0
            && libc::syscall(
                libc::SYS_prctl,
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
        {
            return Err((OP_AMBIENT, 0, errno()));
        }
        if job.flags & F_CAPSET != 0 {
            capring_spec::sys::capset_thread(job.eff, job.prm, job.inh)
                .map_err(|e| (OP_CAPSET, 0, e))?;
        }
    }
    Ok(())
}

/// Records one acknowledgement. Async-signal-safe.
fn record(tid: i32, gen: u64, op: u32, arg: u32, err: i32) {
    let n = NEXT_SLOT.fetch_add(1, SeqCst);
    let slot = &SLOTS[(n % SLOT_COUNT as u64) as usize];
    slot.seq.store(0, SeqCst);
    slot.tid.store(tid, SeqCst);
    slot.gen.store(gen, SeqCst);
    slot.op.store(op, SeqCst);
    slot.arg.store(arg, SeqCst);
    slot.errno.store(err, SeqCst);
    slot.seq.store(n + 1, SeqCst);
    ACK_WORD.fetch_add(1, SeqCst);
    // SAFETY: futex wake on a static word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            ACK_WORD.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

extern "C" fn on_broadcast_signal(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo; errno is the interrupted code's and is restored.
    unsafe {
        let errno_slot = libc::__errno_location();
        let saved = *errno_slot;
        if !info.is_null()
            && (*info).si_code == libc::SI_TKILL
            && (*info).si_pid() == libc::getpid()
        {
            run_published_job();
        }
        *errno_slot = saved;
    }
}

/// Reads the published job (seqlock) and applies it to the calling thread. Async-signal-safe.
fn run_published_job() {
    let tid = gettid();
    let mut spins: u32 = 0;
    let (gen, job) = loop {
        let s1 = JOB_SEQ.load(SeqCst);
        if s1 & 1 == 0 {
            let job = Job {
                flags: JOB_FLAGS.load(SeqCst),
                bounding: JOB_BOUNDING.load(SeqCst),
                eff: JOB_EFF.load(SeqCst),
                prm: JOB_PRM.load(SeqCst),
                inh: JOB_INH.load(SeqCst),
            };
            if JOB_SEQ.load(SeqCst) == s1 {
                break (s1, job);
            }
        }
        spins += 1;
        if spins > 50_000_000 {
            record(tid, 0, OP_BUSY, 0, libc::EBUSY);
            return;
        }
        std::hint::spin_loop();
    };
    match apply_job(&job) {
        Ok(()) => record(tid, gen, OP_OK, 0, 0),
        Err((op, arg, err)) => record(tid, gen, op, arg, err),
    }
}

fn publish(job: &Job) -> u64 {
    let s = JOB_SEQ.load(SeqCst);
    debug_assert!(s & 1 == 0);
    JOB_SEQ.store(s + 1, SeqCst);
    JOB_FLAGS.store(job.flags, SeqCst);
    JOB_BOUNDING.store(job.bounding, SeqCst);
    JOB_EFF.store(job.eff, SeqCst);
    JOB_PRM.store(job.prm, SeqCst);
    JOB_INH.store(job.inh, SeqCst);
    JOB_SEQ.store(s + 2, SeqCst);
    s + 2
}

/// Installs the handler once; returns the signal number.
fn install_handler() -> Result<i32, RingError> {
    let result = INSTALLED.get_or_init(|| {
        let signo = libc::SIGRTMIN() + 5;
        if signo > libc::SIGRTMAX() {
            return Err(format!(
                "SIGRTMIN()+5 = {signo} is above SIGRTMAX() = {}",
                libc::SIGRTMAX()
            ));
        }
        // SAFETY: sigaction with zeroed, then filled, structures.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signo, std::ptr::null(), &mut old) != 0 {
                return Err(format!("sigaction({signo}) query: {}", errno_text(errno())));
            }
            let ours = on_broadcast_signal as *const () as usize;
            if old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_sigaction != ours
            {
                return Err(format!(
                    "signal {signo} (SIGRTMIN+5) already has a foreign handler"
                ));
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ours;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(signo, &sa, std::ptr::null_mut()) != 0 {
                return Err(format!(
                    "sigaction({signo}) install: {}",
                    errno_text(errno())
                ));
            }
        }
        SIGNO.store(signo, SeqCst);
        Ok(signo)
    });
    result.clone().map_err(|why| RingError::Io {
        op: "installing the capability broadcast signal handler".into(),
        tid: gettid(),
        source: io::Error::other(why),
    })
}

/// Blocks the broadcast signal on the calling thread for its lifetime.
struct SignalBlock {
    old: libc::sigset_t,
}

impl SignalBlock {
    fn new(signo: i32) -> SignalBlock {
        // SAFETY: sigset manipulation on local values.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signo);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalBlock { old }
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in new().
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// What every live thread must show after a transition.
#[derive(Clone, Copy, Debug)]
struct Expect {
    eff: CapSet,
    prm: CapSet,
    inh: CapSet,
    bounding: Option<CapSet>,
    ambient: Option<CapSet>,
}

impl Expect {
    fn first_mismatch(&self, t: &ThreadCaps) -> Option<(&'static str, CapSet, CapSet)> {
        let checks = [
            ("CapEff", t.effective, Some(self.eff)),
            ("CapPrm", t.permitted, Some(self.prm)),
            ("CapInh", t.inheritable, Some(self.inh)),
            ("CapBnd", t.bounding, self.bounding),
            ("CapAmb", t.ambient, self.ambient),
        ];
        checks
            .into_iter()
            .find_map(|(name, found, want)| want.filter(|w| *w != found).map(|w| (name, found, w)))
    }
}

/// A failed broadcast, and whether any thread may have changed.
struct Failed {
    error: RingError,
    changed: bool,
}

fn op_text(op: u32, arg: u32) -> String {
    match op {
        OP_BOUNDING => format!(
            "prctl(PR_CAPBSET_DROP, {})",
            Cap::new(arg as u8)
                .map(Cap::name)
                .unwrap_or_else(|| arg.to_string())
        ),
        OP_BOUNDING_READ => format!(
            "prctl(PR_CAPBSET_READ, {})",
            Cap::new(arg as u8)
                .map(Cap::name)
                .unwrap_or_else(|| arg.to_string())
        ),
        OP_AMBIENT => "prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)".into(),
        OP_CAPSET => "capset".into(),
        OP_BUSY => "reading the published capability job (seqlock busy)".into(),
        _ => format!("operation {op}"),
    }
}

/// Steps 1–5 of the module doc. Returns the number of live threads verified.
fn broadcast(job: &Job, ring: Ring, expect: &Expect) -> Result<usize, Failed> {
    let _lock = BROADCAST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let signo = SIGNO.load(SeqCst);
    let _block = SignalBlock::new(signo);
    let me = gettid();
    let fail = |error: RingError| Failed {
        error,
        changed: true,
    };

    // 2. the calling thread first: on failure nothing changed anywhere.
    if let Err((op, arg, err)) = apply_job(job) {
        return Err(Failed {
            error: RingError::Syscall {
                op: op_text(op, arg),
                errno: err,
                tid: me,
                ring,
            },
            changed: false,
        });
    }

    // 3. publish and signal.
    let start = NEXT_SLOT.load(SeqCst);
    let gen = publish(job);
    let mut signalled: HashSet<i32> = HashSet::from([me]);
    let io = |op: &str, source: io::Error| RingError::Io {
        op: op.to_string(),
        tid: me,
        source,
    };
    for _round in 0..MAX_ROUNDS {
        // 4. (re-)scan.
        let tids = task_ids().map_err(|e| fail(io("listing /proc/self/task", e)))?;
        let fresh: Vec<i32> = tids
            .into_iter()
            .filter(|t| !signalled.contains(t))
            .collect();
        if fresh.is_empty() {
            // 5. verify; threads born meanwhile get another round.
            match verify(ring, expect, &signalled, &io).map_err(fail)? {
                Some(live) => return Ok(live),
                None => continue,
            }
        }
        let pending = signal(&fresh, &mut signalled, ring, signo).map_err(fail)?;
        wait_acks(start, gen, pending, ring, signo).map_err(fail)?;
    }
    Err(fail(RingError::Unstable {
        ring,
        tid: me,
        rounds: MAX_ROUNDS,
    }))
}

/// Step 5: every live thread's sets against the ring. `Some(live threads)` when all agree,
/// `None` when a thread not yet signalled differs (it was born meanwhile: another round).
fn verify(
    ring: Ring,
    expect: &Expect,
    signalled: &HashSet<i32>,
    io: &dyn Fn(&str, io::Error) -> RingError,
) -> Result<Option<usize>, RingError> {
    let mut live = 0;
    let mut unsignalled_mismatch = false;
    for tid in task_ids().map_err(|e| io("listing /proc/self/task", e))? {
        let Some(t) =
            task_caps(tid).map_err(|e| io(&format!("reading /proc/self/task/{tid}/status"), e))?
        else {
            continue;
        };
        if t.is_dead() {
            continue;
        }
        live += 1;
        if let Some((set, found, expected)) = expect.first_mismatch(&t) {
            if signalled.contains(&tid) {
                return Err(RingError::Mismatch {
                    ring,
                    tid,
                    set,
                    found,
                    expected,
                });
            }
            unsignalled_mismatch = true;
        }
    }
    Ok((!unsignalled_mismatch).then_some(live))
}

/// Step 3/4: signals the threads not signalled yet; returns those that must acknowledge (a
/// thread that is gone already needs nothing).
fn signal(
    fresh: &[i32],
    signalled: &mut HashSet<i32>,
    ring: Ring,
    signo: i32,
) -> Result<Vec<i32>, RingError> {
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let mut pending = Vec::with_capacity(fresh.len());
    for &tid in fresh {
        signalled.insert(tid);
        // SAFETY: tgkill with integer arguments.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signo) };
        if r == 0 {
            pending.push(tid);
        } else if errno() != libc::ESRCH {
            return Err(RingError::Syscall {
                op: format!("tgkill(signal {signo})"),
                errno: errno(),
                tid,
                ring,
            });
        }
    }
    Ok(pending)
}

fn wait_acks(
    start: u64,
    gen: u64,
    mut pending: Vec<i32>,
    ring: Ring,
    signo: i32,
) -> Result<(), RingError> {
    let began = Instant::now();
    let mut last_liveness = began;
    while !pending.is_empty() {
        // Read the wake-up word before looking: an acknowledgement after this load makes the
        // futex wait below return at once.
        let seen = ACK_WORD.load(SeqCst);
        collect_acks(start, gen, &mut pending, ring)?;
        if pending.is_empty() {
            break;
        }
        let now = Instant::now();
        if now.duration_since(last_liveness) >= Duration::from_millis(5) {
            last_liveness = now;
            pending.retain(|tid| matches!(task_caps(*tid), Ok(Some(t)) if !t.is_dead()));
            if pending.is_empty() {
                break;
            }
        }
        if now.duration_since(began) >= ACK_TIMEOUT {
            return Err(no_ack(pending[0], ring, signo, now.duration_since(began)));
        }
        // Sleep until a handler bumps ACK_WORD (or 5 ms pass, for the liveness check).
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        // SAFETY: futex wait on a static word with a valid timeout.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                ACK_WORD.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                &timeout as *const libc::timespec,
            )
        };
    }
    Ok(())
}

/// Removes from `pending` the threads whose acknowledgement of generation `gen` is in the
/// slots; an acknowledgement that reports a failure is the error.
fn collect_acks(start: u64, gen: u64, pending: &mut Vec<i32>, ring: Ring) -> Result<(), RingError> {
    let end = NEXT_SLOT.load(SeqCst);
    for n in start..end {
        let slot = &SLOTS[(n % SLOT_COUNT as u64) as usize];
        if slot.seq.load(SeqCst) != n + 1 {
            continue;
        }
        let tid = slot.tid.load(SeqCst);
        let Some(pos) = pending.iter().position(|t| *t == tid) else {
            continue;
        };
        let (sgen, op, arg, err) = (
            slot.gen.load(SeqCst),
            slot.op.load(SeqCst),
            slot.arg.load(SeqCst),
            slot.errno.load(SeqCst),
        );
        if slot.seq.load(SeqCst) != n + 1 {
            continue;
        }
        let failed = || RingError::Syscall {
            op: op_text(op, arg),
            errno: err,
            tid,
            ring,
        };
        if op == OP_BUSY {
            return Err(failed());
        }
        if sgen != gen {
            continue;
        }
        pending.swap_remove(pos);
        if op != OP_OK {
            return Err(failed());
        }
    }
    Ok(())
}

/// The error for a thread that never acknowledged, with what its status says about why.
fn no_ack(tid: i32, ring: Ring, signo: i32, waited: Duration) -> RingError {
    let hint = match task_caps(tid) {
        Ok(Some(t)) if t.blocked & (1u64 << (signo - 1)) != 0 => {
            format!(" (the thread blocks signal {signo})")
        }
        Ok(Some(t)) => format!(" (thread state {})", t.state),
        _ => String::new(),
    };
    RingError::NoAck {
        tid,
        ring,
        signal: signo,
        waited_ms: waited.as_millis() as u64,
        hint,
    }
}

// ---------------------------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------------------------

/// Appends one JSON line per completed transition.
pub struct RingLog {
    path: PathBuf,
    file: Mutex<File>,
}

#[derive(Serialize)]
struct LogLine<'a> {
    t_ns: u64,
    ring: Ring,
    effective: CapSet,
    permitted: CapSet,
    threads: usize,
    reason: &'a str,
    bypass: bool,
}

impl RingLog {
    /// Opens `path` for appending, creating it if needed.
    pub fn create(path: impl AsRef<Path>) -> io::Result<RingLog> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(RingLog {
            path,
            file: Mutex::new(file),
        })
    }

    /// The file the log appends to (as given to [`RingLog::create`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, line: &LogLine<'_>) -> io::Result<()> {
        let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(text.as_bytes())?;
        file.flush()
    }
}

impl fmt::Debug for RingLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingLog").field("path", &self.path).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The manager
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct State {
    /// Thread holding the scope, and how deep.
    owner: Option<i32>,
    depth: usize,
    /// Privileged, Required or Unprivileged.
    base: Ring,
    /// Open requested scopes, innermost last.
    stack: Vec<Cap>,
    /// P and I currently in force.
    permitted: CapSet,
    inheritable: CapSet,
    /// The first drop (bounding, ambient, inheritable) is done.
    dropped: bool,
    bounding_cleared: bool,
}

impl State {
    fn ring(&self) -> Ring {
        self.stack
            .last()
            .map(|c| Ring::Requested(*c))
            .unwrap_or(self.base)
    }
}

/// Moves the whole process between rings. `Send + Sync`; share it through an `Arc`.
#[derive(Debug)]
pub struct RingManager {
    plan: RingPlan,
    log: Option<RingLog>,
    /// The calling thread's sets when the manager was made.
    start: ThreadCaps,
    last_cap: u8,
    state: Mutex<State>,
    turn: Condvar,
    current: AtomicU32,
}

/// Releases scope ownership (and, when unwinding out of an operation, restores the outer ring).
struct ScopeGuard<'a> {
    mgr: &'a RingManager,
    restore_on_drop: Option<(Ring, String)>,
}

impl Drop for ScopeGuard<'_> {
    fn drop(&mut self) {
        if let Some((outer, reason)) = self.restore_on_drop.take() {
            self.mgr.lock_state().stack.pop();
            if let Err(e) = self.mgr.apply(outer, &reason) {
                eprintln!(
                    "capring: restoring {outer} after a panicking operation failed: {}",
                    e.error
                );
            }
        }
        self.mgr.release();
    }
}

impl RingManager {
    /// Checks the plan and installs the broadcast signal handler (not under bypass). Makes no
    /// capability change; the current ring is Privileged.
    pub fn new(plan: RingPlan, log: Option<RingLog>) -> Result<RingManager, RingError> {
        plan.validate()?;
        if !plan.bypass {
            install_handler()?;
        }
        let start = own_thread_caps().map_err(|source| RingError::Io {
            op: "reading /proc/thread-self/status".into(),
            tid: gettid(),
            source,
        })?;
        Ok(RingManager {
            state: Mutex::new(State {
                owner: None,
                depth: 0,
                base: Ring::Privileged,
                stack: Vec::new(),
                permitted: start.permitted,
                inheritable: start.inheritable,
                dropped: false,
                bounding_cleared: false,
            }),
            turn: Condvar::new(),
            current: AtomicU32::new(Ring::Privileged.encode()),
            last_cap: cap_last_cap(),
            start,
            plan,
            log,
        })
    }

    /// The plan the manager was made with (validated; never changes).
    pub fn plan(&self) -> &RingPlan {
        &self.plan
    }

    /// The ring in force (the last one fully applied to every thread).
    pub fn current(&self) -> Ring {
        Ring::decode(self.current.load(SeqCst))
    }

    /// The permitted set in force (under bypass: the process's, which never changes).
    pub fn permitted(&self) -> CapSet {
        if self.plan.bypass {
            self.start.permitted
        } else {
            self.lock_state().permitted
        }
    }

    /// The number of threads in `/proc/self/task`.
    pub fn thread_count(&self) -> usize {
        task_ids().map(|t| t.len()).unwrap_or(0)
    }

    /// The broadcast signal number (`SIGRTMIN() + 5`), once installed.
    pub fn signal_number() -> Option<i32> {
        Some(SIGNO.load(SeqCst)).filter(|s| *s != 0)
    }

    /// The first drop: bounding clear (if planned), ambient + inheritable clear,
    /// P = config_permitted, E = required.
    pub fn enter_required(&self, reason: &str) -> Result<(), RingError> {
        self.enter_base(Ring::Required, reason)
    }

    /// P = steady_permitted, E = ∅ (the first drop too, when coming straight from Privileged).
    pub fn enter_unprivileged(&self, reason: &str) -> Result<(), RingError> {
        self.enter_base(Ring::Unprivileged, reason)
    }

    /// Runs `op` with E = {cap} on every thread, then returns to the ring in force before.
    /// Under bypass nothing changes and `op` runs even when P lacks `cap`.
    pub fn with_requested<T, E: fmt::Display>(
        &self,
        cap: Cap,
        reason: &str,
        op: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, ScopeError> {
        let me = gettid();
        let ring = Ring::Requested(cap);
        self.acquire(me);
        let mut guard = ScopeGuard {
            mgr: self,
            restore_on_drop: None,
        };
        let (outer, permitted) = {
            let st = self.lock_state();
            (st.ring(), st.permitted)
        };
        // Under bypass the tracer does not manage its capabilities: the operation runs with
        // whatever E the process has and the kernel decides (`capring minimize` measures
        // Requested needs that way), so P is not checked.
        if !self.plan.bypass && !permitted.contains(cap) {
            return Err(ScopeError::Enter(RingError::NotPermitted {
                ring,
                tid: me,
                missing: CapSet::EMPTY.with(cap),
                permitted,
            }));
        }
        self.lock_state().stack.push(cap);
        if let Err(failed) = self.apply(ring, reason) {
            self.lock_state().stack.pop();
            let mut error = failed.error;
            if failed.changed {
                if let Err(rb) =
                    self.apply(outer, &format!("rollback after failed {ring}: {reason}"))
                {
                    error = RingError::RollbackFailed {
                        ring: outer,
                        cause: Box::new(error),
                        rollback: Box::new(rb.error),
                    };
                }
            }
            return Err(ScopeError::Enter(error));
        }
        let back_reason = format!("end of {ring}: {reason}");
        guard.restore_on_drop = Some((outer, back_reason.clone()));
        let result = op();
        guard.restore_on_drop = None;
        self.lock_state().stack.pop();
        let back = self.apply(outer, &back_reason);
        drop(guard);
        match (result, back) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), Ok(())) => Err(ScopeError::Operation(e.to_string())),
            (result, Err(failed)) => Err(ScopeError::Return {
                error: failed.error,
                operation: result.err().map(|e| e.to_string()),
            }),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes scope ownership (re-entrant for the owner).
    fn acquire(&self, me: i32) {
        let mut st = self.lock_state();
        while st.owner.is_some_and(|o| o != me) {
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.owner = Some(me);
        st.depth += 1;
    }

    fn release(&self) {
        let mut st = self.lock_state();
        st.depth -= 1;
        if st.depth == 0 {
            st.owner = None;
            drop(st);
            self.turn.notify_all();
        }
    }

    fn enter_base(&self, to: Ring, reason: &str) -> Result<(), RingError> {
        let me = gettid();
        {
            let st = self.lock_state();
            if st.owner == Some(me) {
                return Err(RingError::Order {
                    from: st.ring(),
                    to,
                    tid: me,
                    why: "the base ring cannot change inside a requested scope",
                });
            }
        }
        self.acquire(me);
        let _guard = ScopeGuard {
            mgr: self,
            restore_on_drop: None,
        };
        let from = self.lock_state().base;
        if to == Ring::Required && from == Ring::Unprivileged {
            return Err(RingError::Order {
                from,
                to,
                tid: me,
                why: "configuration is over; the permitted set has shrunk",
            });
        }
        self.apply(to, reason).map_err(|f| f.error)
    }

    /// Applies `ring` to every thread (or only records it, under bypass), updates the state and
    /// writes the log line. The caller owns the scope.
    fn apply(&self, ring: Ring, reason: &str) -> Result<(), Failed> {
        let step = self.transition(ring);
        let threads = if self.plan.bypass {
            self.thread_count()
        } else {
            self.enforce(&step)?
        };
        self.commit(&step);
        self.log_transition(&step, threads, reason)
    }

    /// Works out, from the state in force, the sets `ring` applies and what every thread
    /// must show afterwards. Changes nothing.
    fn transition(&self, ring: Ring) -> Transition {
        let st = self.lock_state();
        let first = !st.dropped && matches!(ring, Ring::Required | Ring::Unprivileged);
        let (eff, prm) = match ring {
            Ring::Privileged => (st.permitted, st.permitted),
            Ring::Required => (self.plan.required, self.plan.config_permitted),
            Ring::Unprivileged => (CapSet::EMPTY, self.plan.steady_permitted),
            Ring::Requested(cap) => (CapSet::EMPTY.with(cap), st.permitted),
        };
        let eff = crate::faults::effective(ring, eff);
        let inh = if first { CapSet::EMPTY } else { st.inheritable };
        let clear_bounding = first && self.plan.clear_bounding;
        let expect = Expect {
            eff,
            prm,
            inh,
            bounding: (st.bounding_cleared || clear_bounding).then_some(CapSet::EMPTY),
            ambient: (st.dropped || first).then_some(CapSet::EMPTY),
        };
        Transition {
            ring,
            eff,
            prm,
            inh,
            first,
            clear_bounding,
            expect,
            held: st.permitted,
        }
    }

    /// Makes the capability system calls of `step` on every thread (not under bypass).
    /// Returns the number of live threads verified.
    fn enforce(&self, step: &Transition) -> Result<usize, Failed> {
        if !step.prm.is_subset(step.held) {
            return Err(Failed {
                error: RingError::NotPermitted {
                    ring: step.ring,
                    tid: gettid(),
                    missing: step.prm.difference(step.held),
                    permitted: step.held,
                },
                changed: false,
            });
        }
        let mut flags = F_CAPSET;
        if step.first {
            flags |= F_AMBIENT;
        }
        if step.clear_bounding {
            flags |= F_BOUNDING;
        }
        let job = Job {
            flags,
            bounding: CapSet::all_up_to(self.last_cap).bits(),
            eff: step.eff.bits(),
            prm: step.prm.bits(),
            inh: step.inh.bits(),
        };
        broadcast(&job, step.ring, &step.expect)
    }

    /// Records a transition that every thread completed: the base ring, P and I in force,
    /// the one-time clears, and the current ring. Under bypass only the rings change.
    fn commit(&self, step: &Transition) {
        let ring = step.ring;
        if !self.plan.bypass {
            let mut st = self.lock_state();
            if matches!(ring, Ring::Required | Ring::Unprivileged) {
                st.base = ring;
            }
            st.permitted = step.prm;
            st.inheritable = step.inh;
            st.dropped |= step.first;
            st.bounding_cleared |= step.clear_bounding;
        } else if matches!(ring, Ring::Required | Ring::Unprivileged) {
            self.lock_state().base = ring;
        }
        self.current.store(ring.encode(), SeqCst);
    }

    /// Appends the log line of a completed transition, when there is a log. Under bypass it
    /// shows the process's real sets, which never change.
    fn log_transition(
        &self,
        step: &Transition,
        threads: usize,
        reason: &str,
    ) -> Result<(), Failed> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let (effective, permitted) = if self.plan.bypass {
            (self.start.effective, self.start.permitted)
        } else {
            (step.eff, step.prm)
        };
        log.append(&LogLine {
            t_ns: capring_spec::sys::monotonic_ns(),
            ring: step.ring,
            effective,
            permitted,
            threads,
            reason,
            bypass: self.plan.bypass,
        })
        .map_err(|source| Failed {
            error: RingError::Io {
                op: format!("writing ring log {}", log.path().display()),
                tid: gettid(),
                source,
            },
            changed: false,
        })
    }
}

/// One ring transition worked out from the state before it ([`RingManager::transition`]).
struct Transition {
    ring: Ring,
    /// E, P and I to apply.
    eff: CapSet,
    prm: CapSet,
    inh: CapSet,
    /// This is the first drop: ambient and inheritable are cleared (and bounding, if planned).
    first: bool,
    /// The bounding set is cleared in this transition.
    clear_bounding: bool,
    /// What every live thread must show afterwards.
    expect: Expect,
    /// P in force before the transition (P can only shrink).
    held: CapSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_names() {
        assert_eq!(
            Ring::Requested(Cap::SYSLOG).to_string(),
            "requested(cap_syslog)"
        );
        for ring in [
            Ring::Privileged,
            Ring::Required,
            Ring::Requested(Cap::BPF),
            Ring::Unprivileged,
        ] {
            assert_eq!(Ring::decode(ring.encode()), ring);
            assert_eq!(ring.to_string().parse::<Ring>().unwrap(), ring);
        }
        assert_eq!(
            serde_json::to_string(&Ring::Unprivileged).unwrap(),
            "\"unprivileged\""
        );
    }

    #[test]
    fn errno_texts() {
        assert_eq!(
            errno_text(libc::EPERM),
            "Operation not permitted (EPERM, errno 1)"
        );
    }
}
