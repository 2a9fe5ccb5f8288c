//! Every clause judged on hand-made timelines, both ways.
//!
//! A check judged only on recorded runs can pass by accident of what the reference happens to
//! do: a clause the reference never breaks is never seen failing for the reason it exists, and
//! one it always meets in the same way never pins the edge of its meaning. Here each clause
//! has small runs written by hand from its SPEC.md sentence, one behaviour (or one
//! misbehaviour) at a time, that need no root and no kernel: [`TABLE`] lists, for every
//! clause id of the checks, the runs that must pass and those that must fail, each built by a
//! function named after what the tracer does in it. Where a verdict can name its culprit (a
//! capability, a tid, the reason), the case says which words `observed` must contain, so a
//! failing case fails for the right reason and not for another one.
//!
//! The clauses no negative control exists for ([`HAND_MADE_FAILURES`]) fail nowhere else:
//! their failing cases here are the only ones.

use capring_observe::timeline::{Entry, Event, FaultKind, Status, Stream, ThreadCaps};
use capring_spec::caps::{Cap, CapSet};

use super::test_runs::*;
use super::{implemented, Verdict, HAND_MADE_FAILURES};
use crate::run::RunRecord;

/// One hand-made run of a clause.
struct Case {
    /// The builder's name: the behaviour it builds.
    name: &'static str,
    /// Builds the run.
    build: fn() -> RunRecord,
    /// Words the verdict's `observed` must contain: the culprit it names.
    culprit: Option<&'static str>,
}

/// `case!(builder)` or `case!(builder, "words observed must contain")`.
macro_rules! case {
    ($f:ident) => {
        Case {
            name: stringify!($f),
            build: $f,
            culprit: None,
        }
    };
    ($f:ident, $c:expr) => {
        Case {
            name: stringify!($f),
            build: $f,
            culprit: Some($c),
        }
    };
}

/// A clause's hand-made runs.
struct Clause {
    /// The clause id (SPEC.md).
    id: &'static str,
    /// Runs the check must pass.
    passing: &'static [Case],
    /// Runs the check must fail.
    failing: &'static [Case],
}

/// Clause id → the hand-made runs that pass it and those that fail it.
const TABLE: &[Clause] = &[
    Clause {
        id: "ring.privileged.bypass-only",
        passing: &[case!(drops_to_required_before_loading)],
        failing: &[
            case!(loads_before_the_first_drop, "before the first drop"),
            case!(
                returns_to_all_capabilities_after_dropping,
                "E=all at +600 ms"
            ),
            case!(never_drops, "no capability change at all"),
        ],
    },
    Clause {
        id: "ring.required.exact",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(enters_required_in_steps),
            case!(
                configures_with_a_measured_alternative_set,
                "measured minimal set"
            ),
        ],
        failing: &[
            case!(configures_with_an_extra_capability, "cap_sys_admin"),
            case!(configures_with_bpf_alone, "E={cap_bpf} at +2 ms"),
            case!(
                switches_measured_sets_while_configuring,
                "E={cap_sys_admin} at +4 ms"
            ),
            case!(
                aborts_with_too_small_a_ring,
                "configuration did not complete"
            ),
        ],
    },
    Clause {
        id: "ring.required.preferred",
        passing: &[case!(drops_to_required_before_loading)],
        failing: &[
            case!(
                configures_with_a_measured_alternative_set,
                "E={cap_sys_admin}"
            ),
            case!(
                configures_with_sys_admin_instead_of_bpf_and_perfmon,
                "E={cap_sys_admin}"
            ),
        ],
    },
    Clause {
        id: "ring.required.config-only",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(enters_required_in_steps),
        ],
        failing: &[
            case!(
                still_in_required_at_the_first_event,
                "at +15 ms (first event at +10 ms)"
            ),
            case!(never_drops, "no thread was ever in it"),
            case!(
                aborts_with_too_small_a_ring,
                "never reached the steady state"
            ),
        ],
    },
    Clause {
        id: "ring.requested.single",
        passing: &[case!(
            raises_ptrace_alone_per_event,
            "raised {cap_sys_ptrace}"
        )],
        failing: &[
            case!(raises_ptrace_with_required_kept, "cap_sys_ptrace"),
            case!(raises_sys_admin_for_an_operation, "E={cap_sys_admin}"),
            case!(never_raises_ptrace, "no Requested ring was ever entered"),
        ],
    },
    Clause {
        id: "ring.requested.returns",
        passing: &[
            case!(raises_ptrace_alone_per_event, "4 operations"),
            case!(a_slow_single_operation, "1 operations"),
        ],
        failing: &[
            case!(
                requested_kept_raised_with_no_op_capsets,
                "stayed in E={cap_sys_ptrace}"
            ),
            case!(
                a_short_stretch_with_events_written_in_it,
                "tid 100 stayed in"
            ),
            case!(keeps_ptrace_raised_for_550_ms, "from +400 ms until +950 ms"),
            case!(
                returns_to_required_after_its_operation,
                "the ring it came from"
            ),
            case!(never_raises_ptrace, "no Requested ring was entered"),
        ],
    },
    Clause {
        id: "ring.unprivileged.empty",
        passing: &[
            case!(
                drops_to_required_before_loading,
                "0 in a short Requested operation"
            ),
            case!(
                raises_ptrace_alone_per_event,
                "1 in a short Requested operation"
            ),
            case!(a_slow_single_operation, "2 in a short Requested operation"),
        ],
        failing: &[
            case!(a_second_thread_keeps_required, "tid 101"),
            case!(
                requested_kept_raised_with_no_op_capsets,
                "E={cap_sys_ptrace}"
            ),
            case!(
                a_short_stretch_with_events_written_in_it,
                "E={cap_sys_ptrace} at +410 ms"
            ),
            case!(
                aborts_with_too_small_a_ring,
                "never reached the steady state"
            ),
        ],
    },
    Clause {
        id: "ring.unprivileged.most-of-time",
        passing: &[
            case!(drops_to_required_before_loading, "0.000 %"),
            case!(raises_ptrace_alone_per_event, "0.808 %"),
            // An exited thread holds nothing.
            case!(a_raised_helper_exits_before_readiness, "0.000 %"),
        ],
        failing: &[
            case!(keeps_ptrace_for_a_tenth_of_the_time, "10.101 %"),
            case!(never_drops, "100.000 %"),
            // The leader is empty; its second thread is not: the tree counts.
            case!(a_second_thread_keeps_required, "90.909 %"),
            // Raised from readiness (10 ms) until it exits at 100 ms: 90 of 990 ms.
            case!(a_raised_helper_exits_in_the_steady_state, "9.091 %"),
        ],
    },
    Clause {
        id: "ring.no-excess",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(raises_ptrace_alone_per_event),
            case!(configures_with_a_measured_alternative_set),
            case!(switches_measured_sets_while_configuring),
        ],
        failing: &[
            case!(
                raises_sys_admin_after_dropping,
                "({cap_sys_admin} in no ring)"
            ),
            case!(
                adds_kill_while_configuring_with_a_measured_set,
                "{cap_kill} in no minimal set"
            ),
            case!(
                returns_to_another_minimal_set_after_configuring,
                "none of the rings"
            ),
            case!(never_drops, "no capability drop"),
        ],
    },
    Clause {
        id: "ring.permitted.shrinks",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(keeps_only_ptrace_permitted),
        ],
        failing: &[
            case!(a_second_thread_keeps_everything_permitted, "tid 101 has P="),
            case!(never_drops, "tid 100 has P="),
        ],
    },
    Clause {
        id: "ring.bounding.cleared",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(clears_the_bounding_set_before_loading),
        ],
        failing: &[
            case!(a_second_thread_keeps_the_bounding_set, "tid 101 has B=all"),
            case!(exits_before_configuring, "no configuration"),
        ],
    },
    Clause {
        id: "ring.inheritable-ambient.empty",
        passing: &[
            case!(drops_to_required_before_loading),
            case!(clears_inheritable_with_its_first_capset),
        ],
        failing: &[
            case!(
                raises_an_ambient_capability_after_dropping,
                "A={cap_net_raw}"
            ),
            case!(
                a_second_thread_keeps_its_inheritable_set,
                "tid 101 has I={cap_kill}"
            ),
        ],
    },
    Clause {
        id: "threads.same-ring",
        passing: &[
            case!(
                drops_to_required_before_loading,
                "5 samples of up to 2 threads"
            ),
            case!(a_second_thread_converges_within_the_window),
        ],
        failing: &[
            case!(a_second_thread_is_left_with_everything, "tid 101 has E=all"),
            case!(aborts_with_too_small_a_ring, "0 steady-state sample(s)"),
        ],
    },
    Clause {
        id: "syscalls.privileged-in-ring",
        passing: &[
            case!(drops_to_required_before_loading, "1 operations"),
            case!(enters_required_in_steps, "1 operations"),
        ],
        failing: &[
            case!(loads_before_the_first_drop, "before the first drop"),
            case!(loads_after_dropping_everything, "in the Unprivileged ring"),
            case!(configures_with_an_extra_capability, "outside every ring"),
            case!(exits_before_configuring, "no privileged operation at all"),
        ],
    },
    Clause {
        id: "help.lists-kernel-caps",
        passing: &[
            case!(lists_every_capability_by_number_and_name),
            case!(lists_an_older_kernels_capabilities),
        ],
        failing: &[
            case!(writes_ebpf_where_cap_bpf_belongs, "missing {cap_bpf}"),
            case!(
                lists_only_the_capabilities_up_to_cap_syslog,
                "missing {cap_wake_alarm"
            ),
            case!(
                lists_capabilities_an_older_kernel_lacks,
                "beyond the kernel {cap_perfmon, cap_bpf, cap_checkpoint_restore}"
            ),
            case!(lists_then_loads_a_program, "1 privileged operations"),
            case!(exits_1_after_listing, "exit code 1"),
        ],
    },
    Clause {
        id: "bypass.flag",
        passing: &[case!(keeps_everything_with_the_bypass_flag, "20 events")],
        failing: &[
            case!(
                drops_despite_the_bypass_flag,
                "capset(eff={cap_perfmon, cap_bpf}"
            ),
            case!(
                starts_a_thread_with_nothing_despite_the_bypass_flag,
                "tid 101"
            ),
            case!(emits_nothing_with_the_bypass_flag, "no event"),
        ],
    },
    Clause {
        id: "bypass.env",
        passing: &[case!(
            keeps_everything_with_the_bypass_variable,
            "20 events"
        )],
        failing: &[
            case!(drops_despite_the_bypass_variable, "capset("),
            case!(
                starts_a_thread_with_nothing_despite_the_bypass_variable,
                "tid 101"
            ),
        ],
    },
    Clause {
        id: "bypass.warns",
        passing: &[case!(warns_that_the_drop_is_bypassed)],
        failing: &[
            case!(keeps_everything_with_the_bypass_flag, "no such warning"),
            case!(warns_with_bypass_inside_another_word, "no such warning"),
        ],
    },
    Clause {
        id: "drop-failure.aborts",
        passing: &[case!(aborts_when_its_capset_fails)],
        failing: &[
            case!(carries_on_after_its_capset_fails, "stopped by capring"),
            case!(loads_a_program_before_aborting, "1 programs loaded"),
            case!(aborts_with_the_usage_code, "exit code 2"),
            case!(emits_events_before_aborting, "2 event lines"),
        ],
    },
    Clause {
        id: "drop-failure.no-program-left",
        passing: &[
            case!(aborts_when_its_capset_fails),
            case!(aborts_leaving_only_programs_it_found),
        ],
        failing: &[case!(aborts_leaving_a_program_loaded, "[42]")],
    },
    Clause {
        id: "drop-failure.bypass-runs",
        passing: &[
            case!(runs_without_trying_to_drop_under_bypass),
            case!(runs_although_its_drop_fails_under_bypass),
        ],
        failing: &[case!(
            gives_up_when_its_drop_fails_under_bypass,
            "it still tried a drop"
        )],
    },
    Clause {
        id: "drop-failure.message",
        passing: &[
            case!(aborts_when_its_capset_fails),
            case!(names_the_bounding_drop_it_could_not_make),
        ],
        failing: &[
            case!(aborts_without_naming_bypass, "bypass named: false"),
            case!(aborts_naming_no_operation, "operation named: false"),
            case!(aborts_naming_no_error, "error named: false"),
        ],
    },
    Clause {
        id: "add.required",
        passing: &[case!(adds_kill_to_the_required_ring_only)],
        failing: &[
            case!(
                keeps_the_added_capability_after_configuring,
                "in the steady state"
            ),
            case!(ignores_the_added_capability, "while configuring"),
        ],
    },
    Clause {
        id: "drop.required",
        passing: &[
            case!(configures_without_the_dropped_capability, "ran without it"),
            case!(
                refuses_to_run_without_the_dropped_capability,
                "refused to run"
            ),
        ],
        failing: &[
            case!(
                keeps_the_dropped_capability_while_configuring,
                "cap_net_admin"
            ),
            case!(neither_runs_nor_refuses_without_it, "exit code 1"),
        ],
    },
    Clause {
        id: "drop.requested",
        passing: &[case!(skips_its_operation_with_one_warning, "[1]")],
        failing: &[
            case!(raises_the_dropped_capability_anyway, "E={cap_sys_ptrace}"),
            case!(skips_its_operation_silently, "[0]"),
            case!(warns_at_every_skipped_operation, "[3]"),
        ],
    },
    Clause {
        id: "env.add-drop",
        passing: &[case!(follows_capabilities_add_and_drop)],
        failing: &[
            case!(ignores_capabilities_add, "while configuring"),
            case!(
                configures_with_what_capabilities_drop_removed,
                "cap_sys_ptrace"
            ),
        ],
    },
    Clause {
        id: "env.cli-wins",
        passing: &[
            case!(takes_add_from_the_command_line_and_drop_from_the_variable),
            case!(keeps_the_requested_capability_a_shadowed_drop_names),
        ],
        failing: &[
            case!(adds_the_shadowed_variables_capability_too, "cap_lease"),
            case!(
                ignores_every_variable_once_given_an_option,
                "cap_sys_ptrace"
            ),
            case!(
                applies_the_shadowed_variables_drop,
                "the variable's drop was applied"
            ),
        ],
    },
    Clause {
        id: "usage.exit",
        passing: &[
            case!(rejects_an_unknown_key_in_one_line),
            case!(rejects_a_bad_bypass_variable_in_one_line),
        ],
        failing: &[
            case!(accepts_an_unknown_key, "exit code 0"),
            case!(rejects_an_unknown_key_in_two_lines, "2 stderr lines"),
            case!(panics_on_an_unknown_key, "PANIC"),
            case!(
                drops_before_rejecting_an_unknown_key,
                "1 capability changes"
            ),
        ],
    },
    Clause {
        id: "usage.add-drop-conflict",
        passing: &[
            case!(names_the_conflicting_capability, "names it: true"),
            case!(names_the_conflict_without_its_prefix, "names it: true"),
            case!(
                names_only_the_capability_both_added_and_dropped,
                "names it: true"
            ),
        ],
        failing: &[
            case!(rejects_the_conflict_without_naming_it, "names it: false"),
            case!(names_the_conflict_but_exits_0, "exit code 0"),
        ],
    },
    Clause {
        id: "caps.missing-required.aborts",
        passing: &[case!(refuses_to_start_without_net_admin)],
        failing: &[
            case!(
                loads_a_program_before_refusing,
                "1 successful privileged operations"
            ),
            case!(runs_without_net_admin, "exit code 0"),
        ],
    },
    Clause {
        id: "caps.missing-required",
        passing: &[case!(refuses_to_start_without_net_admin)],
        failing: &[
            case!(refuses_without_naming_the_event, "the events: false"),
            case!(
                names_the_event_only_inside_another_word,
                "the events: false"
            ),
            case!(
                loads_a_program_before_refusing,
                "1 successful privileged operations"
            ),
        ],
    },
    Clause {
        id: "rules.unprivileged",
        passing: &[case!(
            rules_drops_everything_before_detecting,
            "3 detections"
        )],
        failing: &[
            case!(rules_keeps_its_permitted_set, "never reached E=P=∅"),
            case!(rules_detects_before_dropping, "first detection at +10 ms"),
            case!(rules_raises_a_capability_again, "tid 101 has E={cap_kill}"),
        ],
    },
    Clause {
        id: "rules.allcaps",
        passing: &[case!(rules_keeps_everything_with_allcaps)],
        failing: &[
            case!(rules_drops_despite_allcaps, "by tid 100"),
            case!(
                rules_starts_a_thread_with_nothing_despite_allcaps,
                "tid 101"
            ),
        ],
    },
    Clause {
        id: "rules.bypass-env",
        passing: &[case!(rules_keeps_everything_with_the_bypass_variable)],
        failing: &[case!(rules_drops_despite_the_bypass_variable, "by tid 100")],
    },
    Clause {
        id: "rules.no-add-drop",
        passing: &[case!(rules_rejects_add_in_one_line)],
        failing: &[
            case!(rules_accepts_add, "exit code 0"),
            case!(rules_drops_then_rejects_add, "1 capability changes"),
        ],
    },
    Clause {
        id: "rules.env-add-drop-ignored",
        passing: &[case!(rules_warns_about_both_variables, "2 warnings")],
        failing: &[
            case!(rules_ignores_the_variables_silently, "0 warnings"),
            case!(rules_warns_about_one_variable_only, "1 warnings"),
            case!(rules_refuses_the_variables, "exit code 2"),
        ],
    },
];

// ----- the meta-test ----------------------------------------------------------------------

/// A case's verdict, or the reason it is wrong.
fn judge_case(clause: &str, case: &Case, want: Verdict) -> Option<String> {
    let got = verdict(clause, &(case.build)());
    let culprit_missing = case.culprit.filter(|c| !got.observed.contains(c));
    if got.verdict == want && culprit_missing.is_none() {
        return None;
    }
    Some(format!(
        "{clause} / {}: expected {want:?}{}, got {got:?}",
        case.name,
        case.culprit
            .map(|c| format!(" naming `{c}`"))
            .unwrap_or_default()
    ))
}

#[test]
fn every_clause_passes_and_fails_on_hand_made_timelines() {
    let mut problems = Vec::new();
    for id in implemented() {
        let Some(clause) = TABLE.iter().find(|c| c.id == id) else {
            problems.push(format!("{id}: no hand-made case"));
            continue;
        };
        if clause.passing.is_empty() || clause.failing.is_empty() {
            problems.push(format!(
                "{id}: needs a passing and a failing hand-made case"
            ));
        }
        let passing = clause.passing.iter().map(|c| (c, Verdict::Pass));
        let failing = clause.failing.iter().map(|c| (c, Verdict::Fail));
        problems.extend(
            passing
                .chain(failing)
                .filter_map(|(c, v)| judge_case(id, c, v)),
        );
    }
    for c in TABLE {
        if !implemented().any(|id| id == c.id) {
            problems.push(format!("{}: in the table, but no check has that id", c.id));
        }
    }
    let (pass, fail): (usize, usize) = TABLE
        .iter()
        .map(|c| (c.passing.len(), c.failing.len()))
        .fold((0, 0), |(a, b), (p, f)| (a + p, b + f));
    println!(
        "hand-made: {} clauses, {pass} passing and {fail} failing cases",
        TABLE.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The clauses no negative control exists for fail on hand-made runs: here, and only here.
#[test]
fn the_clauses_without_a_negative_control_fail_here() {
    for id in HAND_MADE_FAILURES {
        let clause = TABLE.iter().find(|c| c.id == *id);
        assert!(
            clause.is_some_and(|c| !c.failing.is_empty()),
            "{id} is in HAND_MADE_FAILURES but has no failing hand-made case"
        );
    }
}

// ----- shared shapes ----------------------------------------------------------------------

fn ptrace() -> CapSet {
    caps(&[Cap::SYS_PTRACE])
}

fn sys_admin() -> CapSet {
    caps(&[Cap::SYS_ADMIN])
}

fn plus(set: CapSet, cap: Cap) -> CapSet {
    set.union(caps(&[cap]))
}

/// Configured in `ring` (Required at 1 ms, a load at 2 ms), Unprivileged at 5 ms, then
/// samples of two empty threads every 100 ms.
fn configured(ring: CapSet) -> Vec<Entry> {
    let mut e = vec![
        capset(1, PID, ring),
        load(2, ring),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    e
}

/// Samples of the leader with `leader` and the other thread with `other`, 100..=500 ms.
fn samples(leader: CapSet, other: CapSet) -> impl Iterator<Item = Entry> {
    (1..=5).map(move |i| sample(100 * i, leader, Some(other)))
}

/// A run of the `steady-state` scenario (execve+openat, 20 event lines from 10 ms).
fn steady(entries: Vec<Entry>) -> RunRecord {
    record(plan_for("steady-state"), entries, events(20), 0)
}

/// `steady` judged against a measured table: {cap_bpf, cap_perfmon} preferred, or
/// {cap_sys_admin}.
fn measured_steady(entries: Vec<Entry>) -> RunRecord {
    let plan = measured_plan_for("steady-state", &[required(), sys_admin()]);
    record(plan, entries, events(20), 0)
}

/// A run of the `requested-per-event` scenario (cap_sys_ptrace enabled per event).
fn per_event(entries: Vec<Entry>) -> RunRecord {
    record(plan_for("requested-per-event"), entries, events(4), 0)
}

/// Configured in `ring`, then at 100, 200, 300 and 400 ms a 2 ms operation in `op` (one
/// seen by a sample), back to `back`, with a sample at 50 ms past each.
fn operations(ring: CapSet, op: CapSet, back: CapSet) -> Vec<Entry> {
    let mut e = vec![
        capset(1, PID, ring),
        load(2, ring),
        capset(5, PID, CapSet::EMPTY),
    ];
    for i in 1..=4 {
        e.push(capset(100 * i, PID, op));
        if i == 2 {
            e.push(sample(100 * i + 1, op, None));
        }
        e.push(capset(100 * i + 2, PID, back));
        e.push(sample(100 * i + 50, back, None));
    }
    e
}

/// A thread whose sets are those of `thread(tid, effective)` changed by `f`.
fn thread_with(tid: i32, effective: CapSet, f: impl FnOnce(&mut ThreadCaps)) -> ThreadCaps {
    let mut t = thread(tid, effective);
    f(&mut t);
    t
}

// ----- ring.* -----------------------------------------------------------------------------

fn drops_to_required_before_loading() -> RunRecord {
    steady(good_steady())
}

fn loads_before_the_first_drop() -> RunRecord {
    let mut e = vec![load(0, all())];
    e.extend(good_steady());
    steady(e)
}

fn returns_to_all_capabilities_after_dropping() -> RunRecord {
    let mut e = good_steady();
    e.push(capset(600, PID, all()));
    steady(e)
}

fn never_drops() -> RunRecord {
    let mut e = vec![load(2, all())];
    e.extend(samples(all(), all()));
    steady(e)
}

/// Drops everything first, then raises the Required ring for the load.
fn enters_required_in_steps() -> RunRecord {
    let mut e = vec![
        capset(1, PID, CapSet::EMPTY),
        capset(2, PID, required()),
        load(3, required()),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    steady(e)
}

/// {cap_sys_admin}: a measured minimal set, but not the preferred one.
fn configures_with_a_measured_alternative_set() -> RunRecord {
    measured_steady(configured(sys_admin()))
}

fn configures_with_an_extra_capability() -> RunRecord {
    steady(configured(plus(required(), Cap::SYS_ADMIN)))
}

fn configures_with_bpf_alone() -> RunRecord {
    steady(configured(caps(&[Cap::BPF])))
}

fn configures_with_sys_admin_instead_of_bpf_and_perfmon() -> RunRecord {
    steady(configured(sys_admin()))
}

/// Loads with one measured minimal set, then with the other.
fn switches_measured_sets_while_configuring() -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(3, PID, sys_admin()),
        load(4, sys_admin()),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    measured_steady(e)
}

fn adds_kill_while_configuring_with_a_measured_set() -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(3, PID, plus(required(), Cap::KILL)),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    measured_steady(e)
}

fn returns_to_another_minimal_set_after_configuring() -> RunRecord {
    let mut e = configured(required());
    e.push(sample(600, sys_admin(), None));
    measured_steady(e)
}

fn raises_sys_admin_after_dropping() -> RunRecord {
    let mut e = good_steady();
    e.push(capset(600, PID, sys_admin()));
    e.push(capset(601, PID, CapSet::EMPTY));
    steady(e)
}

/// paranoid-3 wants {cap_sys_admin}; configured with {cap_bpf}, got EPERM, exited with the
/// capability code: the scenario needs it to run.
fn aborts_with_too_small_a_ring() -> RunRecord {
    let e = vec![
        capset(1, PID, caps(&[Cap::BPF])),
        capset(3, PID, CapSet::EMPTY),
    ];
    record(plan_for("paranoid-3"), e, vec![], 3)
}

fn still_in_required_at_the_first_event() -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        sample(15, required(), None),
        capset(50, PID, CapSet::EMPTY),
    ];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    steady(e)
}

fn exits_before_configuring() -> RunRecord {
    record(
        plan_for("steady-state"),
        vec![capset(1, PID, required())],
        vec![],
        1,
    )
}

fn loads_after_dropping_everything() -> RunRecord {
    let mut e = good_steady();
    e.push(load(150, CapSet::EMPTY));
    steady(e)
}

fn a_second_thread_keeps_required() -> RunRecord {
    let mut e = good_steady();
    e.retain(|e| !e.is_sample());
    e.extend(samples(CapSet::EMPTY, required()));
    steady(e)
}

/// Every thread with E = ∅ but P = {cap_sys_ptrace}, what its operations need.
fn keeps_only_ptrace_permitted() -> RunRecord {
    let mut e = operations(required(), ptrace(), CapSet::EMPTY);
    e.push(sample_of(
        600,
        vec![thread_ep(PID, CapSet::EMPTY, ptrace())],
    ));
    per_event(e)
}

fn a_second_thread_keeps_everything_permitted() -> RunRecord {
    let mut e = configured(required());
    e.retain(|e| !e.is_sample());
    let threads = vec![
        thread(PID, CapSet::EMPTY),
        thread_ep(OTHER, CapSet::EMPTY, all()),
    ];
    e.push(sample_of(100, threads));
    steady(e)
}

/// B = everything at exec, emptied before the first load.
fn clears_the_bounding_set_before_loading() -> RunRecord {
    let mut e = vec![sample_of(
        0,
        vec![thread_with(PID, all(), |t| t.bounding = all())],
    )];
    e.extend(good_steady());
    steady(e)
}

fn a_second_thread_keeps_the_bounding_set() -> RunRecord {
    let mut e = configured(required());
    let threads = vec![
        thread(PID, CapSet::EMPTY),
        thread_with(OTHER, CapSet::EMPTY, |t| t.bounding = all()),
    ];
    e.push(sample_of(600, threads));
    steady(e)
}

/// I = everything at exec, emptied by the first capset.
fn clears_inheritable_with_its_first_capset() -> RunRecord {
    let mut e = vec![sample_of(
        0,
        vec![thread_with(PID, all(), |t| t.inheritable = all())],
    )];
    e.extend(good_steady());
    steady(e)
}

fn raises_an_ambient_capability_after_dropping() -> RunRecord {
    let mut e = good_steady();
    let raw = caps(&[Cap::NET_RAW]);
    e.push(sample_of(
        600,
        vec![thread_with(PID, raw, |t| t.ambient = raw)],
    ));
    steady(e)
}

fn a_second_thread_keeps_its_inheritable_set() -> RunRecord {
    let mut e = configured(required());
    let kill = caps(&[Cap::KILL]);
    let threads = vec![
        thread(PID, CapSet::EMPTY),
        thread_with(OTHER, CapSet::EMPTY, |t| t.inheritable = kill),
    ];
    e.push(sample_of(600, threads));
    steady(e)
}

fn a_second_thread_is_left_with_everything() -> RunRecord {
    let mut e = good_steady();
    e.retain(|e| !e.is_sample());
    e.extend((1..=3).map(|i| sample(100 * i, CapSet::EMPTY, Some(all()))));
    steady(e)
}

/// Seen apart by two samples, then its own capset brings it along within the window.
fn a_second_thread_converges_within_the_window() -> RunRecord {
    let mut e = good_steady();
    e.retain(|e| !e.is_sample());
    e.push(sample(100, CapSet::EMPTY, Some(required())));
    e.push(sample(110, CapSet::EMPTY, Some(required())));
    e.push(capset(120, OTHER, CapSet::EMPTY));
    e.push(sample(200, CapSet::EMPTY, Some(CapSet::EMPTY)));
    steady(e)
}

// ----- ring.requested.* -------------------------------------------------------------------

fn raises_ptrace_alone_per_event() -> RunRecord {
    per_event(operations(required(), ptrace(), CapSet::EMPTY))
}

fn raises_ptrace_with_required_kept() -> RunRecord {
    per_event(operations(
        required(),
        required().union(ptrace()),
        CapSet::EMPTY,
    ))
}

fn raises_sys_admin_for_an_operation() -> RunRecord {
    per_event(operations(required(), sys_admin(), CapSet::EMPTY))
}

fn never_raises_ptrace() -> RunRecord {
    per_event(good_steady())
}

fn returns_to_required_after_its_operation() -> RunRecord {
    let mut e = operations(required(), ptrace(), CapSet::EMPTY);
    e.push(capset(600, PID, ptrace()));
    e.push(capset(601, PID, required()));
    per_event(e)
}

/// Raises cap_sys_ptrace once and keeps it, with a capset per event that changes nothing and
/// samples that always see it.
fn requested_kept_raised_with_no_op_capsets() -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, ptrace()),
    ];
    for i in 1..=4 {
        e.push(capset(10 * i + 5, PID, ptrace()));
        e.push(sample(100 * i, ptrace(), None));
    }
    per_event(e)
}

/// Requested stretches between a Required and an Unprivileged start: entering cap_sys_ptrace
/// at 400 ms, settled samples at `seen` (ms), lowering at `until`; extra event lines at
/// `lines` (ms).
fn requested_stretch(seen: &[u64], until: u64, lines: &[u64]) -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, CapSet::EMPTY),
        sample(100, CapSet::EMPTY, None),
        sample(200, CapSet::EMPTY, None),
        capset(400, PID, ptrace()),
    ];
    e.extend(seen.iter().map(|t| sample(*t, ptrace(), None)));
    e.push(capset(until, PID, CapSet::EMPTY));
    e.push(sample(until + 100, CapSet::EMPTY, None));
    let mut out = events(8);
    out.extend(
        lines
            .iter()
            .map(|t| line(*t, Stream::Stdout, "{\"event\":2}", true)),
    );
    record(plan_for("requested-per-event"), e, out, 0)
}

/// Under emulation on a loaded machine one operation (raise, open, lower: every capset a
/// traced stop of every thread) was seen by two samples 104 ms apart, with one event line
/// read late in between (7.2 guest during a full test run): slow, not parked.
fn a_slow_single_operation() -> RunRecord {
    requested_stretch(&[410, 514], 535, &[411])
}

/// The same short stretch, but the tracer went on writing events in it: parked.
fn a_short_stretch_with_events_written_in_it() -> RunRecord {
    requested_stretch(&[410, 514], 535, &[430, 460, 490])
}

/// Longer than an operation may take, though no sample saw it.
fn keeps_ptrace_raised_for_550_ms() -> RunRecord {
    requested_stretch(&[], 950, &[])
}

fn keeps_ptrace_for_a_tenth_of_the_time() -> RunRecord {
    per_event(vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, CapSet::EMPTY),
        sample(100, CapSet::EMPTY, None),
        capset(400, PID, ptrace()),
        capset(500, PID, CapSet::EMPTY),
        sample(600, CapSet::EMPTY, None),
    ])
}

/// A helper thread seen with every capability while configuring, which exits at `exit_ms`;
/// the leader drops to ∅ and is sampled alone afterwards.
fn raised_helper_exiting_at(exit_ms: u64) -> RunRecord {
    let mut e = vec![
        capset(1, PID, required()),
        load(2, required()),
        sample(4, CapSet::EMPTY, Some(all())),
        capset(5, PID, CapSet::EMPTY),
    ];
    e.extend((1..=5).map(|i| sample(100 * i, CapSet::EMPTY, None)));
    let exit = entry(
        exit_ms,
        OTHER,
        Event::ThreadExit {
            status: Status::Code(0),
        },
        vec![],
    );
    e.push(exit);
    e.sort_by_key(|e| e.t_ns);
    steady(e)
}

fn a_raised_helper_exits_before_readiness() -> RunRecord {
    raised_helper_exiting_at(6)
}

fn a_raised_helper_exits_in_the_steady_state() -> RunRecord {
    raised_helper_exiting_at(100)
}

// ----- help.* -----------------------------------------------------------------------------

/// `--capabilities help` that wrote `text` (one line each) and exited with `code`.
fn help_run(text: &str, entries: Vec<Entry>, code: i32) -> RunRecord {
    let lines = text
        .lines()
        .map(|l| line(1, Stream::Stdout, l, true))
        .collect();
    record(plan_for("help"), entries, lines, code)
}

/// `N cap_name` for capabilities 0 through `last`.
fn listing(last: u8) -> String {
    CapSet::all_up_to(last)
        .iter()
        .map(|c| format!("{} {}\n", c.number(), c.name()))
        .collect()
}

fn lists_every_capability_by_number_and_name() -> RunRecord {
    help_run(&listing(40), vec![], 0)
}

/// "ebpf" does not name cap_bpf: names are whole words.
fn writes_ebpf_where_cap_bpf_belongs() -> RunRecord {
    help_run(&listing(40).replace("cap_bpf", "ebpf"), vec![], 0)
}

/// An older kernel's list (cap_syslog is 34) on a kernel that knows 40.
fn lists_only_the_capabilities_up_to_cap_syslog() -> RunRecord {
    help_run(&listing(34), vec![], 0)
}

/// A kernel before 5.8: cap_audit_read (37) is its last capability.
fn on_an_older_kernel(mut r: RunRecord) -> RunRecord {
    r.plan.facts.cap_last_cap = 37;
    r
}

fn lists_an_older_kernels_capabilities() -> RunRecord {
    on_an_older_kernel(help_run(&listing(37), vec![], 0))
}

/// cap_perfmon, cap_bpf and cap_checkpoint_restore listed where the kernel has none of them.
fn lists_capabilities_an_older_kernel_lacks() -> RunRecord {
    on_an_older_kernel(help_run(&listing(40), vec![], 0))
}

fn lists_then_loads_a_program() -> RunRecord {
    help_run(&listing(40), vec![load(2, all())], 0)
}

fn exits_1_after_listing() -> RunRecord {
    help_run(&listing(40), vec![], 1)
}

// ----- bypass.* ---------------------------------------------------------------------------

/// A run of `scenario` that loads with everything and keeps it on both threads.
fn keeps_everything(scenario: &str, lines: Vec<capring_observe::observer::Line>) -> RunRecord {
    let mut e = vec![load(2, all())];
    e.extend(samples(all(), all()));
    record(plan_for(scenario), e, lines, 0)
}

/// A second thread that starts with nothing, the leader keeping everything.
fn a_thread_with_nothing(scenario: &str) -> RunRecord {
    let mut e = vec![load(2, all())];
    e.extend(samples(all(), CapSet::EMPTY));
    record(plan_for(scenario), e, events(20), 0)
}

fn keeps_everything_with_the_bypass_flag() -> RunRecord {
    keeps_everything("bypass-flag", events(20))
}

fn drops_despite_the_bypass_flag() -> RunRecord {
    record(plan_for("bypass-flag"), good_steady(), events(20), 0)
}

fn starts_a_thread_with_nothing_despite_the_bypass_flag() -> RunRecord {
    a_thread_with_nothing("bypass-flag")
}

fn emits_nothing_with_the_bypass_flag() -> RunRecord {
    keeps_everything("bypass-flag", vec![])
}

fn keeps_everything_with_the_bypass_variable() -> RunRecord {
    keeps_everything("bypass-env", events(20))
}

fn drops_despite_the_bypass_variable() -> RunRecord {
    record(plan_for("bypass-env"), good_steady(), events(20), 0)
}

fn starts_a_thread_with_nothing_despite_the_bypass_variable() -> RunRecord {
    a_thread_with_nothing("bypass-env")
}

fn warns_that_the_drop_is_bypassed() -> RunRecord {
    let mut lines = events(20);
    lines.extend(stderr(&[
        "warning: capabilities drop bypassed: running with all of them",
    ]));
    keeps_everything("bypass-flag", lines)
}

/// "nobypass" is not the word bypass.
fn warns_with_bypass_inside_another_word() -> RunRecord {
    let mut lines = events(20);
    lines.extend(stderr(&["warning: nobypass mode is off"]));
    keeps_everything("bypass-flag", lines)
}

// ----- drop-failure.* ---------------------------------------------------------------------

const CAPSET_ABORT: &str =
    "error: capset: Operation not permitted (EPERM); use --capabilities bypass=1 to run anyway";

/// A `capset-fails` run: capset fails with EPERM at 1 ms, then `rest`.
fn capset_fails(
    rest: Vec<Entry>,
    lines: Vec<capring_observe::observer::Line>,
    code: i32,
) -> RunRecord {
    let mut e = vec![fault(FaultKind::CapsetEperm), capset_eperm(1, all())];
    e.extend(rest);
    record(plan_for("capset-fails"), e, lines, code)
}

fn aborts_when_its_capset_fails() -> RunRecord {
    capset_fails(vec![], stderr(&[CAPSET_ABORT]), 3)
}

fn carries_on_after_its_capset_fails() -> RunRecord {
    let mut r = capset_fails(vec![load(2, all())], events(5), 0);
    r.observation.exit.stopped_by_harness = true;
    r
}

fn loads_a_program_before_aborting() -> RunRecord {
    capset_fails(vec![load(2, all())], stderr(&[CAPSET_ABORT]), 3)
}

fn emits_events_before_aborting() -> RunRecord {
    let mut lines = events(2);
    lines.extend(stderr(&[CAPSET_ABORT]));
    capset_fails(vec![], lines, 3)
}

fn aborts_with_the_usage_code() -> RunRecord {
    capset_fails(vec![], stderr(&[CAPSET_ABORT]), 2)
}

fn aborts_leaving_only_programs_it_found() -> RunRecord {
    let mut r = aborts_when_its_capset_fails();
    r.programs_before = [7].into();
    r.programs_after = [7].into();
    r
}

fn aborts_leaving_a_program_loaded() -> RunRecord {
    let mut r = aborts_when_its_capset_fails();
    r.programs_before = [7].into();
    r.programs_after = [7, 42].into();
    r
}

fn aborts_without_naming_bypass() -> RunRecord {
    capset_fails(
        vec![],
        stderr(&["error: capset: Operation not permitted"]),
        3,
    )
}

fn aborts_naming_no_operation() -> RunRecord {
    let text = "error: Operation not permitted; use --capabilities bypass=1 to run anyway";
    capset_fails(vec![], stderr(&[text]), 3)
}

fn aborts_naming_no_error() -> RunRecord {
    let text = "error: capset failed; use --capabilities bypass=1 to run anyway";
    capset_fails(vec![], stderr(&[text]), 3)
}

/// The failed bounding drop named by its capability, bypass by the tracer's variable.
fn names_the_bounding_drop_it_could_not_make() -> RunRecord {
    let e = vec![
        fault(FaultKind::CapbsetDropEperm),
        capbset_drop(1, Cap::SYS_ADMIN, -1, all()),
    ];
    let text = "error: cannot drop cap_sys_admin: Operation not permitted; set CAPABILITIES_BYPASS=1 to run anyway";
    record(plan_for("capbset-drop-fails"), e, stderr(&[text]), 3)
}

/// A `capset-fails-bypass` run (every drop fails, bypass=1): the faults, then `rest`.
fn bypassed_failing(
    rest: Vec<Entry>,
    lines: Vec<capring_observe::observer::Line>,
    code: i32,
) -> RunRecord {
    let mut e = vec![
        fault(FaultKind::CapsetEperm),
        fault(FaultKind::CapbsetDropEperm),
    ];
    e.extend(rest);
    record(plan_for("capset-fails-bypass"), e, lines, code)
}

fn runs_without_trying_to_drop_under_bypass() -> RunRecord {
    let mut e = vec![load(2, all())];
    e.extend(samples(all(), all()));
    bypassed_failing(e, events(20), 0)
}

fn runs_although_its_drop_fails_under_bypass() -> RunRecord {
    bypassed_failing(vec![capset_eperm(1, all()), load(2, all())], events(20), 0)
}

fn gives_up_when_its_drop_fails_under_bypass() -> RunRecord {
    bypassed_failing(vec![capset_eperm(1, all())], stderr(&[CAPSET_ABORT]), 3)
}

// ----- add.* / drop.* / env.* -------------------------------------------------------------

fn net_admin_dropped(
    entries: Vec<Entry>,
    lines: Vec<capring_observe::observer::Line>,
    code: i32,
) -> RunRecord {
    record(plan_for("drop-flag"), entries, lines, code)
}

fn bpf() -> CapSet {
    caps(&[Cap::BPF])
}

fn adds_kill_to_the_required_ring_only() -> RunRecord {
    record(
        plan_for("add-flag"),
        configured(plus(required(), Cap::KILL)),
        events(20),
        0,
    )
}

/// Tracee since v0.14: `add` changes the Base ring, effective all the time.
fn keeps_the_added_capability_after_configuring() -> RunRecord {
    let kill = caps(&[Cap::KILL]);
    let mut e = vec![
        capset(1, PID, plus(required(), Cap::KILL)),
        load(2, plus(required(), Cap::KILL)),
        capset(5, PID, kill),
    ];
    e.extend(samples(kill, kill));
    record(plan_for("add-flag"), e, events(20), 0)
}

fn ignores_the_added_capability() -> RunRecord {
    record(plan_for("add-flag"), configured(required()), events(20), 0)
}

fn configures_without_the_dropped_capability() -> RunRecord {
    net_admin_dropped(configured(bpf()), events(10), 0)
}

fn refuses_to_run_without_the_dropped_capability() -> RunRecord {
    net_admin_dropped(vec![capset(1, PID, bpf())], vec![], 3)
}

fn keeps_the_dropped_capability_while_configuring() -> RunRecord {
    net_admin_dropped(configured(plus(bpf(), Cap::NET_ADMIN)), events(10), 0)
}

fn neither_runs_nor_refuses_without_it() -> RunRecord {
    net_admin_dropped(vec![capset(1, PID, bpf())], vec![], 1)
}

/// A `drop-requested` run (cap_sys_ptrace dropped: hash-exe disabled) writing `warnings`.
fn ptrace_dropped(entries: Vec<Entry>, warnings: usize) -> RunRecord {
    let mut lines = events(4);
    let text = "warning: hash-exe skipped: cap_sys_ptrace was dropped";
    lines.extend((0..warnings).map(|_| line(20, Stream::Stderr, text, false)));
    record(plan_for("drop-requested"), entries, lines, 0)
}

fn skips_its_operation_with_one_warning() -> RunRecord {
    ptrace_dropped(good_steady(), 1)
}

fn raises_the_dropped_capability_anyway() -> RunRecord {
    ptrace_dropped(operations(required(), ptrace(), CapSet::EMPTY), 1)
}

fn skips_its_operation_silently() -> RunRecord {
    ptrace_dropped(good_steady(), 0)
}

fn warns_at_every_skipped_operation() -> RunRecord {
    ptrace_dropped(good_steady(), 3)
}

/// An `env-add-drop` run: CAPABILITIES_ADD=cap_kill, CAPABILITIES_DROP=cap_sys_ptrace.
fn by_variables(ring: CapSet) -> RunRecord {
    record(plan_for("env-add-drop"), configured(ring), events(20), 0)
}

fn follows_capabilities_add_and_drop() -> RunRecord {
    by_variables(plus(required(), Cap::KILL))
}

fn ignores_capabilities_add() -> RunRecord {
    by_variables(required())
}

fn configures_with_what_capabilities_drop_removed() -> RunRecord {
    by_variables(plus(plus(required(), Cap::KILL), Cap::SYS_PTRACE))
}

/// An `env-cli-wins-add` run: add=cap_kill on the command line shadows CAPABILITIES_ADD=
/// cap_lease; CAPABILITIES_DROP=cap_sys_ptrace still holds.
fn cli_add_wins(entries: Vec<Entry>) -> RunRecord {
    record(plan_for("env-cli-wins-add"), entries, events(20), 0)
}

fn takes_add_from_the_command_line_and_drop_from_the_variable() -> RunRecord {
    cli_add_wins(configured(plus(required(), Cap::KILL)))
}

fn adds_the_shadowed_variables_capability_too() -> RunRecord {
    cli_add_wins(configured(plus(plus(required(), Cap::KILL), Cap::LEASE)))
}

/// Tracee's entrypoint: any argument and every variable is ignored, so the variable's drop
/// of cap_sys_ptrace is lost and its operation raises it.
fn ignores_every_variable_once_given_an_option() -> RunRecord {
    cli_add_wins(operations(
        plus(required(), Cap::KILL),
        ptrace(),
        CapSet::EMPTY,
    ))
}

/// An `env-cli-wins-drop` run: drop=cap_kill on the command line shadows
/// CAPABILITIES_DROP=cap_sys_ptrace, so hash-exe keeps its capability.
fn cli_drop_wins(entries: Vec<Entry>) -> RunRecord {
    record(plan_for("env-cli-wins-drop"), entries, events(4), 0)
}

fn keeps_the_requested_capability_a_shadowed_drop_names() -> RunRecord {
    cli_drop_wins(operations(required(), ptrace(), CapSet::EMPTY))
}

fn applies_the_shadowed_variables_drop() -> RunRecord {
    cli_drop_wins(good_steady())
}

// ----- usage.* / caps.* -------------------------------------------------------------------

fn rejects_an_unknown_key_in_one_line() -> RunRecord {
    usage_run(
        "usage-unknown-key",
        2,
        &["--capabilities: unknown key 'frobnicate'"],
    )
}

fn rejects_a_bad_bypass_variable_in_one_line() -> RunRecord {
    usage_run(
        "usage-bad-env-bypass",
        2,
        &["CAPABILITIES_BYPASS: bad value 'maybe'"],
    )
}

fn accepts_an_unknown_key() -> RunRecord {
    usage_run("usage-unknown-key", 0, &["ok"])
}

fn rejects_an_unknown_key_in_two_lines() -> RunRecord {
    usage_run("usage-unknown-key", 2, &["error: frobnicate", "more"])
}

fn panics_on_an_unknown_key() -> RunRecord {
    usage_run(
        "usage-unknown-key",
        2,
        &["thread 'main' panicked at src/x.rs"],
    )
}

fn drops_before_rejecting_an_unknown_key() -> RunRecord {
    let text = "--capabilities: unknown key 'frobnicate'";
    record(
        plan_for("usage-unknown-key"),
        vec![capset(1, PID, CapSet::EMPTY)],
        stderr(&[text]),
        2,
    )
}

fn names_the_conflicting_capability() -> RunRecord {
    usage_run(
        "usage-add-drop-conflict",
        2,
        &["capability cap_kill is both added and dropped"],
    )
}

fn names_the_conflict_without_its_prefix() -> RunRecord {
    usage_run(
        "usage-add-drop-conflict",
        2,
        &["KILL is both added and dropped"],
    )
}

/// add=cap_kill,cap_lease with drop=cap_kill: only cap_kill is in conflict.
fn names_only_the_capability_both_added_and_dropped() -> RunRecord {
    let mut r = names_the_conflicting_capability();
    r.plan.scenario.cli = vec!["add=cap_kill,cap_lease".into(), "drop=cap_kill".into()];
    r
}

fn rejects_the_conflict_without_naming_it() -> RunRecord {
    usage_run("usage-add-drop-conflict", 2, &["bad option"])
}

fn names_the_conflict_but_exits_0() -> RunRecord {
    usage_run(
        "usage-add-drop-conflict",
        0,
        &["capability cap_kill is both added and dropped"],
    )
}

/// A `missing-required` run (cap_net_admin, which net_packet needs, not permitted).
fn missing_net_admin(entries: Vec<Entry>, message: &str, code: i32) -> RunRecord {
    record(
        plan_for("missing-required"),
        entries,
        stderr(&[message]),
        code,
    )
}

const MISSING: &str = "error: cap_net_admin is not permitted; needed by: net_packet";

fn refuses_to_start_without_net_admin() -> RunRecord {
    missing_net_admin(vec![], MISSING, 3)
}

fn loads_a_program_before_refusing() -> RunRecord {
    missing_net_admin(vec![load(2, bpf())], MISSING, 3)
}

fn runs_without_net_admin() -> RunRecord {
    record(
        plan_for("missing-required"),
        configured(bpf()),
        events(10),
        0,
    )
}

fn refuses_without_naming_the_event() -> RunRecord {
    missing_net_admin(vec![], "error: cap_net_admin is not permitted", 3)
}

fn names_the_event_only_inside_another_word() -> RunRecord {
    missing_net_admin(vec![], &format!("{MISSING}_v2"), 3)
}

// ----- rules.* ----------------------------------------------------------------------------

fn rules_run(name: &str, entries: Vec<Entry>) -> RunRecord {
    record(plan_for(name), entries, events(3), 0)
}

fn rules_drops_everything_before_detecting() -> RunRecord {
    let mut e = vec![capset(1, PID, CapSet::EMPTY)];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    rules_run("rules-default", e)
}

/// E = ∅ but P kept: it could raise anything again.
fn rules_keeps_its_permitted_set() -> RunRecord {
    let e = (1..=3)
        .map(|i| sample_of(100 * i, vec![thread_ep(PID, CapSet::EMPTY, all())]))
        .collect();
    rules_run("rules-default", e)
}

fn rules_detects_before_dropping() -> RunRecord {
    let mut e = vec![capset(50, PID, CapSet::EMPTY)];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    rules_run("rules-default", e)
}

fn rules_raises_a_capability_again() -> RunRecord {
    let mut e = vec![capset(1, PID, CapSet::EMPTY)];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    e.push(sample(600, CapSet::EMPTY, Some(caps(&[Cap::KILL]))));
    rules_run("rules-default", e)
}

fn rules_keeps_everything_with_allcaps() -> RunRecord {
    rules_run("rules-allcaps", samples(all(), all()).collect())
}

fn rules_drops_despite_allcaps() -> RunRecord {
    rules_drops_despite("rules-allcaps")
}

fn rules_drops_despite(name: &str) -> RunRecord {
    let mut e = vec![capset(1, PID, CapSet::EMPTY)];
    e.extend(samples(CapSet::EMPTY, CapSet::EMPTY));
    rules_run(name, e)
}

fn rules_starts_a_thread_with_nothing_despite_allcaps() -> RunRecord {
    rules_run("rules-allcaps", samples(all(), CapSet::EMPTY).collect())
}

fn rules_keeps_everything_with_the_bypass_variable() -> RunRecord {
    rules_run("rules-bypass-env", samples(all(), all()).collect())
}

fn rules_drops_despite_the_bypass_variable() -> RunRecord {
    rules_drops_despite("rules-bypass-env")
}

const RULES_REJECT: &str = "--capabilities is not supported by the rules engine";

fn rules_rejects_add_in_one_line() -> RunRecord {
    usage_run("rules-add-rejected", 2, &[RULES_REJECT])
}

fn rules_accepts_add() -> RunRecord {
    usage_run("rules-add-rejected", 0, &[])
}

fn rules_drops_then_rejects_add() -> RunRecord {
    let e = vec![capset(1, PID, CapSet::EMPTY)];
    record(
        plan_for("rules-add-rejected"),
        e,
        stderr(&[RULES_REJECT]),
        2,
    )
}

/// A `rules-env-add-ignored` run (CAPABILITIES_ADD and _DROP set) that wrote `warnings`.
fn rules_with_variables(warnings: &[&str], code: i32) -> RunRecord {
    let mut lines = if code == 0 { events(3) } else { vec![] };
    lines.extend(stderr(warnings));
    record(plan_for("rules-env-add-ignored"), vec![], lines, code)
}

const ADD_IGNORED: &str = "warning: CAPABILITIES_ADD is ignored";
const DROP_IGNORED: &str = "warning: CAPABILITIES_DROP is ignored";

fn rules_warns_about_both_variables() -> RunRecord {
    rules_with_variables(&[ADD_IGNORED, DROP_IGNORED], 0)
}

fn rules_ignores_the_variables_silently() -> RunRecord {
    rules_with_variables(&[], 0)
}

fn rules_warns_about_one_variable_only() -> RunRecord {
    rules_with_variables(&[ADD_IGNORED], 0)
}

fn rules_refuses_the_variables() -> RunRecord {
    rules_with_variables(&[ADD_IGNORED, DROP_IGNORED], 2)
}
