//! capring-report: judged results and recorded runs, shown.
//!
//! Why a crate of its own: rendering is the last step of the data path before the binary.
//! It reads the results and run records of `capring-judge` and the timelines of
//! `capring-observe`; nothing below it depends on how a report looks, so a new format or a
//! change to the page touches this crate only.
//!
//! * [`render`]: a report as the human table, TAP, JUnit or JSON ([`render::Format`]).
//! * [`lanes`]: each thread's sets over time, cut by ring; drawn by [`html`] (the HTML
//!   report) and [`perfetto`] (Chrome Trace Event JSON).
//! * [`views`]: the pages and traces of a check's runs, of a directory's records, or of one
//!   observed command.
//! * [`outdir`]: the `--out` directory, written by `capring check` and read back by
//!   `capring report`.

pub mod html;
pub mod lanes;
pub mod outdir;
pub mod perfetto;
pub mod render;
pub mod views;
