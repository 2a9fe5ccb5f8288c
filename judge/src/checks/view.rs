//! Views of one recorded run that many checks share: the phases (configuration until the
//! tracer is ready, then the steady state), every thread state of the whole process tree, the
//! calls, and how long each thread stayed in a Requested ring.

use std::collections::{BTreeMap, BTreeSet};

use capring_observe::timeline::{Call, Entry, Event, FaultKind, ThreadCaps};
use capring_spec::caps::{Cap, CapSet};
use capring_spec::oracle::{Outcome, Rings};

use super::{na, Check};
use crate::plan::{Expectation, Plan};
use crate::profile::ReadyOn;
use crate::run::RunRecord;

/// How long a thread may stay in a Requested ring for its single operation. The operations
/// are a file open or two; under emulation and ptrace (every capset of every thread is a
/// traced stop) they take tens of milliseconds. A ring kept while waiting for events lasts
/// seconds.
pub const REQUESTED_MAX_NS: u64 = 500_000_000;

/// Two settled observations of one Requested stretch this far apart mean it is parked: a
/// periodic sample comes every 100 ms, so a ring kept while waiting is seen three times,
/// while an operation (a file open between two capsets) is over before. Not 100 ms: one
/// operation under emulation on a loaded machine was seen by two samples 104 ms apart (a
/// sample's stamp is taken before its /proc read, so it may precede the raise it shows).
pub const PARKED_SPREAD_NS: u64 = 250_000_000;

/// A stretch seen by settled observations at least this far apart, during which the tracer
/// wrote [`PARKED_LINES`] event lines, is parked too: the tracer went on handling events in
/// the Requested ring (in a run too short for the other two rules). One operation blocks the
/// thread that would write them; a line read late by the harness may fall inside, not three.
pub const PARKED_LINES_SPREAD_NS: u64 = 100_000_000;

/// See [`PARKED_LINES_SPREAD_NS`].
pub const PARKED_LINES: usize = 3;

/// One recorded state of one thread.
#[derive(Debug, Clone, Copy)]
pub struct State<'a> {
    pub t: u64,
    pub thread: &'a ThreadCaps,
}

/// A stretch of time one thread spent in one Requested set.
#[derive(Debug, Clone)]
pub struct Stretch {
    pub pid: i32,
    pub tid: i32,
    pub set: CapSet,
    pub from: u64,
    /// The first state after it (None: the run or the thread ended in it).
    pub to: Option<u64>,
    /// The last time the thread was seen in it.
    pub last_seen: u64,
    /// E before entering and after leaving.
    pub before: Option<CapSet>,
    pub after: Option<CapSet>,
}

impl Stretch {
    pub fn duration(&self) -> u64 {
        self.to.unwrap_or(self.last_seen) - self.from
    }

    /// Not a single operation: it lasted longer than one may, or settled observations
    /// (samples, exit stops) found the thread in it at moments at least
    /// [`PARKED_SPREAD_NS`] apart, or [`PARKED_LINES_SPREAD_NS`] apart with
    /// [`PARKED_LINES`] event lines (`lines`: their times) written in between: the state in
    /// which the tracer waits for events, however short the run. A no-op capset does not end
    /// a stretch.
    pub fn parked(&self, settled: &[u64], lines: &[u64]) -> bool {
        if self.duration() > REQUESTED_MAX_NS {
            return true;
        }
        let end = self.to.unwrap_or(self.last_seen);
        let seen: Vec<u64> = settled
            .iter()
            .copied()
            .filter(|t| *t >= self.from && *t <= end && self.to.is_none_or(|to| *t < to))
            .collect();
        let (Some(&a), Some(&b)) = (seen.first(), seen.last()) else {
            return false;
        };
        let written = lines.iter().filter(|t| **t > a && **t <= b).count();
        b - a >= PARKED_SPREAD_NS || (b - a >= PARKED_LINES_SPREAD_NS && written >= PARKED_LINES)
    }

    pub fn covers(&self, tid: i32, t: u64) -> bool {
        self.tid == tid && t >= self.from && self.to.is_none_or(|to| t < to)
    }
}

pub struct View<'a> {
    pub r: &'a RunRecord,
}

impl<'a> View<'a> {
    pub fn new(r: &'a RunRecord) -> View<'a> {
        View { r }
    }

    pub fn plan(&self) -> &'a Plan {
        &self.r.plan
    }

    pub fn entries(&self) -> impl Iterator<Item = &'a Entry> + 'a {
        self.r.observation.timeline.entries.iter()
    }

    /// Every traced call of the tree: (entry, call, result, injected).
    pub fn calls(&self) -> impl Iterator<Item = (&'a Entry, &'a Call, i64, bool)> + 'a {
        self.r.observation.timeline.calls()
    }

    /// Privileged calls (attempted, whatever their result).
    pub fn privileged(&self) -> impl Iterator<Item = (&'a Entry, &'a Call, i64)> + 'a {
        self.calls()
            .filter(|(_, c, _, _)| c.is_privileged())
            .map(|(e, c, r, _)| (e, c, r))
    }

    /// The first successful capset that lowered E below what the tracer started with: the
    /// first drop (bounding-set drops, or a capset that only clears I, may come before it,
    /// with E still = P).
    pub fn first_drop(&self) -> Option<&'a Entry> {
        let p = self.plan().facts.permitted;
        self.calls()
            .find(|(e, c, r, _)| {
                matches!(c, Call::Capset { .. })
                    && *r >= 0
                    && e.own().is_some_and(|t| t.effective != p)
            })
            .map(|(e, ..)| e)
    }

    /// The first successful capability-changing call of any kind.
    pub fn first_change(&self) -> Option<u64> {
        self.calls()
            .find(|(_, c, r, _)| c.changes_capabilities() && *r >= 0)
            .map(|(e, ..)| e.t_ns)
    }

    pub fn first_event(&self) -> Option<u64> {
        self.r.observation.first_event()
    }

    /// When configuration ended, by the profile's readiness rule.
    pub fn ready_at(&self) -> Option<u64> {
        let ready = &self.plan().ready;
        let obs = &self.r.observation;
        match ready.on {
            ReadyOn::FirstEvent => self.first_event(),
            ReadyOn::Pattern => {
                let re = regex::Regex::new(ready.pattern.as_deref()?).ok()?;
                obs.stream(ready.stream)
                    .find(|l| re.is_match(&l.text))
                    .map(|l| l.t_ns)
            }
            ReadyOn::FirstAttach => self
                .calls()
                .find(|(_, c, r, _)| c.attaches() && *r >= 0)
                .map(|(e, ..)| e.t_ns),
            ReadyOn::Delay => {
                let t = ready.delay_ms * 1_000_000;
                (obs.wall.as_nanos() as u64 >= t).then_some(t)
            }
        }
    }

    /// When configuration ended: at readiness, or earlier when the tracer already went from
    /// the Required ring to the Unprivileged one (its output may reach capring a little after
    /// it moved on: readiness seen on a pipe lags).
    pub fn config_end(&self, rings: &Rings) -> Option<u64> {
        let ready = self.ready_at();
        let mut in_required = false;
        let mut left = None;
        for s in self.states() {
            if s.thread.effective == rings.required {
                in_required = true;
            } else if in_required && s.thread.effective == rings.unprivileged {
                left = Some(s.t);
                break;
            }
        }
        match (ready, left) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (r, _) => r,
        }
    }

    /// Every recorded state of every thread of the tree, in time order (see
    /// [`capring_observe::timeline::Timeline::thread_states`]).
    pub fn states(&self) -> Vec<State<'a>> {
        self.r
            .observation
            .timeline
            .thread_states()
            .map(|(t, thread)| State { t, thread })
            .collect()
    }

    pub fn states_after(&self, t: u64) -> Vec<State<'a>> {
        self.states().into_iter().filter(|s| s.t >= t).collect()
    }

    /// Settled observations of the steady state: every thread of every sample taken after
    /// readiness, and each thread's last state at its exit stop.
    pub fn steady(&self) -> Vec<State<'a>> {
        let Some(ready) = self.ready_at() else {
            return Vec::new();
        };
        self.entries()
            .filter(|e| e.t_ns > ready)
            .flat_map(|e| {
                let all = e.is_sample();
                let exiting = matches!(e.event, Event::Exiting { .. });
                e.threads
                    .iter()
                    .filter(move |t| all || (exiting && t.tid == e.tid))
                    .filter(|t| !t.is_dead())
                    .map(move |t| State {
                        t: e.t_ns,
                        thread: t,
                    })
            })
            .collect()
    }

    /// The steady-state samples, each with the threads it saw.
    pub fn steady_samples(&self) -> Vec<(u64, Vec<&'a ThreadCaps>)> {
        let Some(ready) = self.ready_at() else {
            return Vec::new();
        };
        self.entries()
            .filter(|e| e.is_sample() && e.t_ns > ready && !e.threads.is_empty())
            .map(|e| (e.t_ns, e.threads.iter().collect()))
            .collect()
    }

    /// Each thread's stretches in one of `sets` (built from every recorded state).
    pub fn stretches(&self, sets: &[CapSet]) -> Vec<Stretch> {
        self.stretches_where(0, |e| sets.contains(&e))
    }

    /// Each thread's stretches, from `after` on, in any E that is none of `outer`.
    pub fn excursions(&self, after: u64, outer: &[CapSet]) -> Vec<Stretch> {
        self.stretches_where(after, |e| !outer.contains(&e))
    }

    fn stretches_where(&self, after: u64, inside: impl Fn(CapSet) -> bool) -> Vec<Stretch> {
        let mut by_tid: BTreeMap<i32, Vec<State>> = BTreeMap::new();
        for s in self.states().into_iter().filter(|s| s.t >= after) {
            by_tid.entry(s.thread.tid).or_default().push(s);
        }
        let mut out = Vec::new();
        for states in by_tid.values() {
            let mut open: Option<Stretch> = None;
            let mut prev: Option<CapSet> = None;
            for s in states {
                let e = s.thread.effective;
                match &mut open {
                    Some(st) if st.set == e => st.last_seen = s.t,
                    Some(st) => {
                        st.to = Some(s.t);
                        st.after = Some(e);
                        out.push(open.take().expect("open"));
                    }
                    None => {}
                }
                if open.is_none() && inside(e) && prev != Some(e) {
                    open = Some(Stretch {
                        pid: s.thread.pid,
                        tid: s.thread.tid,
                        set: e,
                        from: s.t,
                        to: None,
                        last_seen: s.t,
                        before: prev,
                        after: None,
                    });
                }
                prev = Some(e);
            }
            out.extend(open);
        }
        out
    }

    /// Times of the settled observations of `tid`: samples and its exit stop.
    pub fn settled_times(&self, tid: i32) -> Vec<u64> {
        self.entries()
            .filter(|e| {
                (e.is_sample() && e.threads.iter().any(|t| t.tid == tid))
                    || (matches!(e.event, Event::Exiting { .. }) && e.tid == tid)
            })
            .map(|e| e.t_ns)
            .collect()
    }

    /// Whether a stretch is a parked Requested ring (see [`Stretch::parked`]).
    pub fn parked(&self, st: &Stretch) -> bool {
        let lines: Vec<u64> = self
            .r
            .observation
            .lines
            .iter()
            .filter(|l| l.event)
            .map(|l| l.t_ns)
            .collect();
        st.parked(&self.settled_times(st.tid), &lines)
    }

    /// A set as reports show it: `{cap_bpf}`, or `all-{cap_sys_resource}` for most of them.
    pub fn set(&self, set: CapSet) -> String {
        capring_observe::timeline::compact(set, self.plan().facts.cap_last_cap)
    }

    /// `pid P tid T (comm) has E=… at +N ms`.
    pub fn state_text(&self, s: &State) -> String {
        format!(
            "pid {} tid {} ({}) has E={} at +{} ms",
            s.thread.pid,
            s.thread.tid,
            s.thread.comm,
            self.set(s.thread.effective),
            s.t / 1_000_000
        )
    }

    pub fn exit_text(&self) -> String {
        self.r.observation.exit.to_string()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.r.observation.exit.code
    }

    pub fn events_emitted(&self) -> usize {
        self.r.observation.event_count
    }

    /// Successful BPF_PROG_LOAD calls.
    pub fn programs_loaded(&self) -> usize {
        self.calls()
            .filter(|(_, c, r, _)| {
                matches!(c, Call::Bpf { cmd, .. } if *cmd == capring_observe::timeline::BpfCmd::PROG_LOAD)
                    && *r >= 0
            })
            .count()
    }

    /// Privileged calls that succeeded.
    pub fn privileged_successes(&self) -> usize {
        self.privileged().filter(|(_, _, r)| *r >= 0).count()
    }

    pub fn stderr_lines(&self) -> Vec<&'a str> {
        self.r
            .observation
            .stream(capring_observe::timeline::Stream::Stderr)
            .map(|l| l.text.as_str())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The rings of a run expected to drop (not bypassed), or why the clause does not apply.
    pub fn dropping(&self) -> Result<&'a Rings, Check> {
        match &self.plan().expectation {
            Expectation::Outcome(Outcome::Runs { bypass: true, .. }) => {
                Err(na("bypass run: nothing is dropped"))
            }
            Expectation::Outcome(Outcome::Runs { rings, .. }) => Ok(rings),
            _ => Err(na("the tracer is not expected to run in this scenario")),
        }
    }

    /// The calls the scenario's faults made fail.
    pub fn injected(&self) -> Vec<(&'a Entry, &'a Call)> {
        self.calls()
            .filter(|(_, _, _, injected)| *injected)
            .map(|(e, c, ..)| (e, c))
            .collect()
    }

    /// The faults of the scenario, or N/A when the scenario injects none, or N/A when the
    /// tracer never made the call that would fail (never a pass, never a failure).
    pub fn faults_hit(&self) -> Result<Vec<(&'a Entry, &'a Call)>, Check> {
        let faults = &self.plan().faults;
        if faults.is_empty() {
            return Err(na("no fault injected in this scenario"));
        }
        let hit = self.injected();
        if hit.is_empty() {
            let calls: Vec<&str> = faults.iter().map(|f| FaultKind::call_name(*f)).collect();
            return Err(na(format!(
                "the tracer never called {}: the injected fault was not exercised",
                calls.join(" or ")
            )));
        }
        Ok(hit)
    }

    /// A one-line account of why a run that should have reached the steady state did not.
    pub fn no_steady_state(&self) -> String {
        format!(
            "the tracer never reached the steady state ({}, {} event lines)",
            self.exit_text(),
            self.events_emitted()
        )
    }
}

/// The whole words of `text`, lowercased (`cap_sys_admin`, `sys_admin`, `execve`).
pub fn tokens(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// Whether `words` name `cap` as a whole word, in any spelling (`cap_bpf`, `CAP_BPF`, `bpf`).
pub fn names_cap(words: &BTreeSet<String>, cap: Cap) -> bool {
    let name = cap.name();
    words.contains(&name) || words.contains(name.trim_start_matches("cap_"))
}
