//! `capring minimize`: the capability sets each event really needs on this kernel, measured
//! from outside, for any tracer.
//!
//! Why: the oracle predicts the Required ring from the catalog and the probed facts, and the
//! reference implements the same prediction; neither can show that the prediction asks for
//! too much or too little. The kernel can. For each event set asked about:
//!
//! 1. *baseline*: the tracer with every usable capability (bypassed, see [`trial`]) must
//!    work, or there is nothing to measure;
//! 2. *observed*: the tracer run normally with every capability: the E of its privileged
//!    calls up to readiness is the Required ring it really uses;
//! 3. *search* ([`search`]): every minimal sufficient set within the candidates (the eBPF
//!    capabilities below plus what the catalog declares for the events; every usable
//!    capability with `--universe all`, or when the candidates are not enough), seeded with
//!    the oracle's predictions, under a run budget (`--max-runs`), saying whether the
//!    enumeration was exhaustive;
//! 4. *Requested needs*: each Requested operation the catalog declares is measured on the
//!    preferred minimal set, with its capability added and without it, by the profile's
//!    `[requested.OP]` pattern on the event lines;
//! 5. *report* ([`table`]): the minimal sets, the observed ring and the oracle's prediction
//!    side by side, with what the observed ring is missing (needed by every minimal set)
//!    and what is too permissive (in no minimal set).
//!
//! Each run prints one line on stderr; Ctrl-C stops at the current run (the partial table is
//! still printed, marked so). The subcommand's options, the printing and the exit code are
//! the binary's (`harness/src/cmd/minimize.rs`); the tables as the checks read them are
//! [`crate::measured`].

pub mod search;
pub mod table;
pub mod trial;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use capring_spec::caps::{Cap, CapSet};
use capring_spec::facts::{self, EnvFacts};
use capring_spec::oracle::{self, Outcome};

use crate::measured::{
    by_preference, Cost, EventSetResult, Mode, Prediction, RequestedResult, RequestedVerdict, Table,
};
use crate::profile::Profile;
use crate::run::{RunRecord, TracefsMount};
use search::{Search, Stop};
use trial::{Criteria, Purpose, Setup, Trial};

/// The capabilities an eBPF tracer plausibly needs: where the search starts (with what the
/// catalog declares), instead of all 41.
pub const EBPF_CANDIDATES: [Cap; 10] = [
    Cap::BPF,
    Cap::PERFMON,
    Cap::SYS_ADMIN,
    Cap::SYS_RESOURCE,
    Cap::IPC_LOCK,
    Cap::NET_ADMIN,
    Cap::SYSLOG,
    Cap::SYS_PTRACE,
    Cap::DAC_READ_SEARCH,
    Cap::DAC_OVERRIDE,
];

/// Which capabilities the search chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Universe {
    /// The eBPF candidates and the catalog's declared needs.
    Candidates,
    /// Every usable capability.
    All,
}

/// How one invocation measures (`capring minimize`'s options).
#[derive(Debug, Clone)]
pub struct Options {
    /// Search runs allowed per event set (the baseline, observed and Requested runs come on
    /// top: at most 2 + 2 per Requested need).
    pub max_runs: u32,
    /// Event lines a run must deliver to count as working.
    pub lines: u32,
    /// perf_event_paranoid during the runs (restored after each); `None`: as it is.
    pub paranoid: Option<i32>,
    /// Which capabilities the search chooses from.
    pub universe: Universe,
    /// Seconds after which a run is a failure (`None`: 4 × the baseline run, at least 10).
    pub run_timeout: Option<u64>,
}

/// Everything the event sets of one invocation share.
struct Ctx<'a> {
    profile: &'a Profile,
    /// This machine's facts (what capring itself may use).
    base: EnvFacts,
    /// The facts of the measurement: `base` with `--paranoid`.
    facts: EnvFacts,
    mode: Mode,
    args: &'a Options,
}

/// The runs of one event set: remembered by set, each reported on stderr.
struct Runner<'a> {
    ctx: &'a Ctx<'a>,
    setup: Setup,
    baseline_failures: BTreeSet<String>,
    timeout: Option<Duration>,
    memo: BTreeMap<CapSet, Trial>,
    runs: usize,
    /// Every run, in order (the JSON output's `runs`).
    log: Vec<Trial>,
}

impl<'a> Runner<'a> {
    fn new(ctx: &'a Ctx<'a>, events: &[String]) -> Runner<'a> {
        Runner {
            setup: Setup {
                events: events.to_vec(),
                mode: ctx.mode,
                lines: ctx.args.lines as usize,
                paranoid: ctx.args.paranoid,
            },
            timeout: ctx.args.run_timeout.map(Duration::from_secs),
            ctx,
            baseline_failures: BTreeSet::new(),
            memo: BTreeMap::new(),
            runs: 0,
            log: Vec::new(),
        }
    }

    fn label(&self) -> String {
        self.setup.events.join("+")
    }

    /// Runs the tracer with `keep` (None: untouched, normally run) and judges it.
    fn launch(
        &mut self,
        keep: Option<CapSet>,
        bypass: bool,
        purpose: Purpose,
    ) -> Result<(Trial, RunRecord), Stop> {
        let p = self.ctx.profile;
        let s = trial::scenario(p, &self.setup, keep, bypass, &self.ctx.base);
        let started = Instant::now();
        let rec = trial::launch(p, &s, &self.ctx.base, self.timeout)?;
        let probes: Vec<(String, &regex::Regex)> = p
            .requested
            .iter()
            .filter_map(|(op, probe)| Some((op.clone(), probe.success_regex.as_ref()?)))
            .collect();
        let criteria = Criteria {
            lines: self.setup.lines,
            capability_code: p.exit_codes.capability,
            ends_by_itself: p.stop.ends_by_itself,
            probes,
            baseline_failures: &self.baseline_failures,
        };
        let set = keep.unwrap_or(self.ctx.base.usable());
        let t = trial::judge(&rec, set, purpose, &criteria);
        self.runs += 1;
        self.log.push(t.clone());
        eprintln!(
            "capring: [{}] run {}: {:?} {} → {}: {} ({:.1} s)",
            self.label(),
            self.runs,
            purpose,
            capring_observe::timeline::compact(set, self.ctx.facts.cap_last_cap),
            if t.works { "works" } else { "FAILS" },
            t.why,
            started.elapsed().as_secs_f64()
        );
        Ok((t, rec))
    }

    /// A bypassed run with exactly `set` (remembered: a set runs once).
    fn trial(&mut self, set: CapSet, purpose: Purpose) -> Result<Trial, Stop> {
        if let Some(t) = self.memo.get(&set) {
            return Ok(t.clone());
        }
        let bypass = self.ctx.mode != Mode::Plain;
        let (t, _) = self.launch(Some(set), bypass, purpose)?;
        self.memo.insert(set, t.clone());
        Ok(t)
    }
}

/// The oracle's Required ring for `events` under `facts`.
fn predict(profile: &Profile, events: &[String], facts: &EnvFacts) -> Prediction {
    let none: &[&str] = &[];
    let options = match capring_spec::options::parse_and_resolve(
        none,
        &Default::default(),
        facts.cap_last_cap,
        &facts.kernel_release,
    ) {
        Ok(o) => o,
        Err(e) => {
            return Prediction {
                required: None,
                note: Some(e.to_string()),
            }
        }
    };
    match oracle::evaluate(&options, events, profile.catalog(), facts) {
        Ok(Outcome::Runs { rings, .. }) => Prediction {
            required: Some(rings.required),
            note: None,
        },
        Ok(Outcome::CannotRun { message, .. }) => Prediction {
            required: None,
            note: Some(message),
        },
        Ok(Outcome::Help) => Prediction {
            required: None,
            note: Some("help".into()),
        },
        Err(e) => Prediction {
            required: None,
            note: Some(e.to_string()),
        },
    }
}

/// `facts` with cap_bpf unusable (None when the kernel has no cap_bpf).
fn without_cap_bpf(facts: &EnvFacts) -> Option<EnvFacts> {
    facts.kernel_has(Cap::BPF).then(|| {
        let mut f = facts.clone();
        f.permitted.remove(Cap::BPF);
        f.bounding.remove(Cap::BPF);
        f
    })
}

/// The capabilities the catalog declares for `events` (Required and Requested).
fn declared(profile: &Profile, events: &[String]) -> CapSet {
    let catalog = profile.catalog();
    events
        .iter()
        .filter_map(|e| catalog.event(e))
        .flat_map(|e| {
            e.required
                .iter()
                .map(|n| n.capability)
                .chain(e.requested.iter().map(|n| n.capability))
        })
        .collect()
}

/// A result with nothing measured.
fn unmeasured(events: &[String], why: String, oracle: Prediction, cost: Cost) -> EventSetResult {
    EventSetResult {
        events: events.to_vec(),
        failed: Some(why),
        universe: CapSet::EMPTY,
        universe_note: None,
        minimal_sets: Vec::new(),
        exhaustive: false,
        stopped: None,
        needed_by_all: CapSet::EMPTY,
        observed: None,
        observed_note: None,
        oracle,
        oracle_without_cap_bpf: None,
        missing: CapSet::EMPTY,
        too_permissive: CapSet::EMPTY,
        observed_sufficient: None,
        requested: Vec::new(),
        went_without: BTreeSet::new(),
        cost,
    }
}

/// The Required ring the tracer uses when run normally with every capability.
fn observe_ring(
    runner: &mut Runner,
    baseline: &RunRecord,
) -> Result<(Option<CapSet>, Option<String>), Stop> {
    let rec = if runner.ctx.mode == Mode::Plain {
        baseline.clone()
    } else {
        runner.launch(None, false, Purpose::Observed)?.1
    };
    Ok(match trial::observed_required(&rec) {
        Some(s) => (Some(s), None),
        None => (
            None,
            Some(format!(
                "no privileged call before readiness ({}, {} event lines)",
                rec.observation.exit, rec.observation.event_count
            )),
        ),
    })
}

/// Step 3 of the module docs: the search, falling back to every usable capability when the
/// candidates are not enough. (enumeration, universe, note, answers inferred)
fn search_sets(
    runner: &mut Runner,
    candidates: CapSet,
    seeds: &[CapSet],
    max_runs: usize,
) -> (search::Enumeration, CapSet, Option<String>, usize) {
    let usable = runner.ctx.base.usable();
    let mut inferred = 0;
    let mut universe = candidates;
    let mut note = None;
    let mut s = Search::new(max_runs, |set| {
        runner.trial(set, Purpose::Search).map(|t| t.works)
    });
    let mut e = s.enumerate(universe, seeds);
    if e.minimal_sets.is_empty() && e.exhaustive && universe != usable {
        note = Some(format!(
            "the candidates {} are not enough: searched every usable capability",
            candidates
        ));
        universe = usable;
        e = s.enumerate(universe, seeds);
    }
    inferred += s.inferred();
    (e, universe, note, inferred)
}

/// Step 4: each Requested need of the events, on the preferred set.
fn measure_requested(
    runner: &mut Runner,
    preferred: Option<CapSet>,
) -> Result<Vec<RequestedResult>, Stop> {
    let profile = runner.ctx.profile;
    let catalog = profile.catalog();
    let mut out = Vec::new();
    for name in runner.setup.events.clone() {
        let Some(event) = catalog.event(&name) else {
            continue;
        };
        for need in &event.requested {
            let mut r = RequestedResult {
                event: name.clone(),
                operation: need.operation.clone(),
                capability: need.capability,
                verdict: RequestedVerdict::NotMeasured,
                detail: String::new(),
            };
            let has_probe = profile.requested.contains_key(&need.operation);
            match preferred {
                _ if !has_probe => {
                    r.detail = format!(
                        "the profile has no [requested.{}] pattern to see it work",
                        need.operation
                    )
                }
                None => r.detail = "no sufficient set to measure it on".into(),
                Some(m) if m.contains(need.capability) => {
                    r.detail = format!(
                        "{} is in the preferred set itself (a Required need)",
                        need.capability
                    )
                }
                Some(m) => {
                    let with = runner.trial(m.with(need.capability), Purpose::Requested)?;
                    let without = runner.trial(m, Purpose::Requested)?;
                    let seen = |t: &Trial| t.requested.get(&need.operation) == Some(&true);
                    (r.verdict, r.detail) = match (seen(&with), seen(&without)) {
                        (true, false) => (
                            RequestedVerdict::Needed,
                            format!("works with {}, not without", need.capability),
                        ),
                        (true, true) => (
                            RequestedVerdict::NotNeeded,
                            format!("works without {}", need.capability),
                        ),
                        (false, _) => (
                            RequestedVerdict::FailsEvenWithIt,
                            format!("no event line shows it with {}", need.capability),
                        ),
                    };
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// Step 1: the baseline with every usable capability; `Err(why)` when the tracer does not
/// work even then. Also sets the baseline's permission failures and the run timeout.
fn baseline(runner: &mut Runner) -> Result<Result<RunRecord, String>, Stop> {
    let ctx = runner.ctx;
    let usable = ctx.base.usable();
    let bypass = ctx.mode != Mode::Plain;
    let (baseline, rec) = runner.launch(Some(usable), bypass, Purpose::Baseline)?;
    if !baseline.works {
        return Ok(Err(format!(
            "the tracer does not work even with every usable capability {}: {}",
            capring_observe::timeline::compact(usable, ctx.facts.cap_last_cap),
            baseline.why
        )));
    }
    runner.baseline_failures = baseline.permission_failures.clone();
    if runner.timeout.is_none() {
        let wall = Duration::from_millis(baseline.wall_ms);
        runner.timeout = Some((wall * 4).max(Duration::from_secs(10)));
    }
    runner.memo.insert(usable, baseline);
    Ok(Ok(rec))
}

/// The universe and the seeds of the search (step 3).
fn search_inputs(
    ctx: &Ctx,
    events: &[String],
    predictions: &[&Prediction],
) -> (CapSet, Vec<CapSet>) {
    let usable = ctx.base.usable();
    let candidates = match ctx.args.universe {
        Universe::Candidates => EBPF_CANDIDATES
            .iter()
            .copied()
            .collect::<CapSet>()
            .union(declared(ctx.profile, events))
            .intersection(usable),
        Universe::All => usable,
    };
    let seeds = by_preference(predictions.iter().filter_map(|p| p.required).collect());
    (candidates, seeds)
}

/// Step 5: the minimal sets next to the observed ring (missing, too permissive).
fn side_by_side(
    mut r: EventSetResult,
    found: Vec<CapSet>,
    observed: Option<CapSet>,
) -> EventSetResult {
    let minimal_sets = by_preference(found);
    let union = minimal_sets.iter().fold(CapSet::EMPTY, |a, b| a.union(*b));
    r.needed_by_all = match minimal_sets.split_first() {
        Some((first, rest)) => rest.iter().fold(*first, |a, b| a.intersection(*b)),
        None => CapSet::EMPTY,
    };
    r.missing = observed.map_or(CapSet::EMPTY, |o| r.needed_by_all.difference(o));
    r.too_permissive = observed.map_or(CapSet::EMPTY, |o| o.difference(union));
    r.observed_sufficient = observed.map(|o| minimal_sets.iter().any(|m| m.is_subset(o)));
    r.observed = observed;
    r.minimal_sets = minimal_sets;
    r
}

/// Measures one event set (steps 1-5 of the module docs); every run comes back too.
fn measure(ctx: &Ctx, events: &[String]) -> Result<(EventSetResult, Vec<Trial>), Stop> {
    let started = Instant::now();
    let oracle = predict(ctx.profile, events, &ctx.facts);
    let fallback = without_cap_bpf(&ctx.facts).map(|f| predict(ctx.profile, events, &f));
    let mut runner = Runner::new(ctx, events);
    let mut cost = Cost {
        runs: 0,
        inferred: 0,
        max_runs: ctx.args.max_runs as usize,
        wall_s: None,
    };
    let mut r = unmeasured(events, String::new(), oracle.clone(), cost.clone());
    r.failed = None;
    r.oracle_without_cap_bpf = fallback.clone();
    let baseline_rec = match baseline(&mut runner)? {
        Ok(rec) => rec,
        Err(why) => {
            r.failed = Some(why);
            r.cost.runs = runner.runs;
            r.cost.wall_s = Some(started.elapsed().as_secs_f64());
            return Ok((r, runner.log));
        }
    };
    let (observed, observed_note) = observe_ring(&mut runner, &baseline_rec)?;
    let predictions: Vec<&Prediction> = std::iter::once(&oracle).chain(&fallback).collect();
    let (candidates, seeds) = search_inputs(ctx, events, &predictions);
    let (e, universe, universe_note, inferred) =
        search_sets(&mut runner, candidates, &seeds, ctx.args.max_runs as usize);
    if e.stopped == Some(Stop::Interrupted) {
        return Err(Stop::Interrupted);
    }
    let preferred = by_preference(e.minimal_sets.clone()).first().copied();
    r.requested = measure_requested(&mut runner, preferred)?;
    r.went_without = preferred
        .and_then(|p| runner.memo.get(&p))
        .map(|t| t.went_without.clone())
        .unwrap_or_default();
    (r.universe, r.universe_note, r.exhaustive) = (universe, universe_note, e.exhaustive);
    r.stopped = e.stopped.map(|s| s.to_string());
    r.observed_note = observed_note;
    cost.runs = runner.runs;
    cost.inferred = inferred;
    cost.wall_s = Some(started.elapsed().as_secs_f64());
    r.cost = cost;
    Ok((side_by_side(r, e.minimal_sets, observed), runner.log))
}

/// The event sets to measure: `--events` (`a+b` joins events into one set), else each
/// event alone and the profile's default set when it has several (a tracer that cannot
/// choose its events runs its default set only).
pub fn event_sets(profile: &Profile, list: Option<&str>) -> Result<Vec<Vec<String>>, String> {
    let catalog = profile.catalog();
    let sets: Vec<Vec<String>> = match list {
        Some(l) => l
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.split('+').map(|e| e.trim().to_string()).collect())
            .collect(),
        None if profile.events.is_none() => vec![profile.default_events()],
        None => {
            let mut v: Vec<Vec<String>> = catalog
                .names()
                .iter()
                .map(|n| vec![n.to_string()])
                .collect();
            let d = profile.default_events();
            if d.len() > 1 {
                v.push(d);
            }
            v
        }
    };
    if sets.is_empty() {
        return Err("--events names no event".into());
    }
    for e in sets.iter().flatten() {
        if catalog.event(e).is_none() {
            return Err(format!(
                "unknown event '{e}' (the profile's catalog has: {})",
                catalog.names().join(", ")
            ));
        }
    }
    Ok(sets)
}

/// What one invocation measured.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    /// The table: one measurement per event set.
    pub table: Table,
    /// Every run of each event set (`a+b` for a set), in order (in the JSON output).
    pub(crate) runs: BTreeMap<String, Vec<Trial>>,
    /// capring was interrupted: the table is partial.
    pub interrupted: bool,
}

/// Writes the table (without wall times) as `<tracer>@<feature key>.json` and `.txt`.
pub fn write_table(dir: &std::path::Path, table: &Table) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut stable = table.clone();
    for e in &mut stable.entries {
        e.cost.wall_s = None;
    }
    let json = dir.join(table::file_name(&table.tracer, &table.feature_key));
    std::fs::write(&json, serde_json::to_string_pretty(&stable)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let txt = json.with_extension("txt");
    std::fs::write(&txt, stable.human()).with_context(|| format!("writing {}", txt.display()))?;
    Ok(json)
}

/// Measures each event set of `sets` in turn (steps 1-5 of the module docs) and gathers the
/// table; stops at an interrupt (the report says so). A tracefs mount made for the runs is
/// undone before it returns.
pub fn measure_all(profile: &Profile, sets: &[Vec<String>], options: &Options) -> Result<Report> {
    let base = facts::probe().context("probing the environment")?;
    let mut measured_facts = base.clone();
    if options.paranoid.is_some() {
        measured_facts.perf_event_paranoid = options.paranoid;
    }
    let ctx = Ctx {
        profile,
        mode: Mode::of(profile),
        facts: measured_facts,
        base,
        args: options,
    };
    let mut entries = Vec::new();
    let mut runs = BTreeMap::new();
    let mut interrupted = false;
    for events in sets {
        match measure(&ctx, events) {
            Ok((e, log)) => {
                runs.insert(events.join("+"), log);
                entries.push(e);
            }
            Err(Stop::Interrupted) => {
                interrupted = true;
                break;
            }
            Err(stop) => entries.push(unmeasured(
                events,
                stop.to_string(),
                predict(profile, events, &ctx.facts),
                Cost {
                    runs: 0,
                    inferred: 0,
                    max_runs: options.max_runs as usize,
                    wall_s: None,
                },
            )),
        }
    }
    TracefsMount::restore();
    let table = Table {
        tracer: profile.name.clone(),
        kernel: ctx.facts.kernel_release.clone(),
        feature_key: ctx.facts.feature_key(),
        facts: ctx.facts.clone(),
        mode: ctx.mode,
        lines: options.lines as usize,
        entries,
    };
    Ok(Report {
        table,
        runs,
        interrupted,
    })
}
