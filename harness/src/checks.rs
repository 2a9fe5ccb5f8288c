//! The checks: one function per clause id of `spec/SPEC.md`, judging a [`RunRecord`].
//!
//! Every check reads only the timeline, the exit status, the output and the kernel's program
//! list: the tracer is a black box. Each verdict carries what the spec expected and what was
//! observed, in capability names.

use capring_spec::caps::{Cap, CapSet};
use capring_spec::clauses::{self, Level};
use serde::Serialize;

use crate::run::{Expectation, RunRecord};
use crate::timeline::{Entry, Kind, ThreadCaps};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    NotApplicable,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub verdict: Verdict,
    pub expected: String,
    pub observed: String,
}

fn pass(expected: impl Into<String>, observed: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::Pass,
        expected: expected.into(),
        observed: observed.into(),
    }
}

fn fail(expected: impl Into<String>, observed: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::Fail,
        expected: expected.into(),
        observed: observed.into(),
    }
}

fn na(why: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::NotApplicable,
        expected: String::new(),
        observed: why.into(),
    }
}

fn judge(ok: bool, expected: impl Into<String>, observed: impl Into<String>) -> Check {
    if ok {
        pass(expected, observed)
    } else {
        fail(expected, observed)
    }
}

/// Views of one run used by many checks.
struct View<'a> {
    r: &'a RunRecord,
    pid: i32,
}

impl<'a> View<'a> {
    fn new(r: &'a RunRecord) -> View<'a> {
        View {
            r,
            pid: r.observation.root_pid,
        }
    }

    fn entries(&self) -> impl Iterator<Item = &'a Entry> + '_ {
        self.r.observation.timeline.entries.iter()
    }

    /// Entries made by the tracer process itself.
    fn own_syscalls(&self) -> impl Iterator<Item = &'a Entry> + '_ {
        let pid = self.pid;
        self.entries()
            .filter(move |e| e.pid == pid && e.kind == Kind::Syscall)
    }

    fn is_cap_change(e: &Entry) -> bool {
        match e.syscall.as_deref() {
            Some("capset") => true,
            Some("prctl") => {
                e.detail.starts_with("PR_CAPBSET_DROP")
                    || e.detail.contains("CLEAR_ALL")
                    || e.detail.contains("LOWER")
            }
            _ => false,
        }
    }

    fn is_privileged(e: &Entry) -> bool {
        matches!(e.syscall.as_deref(), Some("bpf") | Some("perf_event_open"))
    }

    fn cap_changes(&self) -> Vec<&'a Entry> {
        self.own_syscalls()
            .filter(|e| Self::is_cap_change(e))
            .collect()
    }

    /// Time of the first successful capset: the first change of E (bounding-set drops may
    /// come before it, with E still = P).
    fn first_change(&self) -> Option<u64> {
        self.own_syscalls()
            .find(|e| e.syscall.as_deref() == Some("capset") && e.result == Some(0))
            .map(|e| e.t_ns)
    }

    /// The acting thread's sets after the first successful capset.
    fn first_capset_state(&self) -> Option<&'a ThreadCaps> {
        self.own_syscalls()
            .find(|e| e.syscall.as_deref() == Some("capset") && e.result == Some(0))
            .and_then(|e| e.own())
    }

    fn first_event(&self) -> Option<u64> {
        self.r.observation.stdout_lines.first().map(|(t, _)| *t)
    }

    /// (time, thread) for every recorded state of the tracer's threads. At the return of a
    /// capset, the other threads are still being switched (the broadcast is in flight), so
    /// only the acting thread's state counts there; samples and other events count for all.
    fn states(&self) -> Vec<(u64, &'a ThreadCaps)> {
        let pid = self.pid;
        self.entries()
            .filter(|e| e.kind != Kind::Fault)
            .flat_map(|e| {
                let in_flight = e.kind == Kind::Syscall && e.syscall.as_deref() == Some("capset");
                e.threads
                    .iter()
                    .filter(move |t| t.pid == pid && (!in_flight || t.tid == e.tid))
                    .map(move |t| (e.t_ns, t))
            })
            .collect()
    }

    fn states_after(&self, t: u64) -> Vec<(u64, &'a ThreadCaps)> {
        self.states()
            .into_iter()
            .filter(|(at, _)| *at >= t)
            .collect()
    }

    /// Samples of the tracer's threads (settled observations), in time order.
    fn samples(&self) -> Vec<(u64, Vec<&'a ThreadCaps>)> {
        let pid = self.pid;
        self.entries()
            .filter(|e| e.kind == Kind::Sample)
            .map(|e| {
                (
                    e.t_ns,
                    e.threads
                        .iter()
                        .filter(|t| t.pid == pid)
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, t)| !t.is_empty())
            .collect()
    }

    fn steady_samples(&self) -> Vec<(u64, Vec<&'a ThreadCaps>)> {
        match self.first_event() {
            Some(t0) => self
                .samples()
                .into_iter()
                .filter(|(t, _)| *t > t0)
                .collect(),
            None => Vec::new(),
        }
    }

    /// The last recorded state of each tracer thread.
    fn final_states(&self) -> Vec<&'a ThreadCaps> {
        let mut last: std::collections::BTreeMap<i32, &ThreadCaps> = Default::default();
        for (_, t) in self.states() {
            last.insert(t.tid, t);
        }
        last.into_values().collect()
    }

    fn exit_code(&self) -> Option<i32> {
        self.r.observation.exit.code
    }

    fn exit_text(&self) -> String {
        let x = &self.r.observation.exit;
        match (x.code, x.signal) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(s)) => format!(
                "killed by signal {s}{}",
                if x.timed_out { " (timeout)" } else { "" }
            ),
            _ => "no exit seen".into(),
        }
    }

    fn events_emitted(&self) -> usize {
        self.r.observation.stdout_lines.len()
    }

    fn programs_loaded(&self) -> usize {
        self.own_syscalls()
            .filter(|e| {
                e.syscall.as_deref() == Some("bpf")
                    && e.detail.starts_with("BPF_PROG_LOAD")
                    && e.result.is_some_and(|r| r >= 0)
            })
            .count()
    }

    fn rings(&self) -> Option<(&'a capring_spec::oracle::Rings, bool)> {
        match &self.r.expectation {
            Expectation::Runs { rings, bypass, .. } => Some((rings, *bypass)),
            _ => None,
        }
    }

    fn stderr_lines(&self) -> Vec<&'a str> {
        self.r
            .observation
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

fn names(set: CapSet) -> String {
    set.to_string()
}

/// Does the run look like configuration failed because of a dropped declared need?
fn config_failed_on_drop(v: &View, rings: &capring_spec::oracle::Rings) -> bool {
    !rings.required_needs.is_empty()
        && v.exit_code() == Some(v.r.capability_code)
        && v.events_emitted() == 0
}

fn allowed_sets_text(sets: &[CapSet]) -> String {
    sets.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The rings of a run that is expected to run and to drop (not bypassed), or why the
/// clause does not apply.
fn dropping_rings<'a>(v: &View<'a>) -> Result<&'a capring_spec::oracle::Rings, Check> {
    match v.rings() {
        None => Err(na("the tracer is not expected to run")),
        Some((_, true)) => Err(na("bypass run")),
        Some((rings, false)) => Ok(rings),
    }
}

// ----- rings ---------------------------------------------------------------------------------

fn ring_privileged_bypass_only(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let Some(first) = v.first_change() else {
        return fail(
            "a first capability drop before anything privileged",
            "no capability change at all",
        );
    };
    if let Some(e) = v
        .own_syscalls()
        .find(|e| View::is_privileged(e) && e.t_ns < first)
    {
        return fail(
            "no bpf/perf_event_open before the first drop",
            format!(
                "{} {} at +{} µs, before the first drop",
                e.syscall.as_deref().unwrap_or("?"),
                e.detail,
                e.t_ns / 1000
            ),
        );
    }
    let full = rings.privileged;
    if rings.required != full {
        if let Some((t, th)) = v
            .states_after(first)
            .into_iter()
            .skip(1)
            .find(|(_, t)| t.effective == full && !full.is_empty())
        {
            return fail(
                "no thread back to E=P after the first drop",
                format!("tid {} has E=P at +{} µs", th.tid, t / 1000),
            );
        }
    }
    pass(
        "first drop before any privileged call; never E=P again",
        "as expected",
    )
}

fn ring_required_exact(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let Some(state) = v.first_capset_state() else {
        return fail(
            format!("E={}", names(rings.required)),
            "no successful capset",
        );
    };
    let mut bad_calls = Vec::new();
    let t_event = v.first_event().unwrap_or(u64::MAX);
    for e in v
        .own_syscalls()
        .filter(|e| View::is_privileged(e) && e.t_ns < t_event)
    {
        if let Some(own) = e.own() {
            if own.effective != rings.required
                && !rings.allowed_effective().contains(&own.effective)
            {
                bad_calls.push(format!(
                    "{} with E={}",
                    e.syscall.as_deref().unwrap_or("?"),
                    own.effective
                ));
            }
        }
    }
    let ok = state.effective == rings.required && bad_calls.is_empty();
    judge(
        ok,
        format!("E={}", names(rings.required)),
        if bad_calls.is_empty() {
            format!("E={}", names(state.effective))
        } else {
            format!("E={}; {}", names(state.effective), bad_calls.join("; "))
        },
    )
}

fn ring_required_config_only(v: &View) -> Check {
    let Some((rings, bypass)) = v.rings() else {
        return na("the tracer is not expected to run");
    };
    if bypass || rings.required.is_empty() {
        return na("no Required ring to leave");
    }
    let Some(t0) = v.first_event() else {
        return fail("events after configuration", "no event emitted");
    };
    let steady_ok = rings
        .allowed_effective()
        .into_iter()
        .filter(|s| *s != rings.required)
        .collect::<Vec<_>>();
    if steady_ok.contains(&rings.required) {
        return na("the Required ring equals a Requested singleton here");
    }
    match v
        .states_after(t0)
        .into_iter()
        .find(|(_, t)| t.effective == rings.required)
    {
        Some((t, th)) => fail(
            format!(
                "no thread with E={} after the first event",
                names(rings.required)
            ),
            format!(
                "tid {} still has it at +{} µs (first event at +{} µs)",
                th.tid,
                t / 1000,
                t0 / 1000
            ),
        ),
        None => pass("Required ring left before the first event", "left"),
    }
}

fn ring_requested_single(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let enabled = rings.requested_caps();
    let Some(first) = v.first_change() else {
        return fail("capability changes", "none");
    };
    let mut seen = CapSet::EMPTY;
    for (_, t) in v.states_after(first) {
        let e = t.effective;
        if e == rings.unprivileged || e == rings.required {
            continue;
        }
        if rings.requested_sets().contains(&e) {
            seen = seen.union(e);
            continue;
        }
        return fail(
            format!(
                "a Requested ring is one of {}",
                allowed_sets_text(&rings.requested_sets())
            ),
            format!("tid {} had E={}", t.tid, e),
        );
    }
    if enabled.is_empty() {
        return pass("no Requested operation enabled", "none raised");
    }
    if seen.is_empty() {
        return na(format!(
            "no Requested ring was observed (enabled: {enabled}); the operation may not have happened"
        ));
    }
    pass(
        format!("single capabilities among {enabled}"),
        format!("raised {seen}, one at a time"),
    )
}

fn ring_requested_returns(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let singles: Vec<CapSet> = rings.requested_sets();
    // At the end of the run, no thread may be parked in a Requested ring.
    for t in v.final_states() {
        if singles.contains(&t.effective) && t.effective != rings.required {
            return fail(
                "every thread back to its ring after the operation",
                format!("tid {} ends with E={}", t.tid, t.effective),
            );
        }
    }
    // Nor may a thread sit in one Requested ring across two steady samples 50 ms apart
    // without any capset in between: back-to-back operations (one per new program) each
    // return, a parked ring does not. Capsets are timestamped at their exit stop, so one
    // recorded a little after the second sample (250 ms allowance: emulated guests are slow)
    // still counts as in between.
    const PARKED_NS: u64 = 50_000_000;
    const LAG_NS: u64 = 250_000_000;
    let moved = |tid: i32, from: u64, to: u64| {
        v.own_syscalls().any(|e| {
            e.tid == tid
                && e.syscall.as_deref() == Some("capset")
                && e.t_ns > from
                && e.t_ns <= to + LAG_NS
        })
    };
    let samples = v.steady_samples();
    for pair in samples.windows(2) {
        for a in &pair[0].1 {
            if singles.contains(&a.effective) {
                if let Some(b) = pair[1].1.iter().find(|b| b.tid == a.tid) {
                    if b.effective == a.effective
                        && pair[1].0 - pair[0].0 >= PARKED_NS
                        && !moved(a.tid, pair[0].0, pair[1].0)
                    {
                        return fail(
                            "Requested ring left right after its operation",
                            format!(
                                "tid {} in E={} from +{} ms to +{} ms",
                                a.tid,
                                a.effective,
                                pair[0].0 / 1_000_000,
                                pair[1].0 / 1_000_000
                            ),
                        );
                    }
                }
            }
        }
    }
    pass("back to the outer ring after each operation", "returned")
}

fn ring_unprivileged_empty(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let samples = v.steady_samples();
    if samples.is_empty() {
        if v.events_emitted() == 0 && v.exit_code() == Some(v.r.capability_code) {
            return na(
                "the tracer stopped with its capability code before any event (allowed here)",
            );
        }
        return fail(
            "steady-state samples with E=∅",
            format!(
                "no sample after the first event ({} events)",
                v.events_emitted()
            ),
        );
    }
    let transient: Vec<CapSet> = rings.requested_sets();
    let mut empty = 0usize;
    let mut total = 0usize;
    for (t, threads) in &samples {
        for th in threads {
            total += 1;
            if th.effective == rings.unprivileged {
                empty += 1;
            } else if !transient.contains(&th.effective) {
                return fail(
                    format!("E={} on every thread", names(rings.unprivileged)),
                    format!(
                        "tid {} has E={} at +{} ms",
                        th.tid,
                        th.effective,
                        t / 1_000_000
                    ),
                );
            }
        }
    }
    pass(
        format!("E={} on every thread", names(rings.unprivileged)),
        format!("{empty} of {total} thread samples empty, the rest in a Requested ring"),
    )
}

fn ring_unprivileged_most_of_time(v: &View) -> Check {
    let Some((_, bypass)) = v.rings() else {
        return na("the tracer is not expected to run");
    };
    if bypass {
        return na("bypass run");
    }
    let Some(t0) = v.first_event() else {
        return na("no steady state");
    };
    let end = v.r.observation.wall.as_nanos() as u64;
    if end <= t0 {
        return na("no steady state");
    }
    // Step function over the main thread's observed effective set.
    let mut non_empty = 0u64;
    let mut last: Option<(u64, bool)> = None;
    let main = v.pid;
    for (t, th) in v.states() {
        if th.tid != main {
            continue;
        }
        let t = t.max(t0);
        if let Some((lt, ne)) = last {
            if ne && t > lt {
                non_empty += t - lt;
            }
        }
        last = Some((t, !th.effective.is_empty()));
    }
    if let Some((lt, true)) = last {
        non_empty += end.saturating_sub(lt);
    }
    let share = non_empty as f64 / (end - t0) as f64 * 100.0;
    judge(
        share <= 1.0,
        "≤ 1 % of steady-state time with E≠∅",
        format!("{share:.3} %"),
    )
}

fn ring_no_excess(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let Some(first) = v.first_change() else {
        return fail("a first drop", "no capability change");
    };
    let allowed = rings.allowed_effective();
    for (t, th) in v.states_after(first) {
        if !allowed.contains(&th.effective) {
            return fail(
                allowed_sets_text(&allowed),
                format!("tid {} had E={} at +{} µs", th.tid, th.effective, t / 1000),
            );
        }
    }
    pass(
        allowed_sets_text(&allowed),
        "every observed E was one of them",
    )
}

/// The threads of the first steady-state sample of a dropping run, or why there is none.
fn first_steady<'a>(
    v: &View<'a>,
) -> Result<(&'a capring_spec::oracle::Rings, Vec<&'a ThreadCaps>), Check> {
    let rings = dropping_rings(v)?;
    let first = v.steady_samples().into_iter().next();
    first
        .map(|(_, threads)| (rings, threads))
        .ok_or_else(|| na("no steady state"))
}

/// Passes when every thread of the first steady sample satisfies `ok`.
fn every_steady_thread(
    threads: &[&ThreadCaps],
    expected: String,
    ok: impl Fn(&ThreadCaps) -> bool,
    show: impl Fn(&ThreadCaps) -> String,
) -> Check {
    match threads.iter().find(|t| !ok(t)) {
        Some(t) => fail(expected, format!("tid {} has {}", t.tid, show(t))),
        None => pass(expected, "as expected on every thread"),
    }
}

fn ring_permitted_shrinks(v: &View) -> Check {
    let (rings, threads) = match first_steady(v) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let p = rings.steady_permitted;
    every_steady_thread(
        &threads,
        format!("P={p}"),
        |t| t.permitted == p,
        |t| format!("P={}", t.permitted),
    )
}

fn ring_bounding_cleared(v: &View) -> Check {
    let (rings, threads) = match first_steady(v) {
        Ok(x) => x,
        Err(c) => return c,
    };
    if !rings.clear_bounding {
        return na("cap_setpcap not usable: no bounding drop expected");
    }
    every_steady_thread(
        &threads,
        "B={}".into(),
        |t| t.bounding.is_empty(),
        |t| format!("B={}", t.bounding),
    )
}

fn ring_inheritable_ambient_empty(v: &View) -> Check {
    let threads = match first_steady(v) {
        Ok((_, t)) => t,
        Err(c) => return c,
    };
    every_steady_thread(
        &threads,
        "I={} A={}".into(),
        |t| t.inheritable.is_empty() && t.ambient.is_empty(),
        |t| format!("I={} A={}", t.inheritable, t.ambient),
    )
}

fn threads_same_ring(v: &View) -> Check {
    let Some((_, _)) = v.rings() else {
        return na("the tracer is not expected to run");
    };
    let samples = v.steady_samples();
    if samples.len() < 2 {
        // One sample cannot tell a lasting split from a broadcast in flight: say so rather
        // than pass on nothing.
        return na(format!(
            "{} steady-state sample(s); two are needed to judge",
            samples.len()
        ));
    }
    let max_threads = samples.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    // A disagreement counts when it persists into the next sample (a broadcast in flight
    // settles within microseconds; a forgotten thread never does).
    let split = |threads: &Vec<&ThreadCaps>| -> Option<(i32, CapSet, CapSet)> {
        let main = threads
            .iter()
            .find(|t| t.tid == v.pid)
            .or(threads.first())?;
        threads
            .iter()
            .find(|t| t.effective != main.effective)
            .map(|t| (t.tid, t.effective, main.effective))
    };
    // A sample taken while a transition propagates shows threads apart for a moment; under
    // ptrace each thread's capset is a traced stop (and is timestamped at its exit stop,
    // after the kernel applied it), so such windows get sampled. A split is in flight when,
    // within 250 ms (emulated guests are slow), a capset by one of the two threads brings it
    // to the other's set; a
    // forgotten thread never converges.
    const CONVERGE_NS: u64 = 250_000_000;
    let capsets: Vec<(u64, i32, CapSet)> = v
        .own_syscalls()
        .filter(|e| e.syscall.as_deref() == Some("capset") && e.result == Some(0))
        .filter_map(|e| e.own().map(|t| (e.t_ns, e.tid, t.effective)))
        .collect();
    let in_flight = |t: u64, threads: &[&ThreadCaps]| {
        let Some(main) = threads.iter().find(|x| x.tid == v.pid).or(threads.first()) else {
            return false;
        };
        threads
            .iter()
            .filter(|x| x.effective != main.effective)
            .all(|x| {
                capsets.iter().any(|(at, tid, eff)| {
                    *at >= t
                        && *at <= t + CONVERGE_NS
                        && ((*tid == x.tid && *eff == main.effective)
                            || (*tid == main.tid && *eff == x.effective))
                })
            })
    };
    let settled: Vec<&(u64, Vec<&ThreadCaps>)> = samples
        .iter()
        .filter(|(t, th)| !in_flight(*t, th))
        .collect();
    // And the same split must show in two settled samples.
    let mut seen: Option<(i32, CapSet, CapSet, u64)> = None;
    for (t, threads) in settled {
        let Some(a) = split(threads) else { continue };
        match seen {
            Some((tid, e, m, t0)) if (tid, e, m) == a => {
                return fail(
                    "every thread on the same ring",
                    format!(
                        "tid {} has E={} while the main thread has E={} (at +{} ms and still at +{} ms)",
                        a.0,
                        a.1,
                        a.2,
                        t0 / 1_000_000,
                        t / 1_000_000
                    ),
                );
            }
            _ => seen = Some((a.0, a.1, a.2, *t)),
        }
    }
    pass(
        "every thread on the same ring",
        format!(
            "{} samples of up to {max_threads} threads agree",
            samples.len()
        ),
    )
}

fn syscalls_privileged_in_ring(v: &View) -> Check {
    let rings = match dropping_rings(v) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let first = v.first_change().unwrap_or(u64::MAX);
    let mut count = 0;
    for e in v.own_syscalls().filter(|e| View::is_privileged(e)) {
        count += 1;
        let e_set = e.own().map(|t| t.effective).unwrap_or_default();
        if e.t_ns < first
            || e_set.is_empty()
            || !(e_set == rings.required || rings.allowed_effective().contains(&e_set))
        {
            return fail(
                "bpf/perf_event_open only in the Required or a Requested ring",
                format!(
                    "{} {} by tid {} with E={}",
                    e.syscall.as_deref().unwrap_or("?"),
                    e.detail,
                    e.tid,
                    e_set
                ),
            );
        }
    }
    pass(
        "bpf/perf_event_open only in the Required or a Requested ring",
        format!("{count} calls, all inside"),
    )
}

// ----- help ----------------------------------------------------------------------------------

fn help_lists_kernel_caps(v: &View) -> Check {
    if !matches!(v.r.expectation, Expectation::Help) {
        return na("not a help run");
    }
    let out =
        v.r.observation
            .stdout_lines
            .iter()
            .map(|(_, l)| l.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join("\n");
    let last = v.r.facts.cap_last_cap;
    let mentions = |c: Cap| {
        let n = c.name();
        out.contains(&n) || out.contains(n.trim_start_matches("cap_"))
    };
    let missing: CapSet = CapSet::all_up_to(last)
        .iter()
        .filter(|c| !mentions(*c))
        .collect();
    let extra: CapSet = (last.saturating_add(1)..=capring_spec::caps::LAST_NAMED)
        .filter_map(Cap::new)
        .filter(|c| out.contains(&c.name()))
        .collect();
    judge(
        v.exit_code() == Some(0) && missing.is_empty() && extra.is_empty(),
        format!("exit 0, capabilities 0..={last} listed, nothing beyond"),
        format!(
            "{}, missing {missing}, beyond the kernel {extra}",
            v.exit_text()
        ),
    )
}

// ----- bypass --------------------------------------------------------------------------------

fn bypass_common(v: &View, label: &str) -> Check {
    let Some((_, bypass)) = v.rings() else {
        return na("the tracer is not expected to run");
    };
    if !bypass {
        return na("not a bypass run");
    }
    let drops: Vec<&Entry> = v.cap_changes();
    if let Some(e) = drops.first() {
        return fail(
            format!("{label}: no drop syscall, E=P all along"),
            format!(
                "{}({}) = {}",
                e.syscall.as_deref().unwrap_or("?"),
                e.detail,
                e.result.unwrap_or(0)
            ),
        );
    }
    let p = v.r.facts.permitted;
    if let Some((t, th)) = v.states().into_iter().find(|(_, t)| t.effective != p) {
        return fail(
            format!("{label}: E=P={p}"),
            format!(
                "tid {} has E={} at +{} ms",
                th.tid,
                th.effective,
                t / 1_000_000
            ),
        );
    }
    if v.events_emitted() == 0 {
        return fail(
            format!("{label}: runs and emits events"),
            format!("no event; {}", v.exit_text()),
        );
    }
    pass(
        format!("{label}: no drop, E=P on every thread"),
        format!("{} events, no drop", v.events_emitted()),
    )
}

fn bypass_flag(v: &View) -> Check {
    bypass_common(v, "bypass=1")
}

fn bypass_env(v: &View) -> Check {
    let by_env =
        v.r.scenario
            .env
            .contains_key(capring_spec::options::ENV_BYPASS);
    if !by_env {
        return na("CAPABILITIES_BYPASS not set");
    }
    match v.rings() {
        Some((_, true)) => bypass_common(v, "CAPABILITIES_BYPASS"),
        Some((rings, false)) => {
            // The flag wins: capabilities must be dropped.
            judge(
                v.first_change().is_some()
                    && v.first_capset_state()
                        .is_some_and(|s| s.effective == rings.required),
                format!("drop to E={} (the flag wins)", rings.required),
                match v.first_capset_state() {
                    Some(s) => format!("E={}", s.effective),
                    None => "no drop".into(),
                },
            )
        }
        None => na("not expected to run"),
    }
}

fn bypass_warns(v: &View) -> Check {
    let Some((_, true)) = v.rings() else {
        return na("not a bypass run");
    };
    let warned = v
        .stderr_lines()
        .iter()
        .any(|l| l.to_ascii_lowercase().contains("bypass"));
    judge(
        warned,
        "a warning mentioning bypass on stderr",
        if warned { "warned" } else { "no such warning" },
    )
}

// ----- drop failures -------------------------------------------------------------------------

fn drop_failure_aborts(v: &View) -> Check {
    if !(v.r.scenario.faults.capset_eperm || v.r.scenario.faults.capbset_drop_eperm) {
        return na("no fault injected");
    }
    let ok = v.exit_code() == Some(v.r.capability_code)
        && v.events_emitted() == 0
        && v.programs_loaded() == 0;
    judge(
        ok,
        format!("exit {}, no program loaded, no event", v.r.capability_code),
        format!(
            "{}, {} programs loaded, {} events",
            v.exit_text(),
            v.programs_loaded(),
            v.events_emitted()
        ),
    )
}

fn drop_failure_no_program_left(v: &View) -> Check {
    if !(v.r.scenario.faults.capset_eperm || v.r.scenario.faults.capbset_drop_eperm) {
        return na("no fault injected");
    }
    let left: Vec<u32> =
        v.r.programs_after
            .difference(&v.r.programs_before)
            .copied()
            .collect();
    judge(
        left.is_empty(),
        "no new BPF program left in the kernel",
        format!("new program ids: {left:?}"),
    )
}

fn drop_failure_message(v: &View) -> Check {
    if !(v.r.scenario.faults.capset_eperm || v.r.scenario.faults.capbset_drop_eperm) {
        return na("no fault injected");
    }
    let err = v.r.observation.stderr.to_ascii_lowercase();
    let op = ["capset", "prctl", "pr_capbset_drop", "bounding"]
        .iter()
        .any(|w| err.contains(w));
    let errno = err.contains("operation not permitted") || err.contains("eperm");
    let hint = err.contains("bypass");
    judge(
        op && errno && hint,
        "message naming the operation, the error and the bypass flag",
        format!("operation {op}, error {errno}, bypass hint {hint}"),
    )
}

fn drop_failure_bypass_runs(v: &View) -> Check {
    let Some((_, true)) = v.rings() else {
        return na("not a bypass run");
    };
    judge(
        v.events_emitted() > 0 && !v.r.observation.exit.timed_out,
        "runs and emits events despite the failing drops",
        format!("{} events, {}", v.events_emitted(), v.exit_text()),
    )
}

// ----- add / drop / env ----------------------------------------------------------------------

fn add_required(v: &View) -> Check {
    let Some((rings, false)) = v.rings() else {
        return na("not a dropping run");
    };
    let added = v.r.added;
    if added.is_empty() {
        return na("nothing added");
    }
    let Some(state) = v.first_capset_state() else {
        return fail(format!("Required ring ⊇ {added}"), "no drop");
    };
    let later_has = v
        .steady_samples()
        .iter()
        .flat_map(|(_, t)| t.iter())
        .any(|t| !t.effective.intersection(added).is_empty());
    judge(
        added.is_subset(state.effective) && state.effective == rings.required && !later_has,
        format!(
            "Required E={} (⊇ {added}), and {added} not effective afterwards",
            rings.required
        ),
        format!(
            "Required E={}{}",
            state.effective,
            if later_has {
                "; still effective in the steady state"
            } else {
                ""
            }
        ),
    )
}

fn drop_required(v: &View) -> Check {
    let Some((rings, false)) = v.rings() else {
        return na("not a dropping run");
    };
    let dropped = v.r.dropped;
    if dropped.is_empty() {
        return na("nothing dropped");
    }
    let Some(state) = v.first_capset_state() else {
        return fail(format!("Required ring without {dropped}"), "no drop");
    };
    let ok = state.effective == rings.required && state.effective.intersection(dropped).is_empty();
    let outcome_ok = v.events_emitted() > 0 || config_failed_on_drop(v, rings);
    judge(
        ok && outcome_ok,
        format!(
            "Required E={} (without {dropped}); runs, or exits {} at configuration",
            rings.required, v.r.capability_code
        ),
        format!(
            "Required E={}; {} events, {}",
            state.effective,
            v.events_emitted(),
            v.exit_text()
        ),
    )
}

fn drop_requested(v: &View) -> Check {
    let Some((rings, false)) = v.rings() else {
        return na("not a dropping run");
    };
    let disabled: Vec<&capring_spec::oracle::RequestedOp> =
        rings.requested.iter().filter(|o| !o.enabled).collect();
    if disabled.is_empty() {
        return na("no Requested operation disabled");
    }
    let caps: CapSet = disabled.iter().map(|o| o.capability).collect();
    if let Some((t, th)) = v.states().into_iter().skip(1).find(|(_, t)| {
        !t.effective.intersection(caps).is_empty() && t.effective != rings.privileged
    }) {
        return fail(
            format!("{caps} never raised"),
            format!(
                "tid {} had E={} at +{} ms",
                th.tid,
                th.effective,
                t / 1_000_000
            ),
        );
    }
    let warnings = disabled
        .iter()
        .map(|o| {
            v.stderr_lines()
                .iter()
                .filter(|l| l.contains(&o.operation))
                .count()
        })
        .collect::<Vec<_>>();
    judge(
        warnings.iter().all(|n| *n == 1),
        format!("{caps} never raised; one warning per skipped operation"),
        format!("never raised; warnings per operation: {warnings:?}"),
    )
}

fn env_add_drop(v: &View) -> Check {
    let env = &v.r.scenario.env;
    if !env.contains_key(capring_spec::options::ENV_ADD)
        && !env.contains_key(capring_spec::options::ENV_DROP)
    {
        return na("no CAPABILITIES_ADD/DROP");
    }
    let Some((rings, false)) = v.rings() else {
        return na("not a dropping run");
    };
    let Some(state) = v.first_capset_state() else {
        return fail(format!("Required E={}", rings.required), "no drop");
    };
    judge(
        state.effective == rings.required,
        format!("Required E={}", rings.required),
        format!("Required E={}", state.effective),
    )
}

fn env_cli_wins(v: &View) -> Check {
    let Some((rings, bypass)) = v.rings() else {
        return na("not expected to run");
    };
    if bypass {
        return na("bypass run");
    }
    let Some(state) = v.first_capset_state() else {
        return fail(
            format!("drop to Required E={}", rings.required),
            "no capability drop (the environment won?)",
        );
    };
    judge(
        state.effective == rings.required,
        format!("Required E={}", rings.required),
        format!("Required E={}", state.effective),
    )
}

// ----- usage ---------------------------------------------------------------------------------

fn usage_common(v: &View) -> Check {
    let Expectation::Usage { message } = &v.r.expectation else {
        return na("not a usage-error scenario");
    };
    let lines = v.stderr_lines();
    let panicked = v.r.observation.stderr.contains("panicked");
    let changed = v.cap_changes().len();
    judge(
        v.exit_code() == Some(v.r.usage_code) && lines.len() == 1 && !panicked && changed == 0,
        format!(
            "exit {}, one line on stderr, no capability change (spec: {message})",
            v.r.usage_code
        ),
        format!(
            "{}, {} stderr lines{}, {changed} capability changes: {}",
            v.exit_text(),
            lines.len(),
            if panicked { ", PANIC" } else { "" },
            lines.first().unwrap_or(&"")
        ),
    )
}

fn usage_add_drop_conflict(v: &View) -> Check {
    usage_common(v)
}

fn caps_missing_required(v: &View) -> Check {
    let Expectation::CannotRun { missing, .. } = &v.r.expectation else {
        return na("not a missing-capability scenario");
    };
    let err = v.r.observation.stderr.to_ascii_lowercase();
    let named = missing
        .iter()
        .all(|c| err.contains(c.name().trim_start_matches("cap_")));
    judge(
        v.exit_code() == Some(v.r.capability_code)
            && named
            && v.programs_loaded() == 0
            && v.events_emitted() == 0,
        format!(
            "exit {}, naming {missing}, nothing loaded",
            v.r.capability_code
        ),
        format!(
            "{}, names them: {named}, {} programs loaded",
            v.exit_text(),
            v.programs_loaded()
        ),
    )
}

// ----- rules engine --------------------------------------------------------------------------

fn rules_final<'a>(v: &View<'a>) -> Option<Vec<&'a ThreadCaps>> {
    let f = v.final_states();
    (!f.is_empty()).then_some(f)
}

fn rules_unprivileged(v: &View) -> Check {
    let Expectation::Rules {
        allcaps: false,
        rejected_flag: false,
        ..
    } = &v.r.expectation
    else {
        return na("not a dropping rules run");
    };
    let Some(states) = rules_final(v) else {
        return fail("E=P=∅", "no state observed");
    };
    let bad = states
        .iter()
        .find(|t| !t.effective.is_empty() || !t.permitted.is_empty());
    let ran = v.exit_code() == Some(0) && v.events_emitted() > 0;
    judge(
        bad.is_none() && ran,
        "E=P=∅ on every thread, detections written",
        match bad {
            Some(t) => format!("tid {} has E={} P={}", t.tid, t.effective, t.permitted),
            None => format!(
                "E=P=∅; {} detections, {}",
                v.events_emitted(),
                v.exit_text()
            ),
        },
    )
}

fn rules_keeps_all(v: &View, label: &str) -> Check {
    let Some(states) = rules_final(v) else {
        return fail("E=P as started", "no state observed");
    };
    let p = v.r.facts.permitted;
    let bad = states.iter().find(|t| t.effective != p);
    judge(
        bad.is_none() && v.exit_code() == Some(0) && v.cap_changes().is_empty(),
        format!("{label}: E=P={p}, no drop"),
        match bad {
            Some(t) => format!("tid {} has E={}", t.tid, t.effective),
            None => format!(
                "kept; {} capability changes, {}",
                v.cap_changes().len(),
                v.exit_text()
            ),
        },
    )
}

fn rules_allcaps(v: &View) -> Check {
    let Expectation::Rules { allcaps: true, .. } = &v.r.expectation else {
        return na("not an allcaps run");
    };
    if v.r
        .scenario
        .env
        .contains_key(capring_spec::options::ENV_BYPASS)
    {
        return na("allcaps comes from the environment here");
    }
    rules_keeps_all(v, "--allcaps")
}

fn rules_bypass_env(v: &View) -> Check {
    let Expectation::Rules { allcaps: true, .. } = &v.r.expectation else {
        return na("not an allcaps run");
    };
    if !v
        .r
        .scenario
        .env
        .contains_key(capring_spec::options::ENV_BYPASS)
    {
        return na("CAPABILITIES_BYPASS not set");
    }
    rules_keeps_all(v, "CAPABILITIES_BYPASS")
}

fn rules_no_add_drop(v: &View) -> Check {
    let Expectation::Rules {
        rejected_flag: true,
        ..
    } = &v.r.expectation
    else {
        return na("no --capabilities given");
    };
    let lines = v.stderr_lines();
    judge(
        v.exit_code() == Some(v.r.usage_code) && lines.len() == 1 && v.cap_changes().is_empty(),
        format!("exit {} with one line", v.r.usage_code),
        format!(
            "{}, {} stderr lines: {}",
            v.exit_text(),
            lines.len(),
            lines.first().unwrap_or(&"")
        ),
    )
}

fn rules_env_add_drop_ignored(v: &View) -> Check {
    let Expectation::Rules { warnings, .. } = &v.r.expectation else {
        return na("not a rules run");
    };
    if warnings.is_empty() {
        return na("no CAPABILITIES_ADD/DROP");
    }
    let warned = v
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("CAPABILITIES_ADD") || l.contains("CAPABILITIES_DROP"))
        .count();
    judge(
        warned >= warnings.len() && v.exit_code() == Some(0),
        format!("{} warnings, runs normally", warnings.len()),
        format!("{warned} warnings, {}", v.exit_text()),
    )
}

/// Clause id → check.
/// A check: judges one clause on one run.
type CheckFn = fn(&View) -> Check;

const CHECKS: &[(&str, CheckFn)] = &[
    ("ring.privileged.bypass-only", ring_privileged_bypass_only),
    ("ring.required.exact", ring_required_exact),
    ("ring.required.config-only", ring_required_config_only),
    ("ring.requested.single", ring_requested_single),
    ("ring.requested.returns", ring_requested_returns),
    ("ring.unprivileged.empty", ring_unprivileged_empty),
    (
        "ring.unprivileged.most-of-time",
        ring_unprivileged_most_of_time,
    ),
    ("ring.no-excess", ring_no_excess),
    ("ring.permitted.shrinks", ring_permitted_shrinks),
    ("ring.bounding.cleared", ring_bounding_cleared),
    (
        "ring.inheritable-ambient.empty",
        ring_inheritable_ambient_empty,
    ),
    ("threads.same-ring", threads_same_ring),
    ("syscalls.privileged-in-ring", syscalls_privileged_in_ring),
    ("help.lists-kernel-caps", help_lists_kernel_caps),
    ("bypass.flag", bypass_flag),
    ("bypass.env", bypass_env),
    ("bypass.warns", bypass_warns),
    ("drop-failure.aborts", drop_failure_aborts),
    ("drop-failure.no-program-left", drop_failure_no_program_left),
    ("drop-failure.bypass-runs", drop_failure_bypass_runs),
    ("drop-failure.message", drop_failure_message),
    ("add.required", add_required),
    ("drop.required", drop_required),
    ("drop.requested", drop_requested),
    ("env.add-drop", env_add_drop),
    ("env.cli-wins", env_cli_wins),
    ("usage.exit", usage_common),
    ("usage.add-drop-conflict", usage_add_drop_conflict),
    ("caps.missing-required", caps_missing_required),
    ("rules.unprivileged", rules_unprivileged),
    ("rules.allcaps", rules_allcaps),
    ("rules.bypass-env", rules_bypass_env),
    ("rules.no-add-drop", rules_no_add_drop),
    ("rules.env-add-drop-ignored", rules_env_add_drop_ignored),
];

/// Clause ids that have a check.
pub fn implemented() -> impl Iterator<Item = &'static str> {
    CHECKS.iter().map(|(id, _)| *id)
}

/// Judges one clause on one run.
pub fn check(clause: &str, r: &RunRecord) -> Check {
    match CHECKS.iter().find(|(id, _)| *id == clause) {
        Some((_, f)) => f(&View::new(r)),
        None => na(format!("no check implements {clause}")),
    }
}

pub fn level(clause: &str) -> Level {
    clauses::get(clause).map(|c| c.level).unwrap_or(Level::Must)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clause_has_exactly_one_check() {
        let ids: Vec<String> = clauses::all().into_iter().map(|c| c.id).collect();
        for id in &ids {
            assert_eq!(
                CHECKS.iter().filter(|(c, _)| c == id).count(),
                1,
                "clause {id}"
            );
        }
        for (c, _) in CHECKS {
            assert!(ids.iter().any(|i| i == c), "check for unknown clause {c}");
        }
    }

    // ----- threads.same-ring on hand-made timelines ------------------------------------------

    const PID: i32 = 100;
    const OTHER: i32 = 101;
    const MS: u64 = 1_000_000;

    fn caps(list: &[Cap]) -> CapSet {
        list.iter().copied().collect()
    }

    fn thread(tid: i32, effective: CapSet) -> ThreadCaps {
        ThreadCaps {
            pid: PID,
            tid,
            comm: "tracer".into(),
            effective,
            permitted: effective,
            inheritable: CapSet::default(),
            bounding: CapSet::default(),
            ambient: CapSet::default(),
            uids: None,
        }
    }

    fn entry(t_ns: u64, tid: i32, kind: Kind, threads: Vec<ThreadCaps>) -> Entry {
        Entry {
            t_ns,
            pid: PID,
            tid,
            kind,
            syscall: (kind == Kind::Syscall).then(|| "capset".into()),
            detail: String::new(),
            result: (kind == Kind::Syscall).then_some(0),
            from_tid: None,
            threads,
        }
    }

    /// A steady-state sample at `t_ms` where the second thread has `other` effective.
    fn sample(t_ms: u64, other: CapSet) -> Entry {
        let threads = vec![thread(PID, CapSet::default()), thread(OTHER, other)];
        entry(t_ms * MS, PID, Kind::Sample, threads)
    }

    /// A successful capset by `tid` at `t_ms` that leaves it with `effective`.
    fn capset(t_ms: u64, tid: i32, effective: CapSet) -> Entry {
        let threads = vec![thread(tid, effective)];
        entry(t_ms * MS, tid, Kind::Syscall, threads)
    }

    fn record(entries: Vec<Entry>) -> RunRecord {
        let all = CapSet::all_up_to(40);
        let required = caps(&[Cap::BPF, Cap::PERFMON]);
        let facts = capring_spec::facts::EnvFacts {
            kernel_release: "test".into(),
            cap_last_cap: 40,
            permitted: all,
            bounding: all,
            perf_event_paranoid: Some(2),
            bpf_memcg: None,
            bpf_ringbuf: None,
            memlock_soft: capring_spec::facts::UNLIMITED,
            memlock_hard: capring_spec::facts::UNLIMITED,
            cgroup2: None,
        };
        let rings = capring_spec::oracle::Rings {
            privileged: all,
            required,
            required_needs: vec![],
            requested: vec![],
            unprivileged: CapSet::default(),
            config_permitted: required,
            steady_permitted: CapSet::default(),
            clear_bounding: true,
            memlock: capring_spec::facts::MemlockAction::Nothing,
        };
        let scenario = crate::scenario::builtin()
            .into_iter()
            .find(|s| s.name == "steady-state")
            .expect("the steady-state scenario");
        RunRecord {
            scenario,
            facts,
            expectation: Expectation::Runs {
                bypass: false,
                rings,
                warnings: vec![],
            },
            observation: crate::observer::Observation {
                timeline: crate::timeline::Timeline {
                    command: vec!["tracer".into()],
                    root_pid: PID,
                    entries,
                },
                exit: Default::default(),
                // The first event line: samples after it are the steady state.
                stdout_lines: vec![(MS, "{}".into())],
                stderr: String::new(),
                root_pid: PID,
                wall: std::time::Duration::ZERO,
            },
            programs_before: Default::default(),
            programs_after: Default::default(),
            usage_code: 2,
            capability_code: 3,
            added: CapSet::default(),
            dropped: CapSet::default(),
        }
    }

    fn same_ring(entries: Vec<Entry>) -> Check {
        threads_same_ring(&View::new(&record(entries)))
    }

    #[test]
    fn a_lasting_split_fails_same_ring() {
        let all = CapSet::all_up_to(40);
        let c = same_ring(vec![sample(10, all), sample(20, all)]);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.observed.contains("tid 101"), "{c:?}");
    }

    #[test]
    fn one_sample_is_not_enough_to_pass_same_ring() {
        let all = CapSet::all_up_to(40);
        let c = same_ring(vec![sample(10, all)]);
        assert_eq!(c.verdict, Verdict::NotApplicable, "{c:?}");
        assert!(c.observed.contains("1 steady-state sample"), "{c:?}");
        // Nor are samples taken before the first event line.
        let c = same_ring(vec![sample(0, all), sample(10, all)]);
        assert_eq!(c.verdict, Verdict::NotApplicable, "{c:?}");
    }

    #[test]
    fn agreeing_threads_pass_same_ring() {
        let c = same_ring(vec![
            sample(10, CapSet::default()),
            sample(20, CapSet::default()),
        ]);
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    }

    #[test]
    fn a_split_that_converges_is_a_broadcast_in_flight() {
        // The second thread is still on the Required ring twice; its own capset brings it
        // to the main thread's set within the convergence window: not a failure.
        let required = caps(&[Cap::BPF, Cap::PERFMON]);
        let entries = vec![
            sample(10, required),
            sample(20, required),
            capset(30, OTHER, CapSet::default()),
            sample(40, CapSet::default()),
        ];
        let c = same_ring(entries);
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        // Without that capset, the same samples fail.
        let c = same_ring(vec![sample(10, required), sample(20, required)]);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
    }
}
