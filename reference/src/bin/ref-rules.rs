//! `ref-rules`: the reference rules engine; see `capring_reference::rules_engine`.
use capring_reference::{cli, rules_engine};

const PROGRAM: &str = "ref-rules";

fn main() {
    let args: rules_engine::Args = cli::parse(PROGRAM);
    std::process::exit(rules_engine::run(PROGRAM, args));
}
