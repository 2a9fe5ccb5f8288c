//! Glue used by `cargo xtask` and by the VM drills: kernel resolution,
//! guest image assembly, accelerator choice, and one VM run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::accel::{self, Accel, AccelChoice};
use crate::apt::newest_matching;
use crate::cache::{local_image, Ensured, KernelCache};
use crate::catalog::{Catalog, Lock, LockEntry};
use crate::error::{Error, IoCtx, Result};
use crate::initramfs::Initramfs;
use crate::qemu::{self, RunReport, VmConfig};
use crate::settings::{GuestCommand, GuestSettings, SETTINGS_PATH};

/// The target the guest binaries are built for: static, so the initramfs needs no libc.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Well-known locations of one workspace.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The workspace root.
    pub workspace: PathBuf,
    /// Cargo's target directory (`$CARGO_TARGET_DIR`, relative to the workspace, or
    /// `target`).
    pub target: PathBuf,
    /// `target/vm-test`.
    pub out_root: PathBuf,
    /// `vm/kernels.toml`.
    pub catalog: PathBuf,
    /// `vm/kernels.lock`.
    pub lock: PathBuf,
    /// `vm/guest.toml`, the default guest config.
    pub guest: PathBuf,
}

impl Paths {
    /// The locations of the workspace at `workspace`.
    pub fn new(workspace: &Path) -> Self {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let target = if target.is_absolute() {
            target
        } else {
            workspace.join(target)
        };
        Paths {
            workspace: workspace.to_path_buf(),
            out_root: target.join("vm-test"),
            target,
            catalog: workspace.join("vm/kernels.toml"),
            lock: workspace.join("vm/kernels.lock"),
            guest: workspace.join("vm/guest.toml"),
        }
    }

    /// The kernel cache: `$CAPRING_VM_CACHE`, else `target/vm-test/cache`.
    pub fn cache(&self) -> KernelCache {
        KernelCache::from_env(self.out_root.join("cache"))
    }

    /// Where the release musl build puts binary `name`.
    pub fn musl_bin(&self, name: &str) -> PathBuf {
        self.target.join(MUSL_TARGET).join("release").join(name)
    }
}

/// What `--kernel` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A series of `vm/kernels.toml` (booted from its locked package).
    Series(String),
    /// A bzImage on this machine.
    Local(PathBuf),
}

impl KernelSpec {
    /// The name of its output directory and table row: the series, or `local-<file name>`.
    pub fn label(&self) -> String {
        match self {
            KernelSpec::Series(s) => s.clone(),
            KernelSpec::Local(p) => {
                format!(
                    "local-{}",
                    p.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            }
        }
    }
}

/// `--kernel 6.1|all|PATH` → specs. Comma-separated lists are accepted too.
pub fn parse_kernel_arg(arg: &str, catalog: &Catalog) -> Result<Vec<KernelSpec>> {
    let mut out = Vec::new();
    for part in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if part == "all" {
            out.extend(catalog.all_series().into_iter().map(KernelSpec::Series));
        } else if catalog.kernel.contains_key(part) {
            out.push(KernelSpec::Series(part.to_string()));
        } else if part.contains('/') || Path::new(part).is_file() {
            let p = PathBuf::from(part);
            if !p.is_file() {
                return Err(Error::Other(format!("--kernel {part}: no such file")));
            }
            out.push(KernelSpec::Local(p));
        } else {
            return Err(Error::UnknownSeries(
                part.to_string(),
                catalog.series().join(", "),
            ));
        }
    }
    if out.is_empty() {
        return Err(Error::Other("--kernel: nothing to run".into()));
    }
    Ok(out)
}

/// Resolves a series to the newest matching package of its suite (network). `lock` pins
/// the keyring package of a mirror that needs one.
pub fn resolve(
    series: &str,
    catalog: &Catalog,
    lock: &Lock,
    cache: &KernelCache,
) -> Result<LockEntry> {
    let src = catalog
        .kernel
        .get(series)
        .ok_or_else(|| Error::UnknownSeries(series.to_string(), catalog.series().join(", ")))?;
    let apt = cache.apt_root(catalog, lock, &src.mirror, &src.suite, series)?;
    apt.update().map_err(|e| Error::SourceUnreachable {
        series: series.into(),
        source_desc: format!("{} [{}]", catalog.describe(src), src.package),
        reason: e.to_string(),
    })?;
    let pkgs = apt.packages()?;
    for pattern in std::iter::once(&src.package).chain(src.fallback.iter()) {
        if let Some(p) = newest_matching(&pkgs, pattern, src.min_size) {
            return Ok(LockEntry::from_package(&src.mirror, &src.suite, p));
        }
    }
    let patterns = std::iter::once(src.package.clone())
        .chain(src.fallback.iter().cloned())
        .collect::<Vec<_>>()
        .join(" or ");
    Err(Error::NoPackage {
        series: series.into(),
        pattern: patterns,
        source_desc: catalog.describe(src),
    })
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct PreparedKernel {
    /// [`KernelSpec::label`].
    pub label: String,
    /// The verified image and how it was obtained.
    pub ensured: Ensured,
    /// The lock entry of a series (`None` for a local image).
    pub entry: Option<LockEntry>,
}

/// Locked series → cached (or fetched) image; local path → checked bzImage.
pub fn prepare_kernel(
    spec: &KernelSpec,
    catalog: &Catalog,
    lock: &Lock,
    cache: &KernelCache,
) -> Result<PreparedKernel> {
    match spec {
        KernelSpec::Local(p) => Ok(PreparedKernel {
            label: spec.label(),
            ensured: Ensured {
                image: local_image(p)?,
                network_requests: 0,
                replaced_corrupt: None,
            },
            entry: None,
        }),
        KernelSpec::Series(series) => {
            let entry = match lock.kernel.get(series) {
                Some(e) => e.clone(),
                None => {
                    let e = resolve(series, catalog, lock, cache)?;
                    eprintln!(
                        "kernel {series}: not in vm/kernels.lock; using {} {} (run `cargo xtask kernels update` to pin it)",
                        e.package, e.version
                    );
                    e
                }
            };
            let ensured = cache.ensure(series, &entry, catalog, lock)?;
            Ok(PreparedKernel {
                label: series.clone(),
                ensured,
                entry: Some(entry),
            })
        }
    }
}

/// Builds the guest agent (static musl) and returns its path.
pub fn build_agent(paths: &Paths) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(&paths.workspace)
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            MUSL_TARGET,
            "-p",
            "capring-vm",
            "--bin",
            "vm-agent",
        ])
        .arg("--no-default-features")
        .status()
        .map_err(|e| Error::Command {
            cmd: format!("{cargo} build (vm-agent)"),
            detail: e.to_string(),
        })?;
    if !st.success() {
        return Err(Error::Command {
            cmd: format!(
                "cargo build --release --target {MUSL_TARGET} -p capring-vm --bin vm-agent"
            ),
            detail: format!("exit status {st}"),
        });
    }
    Ok(paths.musl_bin("vm-agent"))
}

/// The kernel-independent part of the initramfs: `/init`, `/bin/*`, `/fixtures/**`.
pub fn base_initramfs(
    agent: &Path,
    bins: &[(String, PathBuf)],
    fixtures: Option<&Path>,
) -> Result<Vec<u8>> {
    Ok(base_fs(agent, bins, fixtures)?.to_bytes())
}

/// [`base_initramfs`] before it is written, for adding a tracer's files
/// ([`crate::closure`]).
pub fn base_fs(
    agent: &Path,
    bins: &[(String, PathBuf)],
    fixtures: Option<&Path>,
) -> Result<Initramfs> {
    let mut fs = Initramfs::new();
    fs.file("init", std::fs::read(agent).ctx(agent)?, 0o755)?;
    fs.dir("bin")?;
    for d in ["proc", "sys", "dev", "tmp", "run", "results", "etc"] {
        fs.dir(d)?;
    }
    for (name, path) in bins {
        fs.file(
            &format!("bin/{name}"),
            std::fs::read(path).ctx(path)?,
            0o755,
        )?;
    }
    if let Some(f) = fixtures.filter(|f| f.is_dir()) {
        fs.tree(f, "fixtures")?;
    }
    Ok(fs)
}

/// A second cpio archive holding only the settings; appended to the base.
pub fn settings_archive(s: &GuestSettings) -> Result<Vec<u8>> {
    let mut fs = Initramfs::new();
    let body = serde_json::to_vec_pretty(s).map_err(|e| Error::Other(e.to_string()))?;
    fs.file(SETTINGS_PATH, body, 0o644)?;
    Ok(fs.to_bytes())
}

/// A fresh random nonce.
/// A fresh protocol nonce: 16 hex digits from `/dev/urandom`.
pub fn nonce() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Options for one VM run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// Spawn → HELLO deadline ([`default_boot_timeout`] unless `--boot-timeout`).
    pub boot_timeout: Duration,
    /// Slack added to the commands' own budget for the host deadline.
    pub test_slack: Duration,
    /// Echo protocol lines as they arrive.
    pub verbose: bool,
    /// Kernel command-line words added by `--append`.
    pub extra_append: Vec<String>,
    /// Virtual CPUs (`vcpus` in vm/guest.toml).
    pub cpus: u32,
    /// Guest memory (512 MiB; more for an initramfs holding a tracer's libraries, see
    /// [`memory_for`]).
    pub memory_mb: u32,
}

/// Guest memory for an initramfs of `initramfs_bytes`: the kernel holds the archive and
/// its unpacked files at once while booting, and the files stay in the tmpfs root.
pub fn memory_for(initramfs_bytes: u64) -> u32 {
    let mib = initramfs_bytes.div_ceil(1 << 20) as u32;
    (512 + 2 * mib).div_ceil(128) * 128
}

impl RunOptions {
    /// Defaults: the accelerator's boot timeout, 15 s slack, 1 vCPU, 512 MiB.
    pub fn new(qemu: PathBuf, accel: Accel) -> Self {
        RunOptions {
            qemu,
            accel,
            boot_timeout: default_boot_timeout(accel),
            test_slack: Duration::from_secs(15),
            verbose: false,
            extra_append: Vec::new(),
            cpus: 1,
            memory_mb: 512,
        }
    }
}

/// Spawn → HELLO deadline: 20 s under TCG, 10 s under KVM (`--boot-timeout` overrides it).
pub fn default_boot_timeout(a: Accel) -> Duration {
    match a {
        Accel::Tcg => Duration::from_secs(20),
        Accel::Kvm => Duration::from_secs(10),
    }
}

/// Boots `image` with `base` + `settings` and returns the report.
pub fn run_vm(
    label: &str,
    vmlinuz: &Path,
    base: &[u8],
    settings: &GuestSettings,
    out_dir: &Path,
    opts: &RunOptions,
    on_hello: &mut dyn FnMut(),
) -> Result<RunReport> {
    // Next to out_dir (which the runner empties); never `with_extension`:
    // "6.1" and "6.12" would collide.
    let mut name = out_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".initrd-{}", settings.nonce));
    let initrd_dir = out_dir.with_file_name(name);
    std::fs::create_dir_all(&initrd_dir).ctx(&initrd_dir)?;
    let initrd = initrd_dir.join("initrd.cpio");
    let mut bytes = base.to_vec();
    bytes.extend(settings_archive(settings)?);
    std::fs::write(&initrd, bytes).ctx(&initrd)?;
    let cfg = VmConfig {
        qemu: opts.qemu.clone(),
        kernel: vmlinuz.to_path_buf(),
        initrd: initrd.clone(),
        accel: opts.accel,
        memory_mb: opts.memory_mb,
        cpus: opts.cpus,
        extra_append: opts.extra_append.clone(),
        out_dir: out_dir.to_path_buf(),
        nonce: settings.nonce.clone(),
        boot_timeout: opts.boot_timeout,
        test_timeout: Duration::from_secs(settings.commands_budget_secs()) + opts.test_slack,
        verbose: opts.verbose,
        label: label.to_string(),
        ok_codes: settings
            .commands
            .iter()
            .map(|c| (c.name.clone(), c.ok_codes.clone()))
            .collect(),
    };
    let r = qemu::run(&cfg, on_hello);
    let _ = std::fs::remove_dir_all(&initrd_dir);
    r
}

/// Guest settings with a fresh nonce and no drill.
pub fn settings(
    commands: Vec<GuestCommand>,
    results_dir: &str,
    env: Vec<(String, String)>,
) -> GuestSettings {
    GuestSettings {
        nonce: nonce(),
        commands,
        results_dir: results_dir.to_string(),
        env,
        drill: None,
    }
}

/// Chooses the accelerator. For `auto` without a remembered verdict,
/// `probe` boots a VM under KVM and says whether it reached HELLO.
pub fn choose_accel(
    choice: AccelChoice,
    qemu: &Path,
    verdict_file: &Path,
    probe: &mut dyn FnMut() -> Result<bool>,
) -> Result<(Accel, String)> {
    match choice {
        AccelChoice::Tcg => return Ok((Accel::Tcg, "requested".into())),
        AccelChoice::Kvm => {
            accel::kvm_openable().map_err(|e| Error::Other(format!("--accel kvm: {e}")))?;
            return Ok((Accel::Kvm, "requested".into()));
        }
        AccelChoice::Auto => {}
    }
    if let Err(e) = accel::kvm_openable() {
        return Ok((Accel::Tcg, e));
    }
    let (bid, qv) = (accel::boot_id(), accel::qemu_version(qemu));
    if let Some(v) = accel::cached(verdict_file, &bid, &qv) {
        return Ok((
            v.accel,
            format!("{} (remembered in {})", v.reason, verdict_file.display()),
        ));
    }
    let ok = probe()?;
    let v = accel::Verdict {
        boot_id: bid,
        qemu_version: qv,
        accel: if ok { Accel::Kvm } else { Accel::Tcg },
        reason: if ok {
            "KVM probe boot said HELLO".into()
        } else {
            "KVM probe boot did not say HELLO in time (guest hangs under KVM)".into()
        },
    };
    accel::store(verdict_file, &v);
    Ok((v.accel, v.reason))
}

#[cfg(test)]
mod tests {
    use super::memory_for;

    #[test]
    fn guest_memory_grows_with_twice_the_initramfs_in_steps_of_128_mib() {
        assert_eq!(memory_for(0), 512);
        assert_eq!(memory_for(18 << 20), 640, "512 + 2 × 18 = 548 → 640");
        // bpftrace's closure: a 218.5 MiB initramfs.
        assert_eq!(memory_for(229_113_856), 1024);
        assert_eq!(memory_for(300 << 20), 1152);
    }
}
