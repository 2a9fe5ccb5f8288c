//! # capring-grammar-model
//!
//! One independent model of the `--capabilities` grammar and the `CAPABILITIES_*`
//! environment ([`grammar`]), written from `spec/SPEC.md` alone, and the differential check
//! that holds `capring-spec`'s parser and oracle to it ([`differential`]).
//!
//! Why a second implementation: `capring_spec::options` is what the reference tracer and the
//! harness both run, so testing it against itself (or the tracer against the functions the
//! tracer calls) can never fail for the right reason. The model is the independent side of
//! every grammar test: the fuzz target (`fuzz/`), the replay of saved fuzz inputs
//! (`tests/fuzz_regressions.rs`) and the `ref-tracer --print-rings` property
//! (`harness/tests/properties.rs`). There is deliberately only one model: where SPEC.md is
//! silent it documents its reading once (see [`grammar`]).

pub mod differential;
pub mod grammar;

#[cfg(test)]
mod tests {
    /// The model must not lean on the code it judges: its code (comments aside) names
    /// nothing outside `std` and itself.
    #[test]
    fn the_model_uses_only_std() {
        let code: Vec<&str> = include_str!("grammar.rs")
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//"))
            .collect();
        for line in &code {
            if let Some(path) = line.strip_prefix("use ") {
                assert!(
                    path.starts_with("std::") || path == "super::*;",
                    "grammar.rs imports something other than std: {line}"
                );
            }
            for foreign in ["capring_spec", "crate::", "differential"] {
                assert!(!line.contains(foreign), "grammar.rs uses {foreign}: {line}");
            }
        }
    }
}
