//! # capring-reference
//!
//! The reference implementation of the capability rings: `ref-tracer` (a real eBPF tracer)
//! and `ref-rules` (a rules engine), both executing `capring-spec`'s oracle exactly, on every
//! thread. The harness must pass on it, and its mutants (`fixtures/mutants/`) must fail:
//! those are the same code with one fault each, entering only through [`faults`] and only
//! in binaries built with the cargo feature `faults`.

pub mod cli;
pub mod ebpf;
pub mod exe_hash;
pub mod faults;
pub mod kallsyms;
pub mod rings;
pub mod rules;
pub mod rules_engine;
pub mod tracer;
pub mod transport;
