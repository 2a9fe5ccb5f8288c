//! Running one scenario against one tracer profile: compute what the spec expects (the
//! oracle, fed with this machine's probed facts adjusted for the scenario's conditions),
//! launch the tracer under the observer with a workload next to it, and keep everything the
//! checks need.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capring_spec::caps::{self, Cap, CapSet};
use capring_spec::facts::EnvFacts;
use capring_spec::options::{self, CapEnv};
use capring_spec::oracle::{self, Outcome, Rings};
use serde::Serialize;

use crate::launch::{Companion, Faults, LaunchSpec};
use crate::observer::{self, Observation};
use crate::profile::{Profile, RingModel};
use crate::scenario::{Need, Scenario, Target};

/// What the spec says should happen in a scenario.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "expect", rename_all = "kebab-case")]
pub enum Expectation {
    Usage {
        message: String,
    },
    Help,
    Runs {
        bypass: bool,
        rings: Rings,
        warnings: Vec<String>,
    },
    CannotRun {
        missing: CapSet,
        message: String,
    },
    Rules {
        allcaps: bool,
        rejected_flag: bool,
        warnings: Vec<String>,
    },
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub scenario: Scenario,
    pub facts: EnvFacts,
    pub expectation: Expectation,
    pub observation: Observation,
    pub programs_before: BTreeSet<u32>,
    pub programs_after: BTreeSet<u32>,
    pub usage_code: i32,
    pub capability_code: i32,
    /// Capabilities spelled in the scenario's add/drop (seed grammar), resolved.
    pub added: CapSet,
    pub dropped: CapSet,
}

/// Why a scenario could not run here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Skip {
    #[error("not applicable here: {0}")]
    NotApplicable(String),
    #[error("harness error: {0}")]
    Harness(String),
}

fn resolve_caps(names: &[String]) -> CapSet {
    names
        .iter()
        .filter_map(|n| caps::parse_name(n).ok())
        .collect()
}

/// Why this kernel cannot express a condition of the scenario, if it cannot: the scenario is
/// then N/A with that reason, not a harness error. So far one condition: removing from the
/// bounding set a capability the kernel does not know (above its `cap_last_cap`, e.g.
/// cap_bpf on 5.4, where `prctl(PR_CAPBSET_DROP)` answers EINVAL).
pub fn inexpressible(s: &Scenario, base: &EnvFacts) -> Option<String> {
    let unknown: Vec<String> = s
        .bounding_drop
        .iter()
        .filter_map(|n| caps::parse_name(n).ok())
        .filter(|cap| !base.kernel_has(*cap))
        .map(|cap| cap.to_string())
        .collect();
    (!unknown.is_empty()).then(|| {
        format!(
            "bounding_drop {}: this kernel does not know {} (cap_last_cap is {})",
            s.bounding_drop.join(","),
            unknown.join(", "),
            base.cap_last_cap
        )
    })
}

/// The facts the tracer will see under this scenario.
pub fn scenario_facts(base: &EnvFacts, s: &Scenario) -> EnvFacts {
    let mut f = base.clone();
    let dropped = resolve_caps(&s.bounding_drop);
    f.permitted = f.permitted.difference(dropped);
    f.bounding = f.bounding.difference(dropped);
    if let Some(p) = s.paranoid {
        f.perf_event_paranoid = Some(p);
    }
    f
}

fn scenario_env(s: &Scenario) -> CapEnv {
    CapEnv::from_lookup(|k| s.env.get(k).cloned())
}

pub fn expectation(profile: &Profile, s: &Scenario, facts: &EnvFacts) -> Expectation {
    let env = scenario_env(s);
    if s.target == Target::Rules {
        if !s.cli.is_empty() {
            return Expectation::Rules {
                allcaps: false,
                rejected_flag: true,
                warnings: vec![],
            };
        }
        let allcaps_flag = profile
            .rules_engine
            .as_ref()
            .is_some_and(|r| s.rules_args.contains(&r.allcaps_flag));
        return match oracle::evaluate_rules(allcaps_flag, &env) {
            Ok(o) => Expectation::Rules {
                allcaps: o.allcaps,
                rejected_flag: false,
                warnings: o.warnings,
            },
            Err(e) => Expectation::Usage {
                message: e.to_string(),
            },
        };
    }
    let opts =
        match options::parse_and_resolve(&s.cli, &env, facts.cap_last_cap, &facts.kernel_release) {
            Ok(o) => o,
            Err(e) => {
                return Expectation::Usage {
                    message: e.to_string(),
                }
            }
        };
    let events = s
        .events
        .clone()
        .unwrap_or_else(|| profile.events.default.clone());
    match oracle::evaluate(&opts, &events, profile.catalog(), facts) {
        Err(e) => Expectation::Usage {
            message: e.to_string(),
        },
        Ok(Outcome::Help) => Expectation::Help,
        Ok(Outcome::Runs {
            bypass,
            mut rings,
            warnings,
        }) => {
            if profile.ring_model == RingModel::TraceeHead && !bypass {
                // Tracee since v0.14: added capabilities live in the Base ring, which is
                // effective all the time; a Requested ring is Base plus its capability.
                rings.unprivileged = opts.add.intersection(facts.usable());
            }
            Expectation::Runs {
                bypass,
                rings,
                warnings,
            }
        }
        Ok(Outcome::CannotRun {
            missing, message, ..
        }) => Expectation::CannotRun { missing, message },
    }
}

/// Translates a seed-grammar `--capabilities` value into the profile's spelling.
fn translate(profile: &Profile, value: &str) -> String {
    let c = &profile.capabilities;
    match value.split_once('=') {
        None if value == "help" => c.help.clone(),
        Some(("bypass", v)) => c.bypass.replace("{value}", v),
        Some(("add", l)) => c.add.replace("{list}", l),
        Some(("drop", l)) => c.drop.replace("{list}", l),
        _ => value.to_string(),
    }
}

fn env_name<'a>(profile: &'a Profile, seed_name: &'a str) -> &'a str {
    let c = &profile.capabilities;
    match seed_name {
        options::ENV_BYPASS => c.env_bypass.as_deref().unwrap_or(seed_name),
        options::ENV_ADD => c.env_add.as_deref().unwrap_or(seed_name),
        options::ENV_DROP => c.env_drop.as_deref().unwrap_or(seed_name),
        other => other,
    }
}

/// Ids of every BPF program loaded in the kernel (BPF_PROG_GET_NEXT_ID walk).
pub fn loaded_programs() -> BTreeSet<u32> {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    let mut ids = BTreeSet::new();
    let mut attr = [0u32; 4]; // start_id, next_id, open_flags, pad
    loop {
        // SAFETY: attr is a valid, zero-padded bpf_attr prefix for this command.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                attr.as_mut_ptr(),
                16u32,
            )
        };
        if r != 0 {
            break;
        }
        ids.insert(attr[1]);
        attr[0] = attr[1];
    }
    ids
}

fn tracefs_ready() -> bool {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        return true;
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: mount(2) with static C strings.
    unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        );
    }
    std::path::Path::new("/sys/kernel/tracing/events").is_dir()
}

/// Sets perf_event_paranoid for the scenario and restores it on drop.
struct ParanoidGuard(Option<String>);

impl ParanoidGuard {
    const PATH: &'static str = "/proc/sys/kernel/perf_event_paranoid";

    fn set(value: i32) -> Result<ParanoidGuard, Skip> {
        let old = std::fs::read_to_string(Self::PATH)
            .map_err(|e| Skip::NotApplicable(format!("perf_event_paranoid is unreadable: {e}")))?;
        std::fs::write(Self::PATH, value.to_string()).map_err(|e| {
            Skip::NotApplicable(format!("perf_event_paranoid is not writable here: {e}"))
        })?;
        match std::fs::read_to_string(Self::PATH) {
            Ok(now) if now.trim() == value.to_string() => Ok(ParanoidGuard(Some(old))),
            _ => {
                let _ = std::fs::write(Self::PATH, old.trim());
                Err(Skip::NotApplicable(format!(
                    "this kernel does not accept perf_event_paranoid={value}"
                )))
            }
        }
    }
}

impl Drop for ParanoidGuard {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

/// The workload next to the tracer, started by the observer at the tracer's first attach.
fn workload_companion(profile: &Profile, command: &[String]) -> Result<Arc<Companion>, Skip> {
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| Skip::Harness("empty workload command".into()))?;
    Ok(Companion::new(profile.resolve_program(prog), args.to_vec()))
}

/// Runs one scenario under the observer.
pub fn run(profile: &Profile, s: &Scenario, base: &EnvFacts) -> Result<RunRecord, Skip> {
    run_with(profile, s, base, true)
}

/// Runs one scenario; `observe = false` launches the same runs without ptrace (overhead
/// benchmarks: the checks then lack a timeline and fail).
pub fn run_with(
    profile: &Profile,
    s: &Scenario,
    base: &EnvFacts,
    observe: bool,
) -> Result<RunRecord, Skip> {
    if let Some(why) = inexpressible(s, base) {
        return Err(Skip::NotApplicable(why));
    }
    for need in &s.needs {
        match need {
            Need::Tracefs if !tracefs_ready() => {
                return Err(Skip::NotApplicable(
                    "tracefs is not mounted and cannot be mounted".into(),
                ))
            }
            Need::Cgroup2 if base.cgroup2.is_none() => {
                return Err(Skip::NotApplicable("no cgroup v2 hierarchy".into()))
            }
            Need::Setpcap if !base.usable().contains(Cap::SETPCAP) => {
                return Err(Skip::NotApplicable(
                    "cap_setpcap is not usable, so no bounding drop is attempted".into(),
                ))
            }
            _ => {}
        }
    }
    let _paranoid = s.paranoid.map(ParanoidGuard::set).transpose()?;
    let facts = scenario_facts(base, s);
    let expectation = expectation(profile, s, &facts);

    let mut env_set: Vec<(String, String)> = profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &s.env {
        env_set.push((env_name(profile, k).to_string(), v.clone()));
    }
    let mut env_remove: Vec<String> = [options::ENV_BYPASS, options::ENV_ADD, options::ENV_DROP]
        .iter()
        .map(|k| env_name(profile, k).to_string())
        .filter(|k| !env_set.iter().any(|(n, _)| n == k))
        .collect();
    env_remove.dedup();

    let (program, args) = match s.target {
        Target::Tracer => {
            let mut args = profile.args.clone();
            let events = s
                .events
                .clone()
                .unwrap_or_else(|| profile.events.default.clone());
            if !events.is_empty() {
                args.push(profile.events.flag.clone());
                args.push(events.join(&profile.events.separator));
            }
            for v in &s.cli {
                args.push(profile.capabilities.flag.clone());
                args.push(translate(profile, v));
            }
            (profile.resolve_program(&profile.binary), args)
        }
        Target::Rules => {
            let rules = profile
                .rules_engine
                .as_ref()
                .ok_or_else(|| Skip::NotApplicable("the profile has no [rules_engine]".into()))?;
            let mut args = s.rules_args.clone();
            let input = std::env::var_os("CAPRING_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    profile
                        .path
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .join("..")
                })
                .join("scenarios/rules-input.jsonl");
            args.push("--input".into());
            args.push(input.display().to_string());
            for v in &s.cli {
                args.push(
                    rules
                        .capabilities_flag
                        .clone()
                        .unwrap_or_else(|| profile.capabilities.flag.clone()),
                );
                args.push(translate(profile, v));
            }
            (profile.resolve_program(&rules.binary), args)
        }
    };

    let mut spec = LaunchSpec::new(program, args);
    spec.env_set = env_set;
    spec.env_remove = env_remove;
    spec.faults = Faults {
        capset_eperm: s.faults.capset_eperm,
        capbset_drop_eperm: s.faults.capbset_drop_eperm,
    };
    spec.bounding_drop = resolve_caps(&s.bounding_drop);
    // A tracer expected to stop by itself (usage, capability errors, help) gets 15 s.
    spec.timeout = match expectation {
        Expectation::Runs { .. } => Duration::from_secs(profile.ready_timeout_s + 30),
        _ => Duration::from_secs(15),
    };
    // The harness ends the run itself (SIGTERM once `lines` lines were read), never the
    // tracer: every stdout-line sample must see the tracer's threads alive. A tracer that
    // stopped itself after N events could be gone before a slow reader took any sample, and
    // the steady-state clauses would then judge nothing.
    spec.stop_after_lines = s.lines;
    spec.sample_on_stdout = true;
    spec.sample_every = Some(Duration::from_millis(100));
    spec.observe = observe;

    let workload = match (&expectation, s.target) {
        (Expectation::Runs { .. }, Target::Tracer) => {
            let events = s
                .events
                .clone()
                .unwrap_or_else(|| profile.events.default.clone());
            let command = events
                .iter()
                .find_map(|e| profile.workload.per_event.get(e))
                .unwrap_or(&profile.workload.command);
            Some(workload_companion(profile, command)?)
        }
        _ => None,
    };
    spec.companion = workload.clone();
    let programs_before = loaded_programs();
    let observed = observer::run(&spec);
    if let Some(w) = workload {
        w.stop()
            .map_err(|e| Skip::Harness(format!("cannot start the workload {e}")))?;
    }
    let observation = observed.map_err(|e| Skip::Harness(e.to_string()))?;
    // The kernel frees a program whose last reference was the exited process a little later
    // (RCU): give programs the run added up to 500 ms to go before calling them left behind.
    // Only drop-failure runs are judged on it (and only they run alone, see
    // `Scenario::runs_alone`): others do not wait for programs of runs next to them.
    let mut programs_after = loaded_programs();
    let release_deadline = std::time::Instant::now() + Duration::from_millis(500);
    while s.runs_alone()
        && !programs_after.is_subset(&programs_before)
        && std::time::Instant::now() < release_deadline
    {
        std::thread::sleep(Duration::from_millis(10));
        programs_after = loaded_programs();
    }
    let parse_list = |key: &str| -> CapSet {
        s.cli
            .iter()
            .filter_map(|v| v.strip_prefix(key))
            .flat_map(|l| l.split(','))
            .chain(
                s.env
                    .get(if key == "add=" {
                        options::ENV_ADD
                    } else {
                        options::ENV_DROP
                    })
                    .map(String::as_str),
            )
            .flat_map(|l| l.split(','))
            .filter_map(|n| caps::parse_name(n).ok())
            .collect()
    };
    Ok(RunRecord {
        scenario: s.clone(),
        facts,
        expectation,
        observation,
        programs_before,
        programs_after,
        usage_code: profile.exit_codes.usage,
        capability_code: profile.exit_codes.capability,
        added: parse_list("add="),
        dropped: parse_list("drop="),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(bounding_drop: &[&str]) -> Scenario {
        let toml = format!(
            "[[scenario]]\nname = \"s\"\ndescription = \"d\"\nbounding_drop = {bounding_drop:?}\nclauses = [\"ring.required.exact\"]\n"
        );
        crate::scenario::parse(&toml, std::path::Path::new("test.toml"))
            .expect("a valid scenario")
            .remove(0)
    }

    #[test]
    fn dropping_a_capability_the_kernel_does_not_know_is_inexpressible() {
        let mut old = EnvFacts::example();
        old.cap_last_cap = 37;
        let why = inexpressible(&scenario(&["cap_bpf"]), &old).expect("N/A on 5.4");
        assert!(
            why.contains("cap_bpf") && why.contains("cap_last_cap is 37"),
            "{why}"
        );
        assert_eq!(inexpressible(&scenario(&["cap_net_admin"]), &old), None);
        assert_eq!(
            inexpressible(&scenario(&["cap_bpf"]), &EnvFacts::example()),
            None
        );
        assert_eq!(inexpressible(&scenario(&[]), &old), None);
    }
}
