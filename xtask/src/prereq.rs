//! Host prerequisites: installed automatically when running as root on
//! Debian/Ubuntu, otherwise the exact command is printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use capring_vm::session::MUSL_TARGET;

/// The executable `bin` on `PATH`, as a shell would find it.
fn on_path(bin: &str) -> Option<PathBuf> {
    which::which(bin).ok()
}

fn can_apt_install() -> bool {
    // SAFETY: geteuid(2) takes no arguments and always succeeds.
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

/// Where the third-party subjects and their Debian packages are listed.
pub const SUBJECTS: &str = "fixtures/tracers/third-party/subjects.toml";

/// The Debian packages of the third-party subjects (`harness/tests/subjects.rs` runs them as
/// root and fails, naming the package, when one is missing).
pub fn subject_packages() -> Result<Vec<String>> {
    let path = crate::workspace().join(SUBJECTS);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut packages: Vec<String> = doc
        .get("subject")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("package")?.as_str().map(str::to_string))
        .collect();
    packages.sort();
    packages.dedup();
    if packages.is_empty() {
        bail!("{}: no [[subject]] with a package", path.display());
    }
    Ok(packages)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| o.status.success() && o.stdout == b"install ok installed")
        .unwrap_or(false)
}

/// Installs the subjects' packages that are missing (noninteractively: wireshark-common asks
/// whether non-superusers may capture, and the default, no, is what the tests expect).
pub fn subjects() -> Result<()> {
    let packages = subject_packages()?;
    let missing: Vec<&str> = packages
        .iter()
        .map(String::as_str)
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(
        &missing,
        &format!(
            "the third-party subjects' packages are missing ({})",
            missing.join(", ")
        ),
    )
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

/// Headless Chromium (Debian's `chromium`), for the HTML report's browser test and the
/// screenshots. Returns its path.
pub fn chromium() -> Result<PathBuf> {
    if let Some(p) = on_path("chromium") {
        return Ok(p);
    }
    apt_install(&["chromium"], "chromium is not installed")?;
    on_path("chromium")
        .ok_or_else(|| anyhow::anyhow!("chromium still not found after installing it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_package_is_read_from_the_manifest() {
        let packages = subject_packages().unwrap();
        for p in [
            "iputils-ping",
            "wireshark-common",
            "dnsmasq-base",
            "bpftrace",
            "libbpf-tools",
        ] {
            assert!(packages.iter().any(|x| x == p), "{p} missing: {packages:?}");
        }
        // dnsmasq-base serves three subjects: listed once.
        assert_eq!(packages.len(), 5, "{packages:?}");
    }
}
