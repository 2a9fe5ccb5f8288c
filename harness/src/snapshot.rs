//! A run's capability story in a form stable enough to snapshot per kernel: the tracer's
//! configuration-phase credential calls (consecutive repeats folded), the privileged calls
//! made in each of those states (counted, since their order is not stable: aya creates maps
//! in hash order), the distinct effective sets of the steady state, and the outcome. Pids,
//! tids, times and counts that depend on timing (samples, events, per-event Requested raises)
//! are left out.

use std::collections::{BTreeMap, BTreeSet};

use capring_spec::caps::CapSet;
use serde::Serialize;

use crate::run::RunRecord;
use crate::timeline::{compact, Kind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// e.g. `capset(eff={cap_bpf, cap_perfmon} …)` or `prctl(PR_CAPBSET_DROP) ×40`.
    pub call: String,
    pub result: String,
    /// Compact: `all-{cap_sys_resource}` for "every capability but cap_sys_resource".
    pub effective: String,
    pub permitted: String,
    pub bounding: String,
    /// bpf/perf_event_open calls made while this state was in force, with their results.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub privileged_calls: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub feature_key: String,
    pub outcome: String,
    pub configuration: Vec<Step>,
    pub steady_effective_sets: BTreeSet<String>,
    pub steady_permitted_sets: BTreeSet<String>,
    pub emitted_events: bool,
}

fn call_text(syscall: &str, detail: &str) -> String {
    match syscall {
        // The capability argument varies per call: keep the option only, fold repeats.
        "prctl" => format!("prctl({})", detail.split(',').next().unwrap_or(detail)),
        "bpf" => format!("bpf({})", detail.split(',').next().unwrap_or(detail)),
        "perf_event_open" => "perf_event_open".to_string(),
        _ => format!("{syscall}({detail})"),
    }
}

pub fn summarize(r: &RunRecord) -> Summary {
    let pid = r.observation.root_pid;
    let last = r.facts.cap_last_cap;
    let first_event = r
        .observation
        .stdout_lines
        .first()
        .map(|(t, _)| *t)
        .unwrap_or(u64::MAX);
    // Configuration ends at the drop to E=∅ (or the first event, whichever is first):
    // later Requested raises depend on timing.
    let config_end = r
        .observation
        .timeline
        .entries
        .iter()
        .find(|e| {
            e.pid == pid
                && e.kind == Kind::Syscall
                && e.syscall.as_deref() == Some("capset")
                && e.result == Some(0)
                && e.own().is_some_and(|t| t.effective.is_empty())
        })
        .map_or(first_event, |e| e.t_ns.saturating_add(1).min(first_event));
    let transient: BTreeSet<CapSet> = match &r.expectation {
        crate::run::Expectation::Runs { rings, .. } => rings.requested_sets().into_iter().collect(),
        _ => BTreeSet::new(),
    };
    let mut configuration: Vec<(Step, usize)> = Vec::new();
    let mut steady_e = BTreeSet::new();
    let mut steady_p = BTreeSet::new();
    for e in &r.observation.timeline.entries {
        if e.pid != pid {
            continue;
        }
        if e.t_ns < config_end && e.kind == Kind::Syscall {
            let Some(own) = e.own() else { continue };
            let name = e.syscall.as_deref().unwrap_or("?");
            let call = call_text(name, &e.detail);
            let result = match e.result {
                Some(r) if r < 0 => crate::timeline::result_text(r),
                _ => "ok".to_string(),
            };
            if matches!(name, "bpf" | "perf_event_open") {
                let key = format!("{call} = {result}");
                match configuration.last_mut() {
                    Some((last, _)) => *last.privileged_calls.entry(key).or_default() += 1,
                    None => {
                        let mut start = Step {
                            call: "(start)".into(),
                            result: "ok".into(),
                            effective: compact(own.effective, last),
                            permitted: compact(own.permitted, last),
                            bounding: compact(own.bounding, last),
                            privileged_calls: BTreeMap::new(),
                        };
                        start.privileged_calls.insert(key, 1);
                        configuration.push((start, 1));
                    }
                }
                continue;
            }
            let step = Step {
                call,
                result,
                effective: compact(own.effective, last),
                permitted: compact(own.permitted, last),
                bounding: compact(own.bounding, last),
                privileged_calls: BTreeMap::new(),
            };
            match configuration.last_mut() {
                Some((prev, n))
                    if prev.call == step.call
                        && prev.result == step.result
                        && prev.privileged_calls.is_empty() =>
                {
                    *prev = step;
                    *n += 1;
                }
                _ => configuration.push((step, 1)),
            }
        } else if e.t_ns > first_event && e.kind == Kind::Sample {
            for t in e.threads.iter().filter(|t| t.pid == pid) {
                // A sample may or may not catch a Requested operation: timing, not behaviour.
                if !transient.contains(&t.effective) {
                    steady_e.insert(compact(t.effective, last));
                }
                steady_p.insert(compact(t.permitted, last));
            }
        }
    }
    if steady_e.is_empty() && !r.observation.stdout_lines.is_empty() {
        // The process ended before any steady sample (a fast rules engine): its last
        // recorded state is the steady one.
        let mut last_state: BTreeMap<i32, &crate::timeline::ThreadCaps> = BTreeMap::new();
        for e in r
            .observation
            .timeline
            .entries
            .iter()
            .filter(|e| e.kind != Kind::Fault)
        {
            for t in e.threads.iter().filter(|t| t.pid == pid) {
                last_state.insert(t.tid, t);
            }
        }
        for t in last_state.values() {
            steady_e.insert(compact(t.effective, last));
            steady_p.insert(compact(t.permitted, last));
        }
    }
    let x = &r.observation.exit;
    Summary {
        scenario: r.scenario.name.clone(),
        feature_key: r.facts.feature_key(),
        outcome: match (x.code, x.signal) {
            (Some(c), _) => format!("exit {c}"),
            // stopped by the harness after enough lines
            (_, Some(_)) if !x.timed_out => "stopped by the harness".into(),
            (_, Some(s)) => format!("killed by signal {s} (timeout)"),
            _ => "unknown".into(),
        },
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
        emitted_events: !r.observation.stdout_lines.is_empty(),
    }
}
