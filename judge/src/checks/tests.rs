//! What the pass/fail table of [`super::cases`] does not hold: every clause has exactly
//! one check, names are matched as whole words, and the verdicts that are neither pass nor
//! fail (not applicable: a fault never hit, a single thread with nothing to compare). The
//! recorded runs (`harness/tests/recorded.rs`) test every check both ways on real tracers.

use capring_spec::caps::Cap;
use capring_spec::facts::EnvFacts;

use super::test_runs::*;
use super::*;
use capring_observe::timeline::{Call, Event, FaultKind};

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
fn names_are_whole_words() {
    let words = tokens("eBPF tracer: CAP_SYS_ADMIN, perfmon and execve_x");
    assert!(words.contains("ebpf") && !words.contains("bpf"));
    assert!(view::names_cap(&words, Cap::SYS_ADMIN));
    assert!(view::names_cap(&words, Cap::PERFMON));
    assert!(!view::names_cap(&words, Cap::BPF));
    assert!(!words.contains("execve"));
}

#[test]
fn a_fault_the_tracer_never_hit_is_not_applicable() {
    // capset-fails, but the tracer never calls capset: ran normally until stopped.
    let mut entries = vec![entry(
        0,
        PID,
        Event::Condition {
            condition: capring_observe::timeline::Condition::Fault {
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
