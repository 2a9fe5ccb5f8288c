//! `cargo xtask dist`: capring alone, ready for a tracer's CI, in `target/dist/`:
//!
//! * `capring`: a static musl binary (x86_64-unknown-linux-musl; no loader, no libc to
//!   match; stripped), so a CI job can download or cache one file and run it on any x86-64
//!   Linux;
//! * `completions/`: bash, zsh and fish completion scripts (`capring completions SHELL`);
//! * `man/`: `capring.1` and one page per subcommand (`capring man DIR`).
//!
//! Completions and pages come from the built binary itself, so they always match it.
//! `cargo install --path harness` installs the same checker (dynamically linked).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use capring_vm::session::{Paths, MUSL_TARGET};

use crate::{prereq, workspace};

/// Whether an ELF file asks for a program interpreter (a dynamic loader): a static or
/// static-pie binary has no `PT_INTERP` program header.
pub fn has_interpreter(bytes: &[u8]) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        bail!("not a little-endian 64-bit ELF file");
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let Some(kind) = bytes.get(at..at + 4) else {
            bail!("truncated program header table");
        };
        if u32::from_le_bytes(kind.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn run(what: &str, cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn completions(capring: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = dir.join("completions");
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    for (shell, file) in [
        ("bash", "capring.bash"),
        ("zsh", "_capring"),
        ("fish", "capring.fish"),
    ] {
        let out = run(
            &format!("capring completions {shell}"),
            Command::new(capring).args(["completions", shell]),
        )?;
        let path = dir.join(file);
        std::fs::write(&path, out.stdout)?;
        written.push(path);
    }
    Ok(written)
}

pub fn execute() -> Result<u8> {
    prereq::musl_target()?;
    let ws = workspace();
    let paths = Paths::new(&ws);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "dist: cargo build --release --target {MUSL_TARGET} -p capring-harness --bin capring"
    );
    let st = Command::new(&cargo)
        .current_dir(&ws)
        .args(["build", "--release", "--target", MUSL_TARGET])
        .args(["-p", "capring-harness", "--bin", "capring"])
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("the musl build of capring failed ({st})");
    }
    let dist = paths.target.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&dist)?;
    let capring = dist.join("capring");
    std::fs::copy(paths.musl_bin("capring"), &capring)
        .with_context(|| format!("copying {}", paths.musl_bin("capring").display()))?;
    // Symbols are a third of the file; a binary for CI downloads does without them.
    match Command::new("strip").arg(&capring).status() {
        Ok(st) if st.success() => {}
        _ => eprintln!("dist: warning: `strip` failed or is missing; the binary keeps its symbols"),
    }
    let bytes = std::fs::read(&capring)?;
    if has_interpreter(&bytes)? {
        bail!("{} is dynamically linked", capring.display());
    }
    let version = run("capring --version", Command::new(&capring).arg("--version"))?;
    let comp = completions(&capring, &dist)?;
    run(
        "capring man",
        Command::new(&capring).arg("man").arg(dist.join("man")),
    )?;
    let pages = std::fs::read_dir(dist.join("man"))?.count();
    eprintln!(
        "dist: {} ({}, static, {:.1} MiB), {} completion scripts, {pages} man pages in {}",
        capring.display(),
        String::from_utf8_lossy(&version.stdout).trim(),
        bytes.len() as f64 / (1 << 20) as f64,
        comp.len(),
        dist.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with one program header of the given type.
    fn elf(ph_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ph_type.to_le_bytes());
        b
    }

    #[test]
    fn interpreter_detection() {
        assert!(has_interpreter(&elf(3)).unwrap());
        assert!(!has_interpreter(&elf(1)).unwrap());
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
        // The test binary itself is linked against glibc: it has a loader.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(has_interpreter(&me).unwrap());
    }
}
