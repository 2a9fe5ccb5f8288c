//! The scenario catalog (`fixtures/scenarios/scenarios.toml`): runs under imposed
//! conditions, each judged by the clauses it lists.
//!
//! Why roles: a scenario is about a *kind* of event (one with a per-event Requested need, one
//! attached through perf, one needing cgroup v2), not about the reference's event names. It
//! lists roles in `select`, and [`Scenario::choose`] picks matching events from the tracer's
//! own catalog; the capabilities it adds or drops are written as templates (`{required}`,
//! `{requested}`, `{spare}`) filled from what the chosen events declare. Where a catalog has
//! no such event, the scenario is not applicable and says exactly which role is missing.

use std::collections::BTreeMap;
use std::path::Path;

use capring_spec::caps::Cap;
use capring_spec::catalog::{Catalog, Event, When};
use serde::{Deserialize, Serialize};

pub(crate) const BUILTIN: &str = include_str!("../../fixtures/scenarios/scenarios.toml");

/// Which program a scenario runs (`target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The tracer, with the profile's `args` and the scenario's options.
    #[default]
    Tracer,
    /// The profile's rules engine (`[rules_engine]`), with the scenario's `rules_args`.
    Rules,
}

/// The calls a scenario makes fail with EPERM in every process of the tree (`faults`): how
/// the drop-failure clauses get a drop to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFaults {
    /// Every `capset(2)` fails.
    #[serde(default)]
    pub capset_eperm: bool,
    /// Every `prctl(PR_CAPBSET_DROP)` fails.
    #[serde(default)]
    pub capbset_drop_eperm: bool,
}

/// A kind of event a scenario needs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Any event.
    Any,
    /// One that loads eBPF programs.
    Ebpf,
    /// One with a Requested need that recurs while events flow.
    RequestedPerEvent,
    /// One with a Requested need met once at start-up.
    RequestedStartup,
    /// One with a Required capability of its own (beyond the eBPF base).
    ExtraRequired,
    /// One attached through perf_event_open (subject to perf_event_paranoid).
    Perf,
    /// One that needs a cgroup v2 hierarchy.
    Cgroup2,
}

impl Role {
    /// Whether `event` of `catalog` is of this kind.
    pub fn matches(self, catalog: &Catalog, event: &Event) -> bool {
        let attach = catalog.attach_type(event);
        let requested = |w: When| event.requested.iter().any(|r| r.when == w);
        match self {
            Role::Any => true,
            Role::Ebpf => attach.ebpf,
            Role::RequestedPerEvent => requested(When::PerEvent),
            Role::RequestedStartup => requested(When::Startup),
            Role::ExtraRequired => !event.required.is_empty(),
            Role::Perf => attach.uses_perf,
            Role::Cgroup2 => attach.needs_cgroup2,
        }
    }

    /// The kind of event, after "no" or "an": `event with a per-event Requested need`.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Any => "event",
            Role::Ebpf => "event that loads eBPF programs",
            Role::RequestedPerEvent => "event with a per-event Requested need",
            Role::RequestedStartup => "event with a start-up Requested need",
            Role::ExtraRequired => "event with a Required capability of its own",
            Role::Perf => "event attached through perf_event_open",
            Role::Cgroup2 => "event that needs cgroup v2",
        }
    }
}

/// Capabilities no event needs, offered in this order for `{spare}` / `{spare2}`.
const SPARE: [Cap; 4] = [Cap::KILL, Cap::LEASE, Cap::WAKE_ALARM, Cap::AUDIT_READ];

/// The events a scenario runs with, and the capabilities its templates stand for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    /// The names of the events the run selects, from the tracer's catalog.
    pub events: Vec<String>,
    /// `{required}`: the first Required capability the chosen events declare.
    pub required: Option<Cap>,
    /// `{requested}`: the first Requested capability the chosen events declare.
    pub requested: Option<Cap>,
    /// `{spare}`, `{spare2}`: capabilities no chosen event needs.
    pub spare: [Cap; 2],
}

impl Chosen {
    /// Fills `{required}`, `{requested}`, `{spare}`, `{spare2}` in `text`; `Err` names a
    /// placeholder the chosen events cannot fill.
    pub fn fill(&self, text: &str) -> Result<String, String> {
        let mut out = text.replace("{spare2}", &self.spare[1].name());
        out = out.replace("{spare}", &self.spare[0].name());
        for (key, cap) in [
            ("{required}", self.required),
            ("{requested}", self.requested),
        ] {
            if out.contains(key) {
                let cap =
                    cap.ok_or_else(|| format!("no chosen event declares a {key} capability"))?;
                out = out.replace(key, &cap.name());
            }
        }
        Ok(out)
    }
}

/// A condition of the machine without which a scenario cannot run (`needs`): missing, the
/// scenario is not applicable, never a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Need {
    /// A mounted tracefs; the run mounts it when it can (checked at run time, since mounting
    /// is not pure).
    Tracefs,
    /// A cgroup v2 hierarchy.
    Cgroup2,
    /// A usable cap_setpcap, so that the tracer can attempt a bounding-set drop.
    Setpcap,
}

/// One run of the catalog (`[[scenario]]`): the conditions imposed on it and the clauses
/// that judge it. The keys are described at the top of `fixtures/scenarios/scenarios.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique in its catalog: what `--scenario` globs match and `runs/<name>.json` is named
    /// after.
    pub name: String,
    /// One line for listings and reports.
    pub description: String,
    /// Which program runs.
    #[serde(default)]
    pub target: Target,
    /// Events by role, picked from the tracer's catalog (see [`Role`]).
    #[serde(default)]
    pub select: Vec<Role>,
    /// Events by name (for the usage scenarios and custom catalogs); absent (and no
    /// `select`) = the profile's defaults; empty = none at all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `--capabilities` values in the seed grammar (`help`, `bypass=1`, `add={required}`),
    /// templates included; the profile spells them for the tracer.
    #[serde(default)]
    pub cli: Vec<String>,
    /// `CAPABILITIES_*` variables under the seed's names (templates included); the profile
    /// maps the names for the tracer.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Calls made to fail.
    #[serde(default)]
    pub faults: ScenarioFaults,
    /// Capability names (or templates) removed from the bounding set before exec.
    #[serde(default)]
    pub bounding_drop: Vec<String>,
    /// perf_event_paranoid during the run (restored after).
    #[serde(default)]
    pub paranoid: Option<i32>,
    /// The harness stops the tracer once it wrote this many event lines; `None`: the run
    /// ends by itself or at the timeout.
    #[serde(default)]
    pub lines: Option<usize>,
    /// Conditions the machine must offer.
    #[serde(default)]
    pub needs: Vec<Need>,
    /// Arguments for the rules engine (`target = "rules"`), such as its allcaps flag.
    #[serde(default)]
    pub rules_args: Vec<String>,
    /// The ids of the clauses judged on this run (each one known to SPEC.md).
    pub clauses: Vec<String>,
}

impl Scenario {
    /// Picks the events this scenario runs with from `catalog`. `selectable` says whether the
    /// tracer can choose its events; if not, it always runs `defaults` and every role must be
    /// met among them. `Err` says which role no event fills.
    pub fn choose(
        &self,
        catalog: &Catalog,
        selectable: bool,
        defaults: &[String],
    ) -> Result<Chosen, String> {
        let events: Vec<String> = if let Some(named) = &self.events {
            named.clone()
        } else if self.select.is_empty() || !selectable {
            defaults.to_vec()
        } else {
            let mut picked: Vec<String> = Vec::new();
            for role in &self.select {
                let found = catalog
                    .events
                    .iter()
                    .find(|e| role.matches(catalog, e) && !picked.contains(&e.name));
                match found {
                    Some(e) => picked.push(e.name.clone()),
                    None => return Err(format!("the tracer's catalog has no {}", role.describe())),
                }
            }
            picked
        };
        let known: Vec<&Event> = events.iter().filter_map(|e| catalog.event(e)).collect();
        if !selectable && self.events.is_none() {
            if let Some(role) = self
                .select
                .iter()
                .find(|r| !known.iter().any(|e| r.matches(catalog, e)))
            {
                return Err(format!(
                    "the tracer cannot select events, and none of its events is an {}",
                    role.describe()
                ));
            }
        }
        let required = known
            .iter()
            .flat_map(|e| &e.required)
            .map(|n| n.capability)
            .next();
        let requested = known
            .iter()
            .flat_map(|e| &e.requested)
            .map(|n| n.capability)
            .next();
        let needed: Vec<Cap> = known
            .iter()
            .flat_map(|e| {
                e.required
                    .iter()
                    .map(|n| n.capability)
                    .chain(e.requested.iter().map(|n| n.capability))
            })
            .collect();
        let mut spare = SPARE.iter().copied().filter(|c| !needed.contains(c));
        let spare = [
            spare.next().unwrap_or(SPARE[0]),
            spare.next().unwrap_or(SPARE[1]),
        ];
        Ok(Chosen {
            events,
            required,
            requested,
            spare,
        })
    }

    /// Whether the scenario must run with no other scenario next to it (`capring check
    /// --jobs`): `perf_event_paranoid` is one value for the whole machine, and a drop-failure
    /// run judges the kernel's whole BPF program list before and after.
    pub fn runs_alone(&self) -> bool {
        self.paranoid.is_some() || self.faults.capset_eperm || self.faults.capbset_drop_eperm
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScenarioError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scenario: Vec<Scenario>,
}

/// A scenario catalog's TOML `text` (read from `path`, for messages), with unique names,
/// known clauses and valid bounding-drop names.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let shown = path.display().to_string();
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        ScenarioError::Parse {
            path: shown.clone(),
            message: format!("line {line}: {}", e.message().replace('\n', " ")),
        }
    })?;
    let clauses = capring_spec::clauses::all();
    let mut seen = std::collections::BTreeSet::new();
    for s in &file.scenario {
        if !seen.insert(s.name.clone()) {
            return Err(ScenarioError::Parse {
                path: shown.clone(),
                message: format!("scenario '{}' is defined twice", s.name),
            });
        }
        for c in &s.clauses {
            if !clauses.iter().any(|k| &k.id == c) {
                return Err(ScenarioError::Parse {
                    path: shown.clone(),
                    message: format!("scenario '{}' names unknown clause '{c}'", s.name),
                });
            }
        }
        for cap in s.bounding_drop.iter().filter(|c| !c.starts_with('{')) {
            capring_spec::caps::parse_name(cap).map_err(|e| ScenarioError::Parse {
                path: shown.clone(),
                message: format!("scenario '{}': bounding_drop: {e}", s.name),
            })?;
        }
    }
    Ok(file.scenario)
}

/// The built-in catalog.
pub fn builtin() -> Vec<Scenario> {
    parse(BUILTIN, Path::new("fixtures/scenarios/scenarios.toml")).expect("checked by a unit test")
}

/// Glob match with `*` and `?` (for `--scenario`, `--only`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses() {
        let s = builtin();
        assert!(s.len() >= 25);
    }

    /// Every MUST clause of SPEC.md is covered by at least one scenario.
    #[test]
    fn every_must_clause_has_a_scenario() {
        let scenarios = builtin();
        let uncovered: Vec<String> = capring_spec::clauses::all()
            .into_iter()
            .filter(|c| c.level == capring_spec::clauses::Level::Must)
            .filter(|c| !scenarios.iter().any(|s| s.clauses.contains(&c.id)))
            .map(|c| c.id)
            .collect();
        assert!(
            uncovered.is_empty(),
            "MUST clauses without a scenario: {uncovered:?}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("usage-*", "usage-bad-bypass"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("r?les-*", "rules-default"));
        assert!(!glob_match("usage-*", "rules-default"));
    }

    fn catalog() -> Catalog {
        Catalog::builtin()
    }

    fn scenario(select: &[Role]) -> Scenario {
        let mut s = builtin()
            .into_iter()
            .find(|s| s.name == "steady-state")
            .unwrap();
        s.select = select.to_vec();
        s
    }

    #[test]
    fn roles_pick_events_from_the_catalog() {
        let c = catalog();
        let defaults = vec!["execve".to_string()];
        let chosen = scenario(&[Role::RequestedPerEvent])
            .choose(&c, true, &defaults)
            .unwrap();
        assert_eq!(chosen.events, vec!["sched_process_exec"]);
        assert_eq!(chosen.requested, Some(Cap::SYS_PTRACE));
        assert_eq!(
            chosen.fill("drop={requested}").unwrap(),
            "drop=cap_sys_ptrace"
        );
        let chosen = scenario(&[Role::ExtraRequired])
            .choose(&c, true, &defaults)
            .unwrap();
        assert_eq!(chosen.events, vec!["net_packet"]);
        assert_eq!(
            chosen.fill("drop={required}").unwrap(),
            "drop=cap_net_admin"
        );
        assert_eq!(
            chosen.fill("add={spare},{spare2}").unwrap(),
            "add=cap_kill,cap_lease"
        );
        // Two roles never pick the same event.
        let two = scenario(&[Role::Perf, Role::Any])
            .choose(&c, true, &defaults)
            .unwrap();
        assert_eq!(two.events, vec!["sched_process_exec", "execve"]);
        // No role: the profile's defaults.
        assert_eq!(
            scenario(&[]).choose(&c, true, &defaults).unwrap().events,
            defaults
        );
    }

    #[test]
    fn a_missing_role_says_which() {
        let only_execve = Catalog::parse(
            "[attach.raw_tracepoint]\ndescription='d'\nuses_perf=false\nneeds_cgroup2=false\n[[event]]\nname='execve'\nattach='raw_tracepoint'\n",
        )
        .unwrap();
        let err = scenario(&[Role::RequestedPerEvent])
            .choose(&only_execve, true, &[])
            .unwrap_err();
        assert!(err.contains("per-event Requested"), "{err}");
        let chosen = scenario(&[Role::Any])
            .choose(&only_execve, true, &[])
            .unwrap();
        assert!(chosen.fill("drop={required}").is_err());
        // A tracer that cannot select events runs its defaults; the role must be among them.
        let all: Vec<String> = catalog().names().iter().map(|s| s.to_string()).collect();
        let c = scenario(&[Role::Cgroup2])
            .choose(&catalog(), false, &all)
            .unwrap();
        assert_eq!(c.events, all);
        let err = scenario(&[Role::Cgroup2])
            .choose(&catalog(), false, &["execve".to_string()])
            .unwrap_err();
        assert!(err.contains("cannot select"), "{err}");
    }

    #[test]
    fn unknown_clause_is_refused() {
        let err = parse(
            "[[scenario]]\nname='a'\ndescription='d'\nclauses=['nope']\n",
            Path::new("s.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
