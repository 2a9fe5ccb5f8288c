//! A [`Report`]'s four renderings: a human table, JSON (with timelines), JUnit XML for CI,
//! and TAP for VM consoles; [`print()`] writes the one asked for (`--format`, `--color`).
//!
//! JUnit goes through `quick-junit`, whose escaping is tested by nextest's users; what a
//! stranger's tracer prints (ANSI colours, NUL bytes) reaches the XML only after
//! [`xml_safe`], because XML 1.0 forbids most control characters even as references.

use std::fmt::Write as _;
use std::io::Write as _;

use capring_spec::clauses::Level;

use capring_judge::checks::Verdict;
use capring_judge::results::{ClauseResult, Report};

/// What is printed on standard output (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The human table ([`table`]).
    Human,
    /// The report as JSON, as `results.json` holds it.
    Json,
    /// JUnit XML ([`junit`]).
    Junit,
    /// TAP ([`tap`]).
    Tap,
}

/// Prints `report` on standard output in `format`, coloured as `color` says (the human
/// table only; `quiet`: only its failures that count).
pub fn print(
    report: &Report,
    format: Format,
    color: anstream::ColorChoice,
    quiet: bool,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Human => table(report, TableStyle { paint: true, quiet }),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Junit => junit(report),
        Format::Tap => tap(report),
    };
    let mut out = anstream::AutoStream::new(std::io::stdout().lock(), color);
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The human table of `report`, whole and without colour.
pub fn human(report: &Report) -> String {
    table(report, TableStyle::default())
}

/// The human table of `report`. `paint` colours the result column with ANSI sequences (the caller's
/// stream strips them where colour is off); `quiet` keeps only the rows of failures that
/// count, without the heading and the summary: nothing at all when everything passed.
pub fn table(report: &Report, style: TableStyle) -> String {
    let mut out = String::new();
    let rows: Vec<&ClauseResult> = report
        .results
        .iter()
        .filter(|r| !style.quiet || r.counts_as_failure())
        .collect();
    if !style.quiet {
        let _ = writeln!(
            out,
            "tracer {} on kernel {} ({})",
            report.tracer, report.kernel, report.feature_key
        );
    }
    let width = |f: fn(&ClauseResult) -> usize, min: usize| {
        rows.iter().map(|r| f(r)).max().unwrap_or(min).max(min)
    };
    let w_s = width(|r| r.scenario.len(), 8);
    let w_c = width(|r| r.clause.len(), 6);
    if !style.quiet {
        let _ = writeln!(
            out,
            "{:<w_s$}  {:<w_c$}  {:<6}  {:<6}  expected → observed",
            "scenario", "clause", "level", "result"
        );
    }
    for r in rows {
        let detail = if r.verdict == Verdict::NotApplicable {
            r.observed.clone()
        } else if let Some(x) = &r.expected_failure {
            format!("{} → {} (expected failure: {x})", r.expected, r.observed)
        } else {
            format!("{} → {}", r.expected, r.observed)
        };
        let label = format!("{:<6}", r.label());
        let label = if style.paint {
            let st = label_style(r.label());
            format!("{}{label}{}", st.render(), st.render_reset())
        } else {
            label
        };
        let _ = writeln!(
            out,
            "{:<w_s$}  {:<w_c$}  {:<6}  {label}  {detail}",
            r.scenario,
            r.clause,
            r.level.to_string(),
        );
    }
    if !style.quiet {
        let _ = writeln!(out, "{}", report.summary());
    }
    out
}

/// `report` in TAP version 13, one test point per (scenario, clause): N/A is a SKIP; expected
/// failures and failing SHOULD clauses are TODO; a failure carries a YAML block with
/// what was expected and observed.
pub fn tap(report: &Report) -> String {
    let mut out = String::from("TAP version 13\n");
    let _ = writeln!(out, "1..{}", report.results.len());
    for (i, r) in report.results.iter().enumerate() {
        let name = format!("{} {}", r.scenario, r.clause);
        let (ok, directive) = match r.label() {
            "PASS" => ("ok", String::new()),
            "N/A" => ("ok", format!(" # SKIP {}", r.observed)),
            "XFAIL" => (
                "not ok",
                format!(" # TODO {}", r.expected_failure.clone().unwrap_or_default()),
            ),
            "XPASS" => (
                "ok",
                format!(
                    " # TODO unexpectedly passed: {}",
                    r.expected_failure.clone().unwrap_or_default()
                ),
            ),
            _ if r.level == Level::Should => ("not ok", " # TODO SHOULD clause".into()),
            _ => ("not ok", String::new()),
        };
        let _ = writeln!(out, "{ok} {} - {name}{directive}", i + 1);
        if r.verdict.is_failure() {
            let _ = writeln!(
                out,
                "  ---\n  expected: {:?}\n  observed: {:?}\n  ...",
                r.expected, r.observed
            );
        }
    }
    out
}

/// `report` in JUnit XML: one test suite, one test case per (scenario, clause).
pub fn junit(report: &Report) -> String {
    use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(xml_safe(&format!(
        "{} @ {}",
        report.tracer, report.feature_key
    )));
    for r in &report.results {
        let status = match r.label() {
            "PASS" | "XPASS" => TestCaseStatus::success(),
            "N/A" => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(xml_safe(&r.observed));
                s
            }
            "XFAIL" => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(xml_safe(&format!(
                    "expected failure: {}",
                    r.expected_failure.as_deref().unwrap_or("")
                )));
                s
            }
            _ => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(format!("{} clause failed", r.level));
                s.set_description(xml_safe(&format!(
                    "expected: {}\nobserved: {}",
                    r.expected, r.observed
                )));
                s
            }
        };
        let mut case = TestCase::new(xml_safe(&format!("{} [{}]", r.clause, r.level)), status);
        case.set_classname(xml_safe(&r.scenario));
        suite.add_test_case(case);
    }
    let mut doc = JReport::new("capring");
    doc.add_test_suite(suite);
    doc.to_string()
        .unwrap_or_else(|e| format!("<!-- JUnit rendering failed: {e} -->\n"))
}

/// How [`table`] prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStyle {
    /// Colour the result column (ANSI).
    pub paint: bool,
    /// Only the failures that count.
    pub quiet: bool,
}

fn label_style(label: &str) -> anstyle::Style {
    use anstyle::{AnsiColor, Style};
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match label {
        "PASS" => fg(AnsiColor::Green),
        "FAIL" => fg(AnsiColor::Red).bold(),
        "XFAIL" => fg(AnsiColor::Yellow),
        "XPASS" => fg(AnsiColor::Magenta),
        _ => Style::new().dimmed(),
    }
}

/// Text fit for XML 1.0: ANSI escape sequences removed, other control characters (NUL, ESC,
/// …; not tab, newline or carriage return) replaced by U+FFFD.
pub fn xml_safe(text: &str) -> String {
    let stripped = strip_ansi(text);
    stripped
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                '\u{fffd}'
            }
            c => c,
        })
        .collect()
}

fn strip_ansi(text: &str) -> String {
    static ANSI: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = ANSI.get_or_init(|| {
        regex::Regex::new(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
            .expect("a valid pattern")
    });
    re.replace_all(text, "").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let r = |clause: &str, level, verdict, x: Option<&str>| ClauseResult {
            scenario: "s".into(),
            clause: clause.into(),
            level,
            verdict,
            expected_failure: x.map(Into::into),
            expected: "E={}".into(),
            observed: "E={cap_<x>}".into(),
            at_ns: None,
        };
        Report {
            tracer: "t".into(),
            feature_key: "k".into(),
            kernel: "6.1".into(),
            results: vec![
                r("a", Level::Must, Verdict::Pass, None),
                r("b", Level::Must, Verdict::Fail, None),
                r("c", Level::Should, Verdict::Fail, None),
                r("d", Level::Must, Verdict::Fail, Some("known")),
                r("e", Level::Must, Verdict::NotApplicable, None),
            ],
            interrupted: false,
        }
    }

    #[test]
    fn counts_and_renderings() {
        let rep = report();
        assert_eq!(rep.failed_must().len(), 1);
        assert_eq!(rep.failed_should().len(), 1);
        let tap = tap(&rep);
        assert!(tap.starts_with("TAP version 13\n1..5\n"));
        assert!(tap.contains("not ok 2 - s b\n"));
        assert!(tap.contains("# TODO known"));
        assert!(tap.contains("ok 5 - s e # SKIP"));
        let junit = junit(&rep);
        assert!(junit.contains("failures=\"2\""), "{junit}");
        assert!(junit.contains("E={cap_&lt;x&gt;}"), "{junit}");
        assert!(human(&rep).contains("XFAIL"));
    }

    #[test]
    fn table_colour_and_quiet() {
        let rep = report();
        let plain = table(&rep, TableStyle::default());
        let painted = table(
            &rep,
            TableStyle {
                paint: true,
                quiet: false,
            },
        );
        assert!(!plain.contains('\x1b'));
        assert!(painted.contains("\x1b[1m\x1b[31mFAIL"), "{painted:?}");
        assert_eq!(strip_ansi(&painted), plain);
        let quiet = table(
            &rep,
            TableStyle {
                paint: false,
                quiet: true,
            },
        );
        // b (MUST) and c (SHOULD) fail and count; d is an expected failure.
        let rows: Vec<&str> = quiet.lines().collect();
        assert_eq!(rows.len(), 2, "{quiet}");
        let first_words = |r: &str| r.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(first_words(rows[0]), "s b", "{quiet}");
        assert_eq!(first_words(rows[1]), "s c", "{quiet}");
        let mut passing = report();
        passing.results.retain(|r| !r.counts_as_failure());
        assert_eq!(
            table(
                &passing,
                TableStyle {
                    paint: true,
                    quiet: true
                }
            ),
            ""
        );
    }

    /// What a stranger's tracer prints ends up in the report; the XML must stay well formed
    /// for a strict parser (CI reporters reject the whole file otherwise).
    #[test]
    fn junit_survives_hostile_output() {
        let mut rep = report();
        rep.results[1].observed =
            "\x1b[31mred\x1b[0m \0 NUL \x07 bell \x1b]0;title\x07 ]]> </failure> & \u{fffe}".into();
        rep.results[1].scenario = "a\x1bb".into();
        rep.tracer = "<tracer \"x\">".into();
        let junit = junit(&rep);
        let doc = roxmltree::Document::parse(&junit).unwrap_or_else(|e| panic!("{e}: {junit}"));
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .expect("a failure element");
        let text = failure.text().unwrap_or_default();
        assert!(text.contains("red") && !text.contains('\x1b'), "{text:?}");
        assert!(text.contains("</failure> &"), "{text:?}");
        assert!(!junit.contains('\0'));
        // Without the cleaning the same document is rejected.
        assert!(roxmltree::Document::parse("<a>\x1b</a>").is_err());
    }
}
