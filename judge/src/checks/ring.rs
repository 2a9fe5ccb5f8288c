//! SPEC.md "Rings": what E (and P, B, I, A) may be, in which phase, on every thread of the
//! tracer's tree.

use std::collections::BTreeMap;

use capring_observe::timeline::{Event, Timeline};
use capring_spec::caps::CapSet;
use capring_spec::oracle::Rings;

use super::view::{Stretch, View, REQUESTED_MAX_NS};
use super::{fail, fail_at, judge, na, pass, Check};
use crate::measured::Measurement;

fn sets_text(sets: &[CapSet]) -> String {
    sets.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn ms(t: u64) -> u64 {
    t / 1_000_000
}

pub fn privileged_bypass_only(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let Some(first) = v.first_drop().map(|e| e.t_ns) else {
        return fail(
            "a first capability drop before anything privileged",
            format!("no capability change at all ({})", v.exit_text()),
        );
    };
    if let Some((e, call, _)) = v.privileged().find(|(e, ..)| e.t_ns < first) {
        return fail_at(
            "no privileged operation before the first drop",
            format!(
                "{} by pid {} tid {} at +{} ms, before the first drop",
                call.describe(v.plan().facts.cap_last_cap),
                e.pid,
                e.tid,
                ms(e.t_ns)
            ),
            e.t_ns,
        );
    }
    let full = rings.privileged;
    if rings.required != full && !full.is_empty() {
        if let Some(s) = v
            .states_after(first + 1)
            .into_iter()
            .find(|s| s.thread.effective == full)
        {
            return fail_at(
                "no thread back to E=P after the first drop",
                v.state_text(&s),
                s.t,
            );
        }
    }
    pass(
        "first drop before any privileged operation; never E=P again",
        "as expected",
    )
}

/// The Required rings a run may use, and where they come from.
struct RequiredTruth {
    /// Each measured minimal set with the user's `add` added and `drop` removed; without a
    /// measured table, the oracle's Required ring alone.
    sets: Vec<CapSet>,
    /// The preferred one (SPEC.md `ring.required.preferred`).
    preferred: CapSet,
    /// `measured: <table>` or `oracle (<why no table>)`, for verdicts.
    source: String,
    measured: bool,
}

/// The measured truth for this run (see [`crate::measured::Measurement`]), or the
/// oracle's prediction when no table holds here.
fn required_truth(v: &View, rings: &Rings) -> RequiredTruth {
    let p = v.plan();
    let adjust = |m: &CapSet| m.union(p.added).difference(p.dropped);
    let why = match &p.measured {
        Measurement::Found(m) if !m.minimal_sets.is_empty() => {
            let sets: Vec<CapSet> = m.minimal_sets.iter().map(adjust).collect();
            return RequiredTruth {
                preferred: sets[0],
                sets,
                source: format!("measured: {}", m.source),
                measured: true,
            };
        }
        Measurement::Found(m) => format!("{} has no minimal set usable here", m.source),
        Measurement::Missing { why } => why.clone(),
        Measurement::NotLooked => "no measured table was looked up for this run".into(),
    };
    RequiredTruth {
        sets: vec![rings.required],
        preferred: rings.required,
        source: format!("oracle: {why}"),
        measured: false,
    }
}

/// The Required ring of this run, for the checks that must recognise it: the adjusted
/// measured minimal set the tracer configured with (its first privileged call before
/// readiness outside a Requested ring), else the preferred one; without a measured table,
/// the oracle's ring.
pub(super) fn required_ring(v: &View, rings: &Rings) -> CapSet {
    let truth = required_truth(v, rings);
    if !truth.measured {
        return rings.required;
    }
    let requested = rings.requested_sets();
    let ready = v.ready_at().unwrap_or(u64::MAX);
    v.privileged()
        .filter(|(e, ..)| e.t_ns < ready)
        .filter_map(|(e, ..)| e.own().map(|t| t.effective))
        .find(|e| !requested.contains(e) && truth.sets.contains(e))
        .unwrap_or(truth.preferred)
}

/// The entries of configuration that show the Required ring.
struct Moments<'a> {
    entries: Vec<&'a capring_observe::timeline::Entry>,
    /// No privileged operation before readiness: `entries` is the state the first drop went
    /// to, which must then be the Required ring itself (no Requested operation explains it).
    fallback: bool,
}

/// Each privileged operation before readiness, or without any, the state the first drop
/// went to. `Err`: the clause's failure when configuration did not complete.
fn config_moments<'a>(v: &View<'a>, rings: &Rings, expected: &str) -> Result<Moments<'a>, Check> {
    let Some(ready) = v.config_end(rings) else {
        return Err(fail_at(
            expected,
            format!(
                "configuration did not complete: {}, {} event lines",
                v.exit_text(),
                v.events_emitted()
            ),
            v.r.observation.wall.as_nanos() as u64,
        ));
    };
    let mut moments: Vec<&capring_observe::timeline::Entry> = v
        .privileged()
        .filter(|(e, ..)| e.t_ns < ready)
        .map(|(e, ..)| e)
        .collect();
    let fallback = moments.is_empty();
    if fallback {
        moments.extend(v.first_drop().filter(|e| e.t_ns < ready));
    }
    if moments.is_empty() {
        return Err(fail(
            expected,
            "no drop and no privileged operation before readiness",
        ));
    }
    moments.sort_by_key(|e| e.t_ns);
    Ok(Moments {
        entries: moments,
        fallback,
    })
}

/// The first configuration moment (outside a Requested ring) whose E is not `ok`.
fn first_config_miss<'a>(
    rings: &Rings,
    moments: &Moments<'a>,
    ok: impl Fn(CapSet) -> bool,
) -> Option<(&'a capring_observe::timeline::Entry, CapSet)> {
    let requested = rings.requested_sets();
    let excused = |e: &CapSet| !moments.fallback && requested.contains(e);
    moments.entries.iter().find_map(|e| {
        let own = e.own()?;
        (!ok(own.effective) && !excused(&own.effective)).then_some((*e, own.effective))
    })
}

fn config_miss_text(v: &View, e: &capring_observe::timeline::Entry, effective: CapSet) -> String {
    format!(
        "{} by pid {} tid {} with E={} at +{} ms",
        capring_observe::timeline::entry_text(e, v.plan().facts.cap_last_cap),
        e.pid,
        e.tid,
        v.set(effective),
        ms(e.t_ns)
    )
}

/// E at every moment of configuration that shows the Required ring: each privileged
/// operation before readiness (outside a Requested ring); without any, the state the first
/// drop went to. A tracer may enter the ring in steps (drop everything, then raise): only the
/// operations that need it are judged. The ring must be one measured minimal set (all those
/// moments the same set); without a measured table, the oracle's ring.
pub fn required_exact(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let truth = required_truth(v, rings);
    let expected = format!(
        "E={} while configuring ({}), and configuration completes",
        truth
            .sets
            .iter()
            .map(|s| v.set(*s))
            .collect::<Vec<_>>()
            .join(" or "),
        truth.source
    );
    let moments = match config_moments(v, rings, &expected) {
        Ok(m) => m,
        Err(c) => return c,
    };
    let ring = moments
        .entries
        .iter()
        .filter_map(|e| e.own().map(|t| t.effective))
        .find(|e| !rings.requested_sets().contains(e) && truth.sets.contains(e));
    let same = |e: CapSet| ring.map_or(truth.sets.contains(&e), |r| e == r);
    if let Some((e, effective)) = first_config_miss(rings, &moments, same) {
        return fail_at(expected, config_miss_text(v, e, effective), e.t_ns);
    }
    pass(
        expected,
        format!(
            "E={} while configuring{}",
            v.set(ring.unwrap_or(truth.preferred)),
            if truth.measured {
                " (a measured minimal set)"
            } else {
                ""
            }
        ),
    )
}

/// Where several minimal sets suffice, configuration uses the preferred one.
pub fn required_preferred(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let truth = required_truth(v, rings);
    let expected = format!(
        "E={} while configuring: the preferred minimal set ({})",
        v.set(truth.preferred),
        truth.source
    );
    let moments = match config_moments(v, rings, &expected) {
        Ok(m) => m,
        Err(c) => return c,
    };
    match first_config_miss(rings, &moments, |e| e == truth.preferred) {
        Some((e, effective)) => fail_at(expected, config_miss_text(v, e, effective), e.t_ns),
        None => pass(expected, "as expected"),
    }
}

pub fn required_config_only(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let required = required_ring(v, rings);
    if required.is_empty() {
        return na("the Required ring is empty here: there is nothing to enter or leave");
    }
    let expected = format!(
        "the Required ring E={} entered while configuring, and left before the first event",
        v.set(required)
    );
    let Some(t0) = v.first_event() else {
        return fail(expected, v.no_steady_state());
    };
    let states = v.states();
    if !states
        .iter()
        .any(|s| s.t < t0 && s.thread.effective == required)
    {
        return fail(
            expected,
            format!(
                "no thread was ever in it before the first event (+{} ms)",
                ms(t0)
            ),
        );
    }
    // Still in it (or above it) after the first event: E ⊇ the Required ring.
    match states
        .iter()
        .find(|s| s.t >= t0 && required.is_subset(s.thread.effective))
    {
        Some(s) => fail_at(
            expected,
            format!("{} (first event at +{} ms)", v.state_text(s), ms(t0)),
            s.t,
        ),
        None => pass(expected, format!("left by +{} ms", ms(t0))),
    }
}

pub fn requested_single(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let enabled = rings.requested_caps();
    if enabled.is_empty() {
        return na("no Requested operation is enabled for the selected events");
    }
    let Some(first) = v.first_drop() else {
        return fail("capability changes", format!("none ({})", v.exit_text()));
    };
    let singles = rings.requested_sets();
    let mut seen = CapSet::EMPTY;
    for s in v.states_after(first.t_ns) {
        let e = s.thread.effective;
        if e == rings.unprivileged || e == rings.required {
            continue;
        }
        if singles.contains(&e) {
            seen = seen.union(e.difference(rings.unprivileged));
            continue;
        }
        return fail_at(
            format!("a Requested ring is one of {}", sets_text(&singles)),
            v.state_text(&s),
            s.t,
        );
    }
    if seen.is_empty() {
        return fail(
            format!("{enabled} raised alone for its operation"),
            format!(
                "no Requested ring was ever entered ({}, {} event lines)",
                v.exit_text(),
                v.events_emitted()
            ),
        );
    }
    pass(
        format!("single capabilities among {enabled}"),
        format!("raised {seen}, one at a time"),
    )
}

/// Requested stretches that are not a short single operation, or that do not return to the
/// ring they came from.
fn bad_stretch<'s>(v: &View, stretches: &'s [Stretch]) -> Option<(&'s Stretch, String)> {
    for st in stretches {
        if v.parked(st) {
            let end = match st.to {
                Some(to) => format!("until +{} ms", ms(to)),
                None => format!("still at +{} ms, when the run ended", ms(st.last_seen)),
            };
            return Some((
                st,
                format!(
                    "pid {} tid {} stayed in E={} from +{} ms {end}",
                    st.pid,
                    st.tid,
                    v.set(st.set),
                    ms(st.from)
                ),
            ));
        }
        if let (Some(before), Some(after)) = (st.before, st.after) {
            if before != after {
                return Some((
                    st,
                    format!(
                        "pid {} tid {} left E={} for E={}, not for E={} (the ring it came from)",
                        st.pid,
                        st.tid,
                        v.set(st.set),
                        v.set(after),
                        v.set(before)
                    ),
                ));
            }
        }
    }
    None
}

/// Every excursion out of the outer ring (any E other than the Unprivileged or the Required
/// ring, after the first drop) must come back, soon, to the ring it left.
pub fn requested_returns(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    if rings.requested_caps().is_empty() {
        return na("no Requested operation is enabled for the selected events");
    }
    let Some(first) = v.first_drop() else {
        return fail(
            "Requested operations that return",
            format!("no capability drop ({})", v.exit_text()),
        );
    };
    let outer = [rings.unprivileged, rings.required];
    let stretches: Vec<Stretch> = v.excursions(first.t_ns, &outer).into_iter().collect();
    let expected = format!(
        "back to the outer ring within {} ms of each operation",
        REQUESTED_MAX_NS / 1_000_000
    );
    if let Some((st, why)) = bad_stretch(v, &stretches) {
        return fail_at(expected, why, st.from);
    }
    if stretches.is_empty() {
        return fail(
            expected,
            format!("no Requested ring was entered ({})", v.exit_text()),
        );
    }
    let longest = stretches.iter().map(Stretch::duration).max().unwrap_or(0);
    pass(
        expected,
        format!(
            "{} operations, the longest {} ms",
            stretches.len(),
            ms(longest)
        ),
    )
}

pub fn unprivileged_empty(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let expected = format!(
        "E={} on every thread in the steady state",
        rings.unprivileged
    );
    let steady = v.steady();
    if steady.is_empty() {
        return fail(expected, v.no_steady_state());
    }
    let singles = rings.requested_sets();
    let stretches = v.stretches(&singles);
    let (mut empty, mut moments) = (0usize, 0usize);
    for s in &steady {
        let e = s.thread.effective;
        if e == rings.unprivileged {
            empty += 1;
            continue;
        }
        let short = singles.contains(&e)
            && stretches
                .iter()
                .any(|st| st.covers(s.thread.tid, s.t) && !v.parked(st));
        if short {
            moments += 1;
            continue;
        }
        return fail_at(expected, v.state_text(s), s.t);
    }
    pass(
        expected,
        format!(
            "{empty} of {} thread observations empty, {moments} in a short Requested operation",
            steady.len()
        ),
    )
}

pub fn unprivileged_most_of_time(v: &View) -> Check {
    if let Err(c) = v.dropping() {
        return c;
    }
    let Some(t0) = v.ready_at() else {
        return fail("≤ 1 % of steady-state time with E≠∅", v.no_steady_state());
    };
    let end = v.r.observation.wall.as_nanos() as u64;
    if end <= t0 {
        return fail("≤ 1 % of steady-state time with E≠∅", v.no_steady_state());
    }
    // Step function over the whole tree: E≠∅ counts while any live thread of any process
    // was last seen with a non-empty effective set (SPEC: the tracer is every process and
    // every thread it has). A thread stops counting when it exits.
    let mut raised: BTreeMap<i32, (i32, bool)> = BTreeMap::new();
    let any = |m: &BTreeMap<i32, (i32, bool)>| m.values().any(|(_, up)| *up);
    let (mut non_empty, mut last) = (0u64, t0);
    for e in v.entries() {
        let t = e.t_ns.clamp(t0, end);
        if any(&raised) {
            non_empty += t - last;
        }
        last = t;
        match e.event {
            Event::ThreadExit { .. } => {
                raised.remove(&e.tid);
            }
            Event::ProcessExit { .. } => raised.retain(|_, (pid, _)| *pid != e.pid),
            _ => {
                for th in Timeline::states_of(e) {
                    raised.insert(th.tid, (th.pid, !th.effective.is_empty()));
                }
            }
        }
    }
    if any(&raised) {
        non_empty += end - last;
    }
    let share = non_empty as f64 / (end - t0) as f64 * 100.0;
    judge(
        share <= 1.0,
        "≤ 1 % of steady-state time with E≠∅",
        format!("{share:.3} %"),
    )
}

/// After the first drop, no capability outside the rings. With a measured table: no
/// capability in no measured minimal set (after add/drop) nor in the Unprivileged ring, a
/// Requested ring being judged by the Requested clauses; without one, every E is one of the
/// oracle's ring sets.
pub fn no_excess(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let truth = required_truth(v, rings);
    if !truth.measured {
        return no_excess_by_oracle(v, rings, &truth.source);
    }
    let requested = rings.requested_sets();
    let allowed = truth
        .sets
        .iter()
        .fold(rings.unprivileged, |a, b| a.union(*b));
    let ring = required_ring(v, rings);
    let expected = format!(
        "after the first drop, while configuring every effective capability in {} ({}); then E={}, a Requested ring or the Required ring {}",
        v.set(allowed),
        truth.source,
        v.set(rings.unprivileged),
        v.set(ring)
    );
    let Some(first) = v.first_drop() else {
        return fail(expected, format!("no capability drop ({})", v.exit_text()));
    };
    let ready = v.ready_at().unwrap_or(u64::MAX);
    for s in v.states_after(first.t_ns) {
        let e = s.thread.effective;
        if requested.contains(&e) || e == rings.unprivileged || e == ring {
            continue;
        }
        let extra = e.difference(allowed);
        let why = if s.t >= ready {
            "after configuration, none of the rings".to_string()
        } else if !extra.is_empty() {
            format!("{extra} in no minimal set")
        } else {
            continue;
        };
        return fail_at(expected, format!("{} ({why})", v.state_text(&s)), s.t);
    }
    pass(expected, "no capability outside them")
}

fn no_excess_by_oracle(v: &View, rings: &Rings, source: &str) -> Check {
    let allowed = rings.allowed_effective();
    let expected = format!("{} ({source})", sets_text(&allowed));
    let Some(first) = v.first_drop() else {
        return fail(expected, format!("no capability drop ({})", v.exit_text()));
    };
    for s in v.states_after(first.t_ns) {
        if !allowed.contains(&s.thread.effective) {
            let extra = s
                .thread
                .effective
                .difference(allowed.iter().fold(CapSet::EMPTY, |a, b| a.union(*b)));
            return fail_at(
                expected,
                format!(
                    "{}{}",
                    v.state_text(&s),
                    if extra.is_empty() {
                        String::new()
                    } else {
                        format!(" ({extra} in no ring)")
                    }
                ),
                s.t,
            );
        }
    }
    pass(expected, "every observed E was one of them")
}

pub fn permitted_shrinks(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let p = rings.steady_permitted;
    let steady = v.steady();
    if steady.is_empty() {
        return fail(format!("P ⊆ {p} in the steady state"), v.no_steady_state());
    }
    match steady.iter().find(|s| !s.thread.permitted.is_subset(p)) {
        Some(s) => fail_at(
            format!("P ⊆ {p} in the steady state"),
            format!(
                "pid {} tid {} has P={} at +{} ms",
                s.thread.pid,
                s.thread.tid,
                s.thread.permitted,
                ms(s.t)
            ),
            s.t,
        ),
        None => pass(format!("P ⊆ {p} in the steady state"), "on every thread"),
    }
}

pub fn bounding_cleared(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    if !rings.clear_bounding {
        return na("cap_setpcap is not usable: no bounding drop can be made");
    }
    // "before configuration": from the first privileged operation on.
    let Some(start) = v.privileged().map(|(e, ..)| e.t_ns).next() else {
        return fail(
            "B=∅ before configuration",
            format!("no configuration ({})", v.exit_text()),
        );
    };
    match v
        .states_after(start)
        .into_iter()
        .find(|s| !s.thread.bounding.is_empty())
    {
        Some(s) => fail_at(
            "B=∅ on every thread from the start of configuration",
            format!(
                "pid {} tid {} has B={} at +{} ms",
                s.thread.pid,
                s.thread.tid,
                capring_observe::timeline::compact(s.thread.bounding, v.plan().facts.cap_last_cap),
                ms(s.t)
            ),
            s.t,
        ),
        None => pass(
            "B=∅ on every thread from the start of configuration",
            "as expected",
        ),
    }
}

pub fn inheritable_ambient_empty(v: &View) -> Check {
    if let Err(c) = v.dropping() {
        return c;
    }
    let Some(first) = v.first_change() else {
        return fail(
            "I=A=∅ after the first change",
            format!("no change ({})", v.exit_text()),
        );
    };
    match v
        .states_after(first)
        .into_iter()
        .find(|s| !s.thread.inheritable.is_empty() || !s.thread.ambient.is_empty())
    {
        Some(s) => fail_at(
            "I=A=∅ after the first capability change",
            format!(
                "pid {} tid {} has I={} A={} at +{} ms",
                s.thread.pid,
                s.thread.tid,
                s.thread.inheritable,
                s.thread.ambient,
                ms(s.t)
            ),
            s.t,
        ),
        None => pass("I=A=∅ after the first capability change", "on every thread"),
    }
}
