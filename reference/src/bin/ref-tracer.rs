//! `ref-tracer`: see `capring_reference::tracer`.
use capring_reference::{cli, tracer};

fn main() {
    let args = cli::parse::<tracer::Args>("ref-tracer");
    std::process::exit(tracer::run(args));
}
