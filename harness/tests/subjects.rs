//! The third-party subjects (`fixtures/tracers/third-party/`, issue 8 item 5): real programs
//! with capability handling of their own, judged by capring clause by clause.
//!
//! Why two kinds of test: the expectations come from each program's behaviour (its strace
//! excerpt and SPEC.md), never from capring's output, so they are checked on their own first,
//! without root; then capring is run against them.
//!
//! * `expectations::NAME` (no root): every `[[expect]]` names a scenario of the catalog and one
//!   of that scenario's clauses, its `lines` are exact lines of `NAME.strace`, and every
//!   (scenario, clause) of the catalog has exactly one expectation, so they cannot go stale
//!   silently when the catalog changes. Every known disagreement of `subjects.toml` points at
//!   an expectation it differs from.
//! * `manifest` (no root): every profile in the directory is a listed subject.
//! * `subject::NAME::SCENARIO` (root, the subject's apt package): runs the scenario through
//!   capring's library and asserts every clause's verdict: the expectation, or for a known
//!   disagreement the verdict capring is recorded to give (a fix in capring then fails here and
//!   asks for the entry to be removed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use capring_judge::catalog::{check_programs, judge, run_scenario};
use capring_judge::checks::Verdict;
use capring_judge::profile::{ExpectedVerdict, Profile};
use capring_judge::results::ClauseResult;
use capring_judge::run::TracefsMount;
use capring_judge::scenario::{self, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};
use serde::Deserialize;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tracers/third-party")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    subject: Vec<Subject>,
    #[serde(default)]
    disagreement: Vec<Disagreement>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    profile: String,
    package: String,
    #[serde(default)]
    sysctl: BTreeMap<String, String>,
}

/// A kernel setting imposed for one run, restored when dropped (also when the trial fails).
struct Sysctl {
    path: PathBuf,
    old: String,
}

impl Sysctl {
    fn set(name: &str, value: &str) -> Result<Sysctl, Failed> {
        let path = Path::new("/proc/sys").join(name.replace('.', "/"));
        let old = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&path, value).map_err(|e| format!("setting {name} = {value}: {e}"))?;
        let guard = Sysctl { path, old };
        let now = std::fs::read_to_string(&guard.path).unwrap_or_default();
        if now.split_whitespace().ne(value.split_whitespace()) {
            return Err(format!("{name} stays {:?} after writing {value:?}", now.trim()).into());
        }
        Ok(guard)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, self.old.trim());
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disagreement {
    id: String,
    capring: String,
    should: String,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    subject: String,
    scenario: String,
    clause: String,
    capring: ExpectedVerdict,
}

fn manifest() -> Manifest {
    let path = dir().join("subjects.toml");
    let text = std::fs::read_to_string(&path).expect("subjects.toml is readable");
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The known disagreement about (subject, scenario, clause), if any: (its id, capring's verdict).
fn known<'m>(
    m: &'m Manifest,
    subject: &str,
    scenario: &str,
    clause: &str,
) -> Option<(&'m str, ExpectedVerdict)> {
    m.disagreement.iter().find_map(|d| {
        d.cases
            .iter()
            .find(|c| {
                (c.subject == subject || c.subject == "*")
                    && c.scenario == scenario
                    && c.clause == clause
            })
            .map(|c| (d.id.as_str(), c.capring))
    })
}

fn spelled(v: ExpectedVerdict) -> &'static str {
    match v {
        ExpectedVerdict::Pass => "pass",
        ExpectedVerdict::Fail => "fail",
        ExpectedVerdict::FailUnsupported => "fail-unsupported",
        ExpectedVerdict::NotApplicable => "n/a",
    }
}

fn as_expected(v: Verdict) -> ExpectedVerdict {
    match v {
        Verdict::Pass => ExpectedVerdict::Pass,
        Verdict::Fail => ExpectedVerdict::Fail,
        Verdict::Unsupported => ExpectedVerdict::FailUnsupported,
        Verdict::NotApplicable => ExpectedVerdict::NotApplicable,
    }
}

fn load(subject: &Subject) -> Result<Profile, Failed> {
    Profile::load(&dir().join(&subject.profile)).map_err(|e| e.to_string().into())
}

/// Problems with one expectation: its scenario, its clause and its cited lines.
fn expectation_problems(
    x: &capring_judge::profile::Expect,
    catalog: &[Scenario],
    strace: &BTreeSet<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let at = format!("{}/{}", x.scenario, x.clause);
    match catalog.iter().find(|s| s.name == x.scenario) {
        None => problems.push(format!("{at}: no scenario named {}", x.scenario)),
        Some(s) if !s.clauses.contains(&x.clause) => problems.push(format!(
            "{at}: scenario {} does not judge {}",
            x.scenario, x.clause
        )),
        Some(_) => {}
    }
    for line in &x.lines {
        if !strace.contains(line.as_str()) {
            problems.push(format!(
                "{at}: cites a line that is not in the strace excerpt: {line}"
            ));
        }
    }
    problems
}

fn expectations_trial(subject: Subject, m: Manifest) -> Result<(), Failed> {
    let profile = load(&subject)?;
    let strace_path = dir().join(subject.profile.replace(".toml", ".strace"));
    let text = std::fs::read_to_string(&strace_path)
        .map_err(|e| format!("{}: {e}", strace_path.display()))?;
    let strace: BTreeSet<&str> = text.lines().collect();
    let catalog = scenario::builtin();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(String, String), ExpectedVerdict> = BTreeMap::new();
    for x in &profile.expectations {
        problems.extend(expectation_problems(x, &catalog, &strace));
        if x.why.trim().is_empty() {
            problems.push(format!("{}/{}: no why", x.scenario, x.clause));
        }
        let key = (x.scenario.clone(), x.clause.clone());
        if seen.insert(key, x.verdict).is_some() {
            problems.push(format!("{}/{}: expected twice", x.scenario, x.clause));
        }
    }
    for s in &catalog {
        for c in &s.clauses {
            let key = (s.name.clone(), c.clone());
            match (seen.get(&key), known(&m, &profile.name, &s.name, c)) {
                (None, _) => problems.push(format!("{}/{c}: judged by the catalog, but no [[expect]]", s.name)),
                (Some(v), Some((id, capring))) if *v == capring => problems.push(format!(
                    "{}/{c}: disagreement {id} records capring saying {}, which is the expectation itself",
                    s.name,
                    spelled(capring)
                )),
                _ => {}
            }
        }
    }
    if subject.package.trim().is_empty() {
        problems.push("subjects.toml gives no apt package".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}:\n  {}", subject.profile, problems.join("\n  ")).into())
    }
}

/// Every profile next to subjects.toml is a subject, every subject a profile, and every
/// disagreement names a subject.
fn manifest_trial(m: Manifest) -> Result<(), Failed> {
    let listed: BTreeSet<String> = m.subject.iter().map(|s| s.profile.clone()).collect();
    let catalog = scenario::builtin();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(dir()).map_err(|e| e.to_string())? {
        let name = entry
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .to_string();
        let profile =
            name.ends_with(".toml") && !name.ends_with(".catalog.toml") && name != "subjects.toml";
        if profile && !listed.contains(&name) {
            problems.push(format!("{name} is not listed in subjects.toml"));
        }
    }
    let names: BTreeSet<String> = m
        .subject
        .iter()
        .filter_map(|s| load(s).ok().map(|p| p.name))
        .collect();
    for d in &m.disagreement {
        if d.capring.trim().is_empty() || d.should.trim().is_empty() {
            problems.push(format!(
                "disagreement {} does not say what capring does and should do",
                d.id
            ));
        }
        for c in d
            .cases
            .iter()
            .filter(|c| c.subject != "*" && !names.contains(&c.subject))
        {
            problems.push(format!(
                "disagreement {} names unknown subject {}",
                d.id, c.subject
            ));
        }
        let judged = |c: &Case| {
            catalog
                .iter()
                .any(|s| s.name == c.scenario && s.clauses.contains(&c.clause))
        };
        for c in d.cases.iter().filter(|c| !judged(c)) {
            problems.push(format!(
                "disagreement {} names {}/{}, which the catalog does not judge",
                d.id, c.scenario, c.clause
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn require_root() -> Result<(), Failed> {
    if !capring_spec::sys::is_root() {
        return Err("this test needs root (CI runs as root)".into());
    }
    Ok(())
}

/// The program from its apt package, the workload from the workspace, tracefs for tracepoints.
fn require_setup(subject: &Subject, profile: &Profile) -> Result<(), Failed> {
    if let Err(e) = profile.resolve_program(&profile.binary) {
        return Err(format!(
            "{}: {e}: install the Debian package {} (apt-get install {}; `cargo xtask test` does)",
            subject.profile, subject.package, subject.package
        )
        .into());
    }
    check_programs(profile)
        .map_err(|e| format!("{e}: build the workspace first (cargo build --workspace)"))?;
    let catalog = profile.catalog();
    let tracepoints = catalog
        .events
        .iter()
        .any(|e| catalog.attach_type(e).uses_perf);
    if tracepoints && !Path::new("/sys/kernel/tracing/events").is_dir() {
        return Err(format!(
            "{} attaches tracepoints, but tracefs is not mounted at /sys/kernel/tracing \
             (mount -t tracefs nodev /sys/kernel/tracing; `cargo xtask test` does)",
            profile.name
        )
        .into());
    }
    Ok(())
}

/// What the clause's verdict must be, and why (the expectation, or a known disagreement).
fn wanted(
    m: &Manifest,
    profile: &Profile,
    r: &ClauseResult,
) -> Result<(ExpectedVerdict, String), String> {
    let x = profile
        .expectations
        .iter()
        .find(|x| x.scenario == r.scenario && x.clause == r.clause)
        .ok_or_else(|| format!("{}/{}: no [[expect]]", r.scenario, r.clause))?;
    Ok(match known(m, &profile.name, &r.scenario, &r.clause) {
        Some((id, capring)) => (
            capring,
            format!(
                "known disagreement {id} (the expectation is {}: {}); if capring now agrees, remove \
                 the case from subjects.toml",
                spelled(x.verdict),
                x.why
            ),
        ),
        None => (x.verdict, x.why.clone()),
    })
}

fn scenario_trial(subject: Subject, s: Scenario, m: Manifest) -> Result<(), Failed> {
    require_root()?;
    let profile = load(&subject)?;
    require_setup(&subject, &profile)?;
    let _sysctls = subject
        .sysctl
        .iter()
        .map(|(k, v)| Sysctl::set(k, v))
        .collect::<Result<Vec<_>, _>>()?;
    let base = capring_spec::facts::probe().map_err(|e| format!("{e:#}"))?;
    let outcome = run_scenario(&profile, &s, &base, true);
    TracefsMount::restore();
    let mut wrong = Vec::new();
    for r in judge(&profile, &s, &outcome, &base) {
        let (want, why) = wanted(&m, &profile, &r)?;
        let got = as_expected(r.verdict);
        if got != want {
            wrong.push(format!(
                "{}: want {} ({why}); capring says {} (its check expected {}; observed {})",
                r.clause,
                spelled(want),
                spelled(got),
                r.expected,
                r.observed
            ));
        } else {
            println!("{}: {}", r.clause, spelled(got));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} {}:\n  {}", profile.name, s.name, wrong.join("\n  ")).into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let m = manifest();
    let mut trials = vec![{
        let m = m.clone();
        Trial::test("manifest", move || manifest_trial(m))
    }];
    for subject in &m.subject {
        let name = subject.profile.trim_end_matches(".toml").to_string();
        let (sub, man) = (subject.clone(), m.clone());
        trials.push(Trial::test(format!("expectations::{name}"), move || {
            expectations_trial(sub, man)
        }));
        for s in scenario::builtin() {
            let (sub, man) = (subject.clone(), m.clone());
            trials.push(Trial::test(
                format!("subject::{name}::{}", s.name),
                move || scenario_trial(sub, s, man),
            ));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
