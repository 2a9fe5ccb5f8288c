//! Host prerequisites: installed automatically when running as root on
//! Debian/Ubuntu, otherwise the exact command is printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use capring_vm::session::MUSL_TARGET;

fn on_path(bin: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn can_apt_install() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/etc/debian_version").exists() && on_path("apt-get").is_some()
}

/// Installs Debian packages (root only) or fails with the command to run.
fn apt_install(pkgs: &[&str], why: &str) -> Result<()> {
    let cmd = format!(
        "apt-get install -y --no-install-recommends {}",
        pkgs.join(" ")
    );
    if !can_apt_install() {
        bail!("{why}; install it with: sudo {cmd}");
    }
    eprintln!("{why}; running: {cmd}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if install() {
        return Ok(());
    }
    eprintln!("retrying after apt-get update");
    let _ = Command::new("apt-get").args(["update", "-q"]).status();
    if install() {
        return Ok(());
    }
    bail!("`{cmd}` failed");
}

pub fn qemu() -> Result<PathBuf> {
    if let Some(q) = capring_vm::qemu::find_qemu() {
        return Ok(q);
    }
    apt_install(&["qemu-system-x86"], "qemu-system-x86_64 is not installed")?;
    capring_vm::qemu::find_qemu().ok_or_else(|| {
        anyhow::anyhow!("qemu-system-x86_64 still not found after installing qemu-system-x86")
    })
}

/// `bpftrace`, the third-party tracer `cargo xtask test` judges inside a guest
/// (`vm-test --tracer fixtures/tracers/third-party/bpftrace.toml`).
pub fn bpftrace() -> Result<()> {
    if on_path("bpftrace").is_some() || Path::new("/usr/bin/bpftrace").exists() {
        return Ok(());
    }
    apt_install(&["bpftrace"], "bpftrace is not installed")
}

pub fn musl_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == MUSL_TARGET)
        });
    match installed {
        Ok(true) => Ok(()),
        Ok(false) => {
            eprintln!(
                "rust target {MUSL_TARGET} missing; running: rustup target add {MUSL_TARGET}"
            );
            let ok = Command::new("rustup")
                .args(["target", "add", MUSL_TARGET])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                bail!("`rustup target add {MUSL_TARGET}` failed; run it by hand")
            }
        }
        // No rustup: hope the toolchain has the target (a distro rustc with musl std).
        Err(_) => Ok(()),
    }
}

/// clang + libbpf headers, needed by the reference tracer's eBPF build.
pub fn bpf_toolchain() -> Result<()> {
    let mut missing = Vec::new();
    if on_path("clang").is_none() {
        missing.push("clang");
    }
    if on_path("llvm-strip").is_none() && !has_versioned("llvm-strip") {
        missing.push("llvm");
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        missing.push("libbpf-dev");
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(
        &missing,
        &format!("eBPF build tools missing ({})", missing.join(", ")),
    )
}

fn has_versioned(prefix: &str) -> bool {
    std::fs::read_dir("/usr/bin")
        .map(|rd| {
            rd.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{prefix}-"))
            })
        })
        .unwrap_or(false)
}

/// `capsh` (libcap2-bin), used by the harness tests (`cargo xtask test`).
#[allow(dead_code)] // until test_cmd.rs is wired into main.rs
pub fn capsh() -> Result<()> {
    if on_path("capsh").is_some()
        || Path::new("/usr/sbin/capsh").exists()
        || Path::new("/sbin/capsh").exists()
    {
        return Ok(());
    }
    apt_install(&["libcap2-bin"], "capsh is not installed")
}
