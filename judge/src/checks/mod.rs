//! The checks: one function per clause id of `spec/SPEC.md`, judging a [`RunRecord`].
//!
//! Every check reads only the typed timeline, the exit status, the output and the kernel's
//! program list: the tracer is a black box, judged over its whole process tree. Each verdict
//! carries what the clause expected and what was observed, in capability names, naming the
//! pid/tid where it matters. Files follow SPEC.md's sections and clause prefixes: [`ring`],
//! [`threads`], [`syscalls`], [`help`], [`bypass`], [`drop_failure`], [`add_drop`], [`usage`],
//! [`caps`], [`rules`].
//!
//! Two rules hold for every check:
//! * "Nothing to judge" is N/A, with its reason, only where the scenario allows it (the run is
//!   not expected to reach that state). Where the scenario needs the tracer to run and it did
//!   not, the clause FAILS.
//! * Names (capabilities, events, operations) are matched as whole words, never as substrings.

mod add_drop;
mod bypass;
mod caps;
mod drop_failure;
mod help;
mod ring;
mod rules;
mod syscalls;
mod threads;
mod usage;
mod view;

use capring_spec::clauses::{self, Level};
use serde::{Deserialize, Serialize};

use crate::plan::Interface;
use crate::run::RunRecord;
pub(crate) use view::{tokens, View};

/// What a check found for one clause in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The run did what the clause asks.
    Pass,
    /// A misbehaviour was observed.
    Fail,
    /// The clause is about an interface this tracer's profile does not have.
    Unsupported,
    /// Nothing to judge: the run never reached the state the clause is about, where the
    /// scenario allows that (the reason is in `observed`).
    NotApplicable,
}

impl Verdict {
    /// Pass or fail as a CI would count it.
    pub fn is_failure(self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Unsupported)
    }
}

/// One check's finding: the verdict and the evidence, in words a reader of the report can
/// follow without the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The verdict.
    pub verdict: Verdict,
    /// What the clause expected here, in capability names (empty for N/A).
    pub expected: String,
    /// What the run showed, naming the pid/tid and call where it matters; for N/A, why
    /// there was nothing to judge.
    pub observed: String,
    /// When in the run the clause failed (ns since launch), for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
}

pub(crate) fn pass(expected: impl Into<String>, observed: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::Pass,
        expected: expected.into(),
        observed: observed.into(),
        at_ns: None,
    }
}

pub(crate) fn fail(expected: impl Into<String>, observed: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::Fail,
        expected: expected.into(),
        observed: observed.into(),
        at_ns: None,
    }
}

/// A failure at a known moment of the run.
pub(crate) fn fail_at(expected: impl Into<String>, observed: impl Into<String>, t: u64) -> Check {
    Check {
        at_ns: Some(t),
        ..fail(expected, observed)
    }
}

pub(crate) fn na(why: impl Into<String>) -> Check {
    Check {
        verdict: Verdict::NotApplicable,
        expected: String::new(),
        observed: why.into(),
        at_ns: None,
    }
}

pub(crate) fn judge(ok: bool, expected: impl Into<String>, observed: impl Into<String>) -> Check {
    if ok {
        pass(expected, observed)
    } else {
        fail(expected, observed)
    }
}

/// The verdict for a clause whose scenario needs interfaces the profile lacks: a clause
/// about one of them is unsupported, the others have nothing to judge.
pub fn unsupported(clause: &str, missing: &[Interface]) -> Check {
    let lacks = |list: &[Interface]| {
        list.iter()
            .map(|i| i.describe())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let about: Vec<Interface> = missing
        .iter()
        .copied()
        .filter(|i| interfaces(clause).contains(i))
        .collect();
    if about.is_empty() {
        return na(format!(
            "the scenario cannot be expressed: not supported by this tracer (profile): {}",
            lacks(missing)
        ));
    }
    Check {
        verdict: Verdict::Unsupported,
        expected: format!("{clause} through the tracer's interface"),
        observed: format!("not supported by this tracer (profile): {}", lacks(&about)),
        at_ns: None,
    }
}

/// The parts of the interface each clause is about.
fn interfaces(clause: &str) -> &'static [Interface] {
    use Interface::*;
    match clause {
        "help.lists-kernel-caps" => &[Help],
        "bypass.flag" | "drop-failure.bypass-runs" => &[BypassFlag],
        "bypass.env" => &[BypassEnv],
        "bypass.warns" => &[BypassFlag, BypassEnv],
        "add.required" => &[AddFlag],
        "drop.required" | "drop.requested" => &[DropFlag, DropEnv],
        "env.add-drop" => &[AddEnv, DropEnv],
        "env.cli-wins" => &[BypassOffFlag, BypassEnv, AddFlag, AddEnv, DropEnv],
        "usage.exit" | "usage.add-drop-conflict" => {
            &[RawValue, AddFlag, DropFlag, Events, BypassEnv]
        }
        c if c.starts_with("rules.") => &[RulesEngine],
        _ => &[],
    }
}

/// A check: judges one clause on one run.
type CheckFn = fn(&View) -> Check;

const CHECKS: &[(&str, CheckFn)] = &[
    ("ring.privileged.bypass-only", ring::privileged_bypass_only),
    ("ring.required.exact", ring::required_exact),
    ("ring.required.preferred", ring::required_preferred),
    ("ring.required.config-only", ring::required_config_only),
    ("ring.requested.single", ring::requested_single),
    ("ring.requested.returns", ring::requested_returns),
    ("ring.unprivileged.empty", ring::unprivileged_empty),
    (
        "ring.unprivileged.most-of-time",
        ring::unprivileged_most_of_time,
    ),
    ("ring.no-excess", ring::no_excess),
    ("ring.permitted.shrinks", ring::permitted_shrinks),
    ("ring.bounding.cleared", ring::bounding_cleared),
    (
        "ring.inheritable-ambient.empty",
        ring::inheritable_ambient_empty,
    ),
    ("threads.same-ring", threads::same_ring),
    ("syscalls.privileged-in-ring", syscalls::privileged_in_ring),
    ("help.lists-kernel-caps", help::lists_kernel_caps),
    ("bypass.flag", bypass::flag),
    ("bypass.env", bypass::env),
    ("bypass.warns", bypass::warns),
    ("drop-failure.aborts", drop_failure::aborts),
    (
        "drop-failure.no-program-left",
        drop_failure::no_program_left,
    ),
    ("drop-failure.bypass-runs", drop_failure::bypass_runs),
    ("drop-failure.message", drop_failure::message),
    ("add.required", add_drop::add_required),
    ("drop.required", add_drop::drop_required),
    ("drop.requested", add_drop::drop_requested),
    ("env.add-drop", add_drop::env_add_drop),
    ("env.cli-wins", add_drop::env_cli_wins),
    ("usage.exit", usage::exit),
    ("usage.add-drop-conflict", usage::add_drop_conflict),
    (
        "caps.missing-required.aborts",
        caps::missing_required_aborts,
    ),
    ("caps.missing-required", caps::missing_required),
    ("rules.unprivileged", rules::unprivileged),
    ("rules.allcaps", rules::allcaps),
    ("rules.bypass-env", rules::bypass_env),
    ("rules.no-add-drop", rules::no_add_drop),
    ("rules.env-add-drop-ignored", rules::env_add_drop_ignored),
];

/// Clauses no negative control exists for (the tracer's usage errors and the rules engine's
/// refusal): no recorded run fails them, so their only failing cases are the hand-made
/// timelines of `checks::cases`, whose table covers every clause both ways (and checks
/// that each clause listed here has failing cases in it).
pub const HAND_MADE_FAILURES: &[&str] = &[
    "usage.exit",
    "usage.add-drop-conflict",
    "rules.no-add-drop",
    "rules.env-add-drop-ignored",
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

/// The clause's level for a tracer that opted into the strict level (or not).
pub fn level(clause: &str, strict: bool) -> Level {
    clauses::get(clause)
        .map(|c| c.level_for(strict))
        .unwrap_or(Level::Must)
}

#[cfg(test)]
mod cases;
#[cfg(test)]
mod test_runs;
#[cfg(test)]
mod tests;
