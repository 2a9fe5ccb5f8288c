//! SPEC.md "Usage", `caps.*`: a Required capability that is not usable.

use capring_spec::oracle::Outcome;

use super::view::{names_cap, tokens, View};
use super::{judge, na, Check};
use crate::plan::Expectation;

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
