//! SPEC.md "Usage": bad input, and a Required capability that is not usable.

use super::view::{names_cap, tokens, View};
use super::{judge, na, Check};
use crate::plan::Expectation;
use capring_spec::oracle::Outcome;

/// Exit with the usage code, one line on stderr, no panic, nothing changed or loaded.
fn usage_error(v: &View) -> (bool, String) {
    let lines = v.stderr_lines();
    let panicked = v.r.observation.stderr().contains("panicked at");
    let changed = v
        .calls()
        .filter(|(_, c, r, _)| c.is_drop() && *r >= 0)
        .count();
    let privileged = v.privileged().count();
    let ok = v.exit_code() == Some(v.plan().usage_code)
        && lines.len() == 1
        && !panicked
        && changed == 0
        && privileged == 0;
    let observed = format!(
        "{}, {} stderr lines{}, {changed} capability changes, {privileged} privileged operations: {}",
        v.exit_text(),
        lines.len(),
        if panicked { ", PANIC" } else { "" },
        lines.first().unwrap_or(&"")
    );
    (ok, observed)
}

pub fn exit(v: &View) -> Check {
    let Expectation::Usage { message } = &v.plan().expectation else {
        return na("not a usage-error scenario");
    };
    let (ok, observed) = usage_error(v);
    judge(
        ok,
        format!(
            "exit {}, one line on stderr, no capability change (spec: {message})",
            v.plan().usage_code
        ),
        observed,
    )
}

pub fn add_drop_conflict(v: &View) -> Check {
    let Expectation::Usage { .. } = &v.plan().expectation else {
        return na("not a usage-error scenario");
    };
    let listed = |key: &str| -> capring_spec::caps::CapSet {
        v.plan()
            .scenario
            .cli
            .iter()
            .filter_map(|c| c.strip_prefix(key))
            .flat_map(|l| l.split(','))
            .filter_map(|n| capring_spec::caps::parse_name(n).ok())
            .collect()
    };
    // Only the capabilities both added and dropped are the conflict.
    let conflict = listed("add=").intersection(listed("drop="));
    if conflict.is_empty() {
        return na("no capability is both added and dropped here");
    }
    let (ok, observed) = usage_error(v);
    let words = tokens(&v.r.observation.stderr());
    let named = conflict.iter().all(|c| names_cap(&words, c));
    judge(
        ok && named,
        format!("a usage error naming {conflict}"),
        format!("{observed}; names it: {named}"),
    )
}

fn cannot_run<'a>(
    v: &View<'a>,
) -> Result<(&'a capring_spec::caps::CapSet, &'a Vec<String>), Check> {
    match &v.plan().expectation {
        Expectation::Outcome(Outcome::CannotRun {
            missing, events, ..
        }) => Ok((missing, events)),
        _ => Err(na("not a missing-capability scenario")),
    }
}

/// Exit with the capability code, no successful privileged operation, no event.
fn refused(v: &View) -> (bool, String) {
    let exit = &v.r.observation.exit;
    let ok = exit.code == Some(v.plan().capability_code)
        && !exit.stopped_by_harness
        && v.privileged_successes() == 0
        && v.events_emitted() == 0;
    (
        ok,
        format!(
            "{}, {} successful privileged operations, {} event lines",
            v.exit_text(),
            v.privileged_successes(),
            v.events_emitted()
        ),
    )
}

pub fn missing_required_aborts(v: &View) -> Check {
    if let Err(c) = cannot_run(v) {
        return c;
    }
    let (ok, observed) = refused(v);
    judge(
        ok,
        format!(
            "exit {}, nothing loaded, no event",
            v.plan().capability_code
        ),
        observed,
    )
}

pub fn missing_required(v: &View) -> Check {
    let (missing, events) = match cannot_run(v) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let (ok, observed) = refused(v);
    let words = tokens(&v.r.observation.stderr());
    let caps_named = missing.iter().all(|c| names_cap(&words, c));
    let events_named = events
        .iter()
        .all(|e| words.contains(&e.to_ascii_lowercase()));
    judge(
        ok && caps_named && events_named,
        format!(
            "exit {}, nothing loaded, naming {missing} and the events that need it",
            v.plan().capability_code
        ),
        format!("{observed}; names the capabilities: {caps_named}, the events: {events_named}"),
    )
}
