//! `cargo xtask record-runs`: re-record the real runs the checks are unit-tested on.
//!
//! Why recorded runs: the checks judge timelines of real tracers, and most of them can only
//! be produced with root and eBPF. Recorded once (here, as root) and kept gzipped under
//! `fixtures/runs/`, they let `harness/tests/recorded.rs` test every check, passing and
//! failing, on any machine: the reference's full catalog (must pass), every negative control
//! (must fail as `fixtures/mutants/mutants.toml` says) and the hand-built tracers. Re-record
//! after a change of the run format or of the reference, and review the test's result.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::workspace;

/// (subdirectory of fixtures/runs, capring arguments).
fn sets() -> Vec<(&'static str, Vec<String>)> {
    let fx = |p: &str| workspace().join("fixtures").join(p).display().to_string();
    let handmade = |name: &str, scenarios: &[&str]| {
        let mut args = vec![
            "check".into(),
            "--tracer".into(),
            fx(&format!("tracers/handmade/{name}.toml")),
        ];
        for s in scenarios {
            args.extend(["--scenario".into(), s.to_string()]);
        }
        args
    };
    vec![
        (
            "reference",
            vec![
                "check".into(),
                "--tracer".into(),
                fx("tracers/ref-tracer.toml"),
            ],
        ),
        (
            "controls",
            vec![
                "mutants".into(),
                "--tracer".into(),
                fx("mutants/ref-tracer-mutant.toml"),
                "--mutants".into(),
                fx("mutants/mutants.toml"),
            ],
        ),
        (
            "handmade/raised-forever",
            handmade("raised-forever", &["steady-state", "requested-*"]),
        ),
        (
            "handmade/too-small-ring",
            handmade("too-small-ring", &["steady-state", "paranoid-*"]),
        ),
    ]
}

fn gzip_into(src: &Path, dst: &Path) -> Result<()> {
    let json = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let file = std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    // mtime 0 and no file name: the same run gives the same bytes.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(file, flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &json)?;
    gz.finish()?;
    Ok(())
}

pub fn execute() -> Result<u8> {
    if !capring_spec::sys::is_root() {
        bail!("recording runs needs root (the tracers load eBPF programs)");
    }
    let ws = workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .current_dir(&ws)
        .args(["build", "--workspace"])
        .status()?;
    let faults = Command::new(&cargo)
        .current_dir(&ws)
        .args(["build", "-p", "capring-reference", "--features", "faults"])
        .args(["--bin", "ref-tracer-mutant", "--bin", "ref-rules-mutant"])
        .status()?;
    if !built.success() || !faults.success() {
        bail!("the build failed");
    }
    let capring: PathBuf = ws.join("target/debug/capring");
    let tmp = ws.join("target/record-runs");
    let _ = std::fs::remove_dir_all(&tmp);
    for (dir, args) in sets() {
        let out = tmp.join(dir);
        eprintln!("record-runs: capring {}", args.join(" "));
        let status = Command::new(&capring)
            .args(&args)
            .arg("--out")
            .arg(&out)
            .status()?;
        // A check with failures exits 1: the hand-built tracers and controls must fail.
        if !matches!(status.code(), Some(0 | 1)) {
            bail!("capring {} ended with {status}", args.join(" "));
        }
        let dest = ws.join("fixtures/runs").join(dir);
        let _ = std::fs::remove_dir_all(&dest);
        std::fs::create_dir_all(&dest)?;
        let mut n = 0;
        for e in std::fs::read_dir(out.join("runs"))? {
            let p = e?.path();
            let name = format!("{}.gz", p.file_name().unwrap_or_default().to_string_lossy());
            gzip_into(&p, &dest.join(name))?;
            n += 1;
        }
        eprintln!("record-runs: {n} runs in {}", dest.display());
    }
    Ok(0)
}
