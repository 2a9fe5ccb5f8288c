//! Every check judged on recorded real runs (`fixtures/runs/`, re-recorded by `cargo xtask
//! record-runs`): no root, no eBPF, no kernel needed.
//!
//! * `fixtures/runs/reference/`: the reference's whole catalog. Every clause of every
//!   scenario must pass or be not applicable.
//! * `fixtures/runs/controls/`: one run per negative control. Its expected clause and every
//!   clause its entry lists under `also_fails` must fail; nothing outside `also_fails` and
//!   `may_fail` may fail.
//! * `fixtures/runs/handmade/`: the hand-built tracers, which must fail what
//!   `fixtures/tracers/handmade/must-fail.toml` says.
//!
//! And then the point of it: every check must have been seen both passing and failing on
//! these runs (or on the hand-made timelines of `checks::cases`), so no check is untested in
//! either direction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use capring_judge::checks::{self, Verdict};
use capring_judge::mutants;
use capring_judge::run::RunRecord;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runs(dir: &str) -> Vec<(String, RunRecord)> {
    let path = root().join("fixtures/runs").join(dir);
    let mut out: Vec<(String, RunRecord)> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask record-runs)", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".json.gz", "");
            (
                name,
                RunRecord::load(&p).unwrap_or_else(|e| panic!("{e:#}")),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no recorded run in {}", path.display());
    out
}

/// (clause → verdicts seen), filled by every test of this file through [`seen`].
type Seen = BTreeMap<String, BTreeSet<&'static str>>;

fn seen(into: &mut Seen, clause: &str, v: Verdict) {
    let label = match v {
        Verdict::Pass => "pass",
        Verdict::Fail | Verdict::Unsupported => "fail",
        Verdict::NotApplicable => "n/a",
    };
    into.entry(clause.to_string()).or_default().insert(label);
}

/// The clauses a recorded run is judged by: those it was recorded with, and those its
/// scenario lists today (a clause added since is judged on the same run).
fn clauses_of(rec: &RunRecord) -> BTreeSet<String> {
    let today = capring_judge::scenario::builtin()
        .into_iter()
        .find(|s| s.name == rec.plan.scenario.name)
        .map(|s| s.clauses)
        .unwrap_or_default();
    rec.plan
        .scenario
        .clauses
        .iter()
        .cloned()
        .chain(today)
        .collect()
}

fn reference(into: &mut Seen) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, rec) in runs("reference") {
        assert_eq!(rec.plan.scenario.name, name);
        for clause in &clauses_of(&rec) {
            let c = checks::check(clause, &rec);
            seen(into, clause, c.verdict);
            if c.verdict.is_failure() {
                problems.push(format!("{name} {clause}: {} → {}", c.expected, c.observed));
            }
        }
    }
    problems
}

fn controls(into: &mut Seen) -> Vec<String> {
    let list = mutants::load(&root().join("fixtures/mutants/mutants.toml")).unwrap();
    let recorded: BTreeMap<String, RunRecord> = runs("controls").into_iter().collect();
    let mut problems = Vec::new();
    for m in &list {
        let Some(rec) = recorded.get(&m.name) else {
            problems.push(format!(
                "{}: no recorded run (cargo xtask record-runs)",
                m.name
            ));
            continue;
        };
        let clauses = clauses_of(rec);
        let judged: BTreeMap<&String, Verdict> = clauses
            .iter()
            .chain(std::iter::once(&m.expected_clause))
            .chain(m.also_fails.iter().map(|a| &a.clause))
            .map(|c| (c, checks::check(c, rec).verdict))
            .collect();
        for (c, v) in &judged {
            seen(into, c, *v);
            let must = **c == m.expected_clause || m.also_fails.iter().any(|a| &a.clause == *c);
            let may = m.may_fail.iter().any(|a| &a.clause == *c);
            if must && !v.is_failure() {
                problems.push(format!("{}: {c} should fail, it said {v:?}", m.name));
            }
            if !must && !may && v.is_failure() {
                problems.push(format!(
                    "{}: {c} failed but the entry does not list it",
                    m.name
                ));
            }
        }
    }
    problems
}

#[derive(serde::Deserialize)]
struct MustFail {
    tracer: Vec<HandmadeEntry>,
}

#[derive(serde::Deserialize)]
struct HandmadeEntry {
    profile: String,
    scenarios: Vec<String>,
    clauses: Vec<String>,
}

fn handmade(into: &mut Seen) -> Vec<String> {
    let dir = root().join("fixtures/tracers/handmade");
    let text = std::fs::read_to_string(dir.join("must-fail.toml")).unwrap();
    let must: MustFail = toml::from_str(&text).unwrap();
    let mut problems = Vec::new();
    for t in must.tracer {
        let name = t.profile.trim_end_matches(".toml");
        let recorded: BTreeMap<String, RunRecord> =
            runs(&format!("handmade/{name}")).into_iter().collect();
        for s in &t.scenarios {
            let Some(rec) = recorded.get(s) else {
                problems.push(format!("{name}: no recorded run of {s}"));
                continue;
            };
            for c in &t.clauses {
                let v = checks::check(c, rec).verdict;
                seen(into, c, v);
                if !v.is_failure() {
                    problems.push(format!("{name} {s}: {c} should fail, it said {v:?}"));
                }
            }
        }
    }
    problems
}

#[test]
fn recorded_runs_are_judged_as_recorded_and_every_check_is_seen_both_ways() {
    let mut seen_verdicts = Seen::new();
    let mut problems = reference(&mut seen_verdicts);
    problems.extend(controls(&mut seen_verdicts));
    problems.extend(handmade(&mut seen_verdicts));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Clauses that no recorded run can make fail (no control exists for them) are covered
    // by the hand-made timelines of `checks::cases` (every clause, both ways).
    let hand_made = capring_judge::checks::HAND_MADE_FAILURES;
    let mut untested = Vec::new();
    for id in checks::implemented() {
        let v = seen_verdicts.get(id).cloned().unwrap_or_default();
        if !v.contains("pass") {
            untested.push(format!("{id}: never passes on a recorded run"));
        }
        if !v.contains("fail") && !hand_made.contains(&id) {
            untested.push(format!("{id}: never fails on a recorded run"));
        }
    }
    assert!(untested.is_empty(), "{}", untested.join("\n"));
}

/// The recorded runs read back as they were written: the plan, the timeline, the lines.
#[test]
fn recorded_runs_round_trip() {
    for (name, rec) in runs("reference").into_iter().take(3) {
        let json = serde_json::to_vec(&rec).unwrap();
        let back: RunRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            back.observation.timeline, rec.observation.timeline,
            "{name}"
        );
        assert_eq!(back.observation.lines, rec.observation.lines, "{name}");
        assert_eq!(
            serde_json::to_value(&back.plan).unwrap(),
            serde_json::to_value(&rec.plan).unwrap(),
            "{name}"
        );
    }
}
