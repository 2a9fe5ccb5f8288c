//! The production binaries contain no fault code; the fault binaries contain every fault.
//!
//! Each fault of `src/faults/active.rs` is compiled in with a marker string
//! `capring-fault:NAME;`. Built without the cargo feature `faults`, `ref-tracer` and
//! `ref-rules` must not contain the marker prefix (nor the `CAPRING_MUTANT` variable name);
//! `ref-tracer-mutant` and `ref-rules-mutant`, built with it (`cargo xtask test` does), must
//! contain the marker of every control in `fixtures/mutants/mutants.toml`. The second half
//! is what makes the first able to fail: the same search finds the faults where they are.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const PREFIX: &[u8] = b"capring-fault:";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the fault binaries with `cargo build -p capring-reference \
             --features faults --bin ref-tracer-mutant --bin ref-rules-mutant` (cargo xtask test does)",
            path.display()
        )
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find_all(haystack, needle).next().is_some()
}

/// Start offsets of every occurrence of `needle` (a first-byte scan, fast enough for 60 MB).
fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle[0];
    (0..haystack.len().saturating_sub(needle.len() - 1))
        .filter(move |&i| haystack[i] == first && haystack[i..].starts_with(needle))
}

/// The fault names of every complete marker `capring-fault:NAME;` (string data is not
/// NUL-terminated in Rust binaries, so markers may sit back to back with other text).
fn marker_names(binary: &[u8]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for at in find_all(binary, PREFIX) {
        let rest = &binary[at + PREFIX.len()..];
        let len = rest
            .iter()
            .take(64)
            .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
            .count();
        if len > 0 && rest.get(len) == Some(&b';') {
            names.insert(String::from_utf8_lossy(&rest[..len]).into_owned());
        }
    }
    names
}

/// Any trace of the prefix at all (a production binary must not have even one).
fn has_prefix(binary: &[u8]) -> bool {
    contains(binary, PREFIX)
}

fn control_names() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/mutants/mutants.toml");
    let text = std::fs::read_to_string(&path).expect("reading fixtures/mutants/mutants.toml");
    let doc: toml::Value = toml::from_str(&text).expect("mutants.toml parses");
    let names: Vec<String> = doc["mutant"]
        .as_array()
        .expect("[[mutant]] entries")
        .iter()
        .map(|m| m["name"].as_str().expect("a name").to_string())
        .collect();
    assert!(
        names.len() >= 20,
        "only {} controls in mutants.toml",
        names.len()
    );
    names
}

fn next_to_ref_tracer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ref-tracer")).with_file_name(name)
}

#[test]
fn production_binaries_have_no_fault_code() {
    for path in [
        env!("CARGO_BIN_EXE_ref-tracer"),
        env!("CARGO_BIN_EXE_ref-rules"),
    ] {
        let bytes = read(Path::new(path));
        assert!(
            !has_prefix(&bytes),
            "{path} contains fault markers {:?}: it was built with the `faults` feature",
            marker_names(&bytes)
        );
        assert!(
            !contains(&bytes, b"CAPRING_MUTANT"),
            "{path} reads CAPRING_MUTANT: fault selection code is in a production binary"
        );
    }
}

#[test]
fn fault_binaries_have_every_control() {
    let names = control_names();
    for binary in ["ref-tracer-mutant", "ref-rules-mutant"] {
        let found = marker_names(&read(&next_to_ref_tracer(binary)));
        let missing: Vec<&String> = names.iter().filter(|n| !found.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{binary} lacks the faults {missing:?} of mutants.toml (stale build, or a control \
             without a fault); it has {found:?}"
        );
        let unlisted: Vec<&String> = found.iter().filter(|n| !names.contains(n)).collect();
        assert!(
            unlisted.is_empty(),
            "{binary} has faults that mutants.toml does not list: {unlisted:?}"
        );
    }
}
