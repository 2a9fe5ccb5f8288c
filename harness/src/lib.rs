//! capring harness library: launching and observing tracers under test.
//!
//! * [`launch`]: what to run ([`LaunchSpec`]), which lines are events, how it ended
//!   ([`ExitInfo`]).
//! * [`observer`]: [`run`] a command under ptrace and get its capability [`Timeline`].
//! * [`timeline`]: the typed timeline (calls, events, samples), helpers and rendering.
//! * [`profile`], [`scenario`]: how to drive a tracer, and under which conditions.
//! * [`plan`]: a scenario resolved for a profile and this machine, before launch (pure), its
//!   measurement ([`measured`]: the measured tables, read) included.
//! * [`run`], [`checks`], [`catalog`]: execute plans, judge clauses, into [`results`];
//!   [`report`] and [`check_cmd`] show them; [`schedule`] runs them side by side
//!   (`--jobs`); [`interrupt`] handles Ctrl-C.
//! * [`lanes`]: each thread's sets over time, cut by ring; drawn by [`html`] (the HTML
//!   report) and [`perfetto`] (Chrome Trace Event JSON); [`report_cmd`] writes them and
//!   reports on an earlier `--out` directory.
//! * [`minimize`]: the minimal capability sets each event needs, measured on this kernel.

pub mod catalog;
pub mod check_cmd;
pub mod checks;
pub mod html;
pub mod interrupt;
pub mod lanes;
pub mod launch;
pub mod measured;
pub mod minimize;
pub mod mutants;
pub mod observer;
pub mod perfetto;
pub mod plan;
pub mod profile;
pub mod report;
pub mod report_cmd;
pub mod results;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod snapshot;
pub mod timeline;

pub use launch::{ExitInfo, LaunchSpec, ObserveError};
pub use observer::{run, Observation};
pub use timeline::{Entry, Event, ThreadCaps, Timeline};
