//! capring-observe: launch a command and observe it, producing its typed capability
//! timeline.
//!
//! Why a crate of its own: observing is the bottom of capring's data path (spec → observe →
//! judge → report → the `capring` binary). It launches and watches any command and knows
//! nothing of profiles, scenarios, clauses or reports, so it can be read, tested and
//! changed alone, and Cargo refuses an import from a layer above it. A kernel-check
//! recorder (what the kernel decided for each privileged call, next to what the tracer
//! asked) will land here next, beside the ptrace observer.
//!
//! * [`launch`]: what to run ([`LaunchSpec`]: faults, bounding drops, a companion workload,
//!   when to stop), which lines are events, how it ended ([`ExitInfo`]).
//! * [`observer`]: [`run`] a command under ptrace and get its [`Observation`]: the
//!   capability [`Timeline`], its output and its exit.
//! * [`timeline`]: the typed timeline (calls, events, samples), helpers and rendering.
//! * [`interrupt`]: Ctrl-C and SIGTERM to capring, so that a run in progress ends cleanly.

pub mod interrupt;
pub mod launch;
pub mod observer;
pub mod timeline;

pub use launch::{ExitInfo, LaunchSpec, ObserveError};
pub use observer::{run, Observation};
pub use timeline::{Entry, Event, ThreadCaps, Timeline};
