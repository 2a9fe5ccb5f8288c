//! One plan per run: a scenario resolved against a tracer profile and this machine's facts,
//! before anything is launched.
//!
//! Why: the run used to translate the profile piece by piece between observer calls, so
//! following one scenario meant climbing back and forth through `run.rs` and the observer.
//! Here [`plan`] is a pure function of (profile, scenario, facts): it picks the events by
//! role, fills the capability templates, spells the seed's `--capabilities` values and
//! `CAPABILITIES_*` variables the way this tracer wants them, computes what the spec expects
//! (the oracle, fed with the facts the tracer will see), and decides the stop condition. It
//! is unit-tested without root; [`crate::run`] only executes it.

use std::path::PathBuf;
use std::time::Duration;

use capring_observe::launch::{Companion, EventLines, LaunchSpec};
use capring_observe::timeline::{FaultKind, Stream};
use capring_spec::caps::{self, CapSet};
use capring_spec::facts::EnvFacts;
use capring_spec::options::{self, CapEnv, CapOptions};
use capring_spec::oracle::{self, Outcome, Rings};
use serde::{Deserialize, Serialize};

use crate::measured::Measurement;
use crate::profile::{LevelChoice, Profile, ReadyOn, RingModel};
use crate::scenario::{Chosen, Need, Scenario, Target};

/// What the spec says should happen in a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "expect", rename_all = "kebab-case")]
pub enum Expectation {
    /// The scenario's values are bad input: the tracer must refuse them.
    Usage {
        /// Why, as the seed grammar's parser says it (for reports; tracers word it their way).
        message: String,
    },
    /// What the oracle says the tracer does (help, run with rings, refuse to run).
    Outcome(Outcome),
    /// What the rules engine must do.
    Rules {
        /// It keeps every capability it started with (`--allcaps`, or the bypass variable).
        allcaps: bool,
        /// It must refuse the run: a `--capabilities` option is a usage error for it.
        rejected_flag: bool,
        /// What it should warn about (an add or drop variable it ignores), in the oracle's
        /// words.
        warnings: Vec<String>,
    },
}

/// A part of the seed's interface a tracer may not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interface {
    /// `--capabilities help` (`capabilities.help`).
    Help,
    /// `--capabilities bypass=1` (`capabilities.bypass_on`).
    BypassFlag,
    /// `--capabilities bypass=0` (`capabilities.bypass_off`).
    BypassOffFlag,
    /// `CAPABILITIES_BYPASS` (`environment.bypass`).
    BypassEnv,
    /// `--capabilities add=…` (`capabilities.add` or `add_each`).
    AddFlag,
    /// `--capabilities drop=…` (`capabilities.drop` or `drop_each`).
    DropFlag,
    /// `CAPABILITIES_ADD` (`environment.add`).
    AddEnv,
    /// `CAPABILITIES_DROP` (`environment.drop`).
    DropEnv,
    /// Passing an arbitrary `--capabilities` value (the usage scenarios).
    RawValue,
    /// Choosing events.
    Events,
    /// A rules engine next to the tracer (`[rules_engine]`).
    RulesEngine,
}

impl Interface {
    /// What the tracer lacks, naming the profile key that would provide it (for "not
    /// supported by this tracer (profile)" verdicts).
    pub fn describe(self) -> &'static str {
        match self {
            Interface::Help => "no capability listing (capabilities.help)",
            Interface::BypassFlag => "no bypass flag (capabilities.bypass_on)",
            Interface::BypassOffFlag => {
                "no way to turn bypass off on the command line (capabilities.bypass_off)"
            }
            Interface::BypassEnv => "no bypass variable (environment.bypass)",
            Interface::AddFlag => "no add flag (capabilities.add or add_each)",
            Interface::DropFlag => "no drop flag (capabilities.drop or drop_each)",
            Interface::AddEnv => "no add variable (environment.add)",
            Interface::DropEnv => "no drop variable (environment.drop)",
            Interface::RawValue => {
                "no way to pass an arbitrary capability option (capabilities.raw)"
            }
            Interface::Events => "no way to choose events (events.select or events.per_event)",
            Interface::RulesEngine => "no rules engine ([rules_engine])",
        }
    }
}

/// How the end of configuration is recognised (serializable form of the profile's `[ready]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// The rule.
    pub on: ReadyOn,
    /// The stream `pattern` is looked for in.
    pub stream: Stream,
    /// For [`ReadyOn::Pattern`]: the regex of the ready line.
    pub pattern: Option<String>,
    /// For [`ReadyOn::Delay`]: milliseconds after launch.
    pub delay_ms: u64,
}

/// Everything one run needs, decided before launch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The profile's name, for reports.
    pub tracer: String,
    /// The scenario with its templates filled.
    pub scenario: Scenario,
    /// The events the scenario's roles picked, and the capabilities filled into its
    /// templates.
    pub chosen: Chosen,
    /// The facts the tracer will see (this machine's, adjusted for the scenario).
    pub facts: EnvFacts,
    /// What the spec says the tracer (or rules engine) must do here.
    pub expectation: Expectation,
    /// The profile's `level` is `strict`: "MUST in strict" clauses count as MUST.
    pub strict: bool,
    /// Program (resolved) and arguments.
    pub command: Vec<String>,
    /// Variables set for the run: the profile's `env`, then the scenario's, spelled the
    /// tracer's way.
    pub env_set: Vec<(String, String)>,
    /// Variables removed from capring's environment: the seed's and the tracer's own
    /// capability variables that the scenario does not set, so none leaks in.
    pub env_remove: Vec<String>,
    /// Calls that fail with EPERM in the whole tree (the drop-failure scenarios).
    pub faults: Vec<FaultKind>,
    /// Capabilities removed from the bounding set before exec.
    pub bounding_drop: CapSet,
    /// perf_event_paranoid set for the run; `None` leaves it as it is.
    pub paranoid: Option<i32>,
    /// The workload, resolved, when the tracer is expected to run.
    pub workload: Option<Vec<String>>,
    /// The harness ends the run after this many event lines (the scenario's `lines`);
    /// `None` when the tracer ends by itself or is not expected to run.
    pub stop_after_events: Option<usize>,
    /// The profile's `stop.ends_by_itself`: the run ends when the program does.
    pub ends_by_itself: bool,
    /// The whole tree is killed after this: the readiness timeout plus 30 s for a run, 15 s
    /// for a command expected to stop at once.
    pub timeout: Duration,
    /// When configuration is over.
    pub ready: Ready,
    /// The stream the event lines come on.
    pub event_stream: Stream,
    /// The regex event lines match (`None`: every non-empty line).
    pub event_pattern: Option<String>,
    /// Capabilities the scenario adds (seed grammar, resolved: what is in force once the
    /// command line has shadowed the environment).
    pub added: CapSet,
    /// Capabilities the scenario drops (seed grammar, resolved), in force.
    pub dropped: CapSet,
    /// Capabilities `CAPABILITIES_ADD` named but the command line's add shadowed.
    pub shadowed_add: CapSet,
    /// Capabilities `CAPABILITIES_DROP` named but the command line's drop shadowed.
    pub shadowed_drop: CapSet,
    /// The profile's exit code for bad input.
    pub usage_code: i32,
    /// The profile's exit code for capability errors.
    pub capability_code: i32,
    /// How this tracer spells bypass (its flag and variable), for messages that name it.
    pub bypass_spellings: Vec<String>,
    /// The measured minimal sets the Required ring is judged against: what
    /// [`Options::measure`] found for the plan's facts and events (`capring check` looks in
    /// `snapshots/minimal-sets/`), [`Measurement::NotLooked`] without it.
    #[serde(default)]
    pub measured: Measurement,
}

/// Why a scenario has no plan here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlan {
    /// The scenario cannot mean anything for this tracer or machine (reason given).
    NotApplicable(String),
    /// The tracer's profile lacks interfaces the scenario needs (every one of them).
    Unsupported(Vec<Interface>),
    /// The profile names a program that cannot be found: bad input (exit 2).
    BadInput(String),
}

impl Plan {
    /// The launch description for the observer.
    pub fn launch_spec(&self, observe: bool) -> LaunchSpec {
        let (program, args) = self.command.split_first().expect("a plan has a program");
        let mut spec = LaunchSpec::new(program, args.iter().cloned());
        spec.env_set = self.env_set.clone();
        spec.env_remove = self.env_remove.clone();
        spec.faults = self.faults.clone();
        spec.bounding_drop = self.bounding_drop;
        spec.paranoid = self.paranoid;
        spec.timeout = self.timeout;
        spec.event_lines = EventLines {
            stream: self.event_stream,
            pattern: self
                .event_pattern
                .as_deref()
                .and_then(|p| regex::Regex::new(p).ok()),
        };
        // The harness ends the run itself (SIGTERM once enough event lines were read), never
        // the tracer: every event-line sample must see the tracer's threads alive.
        spec.stop_after_events = self.stop_after_events;
        spec.min_steady = MIN_STEADY;
        spec.sample_on_event = true;
        spec.sample_every = Some(Duration::from_millis(100));
        spec.observe = observe;
        spec.companion = self.workload.as_ref().and_then(|w| {
            let (p, a) = w.split_first()?;
            Some(Companion::new(p, a.to_vec()))
        });
        spec
    }

    /// The run is expected to drop into rings (not bypassed).
    pub fn dropping(&self) -> Option<&Rings> {
        match &self.expectation {
            Expectation::Outcome(Outcome::Runs {
                bypass: false,
                rings,
                ..
            }) => Some(rings),
            _ => None,
        }
    }
}

/// The shortest steady state a run gets before the harness stops it: three periodic
/// samples, so that a Requested ring kept while waiting is seen twice, 100 ms apart (see
/// `checks::view::PARKED_SPREAD_NS`), however fast the events come.
pub const MIN_STEADY: Duration = Duration::from_millis(250);

/// The facts the tracer will see under this scenario.
pub fn scenario_facts(base: &EnvFacts, bounding_drop: CapSet, paranoid: Option<i32>) -> EnvFacts {
    let mut f = base.clone();
    f.permitted = f.permitted.difference(bounding_drop);
    f.bounding = f.bounding.difference(bounding_drop);
    if paranoid.is_some() {
        f.perf_event_paranoid = paranoid;
    }
    f
}

/// Finds the measurement for a run with these facts and events (see [`Options::measure`]).
pub type Measure<'a> = &'a dyn Fn(&EnvFacts, &[String]) -> Measurement;

/// What [`plan`] is given besides the profile, the scenario and the machine's facts. Both
/// are settled while the plan is built, so that nothing changes a plan afterwards.
/// `Options::default()`: nothing looked up, the profile's timeout.
#[derive(Clone, Copy, Default)]
pub struct Options<'a> {
    /// Finds the measured minimal sets for the run's facts and events
    /// (`crate::measured::lookup` for `capring check`); `None` looks nothing up.
    pub measure: Option<Measure<'a>>,
    /// The longest the run may take, when that is shorter than the profile's timeout
    /// (`capring minimize --run-timeout`).
    pub max_timeout: Option<Duration>,
}

/// Resolves `scenario` for `profile` on a machine with `base` facts, its measurement and
/// timeout settled by `options`.
pub fn plan(
    profile: &Profile,
    scenario: &Scenario,
    base: &EnvFacts,
    options: Options<'_>,
) -> Result<Plan, NoPlan> {
    let selectable = profile.events.is_some();
    let chosen = scenario
        .choose(profile.catalog(), selectable, &profile.default_events())
        .map_err(NoPlan::NotApplicable)?;
    let mut s = fill(scenario, &chosen)?;
    for need in &profile.needs {
        if !s.needs.contains(need) {
            s.needs.push(*need);
        }
    }
    check_needs(&s, base)?;
    let bounding_drop = bounding_drop(&s, base)?;
    let facts = scenario_facts(base, bounding_drop, s.paranoid);
    let expectation = expectation(profile, &s, &chosen.events, &facts);
    let named =
        scenario.select.is_empty() && scenario.events.as_ref().is_some_and(|e| !e.is_empty());
    let (command, env_set, env_remove) = command(profile, &s, named, &chosen.events)?;
    let runs = matches!(expectation, Expectation::Outcome(Outcome::Runs { .. }))
        && s.target == Target::Tracer;
    let workload = if runs {
        workload(profile, &chosen.events)?
    } else {
        None
    };
    let (added, dropped, shadowed_add, shadowed_drop) = option_sets(&s, &facts);
    let ready = Ready {
        on: profile.ready.on,
        stream: profile.ready.stream,
        pattern: profile.ready.pattern.clone(),
        delay_ms: profile.ready.delay_ms,
    };
    let ends_by_itself = profile.stop.ends_by_itself;
    let measured = options
        .measure
        .map_or(Measurement::NotLooked, |m| m(&facts, &chosen.events));
    let timeout = timeout(profile, runs);
    Ok(Plan {
        tracer: profile.name.clone(),
        faults: s.faults(),
        paranoid: s.paranoid,
        stop_after_events: if ends_by_itself { None } else { s.lines },
        timeout: options.max_timeout.map_or(timeout, |t| timeout.min(t)),
        strict: profile.level == LevelChoice::Strict,
        event_stream: profile.output.events,
        event_pattern: profile.output.event_pattern.clone(),
        usage_code: profile.exit_codes.usage,
        bypass_spellings: bypass_spellings(profile),
        capability_code: profile.exit_codes.capability,
        scenario: s,
        chosen,
        facts,
        expectation,
        command,
        env_set,
        env_remove,
        bounding_drop,
        workload,
        ends_by_itself,
        ready,
        added,
        dropped,
        shadowed_add,
        shadowed_drop,
        measured,
    })
}

fn bypass_spellings(profile: &Profile) -> Vec<String> {
    let flag = profile.capabilities.bypass_on.iter().flatten().cloned();
    let var = profile.environment.bypass.iter().map(|b| b.name.clone());
    flag.chain(var).filter(|s| s.len() > 2).collect()
}

/// A run expected to configure gets the readiness timeout plus 30 s of events; one expected
/// to stop by itself at once (usage, capability errors, help) gets 15 s.
fn timeout(profile: &Profile, runs: bool) -> Duration {
    if runs {
        Duration::from_secs(profile.ready.timeout_s + 30)
    } else {
        Duration::from_secs(15)
    }
}

/// The scenario with `{required}`, `{requested}`, `{spare}` filled in its values.
fn fill(scenario: &Scenario, chosen: &Chosen) -> Result<Scenario, NoPlan> {
    let f = |v: &String| chosen.fill(v).map_err(NoPlan::NotApplicable);
    let mut s = scenario.clone();
    s.cli = s.cli.iter().map(f).collect::<Result<_, _>>()?;
    s.bounding_drop = s.bounding_drop.iter().map(f).collect::<Result<_, _>>()?;
    for v in s.env.values_mut() {
        *v = f(v)?;
    }
    s.events = Some(chosen.events.clone());
    Ok(s)
}

/// Conditions the machine must offer (tracefs is checked when the run starts: mounting it
/// is not pure).
fn check_needs(s: &Scenario, base: &EnvFacts) -> Result<(), NoPlan> {
    for need in &s.needs {
        match need {
            Need::Cgroup2 if base.cgroup2.is_none() => {
                return Err(NoPlan::NotApplicable("no cgroup v2 hierarchy".into()))
            }
            Need::Setpcap if !base.usable().contains(caps::Cap::SETPCAP) => {
                return Err(NoPlan::NotApplicable(
                    "cap_setpcap is not usable, so no bounding drop is attempted".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The scenario's bounding drops; one the kernel does not know cannot be imposed.
fn bounding_drop(s: &Scenario, base: &EnvFacts) -> Result<CapSet, NoPlan> {
    let mut set = CapSet::EMPTY;
    for name in &s.bounding_drop {
        let cap = caps::parse_name(name)
            .map_err(|e| NoPlan::NotApplicable(format!("bounding_drop: {e}")))?;
        if !base.kernel_has(cap) {
            return Err(NoPlan::NotApplicable(format!(
                "this kernel does not know {cap} (cap_last_cap is {}), so it cannot be removed from the bounding set",
                base.cap_last_cap
            )));
        }
        set.insert(cap);
    }
    Ok(set)
}

fn scenario_env(s: &Scenario) -> CapEnv {
    CapEnv::from_lookup(|k| s.env.get(k).cloned())
}

/// What the spec says should happen (the seed grammar of the scenario, not the tracer's).
pub fn expectation(
    profile: &Profile,
    s: &Scenario,
    events: &[String],
    facts: &EnvFacts,
) -> Expectation {
    let env = scenario_env(s);
    if s.target == Target::Rules {
        return rules_expectation(profile, s, &env);
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
    match oracle::evaluate(&opts, events, profile.catalog(), facts) {
        Err(e) => Expectation::Usage {
            message: e.to_string(),
        },
        Ok(Outcome::Runs {
            bypass: false,
            mut rings,
            warnings,
        }) if profile.ring_model == RingModel::TraceeHead => {
            // Tracee since v0.14: added capabilities live in the Base ring, which is
            // effective all the time; a Requested ring is Base plus its capability.
            rings.unprivileged = opts.add.intersection(facts.usable());
            Expectation::Outcome(Outcome::Runs {
                bypass: false,
                rings,
                warnings,
            })
        }
        Ok(outcome) => Expectation::Outcome(outcome),
    }
}

fn rules_expectation(profile: &Profile, s: &Scenario, env: &CapEnv) -> Expectation {
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
    match oracle::evaluate_rules(allcaps_flag, env) {
        Ok(o) => Expectation::Rules {
            allcaps: o.allcaps,
            rejected_flag: false,
            warnings: o.warnings,
        },
        Err(e) => Expectation::Usage {
            message: e.to_string(),
        },
    }
}

/// (added, dropped, shadowed add, shadowed drop) under the seed grammar; empty when the
/// values are not valid (usage scenarios).
fn option_sets(s: &Scenario, facts: &EnvFacts) -> (CapSet, CapSet, CapSet, CapSet) {
    let resolve = |cli: &[String], env: &CapEnv| -> Option<CapOptions> {
        options::parse_and_resolve(cli, env, facts.cap_last_cap, &facts.kernel_release).ok()
    };
    let Some(all) = resolve(&s.cli, &scenario_env(s)) else {
        return Default::default();
    };
    let env_only = resolve(&[], &scenario_env(s));
    let (env_add, env_drop) = env_only.map(|o| (o.add, o.drop)).unwrap_or_default();
    (
        all.add,
        all.drop,
        env_add.difference(all.add),
        env_drop.difference(all.drop),
    )
}

/// Translates one seed-grammar `--capabilities` value into this tracer's arguments.
pub fn translate(profile: &Profile, value: &str) -> Result<Vec<String>, Interface> {
    let c = &profile.capabilities;
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| c.names.spell(n))
            .collect()
    };
    let list = |tpl: &Option<Vec<String>>, each: &Option<Vec<String>>, l: &str, missing| {
        let names = names(l);
        if let Some(t) = tpl {
            let joined = names.join(&c.separator);
            return Ok(t.iter().map(|a| a.replace("{caps}", &joined)).collect());
        }
        let each = each.as_ref().ok_or(missing)?;
        Ok(names
            .iter()
            .flat_map(|n| each.iter().map(move |a| a.replace("{cap}", n)))
            .collect())
    };
    match value.split_once('=') {
        None if value == "help" => c.help.clone().ok_or(Interface::Help),
        Some(("bypass", v)) => match options::parse_bypass(v) {
            Some(true) => c.bypass_on.clone().ok_or(Interface::BypassFlag),
            Some(false) => c.bypass_off.clone().ok_or(Interface::BypassOffFlag),
            None => raw(profile, value),
        },
        Some(("add", l)) => list(&c.add, &c.add_each, l, Interface::AddFlag),
        Some(("drop", l)) => list(&c.drop, &c.drop_each, l, Interface::DropFlag),
        _ => raw(profile, value),
    }
}

fn raw(profile: &Profile, value: &str) -> Result<Vec<String>, Interface> {
    let t = profile
        .capabilities
        .raw
        .as_ref()
        .ok_or(Interface::RawValue)?;
    Ok(t.iter().map(|a| a.replace("{value}", value)).collect())
}

/// A seed `CAPABILITIES_*` variable as this tracer names it, with its value spelled for it.
fn translate_env(profile: &Profile, key: &str, value: &str) -> Result<(String, String), Interface> {
    let e = &profile.environment;
    let c = &profile.capabilities;
    match key {
        options::ENV_BYPASS => {
            let b = e.bypass.as_ref().ok_or(Interface::BypassEnv)?;
            let v = match options::parse_bypass(value) {
                Some(true) => b.on.clone(),
                Some(false) => b.off.clone(),
                None => value.to_string(),
            };
            Ok((b.name.clone(), v))
        }
        options::ENV_ADD | options::ENV_DROP => {
            let (name, missing) = if key == options::ENV_ADD {
                (&e.add, Interface::AddEnv)
            } else {
                (&e.drop, Interface::DropEnv)
            };
            let list: Vec<String> = value
                .split(',')
                .filter(|n| !n.trim().is_empty())
                .map(|n| c.names.spell(n.trim()))
                .collect();
            Ok((name.clone().ok_or(missing)?, list.join(&c.separator)))
        }
        other => Ok((other.to_string(), value.to_string())),
    }
}

/// The arguments that select `events`. `named`: the scenario names its events itself (not
/// by role), so a tracer that cannot choose cannot run it.
fn event_args(profile: &Profile, named: bool, events: &[String]) -> Result<Vec<String>, Interface> {
    let Some(spec) = &profile.events else {
        return if named {
            Err(Interface::Events)
        } else {
            Ok(Vec::new())
        };
    };
    if events.is_empty() {
        return Ok(Vec::new());
    }
    if !spec.select.is_empty() {
        let list = events.join(&spec.separator);
        return Ok(spec
            .select
            .iter()
            .map(|a| a.replace("{list}", &list))
            .collect());
    }
    let mut args = Vec::new();
    for e in events {
        args.extend(
            spec.per_event
                .get(e)
                .ok_or(Interface::Events)?
                .iter()
                .cloned(),
        );
    }
    Ok(args)
}

type Command = (Vec<String>, Vec<(String, String)>, Vec<String>);

/// The environment changes of a run; every variable the profile cannot name goes to
/// `missing`.
fn environment(
    profile: &Profile,
    s: &Scenario,
    missing: &mut Vec<Interface>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env_set: Vec<(String, String)> = profile
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in &s.env {
        // The rules engine reads the seed's variables (Tracee's container entrypoint sets
        // them for both binaries); the tracer's own names apply to the tracer only.
        match s.target {
            Target::Tracer => match translate_env(profile, k, v) {
                Ok(pair) => env_set.push(pair),
                Err(i) => missing.push(i),
            },
            Target::Rules => env_set.push((k.clone(), v.clone())),
        }
    }
    // Neither the seed's variables nor the tracer's own may leak in from capring's
    // environment: only what the scenario sets.
    let e = &profile.environment;
    let mut env_remove: Vec<String> = [options::ENV_BYPASS, options::ENV_ADD, options::ENV_DROP]
        .into_iter()
        .map(str::to_string)
        .chain(e.bypass.as_ref().map(|b| b.name.clone()))
        .chain(e.add.clone())
        .chain(e.drop.clone())
        .filter(|k| !env_set.iter().any(|(n, _)| n == k))
        .collect();
    env_remove.sort();
    env_remove.dedup();
    (env_set, env_remove)
}

/// The program, its arguments and its environment changes. Every interface the scenario
/// needs and the profile lacks is collected, so that each clause about one of them is
/// reported as not supported.
fn command(
    profile: &Profile,
    s: &Scenario,
    named: bool,
    events: &[String],
) -> Result<Command, NoPlan> {
    let mut missing = Vec::new();
    let (env_set, env_remove) = environment(profile, s, &mut missing);
    let mut args = Vec::new();
    let binary = match s.target {
        Target::Tracer => {
            args.extend(profile.args.iter().cloned());
            match event_args(profile, named, events) {
                Ok(a) => args.extend(a),
                Err(i) => missing.push(i),
            }
            for v in &s.cli {
                match translate(profile, v) {
                    Ok(a) => args.extend(a),
                    Err(i) => missing.push(i),
                }
            }
            Some(&profile.binary)
        }
        Target::Rules => match rules_command(profile, s) {
            Ok((b, a)) => {
                args = a;
                Some(b)
            }
            Err(i) => {
                missing.push(i);
                None
            }
        },
    };
    if !missing.is_empty() {
        missing.sort_by_key(|i| *i as u8);
        missing.dedup();
        return Err(NoPlan::Unsupported(missing));
    }
    let binary = binary.expect("present when nothing is missing");
    let program = profile
        .resolve_program(binary)
        .map_err(|e| NoPlan::BadInput(format!("tracer binary: {e}")))?;
    let mut command = vec![program.display().to_string()];
    command.extend(args);
    Ok((command, env_set, env_remove))
}

fn rules_command<'a>(
    profile: &'a Profile,
    s: &Scenario,
) -> Result<(&'a String, Vec<String>), Interface> {
    let rules = profile
        .rules_engine
        .as_ref()
        .ok_or(Interface::RulesEngine)?;
    let mut args = s.rules_args.clone();
    let input = std::env::var_os("CAPRING_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile.fixtures_dir())
        .join("scenarios/rules-input.jsonl");
    args.push("--input".into());
    args.push(input.display().to_string());
    let flag = rules
        .capabilities_flag
        .clone()
        .or_else(|| {
            profile
                .capabilities
                .raw
                .as_ref()
                .and_then(|r| r.first().cloned())
        })
        .unwrap_or_else(|| "--capabilities".into());
    for v in &s.cli {
        args.push(flag.clone());
        args.push(v.clone());
    }
    Ok((&rules.binary, args))
}

/// The workload for the chosen events, resolved.
fn workload(profile: &Profile, events: &[String]) -> Result<Option<Vec<String>>, NoPlan> {
    let Some(w) = &profile.workload else {
        return Ok(None);
    };
    let command = events
        .iter()
        .find_map(|e| w.per_event.get(e))
        .unwrap_or(&w.command);
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| NoPlan::BadInput("empty workload command".into()))?;
    let program = profile
        .resolve_program(prog)
        .map_err(|e| NoPlan::BadInput(format!("workload: {e}")))?;
    let mut out = vec![program.display().to_string()];
    out.extend(args.iter().cloned());
    Ok(Some(out))
}

impl Scenario {
    /// The faults the scenario injects.
    pub fn faults(&self) -> Vec<FaultKind> {
        let mut f = Vec::new();
        if self.faults.capset_eperm {
            f.push(FaultKind::CapsetEperm);
        }
        if self.faults.capbset_drop_eperm {
            f.push(FaultKind::CapbsetDropEperm);
        }
        f
    }
}

#[cfg(test)]
mod tests;
