//! Accelerator choice: `--accel auto|kvm|tcg`.
//!
//! `/dev/kvm` opening fine says nothing about whether a KVM guest actually
//! runs (nested setups hang), so `auto` boots a short probe under KVM that
//! must say HELLO within a few seconds, and falls back to TCG otherwise. The
//! verdict is remembered in `accel.json`, keyed by the host's boot id and the
//! QEMU version.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The accelerator a VM runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's translator (pure emulation: slower, available everywhere).
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What `--accel` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM when a probe boot proves it works on this host, else TCG.
    Auto,
    /// KVM, or an error when `/dev/kvm` cannot be opened.
    Kvm,
    /// TCG.
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!(
                "unknown accelerator {s:?} (expected auto, kvm or tcg)"
            )),
        }
    }
}

/// Whether `/dev/kvm` can be opened read-write.
pub(crate) fn kvm_openable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm: {e}"))
}

/// This host boot's id (`/proc/sys/kernel/random/boot_id`; empty if unreadable): a KVM
/// verdict holds until the next reboot.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first line of `qemu --version` (empty if it cannot run): a new QEMU gets a new probe.
pub(crate) fn qemu_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

/// The remembered outcome of `--accel auto` (`accel.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Verdict {
    /// [`boot_id`] when it was decided.
    pub boot_id: String,
    /// [`qemu_version`] when it was decided.
    pub qemu_version: String,
    /// The accelerator chosen.
    pub accel: Accel,
    /// Why, for the user.
    pub reason: String,
}

/// The remembered verdict, if it was made on this host boot with this QEMU.
pub(crate) fn cached(path: &Path, boot_id: &str, qemu_version: &str) -> Option<Verdict> {
    let v: Verdict = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    (v.boot_id == boot_id && v.qemu_version == qemu_version).then_some(v)
}

/// Remembers `v` in `path`, best effort (a failure only costs a probe next time).
pub(crate) fn store(path: &Path, v: &Verdict) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    if let Ok(s) = serde_json::to_string_pretty(v) {
        let _ = std::fs::write(path, s);
    }
}
