//! capring-judge: what a tracer must do under each scenario, and whether it did.
//!
//! Why a crate of its own: judging sits between observing (`capring-observe`, which it
//! drives) and reporting (`capring-report`, which shows its results). It reads profiles and
//! scenarios, plans runs, has them observed, judges every clause and measures minimal
//! capability sets; it renders no report and parses no command line, and Cargo refuses an
//! import from either layer above it.
//!
//! * [`profile`], [`scenario`]: how to drive a tracer, and under which conditions.
//! * [`measured`]: the measured minimal sets (`snapshots/minimal-sets/`), read.
//! * [`plan`]: a scenario resolved for a profile and this machine before launch, its
//!   measurement included; [`run`] executes a plan into a [`run::RunRecord`].
//! * [`checks`]: one function per clause of `spec/SPEC.md`, judging a record.
//! * [`catalog`]: plans, runs and judges the selected scenarios ([`schedule`] runs them side
//!   by side) into [`results`], the data every report renders.
//! * [`snapshot`]: a run's story, stable enough to snapshot per kernel.
//! * [`minimize`]: the minimal capability sets each event needs, measured on this kernel.
//! * [`mutants`]: the negative controls, each of which must fail by its clause.

pub mod catalog;
pub mod checks;
pub mod measured;
pub mod minimize;
pub mod mutants;
pub mod plan;
pub mod profile;
pub mod results;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod snapshot;
