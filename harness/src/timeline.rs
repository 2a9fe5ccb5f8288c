//! The capability timeline: what every thread of an observed command held, and when it changed.
//!
//! A [`Timeline`] is plain data (serde JSON). [`crate::observer::run`] produces it; the checks read
//! it with the helpers below; snapshots use [`Timeline::normalized`].

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use capring_spec::caps::{Cap, CapSet};
use serde::{Deserialize, Serialize};

/// What happened at one point of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A traced credential syscall returned (`result`, and the sets of all threads of the process
    /// right after it).
    Syscall,
    /// A new thread appeared in an existing process (`from_tid` created it).
    ThreadStart,
    /// A new process appeared through fork/vfork/clone (`from_tid` created it).
    ProcessStart,
    /// A thread (not the last one) ended.
    ThreadExit,
    /// An execve/execveat succeeded; `threads` shows the sets after the exec.
    Exec,
    /// A process ended (its leader was reaped); `detail` is "code N" or "signal SIGX".
    ProcessExit,
    /// A snapshot of every thread of every live process ("stdout line N" or "periodic").
    Sample,
    /// A fault injected or a condition imposed at launch (e.g. capset -> EPERM).
    Fault,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Syscall => "syscall",
            Kind::ThreadStart => "thread_start",
            Kind::ProcessStart => "process_start",
            Kind::ThreadExit => "thread_exit",
            Kind::Exec => "exec",
            Kind::ProcessExit => "process_exit",
            Kind::Sample => "sample",
            Kind::Fault => "fault",
        }
    }
}

/// The capability state of one thread, read from `/proc/PID/task/TID/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCaps {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
    /// Real, effective, saved and filesystem uid (`Uid:` line), when readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uids: Option<[u32; 4]>,
}

impl ThreadCaps {
    /// True when the five capability sets (not the names or ids) are equal.
    pub fn same_sets(&self, other: &ThreadCaps) -> bool {
        self.effective == other.effective
            && self.permitted == other.permitted
            && self.inheritable == other.inheritable
            && self.bounding == other.bounding
            && self.ambient == other.ambient
    }
}

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// CLOCK_MONOTONIC nanoseconds since launch.
    pub t_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub kind: Kind,
    /// The syscall name for `syscall` entries (and `execve`/`execveat` for `exec` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Raw kernel return value (`-errno` on failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// The tid that created this thread/process (`thread_start`, `process_start`), or the tid
    /// that called exec when it was not the leader (`exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_tid: Option<i32>,
    /// Sets of all threads of the process (all live processes for `sample`), sorted by pid, tid.
    #[serde(default)]
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

    /// Threads of this entry's process whose sets differ from the acting thread's.
    pub fn disagreeing(&self) -> Vec<&ThreadCaps> {
        match self.own() {
            Some(own) => self
                .process_threads()
                .filter(|t| !t.same_sets(own))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Everything seen about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: i32,
    /// The tid that forked it (None for the root).
    pub parent_tid: Option<i32>,
    /// Every tid seen in it, in order of appearance.
    pub tids: Vec<i32>,
    /// comm after each exec, in order (the first is the comm when first seen).
    pub comms: Vec<String>,
    /// "code N" / "signal SIGX", when its exit was seen.
    pub exit: Option<String>,
}

/// The capability timeline of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The command line that was run (program first).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub root_pid: i32,
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
        let mut touch = |pid: i32, map: &mut HashMap<i32, ProcessInfo>| {
            map.entry(pid).or_insert_with(|| {
                order.push(pid);
                ProcessInfo {
                    pid,
                    parent_tid: None,
                    tids: Vec::new(),
                    comms: Vec::new(),
                    exit: None,
                }
            });
        };
        for e in &self.entries {
            if e.kind == Kind::Sample {
                for t in &e.threads {
                    touch(t.pid, &mut map);
                    let p = map.get_mut(&t.pid).unwrap();
                    if !p.tids.contains(&t.tid) {
                        p.tids.push(t.tid);
                    }
                    if p.comms.is_empty() {
                        p.comms.push(t.comm.clone());
                    }
                }
                continue;
            }
            touch(e.pid, &mut map);
            let p = map.get_mut(&e.pid).unwrap();
            if !p.tids.contains(&e.tid) {
                p.tids.push(e.tid);
            }
            let comm = e.own().map(|t| t.comm.clone());
            match e.kind {
                Kind::ProcessStart => p.parent_tid = e.from_tid,
                Kind::Exec => {
                    if let Some(c) = comm {
                        p.comms.push(c);
                    }
                }
                Kind::ProcessExit => p.exit = Some(e.detail.clone()),
                _ => {
                    if p.comms.is_empty() {
                        if let Some(c) = comm {
                            p.comms.push(c);
                        }
                    }
                }
            }
        }
        order
            .into_iter()
            .map(|pid| map.remove(&pid).unwrap())
            .collect()
    }

    /// All `sample` entries.
    pub fn samples(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::Sample)
            .collect()
    }

    /// Entries for syscall `name` (`syscall` entries, plus `exec` entries for execve/execveat).
    pub fn syscalls(&self, name: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.syscall.as_deref() == Some(name))
            .collect()
    }

    /// Entries of one kind.
    pub fn of_kind(&self, kind: Kind) -> Vec<&Entry> {
        self.entries.iter().filter(|e| e.kind == kind).collect()
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
    /// times become 0, thread lists are sorted by (pid, tid) ordinal. Names, details and results
    /// are kept.
    pub fn normalized(&self) -> Timeline {
        let mut ids: BTreeMap<i32, i32> = BTreeMap::new();
        let mut next = 1;
        let mut map = |id: i32, ids: &mut BTreeMap<i32, i32>| -> i32 {
            if id <= 0 {
                return id;
            }
            *ids.entry(id).or_insert_with(|| {
                let n = next;
                next += 1;
                n
            })
        };
        let mut out = Timeline {
            command: self.command.clone(),
            root_pid: 0,
            entries: Vec::new(),
        };
        out.root_pid = map(self.root_pid, &mut ids);
        for e in &self.entries {
            let mut n = e.clone();
            n.t_ns = 0;
            n.pid = map(e.pid, &mut ids);
            n.tid = map(e.tid, &mut ids);
            n.from_tid = e.from_tid.map(|t| map(t, &mut ids));
            for t in &mut n.threads {
                t.pid = map(t.pid, &mut ids);
                t.tid = map(t.tid, &mut ids);
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
    if threads.len() > 1 {
        if differ.is_empty() {
            let _ = write!(s, " [{} threads agree]", threads.len());
        } else {
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
    }
    s
}

/// `-EPERM`-style rendering of a raw kernel result.
pub fn result_text(result: i64) -> String {
    if result < 0 && result > -4096 {
        match errno_name(-result as i32) {
            Some(n) => format!("-{n}"),
            None => result.to_string(),
        }
    } else {
        result.to_string()
    }
}

pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSUP => "EOPNOTSUPP",
        _ => return None,
    })
}

/// One human line for an entry.
pub fn render_entry(e: &Entry, last: u8) -> String {
    let ms = e.t_ns as f64 / 1e6;
    let mut s = format!("+{ms:>9.3} ms  pid {} tid {}  ", e.pid, e.tid);
    let what = match e.kind {
        Kind::Syscall => format!(
            "{}({}) = {}",
            e.syscall.as_deref().unwrap_or("?"),
            e.detail,
            e.result.map(result_text).unwrap_or_else(|| "?".into())
        ),
        Kind::Exec => format!(
            "exec {}{}",
            e.detail,
            e.from_tid
                .map(|t| format!(" (called by tid {t})"))
                .unwrap_or_default()
        ),
        Kind::ThreadStart => format!("thread_start{}", by(e.from_tid)),
        Kind::ProcessStart => format!("process_start {}{}", e.detail, by(e.from_tid)),
        Kind::ThreadExit => format!("thread_exit {}", e.detail),
        Kind::ProcessExit => format!("process_exit {}", e.detail),
        Kind::Sample => format!("sample ({})", e.detail),
        Kind::Fault => format!("fault {}", e.detail),
    };
    s.push_str(what.trim_end());
    match e.kind {
        Kind::Sample => {
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
        }
        Kind::ProcessExit | Kind::ThreadExit if e.threads.is_empty() => {}
        _ => {
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
    }
    s
}

fn by(from: Option<i32>) -> String {
    from.map(|t| format!(" (by tid {t})")).unwrap_or_default()
}

/// `cap_net_raw` or the set, for details.
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
        ThreadCaps {
            pid,
            tid,
            comm: format!("t{tid}"),
            effective: eff,
            permitted: eff,
            inheritable: CapSet::EMPTY,
            bounding: CapSet::all_up_to(40),
            ambient: CapSet::EMPTY,
            uids: None,
        }
    }

    fn entry(t_ns: u64, pid: i32, tid: i32, kind: Kind, threads: Vec<ThreadCaps>) -> Entry {
        Entry {
            t_ns,
            pid,
            tid,
            kind,
            syscall: None,
            detail: String::new(),
            result: None,
            from_tid: None,
            threads,
        }
    }

    fn sample_timeline() -> Timeline {
        let bpf = CapSet::EMPTY.with(Cap::BPF);
        let mut capset = entry(
            300,
            900,
            905,
            Kind::Syscall,
            vec![tc(900, 905, bpf), tc(900, 900, CapSet::all_up_to(40))],
        );
        capset.syscall = Some("capset".into());
        capset.detail = "eff={cap_bpf} prm={cap_bpf} inh={}".into();
        capset.result = Some(0);
        let mut start = entry(
            200,
            900,
            905,
            Kind::ThreadStart,
            vec![tc(900, 900, CapSet::all_up_to(40))],
        );
        start.from_tid = Some(900);
        let mut fork = entry(400, 1234, 1234, Kind::ProcessStart, vec![]);
        fork.from_tid = Some(905);
        Timeline {
            command: vec!["x".into()],
            root_pid: 900,
            entries: vec![
                entry(
                    100,
                    900,
                    900,
                    Kind::Exec,
                    vec![tc(900, 900, CapSet::all_up_to(40))],
                ),
                start,
                capset,
                fork,
                entry(500, 1234, 1234, Kind::ProcessExit, vec![]),
            ],
        }
    }

    #[test]
    fn normalization_maps_ids_in_order_of_appearance_and_drops_times() {
        let n = sample_timeline().normalized();
        assert_eq!(n.root_pid, 1);
        assert!(n.entries.iter().all(|e| e.t_ns == 0));
        assert_eq!(
            (n.entries[1].pid, n.entries[1].tid, n.entries[1].from_tid),
            (1, 2, Some(1))
        );
        // threads sorted by (pid, tid) ordinal; names kept
        let tids: Vec<i32> = n.entries[2].threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![1, 2]);
        assert_eq!(n.entries[2].threads[1].comm, "t905");
        assert_eq!(n.entries[2].detail, "eff={cap_bpf} prm={cap_bpf} inh={}");
        assert_eq!((n.entries[3].pid, n.entries[3].from_tid), (3, Some(2)));
        // idempotent, and stable under a different concrete numbering
        assert_eq!(n.normalized(), n);
        let mut shifted = sample_timeline();
        for e in &mut shifted.entries {
            e.pid += 7;
            e.tid += 7;
            e.from_tid = e.from_tid.map(|t| t + 7);
            for t in &mut e.threads {
                t.pid += 7;
                t.tid += 7;
            }
        }
        shifted.root_pid += 7;
        assert_eq!(shifted.normalized(), n);
    }

    #[test]
    fn json_round_trip_uses_names() {
        let t = sample_timeline();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""effective":["cap_bpf"]"#), "{json}");
        assert!(json.contains(r#""kind":"thread_start""#), "{json}");
        let back: Timeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
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
        assert_eq!(t.syscalls("capset").len(), 1);
        assert!(t.samples().is_empty());
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
}
