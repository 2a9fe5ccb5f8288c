//! SPEC.md "Rings", `threads.*`: every thread of a process on the same ring.

use capring_spec::caps::CapSet;

use super::view::View;
use super::{fail_at, na, pass, Check};
use capring_observe::timeline::{Call, ThreadCaps};

/// A transition is broadcast to every thread; under ptrace each thread's capset is a traced
/// stop, so samples taken meanwhile show threads apart. A split is in flight when, within
/// this window (emulated guests are slow), a capset by one of the two threads brings it to
/// the other's set; a forgotten thread never converges.
const CONVERGE_NS: u64 = 250_000_000;

/// The first thread of `threads` whose E differs from the process leader's (or the first
/// thread's): (tid, its E, the leader's E).
fn split(threads: &[&ThreadCaps]) -> Option<(i32, CapSet, CapSet)> {
    let leader = threads
        .iter()
        .find(|t| t.tid == t.pid)
        .or(threads.first())?;
    threads
        .iter()
        .find(|t| t.effective != leader.effective)
        .map(|t| (t.tid, t.effective, leader.effective))
}

pub fn same_ring(v: &View) -> Check {
    if let Err(c) = v.dropping() {
        return c;
    }
    let samples = v.steady_samples();
    if samples.len() < 2 {
        return super::fail(
            "every thread on the same ring",
            format!(
                "{} steady-state sample(s): {}",
                samples.len(),
                v.no_steady_state()
            ),
        );
    }
    // Per process: the threads of each sample, grouped.
    let mut pids: Vec<i32> = samples
        .iter()
        .flat_map(|(_, t)| t.iter().map(|t| t.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    let max_threads = pids
        .iter()
        .map(|p| {
            samples
                .iter()
                .map(|(_, t)| t.iter().filter(|t| t.pid == *p).count())
                .max()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    if max_threads < 2 {
        return na("every process of the tracer has a single thread: there is nothing to compare");
    }
    let capsets: Vec<(u64, i32, CapSet)> = v
        .calls()
        .filter(|(_, c, r, _)| matches!(c, Call::Capset { .. }) && *r >= 0)
        .filter_map(|(e, ..)| e.own().map(|t| (e.t_ns, e.tid, t.effective)))
        .collect();
    let in_flight = |t: u64, tid: i32, from: CapSet, to: CapSet, leader: i32| {
        capsets.iter().any(|(at, by, eff)| {
            *at >= t
                && *at <= t + CONVERGE_NS
                && ((*by == tid && *eff == to) || (*by == leader && *eff == from))
        })
    };
    for pid in pids {
        let mut seen: Option<(i32, CapSet, CapSet, u64)> = None;
        for (t, threads) in &samples {
            let mine: Vec<&ThreadCaps> = threads.iter().copied().filter(|x| x.pid == pid).collect();
            let Some(a) = split(&mine) else { continue };
            if in_flight(*t, a.0, a.1, a.2, pid) {
                continue;
            }
            match seen {
                Some((tid, e, m, t0)) if (tid, e, m) == a => {
                    return fail_at(
                        "every thread on the same ring",
                        format!(
                            "pid {pid} tid {} has E={} while its leader has E={} (at +{} ms and still at +{} ms)",
                            a.0,
                            v.set(a.1),
                            v.set(a.2),
                            t0 / 1_000_000,
                            t / 1_000_000
                        ),
                        t0,
                    );
                }
                _ => seen = Some((a.0, a.1, a.2, *t)),
            }
        }
    }
    pass(
        "every thread on the same ring",
        format!(
            "{} samples of up to {max_threads} threads agree",
            samples.len()
        ),
    )
}
