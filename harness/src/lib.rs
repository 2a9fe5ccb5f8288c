//! capring harness library: launching and observing tracers under test.
//!
//! * [`launch`]: what to run ([`LaunchSpec`]), injected [`Faults`], how it ended ([`ExitInfo`]).
//! * [`observer`]: [`run`] a command under ptrace and get its capability [`Timeline`].
//! * [`timeline`]: the timeline data, helpers and human rendering.
//! * [`profile`], [`scenario`]: how to drive a tracer, and under which conditions.
//! * [`run`], [`checks`], [`report`], [`check_cmd`]: run scenarios, judge clauses, report;
//!   [`schedule`] runs them side by side (`--jobs`).

pub mod check_cmd;
pub mod checks;
pub mod launch;
pub mod mutants;
pub mod observer;
pub mod profile;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod snapshot;
pub mod timeline;

pub use launch::{ExitInfo, Faults, LaunchSpec, ObserveError};
pub use observer::{run, Observation};
pub use timeline::{Entry, Kind, ThreadCaps, Timeline};
