//! The measured tables, shown: the human table `capring minimize` prints and writes next to
//! the JSON, and the tables' file names under `snapshots/minimal-sets/`. The data and how a
//! check finds its measurement are in [`crate::measured`].

use capring_observe::timeline::compact;
use capring_spec::caps::CapSet;

use crate::measured::{EventSetResult, Prediction, Table};

/// The snapshot file name of a table: `<tracer>@<label>.json` (`label`: the feature key,
/// `vm-<kernel>.<feature key>` for VM snapshots).
pub fn file_name(tracer: &str, label: &str) -> String {
    format!("{tracer}@{label}.json")
}

fn sets_text(sets: &[CapSet], last: u8) -> String {
    if sets.is_empty() {
        return "none".into();
    }
    sets.iter()
        .map(|s| compact(*s, last))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn opt_set(s: Option<CapSet>, last: u8) -> String {
    s.map_or("-".into(), |s| compact(s, last))
}

fn none_if_empty(s: CapSet, last: u8) -> String {
    if s.is_empty() {
        "none".into()
    } else {
        compact(s, last)
    }
}

impl Table {
    /// The human table: one block per event set.
    pub fn human(&self) -> String {
        let last = self.facts.cap_last_cap;
        let mut out = format!(
            "{}: minimal capability sets on {} ({}), {}, {} event lines per run\n",
            self.tracer,
            self.kernel,
            self.feature_key,
            self.mode.describe(),
            self.lines
        );
        for e in &self.entries {
            out.push('\n');
            out.push_str(&entry_text(e, last));
        }
        out
    }
}

/// One `  key            value` line of the human table.
fn line(out: &mut String, k: &str, v: String) {
    out.push_str(&format!("  {k:<16}{v}\n"));
}

fn entry_text(e: &EventSetResult, last: u8) -> String {
    let mut out = format!("{}\n", e.events.join("+"));
    if let Some(f) = &e.failed {
        line(&mut out, "not measured", f.clone());
        return out;
    }
    let scope = if e.exhaustive {
        "all of them".to_string()
    } else {
        format!(
            "not exhaustive: {}",
            e.stopped.as_deref().unwrap_or("stopped")
        )
    };
    line(
        &mut out,
        "minimal sets",
        format!("{} ({scope})", sets_text(&e.minimal_sets, last)),
    );
    line(&mut out, "preferred", opt_set(e.preferred(), last));
    line(
        &mut out,
        "searched in",
        format!(
            "{}{}",
            compact(e.universe, last),
            e.universe_note
                .as_deref()
                .map_or(String::new(), |n| format!(" ({n})"))
        ),
    );
    let observed = match (&e.observed, &e.observed_note) {
        (Some(s), _) => compact(*s, last),
        (None, Some(n)) => format!("- ({n})"),
        (None, None) => "-".into(),
    };
    line(&mut out, "observed ring", observed);
    if let (Some(o), Some(p)) = (e.observed, e.preferred()) {
        if o != p {
            line(
                &mut out,
                "should be",
                format!(
                    "{} (the preferred minimal set: the Required ring to use on this kernel)",
                    compact(p, last)
                ),
            );
        }
    }
    compared_text(&mut out, e, last);
    out
}

/// The oracle, missing and too permissive, Requested needs and cost.
fn compared_text(out: &mut String, e: &EventSetResult, last: u8) {
    let oracle = |p: &Prediction| match (&p.required, &p.note) {
        (Some(s), _) => compact(*s, last),
        (None, Some(n)) => format!("cannot run: {n}"),
        (None, None) => "-".into(),
    };
    let mut predicted = oracle(&e.oracle);
    if let Some(p) = &e.oracle_without_cap_bpf {
        predicted.push_str(&format!("; without cap_bpf: {}", oracle(p)));
    }
    if let Some(agrees) = e.oracle_agrees() {
        predicted.push_str(if agrees { " (agrees)" } else { " (DISAGREES)" });
    }
    line(out, "oracle", predicted);
    line(out, "missing", none_if_empty(e.missing, last));
    line(out, "too permissive", none_if_empty(e.too_permissive, last));
    if e.observed_sufficient == Some(false) {
        line(
            out,
            "insufficient",
            "the observed ring holds no minimal set".into(),
        );
    }
    for r in &e.requested {
        line(
            out,
            "requested",
            format!(
                "{} ({}) with {}: {:?}: {}",
                r.operation, r.event, r.capability, r.verdict, r.detail
            ),
        );
    }
    if !e.went_without.is_empty() {
        line(
            out,
            "went without",
            e.went_without
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let wall = e
        .cost
        .wall_s
        .map_or(String::new(), |w| format!(", {w:.1} s"));
    line(
        out,
        "cost",
        format!(
            "{} runs ({} search answers inferred, budget {}){wall}",
            e.cost.runs, e.cost.inferred, e.cost.max_runs
        ),
    );
}
