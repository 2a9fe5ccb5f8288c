//! # capring-spec
//!
//! The Tracee "capability rings" page turned into code. This crate exists so that one
//! definition of the rules is shared by everything else: the reference tracer executes it,
//! the harness judges other tracers against it, and the VM runner snapshots it per kernel.
//!
//! It is pure: nothing here makes a system call unless the `probe` feature is enabled, and
//! even then only `facts::probe` reads the running system.
//!
//! * [`caps`]: the capability universe, names and sets.
//! * [`clauses`]: the clauses of `SPEC.md`, with stable ids.
//! * [`options`]: the `--capabilities` grammar and the `CAPABILITIES_*` environment.
//! * [`catalog`]: the event catalog (which capability each event needs, and why).
//! * [`facts`]: environment facts the rings depend on (probed features, not versions).
//! * [`oracle`]: from options, events and facts, the four rings and the expected outcome.
//! * [`sys`]: one thread's capability state from `/proc`, `cap_last_cap`, syscall and errno
//!   names, the kernel's BPF program list (the readers need the `probe` feature).

pub mod caps;
pub mod catalog;
pub mod clauses;
pub mod facts;
pub mod options;
pub mod oracle;
pub mod sys;
