//! `ref-tracer-mutant`: the reference tracer with ONE deliberate fault, chosen by
//! `CAPRING_MUTANT` (see `capring_reference::faults`). A negative control for the harness:
//! never use it for tracing. Built only with the cargo feature `faults`.
use capring_reference::faults::{self, Target};
use capring_reference::{cli, tracer};

const PROGRAM: &str = "ref-tracer-mutant";

fn main() {
    let args = cli::parse::<tracer::Args>(PROGRAM);
    faults::select(PROGRAM, Target::Tracer);
    std::process::exit(tracer::run(args));
}
