//! SPEC.md "Bypass".

use super::view::{tokens, View};
use super::{fail, fail_at, judge, na, pass, Check};
use crate::plan::Expectation;
use capring_spec::oracle::Outcome;

/// A bypassed run: no drop call, E = P on every thread all along, and events.
fn bypassed(v: &View, label: &str) -> Check {
    let last = v.plan().facts.cap_last_cap;
    if let Some((e, call, r, _)) = v.calls().find(|(_, c, ..)| c.is_drop()) {
        return fail_at(
            format!("{label}: no capability-dropping call, E=P all along"),
            format!(
                "{} = {} by pid {} tid {}",
                call.describe(last),
                capring_observe::timeline::result_text(r),
                e.pid,
                e.tid
            ),
            e.t_ns,
        );
    }
    let p = v.plan().facts.permitted;
    if let Some(s) = v.states().into_iter().find(|s| s.thread.effective != p) {
        return fail_at(
            format!(
                "{label}: E=P={} on every thread",
                capring_observe::timeline::compact(p, last)
            ),
            format!(
                "pid {} tid {} has E={} at +{} ms",
                s.thread.pid,
                s.thread.tid,
                capring_observe::timeline::compact(s.thread.effective, last),
                s.t / 1_000_000
            ),
            s.t,
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

fn is_bypass(v: &View) -> Result<(), Check> {
    match v.plan().expectation {
        Expectation::Outcome(Outcome::Runs { bypass: true, .. }) => Ok(()),
        Expectation::Outcome(Outcome::Runs { .. }) => Err(na("not a bypass run")),
        _ => Err(na("the tracer is not expected to run in this scenario")),
    }
}

pub fn flag(v: &View) -> Check {
    if let Err(c) = is_bypass(v) {
        return c;
    }
    if !v
        .plan()
        .scenario
        .cli
        .iter()
        .any(|c| c.starts_with("bypass="))
    {
        return na("bypass comes from the environment here");
    }
    bypassed(v, "bypass flag")
}

pub fn env(v: &View) -> Check {
    if let Err(c) = is_bypass(v) {
        return c;
    }
    if v.plan()
        .scenario
        .cli
        .iter()
        .any(|c| c.starts_with("bypass="))
    {
        return na("bypass comes from the command line here");
    }
    bypassed(v, "CAPABILITIES_BYPASS")
}

pub fn warns(v: &View) -> Check {
    if let Err(c) = is_bypass(v) {
        return c;
    }
    let words = tokens(&v.r.observation.stderr());
    let warned =
        words.contains("bypass") || words.contains("bypassed") || words.contains("bypassing");
    judge(
        warned,
        "a warning mentioning bypass on stderr",
        if warned { "warned" } else { "no such warning" },
    )
}
