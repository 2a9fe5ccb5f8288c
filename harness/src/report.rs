//! Results and their four renderings: a human table, JSON (with timelines), JUnit XML for
//! CI, and TAP for VM consoles.

use std::fmt::Write as _;

use capring_spec::clauses::Level;
use serde::Serialize;

use crate::checks::Verdict;

/// The verdict of one clause in one scenario, after expected failures are applied.
#[derive(Debug, Clone, Serialize)]
pub struct ClauseResult {
    pub scenario: String,
    pub clause: String,
    pub level: Level,
    pub verdict: Verdict,
    /// The profile expected this failure (reason given).
    pub expected_failure: Option<String>,
    pub expected: String,
    pub observed: String,
}

impl ClauseResult {
    /// A failure that counts: not expected by the profile.
    pub fn counts_as_failure(&self) -> bool {
        self.verdict == Verdict::Fail && self.expected_failure.is_none()
    }

    /// An expected failure that passed (the expectation file is stale).
    pub fn unexpected_pass(&self) -> bool {
        self.verdict == Verdict::Pass && self.expected_failure.is_some()
    }

    pub fn label(&self) -> &'static str {
        match (&self.verdict, self.expected_failure.is_some()) {
            (Verdict::Pass, false) => "PASS",
            (Verdict::Pass, true) => "XPASS",
            (Verdict::Fail, false) => "FAIL",
            (Verdict::Fail, true) => "XFAIL",
            (Verdict::NotApplicable, _) => "N/A",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tracer: String,
    pub feature_key: String,
    pub kernel: String,
    pub results: Vec<ClauseResult>,
}

impl Report {
    pub fn failed_must(&self) -> Vec<&ClauseResult> {
        self.results
            .iter()
            .filter(|r| r.counts_as_failure() && r.level == Level::Must)
            .collect()
    }

    pub fn failed_should(&self) -> Vec<&ClauseResult> {
        self.results
            .iter()
            .filter(|r| r.counts_as_failure() && r.level == Level::Should)
            .collect()
    }

    pub fn count(&self, label: &str) -> usize {
        self.results.iter().filter(|r| r.label() == label).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {} PASS, {} FAIL ({} MUST), {} XFAIL, {} XPASS, {} N/A",
            self.tracer,
            self.count("PASS"),
            self.count("FAIL"),
            self.failed_must().len(),
            self.count("XFAIL"),
            self.count("XPASS"),
            self.count("N/A"),
        )
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tracer {} on kernel {} ({})",
            self.tracer, self.kernel, self.feature_key
        );
        let w_s = self
            .results
            .iter()
            .map(|r| r.scenario.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let w_c = self
            .results
            .iter()
            .map(|r| r.clause.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            out,
            "{:<w_s$}  {:<w_c$}  {:<6}  {:<6}  expected → observed",
            "scenario", "clause", "level", "result"
        );
        for r in &self.results {
            let detail = if r.verdict == Verdict::NotApplicable {
                r.observed.clone()
            } else if let Some(x) = &r.expected_failure {
                format!("{} → {} (expected failure: {x})", r.expected, r.observed)
            } else {
                format!("{} → {}", r.expected, r.observed)
            };
            let _ = writeln!(
                out,
                "{:<w_s$}  {:<w_c$}  {:<6}  {:<6}  {detail}",
                r.scenario,
                r.clause,
                r.level.to_string(),
                r.label()
            );
        }
        let _ = writeln!(out, "{}", self.summary());
        out
    }

    pub fn tap(&self) -> String {
        let mut out = String::from("TAP version 13\n");
        let _ = writeln!(out, "1..{}", self.results.len());
        for (i, r) in self.results.iter().enumerate() {
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
            if r.verdict == Verdict::Fail {
                let _ = writeln!(
                    out,
                    "  ---\n  expected: {:?}\n  observed: {:?}\n  ...",
                    r.expected, r.observed
                );
            }
        }
        out
    }

    pub fn junit(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let failures = self
            .results
            .iter()
            .filter(|r| r.counts_as_failure())
            .count();
        let skipped = self
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::NotApplicable)
            .count();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"capring\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            self.results.len()
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"{} @ {}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
            esc(&self.tracer),
            esc(&self.feature_key),
            self.results.len()
        );
        for r in &self.results {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{} [{}]\"",
                esc(&r.scenario),
                esc(&r.clause),
                r.level
            );
            match r.label() {
                "PASS" | "XPASS" => out.push_str("/>\n"),
                "N/A" => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        esc(&r.observed)
                    );
                }
                "XFAIL" => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"expected failure: {}\"/>\n    </testcase>",
                        esc(r.expected_failure.as_deref().unwrap_or(""))
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{} clause failed\">expected: {}\nobserved: {}</failure>\n    </testcase>",
                        r.level,
                        esc(&r.expected),
                        esc(&r.observed)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
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
        }
    }

    #[test]
    fn counts_and_renderings() {
        let rep = report();
        assert_eq!(rep.failed_must().len(), 1);
        assert_eq!(rep.failed_should().len(), 1);
        let tap = rep.tap();
        assert!(tap.starts_with("TAP version 13\n1..5\n"));
        assert!(tap.contains("not ok 2 - s b\n"));
        assert!(tap.contains("# TODO known"));
        assert!(tap.contains("ok 5 - s e # SKIP"));
        let junit = rep.junit();
        assert!(junit.contains("failures=\"2\""));
        assert!(junit.contains("E={cap_&lt;x&gt;}"));
        assert!(rep.human().contains("XFAIL"));
    }
}
