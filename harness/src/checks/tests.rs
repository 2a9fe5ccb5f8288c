//! Checks on small hand-made timelines: the edge cases recorded runs cannot pin down (a
//! stretch seen twice, a word inside another word, a fault never hit), and the failing case
//! of the clauses no negative control exists for ([`HAND_MADE_FAILURES`]). The recorded
//! runs (`harness/tests/recorded.rs`) test every check both ways on real tracers.

use capring_spec::caps::{Cap, CapSet};
use capring_spec::facts::EnvFacts;

use super::fixtures::*;
use super::*;
use crate::run::RunRecord;
use crate::timeline::{Call, Event, FaultKind, Stream};

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

#[test]
fn a_good_steady_state_passes_the_ring_clauses() {
    let r = record(plan_for("steady-state"), good_steady(), events(20), 0);
    for c in [
        "ring.privileged.bypass-only",
        "ring.required.exact",
        "ring.required.config-only",
        "ring.unprivileged.empty",
        "ring.no-excess",
        "threads.same-ring",
        "syscalls.privileged-in-ring",
    ] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Pass, "{c}: {v:?}");
    }
}

#[test]
fn an_abort_is_not_a_steady_state() {
    // Configured with too small a ring, got EPERM, exited with the capability code: the
    // scenario needs it to run, so the clauses that judge the steady state fail.
    let entries = vec![
        capset(1, PID, caps(&[Cap::BPF])),
        capset(3, PID, CapSet::EMPTY),
    ];
    let r = record(plan_for("paranoid-3"), entries, vec![], 3);
    for c in [
        "ring.unprivileged.empty",
        "ring.required.exact",
        "ring.required.config-only",
    ] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Fail, "{c}: {v:?}");
    }
}

#[test]
fn a_tracer_that_never_drops_never_enters_the_required_ring() {
    let all = EnvFacts::example().permitted;
    let mut entries = vec![load(2, all)];
    entries.extend((1..=3).map(|i| sample(100 * i, all, None)));
    let r = record(plan_for("steady-state"), entries, events(5), 0);
    let v = verdict("ring.required.config-only", &r);
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert!(v.observed.contains("no thread was ever in it"), "{v:?}");
    // A single thread: same-ring has nothing to compare.
    assert_eq!(
        verdict("threads.same-ring", &r).verdict,
        Verdict::NotApplicable
    );
}

#[test]
fn a_requested_ring_kept_with_no_op_capsets_is_parked() {
    let ptrace = caps(&[Cap::SYS_PTRACE]);
    let mut entries = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, ptrace),
    ];
    // A capset per event that changes nothing, and samples that always see the ring.
    for i in 1..=4 {
        entries.push(capset(10 * i + 5, PID, ptrace));
        entries.push(sample(100 * i, ptrace, None));
    }
    let r = record(plan_for("requested-per-event"), entries, events(4), 0);
    for c in ["ring.requested.returns", "ring.unprivileged.empty"] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Fail, "{c}: {v:?}");
    }
}

/// Requested stretches between a Required and an Unprivileged start: entering `ptrace` at
/// 400 ms, settled samples at `seen` (ms), lowering at `until`; event lines at `lines` (ms).
fn requested_stretch(seen: &[u64], until: u64, lines: &[u64]) -> RunRecord {
    let ptrace = caps(&[Cap::SYS_PTRACE]);
    let mut entries = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, CapSet::EMPTY),
        sample(100, CapSet::EMPTY, None),
        sample(200, CapSet::EMPTY, None),
        capset(400, PID, ptrace),
    ];
    entries.extend(seen.iter().map(|t| sample(*t, ptrace, None)));
    entries.push(capset(until, PID, CapSet::EMPTY));
    entries.push(sample(until + 100, CapSet::EMPTY, None));
    let mut out = events(8);
    out.extend(
        lines
            .iter()
            .map(|t| line(*t, Stream::Stdout, "{\"event\":2}", true)),
    );
    record(plan_for("requested-per-event"), entries, out, 0)
}

/// Under emulation on a loaded machine one operation (raise, open, lower: every capset a
/// traced stop of every thread) was seen by two samples 104 ms apart, with one event line
/// read late in between (7.2 guest during a full test run): slow, not parked.
#[test]
fn a_slow_single_operation_is_not_parked() {
    let r = requested_stretch(&[410, 514], 535, &[411]);
    for c in ["ring.requested.returns", "ring.unprivileged.empty"] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Pass, "{c}: {v:?}");
    }
}

/// The same short stretch, but the tracer went on writing events in it: parked.
#[test]
fn a_short_stretch_with_events_written_in_it_is_parked() {
    let r = requested_stretch(&[410, 514], 535, &[430, 460, 490]);
    for c in ["ring.requested.returns", "ring.unprivileged.empty"] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Fail, "{c}: {v:?}");
    }
}

#[test]
fn short_requested_operations_return() {
    let ptrace = caps(&[Cap::SYS_PTRACE]);
    let mut entries = vec![
        capset(1, PID, required()),
        load(2, required()),
        capset(5, PID, CapSet::EMPTY),
    ];
    for i in 1..=4 {
        entries.push(capset(100 * i, PID, ptrace));
        // a sample lands inside one operation: a short moment, not a parked ring
        if i == 2 {
            entries.push(sample(100 * i + 1, ptrace, None));
        }
        entries.push(capset(100 * i + 2, PID, CapSet::EMPTY));
        entries.push(sample(100 * i + 50, CapSet::EMPTY, None));
    }
    let r = record(plan_for("requested-per-event"), entries, events(4), 0);
    for c in [
        "ring.requested.returns",
        "ring.requested.single",
        "ring.unprivileged.empty",
        "ring.no-excess",
    ] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::Pass, "{c}: {v:?}");
    }
    // Returning to another ring than the one it came from fails.
    let mut entries = r.observation.timeline.entries.clone();
    entries.push(capset(600, PID, ptrace));
    entries.push(capset(601, PID, required()));
    let r = record(plan_for("requested-per-event"), entries, events(4), 0);
    let v = verdict("ring.requested.returns", &r);
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert!(v.observed.contains("the ring it came from"), "{v:?}");
}

#[test]
fn a_lasting_thread_split_fails_same_ring_and_a_converging_one_does_not() {
    let all = EnvFacts::example().permitted;
    let mut split = good_steady();
    split.retain(|e| !e.is_sample());
    split.extend((1..=3).map(|i| sample(100 * i, CapSet::EMPTY, Some(all))));
    let r = record(plan_for("steady-state"), split, events(20), 0);
    let v = verdict("threads.same-ring", &r);
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert!(v.observed.contains("tid 101"), "{v:?}");
    // The other thread's own capset brings it along within the convergence window.
    let mut converging = good_steady();
    converging.retain(|e| !e.is_sample());
    converging.push(sample(100, CapSet::EMPTY, Some(required())));
    converging.push(sample(110, CapSet::EMPTY, Some(required())));
    converging.push(capset(120, OTHER, CapSet::EMPTY));
    converging.push(sample(200, CapSet::EMPTY, Some(CapSet::EMPTY)));
    let r = record(plan_for("steady-state"), converging, events(20), 0);
    assert_eq!(verdict("threads.same-ring", &r).verdict, Verdict::Pass);
}

#[test]
fn names_are_whole_words() {
    let words = tokens("eBPF tracer: CAP_SYS_ADMIN, perfmon and execve_x");
    assert!(words.contains("ebpf") && !words.contains("bpf"));
    assert!(view::names_cap(&words, Cap::SYS_ADMIN));
    assert!(view::names_cap(&words, Cap::PERFMON));
    assert!(!view::names_cap(&words, Cap::BPF));
    assert!(!words.contains("execve"));
}

#[test]
fn help_must_list_every_capability_by_name() {
    let listing: String = CapSet::all_up_to(40)
        .iter()
        .map(|c| format!("{} {}\n", c.number(), c.name()))
        .collect();
    let lines = |text: &str| {
        text.lines()
            .map(|l| line(1, Stream::Stdout, l, true))
            .collect::<Vec<_>>()
    };
    let r = record(plan_for("help"), vec![], lines(&listing), 0);
    assert_eq!(verdict("help.lists-kernel-caps", &r).verdict, Verdict::Pass);
    // "ebpf" does not name cap_bpf.
    let no_bpf = listing.replace("cap_bpf", "ebpf");
    let r = record(plan_for("help"), vec![], lines(&no_bpf), 0);
    let v = verdict("help.lists-kernel-caps", &r);
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert!(v.observed.contains("missing {cap_bpf}"), "{v:?}");
}

#[test]
fn a_fault_the_tracer_never_hit_is_not_applicable() {
    // capset-fails, but the tracer never calls capset: ran normally until stopped.
    let mut entries = vec![entry(
        0,
        PID,
        Event::Condition {
            condition: crate::timeline::Condition::Fault {
                fault: FaultKind::CapsetEperm,
            },
        },
        vec![],
    )];
    entries.push(load(2, EnvFacts::example().permitted));
    let mut r = record(plan_for("capset-fails"), entries, events(5), 0);
    r.observation.exit.stopped_by_harness = true;
    for c in [
        "drop-failure.aborts",
        "drop-failure.no-program-left",
        "drop-failure.message",
    ] {
        let v = verdict(c, &r);
        assert_eq!(v.verdict, Verdict::NotApplicable, "{c}: {v:?}");
        assert!(v.observed.contains("never called capset"), "{c}: {v:?}");
    }
    // Hit, and the tracer carried on: a failure, and the harness's stop is named as such.
    let failed = Event::Call {
        call: Call::Capset {
            target: 0,
            data: None,
        },
        result: -1,
        injected: true,
    };
    r.observation.timeline.entries.push(entry(
        1,
        PID,
        failed,
        vec![thread(PID, EnvFacts::example().permitted)],
    ));
    let v = verdict("drop-failure.aborts", &r);
    assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
    assert!(v.observed.contains("stopped by capring"), "{v:?}");
}

// ----- the clauses no negative control exists for: failing (and passing) here -------------

fn usage_exit_fails() -> Vec<RunRecord> {
    vec![
        usage_run("usage-unknown-key", 0, &["ok"]),
        usage_run("usage-unknown-key", 2, &["error: frobnicate", "more"]),
        usage_run(
            "usage-unknown-key",
            2,
            &["thread 'main' panicked at src/x.rs"],
        ),
    ]
}

fn conflict_fails() -> Vec<RunRecord> {
    vec![usage_run("usage-add-drop-conflict", 2, &["bad option"])]
}

fn rules_add_fails() -> Vec<RunRecord> {
    vec![usage_run("rules-add-rejected", 0, &[])]
}

fn rules_env_fails() -> Vec<RunRecord> {
    vec![record(
        plan_for("rules-env-add-ignored"),
        vec![],
        events(3),
        0,
    )]
}

/// Clause → failing runs, for the clauses whose failure only hand-made runs show.
fn hand_made_failing() -> Vec<(&'static str, Vec<RunRecord>)> {
    vec![
        ("usage.exit", usage_exit_fails()),
        ("usage.add-drop-conflict", conflict_fails()),
        ("rules.no-add-drop", rules_add_fails()),
        ("rules.env-add-drop-ignored", rules_env_fails()),
    ]
}

#[test]
fn hand_made_failures_fail() {
    let table = hand_made_failing();
    let ids: Vec<&str> = table.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        ids, HAND_MADE_FAILURES,
        "keep HAND_MADE_FAILURES and this table in step"
    );
    for (clause, runs) in table {
        for r in runs {
            let v = verdict(clause, &r);
            assert_eq!(v.verdict, Verdict::Fail, "{clause}: {v:?}");
        }
    }
    // And their passing shapes.
    let ok = usage_run(
        "usage-unknown-key",
        2,
        &["--capabilities: unknown key 'frobnicate'"],
    );
    assert_eq!(verdict("usage.exit", &ok).verdict, Verdict::Pass);
    let named = usage_run(
        "usage-add-drop-conflict",
        2,
        &["capability cap_kill is both added and dropped"],
    );
    assert_eq!(
        verdict("usage.add-drop-conflict", &named).verdict,
        Verdict::Pass
    );
    let warned = record(
        plan_for("rules-env-add-ignored"),
        vec![],
        vec![
            line(
                1,
                Stream::Stderr,
                "warning: CAPABILITIES_ADD is ignored",
                false,
            ),
            line(
                1,
                Stream::Stderr,
                "warning: CAPABILITIES_DROP is ignored",
                false,
            ),
        ],
        0,
    );
    assert_eq!(
        verdict("rules.env-add-drop-ignored", &warned).verdict,
        Verdict::Pass
    );
}
