//! `ref-rules-mutant`: the reference rules engine with ONE deliberate fault, chosen by
//! `CAPRING_MUTANT` (see `capring_reference::faults`). A negative control for the harness:
//! never use it for detection. Built only with the cargo feature `faults`.
use capring_reference::faults::{self, Target};
use capring_reference::{cli, rules_engine};

const PROGRAM: &str = "ref-rules-mutant";

fn main() {
    let args: rules_engine::Args = cli::parse(PROGRAM);
    faults::select(PROGRAM, Target::Rules);
    std::process::exit(rules_engine::run(PROGRAM, args));
}
