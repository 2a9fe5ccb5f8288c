//! Differential fuzzing of the `--capabilities` grammar.
//!
//! Each input (three `CAPABILITIES_*` lines, then `--capabilities` values; see
//! `capring_grammar_model::differential`) goes through `capring_spec::options` and through
//! the independent model written from SPEC.md. They must agree on accept/reject and on the
//! resolved help, bypass (and its source), add and drop sets; the accepted options then go
//! through the oracle, whose rings must keep SPEC.md's invariants. Any panic on the way is a
//! crash too. `cargo xtask fuzz` saves crashes under `fuzz/regressions/`, where a normal test
//! replays them through the same check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = capring_grammar_model::differential::check_bytes(data) {
        panic!("{disagreement}");
    }
});
