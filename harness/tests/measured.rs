//! The measured tables (`snapshots/minimal-sets/`, written by `capring minimize` on the host
//! and in each kernel of the VM matrix) hold the kernel's answer to "which capability sets
//! does this event need". Here they judge the two predictions made without the kernel:
//!
//! * the oracle (`spec::oracle::evaluate`, recomputed now from each table's recorded facts
//!   and the tracer's catalog) must predict the preferred measured set, for every table and
//!   every event set, with and without cap_bpf; each disagreement is listed;
//! * the reference must configure with the preferred measured set (the ring it was seen
//!   using when the table was measured), and each Requested need its catalog declares must
//!   be measured as needed.
//!
//! And the ring checks are run on recorded runs of the reference with a measurement
//! attached, both ways. Nothing here needs root: the tables and runs are files.

use std::path::{Path, PathBuf};

use capring_judge::checks::{self, Verdict};
use capring_judge::measured::{
    preferred_of, Measured, Measurement, RequestedVerdict, Table, Tables,
};
use capring_judge::profile::Profile;
use capring_judge::run::RunRecord;
use capring_spec::caps::{Cap, CapSet};
use capring_spec::facts::EnvFacts;
use capring_spec::oracle::{self, Outcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tables() -> Vec<(String, Table)> {
    let t = Tables::load(&root().join("snapshots/minimal-sets")).unwrap();
    assert!(
        !t.tables.is_empty(),
        "no measured table in snapshots/minimal-sets (capring minimize --out)"
    );
    t.tables
}

/// The profile of a measured tracer: a profile under fixtures/tracers/ with that name.
fn profile_for(tracer: &str) -> Profile {
    let dirs = ["fixtures/tracers", "fixtures/tracers/third-party"];
    for d in dirs {
        for e in std::fs::read_dir(root().join(d)).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".toml") || name.ends_with(".catalog.toml") {
                continue;
            }
            if let Ok(profile) = Profile::load(&p) {
                if profile.name == tracer {
                    return profile;
                }
            }
        }
    }
    panic!("no profile named {tracer} under fixtures/tracers")
}

fn predict(profile: &Profile, events: &[String], facts: &EnvFacts) -> Option<CapSet> {
    let none: &[&str] = &[];
    let options = capring_spec::options::parse_and_resolve(
        none,
        &Default::default(),
        facts.cap_last_cap,
        &facts.kernel_release,
    )
    .unwrap();
    match oracle::evaluate(&options, events, profile.catalog(), facts).unwrap() {
        Outcome::Runs { rings, .. } => Some(rings.required),
        _ => None,
    }
}

fn without_cap_bpf(facts: &EnvFacts) -> EnvFacts {
    let mut f = facts.clone();
    f.permitted.remove(Cap::BPF);
    f.bounding.remove(Cap::BPF);
    f
}

fn show(s: Option<CapSet>) -> String {
    s.map_or("cannot run".into(), |s| s.to_string())
}

#[test]
fn the_oracle_predicts_the_preferred_measured_set_for_every_kernel_and_event() {
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for (file, table) in tables() {
        let profile = profile_for(&table.tracer);
        for e in table.entries.iter().filter(|e| e.failed.is_none()) {
            compared += 1;
            let measured = e.preferred();
            let predicted = predict(&profile, &e.events, &table.facts);
            if predicted != measured {
                disagreements.push(format!(
                    "{file} {}: the oracle predicts {}, the preferred measured set is {} (measured: {:?})",
                    e.events.join("+"),
                    show(predicted),
                    show(measured),
                    e.minimal_sets
                ));
            }
            let fallback = preferred_of(
                e.minimal_sets
                    .iter()
                    .copied()
                    .filter(|s| !s.contains(Cap::BPF))
                    .collect(),
            );
            let predicted = predict(&profile, &e.events, &without_cap_bpf(&table.facts));
            if predicted != fallback {
                disagreements.push(format!(
                    "{file} {} without cap_bpf: the oracle predicts {}, the preferred measured set is {}",
                    e.events.join("+"),
                    show(predicted),
                    show(fallback)
                ));
            }
        }
    }
    assert!(compared > 0, "no measured entry to compare");
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

#[test]
fn the_reference_configures_with_the_preferred_measured_set_everywhere() {
    let mut problems = Vec::new();
    let mut seen = 0;
    for (file, table) in tables()
        .into_iter()
        .filter(|(_, t)| t.tracer == "ref-tracer")
    {
        for e in &table.entries {
            seen += 1;
            let at = format!("{file} {}", e.events.join("+"));
            if let Some(f) = &e.failed {
                problems.push(format!("{at}: not measured: {f}"));
                continue;
            }
            if !e.exhaustive {
                problems.push(format!("{at}: the enumeration was not exhaustive"));
            }
            if e.observed != e.preferred() {
                problems.push(format!(
                    "{at}: the reference configures with {}, the preferred measured set is {}",
                    show(e.observed),
                    show(e.preferred())
                ));
            }
            for r in &e.requested {
                // kallsyms shows addresses without cap_syslog where kptr_restrict is 0 and
                // perf_event_paranoid ≤ 1 (kallsyms_show_value); the catalog does not model
                // that yet, so there the need is measured as not needed.
                let expected = if r.operation == "read-kallsyms" && table.facts.paranoid() <= 1 {
                    RequestedVerdict::NotNeeded
                } else {
                    RequestedVerdict::Needed
                };
                if r.verdict != expected {
                    problems.push(format!(
                        "{at}: the catalog declares {} for {}, measured {:?} (expected {expected:?}): {}",
                        r.capability, r.operation, r.verdict, r.detail
                    ));
                }
            }
        }
    }
    assert!(seen > 0, "no measured table of ref-tracer");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every event of the reference's catalog is measured on the host table.
#[test]
fn every_reference_event_is_measured() {
    let catalog = capring_spec::catalog::Catalog::builtin();
    for (file, table) in tables()
        .into_iter()
        .filter(|(_, t)| t.tracer == "ref-tracer")
    {
        for name in catalog.names() {
            assert!(
                table
                    .entries
                    .iter()
                    .any(|e| e.events == [name.to_string()] && e.failed.is_none()),
                "{file}: {name} is not measured"
            );
        }
    }
}

fn recorded(name: &str) -> RunRecord {
    RunRecord::load(&root().join("fixtures/runs/reference").join(name)).unwrap()
}

/// The host table's measurement for a recorded run (matched on its environment, not its
/// kernel release: the test is about the checks, on a real run and a real table).
fn host_measurement(rec: &RunRecord) -> Measurement {
    let host: Vec<(String, Table)> = tables()
        .into_iter()
        .filter(|(f, t)| t.tracer == "ref-tracer" && !f.contains("@vm-"))
        .collect();
    let mut facts = rec.plan.facts.clone();
    facts.kernel_release = host
        .first()
        .expect("a host table of ref-tracer")
        .1
        .kernel
        .clone();
    Tables {
        dir: root().join("snapshots/minimal-sets"),
        tables: host,
    }
    .lookup("ref-tracer", &facts, &rec.plan.chosen.events)
}

fn verdict(rec: &RunRecord, clause: &str) -> (Verdict, String) {
    let c = checks::check(clause, rec);
    (c.verdict, format!("{} → {}", c.expected, c.observed))
}

fn with_sets(rec: &RunRecord, sets: Vec<CapSet>) -> RunRecord {
    let mut r = rec.clone();
    r.plan.measured = Measurement::Found(Measured {
        source: "a test table".into(),
        minimal_sets: sets,
        derived: false,
        exhaustive: true,
    });
    r
}

const RING_CLAUSES: [&str; 3] = [
    "ring.required.exact",
    "ring.required.preferred",
    "ring.no-excess",
];

#[test]
fn the_ring_checks_judge_recorded_runs_against_the_measured_table() {
    let steady = recorded("steady-state.json.gz");
    let mut judged = steady.clone();
    judged.plan.measured = host_measurement(&steady);
    assert!(matches!(judged.plan.measured, Measurement::Found(_)));
    for clause in RING_CLAUSES {
        let (v, text) = verdict(&judged, clause);
        assert_eq!(v, Verdict::Pass, "{clause}: {text}");
        assert!(
            text.contains("measured"),
            "{clause} must name the table: {text}"
        );
    }
    // cap_bpf out of the bounding set: the measurement left is {cap_sys_admin}, which the
    // reference uses.
    let fallback = recorded("sys-admin-fallback.json.gz");
    let mut judged = fallback.clone();
    judged.plan.measured = host_measurement(&fallback);
    match &judged.plan.measured {
        Measurement::Found(m) => {
            assert_eq!(m.minimal_sets, vec![CapSet::EMPTY.with(Cap::SYS_ADMIN)])
        }
        other => panic!("{other:?}"),
    }
    for clause in RING_CLAUSES {
        let (v, text) = verdict(&judged, clause);
        assert_eq!(v, Verdict::Pass, "{clause}: {text}");
    }
}

#[test]
fn a_ring_outside_the_measured_sets_fails() {
    let steady = recorded("steady-state.json.gz");
    let admin = CapSet::EMPTY.with(Cap::SYS_ADMIN);
    let base: CapSet = [Cap::BPF, Cap::PERFMON].into_iter().collect();
    // Had the kernel needed only cap_sys_admin, {cap_bpf, cap_perfmon} would be wrong and
    // both its capabilities excess.
    let only_admin = with_sets(&steady, vec![admin]);
    for clause in RING_CLAUSES {
        let (v, text) = verdict(&only_admin, clause);
        assert_eq!(v, Verdict::Fail, "{clause}: {text}");
    }
    let (_, text) = verdict(&only_admin, "ring.no-excess");
    assert!(
        text.contains("cap_perfmon") && text.contains("cap_bpf"),
        "{text}"
    );
    // {cap_bpf, cap_perfmon} measured but not preferred (listed second): exact and
    // no-excess hold, preferred does not.
    let second = with_sets(&steady, vec![admin, base]);
    assert_eq!(verdict(&second, "ring.required.exact").0, Verdict::Pass);
    assert_eq!(verdict(&second, "ring.no-excess").0, Verdict::Pass);
    assert_eq!(verdict(&second, "ring.required.preferred").0, Verdict::Fail);
}

#[test]
fn without_a_table_the_oracle_judges_and_the_verdict_says_so() {
    let mut steady = recorded("steady-state.json.gz");
    steady.plan.measured = Measurement::Missing {
        why: "no measured table for this kernel".into(),
    };
    for clause in RING_CLAUSES {
        let (v, text) = verdict(&steady, clause);
        assert_eq!(v, Verdict::Pass, "{clause}: {text}");
        assert!(
            text.contains("oracle: no measured table for this kernel"),
            "{clause}: {text}"
        );
    }
}
