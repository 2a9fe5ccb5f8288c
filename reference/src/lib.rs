//! # capring-reference
//!
//! The reference implementation of the capability rings: `ref-tracer` (a real eBPF tracer)
//! and `ref-rules` (a rules engine), both executing `capring-spec`'s oracle exactly, on every
//! thread. The harness must pass on it, and its mutants (`fixtures/mutants/`) must fail.

pub mod cli;
pub mod ebpf;
pub mod exe_hash;
pub mod kallsyms;
pub mod mutant;
pub mod rings;
pub mod rules;
pub mod tracer;
pub mod transport;
