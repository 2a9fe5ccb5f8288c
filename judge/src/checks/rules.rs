//! SPEC.md "Rules engine": it runs with nothing, unless told to keep everything.

use super::view::View;
use super::{fail, fail_at, judge, na, Check};
use crate::plan::Expectation;

pub fn unprivileged(v: &View) -> Check {
    let Expectation::Rules {
        allcaps: false,
        rejected_flag: false,
        ..
    } = &v.plan().expectation
    else {
        return na("not a dropping rules-engine run");
    };
    let expected = "E=P=∅ on every thread before its first detection, and from then on";
    // The moment it had nothing: the first recorded state with E = P = ∅.
    let states = v.states();
    let Some(empty) = states
        .iter()
        .find(|s| s.thread.effective.is_empty() && s.thread.permitted.is_empty())
    else {
        return fail(
            expected,
            format!("it never reached E=P=∅ ({})", v.exit_text()),
        );
    };
    if let Some(first) = v.first_event().filter(|t| *t < empty.t) {
        return fail_at(
            expected,
            format!(
                "its first detection at +{} ms came before it dropped (+{} ms)",
                first / 1_000_000,
                empty.t / 1_000_000
            ),
            first,
        );
    }
    if let Some(s) = states
        .iter()
        .filter(|s| s.t >= empty.t)
        .find(|s| !s.thread.effective.is_empty() || !s.thread.permitted.is_empty())
    {
        return fail_at(
            expected,
            format!(
                "pid {} tid {} has E={} P={} at +{} ms",
                s.thread.pid,
                s.thread.tid,
                capring_observe::timeline::compact(s.thread.effective, v.plan().facts.cap_last_cap),
                capring_observe::timeline::compact(s.thread.permitted, v.plan().facts.cap_last_cap),
                s.t / 1_000_000
            ),
            s.t,
        );
    }
    judge(
        v.exit_code() == Some(0) && v.events_emitted() > 0,
        expected,
        format!(
            "E=P=∅; {} detections, {}",
            v.events_emitted(),
            v.exit_text()
        ),
    )
}

/// Every capability kept: no drop call, E = P as started on every state, exit 0.
fn keeps_all(v: &View, label: &str) -> Check {
    let p = v.plan().facts.permitted;
    let expected = format!("{label}: E=P={p}, no drop");
    if let Some((e, call, ..)) = v.calls().find(|(_, c, r, _)| c.is_drop() && *r >= 0) {
        return fail_at(
            expected,
            format!(
                "{} by tid {}",
                call.describe(v.plan().facts.cap_last_cap),
                e.tid
            ),
            e.t_ns,
        );
    }
    if let Some(s) = v.states().into_iter().find(|s| s.thread.effective != p) {
        return fail_at(expected, v.state_text(&s), s.t);
    }
    judge(
        v.exit_code() == Some(0) && !v.states().is_empty(),
        expected,
        format!("kept; {}", v.exit_text()),
    )
}

fn bypass_by_env(v: &View) -> bool {
    v.plan()
        .scenario
        .env
        .contains_key(capring_spec::options::ENV_BYPASS)
}

pub fn allcaps(v: &View) -> Check {
    let Expectation::Rules { allcaps: true, .. } = &v.plan().expectation else {
        return na("not an allcaps run");
    };
    if bypass_by_env(v) {
        return na("allcaps comes from the environment here");
    }
    keeps_all(v, "--allcaps")
}

pub fn bypass_env(v: &View) -> Check {
    let Expectation::Rules { allcaps: true, .. } = &v.plan().expectation else {
        return na("not an allcaps run");
    };
    if !bypass_by_env(v) {
        return na("CAPABILITIES_BYPASS not set");
    }
    keeps_all(v, "CAPABILITIES_BYPASS")
}

pub fn no_add_drop(v: &View) -> Check {
    let Expectation::Rules {
        rejected_flag: true,
        ..
    } = &v.plan().expectation
    else {
        return na("no --capabilities given");
    };
    let lines = v.stderr_lines();
    let changed = v
        .calls()
        .filter(|(_, c, r, _)| c.is_drop() && *r >= 0)
        .count();
    judge(
        v.exit_code() == Some(v.plan().usage_code) && lines.len() == 1 && changed == 0,
        format!(
            "exit {} with one line, no capability change",
            v.plan().usage_code
        ),
        format!(
            "{}, {} stderr lines, {changed} capability changes: {}",
            v.exit_text(),
            lines.len(),
            lines.first().unwrap_or(&"")
        ),
    )
}

pub fn env_add_drop_ignored(v: &View) -> Check {
    let Expectation::Rules { warnings, .. } = &v.plan().expectation else {
        return na("not a rules-engine run");
    };
    if warnings.is_empty() {
        return na("no CAPABILITIES_ADD/DROP in this scenario");
    }
    let warned = v
        .stderr_lines()
        .iter()
        .filter(|l| {
            let w = super::tokens(l);
            w.contains("capabilities_add") || w.contains("capabilities_drop")
        })
        .count();
    judge(
        warned >= warnings.len() && v.exit_code() == Some(0),
        format!("{} warnings, runs normally", warnings.len()),
        format!("{warned} warnings, {}", v.exit_text()),
    )
}
