//! The HTML report: one self-contained page (`check --html`, `report DIR --html`,
//! `observe --html`).
//!
//! Why a page and not only text: a ring violation is a story in time (which thread held
//! which capability, when, around which call), and people debugging privilege dropping
//! would rather see it. The page holds the verdict matrix (scenario × clause, each clause's
//! SPEC.md text embedded), and per scenario an SVG timeline: one lane per thread grouped per
//! process, segments coloured by ring, marks for credential calls, privileged calls and
//! injected faults, and one mark per failing clause at the moment it failed.
//!
//! Self-contained on purpose: no network, no script, no font; a Content-Security-Policy
//! forbids loading anything, so a mistake shows up as a console error (which the browser
//! test looks for) rather than as a silent fetch. Hover texts are SVG `<title>` elements.
//! Markup goes through `maud`, which escapes everything a stranger's tracer can put in a
//! comm, an argument or an error message.
//!
//! The structure is an interface the browser test reads (`harness/tests/browser.rs`):
//! `svg.timeline[data-scenario][data-end-ns]`, `g.process[data-pid]`,
//! `g.lane[data-pid][data-tid]`, `rect.seg[data-ring][data-start-ns][data-end-ns]`,
//! `g.mark[data-t-ns][data-tid]`, `g.tick[data-t-ns]` and
//! `g.failure[data-clause][data-t-ns]` (with `data-at="end"` when the check named no moment).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use capring_judge::results::{ClauseResult, Report};
use capring_judge::run::RunRecord;
use capring_spec::clauses::{self, Clause};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::lanes::{failure_marks, FailureMark, Lane, Lanes, Mark, Ring};

/// Chromium set up to render these pages headless: as root, with no network of its own, no
/// first-run dialogs and no scrollbars, its state in `profile` (a fresh directory per run).
/// The browser test and `cargo xtask screenshots` both start it this way, so the pictures in
/// `docs/` show what the test checked.
pub fn headless_chromium(binary: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// What the page header says.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub title: String,
    pub tracer: String,
    pub kernel: String,
    pub feature_key: String,
    pub summary: Option<String>,
}

impl Meta {
    pub fn of_report(report: &Report) -> Meta {
        Meta {
            title: format!("capring report: {}", report.tracer),
            tracer: report.tracer.clone(),
            kernel: report.kernel.clone(),
            feature_key: report.feature_key.clone(),
            summary: Some(report.summary()),
        }
    }
}

/// One scenario's section: its timeline when it ran, else why not.
#[derive(Debug, Clone)]
pub struct ScenarioView {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) command: Vec<String>,
    pub(crate) exit: Option<String>,
    pub(crate) lanes: Option<Lanes>,
    pub(crate) note: Option<String>,
}

impl ScenarioView {
    /// A run's section; `name` is the scenario, or the run's own name when several runs of
    /// one scenario share a page (a directory of negative controls).
    pub fn of_record(name: &str, r: &RunRecord) -> ScenarioView {
        ScenarioView {
            name: name.to_string(),
            description: r.plan.scenario.description.clone(),
            command: r.plan.command.clone(),
            exit: Some(r.observation.exit.to_string()),
            lanes: Some(Lanes::of_record(r)),
            note: None,
        }
    }

    /// The section of a scenario that did not run, saying `why`.
    pub fn not_run(name: &str, description: &str, why: String) -> ScenarioView {
        ScenarioView {
            name: name.to_string(),
            description: description.to_string(),
            command: Vec::new(),
            exit: None,
            lanes: None,
            note: Some(why),
        }
    }
}

/// The whole page. `results` may be empty (`observe`): then there is no matrix.
pub(crate) fn page(meta: &Meta, results: &[ClauseResult], scenarios: &[ScenarioView]) -> String {
    let spec: Vec<Clause> = clauses::all();
    let used: Vec<&Clause> = spec
        .iter()
        .filter(|c| results.iter().any(|r| r.clause == c.id))
        .collect();
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy"
                    content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (meta.title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                (header(meta))
                (legend())
                @if !results.is_empty() {
                    (matrix(results, &used))
                }
                @for s in scenarios {
                    (scenario(s, results))
                }
                @if !used.is_empty() {
                    (clause_texts(&used))
                }
            }
        }
    };
    markup.into_string()
}

fn header(meta: &Meta) -> Markup {
    html! {
        header {
            h1 { (meta.title) }
            dl.meta {
                dt { "tracer" } dd { (meta.tracer) }
                dt { "kernel" } dd { (meta.kernel) }
                dt { "feature key" } dd { code { (meta.feature_key) } }
                dt { "capring" } dd { (env!("CARGO_PKG_VERSION")) }
                @if let Some(s) = &meta.summary {
                    dt { "summary" } dd.summary { (s) }
                }
            }
        }
    }
}

fn legend() -> Markup {
    html! {
        section.legend {
            @for r in Ring::ALL {
                span.key { svg width="14" height="10" { rect class={"seg ring-" (r.key())} width="14" height="10" {} } " " (r.label()) }
            }
            span.key { svg width="10" height="10" { path.credential d="M1 0 L9 0 L5 7 Z" {} } " credential call" }
            span.key { svg width="6" height="10" { rect.privileged x="2" width="2" height="10" {} } " privileged call" }
            span.key { svg width="10" height="10" { path.injected d="M1 1 L9 9 M9 1 L1 9" {} } " injected fault" }
            span.key { svg width="10" height="10" { line.failure x1="5" x2="5" y1="0" y2="10" {} } " failing clause" }
            p.hint { "Hover a segment or a mark for the exact sets (compact: all-{…} is every capability of the kernel but those)." }
        }
    }
}

/// A CSS class for a result label.
fn label_class(label: &str) -> &'static str {
    match label {
        "PASS" => "pass",
        "FAIL" => "fail",
        "XFAIL" => "xfail",
        "XPASS" => "xpass",
        _ => "na",
    }
}

/// The matrix's short mark for a result label (the cell's title says it in full).
fn label_mark(label: &str) -> &'static str {
    match label {
        "PASS" => "✓",
        "FAIL" => "✗",
        "XFAIL" => "(✗)",
        "XPASS" => "(✓)",
        _ => "·",
    }
}

/// Scenarios in the order the results name them.
fn scenario_order(results: &[ClauseResult]) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    for r in results {
        if !order.contains(&r.scenario.as_str()) {
            order.push(&r.scenario);
        }
    }
    order
}

fn matrix(results: &[ClauseResult], used: &[&Clause]) -> Markup {
    let cell = |s: &str, c: &str| results.iter().find(|r| r.scenario == s && r.clause == c);
    html! {
        section #matrix {
            h2 { "Verdicts" }
            p.hint { "✓ pass · ✗ fail · (✗) expected failure · (✓) unexpected pass · · not applicable. Hover a cell for expected → observed; a clause's name leads to its SPEC.md text, a scenario's to its timeline." }
            div.matrix-wrap {
                table.matrix {
                    thead { tr {
                        th { "scenario" }
                        @for c in used {
                            th.clause { a href={"#clause-" (c.id)} title=(c.text) { (c.id) } }
                        }
                    } }
                    tbody {
                        @for s in scenario_order(results) {
                            tr {
                                th.scenario { a href={"#scenario-" (s)} { (s) } }
                                @for c in used {
                                    @if let Some(r) = cell(s, &c.id) {
                                        td class={"v " (label_class(r.label()))}
                                            data-scenario=(s) data-clause=(c.id) data-label=(r.label())
                                            title=(cell_title(r)) { (label_mark(r.label())) }
                                    } @else {
                                        td.v.none {}
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cell_title(r: &ClauseResult) -> String {
    let mut t = format!("{} {}: {} [{}]", r.scenario, r.clause, r.label(), r.level);
    if !r.expected.is_empty() {
        let _ = write!(t, "\nexpected: {}", r.expected);
    }
    let _ = write!(t, "\nobserved: {}", r.observed);
    if let Some(x) = &r.expected_failure {
        let _ = write!(t, "\nexpected failure: {x}");
    }
    t
}

/// `+12.345 ms`.
fn ms(t_ns: u64) -> String {
    format!("+{:.3} ms", t_ns as f64 / 1e6)
}

fn scenario(s: &ScenarioView, results: &[ClauseResult]) -> Markup {
    let own: Vec<&ClauseResult> = results.iter().filter(|r| r.scenario == s.name).collect();
    let end = s.lanes.as_ref().map_or(0, |l| l.end_ns);
    let failures = failure_marks(own.iter().copied(), end);
    html! {
        section.scenario id={"scenario-" (s.name)} data-scenario=(s.name) {
            h2 { (s.name) }
            @if !s.description.is_empty() { p.description { (s.description) } }
            @if !s.command.is_empty() { p { "command: " code { (shell_words(&s.command)) } } }
            @if let Some(e) = &s.exit { p { "exit: " (e) } }
            @if let Some(n) = &s.note { p.note { (n) } }
            @if let Some(l) = &s.lanes {
                div.timeline-wrap { (timeline(&s.name, l, &failures)) }
            }
            @if !failures.is_empty() {
                table.failures {
                    tr { th { "clause" } th { "result" } th { "when" } th { "expected → observed" } }
                    @for f in &failures {
                        tr class=(label_class(f.label)) {
                            td { a href={"#clause-" (f.clause)} { (f.clause) } }
                            td { (f.label) }
                            td.when { (ms(f.t_ns)) @if f.at_end { br; small { "end of run: the check named no moment" } } }
                            td { (f.expected) " → " (f.observed) }
                        }
                    }
                }
            }
        }
    }
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./,:+@{}".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn clause_texts(used: &[&Clause]) -> Markup {
    html! {
        section #clauses {
            h2 { "Clauses (spec/SPEC.md)" }
            @for c in used {
                details.clause id={"clause-" (c.id)} open {
                    summary { code { (c.id) } " — " (c.level) @if c.strict { " (MUST in strict)" } " · " (c.section) }
                    p.seed { "Seed: " q { (c.seed) } }
                    p { (code_spans(&c.text)) }
                    @if let Some(x) = &c.consequence { p { em { "Consequence: " } (code_spans(x)) } }
                    @if let Some(x) = &c.tracee_difference { p { em { "Tracee: " } (code_spans(x)) } }
                }
            }
        }
    }
}

/// Markdown's `code` spans as `<code>`, the rest as text.
fn code_spans(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

// --- the SVG timeline -------------------------------------------------------------------

/// Left edge and width of the plot, and the width of the whole picture.
const X0: f64 = 270.0;
const PLOT_W: f64 = 900.0;
const WIDTH: f64 = 1190.0;
/// A failure label row, the axis band, a process heading, a lane and the gap under it.
const FAIL_ROW: f64 = 13.0;
const AXIS_H: f64 = 22.0;
const PROC_H: f64 = 17.0;
const LANE_H: f64 = 13.0;
const LANE_GAP: f64 = 4.0;

/// Maps times to x.
struct Scale {
    end_ns: u64,
}

impl Scale {
    fn x(&self, t_ns: u64) -> f64 {
        X0 + PLOT_W * (t_ns.min(self.end_ns) as f64 / self.end_ns.max(1) as f64)
    }
}

fn f(v: f64) -> String {
    format!("{v:.2}")
}

fn timeline(name: &str, lanes: &Lanes, failures: &[FailureMark]) -> Markup {
    let scale = Scale {
        end_ns: lanes.end_ns,
    };
    let axis_y = FAIL_ROW * failures.len() as f64 + AXIS_H;
    let mut y = axis_y + 6.0;
    let mut rows = Vec::new();
    for p in &lanes.processes {
        let top = y;
        y += PROC_H;
        let mut lane_ys = Vec::new();
        for _ in &p.lanes {
            lane_ys.push(y);
            y += LANE_H + LANE_GAP;
        }
        rows.push((p, top, lane_ys));
    }
    let height = y + 4.0;
    let lane_y = |tid: i32| {
        rows.iter()
            .flat_map(|(p, _, ys)| p.lanes.iter().zip(ys))
            .find(|(l, _)| l.tid == tid)
            .map(|(_, y)| *y)
    };
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(f(WIDTH)) height=(f(height))
            viewBox={"0 0 " (f(WIDTH)) " " (f(height))} data-scenario=(name) data-end-ns=(lanes.end_ns)
            role="img" aria-label={"capability timeline of " (name)} {
            (axis(&scale, axis_y, height))
            @for (p, top, ys) in &rows {
                g.process data-pid=(p.pid) {
                    text.process x="4" y=(f(top + 12.0)) { (process_heading(p)) }
                    @for (lane, ly) in p.lanes.iter().zip(ys) {
                        (lane_markup(lane, *ly, &scale, lanes))
                    }
                }
            }
            @for m in &lanes.marks {
                @if let Some(ly) = lane_y(m.tid) { (mark(m, ly, &scale, lanes)) }
            }
            @for (i, fm) in failures.iter().enumerate() {
                (failure(fm, FAIL_ROW * (i as f64 + 1.0), height, &scale))
            }
        }
    }
}

fn process_heading(p: &crate::lanes::ProcessLanes) -> String {
    let mut s = format!("pid {} {}", p.pid, p.comms.join(" → "));
    if let Some(t) = p.parent_tid {
        let _ = write!(s, " (from tid {t})");
    }
    if let Some(e) = p.exit {
        let _ = write!(s, ", {e}");
    }
    s
}

/// A round step giving about eight ticks.
fn tick_step(end_ns: u64) -> u64 {
    let raw = (end_ns / 8).max(1);
    let mag = 10u64.pow(raw.ilog10());
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10 * mag)
}

fn tick_label(t_ns: u64, step: u64) -> String {
    if step >= 1_000_000 {
        format!("{} ms", t_ns / 1_000_000)
    } else if step >= 1_000 {
        format!("{} µs", t_ns / 1_000)
    } else {
        format!("{t_ns} ns")
    }
}

fn axis(scale: &Scale, axis_y: f64, height: f64) -> Markup {
    let step = tick_step(scale.end_ns);
    let ticks: Vec<u64> = (0..=scale.end_ns / step).map(|i| i * step).collect();
    html! {
        g.axis {
            line.axis x1=(f(X0)) x2=(f(X0 + PLOT_W)) y1=(f(axis_y)) y2=(f(axis_y)) {}
            @for t in ticks {
                g.tick data-t-ns=(t) {
                    line x1=(f(scale.x(t))) x2=(f(scale.x(t))) y1=(f(axis_y - 3.0)) y2=(f(height)) {}
                    text x=(f(scale.x(t))) y=(f(axis_y - 6.0)) { (tick_label(t, step)) }
                }
            }
        }
    }
}

fn lane_markup(lane: &Lane, y: f64, scale: &Scale, lanes: &Lanes) -> Markup {
    let who = format!("pid {} tid {} ({})", lane.pid, lane.tid, lane.comm);
    html! {
        g.lane data-pid=(lane.pid) data-tid=(lane.tid) data-comm=(lane.comm)
            data-start-ns=(lane.start_ns) data-end-ns=(lane.end_ns) {
            text.lane x="16" y=(f(y + 10.0)) { "tid " (lane.tid) " " (lane.comm) }
            rect.life x=(f(scale.x(lane.start_ns))) y=(f(y)) height=(f(LANE_H))
                width=(f((scale.x(lane.end_ns) - scale.x(lane.start_ns)).max(1.0))) {
                title { (who) ", seen " (ms(lane.start_ns)) " → " (ms(lane.end_ns)) }
            }
            @for s in &lane.segments {
                rect class={"seg ring-" (s.ring.key())} data-ring=(s.ring.key())
                    data-start-ns=(s.start_ns) data-end-ns=(s.end_ns)
                    data-e=(lanes.set_text(s.sets.effective))
                    x=(f(scale.x(s.start_ns))) y=(f(y)) height=(f(LANE_H))
                    width=(f((scale.x(s.end_ns) - scale.x(s.start_ns)).max(1.0))) {
                    title {
                        (s.ring.label()) " ring, " (ms(s.start_ns)) " → " (ms(s.end_ns))
                        " (" (format!("{:.3}", (s.end_ns - s.start_ns) as f64 / 1e6)) " ms)\n"
                        (who) "\n" (s.sets.text(lanes.cap_last_cap))
                    }
                }
            }
        }
    }
}

fn mark(m: &Mark, y: f64, scale: &Scale, lanes: &Lanes) -> Markup {
    let x = scale.x(m.t_ns);
    let mut title = format!("{} pid {} tid {}: {}", ms(m.t_ns), m.pid, m.tid, m.text);
    if let Some(s) = &m.sets {
        let _ = write!(
            title,
            "\nsets after the call:\n{}",
            s.text(lanes.cap_last_cap)
        );
    }
    html! {
        g class={"mark " (m.kinds().join(" "))} data-t-ns=(m.t_ns) data-pid=(m.pid) data-tid=(m.tid)
            data-syscall=(m.syscall) {
            title { (title) }
            @if m.privileged {
                rect.privileged x=(f(x - 1.0)) y=(f(y - 1.0)) width="2" height=(f(LANE_H + 2.0)) {}
            }
            @if m.credential {
                path.credential d={"M" (f(x - 4.0)) " " (f(y - 3.0)) " L" (f(x + 4.0)) " " (f(y - 3.0)) " L" (f(x)) " " (f(y + 4.0)) " Z"} {}
            }
            @if m.injected {
                path.injected d={"M" (f(x - 4.0)) " " (f(y + 2.0)) " L" (f(x + 4.0)) " " (f(y + 10.0)) " M" (f(x + 4.0)) " " (f(y + 2.0)) " L" (f(x - 4.0)) " " (f(y + 10.0))} {}
            }
        }
    }
}

fn failure(fm: &FailureMark, label_y: f64, height: f64, scale: &Scale) -> Markup {
    let x = scale.x(fm.t_ns);
    let right = x > X0 + PLOT_W * 0.6;
    let when = if fm.at_end {
        format!(
            "{} (the check named no moment: marked at the end of the run)",
            ms(fm.t_ns)
        )
    } else {
        ms(fm.t_ns)
    };
    html! {
        g class={"failure " (label_class(fm.label))} data-clause=(fm.clause) data-t-ns=(fm.t_ns)
            data-label=(fm.label) data-at=(if fm.at_end { "end" } else { "time" }) {
            title { (fm.clause) " " (fm.label) " at " (when) "\nexpected: " (fm.expected) "\nobserved: " (fm.observed) }
            line.failure x1=(f(x)) x2=(f(x)) y1=(f(label_y + 2.0)) y2=(f(height)) {}
            circle.failure cx=(f(x)) cy=(f(label_y - 3.0)) r="3" {}
            text.failure x=(f(if right { x - 6.0 } else { x + 6.0 })) y=(f(label_y))
                text-anchor=(if right { "end" } else { "start" }) {
                (fm.clause) @if fm.at_end { " (end of run)" }
            }
        }
    }
}

const CSS: &str = r#"
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 1.2em 1.6em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 .4em; }
h2 { font-size: 1.2em; margin: 1.4em 0 .3em; border-bottom: 1px solid #ddd; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: .92em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: 0; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
.legend { margin: .8em 0; font-size: 13px; }
.legend .key { margin-right: 1.2em; white-space: nowrap; }
.legend svg { vertical-align: middle; }
.hint { color: #666; margin: .3em 0 0; }
.matrix-wrap, .timeline-wrap { overflow-x: auto; }
table.matrix { border-collapse: collapse; font-size: 11px; }
table.matrix th.clause { height: 13.5em; vertical-align: bottom; padding: 2px 1px; }
table.matrix th.clause a { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
table.matrix th.scenario { text-align: left; padding-right: .6em; white-space: nowrap; font-weight: normal; }
table.matrix td.v { text-align: center; padding: 1px 2px; min-width: 1.3em; border: 1px solid #e2e2e2; }
a { color: #0b57d0; text-decoration: none; } a:hover { text-decoration: underline; }
.pass { background: #e4f4e2; } .fail { background: #f8c6c6; font-weight: bold; }
.xfail { background: #fff0bf; } .xpass { background: #eed8f6; } td.na { color: #9a9a9a; }
table.failures { border-collapse: collapse; margin: .4em 0; font-size: 13px; }
table.failures td, table.failures th { border: 1px solid #e2e2e2; padding: 2px 6px; text-align: left; vertical-align: top; font-weight: normal; }
table.failures th { font-weight: bold; } table.failures td.when { white-space: nowrap; } table.failures small { color: #666; }
p.note { color: #8a5a00; }
details.clause { margin: .3em 0; } details.clause p { margin: .2em 0 .2em 1.2em; }
svg text { font: 11px ui-monospace, "DejaVu Sans Mono", Menlo, monospace; fill: #333; }
svg text.process { font-weight: bold; }
.ring-privileged { fill: #c44e52; } .ring-required { fill: #e5924f; } .ring-requested { fill: #d9c15b; }
.ring-unprivileged { fill: #55a868; } .ring-bypass { fill: #8172b3; } .ring-other { fill: #1b1b1b; }
rect.life { fill: #efefef; }
rect.seg:hover { stroke: #000; stroke-width: 1; }
g.axis line { stroke: #e4e4e4; } g.axis line.axis { stroke: #999; }
g.tick text { fill: #777; font-size: 10px; text-anchor: middle; }
path.credential { fill: #1f4e99; stroke: #fff; stroke-width: .6; }
rect.privileged { fill: #111; }
path.injected { stroke: #d40000; stroke-width: 2; fill: none; }
line.failure { stroke: #e6007e; stroke-width: 1.5; stroke-dasharray: 4 2; }
circle.failure { fill: #e6007e; }
text.failure { fill: #b0005f; font-weight: bold; }
g.failure.xfail line.failure { stroke: #c9a200; } g.failure.xfail circle.failure { fill: #c9a200; }
g.failure.xfail text.failure { fill: #8a6f00; }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(8_000_000_000), 1_000_000_000);
        assert_eq!(tick_step(1_700_000_000), 500_000_000);
        assert_eq!(tick_step(30_000), 5_000);
        assert_eq!(tick_label(2_000_000, 1_000_000), "2 ms");
        assert_eq!(tick_step(0), 1);
    }

    #[test]
    fn shell_words_quote_what_needs_it() {
        let w = |v: &[&str]| shell_words(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            w(&["ref-tracer", "--events", "execve,openat"]),
            "ref-tracer --events execve,openat"
        );
        assert_eq!(w(&["a b", "it's"]), r"'a b' 'it'\''s'");
    }
}
