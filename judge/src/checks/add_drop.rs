//! SPEC.md "Adding and dropping": `add=`/`drop=` and their variables, judged by their effect
//! on the rings (which capabilities are effective in which phase), not by the tracer's words.

use capring_spec::caps::CapSet;
use capring_spec::oracle::Rings;

use super::view::{State, View};
use super::{fail, fail_at, na, pass, Check};

/// E of the configuration moments: right after the first drop and at each privileged
/// operation before readiness (Requested rings aside).
fn config_sets<'a>(v: &View<'a>, rings: &Rings) -> Result<Vec<State<'a>>, Check> {
    let Some(first) = v.first_drop() else {
        return Err(fail(
            "a drop to the Required ring",
            format!("no capability drop ({})", v.exit_text()),
        ));
    };
    let ready = v.ready_at().unwrap_or(u64::MAX);
    let requested = rings.requested_sets();
    let mut out: Vec<State> = first
        .own()
        .map(|t| State {
            t: first.t_ns,
            thread: t,
        })
        .into_iter()
        .collect();
    for (e, ..) in v
        .privileged()
        .filter(|(e, ..)| e.t_ns > first.t_ns && e.t_ns < ready)
    {
        if let Some(t) = e.own().filter(|t| !requested.contains(&t.effective)) {
            out.push(State {
                t: e.t_ns,
                thread: t,
            });
        }
    }
    Ok(out)
}

/// The first state (after the first drop) whose E holds one of `caps`, outside the
/// configuration moments when `steady_only`.
fn holding<'a>(v: &View<'a>, caps: CapSet, steady_only: bool) -> Option<State<'a>> {
    if caps.is_empty() {
        return None;
    }
    let states = if steady_only {
        v.steady()
    } else {
        v.states_after(v.first_drop()?.t_ns)
    };
    states
        .into_iter()
        .find(|s| !s.thread.effective.intersection(caps).is_empty())
}

fn at(s: &State) -> String {
    format!(
        "pid {} tid {} ({}) has E={} at +{} ms",
        s.thread.pid,
        s.thread.tid,
        s.thread.comm,
        s.thread.effective,
        s.t / 1_000_000
    )
}

/// `added` in the Required ring and nowhere later; `dropped` never in the Required ring.
fn ring_effects(v: &View, rings: &Rings, added: CapSet, dropped: CapSet) -> Check {
    let expected = format!(
        "{}{}",
        if added.is_empty() {
            String::new()
        } else {
            format!("{added} in the Required ring only; ")
        },
        if dropped.is_empty() {
            String::new()
        } else {
            format!("{dropped} never in the Required ring")
        }
    );
    let config = match config_sets(v, rings) {
        Ok(c) => c,
        Err(c) => return c,
    };
    if let Some(s) = config.iter().find(|s| !added.is_subset(s.thread.effective)) {
        return fail_at(&expected, format!("while configuring {}", at(s)), s.t);
    }
    if let Some(s) = config
        .iter()
        .find(|s| !s.thread.effective.intersection(dropped).is_empty())
    {
        return fail_at(&expected, format!("while configuring {}", at(s)), s.t);
    }
    if !added.is_empty() {
        if v.steady().is_empty() {
            return fail(&expected, v.no_steady_state());
        }
        if let Some(s) = holding(v, added, true) {
            return fail_at(&expected, format!("in the steady state {}", at(&s)), s.t);
        }
    }
    pass(expected, "as expected")
}

pub fn add_required(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let added = v.plan().added;
    if added.is_empty() {
        return na("nothing added in this scenario");
    }
    ring_effects(v, rings, added, CapSet::EMPTY)
}

pub fn drop_required(v: &View) -> Check {
    let plan = v.plan();
    let dropped = plan.dropped;
    if dropped.is_empty() {
        return na("nothing dropped in this scenario");
    }
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let effects = ring_effects(v, rings, CapSet::EMPTY, dropped);
    if effects.verdict != super::Verdict::Pass {
        return effects;
    }
    let exit = &v.r.observation.exit;
    let ran = v.events_emitted() > 0;
    let refused = exit.code == Some(plan.capability_code) && v.events_emitted() == 0;
    if !(ran || refused) {
        return fail(
            format!(
                "{dropped} never in the Required ring; runs, or exits {} at configuration",
                plan.capability_code
            ),
            format!("{}, {} event lines", v.exit_text(), v.events_emitted()),
        );
    }
    pass(
        format!("{dropped} never in the Required ring"),
        if ran {
            "ran without it"
        } else {
            "refused to run without it"
        },
    )
}

pub fn drop_requested(v: &View) -> Check {
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let disabled: Vec<&capring_spec::oracle::RequestedOp> =
        rings.requested.iter().filter(|o| !o.enabled).collect();
    if disabled.is_empty() {
        return na("no Requested operation is disabled in this scenario");
    }
    let caps: CapSet = disabled.iter().map(|o| o.capability).collect();
    if let Some(s) = holding(v, caps, false) {
        return fail_at(format!("{caps} never raised"), at(&s), s.t);
    }
    let lines = v.stderr_lines();
    let warnings: Vec<usize> = disabled
        .iter()
        .map(|o| {
            let re = regex::Regex::new(&format!(r"(?i)\b{}\b", regex::escape(&o.operation)))
                .expect("escaped");
            lines.iter().filter(|l| re.is_match(l)).count()
        })
        .collect();
    super::judge(
        warnings.iter().all(|n| *n == 1),
        format!("{caps} never raised; one warning per skipped operation"),
        format!("never raised; warnings per operation: {warnings:?}"),
    )
}

pub fn env_add_drop(v: &View) -> Check {
    let env = &v.plan().scenario.env;
    let (add, drop) = (
        env.contains_key(capring_spec::options::ENV_ADD),
        env.contains_key(capring_spec::options::ENV_DROP),
    );
    if !add && !drop {
        return na("no CAPABILITIES_ADD/DROP in this scenario");
    }
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    let plan = v.plan();
    // Only what the variables brought (a key on the command line shadows its variable).
    let cli_add = env_free_options(plan).0;
    let cli_drop = env_free_options(plan).1;
    ring_effects(
        v,
        rings,
        plan.added.difference(cli_add),
        plan.dropped.difference(cli_drop),
    )
}

/// What the command line alone adds and drops.
fn env_free_options(plan: &crate::plan::Plan) -> (CapSet, CapSet) {
    capring_spec::options::parse_and_resolve(
        &plan.scenario.cli,
        &Default::default(),
        plan.facts.cap_last_cap,
        &plan.facts.kernel_release,
    )
    .map(|o| (o.add, o.drop))
    .unwrap_or_default()
}

pub fn env_cli_wins(v: &View) -> Check {
    let plan = v.plan();
    if plan.scenario.env.is_empty() {
        return na("no CAPABILITIES_* variable in this scenario");
    }
    let rings = match v.dropping() {
        Ok(r) => r,
        Err(c) => return c,
    };
    // The command line's keys win; the other keys still come from the variables.
    let effects = ring_effects(v, rings, plan.added, plan.dropped);
    if effects.verdict != super::Verdict::Pass {
        return effects;
    }
    if let Some(s) = holding(v, plan.shadowed_add, false) {
        return fail_at(
            format!(
                "{} (from a shadowed variable) never effective",
                plan.shadowed_add
            ),
            at(&s),
            s.t,
        );
    }
    if let Some(s) = holding(v, plan.dropped, false) {
        return fail_at(
            format!(
                "{} (dropped) never effective, not even for a Requested operation",
                plan.dropped
            ),
            at(&s),
            s.t,
        );
    }
    // A drop that only a shadowed variable asks for must not disable a Requested operation.
    let kept = plan.shadowed_drop.intersection(rings.requested_caps());
    if !kept.is_empty() && v.first_event().is_some() && holding(v, kept, false).is_none() {
        return fail(
            format!("{kept} (dropped only by a shadowed variable) raised for its Requested operation"),
            format!(
                "never effective after the first drop, over {} event lines: the variable's drop was applied",
                v.events_emitted()
            ),
        );
    }
    pass(
        "each key from the command line if given there, else from its variable",
        format!(
            "added {}, dropped {}, ignored the shadowed {}",
            plan.added,
            plan.dropped,
            plan.shadowed_add.union(plan.shadowed_drop)
        ),
    )
}
