//! The oracle: from options, selected events and environment facts, the four rings and
//! the expected outcome. Pure and total: every input gives an answer, never a panic.
//!
//! * Privileged: E = P. In force only under bypass (then for the whole run).
//! * Required: E = eBPF base ∪ event needs ∪ memlock need ∪ `add` − `drop`, while configuring.
//!   The eBPF base is {cap_bpf, cap_perfmon} where the kernel knows them and both are usable
//!   (cap_bpf alone when no selected program is a tracing one), else {cap_sys_admin};
//!   classic (perf) tracepoints, and perf buffers where the kernel has no BPF ring buffer, add
//!   cap_sys_admin where `perf_event_paranoid` > 2 and the kernel enforces it;
//!   cap_sys_resource joins only when the memlock hard limit must be raised. A need that a capability already in the ring covers (cap_sys_admin covers
//!   cap_bpf and cap_perfmon, and cap_net_admin on kernels with BPF tokens) is left out.
//!   Every rule is checked against the kernel's measured minimal sets
//!   (`harness/tests/measured.rs`).
//! * Requested: exactly one capability around one operation; `drop` disables it.
//! * Unprivileged: E = ∅, P = the capabilities later Requested operations need.

use serde::Serialize;

use crate::caps::{Cap, CapSet};
use crate::catalog::{AttachType, Catalog, Event, RequestedNeed, When};
use crate::facts::{EnvFacts, MemlockAction};
use crate::options::{CapOptions, UsageError};

/// Why a capability is in the Required ring. Reports and refusal messages quote needs, so
/// every capability of the ring can be traced to a rule and a kernel fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Need {
    /// The capability the ring gets for this reason (several needs may name the same one).
    pub capability: Cap,
    /// Which rule put it there: `ebpf-base`, `memlock`, `perf:event-output` (per-CPU perf
    /// buffers), `event:<name>` (a need the catalog declares), `perf:<name>` (a
    /// perf-attached event under a perf restriction) or `add`. The part after `:` is an
    /// event name except in `perf:event-output`.
    pub source: String,
    /// The kernel check or fact behind it, in one sentence with the probed values.
    pub reason: String,
    /// Capabilities the kernel accepts instead (cap_sys_admin for cap_bpf, cap_perfmon and
    /// cap_net_admin's BPF checks). A need is left out when a need without alternatives
    /// already puts one of them in the ring.
    #[serde(default, skip_serializing_if = "no_alternatives")]
    pub alternatives: CapSet,
}

fn no_alternatives(s: &CapSet) -> bool {
    s.is_empty()
}

/// One Requested operation of a selected event: a [`crate::catalog::RequestedNeed`] plus
/// the verdict on whether the tracer may raise its capability in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestedOp {
    /// The selected event the operation belongs to.
    pub event: String,
    /// The catalog's operation id (`hash-exe`): the skip warning names it.
    pub operation: String,
    /// The one capability raised around the operation.
    pub capability: Cap,
    /// Once at start-up, or per event.
    pub when: When,
    /// The catalog's reason, copied.
    pub reason: String,
    /// False when the capability was dropped by the user or is not usable: the tracer
    /// skips this enrichment (with one warning) and never raises the capability.
    pub enabled: bool,
}

/// The four rings of one run, and the other sets a conforming tracer must reach (the
/// oracle's answer when the tracer runs). Under bypass every set is the permitted set at
/// start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rings {
    /// Ring 0, E = P: the permitted set at start. In force only under bypass.
    pub privileged: CapSet,
    /// Ring 1, E while configuring: the needs' capabilities plus `add`, minus `drop`.
    pub required: CapSet,
    /// Why each capability of `required` is there, in the order found (eBPF base, each
    /// event's needs, `add`); needs of dropped capabilities left out except under bypass.
    pub required_needs: Vec<Need>,
    /// Every Requested operation of the selected events, in selection order, enabled or
    /// not (ring 2 is one enabled operation's capability, see [`Rings::requested_sets`]).
    pub requested: Vec<RequestedOp>,
    /// Ring 3, E in the steady state: ∅.
    pub unprivileged: CapSet,
    /// P while configuring: Required ∪ the enabled Requested capabilities.
    pub config_permitted: CapSet,
    /// P after configuration: the enabled Requested capabilities only.
    pub steady_permitted: CapSet,
    /// Empty the bounding set at start (CAP_SETPCAP is usable).
    pub clear_bounding: bool,
    /// What to do about `RLIMIT_MEMLOCK` before loading (nothing when no selected event
    /// loads eBPF programs).
    pub memlock: MemlockAction,
}

impl Rings {
    /// Capability sets E may legally have at some moment of a non-bypass run.
    pub fn allowed_effective(&self) -> Vec<CapSet> {
        let mut sets = vec![self.required, self.unprivileged];
        sets.extend(self.requested_sets());
        sets.sort();
        sets.dedup();
        sets
    }

    /// The effective set of each enabled Requested operation: the steady ring plus its one
    /// capability (just the capability in the seed's model, where the steady ring is empty).
    pub fn requested_sets(&self) -> Vec<CapSet> {
        let mut sets: Vec<CapSet> = self
            .requested
            .iter()
            .filter(|o| o.enabled)
            .map(|o| self.unprivileged.with(o.capability))
            .collect();
        sets.sort();
        sets.dedup();
        sets
    }

    /// The enabled Requested capabilities.
    pub fn requested_caps(&self) -> CapSet {
        self.requested
            .iter()
            .filter(|o| o.enabled)
            .map(|o| o.capability)
            .collect()
    }
}

/// The oracle's answer: what a conforming tracer does at start with these options, events
/// and facts (usage errors are the `Err` of [`evaluate`] instead). Serialized with an
/// `outcome` tag: `help`, `runs`, `cannot-run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// `--capabilities help`: list and exit 0.
    Help,
    /// The tracer runs with these rings.
    Runs {
        /// Capability dropping is bypassed: every ring is the permitted set.
        bypass: bool,
        /// The sets the tracer must go through.
        rings: Rings,
        /// Lines a conforming tracer prints on stderr, one each: the bypass warning
        /// (`bypass.warns`), each skipped Requested operation (`drop.requested`), a
        /// dropped declared need.
        warnings: Vec<String>,
    },
    /// The tracer must refuse to start (exit 3), naming what is missing.
    CannotRun {
        /// The Required capabilities that are not usable (not permitted, or not in the
        /// bounding set); empty when the environment is the problem (no cgroup v2).
        missing: CapSet,
        /// The selected events that need a missing capability (all of them for an
        /// environment problem).
        events: Vec<String>,
        /// The one line the tracer should print: the capabilities, which are not in the
        /// bounding set either, and the needs' sources.
        message: String,
    },
}

impl Outcome {
    /// The exit code a conforming tracer uses for this outcome at start.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Help | Outcome::Runs { .. } => 0,
            Outcome::CannotRun { .. } => EXIT_CAPABILITY,
        }
    }
}

/// Exit code for bad input (`usage.exit`): an unknown key, bad value, capability or event.
/// The reference's code, and the default a tracer profile's `[exit_codes]` can change.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a capability error (`drop-failure.aborts`,
/// `caps.missing-required.aborts`): a failed drop, or a Required capability not usable.
/// The reference's code, and the profile default like [`EXIT_USAGE`].
pub const EXIT_CAPABILITY: i32 = 3;

/// Checks event names against the catalog (usage error with a suggestion).
pub fn check_events(catalog: &Catalog, events: &[String]) -> Result<(), UsageError> {
    if events.is_empty() {
        return Err(UsageError::Other(
            "no event selected (use --events NAME[,NAME…])".into(),
        ));
    }
    for e in events {
        if catalog.event(e).is_none() {
            return Err(UsageError::UnknownEvent {
                given: e.clone(),
                suggestion: catalog.suggest(e),
            });
        }
    }
    Ok(())
}

/// Adds a need: (capability, source, reason, alternatives).
type Push<'a> = dyn FnMut(Cap, String, String, CapSet) + 'a;

/// The eBPF base and the memlock need: what loading the selected eBPF programs takes here.
/// `tracing`: one of them is a tracing program type (cap_perfmon besides cap_bpf).
fn push_ebpf_base(facts: &EnvFacts, tracing: bool, push: &mut Push) {
    let usable = facts.usable();
    let modern = facts.kernel_has(Cap::BPF)
        && usable.contains(Cap::BPF)
        && (!tracing || usable.contains(Cap::PERFMON));
    let admin = CapSet::EMPTY.with(Cap::SYS_ADMIN);
    if modern {
        push(
            Cap::BPF,
            "ebpf-base".into(),
            "create maps, load programs, read BTF".into(),
            admin,
        );
        if tracing {
            push(
                Cap::PERFMON,
                "ebpf-base".into(),
                "load and attach tracing programs".into(),
                admin,
            );
        }
    } else {
        let why = if facts.kernel_has(Cap::BPF) {
            "cap_bpf and cap_perfmon are not both usable: fall back to cap_sys_admin for eBPF"
        } else {
            "the kernel has no cap_bpf/cap_perfmon: cap_sys_admin covers eBPF"
        };
        push(
            Cap::SYS_ADMIN,
            "ebpf-base".into(),
            why.into(),
            CapSet::EMPTY,
        );
    }
    if facts.memlock_action() == MemlockAction::RaiseHard {
        push(
            Cap::SYS_RESOURCE,
            "memlock".into(),
            format!(
                "BPF memory is charged to RLIMIT_MEMLOCK on this kernel and its hard limit ({} bytes) is below {} bytes",
                facts.memlock_hard,
                facts.memlock_needed()
            ),
            CapSet::EMPTY,
        );
    }
    if facts.bpf_ringbuf == Some(false) && facts.perf_needs_sys_admin() {
        push(
            Cap::SYS_ADMIN,
            "perf:event-output".into(),
            format!(
                "without a BPF ring buffer events leave through per-CPU perf buffers (perf_event_open) and perf_event_paranoid is {} (> 2 allows perf events only to cap_sys_admin)",
                facts.perf_event_paranoid.map_or("unreadable".to_string(), |p| p.to_string())
            ),
            CapSet::EMPTY,
        );
    }
}

/// Leaves out the needs that a capability already in the ring covers: one of their
/// alternatives is put there by a need without alternatives (`add` does not count: it is
/// added on top of the needs, never instead of them).
fn drop_covered(needs: Vec<Need>) -> Vec<Need> {
    let firm: CapSet = needs
        .iter()
        .filter(|n| n.alternatives.is_empty() && n.source != "add")
        .map(|n| n.capability)
        .collect();
    needs
        .into_iter()
        .filter(|n| n.alternatives.intersection(firm).is_empty())
        .collect()
}

/// The selected events that need one of `missing`: through their own needs, their attach
/// type (perf), or the eBPF base and memlock needs every eBPF event shares.
fn needing_events(needs: &[Need], missing: &CapSet, events: &[String]) -> Vec<String> {
    let shared = needs.iter().any(|n| {
        missing.contains(n.capability) && matches!(n.source.as_str(), "ebpf-base" | "memlock")
    });
    events
        .iter()
        .filter(|e| {
            shared
                || needs.iter().any(|n| {
                    missing.contains(n.capability)
                        && n.source
                            .split_once(':')
                            .is_some_and(|(_, who)| who == e.as_str())
                })
        })
        .cloned()
        .collect()
}

/// The oracle: what a conforming tracer does with these `--capabilities` options, these
/// selected events (checked against `catalog` first: an unknown or missing event is a usage
/// error) and this environment.
///
/// In named steps: `--capabilities help` answers before anything else; `demand` gathers
/// what the events need here; under bypass every ring is the permitted set (`bypassed`);
/// otherwise an environment problem or a Required capability that is not usable refuses
/// the run, and the rest is the four rings (`dropping`).
pub fn evaluate(
    options: &CapOptions,
    events: &[String],
    catalog: &Catalog,
    facts: &EnvFacts,
) -> Result<Outcome, UsageError> {
    if options.help {
        return Ok(Outcome::Help);
    }
    check_events(catalog, events)?;
    let demand = demand(options, events, catalog, facts);
    if options.bypass {
        return Ok(bypassed(facts, demand));
    }
    if !demand.environment_problems.is_empty() {
        return Ok(Outcome::CannotRun {
            missing: CapSet::EMPTY,
            events: events.to_vec(),
            message: demand.environment_problems.join("; "),
        });
    }
    Ok(dropping(options, events, facts, demand))
}

/// What the selected events ask for in this environment, before bypass, `drop` and the
/// usable set decide the outcome.
struct Demand {
    /// The Required ring's needs (the covered ones already left out, see [`drop_covered`]),
    /// in the order they were found: eBPF base and memlock, then each event's in selection
    /// order, then `add`. `drop` is not applied yet.
    needs: Vec<Need>,
    /// Every Requested operation of the selected events, enabled or not.
    requested: Vec<RequestedOp>,
    /// One warning per Requested operation that is skipped (dropped or not usable).
    warnings: Vec<String>,
    /// Why this environment cannot host the events whatever the capabilities (an event
    /// that needs cgroup v2 where none is mounted).
    environment_problems: Vec<String>,
    /// At least one selected event loads eBPF programs, so the memlock action applies.
    ebpf: bool,
}

/// Gathers the needs of the selected events (which must all be in `catalog`): the eBPF
/// base once, each event's perf and declared needs, its Requested operations, then `add`.
fn demand(options: &CapOptions, events: &[String], catalog: &Catalog, facts: &EnvFacts) -> Demand {
    let usable = facts.usable();
    let mut needs: Vec<Need> = Vec::new();
    let mut push = |capability: Cap, source: String, reason: String, alternatives: CapSet| {
        needs.push(Need {
            capability,
            source,
            reason,
            alternatives,
        })
    };
    let attach: Vec<_> = events
        .iter()
        .filter_map(|e| catalog.event(e))
        .map(|e| catalog.attach_type(e))
        .filter(|a| a.ebpf)
        .collect();
    let ebpf = !attach.is_empty();
    if ebpf {
        push_ebpf_base(facts, attach.iter().any(|a| a.perfmon), &mut push);
    }
    let mut demand = Demand {
        needs: Vec::new(),
        requested: Vec::new(),
        warnings: Vec::new(),
        environment_problems: Vec::new(),
        ebpf,
    };
    for name in events {
        let event = catalog.event(name).expect("checked above");
        let attach = catalog.attach_type(event);
        push_event_needs(name, event, attach, facts, &mut push);
        if attach.needs_cgroup2 && facts.cgroup2.is_none() {
            demand.environment_problems.push(format!(
                "event {name} needs a cgroup v2 hierarchy and none is mounted"
            ));
        }
        for need in &event.requested {
            let (op, warning) = requested_op(name, need, options, usable);
            demand.requested.push(op);
            demand.warnings.extend(warning);
        }
    }
    for cap in options.add.iter() {
        push(
            cap,
            "add".into(),
            "added by --capabilities add / CAPABILITIES_ADD".into(),
            CapSet::EMPTY,
        );
    }
    demand.needs = drop_covered(needs);
    demand
}

/// One event's Required needs: cap_sys_admin for a perf-attached event where
/// `perf_event_paranoid` reserves perf to it, then the needs the catalog declares (with the
/// alternatives that hold on this kernel).
fn push_event_needs(
    name: &str,
    event: &Event,
    attach: &AttachType,
    facts: &EnvFacts,
    push: &mut Push,
) {
    if attach.uses_perf && facts.perf_needs_sys_admin() {
        push(
            Cap::SYS_ADMIN,
            format!("perf:{name}"),
            format!(
                "{} attaches through perf_event_open and perf_event_paranoid is {} (> 2 allows perf events only to cap_sys_admin on kernels that enforce it)",
                event.attach,
                facts.perf_event_paranoid.map_or("unreadable".to_string(), |p| p.to_string())
            ),
            CapSet::EMPTY,
        );
    }
    for need in &event.required {
        push(
            need.capability,
            format!("event:{name}"),
            need.reason.clone(),
            need.alternatives_on(facts).into_iter().collect(),
        );
    }
}

/// One Requested operation of event `name`, and the warning when it is skipped: enabled
/// under bypass, else only when its capability is usable and not dropped.
fn requested_op(
    name: &str,
    need: &RequestedNeed,
    options: &CapOptions,
    usable: CapSet,
) -> (RequestedOp, Option<String>) {
    let dropped = options.drop.contains(need.capability);
    let enabled = options.bypass || (!dropped && usable.contains(need.capability));
    let warning = (!enabled).then(|| {
        format!(
            "{name}: {} is skipped: {} is {}",
            need.operation,
            need.capability,
            if dropped {
                "dropped by --capabilities drop"
            } else {
                "not in the permitted set"
            }
        )
    });
    let op = RequestedOp {
        event: name.to_string(),
        operation: need.operation.clone(),
        capability: need.capability,
        when: need.when,
        reason: need.reason.clone(),
        enabled,
    };
    (op, warning)
}

/// What to do about `RLIMIT_MEMLOCK`: nothing when no selected event loads eBPF programs.
fn memlock_for(facts: &EnvFacts, ebpf: bool) -> MemlockAction {
    if ebpf {
        facts.memlock_action()
    } else {
        MemlockAction::Nothing
    }
}

/// Bypass: every ring is the permitted set at start, nothing is dropped, one warning says so
/// (the Requested operations are all enabled, see [`requested_op`]).
fn bypassed(facts: &EnvFacts, demand: Demand) -> Outcome {
    let p = facts.permitted;
    Outcome::Runs {
        bypass: true,
        rings: Rings {
            privileged: p,
            required: p,
            required_needs: demand.needs,
            requested: demand.requested,
            unprivileged: p,
            config_permitted: p,
            steady_permitted: p,
            clear_bounding: false,
            memlock: memlock_for(facts, demand.ebpf),
        },
        warnings: vec!["capability dropping is bypassed: every permitted capability stays effective for the whole run".into()],
    }
}

/// Without bypass: the Required ring is the needs minus `drop`; a Required capability that
/// is not usable refuses the run ([`missing_required`]), else the four rings, with a
/// warning when `drop` removes a declared need.
fn dropping(options: &CapOptions, events: &[String], facts: &EnvFacts, demand: Demand) -> Outcome {
    let Demand {
        needs,
        requested,
        mut warnings,
        ebpf,
        ..
    } = demand;
    let usable = facts.usable();
    let wanted: CapSet = needs.iter().map(|n| n.capability).collect();
    let dropped_needs = wanted.intersection(options.drop);
    let required = wanted.difference(options.drop);
    let missing = required.difference(usable);
    if !missing.is_empty() {
        return missing_required(&needs, missing, facts, events);
    }
    if !dropped_needs.is_empty() {
        warnings.push(format!(
            "--capabilities drop removes {dropped_needs} from the Required ring although it is declared as needed: configuration may fail"
        ));
    }
    let requested_caps: CapSet = requested
        .iter()
        .filter(|o| o.enabled)
        .map(|o| o.capability)
        .collect();
    Outcome::Runs {
        bypass: false,
        rings: Rings {
            privileged: facts.permitted,
            required,
            required_needs: needs
                .into_iter()
                .filter(|n| !options.drop.contains(n.capability))
                .collect(),
            requested,
            unprivileged: CapSet::EMPTY,
            config_permitted: required.union(requested_caps),
            steady_permitted: requested_caps,
            clear_bounding: usable.contains(Cap::SETPCAP),
            memlock: memlock_for(facts, ebpf),
        },
        warnings,
    }
}

/// The refusal when Required capabilities (`missing`) are not usable: the message names
/// them, the ones not even in the bounding set, and the sources that need them.
fn missing_required(
    needs: &[Need],
    missing: CapSet,
    facts: &EnvFacts,
    events: &[String],
) -> Outcome {
    let mut who: Vec<String> = needs
        .iter()
        .filter(|n| missing.contains(n.capability))
        .map(|n| n.source.clone())
        .collect();
    who.dedup();
    let not_in_bounding = missing.difference(facts.bounding);
    let message = format!(
        "the Required ring needs {missing}, which {} not in the permitted set{} (needed by: {})",
        if missing.len() == 1 { "is" } else { "are" },
        if not_in_bounding.is_empty() {
            String::new()
        } else {
            format!(" ({not_in_bounding} not in the bounding set either)")
        },
        who.join(", ")
    );
    Outcome::CannotRun {
        missing,
        events: needing_events(needs, &missing, events),
        message,
    }
}

/// What the rules engine must do: it knows only `--allcaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RulesOutcome {
    /// The rules engine keeps every capability it started with (`--allcaps` or
    /// `CAPABILITIES_BYPASS`); otherwise it runs with E = P = ∅.
    pub allcaps: bool,
    /// One stderr line per ignored `CAPABILITIES_ADD` / `CAPABILITIES_DROP` that is set.
    pub warnings: Vec<String>,
}

/// The rules engine's oracle. `CAPABILITIES_BYPASS=1|true` sets `--allcaps`;
/// `CAPABILITIES_ADD/DROP` are ignored with a warning; a bad bypass value is a usage error.
pub fn evaluate_rules(
    allcaps_flag: bool,
    env: &crate::options::CapEnv,
) -> Result<RulesOutcome, UsageError> {
    let mut warnings = Vec::new();
    let by_env = match env
        .bypass
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => false,
        Some(v) => crate::options::parse_bypass(v).ok_or_else(|| UsageError::BadBypass {
            origin: crate::options::ENV_BYPASS.into(),
            value: v.into(),
        })?,
    };
    for (var, value) in [
        (crate::options::ENV_ADD, &env.add),
        (crate::options::ENV_DROP, &env.drop),
    ] {
        if value.as_deref().is_some_and(|v| !v.trim().is_empty()) {
            warnings.push(format!("{var} is ignored: the rules engine does not support adding or dropping capabilities"));
        }
    }
    Ok(RulesOutcome {
        allcaps: allcaps_flag || by_env,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{parse_and_resolve, CapEnv};
    use rstest::rstest;

    fn run(values: &[&str], events: &[&str], facts: &EnvFacts) -> Outcome {
        let opts = parse_and_resolve(
            values,
            &CapEnv::default(),
            facts.cap_last_cap,
            &facts.kernel_release,
        )
        .unwrap();
        let events: Vec<String> = events.iter().map(|s| s.to_string()).collect();
        evaluate(&opts, &events, &Catalog::builtin(), facts).unwrap()
    }

    fn rings(o: Outcome) -> Rings {
        match o {
            Outcome::Runs { rings, .. } => rings,
            other => panic!("expected Runs, got {other:?}"),
        }
    }

    fn set(names: &[&str]) -> CapSet {
        CapSet::from_names(names.iter().copied()).unwrap()
    }

    // Seed: "Unprivileged (ring 3): no capabilities are Effective at all (most of the time)"
    // Seed: "Required (ring 1): only required (by events) capabilities are Effective (during config)"
    #[rstest]
    #[case(&["execve"], &["cap_bpf", "cap_perfmon"])]
    #[case(&["execve", "openat"], &["cap_bpf", "cap_perfmon"])]
    // cgroup_skb is not a tracing program type: no cap_perfmon (measured).
    #[case(&["net_packet"], &["cap_bpf", "cap_net_admin"])]
    #[case(&["sched_process_exec"], &["cap_bpf", "cap_perfmon"])]
    fn required_ring_modern_kernel(#[case] events: &[&str], #[case] required: &[&str]) {
        let r = rings(run(&[], events, &EnvFacts::example()));
        assert_eq!(r.required, set(required));
        assert_eq!(r.unprivileged, CapSet::EMPTY);
    }

    #[rstest]
    // paranoid 3 (Debian): perf-attached tracepoints need cap_sys_admin, which then covers
    // the eBPF base too (measured on Debian 6.1: {cap_sys_admin} is the only minimal set).
    #[case(Some(3), &["sched_process_exec"], &["cap_sys_admin"])]
    #[case(Some(3), &["execve"], &["cap_bpf", "cap_perfmon"])]
    #[case(None, &["sched_process_exec"], &["cap_sys_admin"])]
    #[case(Some(1), &["sched_process_exec"], &["cap_bpf", "cap_perfmon"])]
    fn paranoid(#[case] p: Option<i32>, #[case] events: &[&str], #[case] required: &[&str]) {
        let mut f = EnvFacts::example();
        f.perf_event_paranoid = p;
        assert_eq!(rings(run(&[], events, &f)).required, set(required));
    }

    // An upstream kernel (no CONFIG_SECURITY_PERF_EVENTS_RESTRICT) treats 3 like 2
    // (measured on this host's 6.18 at perf_event_paranoid 3).
    #[test]
    fn paranoid_3_only_where_the_kernel_enforces_it() {
        let mut f = EnvFacts::example();
        f.perf_event_paranoid = Some(3);
        f.perf_restricted = Some(false);
        assert_eq!(
            rings(run(&[], &["sched_process_exec"], &f)).required,
            set(&["cap_bpf", "cap_perfmon"])
        );
        f.perf_restricted = Some(true);
        assert_eq!(
            rings(run(&[], &["sched_process_exec"], &f)).required,
            set(&["cap_sys_admin"])
        );
    }

    #[test]
    fn sys_admin_fallback_without_cap_bpf() {
        let mut f = EnvFacts::example();
        f.bounding.remove(Cap::BPF);
        assert_eq!(
            rings(run(&[], &["execve"], &f)).required,
            set(&["cap_sys_admin"])
        );
        let mut old = EnvFacts::example();
        old.cap_last_cap = 37;
        old.permitted = CapSet::all_up_to(37);
        old.bounding = CapSet::all_up_to(37);
        assert_eq!(
            rings(run(&[], &["execve"], &old)).required,
            set(&["cap_sys_admin"])
        );
    }

    /// Without a ring buffer (5.4): less locked memory is needed, and the per-CPU perf
    /// buffers are perf events, which paranoid > 2 reserves to cap_sys_admin.
    #[test]
    fn without_a_ring_buffer_the_needs_follow_the_perf_buffers() {
        let mut f = EnvFacts::example();
        f.bpf_memcg = Some(false);
        f.memlock_soft = 64 << 10;
        f.memlock_hard = 2 << 20;
        // Ring buffer (or not probed): 2 MiB is below what the ring buffer needs.
        assert!(rings(run(&[], &["execve"], &f))
            .required
            .contains(Cap::SYS_RESOURCE));
        f.bpf_ringbuf = Some(false);
        let r = rings(run(&[], &["execve"], &f));
        assert_eq!(r.memlock, MemlockAction::RaiseSoft);
        assert!(!r.required.contains(Cap::SYS_RESOURCE), "{r:?}");
        // capbpf base, paranoid 2: cap_perfmon covers system-wide perf buffers.
        assert_eq!(r.required, set(&["cap_bpf", "cap_perfmon"]));
        // paranoid 3: cap_sys_admin, which then covers the base as well.
        f.perf_event_paranoid = Some(3);
        let r = rings(run(&[], &["execve"], &f));
        assert_eq!(r.required, set(&["cap_sys_admin"]));
        assert!(r
            .required_needs
            .iter()
            .any(|n| n.source == "perf:event-output"));
        // 5.4: no cap_bpf, 64 KiB hard limit.
        let mut old = f.clone();
        old.cap_last_cap = 37;
        old.permitted = CapSet::all_up_to(37);
        old.bounding = CapSet::all_up_to(37);
        old.memlock_hard = 64 << 10;
        assert_eq!(
            rings(run(&[], &["execve"], &old)).required,
            set(&["cap_sys_admin", "cap_sys_resource"])
        );
    }

    // Measured (snapshots/minimal-sets/): cap_sys_admin alone covers a cgroup_skb program,
    // cap_net_admin included; a tracing event next to it brings cap_perfmon back.
    #[test]
    fn cap_sys_admin_covers_the_needs_it_is_an_alternative_for() {
        let mut f = EnvFacts::example();
        f.bounding.remove(Cap::BPF);
        // 5.10, 6.1: the attach needs cap_net_admin whatever else the ring holds.
        for token in [None, Some(false)] {
            f.bpf_token = token;
            let r = rings(run(&[], &["net_packet"], &f));
            assert_eq!(
                r.required,
                set(&["cap_sys_admin", "cap_net_admin"]),
                "{token:?}"
            );
        }
        // Kernels with BPF tokens: cap_sys_admin is enough.
        f.bpf_token = Some(true);
        let r = rings(run(&[], &["net_packet"], &f));
        assert_eq!(r.required, set(&["cap_sys_admin"]));
        assert!(r
            .required_needs
            .iter()
            .all(|n| n.capability == Cap::SYS_ADMIN));
        let both = rings(run(&[], &["net_packet", "execve"], &EnvFacts::example()));
        assert_eq!(
            both.required,
            set(&["cap_bpf", "cap_perfmon", "cap_net_admin"])
        );
        // `add` puts a capability on top of the needs, never instead of them.
        let added = rings(run(
            &["add=cap_sys_admin"],
            &["net_packet"],
            &EnvFacts::example(),
        ));
        assert_eq!(
            added.required,
            set(&["cap_bpf", "cap_net_admin", "cap_sys_admin"])
        );
    }

    #[test]
    fn memlock_needs_sys_resource_only_when_the_hard_limit_is_low() {
        let mut f = EnvFacts::example();
        f.bpf_memcg = Some(false);
        f.memlock_soft = 64 << 10;
        f.memlock_hard = 64 << 10;
        assert!(rings(run(&[], &["execve"], &f))
            .required
            .contains(Cap::SYS_RESOURCE));
        f.memlock_hard = crate::facts::UNLIMITED;
        assert!(!rings(run(&[], &["execve"], &f))
            .required
            .contains(Cap::SYS_RESOURCE));
    }

    // Seed: "Requested (ring 2): single time requested capabilities are Effective (special needs)"
    #[test]
    fn requested_ops_shape_the_steady_permitted_set() {
        let r = rings(run(
            &[],
            &["sched_process_exec", "module_load"],
            &EnvFacts::example(),
        ));
        assert_eq!(r.steady_permitted, set(&["cap_sys_ptrace", "cap_syslog"]));
        assert_eq!(r.config_permitted, r.required.union(r.steady_permitted));
        assert!(r.allowed_effective().contains(&set(&["cap_syslog"])));
        assert!(r.clear_bounding);
    }

    // Seed: "The first will add given capabilities to the Required ring"
    // Seed: "The last will remove the capabilities from that same ring."
    #[rstest]
    #[case(&["add=cap_kill"], &["cap_bpf", "cap_perfmon", "cap_kill"])]
    #[case(&["add=cap_kill,cap_syslog"], &["cap_bpf", "cap_perfmon", "cap_kill", "cap_syslog"])]
    #[case(&["drop=cap_perfmon"], &["cap_bpf"])]
    #[case(&["drop=cap_chown"], &["cap_bpf", "cap_perfmon"])]
    fn add_and_drop_change_the_required_ring(#[case] values: &[&str], #[case] required: &[&str]) {
        assert_eq!(
            rings(run(values, &["execve"], &EnvFacts::example())).required,
            set(required)
        );
    }

    #[test]
    fn requested_sets_sit_on_top_of_the_steady_ring() {
        let mut r = rings(run(&[], &["module_load"], &EnvFacts::example()));
        assert_eq!(r.requested_sets(), vec![set(&["cap_syslog"])]);
        // Tracee-HEAD's model: the steady (Base) ring holds added capabilities.
        r.unprivileged = set(&["cap_kill"]);
        assert_eq!(r.requested_sets(), vec![set(&["cap_kill", "cap_syslog"])]);
        assert!(r.allowed_effective().contains(&set(&["cap_kill"])));
    }

    #[test]
    fn drop_disables_a_requested_operation_with_one_warning() {
        match run(
            &["drop=cap_sys_ptrace"],
            &["sched_process_exec"],
            &EnvFacts::example(),
        ) {
            Outcome::Runs {
                rings, warnings, ..
            } => {
                assert!(!rings.requested[0].enabled);
                assert!(rings.steady_permitted.is_empty());
                assert_eq!(
                    warnings.iter().filter(|w| w.contains("hash-exe")).count(),
                    1
                );
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn dropping_a_declared_need_warns() {
        match run(
            &["drop=cap_net_admin"],
            &["net_packet"],
            &EnvFacts::example(),
        ) {
            Outcome::Runs {
                rings, warnings, ..
            } => {
                assert!(!rings.required.contains(Cap::NET_ADMIN));
                assert!(warnings.iter().any(|w| w.contains("cap_net_admin")));
            }
            o => panic!("{o:?}"),
        }
    }

    // Seed: "Bypassing the capabilities drop will run tracee-ebpf ... with all capabilities set as Effective"
    #[test]
    fn bypass_keeps_everything() {
        let f = EnvFacts::example();
        match run(&["bypass=1"], &["execve"], &f) {
            Outcome::Runs {
                bypass: true,
                rings,
                warnings,
            } => {
                assert_eq!(rings.unprivileged, f.permitted);
                assert_eq!(rings.required, f.permitted);
                assert_eq!(warnings.len(), 1);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn missing_required_capability_cannot_run() {
        let mut f = EnvFacts::example();
        f.bounding.remove(Cap::NET_ADMIN);
        match run(&[], &["net_packet"], &f) {
            Outcome::CannotRun {
                missing, message, ..
            } => {
                assert_eq!(missing, set(&["cap_net_admin"]));
                assert!(message.contains("event:net_packet"), "{message}");
                assert!(message.contains("bounding"), "{message}");
            }
            o => panic!("{o:?}"),
        }
        // an added capability that is not permitted
        let mut f = EnvFacts::example();
        f.permitted.remove(Cap::SYS_RESOURCE);
        assert!(matches!(
            run(&["add=cap_sys_resource"], &["execve"], &f),
            Outcome::CannotRun { .. }
        ));
        // no eBPF capability at all
        let mut f = EnvFacts::example();
        f.permitted = CapSet::EMPTY;
        assert!(matches!(
            run(&[], &["execve"], &f),
            Outcome::CannotRun { .. }
        ));
    }

    #[test]
    fn cgroup_skb_without_cgroup2_cannot_run() {
        let mut f = EnvFacts::example();
        f.cgroup2 = None;
        assert!(matches!(
            run(&[], &["net_packet"], &f),
            Outcome::CannotRun { .. }
        ));
    }

    #[test]
    fn help_and_unknown_events() {
        assert_eq!(run(&["help"], &[], &EnvFacts::example()), Outcome::Help);
        let opts = parse_and_resolve(&[] as &[&str], &CapEnv::default(), 40, "t").unwrap();
        let err = evaluate(
            &opts,
            &["execv".into()],
            &Catalog::builtin(),
            &EnvFacts::example(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("did you mean 'execve'"), "{err}");
        assert!(evaluate(&opts, &[], &Catalog::builtin(), &EnvFacts::example()).is_err());
    }

    // Seed: "For tracee-rules, CAPABILITIES_BYPASS=1 will set the "--allcaps" command line flag"
    // Seed: "Tracee-rules do not support adding or removing specific capabilities."
    #[rstest]
    #[case(false, None, None, false, 0)]
    #[case(true, None, None, true, 0)]
    #[case(false, Some("1"), None, true, 0)]
    #[case(false, Some("true"), None, true, 0)]
    #[case(false, Some("0"), None, false, 0)]
    #[case(false, None, Some("cap_kill"), false, 1)]
    fn rules_engine(
        #[case] flag: bool,
        #[case] bypass: Option<&str>,
        #[case] add: Option<&str>,
        #[case] allcaps: bool,
        #[case] nwarn: usize,
    ) {
        let env = CapEnv {
            bypass: bypass.map(Into::into),
            add: add.map(Into::into),
            drop: None,
        };
        let o = evaluate_rules(flag, &env).unwrap();
        assert_eq!((o.allcaps, o.warnings.len()), (allcaps, nwarn));
    }

    #[test]
    fn rules_engine_bad_bypass() {
        let env = CapEnv {
            bypass: Some("maybe".into()),
            ..Default::default()
        };
        assert!(evaluate_rules(false, &env).is_err());
    }
}
