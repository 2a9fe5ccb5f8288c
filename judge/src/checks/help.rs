//! SPEC.md "Listing capabilities".

use capring_observe::timeline::Stream;
use capring_spec::caps::{Cap, CapSet, LAST_NAMED};
use capring_spec::oracle::Outcome;

use super::view::{names_cap, tokens, View};
use super::{judge, na, Check};
use crate::plan::Expectation;

pub fn lists_kernel_caps(v: &View) -> Check {
    if !matches!(v.plan().expectation, Expectation::Outcome(Outcome::Help)) {
        return na("not a help run");
    }
    let out: String =
        v.r.observation
            .stream(Stream::Stdout)
            .map(|l| format!("{}\n", l.text))
            .collect();
    let words = tokens(&out);
    let last = v.plan().facts.cap_last_cap;
    let missing: CapSet = CapSet::all_up_to(last)
        .iter()
        .filter(|c| !names_cap(&words, *c))
        .collect();
    let beyond: CapSet = (last.saturating_add(1)..=LAST_NAMED)
        .filter_map(Cap::new)
        .filter(|c| names_cap(&words, *c))
        .collect();
    let loaded = v.privileged_successes();
    let range = if last < LAST_NAMED {
        format!("nothing in {}..={LAST_NAMED}", last + 1)
    } else {
        "nothing beyond".to_string()
    };
    judge(
        v.exit_code() == Some(0) && missing.is_empty() && beyond.is_empty() && loaded == 0,
        format!("exit 0, capabilities 0..={last} listed, {range}, nothing loaded"),
        format!(
            "{}, missing {missing}, beyond the kernel {beyond}, {loaded} privileged operations",
            v.exit_text()
        ),
    )
}
