//! The differential check: `capring_spec::options::parse_and_resolve` against the model in
//! [`crate::grammar`], then the resolved options through `capring_spec::oracle::evaluate`,
//! whose answer must keep the invariants SPEC.md states.
//!
//! One function, [`check_bytes`], serves the fuzz target (`fuzz/fuzz_targets/capabilities.rs`)
//! and the replay of every saved input under `fuzz/regressions/` and `fuzz/seeds/`
//! (`tests/fuzz_regressions.rs`), so a saved crash fails a normal test for the same reason
//! it failed the fuzzer.
//!
//! # Input format
//!
//! Text, split into lines (invalid UTF-8 is replaced, so every input is a case): the first
//! three lines are `CAPABILITIES_BYPASS`, `CAPABILITIES_ADD` and `CAPABILITIES_DROP` (a lone
//! `-` means unset), every further line is one `--capabilities` value (one final newline
//! ends the last line; `\n\n` at the end gives an empty value). The running kernel's
//! `cap_last_cap`, the environment facts and the selected events are picked by a checksum
//! of the whole input, so each input is judged on one kernel and environment and the
//! fuzzer covers them all; [`Case`]'s `Debug` output names them in every failure.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use capring_spec::caps::{Cap, CapSet};
use capring_spec::catalog::Catalog;
use capring_spec::facts::{EnvFacts, MemlockAction};
use capring_spec::options::{self, CapEnv, CapOptions};
use capring_spec::oracle::{self, Outcome, Rings};

use crate::grammar::{self, Environment, Resolved};

/// Kernels by `cap_last_cap`: no cap_perfmon/cap_bpf (37), cap_perfmon only (38), no
/// cap_checkpoint_restore (39), today's (40), and newer kernels with numbered unknowns.
pub const KERNELS: [u8; 6] = [40, 37, 38, 39, 41, 63];

/// The events of the builtin catalog.
pub const EVENTS: [&str; 5] = [
    "execve",
    "openat",
    "module_load",
    "sched_process_exec",
    "net_packet",
];

/// Environments the oracle is asked about (each a change to [`EnvFacts::example`]).
pub const FACTS: [&str; 6] = [
    "example",
    "container: no cap_sys_admin, cap_net_admin, cap_sys_ptrace permitted",
    "cap_bpf removed from the bounding set",
    "perf_event_paranoid 3",
    "no cgroup v2",
    "memlock hard limit too low, no cap_sys_resource permitted",
];

/// One decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The first three lines: the `CAPABILITIES_*` variables (`-` = unset).
    pub env: Environment,
    /// Every further line: one `--capabilities` value each, in order.
    pub cli: Vec<String>,
    /// The running kernel's `cap_last_cap`, one of [`KERNELS`] (picked by the checksum).
    pub cap_last_cap: u8,
    /// The environment, one of the names in [`FACTS`] (picked by the checksum); see
    /// [`Case::env_facts`].
    pub facts: &'static str,
    /// The selected events: a non-empty subset of [`EVENTS`] (picked by the checksum).
    pub events: Vec<String>,
}

impl Case {
    /// Decodes any bytes into a case (see the module's input format); total, so every
    /// fuzz input is judged.
    pub fn from_bytes(data: &[u8]) -> Case {
        let text = String::from_utf8_lossy(data);
        // A file's final newline ends the last line; it does not start an empty value.
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let mut lines = text.split('\n');
        let mut variable = || match lines.next() {
            None | Some("-") => None,
            Some(v) => Some(v.to_string()),
        };
        let env = Environment {
            bypass: variable(),
            add: variable(),
            drop: variable(),
        };
        let cli = lines.map(String::from).collect();
        let sum = data.iter().fold(0usize, |a, b| {
            a.wrapping_mul(31).wrapping_add(usize::from(*b))
        });
        let cap_last_cap = KERNELS[sum % KERNELS.len()];
        let facts = FACTS[(sum / KERNELS.len()) % FACTS.len()];
        // A non-empty subset of the events, as a bit mask 1..=31.
        let mask = (sum / KERNELS.len() / FACTS.len()) % 31 + 1;
        let events = EVENTS
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, e)| e.to_string())
            .collect();
        Case {
            env,
            cli,
            cap_last_cap,
            facts,
            events,
        }
    }

    /// The environment facts of this case: a kernel with `cap_last_cap`, changed as named.
    pub fn env_facts(&self) -> EnvFacts {
        let mut f = EnvFacts::example();
        f.cap_last_cap = self.cap_last_cap;
        f.permitted = CapSet::all_up_to(self.cap_last_cap);
        f.bounding = CapSet::all_up_to(self.cap_last_cap);
        match FACTS.iter().position(|n| *n == self.facts) {
            Some(1) => {
                for c in [Cap::SYS_ADMIN, Cap::NET_ADMIN, Cap::SYS_PTRACE] {
                    f.permitted.remove(c);
                }
            }
            Some(2) => f.bounding.remove(Cap::BPF),
            Some(3) => f.perf_event_paranoid = Some(3),
            Some(4) => f.cgroup2 = None,
            Some(5) => {
                f.bpf_memcg = Some(false);
                f.memlock_soft = 64 << 10;
                f.memlock_hard = 64 << 10;
                f.permitted.remove(Cap::SYS_RESOURCE);
            }
            _ => {}
        }
        f
    }
}

/// Checks one fuzz input; `Err` says what disagreed, with the decoded case.
pub fn check_bytes(data: &[u8]) -> Result<(), String> {
    let case = Case::from_bytes(data);
    check(&case).map_err(|e| format!("{e}\n  case: {case:?}"))
}

/// The parser against the model, then the oracle's invariants on the parser's options.
pub fn check(case: &Case) -> Result<(), String> {
    let facts = case.env_facts();
    let cap_env = CapEnv {
        bypass: case.env.bypass.clone(),
        add: case.env.add.clone(),
        drop: case.env.drop.clone(),
    };
    let parsed = options::parse_and_resolve(&case.cli, &cap_env, case.cap_last_cap, "fuzz-kernel");
    let model = grammar::resolve(&case.cli, &case.env, case.cap_last_cap);
    let options = match (parsed, model) {
        (Err(e), Err(_)) => {
            let line = e.to_string();
            return if line.is_empty() || line.contains('\n') {
                Err(format!("usage error is not one line: {line:?}"))
            } else {
                Ok(())
            };
        }
        (Ok(o), Err(m)) => return Err(format!("parser accepts {o:?}, model rejects: {m:?}")),
        (Err(e), Ok(m)) => return Err(format!("parser rejects ({e}), model accepts {m:?}")),
        (Ok(o), Ok(m)) => {
            let got = as_model(&o);
            if got != m {
                return Err(format!("parser resolves {got:?}, model {m:?}"));
            }
            o
        }
    };
    oracle_invariants(&options, &case.events, &facts)
}

/// The parser's options in the model's terms.
pub fn as_model(o: &CapOptions) -> Resolved {
    let numbers = |s: CapSet| s.iter().map(Cap::number).collect::<BTreeSet<u8>>();
    Resolved {
        help: o.help,
        bypass: o.bypass,
        bypass_source: match o.bypass_source {
            options::Source::Default => grammar::Source::Default,
            options::Source::Cli => grammar::Source::Cli,
            options::Source::Env => grammar::Source::Env,
        },
        add: numbers(o.add),
        drop: numbers(o.drop),
    }
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// What the oracle must answer for accepted options, valid events and these facts.
pub fn oracle_invariants(o: &CapOptions, events: &[String], f: &EnvFacts) -> Result<(), String> {
    let outcome = oracle::evaluate(o, events, catalog(), f)
        .map_err(|e| format!("oracle refuses valid events {events:?}: {e}"))?;
    // help.lists-kernel-caps: help lists and exits 0, whatever else was asked.
    if o.help {
        ensure!(outcome == Outcome::Help, "help gives {outcome:?}");
        return Ok(());
    }
    match &outcome {
        Outcome::Help => Err("Help without help".into()),
        Outcome::Runs {
            bypass: true,
            rings,
            ..
        } if o.bypass => bypass_rings(rings, f),
        Outcome::Runs {
            bypass: false,
            rings,
            ..
        } if !o.bypass => {
            ensure!(
                outcome.exit_code() == 0,
                "Runs exits {}",
                outcome.exit_code()
            );
            dropping_rings(o, events, f, rings)
        }
        Outcome::Runs { bypass, .. } => Err(format!(
            "options bypass={} but the oracle runs with bypass={bypass}",
            o.bypass
        )),
        Outcome::CannotRun {
            missing, message, ..
        } => {
            ensure!(!o.bypass, "bypass never refuses to run: {message}");
            ensure!(
                outcome.exit_code() == oracle::EXIT_CAPABILITY,
                "CannotRun exit code"
            );
            cannot_run(o, events, f, *missing, message)
        }
    }
}

/// `bypass.flag`: "no capability-dropping system call is made and E = P on every thread for
/// the whole run".
fn bypass_rings(r: &Rings, f: &EnvFacts) -> Result<(), String> {
    for (name, set) in [
        ("privileged", r.privileged),
        ("required", r.required),
        ("unprivileged", r.unprivileged),
        ("config_permitted", r.config_permitted),
        ("steady_permitted", r.steady_permitted),
    ] {
        ensure!(
            set == f.permitted,
            "bypass: {name} {set} is not P {}",
            f.permitted
        );
    }
    ensure!(!r.clear_bounding, "bypass: the bounding set is dropped");
    Ok(())
}

/// The Required ring SPEC.md's `ring.required.exact` spells out when no measured table holds:
/// the eBPF base (cap_bpf, with cap_perfmon when a selected program is a tracing one; else
/// cap_sys_admin), cap_sys_admin for perf-attached events when paranoid > 2 on a kernel that
/// enforces it, cap_sys_resource when the memlock hard limit must be raised, each selected
/// event's configuration needs unless cap_sys_admin, already in the ring, covers them, plus
/// `add`, minus `drop`. cap_sys_admin covers cap_bpf and cap_perfmon.
fn spec_required(o: &CapOptions, events: &[String], f: &EnvFacts) -> CapSet {
    let usable = f.permitted.intersection(f.bounding);
    let selected: Vec<_> = events
        .iter()
        .map(|name| catalog().event(name).expect("valid events"))
        .collect();
    let ebpf: Vec<_> = selected
        .iter()
        .map(|e| catalog().attach_type(e))
        .filter(|a| a.ebpf)
        .collect();
    let tracing = ebpf.iter().any(|a| a.perfmon);
    // facts: an unreadable perf_event_paranoid counts as the most restrictive, an unknown
    // enforcement as enforced.
    let perf_admin = selected.iter().any(|e| catalog().attach_type(e).uses_perf)
        && f.perf_event_paranoid.unwrap_or(4) > 2
        && f.perf_restricted != Some(false);
    let modern = Cap::BPF.number() <= f.cap_last_cap
        && usable.contains(Cap::BPF)
        && (!tracing || usable.contains(Cap::PERFMON));
    let mut ring = CapSet::EMPTY;
    if perf_admin || (!ebpf.is_empty() && !modern) {
        ring = ring.with(Cap::SYS_ADMIN);
    } else if !ebpf.is_empty() {
        ring = ring.with(Cap::BPF);
        if tracing {
            ring = ring.with(Cap::PERFMON);
        }
    }
    if !ebpf.is_empty() && f.memlock_action() == MemlockAction::RaiseHard {
        ring = ring.with(Cap::SYS_RESOURCE);
    }
    for event in &selected {
        for need in &event.required {
            let covered = need
                .alternatives_on(f)
                .iter()
                .any(|a| *a == Cap::SYS_ADMIN && ring.contains(Cap::SYS_ADMIN));
            if !covered {
                ring = ring.with(need.capability);
            }
        }
    }
    ring.union(o.add).difference(o.drop)
}

fn cgroup2_missing(events: &[String], f: &EnvFacts) -> bool {
    f.cgroup2.is_none()
        && events.iter().any(|e| {
            let event = catalog().event(e).expect("valid events");
            catalog().attach_type(event).needs_cgroup2
        })
}

fn dropping_rings(
    o: &CapOptions,
    events: &[String],
    f: &EnvFacts,
    r: &Rings,
) -> Result<(), String> {
    let usable = f.permitted.intersection(f.bounding);
    let expected = spec_required(o, events, f);
    // ring.required.exact, add.required, drop.required
    ensure!(
        r.required == expected,
        "Required {} but SPEC.md gives {expected}",
        r.required
    );
    ensure!(
        o.add.is_subset(r.required),
        "add {} not in Required {}",
        o.add,
        r.required
    );
    ensure!(
        r.required.intersection(o.drop).is_empty(),
        "dropped in Required {}",
        r.required
    );
    // caps.missing-required: running means every Required capability is usable.
    ensure!(
        r.required.is_subset(usable),
        "Required {} not usable",
        r.required
    );
    ensure!(
        !cgroup2_missing(events, f),
        "runs without the cgroup v2 an event needs"
    );
    // ring.unprivileged.empty, ring.no-excess
    ensure!(
        r.unprivileged.is_empty(),
        "Unprivileged {} is not empty",
        r.unprivileged
    );
    ensure!(
        r.privileged == f.permitted,
        "Privileged {} is not P",
        r.privileged
    );
    let allowed = r.allowed_effective();
    ensure!(
        allowed.contains(&r.required) && allowed.contains(&CapSet::EMPTY),
        "allowed {allowed:?}"
    );
    requested_ops(o, events, usable, r)?;
    // ring.bounding.cleared: "When cap_setpcap is usable at start".
    ensure!(
        r.clear_bounding == usable.contains(Cap::SETPCAP),
        "clear_bounding"
    );
    Ok(())
}

/// `ring.requested.single`, `drop.requested` and `ring.permitted.shrinks`.
fn requested_ops(
    o: &CapOptions,
    events: &[String],
    usable: CapSet,
    r: &Rings,
) -> Result<(), String> {
    let declared: usize = events
        .iter()
        .map(|e| catalog().event(e).expect("valid events").requested.len())
        .sum();
    ensure!(
        r.requested.len() == declared,
        "{} Requested ops, {declared} declared",
        r.requested.len()
    );
    let mut enabled = CapSet::EMPTY;
    for op in &r.requested {
        let should = !o.drop.contains(op.capability) && usable.contains(op.capability);
        ensure!(
            op.enabled == should,
            "Requested {} enabled={} (drop {}, usable {usable})",
            op.capability,
            op.enabled,
            o.drop
        );
        if op.enabled {
            enabled.insert(op.capability);
        }
    }
    for set in r.requested_sets() {
        ensure!(
            set.len() == 1,
            "a Requested ring {set} is not one capability"
        );
    }
    ensure!(
        r.steady_permitted == enabled,
        "steady P {} but enabled ops {enabled}",
        r.steady_permitted
    );
    ensure!(
        r.config_permitted == r.required.union(enabled),
        "config P {}",
        r.config_permitted
    );
    Ok(())
}

/// `caps.missing-required`: refusing to run names capabilities that are Required, not
/// dropped and not usable; or an event's environment (cgroup v2) is missing.
fn cannot_run(
    o: &CapOptions,
    events: &[String],
    f: &EnvFacts,
    missing: CapSet,
    message: &str,
) -> Result<(), String> {
    let usable = f.permitted.intersection(f.bounding);
    ensure!(
        !message.is_empty() && !message.contains('\n'),
        "message {message:?}"
    );
    if missing.is_empty() {
        ensure!(
            cgroup2_missing(events, f),
            "refuses with nothing missing: {message}"
        );
        return Ok(());
    }
    let required = spec_required(o, events, f);
    ensure!(
        missing == required.difference(usable),
        "missing {missing}, SPEC.md gives {}",
        required.difference(usable)
    );
    Ok(())
}
