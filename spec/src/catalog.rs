//! The event catalog: which capabilities each event needs, in which ring, and why.
//!
//! The reference tracer's catalog is `fixtures/spec/events.toml` (built in). A tracer profile
//! may carry its own catalog in the same shape, so the oracle can judge tracers whose events
//! are not ours.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::caps::Cap;

/// The built-in catalog text (the reference tracer's events).
pub const BUILTIN: &str = include_str!("../../fixtures/spec/events.toml");

/// How events of one kind reach the kernel (`[attach.NAME]`), and what that costs in
/// capabilities and environment. Events share attach types, so a kernel rule (perf
/// restriction, cgroup v2) is written once per mechanism, not once per event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachType {
    /// The mechanism, for people (the kernel interface it uses and why the flags below hold).
    pub description: String,
    /// Attached through perf_event_open: subject to `perf_event_paranoid`.
    pub uses_perf: bool,
    /// Needs a cgroup v2 hierarchy to attach to.
    pub needs_cgroup2: bool,
    /// Loads eBPF programs, so the eBPF base (cap_bpf + cap_perfmon, or cap_sys_admin) and
    /// the memlock need apply. False for events a tracer gets without eBPF (a raw socket, a
    /// packet capture): their needs are only the event's own.
    #[serde(default = "yes")]
    pub ebpf: bool,
    /// Loads a tracing program type (kprobe, tracepoint, raw tracepoint, perf event, …),
    /// which the kernel allows only with cap_perfmon (or cap_sys_admin) besides cap_bpf.
    /// False for the others: measured, a cgroup_skb program loads and attaches with cap_bpf
    /// and cap_net_admin alone (`snapshots/minimal-sets/`).
    #[serde(default = "yes")]
    pub perfmon: bool,
}

fn yes() -> bool {
    true
}

/// A configuration-time need (Required ring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredNeed {
    /// The capability the kernel checks while the event is configured.
    pub capability: Cap,
    /// The kernel check that asks for it, in one sentence: the oracle copies it into
    /// [`crate::oracle::Need::reason`], so a verdict can say why the capability is there.
    pub reason: String,
    /// Capabilities the kernel accepts instead (cap_net_admin for BPF network programs:
    /// cap_sys_admin too, on kernels with BPF tokens). When the ring already holds one for
    /// another reason, this need adds nothing.
    #[serde(default)]
    pub alternatives: Vec<Cap>,
    /// The kernel feature the alternatives depend on (none: every kernel).
    #[serde(default)]
    pub alternatives_need: Option<KernelFeature>,
}

/// A probed kernel property a catalog rule can depend on (see `facts::EnvFacts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFeature {
    /// BPF tokens (6.9+): BPF network checks accept cap_sys_admin for cap_net_admin.
    BpfToken,
}

impl KernelFeature {
    /// Whether the kernel described by `facts` has it (unknown counts as no).
    pub fn present(self, facts: &crate::facts::EnvFacts) -> bool {
        match self {
            KernelFeature::BpfToken => facts.bpf_token == Some(true),
        }
    }
}

impl RequiredNeed {
    /// The alternatives that hold on the kernel described by `facts`.
    pub fn alternatives_on(&self, facts: &crate::facts::EnvFacts) -> Vec<Cap> {
        match self.alternatives_need {
            Some(f) if !f.present(facts) => Vec::new(),
            _ => self.alternatives.clone(),
        }
    }
}

/// When a Requested operation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum When {
    /// Once, at start-up, after configuration.
    Startup,
    /// Again and again while events flow.
    PerEvent,
}

/// A single-operation need (Requested ring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedNeed {
    /// The one capability raised around the operation (a Requested ring is a singleton).
    pub capability: Cap,
    /// Short kebab-case id of the operation (`hash-exe`, `read-kallsyms`). The tracer's
    /// skip warning names it, and a tracer profile's `[requested.OP]` pattern is keyed on
    /// it, so it is stable like a clause id.
    pub operation: String,
    /// Once at start-up or again for every event.
    pub when: When,
    /// The kernel check that asks for the capability, in one sentence.
    pub reason: String,
}

/// One event a tracer can be asked for (`[[event]]`): how it attaches and the capabilities
/// it needs beyond the eBPF base, which the oracle computes from the attach type and facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The name the tracer's `--events` option takes (`sched_process_exec`); unique in the
    /// catalog.
    pub name: String,
    /// Key of its [`AttachType`] in [`Catalog::attach`] ([`Catalog::parse`] checks it
    /// exists).
    pub attach: String,
    /// What the event reports, for people; may be empty.
    #[serde(default)]
    pub description: String,
    /// Needs while configuring (Required ring), on top of the eBPF base.
    #[serde(default)]
    pub required: Vec<RequiredNeed>,
    /// Single operations that raise one capability each (Requested ring).
    #[serde(default)]
    pub requested: Vec<RequestedNeed>,
}

/// A whole event catalog: the TOML of `fixtures/spec/events.toml` or of a tracer profile,
/// checked by [`Catalog::parse`] (unique event names, known attach types, no unknown keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Attach types by name (`raw_tracepoint`, `tracepoint`, `cgroup_skb`).
    pub attach: BTreeMap<String, AttachType>,
    /// Events in file order (`[[event]]` tables); the order is kept in listings.
    #[serde(rename = "event")]
    pub events: Vec<Event>,
}

/// Why a catalog text was refused. Every message starts with `event catalog:`.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Not valid TOML, a missing or unknown key, or a value of the wrong type (an unknown
    /// capability name included); the TOML error gives line and column.
    #[error("event catalog: {0}")]
    Toml(#[from] toml::de::Error),
    /// An event names an attach type the catalog does not define.
    #[error("event catalog: event '{event}' uses attach type '{attach}', which [attach.*] does not define")]
    UnknownAttach {
        /// The event's name.
        event: String,
        /// The attach type it asked for.
        attach: String,
    },
    /// Two events share this name.
    #[error("event catalog: event '{0}' is defined twice")]
    Duplicate(String),
}

impl Catalog {
    /// Parses and checks a catalog text (see [`CatalogError`] for what is refused).
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text)?;
        let mut seen = std::collections::BTreeSet::new();
        for e in &catalog.events {
            if !seen.insert(e.name.as_str()) {
                return Err(CatalogError::Duplicate(e.name.clone()));
            }
            if !catalog.attach.contains_key(&e.attach) {
                return Err(CatalogError::UnknownAttach {
                    event: e.name.clone(),
                    attach: e.attach.clone(),
                });
            }
        }
        Ok(catalog)
    }

    /// The reference tracer's catalog.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN).expect("the built-in catalog is checked by a unit test")
    }

    /// The event called `name` (exact, case-sensitive), if the catalog has it.
    pub fn event(&self, name: &str) -> Option<&Event> {
        self.events.iter().find(|e| e.name == name)
    }

    /// The attach type of an event of this catalog. Panics for an event from another
    /// catalog whose attach type this one lacks ([`Catalog::parse`] guarantees its own).
    pub fn attach_type(&self, event: &Event) -> &AttachType {
        &self.attach[&event.attach]
    }

    /// Every event name, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.name.as_str()).collect()
    }

    /// The closest event name, for "did you mean" messages.
    pub fn suggest(&self, given: &str) -> Option<String> {
        self.events
            .iter()
            .map(|e| (strsim::levenshtein(&e.name, given), &e.name))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, n)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_needs_differ() {
        let c = Catalog::builtin();
        assert!(c.events.len() >= 5);
        let net = c.event("net_packet").unwrap();
        assert_eq!(net.required[0].capability, Cap::NET_ADMIN);
        let exec = c.event("sched_process_exec").unwrap();
        assert_eq!(exec.requested[0].when, When::PerEvent);
        assert_eq!(exec.requested[0].capability, Cap::SYS_PTRACE);
        let module = c.event("module_load").unwrap();
        assert_eq!(module.requested[0].when, When::Startup);
        assert!(c.event("execve").unwrap().required.is_empty());
        assert!(c.attach_type(exec).uses_perf);
    }

    #[test]
    fn bad_catalogs_are_refused() {
        let err = Catalog::parse("[attach]\n[[event]]\nname='x'\nattach='kprobe'\n").unwrap_err();
        assert!(err.to_string().contains("kprobe"), "{err}");
        let err =
            Catalog::parse("[attach]\n[[event]]\nname='x'\nattach='a'\nextra=1\n").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn suggestions() {
        let c = Catalog::builtin();
        assert_eq!(c.suggest("execv").as_deref(), Some("execve"));
        assert_eq!(c.suggest("zzzzzzzzzzzz"), None);
    }
}
