//! One run of `capring minimize`: the tracer launched with a chosen capability set, and the
//! criterion that says whether it still works.
//!
//! How a set is imposed: the harness removes every other capability from the bounding set
//! before exec (`LaunchSpec::bounding_drop`), so the root exec gets P = E = the set. The
//! tracer runs in bypass mode (its flag, else its variable): it then keeps what it has and
//! manages nothing, and whatever fails is the kernel's answer. A tracer without bypass runs
//! plainly (one that never drops, like bpftrace, is its own bypass).
//!
//! **Works** means, all of:
//! 1. it reached readiness (the profile's `[ready]` rule);
//! 2. its first event line arrived;
//! 3. events kept flowing under the workload: at least `--lines` N event lines, after which
//!    the harness stopped it (a tracer that ends by itself must also exit 0);
//! 4. it did not exit with the profile's capability error code.
//!
//! Permission failures (EPERM/EACCES) of privileged calls are *not* a criterion on their
//! own: aya probes kernel features at start, and on every healthy run of the reference a
//! devmap creation fails with EPERM (it needs cap_net_admin, which only XDP uses) and one
//! tracepoint program load fails with EACCES (the verifier refusing a probe program), as
//! `fixtures/runs/reference/steady-state.json.gz` shows. A failure the tracer carried on
//! after is recorded, and those that the run with every capability did not have are
//! listed as what the tracer *went without* (a feature it probed and did without). The
//! last permission failure before a tracer gave up is named as the likely cause.
//!
//! Requested operations are measured apart from "works" (see `super::measure_requested`):
//! each `[requested.OP]` pattern of the profile says, from the event lines, whether the
//! operation worked in a run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capring_observe::timeline::Call;
use capring_spec::caps::CapSet;
use capring_spec::facts::EnvFacts;
use serde::{Deserialize, Serialize};

use super::search::Stop;
use crate::checks::View;
use crate::measured::Mode;
use crate::plan::{self, NoPlan};
use crate::profile::Profile;
use crate::run::{self, RunRecord, Skip};
use crate::scenario::{Need, Scenario, Target};

/// What a run was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Purpose {
    /// Every usable capability: the tracer must work here at all.
    Baseline,
    /// Run normally (no bypass) with every capability: the ring it really uses.
    Observed,
    /// A set the search asked about.
    Search,
    /// A minimal set with or without one Requested capability.
    Requested,
}

/// One run and its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Trial {
    pub purpose: Purpose,
    /// The capabilities the tracer was given (P = E = bounding at exec).
    pub set: CapSet,
    pub works: bool,
    /// One line: why it does not work, or how it ended when it does.
    pub why: String,
    pub event_lines: usize,
    pub ready_ms: Option<u64>,
    pub wall_ms: u64,
    /// Requested operation → whether an event line showed it worked.
    pub requested: BTreeMap<String, bool>,
    /// Permission failures of privileged calls, as `bpf(BPF_MAP_CREATE map_type=14) = -EPERM`.
    pub permission_failures: BTreeSet<String>,
    /// Those the tracer carried on after and the run with every capability did not have.
    pub went_without: BTreeSet<String>,
}

/// The verdict's inputs besides the run itself.
pub(crate) struct Criteria<'a> {
    pub lines: usize,
    pub capability_code: i32,
    pub ends_by_itself: bool,
    /// (operation, pattern of an event line that shows it worked).
    pub probes: Vec<(String, &'a regex::Regex)>,
    /// Permission failures of the run with every capability.
    pub baseline_failures: &'a BTreeSet<String>,
}

const EPERM: i64 = -(libc::EPERM as i64);
const EACCES: i64 = -(libc::EACCES as i64);

/// Permission failures of privileged calls, in time order: (time, signature).
pub(crate) fn permission_failures(v: &View) -> Vec<(u64, String)> {
    let last = v.plan().facts.cap_last_cap;
    v.calls()
        .filter(|(_, c, r, injected)| {
            c.is_privileged() && !injected && (*r == EPERM || *r == EACCES)
        })
        .map(|(e, c, r, _)| {
            (
                e.t_ns,
                format!(
                    "{} = {}",
                    c.describe(last),
                    capring_observe::timeline::result_text(r)
                ),
            )
        })
        .collect()
}

/// What a run that did not work shows of the cause: the last permission failure and the
/// last line on stderr.
fn cause(v: &View, failures: &[(u64, String)]) -> String {
    let mut parts = Vec::new();
    if let Some((_, f)) = failures.last() {
        parts.push(format!("after {f}"));
    }
    if let Some(line) = v.stderr_lines().last() {
        let line: String = line.trim().chars().take(160).collect();
        parts.push(format!("stderr: {line}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join("; "))
    }
}

/// Judges one run by the criterion of the module docs.
pub(crate) fn judge(rec: &RunRecord, set: CapSet, purpose: Purpose, c: &Criteria) -> Trial {
    let v = View::new(rec);
    let obs = &rec.observation;
    let exit = &obs.exit;
    let failures = permission_failures(&v);
    let ready = v.ready_at();
    let n = obs.event_count;
    let ended_well = exit.stopped_by_harness || (c.ends_by_itself && exit.code == Some(0));
    let fault = if !exit.stopped_by_harness && exit.code == Some(c.capability_code) {
        Some(format!(
            "exit {} (the capability error code)",
            c.capability_code
        ))
    } else if ready.is_none() {
        Some(format!("never ready ({exit}, {n} event lines)"))
    } else if n == 0 {
        Some(format!("no event line ({exit})"))
    } else if n < c.lines {
        Some(format!("only {n} of {} event lines ({exit})", c.lines))
    } else if !ended_well {
        Some(format!("ended by itself: {exit}"))
    } else {
        None
    };
    let why = match &fault {
        Some(f) => format!("{f}{}", cause(&v, &failures)),
        None => format!(
            "{n} event lines, ready at +{} ms",
            ready.unwrap_or(0) / 1_000_000
        ),
    };
    let permission_failures: BTreeSet<String> = failures.into_iter().map(|(_, s)| s).collect();
    let went_without = if fault.is_none() {
        permission_failures
            .difference(c.baseline_failures)
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    let requested = c
        .probes
        .iter()
        .map(|(op, re)| (op.clone(), obs.events().any(|l| re.is_match(&l.text))))
        .collect();
    Trial {
        purpose,
        set,
        works: fault.is_none(),
        why,
        event_lines: n,
        ready_ms: ready.map(|t| t / 1_000_000),
        wall_ms: obs.wall.as_millis() as u64,
        requested,
        permission_failures,
        went_without,
    }
}

/// The Required ring a run used: every E its threads had at a privileged call up to
/// readiness (the union, when they differ).
pub(crate) fn observed_required(rec: &RunRecord) -> Option<CapSet> {
    let v = View::new(rec);
    let ready = v.ready_at()?;
    let sets: Vec<CapSet> = v
        .privileged()
        .filter(|(e, ..)| e.t_ns <= ready)
        .filter_map(|(e, ..)| e.own().map(|t| t.effective))
        .collect();
    (!sets.is_empty()).then(|| sets.into_iter().fold(CapSet::EMPTY, CapSet::union))
}

/// What every trial of one event set shares.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub events: Vec<String>,
    pub mode: Mode,
    pub lines: usize,
    pub paranoid: Option<i32>,
}

/// The scenario of one trial: `keep` = the capabilities the tracer gets (None: all).
pub(crate) fn scenario(
    profile: &Profile,
    setup: &Setup,
    keep: Option<CapSet>,
    bypass: bool,
    facts: &EnvFacts,
) -> Scenario {
    let catalog = profile.catalog();
    let attach: Vec<_> = setup
        .events
        .iter()
        .filter_map(|e| catalog.event(e))
        .map(|e| catalog.attach_type(e))
        .collect();
    let mut needs = Vec::new();
    if attach.iter().any(|a| a.uses_perf) {
        needs.push(Need::Tracefs);
    }
    if attach.iter().any(|a| a.needs_cgroup2) {
        needs.push(Need::Cgroup2);
    }
    let drop = keep.map_or(CapSet::EMPTY, |k| {
        CapSet::all_up_to(facts.cap_last_cap).difference(k)
    });
    let mut s = Scenario {
        name: "minimize".into(),
        description: format!("capring minimize: {}", setup.events.join(",")),
        target: Target::Tracer,
        select: Vec::new(),
        events: Some(setup.events.clone()),
        cli: Vec::new(),
        env: Default::default(),
        faults: Default::default(),
        bounding_drop: drop.names(),
        paranoid: setup.paranoid,
        lines: Some(setup.lines),
        needs,
        rules_args: Vec::new(),
        clauses: Vec::new(),
    };
    match (bypass, setup.mode) {
        (true, Mode::BypassFlag) => s.cli.push("bypass=1".into()),
        (true, Mode::BypassEnv) => {
            s.env
                .insert(capring_spec::options::ENV_BYPASS.into(), "1".into());
        }
        _ => {}
    }
    s
}

/// Plans and runs one trial; the record, or why the harness could not run it.
pub(crate) fn launch(
    profile: &Profile,
    scenario: &Scenario,
    base: &EnvFacts,
    timeout: Option<Duration>,
) -> Result<RunRecord, Stop> {
    let options = plan::Options {
        measure: None,
        max_timeout: timeout,
    };
    let p = plan::plan(profile, scenario, base, options).map_err(|no| match no {
        NoPlan::NotApplicable(why) | NoPlan::BadInput(why) => Stop::Harness(why),
        NoPlan::Unsupported(missing) => Stop::Harness(
            missing
                .iter()
                .map(|i| i.describe())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    })?;
    let rec = run::execute(&p, true).map_err(|e| match e {
        Skip::NotApplicable(w) | Skip::Harness(w) => Stop::Harness(w),
    })?;
    if rec.observation.exit.interrupted || capring_observe::interrupt::requested().is_some() {
        return Err(Stop::Interrupted);
    }
    Ok(rec)
}

/// The first call that attached a probe, for messages.
pub fn first_attach(rec: &RunRecord) -> Option<String> {
    let last = rec.plan.facts.cap_last_cap;
    rec.observation
        .timeline
        .calls()
        .find(|(_, c, r, _)| c.attaches() && *r >= 0)
        .map(|(_, c, ..): (_, &Call, _, _)| c.describe(last))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn recorded(name: &str) -> RunRecord {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/runs")
            .join(name);
        RunRecord::load(&p).unwrap()
    }

    fn criteria<'a>(
        lines: usize,
        baseline: &'a BTreeSet<String>,
        probes: Vec<(String, &'a regex::Regex)>,
    ) -> Criteria<'a> {
        Criteria {
            lines,
            capability_code: 3,
            ends_by_itself: false,
            probes,
            baseline_failures: baseline,
        }
    }

    #[test]
    fn a_healthy_run_works_despite_the_feature_probes_failing() {
        let rec = recorded("reference/steady-state.json.gz");
        let none = BTreeSet::new();
        let t = judge(
            &rec,
            CapSet::EMPTY,
            Purpose::Search,
            &criteria(10, &none, vec![]),
        );
        assert!(t.works, "{}", t.why);
        // aya's probes: a devmap (EPERM) and a tracepoint program (EACCES) on every run.
        assert!(
            t.permission_failures
                .iter()
                .any(|f| f.contains("map_type=14") && f.ends_with("-EPERM")),
            "{:?}",
            t.permission_failures
        );
        assert!(
            t.permission_failures.iter().any(|f| f.ends_with("-EACCES")),
            "{:?}",
            t.permission_failures
        );
        // Against an empty baseline they are what it went without; against its own
        // failures, nothing.
        assert_eq!(t.went_without, t.permission_failures);
        let baseline = t.permission_failures.clone();
        let again = judge(
            &rec,
            CapSet::EMPTY,
            Purpose::Search,
            &criteria(10, &baseline, vec![]),
        );
        assert!(again.went_without.is_empty());
    }

    #[test]
    fn too_few_lines_do_not_work() {
        let rec = recorded("reference/steady-state.json.gz");
        let none = BTreeSet::new();
        let n = rec.observation.event_count;
        let t = judge(
            &rec,
            CapSet::EMPTY,
            Purpose::Search,
            &criteria(n + 1, &none, vec![]),
        );
        assert!(!t.works);
        assert!(
            t.why.starts_with(&format!("only {n} of {}", n + 1)),
            "{}",
            t.why
        );
    }

    #[test]
    fn a_capability_error_does_not_work_and_names_its_cause() {
        // missing-required: net_packet without cap_net_admin in the bounding set, exit 3.
        let rec = recorded("reference/missing-required.json.gz");
        let none = BTreeSet::new();
        let t = judge(
            &rec,
            CapSet::EMPTY,
            Purpose::Search,
            &criteria(10, &none, vec![]),
        );
        assert!(!t.works);
        assert!(
            t.why.starts_with("exit 3 (the capability error code)"),
            "{}",
            t.why
        );
        assert!(t.why.contains("stderr: "), "{}", t.why);
    }

    #[test]
    fn requested_operations_are_seen_in_the_event_lines() {
        let digest = regex::Regex::new(r#""sha256":"[0-9a-f]{64}""#).unwrap();
        let none = BTreeSet::new();
        let with = recorded("reference/requested-per-event.json.gz");
        let t = judge(
            &with,
            CapSet::EMPTY,
            Purpose::Requested,
            &criteria(10, &none, vec![("hash-exe".into(), &digest)]),
        );
        assert_eq!(t.requested.get("hash-exe"), Some(&true), "{}", t.why);
        // drop-requested: the same event with cap_sys_ptrace dropped: no digest at all.
        let without = recorded("reference/drop-requested.json.gz");
        let t = judge(
            &without,
            CapSet::EMPTY,
            Purpose::Requested,
            &criteria(10, &none, vec![("hash-exe".into(), &digest)]),
        );
        assert_eq!(t.requested.get("hash-exe"), Some(&false));
    }

    #[test]
    fn the_observed_ring_is_read_from_the_configuration_calls() {
        let rec = recorded("reference/steady-state.json.gz");
        let bpf_perfmon: CapSet = [
            capring_spec::caps::Cap::BPF,
            capring_spec::caps::Cap::PERFMON,
        ]
        .into_iter()
        .collect();
        assert_eq!(observed_required(&rec), Some(bpf_perfmon));
        let fallback = recorded("reference/sys-admin-fallback.json.gz");
        assert_eq!(
            observed_required(&fallback),
            Some(CapSet::EMPTY.with(capring_spec::caps::Cap::SYS_ADMIN))
        );
    }
}
