//! The measured tables, read: what `capring minimize` found for one tracer on one kernel and
//! environment (`snapshots/minimal-sets/`), and how a plan finds the measurement that
//! applies to its run.
//!
//! Why a module of its own, below [`crate::plan`] and [`crate::minimize`]: a plan carries
//! its measurement and the ring checks judge by it, while `capring minimize` writes the
//! tables. Reading them must not pull in the measuring (trials, search, the runner), so
//! the data and the lookup live here, and `minimize` builds on them, not the other way
//! round.
//!
//! Why tables are committed: measuring costs a few runs per event (minutes under
//! emulation); `capring check` judges the Required ring against the kernel's measured truth
//! without paying that on every run. A table holds for one kernel release and one
//! environment feature key; when none holds for a run, the verdict says so and the oracle's
//! prediction judges instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use capring_spec::caps::{Cap, CapSet};
use capring_spec::facts::EnvFacts;
use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// The `*.json` files of `dir`, in file-name order: how snapshot summaries and measured
/// tables are read back (file-name order keeps reports and comparisons stable).
pub fn json_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// How a trial keeps the tracer from managing its capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The profile's `capabilities.bypass_on` arguments.
    BypassFlag,
    /// The profile's `environment.bypass` variable.
    BypassEnv,
    /// Neither exists: the tracer runs as it is.
    Plain,
}

impl Mode {
    /// The mode a profile allows: its bypass flag, else its bypass variable, else plain.
    pub fn of(profile: &Profile) -> Mode {
        if profile.capabilities.bypass_on.is_some() {
            Mode::BypassFlag
        } else if profile.environment.bypass.is_some() {
            Mode::BypassEnv
        } else {
            Mode::Plain
        }
    }

    /// The mode in words, for the human table.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::BypassFlag => "bypass flag",
            Mode::BypassEnv => "bypass variable",
            Mode::Plain => "plain (no bypass interface)",
        }
    }
}

/// The sets of `sets` that contain no other (duplicates removed).
pub fn keep_minimal(mut sets: Vec<CapSet>) -> Vec<CapSet> {
    sets.sort_by_key(|s| (s.len(), s.bits()));
    sets.dedup();
    let mut out: Vec<CapSet> = Vec::new();
    for s in sets {
        if !out.iter().any(|o| o.is_subset(s)) {
            out.push(s);
        }
    }
    out
}

/// What the oracle predicts for an event set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    /// The Required ring, when the oracle says the tracer runs.
    pub required: Option<CapSet>,
    /// Why not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How one Requested need measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestedVerdict {
    /// Works with the capability added to the preferred set, not without it.
    Needed,
    /// Works without it too.
    NotNeeded,
    /// Does not work even with it.
    FailsEvenWithIt,
    /// Could not be measured (the detail says why).
    NotMeasured,
}

/// One Requested need of the catalog, measured: does the operation need its capability?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedResult {
    /// The event that declares the need.
    pub event: String,
    /// The operation's name in the catalog (`hash-exe`), also the profile's
    /// `[requested.OP]` key.
    pub operation: String,
    /// The capability the catalog says the operation needs.
    pub capability: Cap,
    /// What the runs with and without it showed.
    pub verdict: RequestedVerdict,
    /// One line: the sets tried and what each run showed, or why it was not measured.
    pub detail: String,
}

/// What the measurement cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Runs of the tracer, every purpose included.
    pub runs: usize,
    /// Search answers that followed from earlier ones (not run).
    pub inferred: usize,
    /// The search's budget (`--max-runs`).
    pub max_runs: usize,
    /// Wall time (left out of the committed tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
}

/// The measurement of one event set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSetResult {
    /// The events run together (one, or a set written `a+b` on the command line).
    pub events: Vec<String>,
    /// When the tracer could not be measured at all (it does not work even with every
    /// capability, or the harness could not run it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The capabilities the search chose from.
    pub universe: CapSet,
    /// Set when the search had to widen the universe to every usable capability, saying
    /// which candidates were not enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub universe_note: Option<String>,
    /// Every minimal sufficient set found, the preferred one first (SPEC.md
    /// `ring.required.preferred`).
    pub minimal_sets: Vec<CapSet>,
    /// No other minimal set exists within the universe.
    pub exhaustive: bool,
    /// Why the search stopped early (the run budget spent, an interrupt, a harness error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// In every minimal set found.
    pub needed_by_all: CapSet,
    /// The Required ring the tracer used when run normally with every capability.
    pub observed: Option<CapSet>,
    /// Why there is no observed ring (no privileged call before readiness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_note: Option<String>,
    /// The oracle's prediction for these events on the measured facts.
    pub oracle: Prediction,
    /// The oracle with cap_bpf unusable (its cap_sys_admin fallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_without_cap_bpf: Option<Prediction>,
    /// Needed by every minimal set, absent from the observed ring.
    pub missing: CapSet,
    /// In the observed ring, in no minimal set.
    pub too_permissive: CapSet,
    /// The observed ring holds a minimal set.
    pub observed_sufficient: Option<bool>,
    /// Each Requested need the events declare, measured on the preferred set.
    pub requested: Vec<RequestedResult>,
    /// Permission failures the tracer carried on after with the preferred set, which the run
    /// with every capability did not have (features it probed and went without).
    pub went_without: BTreeSet<String>,
    /// How many runs it took.
    pub cost: Cost,
}

impl EventSetResult {
    /// The preferred minimal set (SPEC.md `ring.required.preferred`); `None` when none was
    /// found.
    pub fn preferred(&self) -> Option<CapSet> {
        self.minimal_sets.first().copied()
    }

    /// The oracle's two predictions equal the preferred measured sets (with and without
    /// cap_bpf); `None` when nothing was measured.
    pub fn oracle_agrees(&self) -> Option<bool> {
        let preferred = self.preferred()?;
        let fallback = preferred_of(
            self.minimal_sets
                .iter()
                .copied()
                .filter(|s| !s.contains(Cap::BPF))
                .collect(),
        );
        let first = self.oracle.required == Some(preferred);
        let second = match &self.oracle_without_cap_bpf {
            Some(p) => p.required == fallback,
            None => true,
        };
        Some(first && second)
    }
}

/// Everything `capring minimize` measured for one tracer in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// The profile's name: a check finds the table by it (or by the profile's
    /// `measured_as`).
    pub tracer: String,
    /// `uname -r` of the kernel measured: the table judges only runs on this release.
    pub kernel: String,
    /// The environment's feature key (`EnvFacts::feature_key`): the table judges only runs
    /// whose key is the same, apart from its eBPF part (which capabilities are usable).
    pub feature_key: String,
    /// The facts of the measurement (the oracle's input, for the oracle test).
    pub facts: EnvFacts,
    /// How the trials kept the tracer from managing its own capabilities.
    pub mode: Mode,
    /// Event lines a run had to deliver to work.
    pub lines: usize,
    /// One measurement per event set asked about, in the order asked.
    pub entries: Vec<EventSetResult>,
}

/// The preference of SPEC.md `ring.required.preferred`: without cap_sys_admin first, then
/// fewer capabilities, then the lower capability numbers.
pub fn preference_key(set: &CapSet) -> (bool, usize, Vec<u8>) {
    (
        set.contains(Cap::SYS_ADMIN),
        set.len(),
        set.iter().map(Cap::number).collect(),
    )
}

/// `sets` in the order of preference.
pub fn by_preference(mut sets: Vec<CapSet>) -> Vec<CapSet> {
    sets.sort_by_key(preference_key);
    sets
}

/// The preferred set of `sets`.
pub fn preferred_of(sets: Vec<CapSet>) -> Option<CapSet> {
    by_preference(sets).into_iter().next()
}
// ---------------------------------------------------------------------------------------
// Lookup for the plans and the checks

/// The measurement a run is judged against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// The table and entry used, for verdicts: `ref-tracer@….json (kernel …), events execve+openat`.
    pub source: String,
    /// The minimal sets for the run's events that the run's capabilities allow, preferred
    /// first.
    pub minimal_sets: Vec<CapSet>,
    /// Combined from per-event measurements (the event set itself was not measured).
    pub derived: bool,
    /// Every measurement it comes from was exhaustive: no other minimal set exists.
    pub exhaustive: bool,
}

impl Measured {
    /// The preferred minimal set the run's Required ring is judged against.
    pub fn preferred(&self) -> Option<CapSet> {
        self.minimal_sets.first().copied()
    }
}

/// Whether a run has a measurement to be judged against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Measurement {
    /// Nothing was looked up (records from before measured tables).
    #[default]
    NotLooked,
    /// No table holds for this run.
    Missing {
        /// Why: no table for this tracer, kernel and feature key, or the table lacks the
        /// run's events.
        why: String,
    },
    /// A table holds: the minimal sets that judge the run.
    Found(Measured),
}

/// The tables of one directory, with the files they came from.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Where they were read from (`snapshots/minimal-sets/`), for messages.
    pub dir: PathBuf,
    /// Each table with its file name, in file-name order.
    pub tables: Vec<(String, Table)>,
}

impl Tables {
    /// Every `*.json` table of `dir` (none when it does not exist).
    pub fn load(dir: &Path) -> anyhow::Result<Tables> {
        use anyhow::Context;
        let mut tables = Vec::new();
        if dir.is_dir() {
            let files = json_files(dir).with_context(|| format!("reading {}", dir.display()))?;
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                let t: Table = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", f.display()))?;
                let name = f.file_name().unwrap_or_default().to_string_lossy().into();
                tables.push((name, t));
            }
        }
        Ok(Tables {
            dir: dir.to_path_buf(),
            tables,
        })
    }

    /// The measurement for `tracer` running `events` in an environment with `facts`.
    pub fn lookup(&self, tracer: &str, facts: &EnvFacts, events: &[String]) -> Measurement {
        let feature_key = facts.feature_key();
        let key = env_key(&feature_key);
        let found = self.tables.iter().find(|(_, t)| {
            t.tracer == tracer && t.kernel == facts.kernel_release && env_key(&t.feature_key) == key
        });
        let Some((file, table)) = found else {
            return Measurement::Missing {
                why: format!(
                    "no measured table for {tracer} on kernel {} ({}) in {} (capring minimize writes one)",
                    facts.kernel_release,
                    facts.feature_key(),
                    self.dir.display()
                ),
            };
        };
        match table.for_events(events) {
            Ok((sets, derived, exhaustive)) => {
                let usable = facts.usable();
                let allowed: Vec<CapSet> =
                    by_preference(sets.into_iter().filter(|s| s.is_subset(usable)).collect());
                Measurement::Found(Measured {
                    source: format!(
                        "{file} (kernel {}), events {}{}",
                        table.kernel,
                        events.join("+"),
                        if derived { ", combined per event" } else { "" }
                    ),
                    minimal_sets: allowed,
                    derived,
                    exhaustive,
                })
            }
            Err(why) => Measurement::Missing {
                why: format!("{file}: {why}"),
            },
        }
    }
}

/// The feature key without its eBPF part (`capbpf`/`sysadmin` says which capabilities are
/// usable: a measurement covers both, filtered by what the run may use).
fn env_key(feature_key: &str) -> &str {
    feature_key
        .split_once('.')
        .map_or(feature_key, |(_, rest)| rest)
}

impl Table {
    /// The minimal sets for `events`: the entry measured for exactly that set, else the
    /// per-event entries combined (the minimal unions of one set per event, which assumes
    /// events configure independently). (sets, derived, exhaustive)
    pub fn for_events(&self, events: &[String]) -> Result<(Vec<CapSet>, bool, bool), String> {
        let wanted: BTreeSet<&str> = events.iter().map(String::as_str).collect();
        let measured = |e: &EventSetResult| e.failed.is_none();
        if let Some(e) = self
            .entries
            .iter()
            .filter(|e| measured(e))
            .find(|e| e.events.iter().map(String::as_str).collect::<BTreeSet<_>>() == wanted)
        {
            return Ok((e.minimal_sets.clone(), false, e.exhaustive));
        }
        let mut combined = vec![CapSet::EMPTY];
        let mut exhaustive = true;
        for ev in &wanted {
            let Some(e) = self
                .entries
                .iter()
                .filter(|e| measured(e))
                .find(|e| e.events.len() == 1 && e.events[0] == *ev)
            else {
                return Err(format!("event {ev} was not measured"));
            };
            exhaustive &= e.exhaustive;
            combined = keep_minimal(
                combined
                    .iter()
                    .flat_map(|a| e.minimal_sets.iter().map(move |b| a.union(*b)))
                    .collect(),
            );
        }
        Ok((combined, true, exhaustive))
    }
}
/// Where the measured tables of a profile are: `$CAPRING_MEASURED`, else
/// `snapshots/minimal-sets` of the repository the profile's fixtures belong to.
pub fn tables_dir(profile: &Profile) -> PathBuf {
    if let Some(d) = std::env::var_os("CAPRING_MEASURED") {
        return PathBuf::from(d);
    }
    profile.fixtures_dir().join("../snapshots/minimal-sets")
}
/// The measurement for `profile`'s run with `facts` and `events`, from the tables of
/// [`tables_dir`] (read once per directory, then kept for the life of the process): what
/// [`crate::plan::plan`] attaches to a plan, so that a plan is whole once built.
pub fn lookup(profile: &Profile, facts: &EnvFacts, events: &[String]) -> Measurement {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<BTreeMap<PathBuf, Arc<Result<Tables, String>>>> =
        Mutex::new(BTreeMap::new());
    let dir = tables_dir(profile);
    let tables = {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(dir.clone())
            .or_insert_with(|| Arc::new(Tables::load(&dir).map_err(|e| format!("{e:#}"))))
            .clone()
    };
    match tables.as_ref() {
        Ok(t) => t.lookup(
            profile.measured_as.as_deref().unwrap_or(&profile.name),
            facts,
            events,
        ),
        Err(e) => Measurement::Missing { why: e.clone() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> CapSet {
        CapSet::from_names(names.iter().copied()).unwrap()
    }

    fn entry(events: &[&str], sets: Vec<CapSet>) -> EventSetResult {
        EventSetResult {
            events: events.iter().map(|s| s.to_string()).collect(),
            failed: None,
            universe: CapSet::all_up_to(40),
            universe_note: None,
            minimal_sets: by_preference(sets),
            exhaustive: true,
            stopped: None,
            needed_by_all: CapSet::EMPTY,
            observed: None,
            observed_note: None,
            oracle: Prediction {
                required: None,
                note: None,
            },
            oracle_without_cap_bpf: None,
            missing: CapSet::EMPTY,
            too_permissive: CapSet::EMPTY,
            observed_sufficient: None,
            requested: vec![],
            went_without: BTreeSet::new(),
            cost: Cost {
                runs: 0,
                inferred: 0,
                max_runs: 0,
                wall_s: None,
            },
        }
    }

    fn table(entries: Vec<EventSetResult>) -> Table {
        let facts = EnvFacts::example();
        Table {
            tracer: "t".into(),
            kernel: facts.kernel_release.clone(),
            feature_key: facts.feature_key(),
            facts,
            mode: Mode::BypassFlag,
            lines: 10,
            entries,
        }
    }

    #[test]
    fn the_preferred_set_avoids_cap_sys_admin_then_is_smallest() {
        let base = set(&["cap_bpf", "cap_perfmon"]);
        let admin = set(&["cap_sys_admin"]);
        assert_eq!(preferred_of(vec![admin, base]), Some(base));
        let big = set(&["cap_bpf", "cap_perfmon", "cap_net_admin"]);
        assert_eq!(preferred_of(vec![big, base, admin]), Some(base));
        assert_eq!(preferred_of(vec![admin]), Some(admin));
        assert_eq!(preferred_of(vec![]), None);
    }

    #[test]
    fn event_sets_are_found_or_combined_per_event() {
        let base = set(&["cap_bpf", "cap_perfmon"]);
        let admin = set(&["cap_sys_admin"]);
        let net = set(&["cap_bpf", "cap_net_admin"]);
        let t = table(vec![
            entry(&["execve"], vec![base, admin]),
            entry(&["net_packet"], vec![net, admin]),
        ]);
        let (sets, derived, _) = t.for_events(&["execve".into()]).unwrap();
        assert_eq!((sets, derived), (vec![base, admin], false));
        let (sets, derived, _) = t
            .for_events(&["net_packet".into(), "execve".into()])
            .unwrap();
        assert!(derived);
        // {bpf,perfmon}∪{bpf,net_admin}, {sys_admin} (covers both); {bpf,perfmon,sys_admin}
        // and {bpf,net_admin,sys_admin} are not minimal.
        let mut sets = sets;
        sets.sort();
        let mut want = vec![base.union(net), admin];
        want.sort();
        assert_eq!(sets, want);
        assert!(t.for_events(&["openat".into()]).is_err());
    }

    #[test]
    fn lookup_matches_kernel_and_environment_and_filters_by_usable() {
        let base = set(&["cap_bpf", "cap_perfmon"]);
        let admin = set(&["cap_sys_admin"]);
        let tables = Tables {
            dir: "x".into(),
            tables: vec![(
                "t@k.json".into(),
                table(vec![entry(&["execve"], vec![base, admin])]),
            )],
        };
        let mut facts = EnvFacts::example();
        let found = |m: Measurement| match m {
            Measurement::Found(m) => m,
            other => panic!("{other:?}"),
        };
        let m = found(tables.lookup("t", &facts, &["execve".into()]));
        assert_eq!(m.minimal_sets, vec![base, admin]);
        assert_eq!(m.preferred(), Some(base));
        // cap_bpf out of the bounding set: the sysadmin key, same environment otherwise.
        facts.bounding.remove(Cap::BPF);
        let m = found(tables.lookup("t", &facts, &["execve".into()]));
        assert_eq!(m.minimal_sets, vec![admin]);
        // Another kernel, another paranoid level, another tracer: no table.
        let mut other = EnvFacts::example();
        other.kernel_release = "9.9".into();
        assert!(matches!(
            tables.lookup("t", &other, &["execve".into()]),
            Measurement::Missing { .. }
        ));
        let mut other = EnvFacts::example();
        other.perf_event_paranoid = Some(3);
        assert!(matches!(
            tables.lookup("t", &other, &["execve".into()]),
            Measurement::Missing { .. }
        ));
        assert!(matches!(
            tables.lookup("u", &EnvFacts::example(), &["execve".into()]),
            Measurement::Missing { .. }
        ));
    }
}
