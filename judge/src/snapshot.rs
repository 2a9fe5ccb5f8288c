//! A run's capability story in a form stable enough to snapshot per kernel: the tracer tree's
//! configuration-phase credential calls (consecutive repeats folded), the privileged calls
//! made in each of those states (counted, since their order is not stable: aya creates maps
//! in hash order), the distinct effective sets of the steady state, and the outcome. Pids,
//! tids, times and counts that depend on timing (samples, events, per-event Requested raises)
//! are left out.

use std::collections::{BTreeMap, BTreeSet};

use capring_observe::timeline::{compact, Call, Entry, Event, ThreadCaps};
use capring_spec::caps::CapSet;
use capring_spec::oracle::Outcome;
use serde::Serialize;

use crate::plan::Expectation;
use crate::run::RunRecord;

/// One credential call of the configuration phase (repeats folded into one, `×N`), and the
/// acting thread's sets after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// e.g. `capset(eff={cap_bpf, cap_perfmon} …)` or `prctl(PR_CAPBSET_DROP) ×40`.
    pub call: String,
    /// `ok`, or the error by name (`-EPERM`).
    pub result: String,
    /// Compact: `all-{cap_sys_resource}` for "every capability but cap_sys_resource".
    pub effective: String,
    /// The permitted set after the call, compact like `effective`.
    pub permitted: String,
    /// The bounding set after the call, compact like `effective`.
    pub bounding: String,
    /// The other traced calls (bpf, perf_event_open, raw sockets…) made while this state was
    /// in force, with their results, counted: their order is not stable.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, usize>,
}

/// What `snapshots/` keeps of one run, per scenario and feature key (see the module docs
/// for what is left out and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The feature key of the facts the tracer saw (the scenario's adjustments included).
    pub feature_key: String,
    /// The events the scenario's roles chose from the catalog.
    pub events: Vec<String>,
    /// How it ended, without times or pids: `stopped by the harness`, `exit 3`, `killed by
    /// signal 9 (timeout)`.
    pub outcome: String,
    /// The credential calls until configuration ended (the drop to E = ∅, or the first
    /// event, whichever came first).
    pub configuration: Vec<Step>,
    /// The distinct effective sets samples saw after the first event, compact; Requested
    /// sets are left out (a sample may or may not catch one).
    pub steady_effective_sets: BTreeSet<String>,
    /// The distinct permitted sets samples saw after the first event, compact.
    pub steady_permitted_sets: BTreeSet<String>,
    /// The tracer wrote at least one event line.
    pub emitted_events: bool,
}

/// A call as the snapshot names it: the varying argument (which capability, which map) is
/// left out of credential calls so that repeats fold.
fn call_text(call: &Call, last: u8) -> String {
    match call {
        Call::Prctl { op, .. } => format!("prctl({})", op.name()),
        Call::Bpf { .. } | Call::Capset { .. } => call.describe(last),
        Call::PerfEventOpen { .. } => "perf_event_open".to_string(),
        Call::Socket { domain, kind, .. } => format!("socket(domain={domain} type={kind})"),
        other => format!("{}(…)", other.syscall()),
    }
}

fn outcome(x: &capring_observe::launch::ExitInfo) -> String {
    match (x.code, x.signal) {
        _ if x.stopped_by_harness => "stopped by the harness".into(),
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) if x.timed_out => format!("killed by signal {s} (timeout)"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown".into(),
    }
}

/// Adds one configuration-phase call to the folded list.
fn add_step(configuration: &mut Vec<(Step, usize)>, e: &Entry, own: &ThreadCaps, last: u8) {
    let Some((call, result, _)) = e.call() else {
        return;
    };
    let text = call_text(call, last);
    let result = if result < 0 {
        capring_observe::timeline::result_text(result)
    } else {
        "ok".to_string()
    };
    let state = |call: String, result: String| Step {
        call,
        result,
        effective: compact(own.effective, last),
        permitted: compact(own.permitted, last),
        bounding: compact(own.bounding, last),
        calls: BTreeMap::new(),
    };
    let credential = call.changes_capabilities()
        || matches!(
            call,
            Call::SetId { .. } | Call::Setgroups { .. } | Call::Execve { .. } | Call::Prctl { .. }
        );
    if !credential {
        let key = format!("{text} = {result}");
        if configuration.is_empty() {
            configuration.push((state("(start)".into(), "ok".into()), 1));
        }
        let (step, _) = configuration.last_mut().expect("pushed above");
        *step.calls.entry(key).or_default() += 1;
        return;
    }
    let step = state(text, result);
    match configuration.last_mut() {
        Some((prev, n))
            if prev.call == step.call && prev.result == step.result && prev.calls.is_empty() =>
        {
            *prev = step;
            *n += 1;
        }
        _ => configuration.push((step, 1)),
    }
}

/// The snapshot summary of a recorded run.
pub fn summarize(r: &RunRecord) -> Summary {
    let plan = &r.plan;
    let last = plan.facts.cap_last_cap;
    let first_event = r.observation.first_event().unwrap_or(u64::MAX);
    let entries = &r.observation.timeline.entries;
    // Configuration ends at the drop to E=∅ (or the first event, whichever is first):
    // later Requested raises depend on timing.
    let config_end = entries
        .iter()
        .find(|e| {
            matches!(e.call(), Some((Call::Capset { .. }, res, _)) if res >= 0)
                && e.own().is_some_and(|t| t.effective.is_empty())
        })
        .map_or(first_event, |e| e.t_ns.saturating_add(1).min(first_event));
    let transient: BTreeSet<CapSet> = match &plan.expectation {
        Expectation::Outcome(Outcome::Runs { rings, .. }) => {
            rings.requested_sets().into_iter().collect()
        }
        _ => BTreeSet::new(),
    };
    let mut configuration: Vec<(Step, usize)> = Vec::new();
    let mut steady_e = BTreeSet::new();
    let mut steady_p = BTreeSet::new();
    for e in entries {
        if e.t_ns < config_end {
            if let Some(own) = e.own().filter(|_| e.call().is_some()) {
                add_step(&mut configuration, e, own, last);
            }
        } else if e.t_ns > first_event && e.is_sample() {
            for t in &e.threads {
                // A sample may or may not catch a Requested operation: timing, not behaviour.
                if !transient.contains(&t.effective) {
                    steady_e.insert(compact(t.effective, last));
                }
                steady_p.insert(compact(t.permitted, last));
            }
        }
    }
    if steady_e.is_empty() && r.observation.event_count > 0 {
        // The process ended before any steady sample (a fast rules engine): its last
        // recorded state is the steady one.
        let mut last_state: BTreeMap<i32, &ThreadCaps> = BTreeMap::new();
        for e in entries
            .iter()
            .filter(|e| !matches!(e.event, Event::Condition { .. }))
        {
            for t in &e.threads {
                last_state.insert(t.tid, t);
            }
        }
        for t in last_state.values() {
            steady_e.insert(compact(t.effective, last));
            steady_p.insert(compact(t.permitted, last));
        }
    }
    Summary {
        scenario: plan.scenario.name.clone(),
        feature_key: plan.facts.feature_key(),
        events: plan.chosen.events.clone(),
        outcome: outcome(&r.observation.exit),
        configuration: configuration
            .into_iter()
            .map(|(mut s, n)| {
                if n > 1 {
                    s.call = format!("{} ×{n}", s.call);
                }
                s
            })
            .collect(),
        steady_effective_sets: steady_e,
        steady_permitted_sets: steady_p,
        emitted_events: r.observation.event_count > 0,
    }
}
