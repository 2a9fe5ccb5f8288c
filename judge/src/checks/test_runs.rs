//! Builders of small hand-made runs, shared by the checks' unit tests ([`super::tests`],
//! [`super::cases`]): one copy, so a timeline reads the same wherever it is built.
//!
//! A run is a real [`Plan`] (a built-in scenario planned for a profile with every interface
//! and [`EnvFacts::example`]'s environment: 40 capabilities, all permitted) with a timeline
//! written by hand: the tracer is pid [`PID`], a second thread is [`OTHER`], times are in ms.

use std::path::Path;
use std::time::Duration;

use capring_observe::observer::{Line, Observation};
use capring_observe::timeline::{
    BpfCmd, Call, CapData, Condition, Entry, Event, FaultKind, PrctlOp, SampleCause, Stream,
    ThreadCaps,
};
use capring_spec::caps::{Cap, CapSet};
use capring_spec::facts::EnvFacts;

use super::{check, Check};
use crate::measured::{Measured, Measurement};
use crate::plan::{Options, Plan};
use crate::profile::Profile;
use crate::run::RunRecord;
use crate::scenario::{self, Scenario};

/// The tracer's process (and main thread).
pub(super) const PID: i32 = 100;
/// A second thread of the tracer.
pub(super) const OTHER: i32 = 101;
/// One millisecond in ns.
pub(super) const MS: u64 = 1_000_000;

/// A profile with every interface, whose binary exists everywhere.
const PROFILE: &str = r#"
name = "hand-made"
binary = "/bin/sh"
level = "strict"
[events]
select = ["--events", "{list}"]
default = ["execve", "openat"]
[capabilities]
help = ["--capabilities", "help"]
bypass_on = ["--capabilities", "bypass=1"]
bypass_off = ["--capabilities", "bypass=0"]
add = ["--capabilities", "add={caps}"]
drop = ["--capabilities", "drop={caps}"]
raw = ["--capabilities", "{value}"]
[environment]
bypass = { name = "CAPABILITIES_BYPASS" }
add = "CAPABILITIES_ADD"
drop = "CAPABILITIES_DROP"
[rules_engine]
binary = "/bin/sh"
"#;

/// A capability set from a list.
pub(super) fn caps(list: &[Cap]) -> CapSet {
    list.iter().copied().collect()
}

/// The oracle's Required ring for the default events here: {cap_bpf, cap_perfmon}.
pub(super) fn required() -> CapSet {
    caps(&[Cap::BPF, Cap::PERFMON])
}

/// Every capability the example environment has (E = P at start).
pub(super) fn all() -> CapSet {
    EnvFacts::example().permitted
}

/// The built-in scenario `name`, planned for the hand-made profile.
pub(super) fn plan_for(name: &str) -> Plan {
    planned(name, Options::default())
}

/// The built-in scenario `name`, planned with a measured table holding `sets` (preferred
/// first).
pub(super) fn measured_plan_for(name: &str, sets: &[CapSet]) -> Plan {
    let measure = |_: &EnvFacts, _: &[String]| {
        Measurement::Found(Measured {
            source: "hand-made.json".into(),
            minimal_sets: sets.to_vec(),
            derived: false,
            exhaustive: true,
        })
    };
    planned(
        name,
        Options {
            measure: Some(&measure),
            max_timeout: None,
        },
    )
}

fn planned(name: &str, options: Options<'_>) -> Plan {
    let profile = Profile::parse(PROFILE, Path::new("/tmp/hand-made.toml")).unwrap();
    let s: Scenario = scenario::builtin()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"));
    crate::plan::plan(&profile, &s, &EnvFacts::example(), options).unwrap()
}

/// A thread of the tracer with E = P = `effective` (I, B, A empty).
pub(super) fn thread(tid: i32, effective: CapSet) -> ThreadCaps {
    let mut t = ThreadCaps::empty(PID, tid);
    t.comm = "tracer".into();
    t.effective = effective;
    t.permitted = effective;
    t
}

/// A thread with E = `effective` and P = `permitted`.
pub(super) fn thread_ep(tid: i32, effective: CapSet, permitted: CapSet) -> ThreadCaps {
    ThreadCaps {
        permitted,
        ..thread(tid, effective)
    }
}

/// An entry at `t_ms` by `tid`.
pub(super) fn entry(t_ms: u64, tid: i32, event: Event, threads: Vec<ThreadCaps>) -> Entry {
    Entry {
        t_ns: t_ms * MS,
        pid: PID,
        tid,
        event,
        threads,
    }
}

/// A call by `tid` at `t_ms` returning `result`, after which it has E = P = `effective`.
pub(super) fn call(
    t_ms: u64,
    tid: i32,
    call: Call,
    result: i64,
    injected: bool,
    effective: CapSet,
) -> Entry {
    let event = Event::Call {
        call,
        result,
        injected,
    };
    entry(t_ms, tid, event, vec![thread(tid, effective)])
}

/// A capset asking for E = P = `effective`.
fn capset_call(effective: CapSet) -> Call {
    Call::Capset {
        target: 0,
        data: Some(CapData {
            effective,
            permitted: effective,
            inheritable: CapSet::EMPTY,
        }),
    }
}

/// A successful capset by `tid` at `t_ms` that leaves it with `effective`.
pub(super) fn capset(t_ms: u64, tid: i32, effective: CapSet) -> Entry {
    call(t_ms, tid, capset_call(effective), 0, false, effective)
}

/// A capset by the leader at `t_ms` that the harness made fail with EPERM; it still has
/// `effective`.
pub(super) fn capset_eperm(t_ms: u64, effective: CapSet) -> Entry {
    call(t_ms, PID, capset_call(CapSet::EMPTY), -1, true, effective)
}

/// A prctl(PR_CAPBSET_DROP, `cap`) by the leader at `t_ms` with `result` (injected when it
/// fails); it keeps E = P = `effective`.
pub(super) fn capbset_drop(t_ms: u64, cap: Cap, result: i64, effective: CapSet) -> Entry {
    let op = Call::Prctl {
        op: PrctlOp::CapbsetDrop,
        arg: u64::from(cap.number()),
    };
    call(t_ms, PID, op, result, result < 0, effective)
}

/// The launch condition that makes `fault`'s call fail.
pub(super) fn fault(fault: FaultKind) -> Entry {
    let condition = Condition::Fault { fault };
    entry(0, PID, Event::Condition { condition }, vec![])
}

/// A successful BPF_PROG_LOAD by the leader with `effective`.
pub(super) fn load(t_ms: u64, effective: CapSet) -> Entry {
    let bpf = Call::Bpf {
        cmd: BpfCmd::PROG_LOAD,
        prog_type: Some(17),
        map_type: None,
    };
    call(t_ms, PID, bpf, 5, false, effective)
}

/// A periodic sample of the leader (and `other`, when given).
pub(super) fn sample(t_ms: u64, leader: CapSet, other: Option<CapSet>) -> Entry {
    let mut threads = vec![thread(PID, leader)];
    threads.extend(other.map(|e| thread(OTHER, e)));
    sample_of(t_ms, threads)
}

/// A periodic sample that saw `threads`.
pub(super) fn sample_of(t_ms: u64, threads: Vec<ThreadCaps>) -> Entry {
    let event = Event::Sample {
        cause: SampleCause::Periodic,
    };
    entry(t_ms, PID, event, threads)
}

/// One line of output.
pub(super) fn line(t_ms: u64, stream: Stream, text: &str, event: bool) -> Line {
    Line {
        t_ns: t_ms * MS,
        stream,
        text: text.into(),
        event,
    }
}

/// Lines on stderr at 1 ms (not event lines).
pub(super) fn stderr(texts: &[&str]) -> Vec<Line> {
    texts
        .iter()
        .map(|l| line(1, Stream::Stderr, l, false))
        .collect()
}

/// A run of `plan` that observed `entries` and `lines`, exiting with `code` after 1 s.
pub(super) fn record(plan: Plan, entries: Vec<Entry>, lines: Vec<Line>, code: i32) -> RunRecord {
    let event_count = lines.iter().filter(|l| l.event).count();
    RunRecord {
        plan,
        observation: Observation {
            timeline: capring_observe::timeline::Timeline {
                command: vec!["tracer".into()],
                root_pid: PID,
                entries,
            },
            exit: capring_observe::launch::ExitInfo {
                code: Some(code),
                ..Default::default()
            },
            lines,
            lines_dropped: 0,
            event_count,
            root_pid: PID,
            wall: Duration::from_millis(1000),
        },
        programs_before: Default::default(),
        programs_after: Default::default(),
    }
}

/// Event lines at 10 ms, 20 ms, …
pub(super) fn events(n: u64) -> Vec<Line> {
    (1..=n)
        .map(|i| line(10 * i, Stream::Stdout, "{\"event\":1}", true))
        .collect()
}

/// A well-behaved steady-state run: Required at 1 ms, loads, Unprivileged at 5 ms, events
/// from 10 ms, samples of two threads every 100 ms.
pub(super) fn good_steady() -> Vec<Entry> {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend((1..=5).map(|i| sample(100 * i, CapSet::EMPTY, Some(CapSet::EMPTY))));
    e
}

/// A run of the usage scenario `name` that wrote `stderr` and exited with `code`.
pub(super) fn usage_run(name: &str, code: i32, lines: &[&str]) -> RunRecord {
    record(plan_for(name), vec![], stderr(lines), code)
}

/// The check's verdict for `clause` on `r`.
pub(super) fn verdict(clause: &str, r: &RunRecord) -> Check {
    check(clause, r)
}
