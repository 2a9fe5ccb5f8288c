//! The results of judging: one [`ClauseResult`] per (scenario, clause), and the [`Report`]
//! that holds them, what `results.json` keeps.
//!
//! Why a module of its own: the producer of results ([`crate::catalog`]) and every
//! renderer (the human table, TAP, JUnit, the HTML page, Perfetto) depend on this data and
//! on nothing of each other, as cargo-nextest keeps its events below its reporters.

use capring_spec::clauses::Level;
use serde::{Deserialize, Serialize};

use crate::checks::Verdict;

/// The verdict of one clause in one scenario, after expected failures are applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClauseResult {
    /// The scenario's name (or a recorded run's, when `capring report` judges a directory of
    /// runs).
    pub scenario: String,
    /// The clause id (`ring.required.exact`).
    pub clause: String,
    /// MUST or SHOULD for this tracer (SHOULD clauses marked "MUST in strict" are MUST when
    /// the profile is strict).
    pub level: Level,
    /// What the check found, before expected failures are applied.
    pub verdict: Verdict,
    /// The profile expected this failure (reason given).
    pub expected_failure: Option<String>,
    /// What the clause expected, in capability names (empty for N/A).
    pub expected: String,
    /// What the run showed, naming pid/tid where it matters; for N/A, why there was nothing
    /// to judge.
    pub observed: String,
    /// When in the run the clause failed (ns since launch), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
}

impl ClauseResult {
    /// A failure that counts: not expected by the profile.
    pub fn counts_as_failure(&self) -> bool {
        self.verdict.is_failure() && self.expected_failure.is_none()
    }

    /// An expected failure that passed (the expectation file is stale).
    pub fn unexpected_pass(&self) -> bool {
        self.verdict == Verdict::Pass && self.expected_failure.is_some()
    }

    /// The result as reports print it: `PASS`, `FAIL`, `XFAIL` (an expected failure),
    /// `XPASS` (an expected failure that passed) or `N/A`. Unsupported counts as a failure.
    pub fn label(&self) -> &'static str {
        match (&self.verdict, self.expected_failure.is_some()) {
            (Verdict::Pass, false) => "PASS",
            (Verdict::Pass, true) => "XPASS",
            (Verdict::Fail | Verdict::Unsupported, false) => "FAIL",
            (Verdict::Fail | Verdict::Unsupported, true) => "XFAIL",
            (Verdict::NotApplicable, _) => "N/A",
        }
    }
}

/// Every clause result of one `capring check` (or `capring report`): what `results.json`
/// holds and every format renders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The profile's name.
    pub tracer: String,
    /// The environment's feature key (`EnvFacts::feature_key`), which names snapshots.
    pub feature_key: String,
    /// `uname -r` of the kernel the runs saw.
    pub kernel: String,
    /// One per (scenario, clause), in catalog order.
    pub results: Vec<ClauseResult>,
    /// capring was interrupted: the results are partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl Report {
    /// The MUST results that fail and were not expected to: what makes `capring check`
    /// exit 1.
    pub fn failed_must(&self) -> Vec<&ClauseResult> {
        self.results
            .iter()
            .filter(|r| r.counts_as_failure() && r.level == Level::Must)
            .collect()
    }

    /// The SHOULD results that fail and were not expected to (reported, never fatal).
    pub fn failed_should(&self) -> Vec<&ClauseResult> {
        self.results
            .iter()
            .filter(|r| r.counts_as_failure() && r.level == Level::Should)
            .collect()
    }

    /// How many results carry `label` (see [`ClauseResult::label`]).
    pub fn count(&self, label: &str) -> usize {
        self.results.iter().filter(|r| r.label() == label).count()
    }

    /// One line: the tracer and the count of each label (`… 12 PASS, 1 FAIL (1 MUST), …`).
    pub fn summary(&self) -> String {
        format!(
            "{}{}: {} PASS, {} FAIL ({} MUST), {} XFAIL, {} XPASS, {} N/A",
            self.tracer,
            if self.interrupted {
                " (INTERRUPTED: partial results)"
            } else {
                ""
            },
            self.count("PASS"),
            self.count("FAIL"),
            self.failed_must().len(),
            self.count("XFAIL"),
            self.count("XPASS"),
            self.count("N/A"),
        )
    }
}
