//! SPEC.md "Usage", `usage.*`: bad input.

use super::view::{names_cap, tokens, View};
use super::{judge, na, Check};
use crate::plan::Expectation;

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
