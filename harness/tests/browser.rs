//! The HTML report in a real browser: pages of recorded real runs (`fixtures/runs/`) rendered
//! by `capring report`, loaded in headless Chromium (Debian's `chromium`, driven over the
//! DevTools protocol), then checked for console errors and for their structure, not their
//! pixels:
//!
//! * one lane per thread of the run (the tids are read from the recorded timeline here, not
//!   from the renderer), inside the lane group of its process;
//! * ring segments drawn with a width, in the rings the run went through;
//! * one failure mark per failing clause, at the clause's moment: its `data-t-ns` is the
//!   check's time (or the end of the run, said with `data-at="end"`), and its drawn x is
//!   where the time axis puts that time (interpolated from the rendered ticks). For
//!   `late-bpf-call` the moment is also found in the timeline directly: the
//!   bpf(BPF_MAP_CREATE) the control makes from the Unprivileged ring, whose call mark must
//!   stand at the same x.
//!
//! Needs chromium, not root. Without chromium every test fails, saying how to install it.

#[path = "support/cdp.rs"]
mod cdp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use capring_judge::checks;
use capring_judge::mutants;
use capring_judge::run::RunRecord;
use capring_observe::timeline::{BpfCmd, Call};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capring-browser-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `capring report SOURCE --html DIR/report.html`; the page's path.
fn render(source: &Path, dir: &Path) -> PathBuf {
    let page = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_capring"))
        .arg("report")
        .arg(source)
        .arg("--html")
        .arg(&page)
        .args(["--color", "never"])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "capring report: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

/// Reads everything the checks below need from the loaded page, in one evaluation.
const PROBE: &str = r#"(() => {
  const num = (el, a) => Number(el.getAttribute(a));
  const mid = el => { const r = el.getBoundingClientRect(); return {x: r.x + r.width / 2, w: r.width, h: r.height}; };
  return {
    cells: [...document.querySelectorAll('td.v[data-clause]')].map(td => ({scenario: td.dataset.scenario, clause: td.dataset.clause, label: td.dataset.label})),
    clauses: [...document.querySelectorAll('details.clause')].map(d => ({id: d.id, text: d.textContent})),
    timelines: [...document.querySelectorAll('svg.timeline')].map(svg => ({
      scenario: svg.dataset.scenario, end: num(svg, 'data-end-ns'),
      lanes: [...svg.querySelectorAll('g.lane')].map(l => ({
        pid: num(l, 'data-pid'), tid: num(l, 'data-tid'), process: num(l.closest('g.process'), 'data-pid'),
        segs: [...l.querySelectorAll('rect.seg')].map(r => ({ring: r.dataset.ring, start: num(r, 'data-start-ns'), end: num(r, 'data-end-ns'), ...mid(r)}))})),
      marks: [...svg.querySelectorAll('g.mark')].map(m => ({t: num(m, 'data-t-ns'), tid: num(m, 'data-tid'), cls: m.getAttribute('class'), ...mid(m)})),
      ticks: [...svg.querySelectorAll('g.tick')].map(t => ({t: num(t, 'data-t-ns'), ...mid(t.querySelector('line'))})),
      failures: [...svg.querySelectorAll('g.failure')].map(f => ({clause: f.dataset.clause, t: num(f, 'data-t-ns'), at: f.dataset.at, ...mid(f.querySelector('line'))})),
    })),
    load_ms: performance.getEntriesByType('navigation')[0].loadEventEnd,
  };
})()"#;

/// Loads a page in a fresh headless Chromium; returns the probe's answer and the console
/// problems.
fn load(page: &Path, dir: &Path) -> (Value, Vec<String>) {
    let mut browser = cdp::Cdp::launch(&cdp::chromium(), &dir.join("chromium-profile"));
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let session = browser.open(&url);
    let probe = browser.eval(&session, PROBE);
    (probe, browser.console_problems())
}

fn runs(dir: &str) -> Vec<RunRecord> {
    let path = root().join("fixtures/runs").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    files.iter().map(|p| RunRecord::load(p).unwrap()).collect()
}

/// tid → pid of every thread the recorded timeline names (acting or listed).
fn threads_of(rec: &RunRecord) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for e in &rec.observation.timeline.entries {
        out.entry(i64::from(e.tid)).or_insert(i64::from(e.pid));
        for t in &e.threads {
            out.entry(i64::from(t.tid)).or_insert(i64::from(t.pid));
        }
    }
    out
}

fn timeline<'v>(probe: &'v Value, scenario: &str) -> &'v Value {
    probe["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no timeline for {scenario}"))
}

/// One lane per thread, each in its process's group, segments inside the run and drawn.
fn check_lanes(t: &Value, rec: &RunRecord) -> Vec<String> {
    let name = t["scenario"].as_str().unwrap();
    let mut problems = Vec::new();
    let lanes = t["lanes"].as_array().unwrap();
    let drawn: BTreeMap<i64, i64> = lanes
        .iter()
        .map(|l| (l["tid"].as_i64().unwrap(), l["process"].as_i64().unwrap()))
        .collect();
    if lanes.len() != drawn.len() {
        problems.push(format!("{name}: a thread has two lanes"));
    }
    if drawn != threads_of(rec) {
        problems.push(format!(
            "{name}: lanes {drawn:?} are not the threads of the timeline {:?}",
            threads_of(rec)
        ));
    }
    let end = t["end"].as_u64().unwrap();
    for s in lanes.iter().flat_map(|l| l["segs"].as_array().unwrap()) {
        let (a, b) = (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap());
        if a > b || b > end || s["w"].as_f64().unwrap() < 0.5 || s["h"].as_f64().unwrap() < 1.0 {
            problems.push(format!("{name}: segment {s} is not drawn within the run"));
        }
    }
    problems
}

/// The rings a lane shows, over the whole timeline.
fn rings(t: &Value) -> BTreeSet<String> {
    t["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["segs"].as_array().unwrap())
        .map(|s| s["ring"].as_str().unwrap().to_string())
        .collect()
}

/// The x the time axis gives `t_ns`, from the first and last rendered ticks.
fn axis_x(t: &Value, t_ns: u64) -> f64 {
    let ticks = t["ticks"].as_array().unwrap();
    let (a, b) = (&ticks[0], &ticks[ticks.len() - 1]);
    let (ta, tb) = (a["t"].as_f64().unwrap(), b["t"].as_f64().unwrap());
    let (xa, xb) = (a["x"].as_f64().unwrap(), b["x"].as_f64().unwrap());
    xa + (xb - xa) * (t_ns as f64 - ta) / (tb - ta)
}

/// The failure marks are the failing clauses, at the checks' moments, drawn there.
fn check_failures(t: &Value, rec: &RunRecord) -> Vec<String> {
    let name = t["scenario"].as_str().unwrap();
    let end = t["end"].as_u64().unwrap();
    let mut want = BTreeMap::new();
    for clause in &rec.plan.scenario.clauses {
        let c = checks::check(clause, rec);
        if c.verdict.is_failure() {
            want.insert(clause.clone(), c.at_ns);
        }
    }
    let marks = t["failures"].as_array().unwrap();
    let got: BTreeSet<String> = marks
        .iter()
        .map(|f| f["clause"].as_str().unwrap().to_string())
        .collect();
    let mut problems = Vec::new();
    if got != want.keys().cloned().collect() || marks.len() != want.len() {
        problems.push(format!(
            "{name}: failure marks {got:?}, failing clauses {:?}",
            want.keys()
        ));
    }
    for f in marks {
        let clause = f["clause"].as_str().unwrap();
        let Some(at) = want.get(clause) else { continue };
        let (t_ns, place) = (f["t"].as_u64().unwrap(), f["at"].as_str().unwrap());
        let expected = (at.unwrap_or(end), if at.is_some() { "time" } else { "end" });
        if (t_ns, place) != expected {
            problems.push(format!(
                "{name} {clause}: marked at {t_ns} ({place}), failed at {expected:?}"
            ));
        }
        let (x, ax) = (f["x"].as_f64().unwrap(), axis_x(t, t_ns));
        if (x - ax).abs() > 1.0 {
            problems.push(format!(
                "{name} {clause}: drawn at x={x:.1}, the axis puts {t_ns} ns at {ax:.1}"
            ));
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn reference_full_run_page() {
    let dir = scratch("reference");
    let page = render(&root().join("fixtures/runs/reference"), &dir);
    let (probe, console) = load(&page, &dir);
    assert_none(console);
    let records = runs("reference");
    let cells = probe["cells"].as_array().unwrap();
    let judged: usize = records.iter().map(|r| r.plan.scenario.clauses.len()).sum();
    assert_eq!(
        cells.len(),
        judged,
        "one matrix cell per (scenario, clause)"
    );
    let ids: BTreeSet<&str> = probe["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    for c in cells {
        let id = format!("clause-{}", c["clause"].as_str().unwrap());
        assert!(ids.contains(id.as_str()), "no SPEC text for {id}");
    }
    let spec = capring_spec::clauses::all();
    for c in probe["clauses"].as_array().unwrap() {
        let clause = spec
            .iter()
            .find(|s| format!("clause-{}", s.id) == c["id"])
            .unwrap();
        assert!(
            c["text"].as_str().unwrap().contains(&clause.seed),
            "{} lacks its seed sentence",
            clause.id
        );
    }
    let mut problems = Vec::new();
    for rec in &records {
        let t = timeline(&probe, &rec.plan.scenario.name);
        problems.extend(check_lanes(t, rec));
        problems.extend(check_failures(t, rec));
    }
    assert_none(problems);
    // The reference goes Privileged → Required → Unprivileged; under bypass it keeps E = P.
    let steady = rings(timeline(&probe, "steady-state"));
    for ring in ["privileged", "required", "unprivileged"] {
        assert!(
            steady.contains(ring),
            "steady-state shows no {ring} segment: {steady:?}"
        );
    }
    assert_eq!(
        rings(timeline(&probe, "bypass-flag")),
        BTreeSet::from(["bypass".to_string()])
    );
    eprintln!(
        "reference page: {} bytes, load event after {:.0} ms",
        std::fs::metadata(&page).unwrap().len(),
        probe["load_ms"].as_f64().unwrap()
    );
}

/// A failing control's page: every failing clause marked at its moment.
fn control_page(name: &str) -> (Value, RunRecord) {
    let dir = scratch(name);
    let source = root().join(format!("fixtures/runs/controls/{name}.json.gz"));
    let page = render(&source, &dir);
    let (probe, console) = load(&page, &dir);
    assert_none(console);
    let rec = RunRecord::load(&source).unwrap();
    let t = timeline(&probe, name);
    let mut problems = check_lanes(t, &rec);
    problems.extend(check_failures(t, &rec));
    assert_none(problems);
    // The catalog of controls says which clauses this one must fail.
    let list = mutants::load(&root().join("fixtures/mutants/mutants.toml")).unwrap();
    let m = list.iter().find(|m| m.name == name).unwrap();
    let marked: BTreeSet<&str> = t["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["clause"].as_str().unwrap())
        .collect();
    for clause in std::iter::once(&m.expected_clause).chain(m.also_fails.iter().map(|a| &a.clause))
    {
        if rec.plan.scenario.clauses.contains(clause) {
            assert!(
                marked.contains(clause.as_str()),
                "{name}: {clause} is not marked ({marked:?})"
            );
        }
    }
    (probe.clone(), rec)
}

#[test]
fn late_bpf_call_is_marked_at_the_call() {
    let (probe, rec) = control_page("late-bpf-call");
    let t = timeline(&probe, "late-bpf-call");
    // The control's one late call, found in the timeline itself: a BPF_MAP_CREATE made with
    // nothing effective (the loader's own probes at start-up are made with E = P).
    let late: Vec<u64> = rec
        .observation
        .timeline
        .calls()
        .filter(|(e, c, _, _)| {
            matches!(c, Call::Bpf { cmd, .. } if *cmd == BpfCmd::MAP_CREATE)
                && e.own().is_some_and(|t| t.effective.is_empty())
        })
        .map(|(e, ..)| e.t_ns)
        .collect();
    assert_eq!(
        late.len(),
        1,
        "the control makes one BPF_MAP_CREATE with E = ∅: {late:?}"
    );
    let f = t["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["clause"] == "syscalls.privileged-in-ring")
        .expect("syscalls.privileged-in-ring is marked");
    assert_eq!(f["t"].as_u64(), Some(late[0]), "marked at the late call");
    let call = t["marks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["t"].as_u64() == Some(late[0]) && m["cls"].as_str().unwrap().contains("privileged")
        })
        .expect("the late call has a privileged-call mark");
    let (fx, cx) = (f["x"].as_f64().unwrap(), call["x"].as_f64().unwrap());
    assert!(
        (fx - cx).abs() <= 1.0,
        "failure at x={fx:.1}, the call at x={cx:.1}"
    );
}

#[test]
fn never_drops_marks_every_failure() {
    let (probe, _) = control_page("never-drops");
    let t = timeline(&probe, "never-drops");
    assert!(t["failures"].as_array().unwrap().len() >= 5);
    assert_eq!(
        rings(t),
        BTreeSet::from(["privileged".to_string()]),
        "E = P all along"
    );
}

/// The console check can fail: a page that loads something is caught by the page's own
/// Content-Security-Policy and reported.
#[test]
fn console_problems_are_caught() {
    let dir = scratch("console");
    let page = render(
        &root().join("fixtures/runs/controls/help-misses-last-cap.json.gz"),
        &dir,
    );
    let html = std::fs::read_to_string(&page).unwrap();
    let broken = html.replacen(
        "</head>",
        r#"<link rel="stylesheet" href="https://example.invalid/x.css"></head>"#,
        1,
    );
    assert_ne!(broken, html);
    std::fs::write(&page, broken).unwrap();
    let (_, console) = load(&page, &dir);
    assert!(
        console.iter().any(|c| c.contains("example.invalid")),
        "the blocked stylesheet is not reported: {console:?}"
    );
}
