//! SPEC.md "Drop failures": the harness makes capset or prctl(PR_CAPBSET_DROP) fail with
//! EPERM. A fault the tracer never ran into is "not exercised" (N/A), never a verdict.

use capring_observe::timeline::{Call, PrctlOp};
use capring_spec::oracle::Outcome;

use super::view::{names_cap, tokens, View};
use super::{fail_at, judge, na, Check};
use crate::plan::Expectation;

/// The run is a non-bypass run whose drop failed: the first injected failure.
fn failed_drop<'a>(v: &View<'a>) -> Result<&'a capring_observe::timeline::Entry, Check> {
    if matches!(
        v.plan().expectation,
        Expectation::Outcome(Outcome::Runs { bypass: true, .. })
    ) {
        return Err(na("bypass run: a failed drop is allowed"));
    }
    v.faults_hit().map(|hit| hit[0].0)
}

pub fn aborts(v: &View) -> Check {
    let first = match failed_drop(v) {
        Ok(e) => e,
        Err(c) => return c,
    };
    let code = v.plan().capability_code;
    let exit = &v.r.observation.exit;
    let aborted = exit.code == Some(code) && !exit.stopped_by_harness && !exit.timed_out;
    let ok = aborted && v.events_emitted() == 0 && v.programs_loaded() == 0;
    let check = judge(
        ok,
        format!("exit {code}, no program loaded, no event"),
        format!(
            "{}, {} programs loaded, {} event lines",
            v.exit_text(),
            v.programs_loaded(),
            v.events_emitted()
        ),
    );
    if ok {
        check
    } else {
        Check {
            at_ns: Some(first.t_ns),
            ..check
        }
    }
}

pub fn no_program_left(v: &View) -> Check {
    if let Err(c) = failed_drop(v) {
        return c;
    }
    let left: Vec<u32> =
        v.r.programs_after
            .difference(&v.r.programs_before)
            .copied()
            .collect();
    let check = judge(
        left.is_empty(),
        "no new BPF program left in the kernel after the tracer ended",
        format!("new program ids still loaded: {left:?}"),
    );
    if left.is_empty() {
        check
    } else {
        Check {
            at_ns: Some(v.r.observation.wall.as_nanos() as u64),
            ..check
        }
    }
}

pub fn bypass_runs(v: &View) -> Check {
    let Expectation::Outcome(Outcome::Runs { bypass: true, .. }) = v.plan().expectation else {
        return na("not a bypass run");
    };
    if v.plan().faults.is_empty() {
        return na("no fault injected in this scenario");
    }
    let exit = &v.r.observation.exit;
    let ran = v.events_emitted() > 0 && !exit.timed_out;
    if let (false, Some((e, _))) = (ran, v.injected().first()) {
        return fail_at(
            "runs and emits events despite the failing drops",
            format!(
                "{} event lines, {}; it still tried a drop, which failed",
                v.events_emitted(),
                v.exit_text()
            ),
            e.t_ns,
        );
    }
    judge(
        ran,
        "runs and emits events despite the failing drops",
        format!("{} event lines, {}", v.events_emitted(), v.exit_text()),
    )
}

pub fn message(v: &View) -> Check {
    let first = match failed_drop(v) {
        Ok(e) => e,
        Err(c) => return c,
    };
    let words = tokens(&v.r.observation.stderr());
    let op = match first.call() {
        // libcap's name for it is cap_set_proc.
        Some((Call::Capset { .. }, ..)) => {
            words.contains("capset") || words.contains("cap_set_proc")
        }
        Some((
            Call::Prctl {
                op: PrctlOp::CapbsetDrop,
                arg,
            },
            ..,
        )) => {
            ["prctl", "pr_capbset_drop", "bounding", "capbset"]
                .iter()
                .any(|w| words.contains(*w))
                || u8::try_from(*arg)
                    .ok()
                    .and_then(capring_spec::caps::Cap::new)
                    .is_some_and(|c| names_cap(&words, c))
        }
        _ => false,
    };
    let stderr = v.r.observation.stderr().to_ascii_lowercase();
    let errno = words.contains("eperm") || stderr.contains("operation not permitted");
    let hint = words.contains("bypass")
        || v.plan()
            .bypass_spellings
            .iter()
            .any(|b| stderr.contains(&b.to_ascii_lowercase()));
    judge(
        op && errno && hint,
        "a message naming the failed operation, the error and the bypass option",
        format!("operation named: {op}, error named: {errno}, bypass named: {hint}"),
    )
}
