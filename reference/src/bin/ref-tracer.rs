//! `ref-tracer`: see `capring_reference::tracer`.
fn main() {
    let args = capring_reference::cli::parse::<capring_reference::tracer::Args>("ref-tracer");
    std::process::exit(capring_reference::tracer::run(args));
}
