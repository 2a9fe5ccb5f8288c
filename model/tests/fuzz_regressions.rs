//! Replays every saved fuzz input through the fuzz target's own check
//! (`capring_grammar_model::differential::check_bytes`): the crashes `cargo xtask fuzz` saved
//! under `fuzz/regressions/` and the seed corpus under `fuzz/seeds/capabilities/`. A saved
//! crash fails here, in a plain `cargo nextest run`, until the parser, the oracle or the
//! model is fixed.

use std::fs;
use std::path::{Path, PathBuf};

use capring_grammar_model::differential::check_bytes;

fn inputs(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
}

fn replay(dir: &str) {
    let failures: Vec<String> = inputs(dir)
        .iter()
        .filter_map(|p| {
            let data = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            check_bytes(&data)
                .err()
                .map(|e| format!("{}: {e}", p.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn saved_regressions_pass() {
    replay("regressions");
}

#[test]
fn seed_corpus_passes() {
    replay("seeds/capabilities");
}
