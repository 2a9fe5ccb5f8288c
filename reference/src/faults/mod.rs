//! The one seam through which the negative controls' faults enter the reference.
//!
//! Why: the suite proves that each check can fail by running the reference with one
//! deliberate fault (`fixtures/mutants/mutants.toml`). Those faults must not live in the
//! production binaries, not even as dead branches. So the production code only calls the
//! named hook points below, at the places where a real tracer author could go wrong, and:
//!
//! * without the cargo feature `faults` (`ref-tracer`, `ref-rules`) every hook is an empty
//!   `#[inline(always)]` function of `inert`: the compiler removes the calls, and no fault
//!   code, name or marker is in the binary (`tests/no_faults.rs` proves it on the built
//!   binaries);
//! * with it (`ref-tracer-mutant`, `ref-rules-mutant`, which `required-features` keeps out of
//!   ordinary builds) the hooks of `active` run the one fault chosen by `CAPRING_MUTANT`.
//!
//! Both modules have the same functions with the same signatures; a hook never changes
//! anything unless its fault was selected.

#[cfg(feature = "faults")]
mod active;
#[cfg(feature = "faults")]
pub use active::*;

#[cfg(not(feature = "faults"))]
mod inert;
// The hooks are `pub(crate)`: the seam is the crate's own, not part of its API.
#[cfg(not(feature = "faults"))]
pub(crate) use inert::*;
