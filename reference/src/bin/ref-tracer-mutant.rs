//! `ref-tracer-mutant`: the reference tracer with ONE deliberate fault, chosen by
//! `CAPRING_MUTANT` (see `capring_reference::mutant`). A negative control for the harness:
//! never use it for tracing.
use capring_reference::mutant::{self, Mutation};
use capring_reference::{cli, tracer};

const PROGRAM: &str = "ref-tracer-mutant";

fn main() {
    let args = cli::parse::<tracer::Args>(PROGRAM);
    let mutation: Mutation = match std::env::var(mutant::ENV) {
        Ok(name) => name.parse().unwrap_or_else(|e| cli::usage_exit(PROGRAM, e)),
        Err(_) => cli::usage_exit(
            PROGRAM,
            format!(
                "set {} to one of the faults in fixtures/mutants/mutants.toml",
                mutant::ENV
            ),
        ),
    };
    std::process::exit(tracer::run(args, mutation));
}
