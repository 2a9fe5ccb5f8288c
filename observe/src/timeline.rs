//! The capability timeline: what every thread of an observed command held, and when it changed.
//!
//! Why typed: the checks judge system calls, and they used to find them by searching the text
//! a renderer wrote ("PR_CAPBSET_DROP, cap_bpf"), so a change of wording could silently blind a
//! check. Every entry now carries a typed [`Event`], and a system call a typed [`Call`] with its
//! raw result; checks match on variants, reports render them, and a [`Timeline`] (inside a
//! recorded run) can be written and read back as JSON for unit tests without root.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use capring_spec::caps::{Cap, CapSet};
pub use capring_spec::sys::ThreadCaps;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a process or thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It exited by itself with this code (0 to 255).
    Code(i32),
    /// A signal killed it: the signal's number (rendered by name, `SIGKILL`).
    Signal(i32),
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Code(c) => write!(f, "code {c}"),
            Status::Signal(s) => write!(f, "signal {}", capring_spec::sys::signal_name(*s)),
        }
    }
}

/// A `prctl(2)` option the observer traces. Named options serialize as their uapi constant's
/// name (`"PR_CAPBSET_DROP"`), [`PrctlOp::Other`] as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrctlOp {
    /// `PR_CAPBSET_DROP`: removes capability `arg` from the bounding set (needs cap_setpcap).
    CapbsetDrop,
    /// `PR_CAP_AMBIENT_IS_SET`: asks whether capability `arg` is ambient; changes nothing.
    AmbientIsSet,
    /// `PR_CAP_AMBIENT_RAISE`: adds capability `arg` to the ambient set (it must be in P and I).
    AmbientRaise,
    /// `PR_CAP_AMBIENT_LOWER`: removes capability `arg` from the ambient set.
    AmbientLower,
    /// `PR_CAP_AMBIENT_CLEAR_ALL`: empties the ambient set (`arg` is 0).
    AmbientClearAll,
    /// `PR_SET_KEEPCAPS`: whether P survives leaving uid 0 (`arg` is 0 or 1).
    SetKeepcaps,
    /// `PR_SET_SECUREBITS`: `arg` is the new securebits mask (rendered flag by flag).
    SetSecurebits,
    /// Any other option, by its number (`arg` is its second argument).
    Other(u64),
}

const PRCTL_NAMES: [(PrctlOp, &str); 7] = [
    (PrctlOp::CapbsetDrop, "PR_CAPBSET_DROP"),
    (PrctlOp::AmbientIsSet, "PR_CAP_AMBIENT_IS_SET"),
    (PrctlOp::AmbientRaise, "PR_CAP_AMBIENT_RAISE"),
    (PrctlOp::AmbientLower, "PR_CAP_AMBIENT_LOWER"),
    (PrctlOp::AmbientClearAll, "PR_CAP_AMBIENT_CLEAR_ALL"),
    (PrctlOp::SetKeepcaps, "PR_SET_KEEPCAPS"),
    (PrctlOp::SetSecurebits, "PR_SET_SECUREBITS"),
];

impl PrctlOp {
    /// The uapi constant's name (`PR_CAPBSET_DROP`), as serialized; `prctl option N` for
    /// [`PrctlOp::Other`].
    pub fn name(self) -> String {
        match PRCTL_NAMES.iter().find(|(op, _)| *op == self) {
            Some((_, n)) => n.to_string(),
            None => match self {
                PrctlOp::Other(n) => format!("prctl option {n}"),
                _ => unreachable!("every named option is in PRCTL_NAMES"),
            },
        }
    }
}

impl Serialize for PrctlOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PrctlOp::Other(n) => s.serialize_u64(*n),
            op => s.serialize_str(&op.name()),
        }
    }
}

impl<'de> Deserialize<'de> for PrctlOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(PrctlOp::Other(n)),
            Raw::Name(name) => PRCTL_NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(op, _)| *op)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown prctl option {name}"))),
        }
    }
}

/// A `bpf(2)` command (uapi `enum bpf_cmd`), serialized by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfCmd(pub u32);

/// Names of the `bpf(2)` commands, by number.
const BPF_CMDS: [&str; 37] = [
    "BPF_MAP_CREATE",
    "BPF_MAP_LOOKUP_ELEM",
    "BPF_MAP_UPDATE_ELEM",
    "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY",
    "BPF_PROG_LOAD",
    "BPF_OBJ_PIN",
    "BPF_OBJ_GET",
    "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH",
    "BPF_PROG_TEST_RUN",
    "BPF_PROG_GET_NEXT_ID",
    "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID",
    "BPF_MAP_GET_FD_BY_ID",
    "BPF_OBJ_GET_INFO_BY_FD",
    "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN",
    "BPF_BTF_LOAD",
    "BPF_BTF_GET_FD_BY_ID",
    "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
    "BPF_MAP_FREEZE",
    "BPF_BTF_GET_NEXT_ID",
    "BPF_MAP_LOOKUP_BATCH",
    "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
    "BPF_MAP_UPDATE_BATCH",
    "BPF_MAP_DELETE_BATCH",
    "BPF_LINK_CREATE",
    "BPF_LINK_UPDATE",
    "BPF_LINK_GET_FD_BY_ID",
    "BPF_LINK_GET_NEXT_ID",
    "BPF_ENABLE_STATS",
    "BPF_ITER_CREATE",
    "BPF_LINK_DETACH",
    "BPF_PROG_BIND_MAP",
    "BPF_TOKEN_CREATE",
];

impl BpfCmd {
    /// `BPF_MAP_CREATE`: creates a map; the observer decodes its `map_type`.
    pub const MAP_CREATE: BpfCmd = BpfCmd(0);
    /// `BPF_PROG_LOAD`: loads (and verifies) a program; the observer decodes its `prog_type`.
    pub const PROG_LOAD: BpfCmd = BpfCmd(5);
    /// `BPF_PROG_ATTACH`: attaches a program to a cgroup or another target; events can fire.
    pub const PROG_ATTACH: BpfCmd = BpfCmd(8);
    /// `BPF_RAW_TRACEPOINT_OPEN`: attaches a raw tracepoint (or tracing) program.
    pub const RAW_TRACEPOINT_OPEN: BpfCmd = BpfCmd(17);
    /// `BPF_BTF_LOAD`: loads type information, usually a loader's first privileged call.
    pub const BTF_LOAD: BpfCmd = BpfCmd(18);
    /// `BPF_LINK_CREATE`: attaches a program through a link (kprobes, cgroups, tracing).
    pub const LINK_CREATE: BpfCmd = BpfCmd(28);

    /// The uapi name (`BPF_PROG_LOAD`), as serialized; `bpf cmd N` for a number newer than
    /// this table, which reads back as the same number.
    pub fn name(self) -> String {
        BPF_CMDS
            .get(self.0 as usize)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("bpf cmd {}", self.0))
    }

    /// Commands the kernel checks a capability for: creating objects, loading, attaching,
    /// and reaching objects by id. The others act on a descriptor the caller already holds
    /// (map lookups and updates, object info), so they are ordinary work in any ring.
    pub fn is_privileged(self) -> bool {
        matches!(
            self.0,
            0 | 5 | 6 | 8 | 9 | 11..=14 | 16..=20 | 23 | 28 | 30..=33 | 35 | 36
        )
    }

    /// Attaches a program: events can fire from now on.
    pub fn attaches(self) -> bool {
        matches!(self.0, 8 | 17 | 28)
    }
}

impl Serialize for BpfCmd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for BpfCmd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if let Some(i) = BPF_CMDS.iter().position(|n| *n == name) {
            return Ok(BpfCmd(i as u32));
        }
        name.strip_prefix("bpf cmd ")
            .and_then(|n| n.parse().ok())
            .map(BpfCmd)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown bpf command {name}")))
    }
}

/// The data of a `capset(2)` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapData {
    /// The effective set asked for: what the kernel checks from now on.
    pub effective: CapSet,
    /// The permitted set asked for: what E and I may hold later (it can only shrink).
    pub permitted: CapSet,
    /// The inheritable set asked for: what may pass on through exec.
    pub inheritable: CapSet,
}

/// A traced system call, decoded from its registers and memory at entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "syscall", rename_all = "snake_case")]
pub enum Call {
    /// `capset(2)`: sets E, P and I of the calling thread.
    Capset {
        /// The pid in the header; 0 (also when it is the caller's own tid) means the caller.
        target: i32,
        /// The three sets asked for; `None` when the memory or the header's version was
        /// unreadable.
        data: Option<CapData>,
    },
    /// `prctl(2)`: the bounding and ambient sets, keepcaps, securebits.
    Prctl {
        /// The option (first argument).
        op: PrctlOp,
        /// The capability or value argument.
        arg: u64,
    },
    /// setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid, setfsgid.
    SetId {
        /// Which one: the system call's name (`setresuid`).
        name: String,
        /// The id arguments in order; -1 is the kernel's "leave unchanged" (`(uid_t)-1`).
        ids: Vec<i64>,
    },
    /// `setgroups(2)`: replaces the supplementary groups.
    Setgroups {
        /// The new groups (the first 64 at most; empty when unreadable).
        gids: Vec<u32>,
    },
    /// An exec attempt, `execve` or `execveat` (a successful one also gives an
    /// [`Event::Exec`] entry).
    Execve {
        /// The program as the caller named it (`?` when unreadable).
        path: String,
        /// The arguments, program name first (the first 32; a longer list ends with `…`).
        argv: Vec<String>,
    },
    /// `bpf(2)`: maps, programs, links, BTF.
    Bpf {
        /// The command (first argument).
        cmd: BpfCmd,
        /// `bpf_attr.prog_type` of a `BPF_PROG_LOAD` (uapi `enum bpf_prog_type`), when
        /// readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prog_type: Option<u32>,
        /// `bpf_attr.map_type` of a `BPF_MAP_CREATE` (uapi `enum bpf_map_type`), when
        /// readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map_type: Option<u32>,
    },
    /// `perf_event_open(2)`: a probe (tracepoint, kprobe, uprobe) or an output buffer.
    PerfEventOpen {
        /// `perf_event_attr.type` (2 = tracepoint; `u32::MAX` when the attributes were
        /// unreadable).
        kind: u32,
        /// `perf_event_attr.config`: the tracepoint id, or the counter of a software event
        /// (10 = `PERF_COUNT_SW_BPF_OUTPUT`).
        config: u64,
        /// The `pid` argument: -1 is every process, which perf_event_paranoid restricts.
        target_pid: i32,
        /// The `cpu` argument: -1 is any CPU.
        cpu: i32,
    },
    /// `socket(2)`; only raw and packet sockets are traced.
    Socket {
        /// The address family (`AF_PACKET` = 17, `AF_INET` = 2, …).
        domain: i32,
        /// The socket type with its flags (`SOCK_RAW` = 3 in the low four bits).
        kind: i32,
        /// The protocol (for packet sockets the ethertype in network byte order).
        protocol: i32,
    },
    /// init_module / finit_module.
    ModuleLoad {
        /// `finit_module`: the module file's path (`fd N` when unreadable);
        /// `init_module`: `(image in memory)`.
        name: String,
    },
    /// A traced system call the decoder has no variant for.
    Unknown {
        /// Its x86_64 number.
        nr: i64,
    },
}

impl Call {
    /// The system call's name.
    pub fn syscall(&self) -> &str {
        match self {
            Call::Capset { .. } => "capset",
            Call::Prctl { .. } => "prctl",
            Call::SetId { name, .. } => name,
            Call::Setgroups { .. } => "setgroups",
            Call::Execve { .. } => "execve",
            Call::Bpf { .. } => "bpf",
            Call::PerfEventOpen { .. } => "perf_event_open",
            Call::Socket { .. } => "socket",
            Call::ModuleLoad { .. } => "init_module",
            Call::Unknown { .. } => "unknown",
        }
    }

    /// A call that changes a capability set (E/P/I by capset, B and A by prctl).
    pub fn changes_capabilities(&self) -> bool {
        match self {
            Call::Capset { .. } => true,
            Call::Prctl { op, .. } => matches!(
                op,
                PrctlOp::CapbsetDrop
                    | PrctlOp::AmbientRaise
                    | PrctlOp::AmbientLower
                    | PrctlOp::AmbientClearAll
            ),
            _ => false,
        }
    }

    /// A call that *drops* capabilities: lowers E/P/I (any capset counts: its effect is only
    /// known afterwards), empties the bounding or ambient set.
    pub fn is_drop(&self) -> bool {
        self.changes_capabilities()
            && !matches!(
                self,
                Call::Prctl {
                    op: PrctlOp::AmbientRaise,
                    ..
                }
            )
    }

    /// A call whose permission the kernel checks against a capability: what the rings are
    /// about. bpf commands that create, load, attach or reach objects by id; perf events;
    /// raw and packet sockets; loading kernel modules.
    pub fn is_privileged(&self) -> bool {
        match self {
            Call::Bpf { cmd, .. } => cmd.is_privileged(),
            Call::PerfEventOpen { .. } | Call::ModuleLoad { .. } => true,
            // The kernel checks CAP_NET_RAW for packet sockets of any type and for raw IP
            // sockets; a raw netlink socket needs nothing.
            Call::Socket { domain, kind, .. } => {
                *domain == libc::AF_PACKET
                    || (matches!(*domain, libc::AF_INET | libc::AF_INET6)
                        && *kind & 0xf == libc::SOCK_RAW)
            }
            _ => false,
        }
    }

    /// Attaches a probe: the command's events can fire from now on. A software
    /// `PERF_COUNT_SW_BPF_OUTPUT` event is an output buffer, not a probe.
    pub fn attaches(&self) -> bool {
        const SOFTWARE: u32 = 1;
        const SW_BPF_OUTPUT: u64 = 10;
        match self {
            Call::Bpf { cmd, .. } => cmd.attaches(),
            Call::PerfEventOpen { kind, config, .. } => {
                !(*kind == SOFTWARE && *config == SW_BPF_OUTPUT)
            }
            _ => false,
        }
    }

    /// One human line: `capset(eff={cap_bpf} prm=… inh={})`.
    pub fn describe(&self, last: u8) -> String {
        let args = match self {
            Call::Capset { target, data } => {
                let mut s = match data {
                    Some(d) => format!(
                        "eff={} prm={} inh={}",
                        compact(d.effective, last),
                        compact(d.permitted, last),
                        compact(d.inheritable, last)
                    ),
                    None => "unreadable data".into(),
                };
                if *target != 0 {
                    let _ = write!(s, " target={target}");
                }
                s
            }
            Call::Prctl { op, arg } => match op {
                PrctlOp::CapbsetDrop
                | PrctlOp::AmbientIsSet
                | PrctlOp::AmbientRaise
                | PrctlOp::AmbientLower => format!("{}, {}", op.name(), cap_text(*arg)),
                PrctlOp::SetSecurebits => format!("{}, {}", op.name(), securebits(*arg)),
                PrctlOp::AmbientClearAll => op.name(),
                _ => format!("{}, {arg}", op.name()),
            },
            Call::SetId { ids, .. } => ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Call::Setgroups { gids } => format!("{gids:?}"),
            Call::Execve { path, argv } => format!("{path} {argv:?}"),
            Call::Bpf {
                cmd,
                prog_type,
                map_type,
            } => {
                let mut s = cmd.name();
                if let Some(t) = prog_type {
                    let _ = write!(s, " prog_type={t}");
                }
                if let Some(t) = map_type {
                    let _ = write!(s, " map_type={t}");
                }
                s
            }
            Call::PerfEventOpen {
                kind,
                config,
                target_pid,
                cpu,
            } => format!(
                "type={} config={config} pid={target_pid} cpu={cpu}",
                perf_type(*kind)
            ),
            Call::Socket {
                domain,
                kind,
                protocol,
            } => format!("domain={domain} type={kind} protocol={protocol}"),
            Call::ModuleLoad { name } => name.clone(),
            Call::Unknown { nr } => format!("nr {nr}"),
        };
        format!("{}({args})", self.syscall())
    }
}

fn perf_type(kind: u32) -> String {
    match kind {
        0 => "hardware".into(),
        1 => "software".into(),
        2 => "tracepoint".into(),
        3 => "hw_cache".into(),
        4 => "raw".into(),
        5 => "breakpoint".into(),
        n => n.to_string(),
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
    let list = if names.is_empty() {
        "none".to_string()
    } else {
        names.join("|")
    };
    format!("{v:#x} ({list})")
}

/// A fault the harness injects: the named call fails with EPERM without reaching the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// capset(2).
    CapsetEperm,
    /// prctl(PR_CAPBSET_DROP).
    CapbsetDropEperm,
}

impl FaultKind {
    /// Whether `call` is one this fault makes fail.
    pub fn hits(self, call: &Call) -> bool {
        match self {
            FaultKind::CapsetEperm => matches!(call, Call::Capset { .. }),
            FaultKind::CapbsetDropEperm => matches!(
                call,
                Call::Prctl {
                    op: PrctlOp::CapbsetDrop,
                    ..
                }
            ),
        }
    }

    /// The call as a user would name it.
    pub fn call_name(self) -> &'static str {
        match self {
            FaultKind::CapsetEperm => "capset",
            FaultKind::CapbsetDropEperm => "prctl(PR_CAPBSET_DROP)",
        }
    }
}

/// A condition the harness imposed on the command at launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum Condition {
    /// Removed from the bounding set before exec (so a root exec lacks them in P too).
    BoundingDrop {
        /// The capabilities removed.
        caps: CapSet,
    },
    /// Every such call of every process of the tree fails with EPERM.
    Fault {
        /// Which call fails.
        fault: FaultKind,
    },
    /// perf_event_paranoid set for the run.
    Paranoid {
        /// The value written to `/proc/sys/kernel/perf_event_paranoid` (-1 to 2 upstream;
        /// some distributions' kernels add stricter levels above 2).
        value: i32,
    },
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output: where event lines are looked for unless the profile says otherwise.
    #[default]
    Stdout,
    /// Standard error: usage and capability errors, warnings.
    Stderr,
}

/// Why all threads were sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum SampleCause {
    /// The command wrote its `n`th event line.
    EventLine {
        /// How many event lines it had written with this one (the first is 1).
        n: usize,
    },
    /// The periodic sample ([`LaunchSpec::sample_every`](crate::LaunchSpec::sample_every)),
    /// which tells a ring held while waiting from a short operation.
    Periodic,
}

/// What happened at one point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A traced system call returned: `result` is the raw kernel value (`-errno` on failure);
    /// `injected` when the harness made it fail (see [`FaultKind`]).
    Call {
        /// The call, decoded from its arguments at entry.
        call: Call,
        /// The kernel's return value: ≥ 0 on success, `-errno` on failure.
        result: i64,
        /// The harness made it fail; the kernel never ran it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        injected: bool,
    },
    /// An execve/execveat succeeded; the entry's threads show the sets after it. `former_tid`
    /// is the thread that called it when it was not the leader.
    Exec {
        /// The program, as the exec call named it (`?` when the call was not seen).
        path: String,
        /// Its arguments, program name first (empty when the call was not seen).
        argv: Vec<String>,
        /// The thread that called exec, when it was not the leader (its tid is gone now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        former_tid: Option<i32>,
    },
    /// A new thread of the entry's process (`tid` is the new thread).
    ThreadStart {
        /// The thread that created it, when the clone event was seen.
        from_tid: Option<i32>,
    },
    /// A new process of the tree (`pid` is the child; the root has one too, at launch).
    ProcessStart {
        /// The thread that forked it; `None` for the root (or when the fork was not seen).
        from_tid: Option<i32>,
        /// Created by vfork: the parent is suspended until the child execs or exits.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        vfork: bool,
    },
    /// A thread is about to exit (ptrace exit stop): the threads show its last sets.
    Exiting {
        /// The exit status ptrace announced, when it could be read.
        status: Option<Status>,
    },
    /// A thread other than the leader ended (it was reaped).
    ThreadExit {
        /// How it ended.
        status: Status,
    },
    /// A process ended (its leader was reaped).
    ProcessExit {
        /// How it ended: what the process's parent would see.
        status: Status,
    },
    /// The harness sent a signal to the command (to end the run, or on an interrupt).
    Signal {
        /// The signal's number (SIGTERM to the root, SIGKILL to the tree).
        signal: i32,
        /// Why, in words (`"12 event lines read"`, `"capring was interrupted"`).
        reason: String,
    },
    /// A snapshot of every thread of every live process of the tree.
    Sample {
        /// What triggered it.
        #[serde(flatten)]
        cause: SampleCause,
    },
    /// A condition imposed at launch.
    Condition {
        /// Which one.
        #[serde(flatten)]
        condition: Condition,
    },
}

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// CLOCK_MONOTONIC nanoseconds since launch.
    pub t_ns: u64,
    /// The process (thread group id) the entry is about; the root's for samples, signals and
    /// conditions, which are about the whole tree.
    pub pid: i32,
    /// The thread that acted (called, started, exited); the root's for whole-tree entries.
    pub tid: i32,
    /// What happened; serialized flat into the entry, tagged by `kind`.
    #[serde(flatten)]
    pub event: Event,
    /// Sets of all threads of the process (all live processes of the tree for samples),
    /// sorted by pid, tid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub threads: Vec<ThreadCaps>,
}

impl Entry {
    /// The sets of the acting thread, if it was readable.
    pub fn own(&self) -> Option<&ThreadCaps> {
        self.threads.iter().find(|t| t.tid == self.tid)
    }

    /// The threads of the entry's own process.
    pub fn process_threads(&self) -> impl Iterator<Item = &ThreadCaps> {
        self.threads.iter().filter(move |t| t.pid == self.pid)
    }

    /// The call of a `Call` entry, with its result and whether it was injected.
    pub fn call(&self) -> Option<(&Call, i64, bool)> {
        match &self.event {
            Event::Call {
                call,
                result,
                injected,
            } => Some((call, *result, *injected)),
            _ => None,
        }
    }

    /// A call that returned success (≥ 0).
    pub fn succeeded(&self) -> bool {
        self.call().is_some_and(|(_, r, _)| r >= 0)
    }

    /// A [`Event::Sample`]: its threads cover every live process of the tree, not only
    /// `pid`.
    pub fn is_sample(&self) -> bool {
        matches!(self.event, Event::Sample { .. })
    }
}

/// Everything seen about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    /// Its pid (thread group id).
    pub pid: i32,
    /// The tid that forked it (None for the root).
    pub parent_tid: Option<i32>,
    /// Every tid seen in it, in order of appearance.
    pub tids: Vec<i32>,
    /// comm after each exec, in order (the first is the comm when first seen).
    pub comms: Vec<String>,
    /// How it ended, when its exit was seen.
    pub exit: Option<Status>,
}

impl ProcessInfo {
    fn new(pid: i32) -> ProcessInfo {
        ProcessInfo {
            pid,
            parent_tid: None,
            tids: Vec::new(),
            comms: Vec::new(),
            exit: None,
        }
    }

    fn saw(&mut self, tid: i32, comm: Option<&str>) {
        if !self.tids.contains(&tid) {
            self.tids.push(tid);
        }
        if self.comms.is_empty() {
            if let Some(c) = comm {
                self.comms.push(c.to_string());
            }
        }
    }
}

/// The capability timeline of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The command line that was run (program first).
    #[serde(default)]
    pub command: Vec<String>,
    /// The pid of the launched command, the root of the tree (0 in timelines written before
    /// it was recorded).
    #[serde(default)]
    pub root_pid: i32,
    /// Every entry, in time order once [`Timeline::sort`] ran (the observer sorts).
    pub entries: Vec<Entry>,
}

impl Timeline {
    /// Sorts entries by time (stable: equal times keep their recording order).
    pub fn sort(&mut self) {
        self.entries.sort_by_key(|e| e.t_ns);
    }

    /// Processes in order of appearance.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut order: Vec<i32> = Vec::new();
        let mut map: HashMap<i32, ProcessInfo> = HashMap::new();
        fn get<'m>(
            map: &'m mut HashMap<i32, ProcessInfo>,
            order: &mut Vec<i32>,
            pid: i32,
        ) -> &'m mut ProcessInfo {
            if !map.contains_key(&pid) {
                order.push(pid);
            }
            map.entry(pid).or_insert_with(|| ProcessInfo::new(pid))
        }
        for e in &self.entries {
            if e.is_sample() {
                for t in &e.threads {
                    get(&mut map, &mut order, t.pid).saw(t.tid, Some(&t.comm));
                }
                continue;
            }
            let comm = e.own().map(|t| t.comm.clone());
            let p = get(&mut map, &mut order, e.pid);
            match &e.event {
                Event::ProcessStart { from_tid, .. } => {
                    p.parent_tid = *from_tid;
                    p.saw(e.tid, comm.as_deref());
                }
                Event::Exec { .. } => {
                    p.saw(e.tid, None);
                    p.comms.extend(comm);
                }
                Event::ProcessExit { status } => p.exit = Some(*status),
                _ => p.saw(e.tid, comm.as_deref()),
            }
        }
        order
            .into_iter()
            .filter_map(|pid| map.remove(&pid))
            .collect()
    }

    /// All `sample` entries.
    pub fn samples(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.is_sample())
    }

    /// Entries of traced calls, in time order.
    pub fn calls(&self) -> impl Iterator<Item = (&Entry, &Call, i64, bool)> {
        self.entries
            .iter()
            .filter_map(|e| e.call().map(|(c, r, i)| (e, c, r, i)))
    }

    /// Every recorded state of every thread of the tree, in time order. At the return of a
    /// capset the other threads of that process are still being switched (the broadcast is
    /// in flight), so only the acting thread counts there; samples, exit stops and other
    /// events count for all. Launch conditions are the harness's child, not the tracer;
    /// dead threads no longer hold credentials that matter. The checks and the thread lanes
    /// of the reports both read the run through this one rule.
    pub fn thread_states(&self) -> impl Iterator<Item = (u64, &ThreadCaps)> {
        self.entries
            .iter()
            .flat_map(|e| Self::states_of(e).map(move |t| (e.t_ns, t)))
    }

    /// The thread states one entry records, by the rule of [`Timeline::thread_states`].
    pub fn states_of(e: &Entry) -> impl Iterator<Item = &ThreadCaps> {
        let condition = matches!(e.event, Event::Condition { .. });
        let in_flight = matches!(e.call(), Some((Call::Capset { .. }, ..)));
        e.threads
            .iter()
            .filter(move |_| !condition)
            .filter(move |t| !in_flight || t.tid == e.tid)
            .filter(|t| !t.is_dead())
    }

    /// The last known sets of a thread at or before `t_ns` (from any entry that listed it).
    pub fn thread_at(&self, tid: i32, t_ns: u64) -> Option<&ThreadCaps> {
        self.entries
            .iter()
            .take_while(|e| e.t_ns <= t_ns)
            .filter_map(|e| e.threads.iter().find(|t| t.tid == tid))
            .last()
    }

    /// A copy fit for snapshots: pids and tids become ordinals 1, 2, … in order of first
    /// appearance (one numbering shared by pids and tids, so a leader's pid and tid stay equal),
    /// times become 0, thread lists are sorted by (pid, tid) ordinal, a thread's scheduling
    /// state is dropped. Everything else is kept.
    pub fn normalized(&self) -> Timeline {
        let mut ids = Ordinals::default();
        let mut out = Timeline {
            command: self.command.clone(),
            root_pid: ids.map(self.root_pid),
            entries: Vec::with_capacity(self.entries.len()),
        };
        for e in &self.entries {
            let mut n = e.clone();
            n.t_ns = 0;
            n.pid = ids.map(e.pid);
            n.tid = ids.map(e.tid);
            match &mut n.event {
                Event::ThreadStart { from_tid } | Event::ProcessStart { from_tid, .. } => {
                    *from_tid = from_tid.map(|t| ids.map(t));
                }
                Event::Exec { former_tid, .. } => *former_tid = former_tid.map(|t| ids.map(t)),
                _ => {}
            }
            for t in &mut n.threads {
                t.pid = ids.map(t.pid);
                t.tid = ids.map(t.tid);
                // Running or sleeping when read: scheduling, not behaviour.
                t.state = '?';
            }
            n.threads.sort_by_key(|t| (t.pid, t.tid));
            out.entries.push(n);
        }
        out
    }

    /// Human rendering, one line per entry.
    pub fn render(&self, cap_last_cap: u8) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s.push_str(&render_entry(e, cap_last_cap));
            s.push('\n');
        }
        s
    }
}

/// Ordinals 1, 2, … in order of first use (0 and negative ids are kept).
#[derive(Default)]
struct Ordinals(BTreeMap<i32, i32>);

impl Ordinals {
    fn map(&mut self, id: i32) -> i32 {
        if id <= 0 {
            return id;
        }
        let next = self.0.len() as i32 + 1;
        *self.0.entry(id).or_insert(next)
    }
}

/// `{cap_bpf, cap_perfmon}`; sets holding most of the kernel's capabilities print as
/// `all-{cap_sys_resource}` (relative to `0..=cap_last_cap`), `all` when complete.
pub fn compact(set: CapSet, cap_last_cap: u8) -> String {
    let all = CapSet::all_up_to(cap_last_cap);
    let extra = set.difference(all);
    if set.intersection(all).len() * 2 > all.len() {
        let missing = all.difference(set);
        let mut s = if missing.is_empty() {
            "all".to_string()
        } else {
            format!("all-{missing}")
        };
        if !extra.is_empty() {
            let _ = write!(s, "+{extra}");
        }
        s
    } else {
        set.to_string()
    }
}

fn sets_line(t: &ThreadCaps, last: u8) -> String {
    format!(
        "E={} P={} I={} B={} A={}",
        compact(t.effective, last),
        compact(t.permitted, last),
        compact(t.inheritable, last),
        compact(t.bounding, last),
        compact(t.ambient, last)
    )
}

/// The differences of `other` against `base`, as `E=… B=…` (only the sets that differ).
fn diff_line(base: &ThreadCaps, other: &ThreadCaps, last: u8) -> String {
    let mut parts = Vec::new();
    for (name, a, b) in [
        ("E", base.effective, other.effective),
        ("P", base.permitted, other.permitted),
        ("I", base.inheritable, other.inheritable),
        ("B", base.bounding, other.bounding),
        ("A", base.ambient, other.ambient),
    ] {
        if a != b {
            parts.push(format!("{name}={}", compact(b, last)));
        }
    }
    parts.join(" ")
}

/// Sets of one process's threads: the reference thread's sets and agreement.
fn process_summary(threads: &[&ThreadCaps], reference_tid: Option<i32>, last: u8) -> String {
    let Some(reference) = reference_tid
        .and_then(|tid| threads.iter().find(|t| t.tid == tid))
        .or_else(|| threads.first())
    else {
        return "(no threads readable)".to_string();
    };
    let mut s = sets_line(reference, last);
    let differ: Vec<&&ThreadCaps> = threads.iter().filter(|t| !t.same_sets(reference)).collect();
    if threads.len() > 1 && differ.is_empty() {
        let _ = write!(s, " [{} threads agree]", threads.len());
    } else if !differ.is_empty() {
        // Group the other threads by how they differ from the reference thread.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in &differ {
            let diff = diff_line(reference, t, last);
            let who = format!("tid {} ({})", t.tid, t.comm);
            match groups.iter_mut().find(|(d, _)| *d == diff) {
                Some((_, v)) => v.push(who),
                None => groups.push((diff, vec![who])),
            }
        }
        let list: Vec<String> = groups
            .into_iter()
            .map(|(d, who)| format!("{} {d}", who.join(", ")))
            .collect();
        let _ = write!(s, " [threads disagree: {}]", list.join("; "));
    }
    s
}

/// `-EPERM`-style rendering of a raw kernel result.
pub fn result_text(result: i64) -> String {
    if result < 0 && result > -4096 {
        match capring_spec::sys::errno_name(-result as i32) {
            Some(n) => format!("-{n}"),
            None => result.to_string(),
        }
    } else {
        result.to_string()
    }
}

/// What an entry says, without the thread sets.
pub fn entry_text(e: &Entry, last: u8) -> String {
    let by = |from: &Option<i32>| from.map(|t| format!(" (by tid {t})")).unwrap_or_default();
    match &e.event {
        Event::Call {
            call,
            result,
            injected,
        } => format!(
            "{} = {}{}",
            call.describe(last),
            result_text(*result),
            if *injected { " (injected)" } else { "" }
        ),
        Event::Exec {
            path,
            argv,
            former_tid,
        } => format!(
            "exec {path} {argv:?}{}",
            former_tid
                .map(|t| format!(" (called by tid {t})"))
                .unwrap_or_default()
        ),
        Event::ThreadStart { from_tid } => format!("thread_start{}", by(from_tid)),
        Event::ProcessStart { from_tid, vfork } => format!(
            "process_start {}{}",
            if *vfork { "vfork" } else { "fork" },
            by(from_tid)
        ),
        Event::Exiting { status } => match status {
            Some(s) => format!("exiting ({s})"),
            None => "exiting".to_string(),
        },
        Event::ThreadExit { status } => format!("thread_exit {status}"),
        Event::ProcessExit { status } => format!("process_exit {status}"),
        Event::Signal { signal, reason } => format!(
            "capring sent {} ({reason})",
            capring_spec::sys::signal_name(*signal)
        ),
        Event::Sample { cause } => match cause {
            SampleCause::EventLine { n } => format!("sample (event line {n})"),
            SampleCause::Periodic => "sample (periodic)".to_string(),
        },
        Event::Condition { condition } => match condition {
            Condition::BoundingDrop { caps } => {
                format!(
                    "condition: bounding_drop {} (before exec)",
                    compact(*caps, last)
                )
            }
            Condition::Fault { fault } => format!(
                "condition: {} -> EPERM (injected by capring)",
                fault.call_name()
            ),
            Condition::Paranoid { value } => {
                format!("condition: perf_event_paranoid={value}")
            }
        },
    }
}

/// One human line for an entry (more for samples: one per process).
pub fn render_entry(e: &Entry, last: u8) -> String {
    let ms = e.t_ns as f64 / 1e6;
    let mut s = format!("+{ms:>9.3} ms  pid {} tid {}  ", e.pid, e.tid);
    s.push_str(entry_text(e, last).trim_end());
    if e.is_sample() {
        let mut pids: Vec<i32> = e.threads.iter().map(|t| t.pid).collect();
        pids.dedup();
        for pid in pids {
            let threads: Vec<&ThreadCaps> = e.threads.iter().filter(|t| t.pid == pid).collect();
            let comm = threads.first().map(|t| t.comm.as_str()).unwrap_or("?");
            let _ = write!(
                s,
                "\n      pid {pid} ({comm}): {}",
                process_summary(&threads, Some(pid), last)
            );
        }
    } else if !e.threads.is_empty() {
        let threads: Vec<&ThreadCaps> = e.process_threads().collect();
        let comm = e
            .own()
            .map(|t| format!("[{}] ", t.comm))
            .unwrap_or_default();
        let _ = write!(
            s,
            "   {comm}{}",
            process_summary(&threads, Some(e.tid), last)
        );
    }
    s
}

/// `cap_net_raw` for a capability number, or the number.
pub fn cap_text(n: u64) -> String {
    match u8::try_from(n).ok().and_then(Cap::new) {
        Some(c) => c.name(),
        None => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(pid: i32, tid: i32, eff: CapSet) -> ThreadCaps {
        let mut t = ThreadCaps::empty(pid, tid);
        t.comm = format!("t{tid}");
        t.effective = eff;
        t.permitted = eff;
        t.bounding = CapSet::all_up_to(40);
        t
    }

    fn entry(t_ns: u64, pid: i32, tid: i32, event: Event, threads: Vec<ThreadCaps>) -> Entry {
        Entry {
            t_ns,
            pid,
            tid,
            event,
            threads,
        }
    }

    fn sample_timeline() -> Timeline {
        let bpf = CapSet::EMPTY.with(Cap::BPF);
        let all = CapSet::all_up_to(40);
        let capset = Event::Call {
            call: Call::Capset {
                target: 0,
                data: Some(CapData {
                    effective: bpf,
                    permitted: bpf,
                    inheritable: CapSet::EMPTY,
                }),
            },
            result: 0,
            injected: false,
        };
        let exec = Event::Exec {
            path: "/bin/x".into(),
            argv: vec!["x".into()],
            former_tid: None,
        };
        Timeline {
            command: vec!["x".into()],
            root_pid: 900,
            entries: vec![
                entry(100, 900, 900, exec, vec![tc(900, 900, all)]),
                entry(
                    200,
                    900,
                    905,
                    Event::ThreadStart {
                        from_tid: Some(900),
                    },
                    vec![tc(900, 900, all)],
                ),
                entry(
                    300,
                    900,
                    905,
                    capset,
                    vec![tc(900, 905, bpf), tc(900, 900, all)],
                ),
                entry(
                    400,
                    1234,
                    1234,
                    Event::ProcessStart {
                        from_tid: Some(905),
                        vfork: false,
                    },
                    vec![],
                ),
                entry(
                    500,
                    1234,
                    1234,
                    Event::ProcessExit {
                        status: Status::Code(0),
                    },
                    vec![],
                ),
            ],
        }
    }

    #[test]
    fn normalization_maps_ids_in_order_of_appearance_and_drops_times() {
        let n = sample_timeline().normalized();
        assert_eq!(n.root_pid, 1);
        assert!(n.entries.iter().all(|e| e.t_ns == 0));
        assert_eq!((n.entries[1].pid, n.entries[1].tid), (1, 2));
        assert_eq!(n.entries[1].event, Event::ThreadStart { from_tid: Some(1) });
        // threads sorted by (pid, tid) ordinal; names kept
        let tids: Vec<i32> = n.entries[2].threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![1, 2]);
        assert_eq!(n.entries[2].threads[1].comm, "t905");
        assert_eq!(n.entries[3].pid, 3);
        // idempotent, and stable under a different concrete numbering
        assert_eq!(n.normalized(), n);
        let mut shifted = sample_timeline();
        for e in &mut shifted.entries {
            e.pid += 7;
            e.tid += 7;
            if let Event::ThreadStart { from_tid } | Event::ProcessStart { from_tid, .. } =
                &mut e.event
            {
                *from_tid = from_tid.map(|t| t + 7);
            }
            for t in &mut e.threads {
                t.pid += 7;
                t.tid += 7;
            }
        }
        shifted.root_pid += 7;
        assert_eq!(shifted.normalized(), n);
    }

    #[test]
    fn json_round_trip_is_typed() {
        let t = sample_timeline();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""effective":["cap_bpf"]"#), "{json}");
        assert!(json.contains(r#""kind":"thread_start""#), "{json}");
        assert!(json.contains(r#""syscall":"capset""#), "{json}");
        let back: Timeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // Every variant survives the trip, the flattened ones included.
        let events = vec![
            Event::Call {
                call: Call::Prctl {
                    op: PrctlOp::CapbsetDrop,
                    arg: 39,
                },
                result: -1,
                injected: true,
            },
            Event::Call {
                call: Call::Bpf {
                    cmd: BpfCmd::PROG_LOAD,
                    prog_type: Some(17),
                    map_type: None,
                },
                result: 5,
                injected: false,
            },
            Event::Sample {
                cause: SampleCause::EventLine { n: 3 },
            },
            Event::Condition {
                condition: Condition::Fault {
                    fault: FaultKind::CapbsetDropEperm,
                },
            },
            Event::Signal {
                signal: 15,
                reason: "enough event lines".into(),
            },
            Event::Exiting {
                status: Some(Status::Signal(15)),
            },
        ];
        for event in events {
            let e = entry(1, 2, 3, event, vec![]);
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), e, "{json}");
        }
    }

    #[test]
    fn helpers_and_rendering() {
        let t = sample_timeline();
        let procs = t.processes();
        assert_eq!(
            procs.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![900, 1234]
        );
        assert_eq!(procs[0].tids, vec![900, 905]);
        assert_eq!(procs[1].parent_tid, Some(905));
        assert_eq!(procs[1].exit, Some(Status::Code(0)));
        assert_eq!(t.calls().count(), 1);
        assert_eq!(t.samples().count(), 0);
        let line = render_entry(&t.entries[2], 40);
        assert!(
            line.contains("capset(eff={cap_bpf} prm={cap_bpf} inh={}) = 0"),
            "{line}"
        );
        assert!(
            line.contains("threads disagree: tid 900 (t900) E=all P=all"),
            "{line}"
        );
        assert_eq!(
            compact(
                CapSet::all_up_to(40).difference(CapSet::EMPTY.with(Cap::SYS_RESOURCE)),
                40
            ),
            "all-{cap_sys_resource}"
        );
        assert_eq!(result_text(-1), "-EPERM");
    }

    #[test]
    fn call_classes() {
        let drop = Call::Prctl {
            op: PrctlOp::CapbsetDrop,
            arg: 21,
        };
        assert!(drop.changes_capabilities() && drop.is_drop() && !drop.is_privileged());
        let raise = Call::Prctl {
            op: PrctlOp::AmbientRaise,
            arg: 13,
        };
        assert!(raise.changes_capabilities() && !raise.is_drop());
        let lookup = Call::Bpf {
            cmd: BpfCmd(1),
            prog_type: None,
            map_type: None,
        };
        assert!(!lookup.is_privileged(), "map lookups act on a held fd");
        let load = Call::Bpf {
            cmd: BpfCmd::PROG_LOAD,
            prog_type: Some(17),
            map_type: None,
        };
        assert!(load.is_privileged() && !load.attaches());
        assert!(Call::Bpf {
            cmd: BpfCmd::LINK_CREATE,
            prog_type: None,
            map_type: None
        }
        .attaches());
        let raw = |domain, kind| Call::Socket {
            domain,
            kind,
            protocol: 0,
        };
        assert!(raw(libc::AF_INET, libc::SOCK_RAW).is_privileged());
        assert!(raw(libc::AF_PACKET, libc::SOCK_DGRAM).is_privileged());
        assert!(!raw(libc::AF_NETLINK, libc::SOCK_RAW).is_privileged());
        assert!(FaultKind::CapbsetDropEperm.hits(&drop));
        assert!(!FaultKind::CapsetEperm.hits(&drop));
        assert_eq!(
            serde_json::from_str::<BpfCmd>("\"bpf cmd 99\"").unwrap(),
            BpfCmd(99)
        );
    }
}
