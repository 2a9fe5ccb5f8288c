//! Thread lanes: each thread's capability sets over time, cut into segments of unchanged
//! sets, each labelled with the ring it is in, plus the calls worth marking.
//!
//! Why a module of its own: the HTML report and the Perfetto export draw the same picture
//! (one lane per thread, grouped per process, coloured by ring, with credential calls,
//! privileged calls and injected faults marked). Both read it from one `Lanes` built here
//! once, so the two outputs cannot disagree about where a ring starts or which call is
//! marked. States come from [`Timeline::thread_states`], the rule the checks use.
//!
//! The ring of a state is read from the plan's expectation
//! ([`Expectation::Runs`]'s [`Rings`](capring_spec::oracle::Rings)): E equal to the
//! starting permitted set is Privileged, the Required ring's set is Required, an enabled
//! Requested set is Requested, an empty E (or the Unprivileged ring's set) is Unprivileged;
//! anything else is "other/excess". A bypass run is bypass all along. Without a plan
//! (`capring observe`) only Privileged (E = the first permitted set of the root) and
//! Unprivileged are known.

use std::collections::BTreeMap;

use capring_spec::caps::CapSet;
use capring_spec::oracle::Outcome;
use serde::Serialize;

use capring_judge::plan::{Expectation, Plan};
use capring_judge::results::ClauseResult;
use capring_observe::timeline::{compact, entry_text, Event, Status, ThreadCaps, Timeline};

/// The ring a thread's effective set is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ring {
    Privileged,
    Required,
    Requested,
    Unprivileged,
    Bypass,
    /// None of the rings the run is allowed: an excess, or a ring the plan does not know.
    Other,
}

impl Ring {
    pub const ALL: [Ring; 6] = [
        Ring::Privileged,
        Ring::Required,
        Ring::Requested,
        Ring::Unprivileged,
        Ring::Bypass,
        Ring::Other,
    ];

    /// Machine name (CSS class, JSON).
    pub fn key(self) -> &'static str {
        match self {
            Ring::Privileged => "privileged",
            Ring::Required => "required",
            Ring::Requested => "requested",
            Ring::Unprivileged => "unprivileged",
            Ring::Bypass => "bypass",
            Ring::Other => "other",
        }
    }

    /// Human name.
    pub fn label(self) -> &'static str {
        match self {
            Ring::Privileged => "Privileged",
            Ring::Required => "Required",
            Ring::Requested => "Requested",
            Ring::Unprivileged => "Unprivileged",
            Ring::Bypass => "bypass",
            Ring::Other => "other/excess",
        }
    }
}

/// The effective set of each ring in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingSets {
    /// P at start: E = P is the Privileged ring.
    pub start_permitted: Option<CapSet>,
    pub required: Option<CapSet>,
    pub requested: Vec<CapSet>,
    pub unprivileged: CapSet,
    pub bypass: bool,
}

impl RingSets {
    /// The rings the plan expects (only Privileged and Unprivileged when the tracer is not
    /// expected to run).
    pub fn from_plan(plan: &Plan) -> RingSets {
        let start_permitted = Some(plan.facts.permitted);
        match &plan.expectation {
            Expectation::Outcome(Outcome::Runs { bypass, rings, .. }) => RingSets {
                start_permitted,
                required: Some(rings.required),
                requested: rings.requested_sets(),
                unprivileged: rings.unprivileged,
                bypass: *bypass,
            },
            _ => RingSets {
                start_permitted,
                required: None,
                requested: Vec::new(),
                unprivileged: CapSet::EMPTY,
                bypass: false,
            },
        }
    }

    /// Without a plan: the root's first permitted set is Privileged, empty is Unprivileged.
    pub fn observed(timeline: &Timeline) -> RingSets {
        let start_permitted = timeline
            .thread_states()
            .find(|(_, t)| t.tid == timeline.root_pid)
            .or_else(|| timeline.thread_states().next())
            .map(|(_, t)| t.permitted);
        RingSets {
            start_permitted,
            required: None,
            requested: Vec::new(),
            unprivileged: CapSet::EMPTY,
            bypass: false,
        }
    }

    /// The ring of an effective set.
    pub fn ring(&self, effective: CapSet) -> Ring {
        if self.bypass {
            Ring::Bypass
        } else if effective.is_empty() || effective == self.unprivileged {
            Ring::Unprivileged
        } else if Some(effective) == self.start_permitted {
            Ring::Privileged
        } else if Some(effective) == self.required {
            Ring::Required
        } else if self.requested.contains(&effective) {
            Ring::Requested
        } else {
            Ring::Other
        }
    }
}

/// The five capability sets of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Sets {
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

impl Sets {
    pub fn of(t: &ThreadCaps) -> Sets {
        Sets {
            effective: t.effective,
            permitted: t.permitted,
            inheritable: t.inheritable,
            bounding: t.bounding,
            ambient: t.ambient,
        }
    }

    /// `[("E", "{cap_bpf}"), ("P", …), …]`, compact relative to `cap_last_cap`.
    pub fn named(&self, cap_last_cap: u8) -> [(&'static str, String); 5] {
        let c = |s| compact(s, cap_last_cap);
        [
            ("E", c(self.effective)),
            ("P", c(self.permitted)),
            ("I", c(self.inheritable)),
            ("B", c(self.bounding)),
            ("A", c(self.ambient)),
        ]
    }

    /// `E={…} P={…} I={…} B={…} A={…}` on one line per set.
    pub fn text(&self, cap_last_cap: u8) -> String {
        self.named(cap_last_cap)
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A stretch of time a thread held the same sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Segment {
    pub start_ns: u64,
    pub end_ns: u64,
    pub sets: Sets,
    pub ring: Ring,
}

/// One thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Lane {
    pub pid: i32,
    pub tid: i32,
    /// The last name the thread was seen with.
    pub comm: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub segments: Vec<Segment>,
}

/// One process and its threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ProcessLanes {
    pub pid: i32,
    pub parent_tid: Option<i32>,
    pub comms: Vec<String>,
    pub exit: Option<Status>,
    pub lanes: Vec<Lane>,
}

/// A call worth marking: it changes capabilities, needs a privilege, or failed by an
/// injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Mark {
    pub t_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub syscall: String,
    /// The call, its arguments and result, as `capring observe` prints it.
    pub text: String,
    pub credential: bool,
    pub privileged: bool,
    pub injected: bool,
    /// The calling thread's sets when the call returned, when readable.
    pub sets: Option<Sets>,
}

impl Mark {
    /// The classes of the mark, most telling first: `injected`, `credential`, `privileged`.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.injected {
            k.push("injected");
        }
        if self.credential {
            k.push("credential");
        }
        if self.privileged {
            k.push("privileged");
        }
        k
    }
}

/// A failing clause and the moment it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FailureMark {
    pub clause: String,
    pub t_ns: u64,
    /// The check named no moment: the mark stands at the end of the run.
    pub at_end: bool,
    /// The profile expected this failure.
    pub expected_failure: bool,
    pub label: &'static str,
    pub expected: String,
    pub observed: String,
}

/// The failures among a scenario's results, placed in a run that lasted `end_ns`.
pub(crate) fn failure_marks<'r>(
    results: impl IntoIterator<Item = &'r ClauseResult>,
    end_ns: u64,
) -> Vec<FailureMark> {
    results
        .into_iter()
        .filter(|r| r.verdict.is_failure())
        .map(|r| FailureMark {
            clause: r.clause.clone(),
            t_ns: r.at_ns.unwrap_or(end_ns).min(end_ns),
            at_end: r.at_ns.is_none(),
            expected_failure: r.expected_failure.is_some(),
            label: r.label(),
            expected: r.expected.clone(),
            observed: r.observed.clone(),
        })
        .collect()
}

/// Every thread's lane and the marked calls of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Lanes {
    pub processes: Vec<ProcessLanes>,
    pub marks: Vec<Mark>,
    /// The run's end (ns since launch): lanes still alive end here.
    pub end_ns: u64,
    pub root_pid: i32,
    pub cap_last_cap: u8,
}

/// When each thread ended, as far as the timeline says.
fn thread_ends(timeline: &Timeline) -> BTreeMap<i32, u64> {
    let mut ends: BTreeMap<i32, u64> = BTreeMap::new();
    let mut end = |tid: i32, t: u64| {
        let e = ends.entry(tid).or_insert(t);
        *e = (*e).min(t);
    };
    for e in &timeline.entries {
        match &e.event {
            Event::ThreadExit { .. } => end(e.tid, e.t_ns),
            Event::ProcessExit { .. } => end(e.pid, e.t_ns),
            Event::Exec {
                former_tid: Some(t),
                ..
            } => end(*t, e.t_ns),
            _ => {}
        }
    }
    ends
}

/// Cuts one thread's states into segments of unchanged sets.
fn segments<'t>(
    states: impl Iterator<Item = (u64, &'t ThreadCaps)>,
    lane_end: u64,
    rings: &RingSets,
) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (t, thread) in states {
        let sets = Sets::of(thread);
        if out.last().is_some_and(|s| s.sets == sets) {
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.end_ns = t;
        }
        out.push(Segment {
            start_ns: t,
            end_ns: t,
            sets,
            ring: rings.ring(sets.effective),
        });
    }
    if let Some(last) = out.last_mut() {
        last.end_ns = lane_end.max(last.start_ns);
    }
    out
}

impl Lanes {
    /// The lanes of a run that lasted `end_ns` (entries later than that extend it).
    pub fn build(timeline: &Timeline, rings: &RingSets, end_ns: u64, cap_last_cap: u8) -> Lanes {
        let end_ns = timeline
            .entries
            .iter()
            .map(|e| e.t_ns)
            .max()
            .unwrap_or(0)
            .max(end_ns);
        let ends = thread_ends(timeline);
        let mut first_seen: BTreeMap<i32, u64> = BTreeMap::new();
        let mut states: BTreeMap<i32, Vec<(u64, &ThreadCaps)>> = BTreeMap::new();
        let mut comm: BTreeMap<i32, String> = BTreeMap::new();
        for e in &timeline.entries {
            first_seen.entry(e.tid).or_insert(e.t_ns);
            for t in &e.threads {
                first_seen.entry(t.tid).or_insert(e.t_ns);
                comm.insert(t.tid, t.comm.clone());
            }
        }
        for (t, thread) in timeline.thread_states() {
            states.entry(thread.tid).or_default().push((t, thread));
        }
        // Entries are recorded in time order; a hand-made or merged timeline may not be.
        for v in states.values_mut() {
            v.sort_by_key(|(t, _)| *t);
        }
        let processes = processes_with_every_thread(timeline)
            .into_iter()
            .map(|p| {
                let process_end = p.exit.and(ends.get(&p.pid).copied());
                let lanes = p
                    .tids
                    .iter()
                    .map(|&tid| {
                        let start_ns = first_seen.get(&tid).copied().unwrap_or(0);
                        let lane_end = [ends.get(&tid).copied(), process_end]
                            .into_iter()
                            .flatten()
                            .min()
                            .unwrap_or(end_ns)
                            .max(start_ns);
                        let own = states.remove(&tid).unwrap_or_default().into_iter();
                        Lane {
                            pid: p.pid,
                            tid,
                            comm: comm.get(&tid).cloned().unwrap_or_default(),
                            start_ns,
                            end_ns: lane_end,
                            segments: segments(own, lane_end, rings),
                        }
                    })
                    .collect();
                ProcessLanes {
                    pid: p.pid,
                    parent_tid: p.parent_tid,
                    comms: p.comms,
                    exit: p.exit,
                    lanes,
                }
            })
            .collect();
        Lanes {
            processes,
            marks: marks(timeline, cap_last_cap),
            end_ns,
            root_pid: timeline.root_pid,
            cap_last_cap,
        }
    }

    /// The lanes of a recorded run, ringed by its plan.
    pub fn of_record(r: &capring_judge::run::RunRecord) -> Lanes {
        let obs = &r.observation;
        Lanes::build(
            &obs.timeline,
            &RingSets::from_plan(&r.plan),
            obs.wall.as_nanos() as u64,
            r.plan.facts.cap_last_cap,
        )
    }

    /// Every lane, process by process.
    pub fn lanes(&self) -> impl Iterator<Item = &Lane> {
        self.processes.iter().flat_map(|p| p.lanes.iter())
    }

    /// A set as the reports print it.
    pub fn set_text(&self, set: CapSet) -> String {
        compact(set, self.cap_last_cap)
    }
}

/// The processes of the timeline with every thread any entry lists (a thread that never
/// acted and was never sampled still held sets that an entry of its process showed).
fn processes_with_every_thread(timeline: &Timeline) -> Vec<capring_observe::timeline::ProcessInfo> {
    let mut procs = timeline.processes();
    for t in timeline.entries.iter().flat_map(|e| e.threads.iter()) {
        if procs.iter().any(|p| p.tids.contains(&t.tid)) {
            continue;
        }
        match procs.iter_mut().find(|p| p.pid == t.pid) {
            Some(p) => p.tids.push(t.tid),
            None => procs.push(capring_observe::timeline::ProcessInfo {
                pid: t.pid,
                parent_tid: None,
                tids: vec![t.tid],
                comms: vec![t.comm.clone()],
                exit: None,
            }),
        }
    }
    procs
}

/// The calls to mark, in time order.
fn marks(timeline: &Timeline, cap_last_cap: u8) -> Vec<Mark> {
    timeline
        .calls()
        .filter(|(_, c, _, injected)| c.changes_capabilities() || c.is_privileged() || *injected)
        .map(|(e, c, _, injected)| Mark {
            t_ns: e.t_ns,
            pid: e.pid,
            tid: e.tid,
            syscall: c.syscall().to_string(),
            text: entry_text(e, cap_last_cap),
            credential: c.changes_capabilities(),
            privileged: c.is_privileged(),
            injected,
            sets: e.own().map(Sets::of),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capring_observe::timeline::{Call, CapData, Entry};
    use capring_spec::caps::Cap;

    fn tc(pid: i32, tid: i32, e: CapSet, p: CapSet) -> ThreadCaps {
        let mut t = ThreadCaps::empty(pid, tid);
        t.comm = format!("t{tid}");
        t.effective = e;
        t.permitted = p;
        t
    }

    fn entry(t_ns: u64, tid: i32, event: Event, threads: Vec<ThreadCaps>) -> Entry {
        Entry {
            t_ns,
            pid: 10,
            tid,
            event,
            threads,
        }
    }

    fn capset(e: CapSet) -> Event {
        Event::Call {
            call: Call::Capset {
                target: 0,
                data: Some(CapData {
                    effective: e,
                    permitted: e,
                    inheritable: CapSet::EMPTY,
                }),
            },
            result: 0,
            injected: false,
        }
    }

    fn rings(all: CapSet, bpf: CapSet) -> RingSets {
        RingSets {
            start_permitted: Some(all),
            required: Some(bpf),
            requested: vec![CapSet::EMPTY.with(Cap::SYSLOG)],
            unprivileged: CapSet::EMPTY,
            bypass: false,
        }
    }

    /// Two threads: the leader drops all → {cap_bpf} → ∅ and exits at 900; thread 11 is
    /// born at 150, switched at 400 (seen at a sample), and lives to the end. The capset
    /// at 300 moves only the leader: thread 11 is still in flight there.
    fn timeline(all: CapSet, bpf: CapSet) -> Timeline {
        let none = CapSet::EMPTY;
        Timeline {
            command: vec!["x".into()],
            root_pid: 10,
            entries: vec![
                entry(
                    100,
                    10,
                    Event::Sample {
                        cause: capring_observe::timeline::SampleCause::Periodic,
                    },
                    vec![tc(10, 10, all, all)],
                ),
                entry(
                    150,
                    11,
                    Event::ThreadStart { from_tid: Some(10) },
                    vec![tc(10, 10, all, all), tc(10, 11, all, all)],
                ),
                entry(
                    200,
                    10,
                    capset(bpf),
                    vec![tc(10, 10, bpf, bpf), tc(10, 11, all, all)],
                ),
                entry(
                    300,
                    10,
                    capset(none),
                    vec![tc(10, 10, none, none), tc(10, 11, bpf, bpf)],
                ),
                entry(
                    400,
                    10,
                    Event::Sample {
                        cause: capring_observe::timeline::SampleCause::Periodic,
                    },
                    vec![tc(10, 10, none, none), tc(10, 11, none, none)],
                ),
                entry(
                    900,
                    10,
                    Event::ThreadExit {
                        status: Status::Code(0),
                    },
                    vec![],
                ),
            ],
        }
    }

    #[test]
    fn segments_follow_the_sets_and_rings() {
        let all = CapSet::all_up_to(40);
        let bpf = CapSet::EMPTY.with(Cap::BPF);
        let l = Lanes::build(&timeline(all, bpf), &rings(all, bpf), 1000, 40);
        assert_eq!(l.processes.len(), 1);
        let lanes: Vec<&Lane> = l.lanes().collect();
        assert_eq!(
            lanes.iter().map(|l| l.tid).collect::<Vec<_>>(),
            vec![10, 11]
        );
        let cut = |lane: &Lane| {
            lane.segments
                .iter()
                .map(|s| (s.start_ns, s.end_ns, s.ring))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cut(lanes[0]),
            vec![
                (100, 200, Ring::Privileged),
                (200, 300, Ring::Required),
                (300, 900, Ring::Unprivileged)
            ]
        );
        assert_eq!(lanes[0].end_ns, 900);
        // Thread 11's in-flight state at 300 is not a state: it goes from all to ∅ at 400.
        assert_eq!(
            cut(lanes[1]),
            vec![
                (150, 400, Ring::Privileged),
                (400, 1000, Ring::Unprivileged)
            ]
        );
        assert_eq!(lanes[1].start_ns, 150);
        assert_eq!(l.marks.len(), 2);
        assert!(l.marks.iter().all(|m| m.credential && !m.privileged));
    }

    #[test]
    fn ring_classes() {
        let all = CapSet::all_up_to(40);
        let bpf = CapSet::EMPTY.with(Cap::BPF);
        let r = rings(all, bpf);
        assert_eq!(r.ring(all), Ring::Privileged);
        assert_eq!(r.ring(bpf), Ring::Required);
        assert_eq!(r.ring(CapSet::EMPTY.with(Cap::SYSLOG)), Ring::Requested);
        assert_eq!(r.ring(CapSet::EMPTY), Ring::Unprivileged);
        assert_eq!(r.ring(bpf.with(Cap::SYS_ADMIN)), Ring::Other);
        let by = RingSets { bypass: true, ..r };
        assert_eq!(by.ring(CapSet::EMPTY), Ring::Bypass);
        let seen = RingSets::observed(&timeline(all, bpf));
        assert_eq!(seen.ring(all), Ring::Privileged);
        assert_eq!(seen.ring(bpf), Ring::Other);
    }
}
