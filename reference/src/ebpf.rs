//! The reference tracer's real eBPF events: loading, attaching and decoding.
//!
//! Why this module exists: the conformance suite must watch a tracer that really
//! talks to the kernel, so that the capability rings are tested against real
//! `bpf(2)`/`perf_event_open(2)` permission checks. This module owns the kernel
//! side (the C programs in `reference/ebpf/`, compiled by `build.rs`) and turns
//! the raw ring-buffer records into [`TraceEvent`]s.
//!
//! It deliberately never changes capabilities, never touches `RLIMIT_MEMLOCK`
//! and never calls `aya::features()`: the caller (the ring manager) raises the
//! "Required" ring around [`load_and_attach`] and probes aya's features first.
//!
//! Only the programs of the selected events are loaded into the kernel; the
//! maps (one ring buffer or perf event array, one lost-events counter) are shared by all
//! of them. Which of the four compiled objects is loaded comes from probes of the running
//! kernel ([`crate::transport`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerfEventArray, RingBuf};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, RawTracePoint, TracePoint,
};
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use crate::transport::{self, EventSource, Output, Support};

/// Name of the event map in `tracer.bpf.c` (a ring buffer, or a perf event array).
const RING_BUFFER_MAP: &str = "EVENTS";
/// Name of the lost-events counter map in `tracer.bpf.c`.
const LOST_COUNTER_MAP: &str = "LOST";

/// The catalog of event names this tracer knows, in a stable order.
pub const EVENT_NAMES: &[&str] = &[
    "execve",
    "openat",
    "module_load",
    "sched_process_exec",
    "net_packet",
];

/// How the programs of `event` are attached: "raw_tracepoint", "tracepoint" or "cgroup_skb".
pub fn attach_type(event: &str) -> Option<&'static str> {
    match event {
        "execve" | "openat" | "module_load" => Some("raw_tracepoint"),
        "sched_process_exec" => Some("tracepoint"),
        "net_packet" => Some("cgroup_skb"),
        _ => None,
    }
}

/// What the caller wants loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadPlan {
    /// Catalog names (see [`EVENT_NAMES`]); duplicates are ignored.
    pub events: Vec<String>,
    /// The cgroup v2 directory that `net_packet` attaches to (usually the root of the
    /// cgroup v2 hierarchy, e.g. `/sys/fs/cgroup`). Required when `net_packet` is selected.
    pub cgroup_root: Option<PathBuf>,
    /// The tracer's own process id; its syscalls are not reported (0 = report everything).
    pub self_tgid: u32,
}

/// Why loading, attaching or reading the eBPF programs failed.
///
/// Load and attach errors name the event, the program, the operation and the errno so that
/// the caller can print them as is and map permission problems to its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// [`LoadPlan::events`] names an event outside [`EVENT_NAMES`]; nothing was loaded.
    #[error("unknown event '{name}' (known events: execve, openat, module_load, sched_process_exec, net_packet)")]
    UnknownEvent {
        /// The name as the caller gave it (untrimmed).
        name: String,
    },

    /// `net_packet` was selected but [`LoadPlan::cgroup_root`] is `None`.
    #[error("net_packet: no cgroup v2 directory was given to attach cgroup_skb programs to")]
    MissingCgroupRoot,

    /// The programs read x86_64 system call numbers and `struct pt_regs`; another target
    /// architecture would report wrong events, so nothing is loaded there.
    #[error(
        "the eBPF programs are written for x86_64 system call numbers; this build targets {arch}"
    )]
    UnsupportedArchitecture {
        /// `std::env::consts::ARCH` of this build.
        arch: &'static str,
    },

    /// The kernel refused the object as a whole (map creation, BTF or global data), before
    /// any program was loaded. Without the Required ring this is typically EPERM from
    /// `BPF_MAP_CREATE`.
    #[error("{events}: loading the BPF object (maps, BTF, global data) failed: {cause}")]
    Object {
        /// The selected events, comma-separated, or `(no events)`.
        events: String,
        /// The errno of the refused `bpf(2)` call, when the error chain carries one.
        errno: Option<i32>,
        /// The deepest error message of aya's chain (or the whole chain without an errno).
        cause: String,
    },

    #[error(
        "{event}: loading {section} program {program} failed: {cause}{}",
        last_log_line(verifier_log)
    )]
    /// `BPF_PROG_LOAD` of one program failed (verifier refusal, missing capability, or
    /// reading the loaded program's id failed).
    Load {
        /// The catalog event the program serves.
        event: &'static str,
        /// The program's function name in `tracer.bpf.c`.
        program: &'static str,
        /// Its ELF section, e.g. `raw_tracepoint/sys_enter`.
        section: &'static str,
        /// The errno of the refused `bpf(2)` call, when known.
        errno: Option<i32>,
        /// The kernel's (or aya's) message.
        cause: String,
        /// The full verifier log (may be empty).
        verifier_log: String,
    },

    /// A loaded program could not be attached to its hook.
    #[error("{event}: attaching {section} (program {program}) to {target} failed: {cause}")]
    Attach {
        /// The catalog event the program serves.
        event: &'static str,
        /// The program's function name in `tracer.bpf.c`.
        program: &'static str,
        /// Its ELF section, e.g. `cgroup_skb/ingress`.
        section: &'static str,
        /// What it was attached to: a raw tracepoint name, `category/name`, or a cgroup path.
        target: String,
        /// The errno of the refused attach (`bpf(2)` or `perf_event_open(2)`), when known.
        errno: Option<i32>,
        /// The kernel's (or aya's) message.
        cause: String,
    },

    /// The cgroup directory for `net_packet` could not be opened (missing, or not readable
    /// by the tracer).
    #[error("{event}: opening cgroup directory {} failed: {source}", path.display())]
    CgroupOpen {
        /// Always `net_packet`, the only cgroup-attached event.
        event: &'static str,
        /// [`LoadPlan::cgroup_root`] as given.
        path: PathBuf,
        /// The `open(2)` failure.
        #[source]
        source: io::Error,
    },

    #[error(
        "{event}: tracefs is not mounted (needed to attach tracepoint {tracepoint}); \
         run: mount -t tracefs nodev /sys/kernel/tracing"
    )]
    /// A tracepoint-attached event was selected but tracefs is mounted at neither
    /// `/sys/kernel/tracing` nor `/sys/kernel/debug/tracing` (aya attaches through it).
    TracefsMissing {
        /// The event that needs tracefs (`sched_process_exec`).
        event: &'static str,
        /// The tracepoint as `category/name`.
        tracepoint: &'static str,
    },

    /// The tracepoint's tracefs `format` file lacks a field the program reads, or declares
    /// it differently (the program reads fields at offsets taken from that file).
    #[error("{event}: the layout of tracepoint {tracepoint} is not supported: {detail}")]
    TracepointLayout {
        /// The event whose program reads the record.
        event: &'static str,
        /// The tracepoint as `category/name`.
        tracepoint: &'static str,
        /// Which field is missing or unexpected.
        detail: String,
    },

    /// The compiled object lacks a map or program this module expects: a build bug, never
    /// a property of the kernel.
    #[error("the BPF object has no {what} named {name} (build.rs and ebpf.rs disagree)")]
    ObjectMismatch {
        /// `map`, `program` or `program of the expected type`.
        what: &'static str,
        /// The map or program name looked up.
        name: &'static str,
    },

    /// The event map could not be opened for reading (for a perf event array: a CPU's perf
    /// buffer could not be opened or mapped).
    #[error("setting up the event buffer {RING_BUFFER_MAP} failed: {cause}")]
    RingBuffer {
        /// What failed, with the CPU for a perf buffer.
        cause: String,
    },

    /// `poll(2)` on the event buffers failed (not counting an interruption by a signal).
    #[error("waiting for events on the ring buffer failed: {source}")]
    Poll {
        /// The `poll(2)` failure.
        #[source]
        source: io::Error,
    },

    /// The `LOST` counter map could not be read, or the object had none.
    #[error("reading the lost-events counter failed: {cause}")]
    LostCounter {
        /// Why it could not be read.
        cause: String,
    },
}

impl EbpfError {
    /// True when the kernel refused an operation with EPERM or EACCES, i.e. most likely a
    /// missing capability (EACCES can also be a verifier refusal that depends on capabilities).
    pub fn is_permission_denied(&self) -> bool {
        let errno = match self {
            EbpfError::Object { errno, .. }
            | EbpfError::Load { errno, .. }
            | EbpfError::Attach { errno, .. } => *errno,
            EbpfError::CgroupOpen { source, .. } => source.raw_os_error(),
            _ => None,
        };
        matches!(errno, Some(libc::EPERM) | Some(libc::EACCES))
    }

    /// The errno behind the failure, when the kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            EbpfError::Object { errno, .. }
            | EbpfError::Load { errno, .. }
            | EbpfError::Attach { errno, .. } => *errno,
            EbpfError::CgroupOpen { source, .. } | EbpfError::Poll { source } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

fn last_log_line(log: &str) -> String {
    match log.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!(" (verifier: {line})"),
        None => String::new(),
    }
}

/// One decoded event. Serialized with an `"event"` tag holding the catalog name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TraceEvent {
    /// `execve(2)` or `execveat(2)` was entered.
    Execve {
        /// [`TraceEvent::ts_ns`]: CLOCK_MONOTONIC nanoseconds at the system call's entry.
        ts_ns: u64,
        /// The calling process: its thread group id (what user space calls a pid) in the
        /// initial pid namespace, like every pid and tid of these events.
        pid: u32,
        /// The calling thread (the kernel's pid of the task).
        tid: u32,
        /// The caller's real uid, as seen from the initial user namespace.
        uid: u32,
        /// The caller's command name before the exec (at most 15 bytes, lossy UTF-8).
        comm: String,
        /// "execve" or "execveat".
        syscall: String,
        /// The path argument as the process passed it (empty if unreadable).
        filename: String,
    },
    /// `openat(2)` or `openat2(2)` was entered.
    Openat {
        /// CLOCK_MONOTONIC nanoseconds at the system call's entry.
        ts_ns: u64,
        /// The calling process (thread group id).
        pid: u32,
        /// The calling thread.
        tid: u32,
        /// The caller's real uid, as seen from the initial user namespace.
        uid: u32,
        /// The caller's command name (at most 15 bytes, lossy UTF-8).
        comm: String,
        /// "openat" or "openat2".
        syscall: String,
        /// The path argument (empty if unreadable).
        path: String,
        /// The open flags (`O_*`), for openat2 taken from `open_how.flags`.
        flags: u64,
    },
    /// A module syscall was entered (whether or not it succeeds).
    ModuleLoad {
        /// CLOCK_MONOTONIC nanoseconds at the system call's entry.
        ts_ns: u64,
        /// The calling process (thread group id).
        pid: u32,
        /// The calling thread.
        tid: u32,
        /// The caller's real uid, as seen from the initial user namespace.
        uid: u32,
        /// The caller's command name (at most 15 bytes, lossy UTF-8).
        comm: String,
        /// "init_module", "finit_module" or "delete_module".
        syscall: String,
    },
    /// A process finished replacing its image (`sched:sched_process_exec`).
    SchedProcessExec {
        /// CLOCK_MONOTONIC nanoseconds when the new image was in place.
        ts_ns: u64,
        /// The tracepoint's `pid` field.
        pid: u32,
        /// The tracepoint's `old_pid` field (differs when a non-leader thread exec'd).
        old_pid: u32,
        /// The process's real uid, as seen from the initial user namespace (an exec never
        /// changes it; a set-uid program changes only the effective uid).
        uid: u32,
        /// The new command name.
        comm: String,
        /// The executed file, as resolved by the kernel.
        filename: String,
    },
    /// A packet crossed the cgroup (one event per packet and direction).
    NetPacket {
        /// CLOCK_MONOTONIC nanoseconds when the packet crossed the cgroup boundary.
        ts_ns: u64,
        /// "ingress" or "egress".
        direction: String,
        /// Packet length in bytes, from the network header on.
        length: u32,
        /// "ipv4", "ipv6" or "other".
        protocol: String,
        /// IANA protocol number from the IP header (6 tcp, 17 udp), 0 if unknown.
        ip_protocol: u8,
        /// TCP/UDP source port, when the packet carries ports (host byte order).
        src_port: Option<u16>,
        /// TCP/UDP destination port, when the packet carries ports (host byte order).
        dst_port: Option<u16>,
        /// The network interface's index (`ip link` numbering; 1 is usually `lo`).
        ifindex: u32,
    },
}

impl TraceEvent {
    /// The process the event belongs to; `None` for packets (they have no reliable process).
    pub fn pid(&self) -> Option<u32> {
        match self {
            TraceEvent::Execve { pid, .. }
            | TraceEvent::Openat { pid, .. }
            | TraceEvent::ModuleLoad { pid, .. }
            | TraceEvent::SchedProcessExec { pid, .. } => Some(*pid),
            TraceEvent::NetPacket { .. } => None,
        }
    }

    /// The catalog name of the event (one of [`EVENT_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            TraceEvent::Execve { .. } => "execve",
            TraceEvent::Openat { .. } => "openat",
            TraceEvent::ModuleLoad { .. } => "module_load",
            TraceEvent::SchedProcessExec { .. } => "sched_process_exec",
            TraceEvent::NetPacket { .. } => "net_packet",
        }
    }

    /// Kernel timestamp (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) of the event.
    pub fn ts_ns(&self) -> u64 {
        match self {
            TraceEvent::Execve { ts_ns, .. }
            | TraceEvent::Openat { ts_ns, .. }
            | TraceEvent::ModuleLoad { ts_ns, .. }
            | TraceEvent::SchedProcessExec { ts_ns, .. }
            | TraceEvent::NetPacket { ts_ns, .. } => *ts_ns,
        }
    }
}

// ---------------------------------------------------------------------------
// Program catalog
// ---------------------------------------------------------------------------

/// Where a program is attached.
#[derive(Debug, Clone, Copy)]
enum Hook {
    RawTracepoint(&'static str),
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    CgroupSkb(CgroupSkbAttachType),
}

/// One BPF program of the object and the event it serves.
#[derive(Debug, Clone, Copy)]
struct ProgramSpec {
    event: &'static str,
    /// Function name in `tracer.bpf.c`.
    program: &'static str,
    /// ELF section, i.e. the program type as a reader of the C file sees it.
    section: &'static str,
    hook: Hook,
}

const PROGRAMS: &[ProgramSpec] = &[
    ProgramSpec {
        event: "execve",
        program: "execve_enter",
        section: "raw_tracepoint/sys_enter",
        hook: Hook::RawTracepoint("sys_enter"),
    },
    ProgramSpec {
        event: "openat",
        program: "openat_enter",
        section: "raw_tracepoint/sys_enter",
        hook: Hook::RawTracepoint("sys_enter"),
    },
    ProgramSpec {
        event: "module_load",
        program: "module_load_enter",
        section: "raw_tracepoint/sys_enter",
        hook: Hook::RawTracepoint("sys_enter"),
    },
    ProgramSpec {
        event: "sched_process_exec",
        program: "sched_process_exec",
        section: "tracepoint/sched/sched_process_exec",
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
    },
    ProgramSpec {
        event: "net_packet",
        program: "net_ingress",
        section: "cgroup_skb/ingress",
        hook: Hook::CgroupSkb(CgroupSkbAttachType::Ingress),
    },
    ProgramSpec {
        event: "net_packet",
        program: "net_egress",
        section: "cgroup_skb/egress",
        hook: Hook::CgroupSkb(CgroupSkbAttachType::Egress),
    },
];

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Loaded and attached programs plus the ring (or perf) buffer they write to.
///
/// Dropping it detaches every link and unloads every program.
pub struct Probes {
    source: EventSource,
    support: Support,
    lost: Option<Array<MapData, u64>>,
    program_ids: Vec<u32>,
    events: Vec<&'static str>,
    malformed_records: u64,
    // Declared last so that the ring buffer is unmapped before the object goes away.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("support", &self.support)
            .field("events", &self.events)
            .field("program_ids", &self.program_ids)
            .field("malformed_records", &self.malformed_records)
            .finish_non_exhaustive()
    }
}

/// Loads and attaches the programs of the selected events, nothing else.
///
/// Needs the capabilities of the "Required" ring in the calling thread's effective set; the
/// caller must have called `aya::features()` while privileged beforehand. Probes which
/// object fits the kernel first ([`Support::probe`]).
pub fn load_and_attach(plan: &LoadPlan) -> Result<Probes, EbpfError> {
    load_and_attach_with(plan, Support::probe())
}

/// [`load_and_attach`] with the object variant chosen by the caller (tests load every variant
/// on a kernel that supports them all).
pub fn load_and_attach_with(plan: &LoadPlan, support: Support) -> Result<Probes, EbpfError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(EbpfError::UnsupportedArchitecture {
            arch: std::env::consts::ARCH,
        });
    }
    let events = select_events(&plan.events)?;
    let cgroup_root = if events.contains(&"net_packet") {
        Some(
            plan.cgroup_root
                .clone()
                .ok_or(EbpfError::MissingCgroupRoot)?,
        )
    } else {
        None
    };
    let tracefs = if events.contains(&"sched_process_exec") {
        Some(find_tracefs().ok_or(EbpfError::TracefsMissing {
            event: "sched_process_exec",
            tracepoint: "sched/sched_process_exec",
        })?)
    } else {
        None
    };
    let exec_layout = match &tracefs {
        Some(root) => exec_layout_from_tracefs(root)?,
        None => ExecLayout::default(),
    };

    let mut ebpf = EbpfLoader::new()
        // The programs use no CO-RE, so the kernel's BTF is not needed (and not parsed).
        .btf(None)
        .override_global("self_tgid", &plan.self_tgid, true)
        .override_global("exec_filename_loc_offset", &exec_layout.filename_loc, true)
        .override_global("exec_pid_offset", &exec_layout.pid, true)
        .override_global("exec_old_pid_offset", &exec_layout.old_pid, true)
        .load(support.object())
        .map_err(|e| {
            let (errno, cause) = describe(&e);
            EbpfError::Object {
                events: if events.is_empty() {
                    "(no events)".to_string()
                } else {
                    events.join(",")
                },
                errno,
                cause,
            }
        })?;

    // The event buffers exist before any program is attached: a perf event array with an
    // empty slot would make bpf_perf_event_output fail (ENOENT) for the first events.
    let source = event_source(&mut ebpf, support.output)?;
    let mut program_ids = Vec::new();
    for spec in PROGRAMS.iter().filter(|s| events.contains(&s.event)) {
        let id = load_and_attach_one(&mut ebpf, spec, cgroup_root.as_deref())?;
        program_ids.push(id);
    }

    // The counter is a convenience; a failure to take it only disables `lost_events`.
    let lost = ebpf
        .take_map(LOST_COUNTER_MAP)
        .and_then(|m| Array::try_from(m).ok());

    Ok(Probes {
        source,
        support,
        lost,
        program_ids,
        events,
        malformed_records: 0,
        _ebpf: ebpf,
    })
}

/// Takes the event map out of the object and opens it for reading (for a perf event array:
/// one perf buffer per online CPU, which perf_event_open makes a Required-ring operation).
fn event_source(ebpf: &mut Ebpf, output: Output) -> Result<EventSource, EbpfError> {
    let map = ebpf
        .take_map(RING_BUFFER_MAP)
        .ok_or(EbpfError::ObjectMismatch {
            what: "map",
            name: RING_BUFFER_MAP,
        })?;
    let buffer_error = |cause: String| EbpfError::RingBuffer { cause };
    Ok(match output {
        Output::RingBuf => {
            EventSource::Ring(RingBuf::try_from(map).map_err(|e| buffer_error(describe(&e).1))?)
        }
        Output::PerfArray => EventSource::perf(
            PerfEventArray::try_from(map).map_err(|e| buffer_error(describe(&e).1))?,
        )
        .map_err(buffer_error)?,
    })
}

/// Validates the requested names and returns them deduplicated, in catalog order.
fn select_events(requested: &[String]) -> Result<Vec<&'static str>, EbpfError> {
    let mut wanted = BTreeSet::new();
    for name in requested {
        let trimmed = name.trim();
        match EVENT_NAMES.iter().position(|known| *known == trimmed) {
            Some(index) => {
                wanted.insert(index);
            }
            None => return Err(EbpfError::UnknownEvent { name: name.clone() }),
        }
    }
    Ok(wanted.into_iter().map(|i| EVENT_NAMES[i]).collect())
}

/// The error for a program the kernel refused to load, with the verifier's log if any.
fn load_error(spec: &ProgramSpec, e: ProgramError) -> EbpfError {
    let verifier_log = match &e {
        ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        _ => String::new(),
    };
    let (errno, cause) = describe(&e);
    EbpfError::Load {
        event: spec.event,
        program: spec.program,
        section: spec.section,
        errno,
        cause,
        verifier_log,
    }
}

/// The error for a loaded program the kernel refused to attach to `target`.
fn attach_error(spec: &ProgramSpec, target: String, e: ProgramError) -> EbpfError {
    let (errno, cause) = describe(&e);
    EbpfError::Attach {
        event: spec.event,
        program: spec.program,
        section: spec.section,
        target,
        errno,
        cause,
    }
}

/// Loads one program into the kernel, attaches it and returns its kernel id.
fn load_and_attach_one(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    cgroup_root: Option<&Path>,
) -> Result<u32, EbpfError> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or(EbpfError::ObjectMismatch {
            what: "program",
            name: spec.program,
        })?;
    let mismatch = |_| EbpfError::ObjectMismatch {
        what: "program of the expected type",
        name: spec.program,
    };
    let loaded = |e| load_error(spec, e);
    match spec.hook {
        Hook::RawTracepoint(tracepoint) => {
            let program: &mut RawTracePoint = program.try_into().map_err(mismatch)?;
            program.load().map_err(loaded)?;
            program
                .attach(tracepoint)
                .map_err(|e| attach_error(spec, tracepoint.to_string(), e))?;
        }
        Hook::Tracepoint { category, name } => {
            let program: &mut TracePoint = program.try_into().map_err(mismatch)?;
            program.load().map_err(loaded)?;
            program
                .attach(category, name)
                .map_err(|e| attach_error(spec, format!("{category}/{name}"), e))?;
        }
        Hook::CgroupSkb(direction) => {
            // `load_and_attach` checked that a cgroup directory was given.
            let path = cgroup_root.ok_or(EbpfError::MissingCgroupRoot)?;
            let cgroup = File::open(path).map_err(|source| EbpfError::CgroupOpen {
                event: spec.event,
                path: path.to_path_buf(),
                source,
            })?;
            let program: &mut CgroupSkb = program.try_into().map_err(mismatch)?;
            program.load().map_err(loaded)?;
            program
                .attach(&cgroup, direction, CgroupAttachMode::Single)
                .map_err(|e| attach_error(spec, path.display().to_string(), e))?;
        }
    }
    program_id(ebpf, spec)
}

/// The kernel id of a loaded program (what the harness matches against bpftool's view).
fn program_id(ebpf: &Ebpf, spec: &ProgramSpec) -> Result<u32, EbpfError> {
    let program = ebpf
        .program(spec.program)
        .ok_or(EbpfError::ObjectMismatch {
            what: "program",
            name: spec.program,
        })?;
    let info = program.info().map_err(|e| {
        let (errno, cause) = describe(&e);
        EbpfError::Load {
            event: spec.event,
            program: spec.program,
            section: spec.section,
            errno,
            cause: format!("reading the program id: {cause}"),
            verifier_log: String::new(),
        }
    })?;
    Ok(info.id())
}

/// Finds the deepest `io::Error` in an error chain: its errno and its message. Without one,
/// the whole chain is rendered (aya's outer messages name the syscall that failed).
fn describe(error: &(dyn std::error::Error + 'static)) -> (Option<i32>, String) {
    let mut deepest_io: Option<&io::Error> = None;
    let mut chain = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        chain.push(e.to_string());
        if let Some(io_error) = e.downcast_ref::<io::Error>() {
            deepest_io = Some(io_error);
        }
        current = e.source();
    }
    match deepest_io {
        Some(io_error) if io_error.raw_os_error().is_some() => {
            (io_error.raw_os_error(), io_error.to_string())
        }
        _ => {
            chain.dedup();
            (None, chain.join(": "))
        }
    }
}

/// The tracefs mount point, if tracefs is mounted at one of its usual places.
fn find_tracefs() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|root| root.join("events").is_dir())
}

/// Byte offsets of the sched_process_exec record fields the program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExecLayout {
    filename_loc: u32,
    pid: u32,
    old_pid: u32,
}

impl Default for ExecLayout {
    /// The layout of every kernel read so far (5.4 .. 7.2).
    fn default() -> Self {
        ExecLayout {
            filename_loc: 8,
            pid: 12,
            old_pid: 16,
        }
    }
}

/// Reads the field offsets from tracefs; falls back to the default layout if the format file
/// cannot be read (the attach step will then report the real problem).
fn exec_layout_from_tracefs(tracefs: &Path) -> Result<ExecLayout, EbpfError> {
    let format_path = tracefs.join("events/sched/sched_process_exec/format");
    match std::fs::read_to_string(format_path) {
        Ok(text) => parse_exec_layout(&text).map_err(|detail| EbpfError::TracepointLayout {
            event: "sched_process_exec",
            tracepoint: "sched/sched_process_exec",
            detail,
        }),
        Err(_) => Ok(ExecLayout::default()),
    }
}

/// Parses a tracefs `format` file for the three fields used by the program.
fn parse_exec_layout(format: &str) -> Result<ExecLayout, String> {
    let mut filename = None;
    let mut pid = None;
    let mut old_pid = None;
    for line in format.lines() {
        let Some((declaration, offset)) = parse_format_field(line) else {
            continue;
        };
        let name = declaration.rsplit(' ').next().unwrap_or("");
        match name {
            "filename" => {
                if !declaration.contains("__data_loc") {
                    return Err(format!(
                        "field filename is not a __data_loc string ({declaration})"
                    ));
                }
                filename = Some(offset);
            }
            "pid" => pid = Some(offset),
            "old_pid" => old_pid = Some(offset),
            _ => {}
        }
    }
    match (filename, pid, old_pid) {
        (Some(filename_loc), Some(pid), Some(old_pid)) => Ok(ExecLayout {
            filename_loc,
            pid,
            old_pid,
        }),
        _ => Err("the format file lacks one of the fields filename, pid, old_pid".to_string()),
    }
}

/// `\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;` -> ("pid_t pid", 12).
/// Array brackets are removed: `__data_loc char[] filename` -> `__data_loc char filename`.
fn parse_format_field(line: &str) -> Option<(String, u32)> {
    let rest = line.trim().strip_prefix("field:")?;
    let (declaration, rest) = rest.split_once(';')?;
    let offset = rest
        .trim()
        .strip_prefix("offset:")?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()?;
    let mut without_brackets = String::with_capacity(declaration.len());
    let mut depth = 0usize;
    for c in declaration.trim().chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => without_brackets.push(c),
            _ => {}
        }
    }
    Some((without_brackets.trim_end().to_string(), offset))
}

// ---------------------------------------------------------------------------
// Reading events
// ---------------------------------------------------------------------------

impl Probes {
    /// Waits up to `timeout` for events; returns those decoded (may be empty).
    ///
    /// Returns as soon as at least one event is available, or early when a signal interrupts
    /// the wait (so a stop flag set by a handler is seen at once). Records that cannot be decoded
    /// are skipped and counted (see [`Probes::malformed_records`]).
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<TraceEvent>, EbpfError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            self.drain(&mut events);
            if !events.is_empty() {
                return Ok(events);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Ok(events);
            }
            // Round up so that a sub-millisecond remainder does not busy-loop.
            let millis = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let mut fds = self.source.poll_fds();
            if !transport::wait(&mut fds, millis).map_err(|source| EbpfError::Poll { source })? {
                // A signal (SIGTERM, SIGINT): let the caller look at its stop flag now.
                return Ok(events);
            }
        }
    }

    fn drain(&mut self, events: &mut Vec<TraceEvent>) {
        let malformed = &mut self.malformed_records;
        self.source.drain(|record| match decode(record) {
            Some(event) => events.push(event),
            None => *malformed += 1,
        });
    }

    /// The object variant loaded: how events leave the kernel and which helpers read memory.
    pub fn support(&self) -> Support {
        self.support
    }

    /// Kernel ids of the loaded programs (BPF prog ids), for leak checks.
    pub fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    /// The events whose programs are loaded, in catalog order.
    pub fn events(&self) -> &[&'static str] {
        &self.events
    }

    /// Ring-buffer records that could not be decoded so far.
    pub fn malformed_records(&self) -> u64 {
        self.malformed_records
    }

    /// Events the kernel side dropped because the ring (or a perf) buffer was full.
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        match &self.lost {
            Some(array) => array
                .get(&0, 0)
                .map(|n| n + self.source.perf_lost())
                .map_err(|e| EbpfError::LostCounter {
                    cause: describe(&e).1,
                }),
            None => Err(EbpfError::LostCounter {
                cause: format!("map {LOST_COUNTER_MAP} is not available"),
            }),
        }
    }
}

// Record kinds and layouts: keep in sync with `struct *_event` in tracer.bpf.c.
const KIND_EXECVE: u32 = 1;
const KIND_OPENAT: u32 = 2;
const KIND_MODULE_LOAD: u32 = 3;
const KIND_SCHED_PROCESS_EXEC: u32 = 4;
const KIND_NET_PACKET: u32 = 5;

const HEADER_LEN: usize = 40;
const COMM_LEN: usize = 16;
const PATH_LEN: usize = 256;

/// Bounds-checked little-endian reads from one record.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.0.get(offset..offset.checked_add(len)?)
    }
    fn u8(&self, offset: usize) -> Option<u8> {
        self.0.get(offset).copied()
    }
    fn u16(&self, offset: usize) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(offset, 2)?.try_into().ok()?))
    }
    fn u32(&self, offset: usize) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(offset, 4)?.try_into().ok()?))
    }
    fn u64(&self, offset: usize) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(offset, 8)?.try_into().ok()?))
    }
    /// A NUL-terminated string inside a fixed-size field (lossy UTF-8).
    fn c_string(&self, offset: usize, len: usize) -> Option<String> {
        let field = self.bytes(offset, len)?;
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        Some(String::from_utf8_lossy(&field[..end]).into_owned())
    }
}

/// Common header: kind, pid, tid, uid, ts_ns, comm.
struct Header {
    kind: u32,
    pid: u32,
    tid: u32,
    uid: u32,
    ts_ns: u64,
    comm: String,
}

fn decode_header(r: &Record<'_>) -> Option<Header> {
    Some(Header {
        kind: r.u32(0)?,
        pid: r.u32(4)?,
        tid: r.u32(8)?,
        uid: r.u32(12)?,
        ts_ns: r.u64(16)?,
        comm: r.c_string(24, COMM_LEN)?,
    })
}

fn syscall_name(nr: u32) -> &'static str {
    match nr {
        59 => "execve",
        322 => "execveat",
        257 => "openat",
        437 => "openat2",
        175 => "init_module",
        176 => "delete_module",
        313 => "finit_module",
        _ => "unknown",
    }
}

/// Decodes one record; `None` if it is too short or of an unknown kind. Longer records are
/// fine (perf samples carry alignment padding).
fn decode(bytes: &[u8]) -> Option<TraceEvent> {
    let r = Record(bytes);
    let h = decode_header(&r)?;
    let event = match h.kind {
        KIND_EXECVE => TraceEvent::Execve {
            ts_ns: h.ts_ns,
            pid: h.pid,
            tid: h.tid,
            uid: h.uid,
            comm: h.comm,
            syscall: syscall_name(r.u32(HEADER_LEN)?).to_string(),
            filename: r.c_string(HEADER_LEN + 8, PATH_LEN)?,
        },
        KIND_OPENAT => TraceEvent::Openat {
            ts_ns: h.ts_ns,
            pid: h.pid,
            tid: h.tid,
            uid: h.uid,
            comm: h.comm,
            syscall: syscall_name(r.u32(HEADER_LEN)?).to_string(),
            flags: r.u64(HEADER_LEN + 8)?,
            path: r.c_string(HEADER_LEN + 16, PATH_LEN)?,
        },
        KIND_MODULE_LOAD => TraceEvent::ModuleLoad {
            ts_ns: h.ts_ns,
            pid: h.pid,
            tid: h.tid,
            uid: h.uid,
            comm: h.comm,
            syscall: syscall_name(r.u32(HEADER_LEN)?).to_string(),
        },
        KIND_SCHED_PROCESS_EXEC => TraceEvent::SchedProcessExec {
            ts_ns: h.ts_ns,
            pid: h.pid,
            old_pid: r.u32(HEADER_LEN)?,
            uid: h.uid,
            comm: h.comm,
            filename: r.c_string(HEADER_LEN + 8, PATH_LEN)?,
        },
        KIND_NET_PACKET => {
            let direction = match r.u32(HEADER_LEN)? {
                1 => "ingress",
                2 => "egress",
                _ => return None,
            };
            let protocol = match r.u16(HEADER_LEN + 12)? {
                0x0800 => "ipv4",
                0x86dd => "ipv6",
                _ => "other",
            };
            let has_ports = r.u8(HEADER_LEN + 15)? == 1;
            TraceEvent::NetPacket {
                ts_ns: h.ts_ns,
                direction: direction.to_string(),
                length: r.u32(HEADER_LEN + 4)?,
                protocol: protocol.to_string(),
                ip_protocol: r.u8(HEADER_LEN + 14)?,
                src_port: if has_ports {
                    Some(r.u16(HEADER_LEN + 16)?)
                } else {
                    None
                },
                dst_port: if has_ports {
                    Some(r.u16(HEADER_LEN + 18)?)
                } else {
                    None
                },
                ifindex: r.u32(HEADER_LEN + 8)?,
            }
        }
        _ => return None,
    };
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32, total: usize) -> Vec<u8> {
        let mut b = vec![0u8; total];
        b[0..4].copy_from_slice(&kind.to_le_bytes());
        b[4..8].copy_from_slice(&42u32.to_le_bytes());
        b[8..12].copy_from_slice(&43u32.to_le_bytes());
        b[12..16].copy_from_slice(&1000u32.to_le_bytes());
        b[16..24].copy_from_slice(&7u64.to_le_bytes());
        b[24..28].copy_from_slice(b"true");
        b
    }

    #[test]
    fn decodes_execve_record() {
        let mut b = header(KIND_EXECVE, 304);
        b[40..44].copy_from_slice(&59u32.to_le_bytes());
        b[48..57].copy_from_slice(b"/bin/true");
        let event = decode(&b).expect("decodes");
        assert_eq!(
            event,
            TraceEvent::Execve {
                ts_ns: 7,
                pid: 42,
                tid: 43,
                uid: 1000,
                comm: "true".into(),
                syscall: "execve".into(),
                filename: "/bin/true".into()
            }
        );
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["event"], "execve");
        assert_eq!(event.name(), "execve");
        assert_eq!(event.pid(), Some(42));
    }

    #[test]
    fn decodes_net_packet_record() {
        let mut b = header(KIND_NET_PACKET, 64);
        b[40..44].copy_from_slice(&2u32.to_le_bytes());
        b[44..48].copy_from_slice(&33u32.to_le_bytes());
        b[48..52].copy_from_slice(&1u32.to_le_bytes());
        b[52..54].copy_from_slice(&0x0800u16.to_le_bytes());
        b[54] = 17;
        b[55] = 1;
        b[56..58].copy_from_slice(&40000u16.to_le_bytes());
        b[58..60].copy_from_slice(&9u16.to_le_bytes());
        let event = decode(&b).expect("decodes");
        assert_eq!(event.pid(), None);
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["event"], "net_packet");
        assert_eq!(json["direction"], "egress");
        assert_eq!(json["protocol"], "ipv4");
        assert_eq!(json["dst_port"], 9);
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&header(KIND_OPENAT, 50)), None);
        assert_eq!(decode(&header(99, 304)), None);
    }

    #[test]
    fn unknown_event_is_an_error() {
        let err = select_events(&["execve".into(), "bogus".into()]).unwrap_err();
        assert!(matches!(err, EbpfError::UnknownEvent { ref name } if name == "bogus"));
        let ok =
            select_events(&["net_packet".into(), "execve".into(), "execve".into()]).expect("valid");
        assert_eq!(ok, vec!["execve", "net_packet"]);
    }

    #[test]
    fn every_event_has_programs_and_an_attach_type() {
        for event in EVENT_NAMES {
            assert!(attach_type(event).is_some(), "{event}");
            assert!(PROGRAMS.iter().any(|p| p.event == *event), "{event}");
        }
        assert_eq!(attach_type("nope"), None);
    }

    #[test]
    fn parses_sched_process_exec_format() {
        let format = "name: sched_process_exec\nID: 365\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\
            \tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_exec_layout(format), Ok(ExecLayout::default()));
        assert!(parse_exec_layout("format:\n").is_err());
    }

    #[test]
    fn permission_errors_are_recognised() {
        let err = EbpfError::Attach {
            event: "net_packet",
            program: "net_ingress",
            section: "cgroup_skb/ingress",
            target: "/sys/fs/cgroup/unified".into(),
            errno: Some(libc::EPERM),
            cause: io::Error::from_raw_os_error(libc::EPERM).to_string(),
        };
        assert!(err.is_permission_denied());
        assert_eq!(
            err.to_string(),
            "net_packet: attaching cgroup_skb/ingress (program net_ingress) to /sys/fs/cgroup/unified failed: \
             Operation not permitted (os error 1)"
        );
        assert!(!EbpfError::MissingCgroupRoot.is_permission_denied());
    }
}
