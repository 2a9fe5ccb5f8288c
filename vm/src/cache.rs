//! Kernel cache: `<cache>/kernels/<deb-sha256>/{vmlinuz,config,release,stamp.json}`.
//!
//! The stamp is written last and records the SHA256 of `vmlinuz`; the image is
//! re-hashed before every boot, and a missing, corrupt or truncated one is
//! deleted and fetched again, never booted. A valid cache entry needs no apt
//! call at all (see [`crate::apt::network_requests`]).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apt::{self, AptRoot};
use crate::catalog::{Catalog, Keyring, Lock, LockEntry};
use crate::deb;
use crate::error::{Error, IoCtx, Result};

/// Environment variable overriding the cache directory.
pub(crate) const CACHE_ENV: &str = "CAPRING_VM_CACHE";

/// `stamp.json` of a cache entry, written last: an entry without one was interrupted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    /// The package the image came from.
    pub package: String,
    /// Its Debian version.
    pub version: String,
    /// SHA256 of the .deb (the entry's directory name).
    pub deb_sha256: String,
    /// SHA256 of `vmlinuz` as extracted; checked before every boot.
    pub vmlinuz_sha256: String,
    /// Size of `vmlinuz` in bytes (a truncated file is named as such).
    pub vmlinuz_size: u64,
    /// The kernel release (`uname -r` of the image).
    pub release: String,
}

/// A kernel image ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelImage {
    /// The bzImage to boot.
    pub vmlinuz: PathBuf,
    /// The kernel's build config (`/boot/config-*` of the package), when it had one.
    pub config: Option<PathBuf>,
    /// The kernel release (`6.1.0-50-cloud-amd64`; `unknown` for a local image without one).
    pub release: String,
    /// SHA256 of `vmlinuz` (hex).
    pub vmlinuz_sha256: String,
}

/// What the cache holds for one lock entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// Present, its stamp matching the entry and its vmlinuz hash and size the stamp's.
    Valid(KernelImage),
    /// No directory for the entry.
    Missing,
    /// Present but unusable (the reason); must be deleted before use.
    Corrupt(String),
}

/// Result of [`KernelCache::ensure`].
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The verified image.
    pub image: KernelImage,
    /// apt calls that went to the network for this kernel (0 on a cache hit).
    pub network_requests: u64,
    /// Why the cache entry was replaced, if it was corrupt.
    pub replaced_corrupt: Option<String>,
}

/// SHA256 (hex) and size in bytes of a file, read in 64 KiB blocks.
pub(crate) fn sha256_file(p: &Path) -> Result<(String, u64)> {
    let mut f = File::open(p).ctx(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).ctx(p)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex(&h.finalize()), n))
}

/// SHA256 of `b`, as lower-case hex.
pub(crate) fn sha256_bytes(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An exclusive advisory lock on a file ([`File::lock`], which is `flock(2)` on Linux), held
/// until drop. Two `cargo xtask vm-test` runs sharing one cache (CI jobs, engineers on one
/// machine) take it around each entry so that only one downloads and extracts it while the
/// other waits and then finds a valid entry.
pub(crate) struct FileLock(File);

impl FileLock {
    /// Opens (creating if needed) `p` and blocks until this process holds its exclusive lock.
    pub(crate) fn exclusive(p: &Path) -> Result<Self> {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .ctx(p)?;
        f.lock().ctx(p)?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too; unlocking first says so explicitly.
        let _ = self.0.unlock();
    }
}

/// The directory kernel images (and keyrings, apt roots) are cached in: `$CAPRING_VM_CACHE`,
/// else `target/vm-test/cache` ([`crate::session::Paths::cache`]). Runs may share it.
pub struct KernelCache {
    /// The cache directory.
    pub root: PathBuf,
    /// Show apt's output while fetching.
    pub verbose: bool,
}

impl KernelCache {
    /// `$CAPRING_VM_CACHE`, else `default`.
    pub fn from_env(default: PathBuf) -> Self {
        let root = std::env::var_os(CACHE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or(default);
        KernelCache {
            root,
            verbose: false,
        }
    }

    /// The entry of the package with this SHA256: `<root>/kernels/<deb_sha256>`.
    pub fn kernel_dir(&self, deb_sha256: &str) -> PathBuf {
        self.root.join("kernels").join(deb_sha256)
    }

    /// Inspects the cache entry for `entry` (hashes the vmlinuz; no network).
    pub fn check(&self, entry: &LockEntry) -> CacheState {
        let dir = self.kernel_dir(&entry.sha256);
        if !dir.exists() {
            return CacheState::Missing;
        }
        let stamp: Stamp = match fs::read_to_string(dir.join("stamp.json")) {
            Ok(s) => match serde_json::from_str(&s) {
                Ok(st) => st,
                Err(e) => return CacheState::Corrupt(format!("unreadable stamp.json: {e}")),
            },
            Err(_) => return CacheState::Corrupt("no stamp.json (interrupted extraction?)".into()),
        };
        if stamp.deb_sha256 != entry.sha256 {
            return CacheState::Corrupt("stamp.json belongs to another package".into());
        }
        let vmlinuz = dir.join("vmlinuz");
        match sha256_file(&vmlinuz) {
            Ok((h, n)) if h == stamp.vmlinuz_sha256 && n == stamp.vmlinuz_size => {
                let config = dir.join("config");
                CacheState::Valid(KernelImage {
                    vmlinuz,
                    config: config.exists().then_some(config),
                    release: stamp.release,
                    vmlinuz_sha256: h,
                })
            }
            Ok((h, n)) => CacheState::Corrupt(format!(
                "vmlinuz is {n} bytes with SHA256 {h}, stamp says {} bytes with SHA256 {} (truncated or modified)",
                stamp.vmlinuz_size, stamp.vmlinuz_sha256
            )),
            Err(e) => CacheState::Corrupt(format!("vmlinuz unreadable: {e}")),
        }
    }

    /// Returns a verified kernel image for `entry`, fetching it if needed (`lock` pins the
    /// keyring package of a mirror that needs one).
    pub fn ensure(
        &self,
        series: &str,
        entry: &LockEntry,
        catalog: &Catalog,
        lock: &Lock,
    ) -> Result<Ensured> {
        let kdir = self.root.join("kernels");
        fs::create_dir_all(&kdir).ctx(&kdir)?;
        let _lock = FileLock::exclusive(&kdir.join(format!("{}.lock", entry.sha256)))?;
        let mut replaced_corrupt = None;
        match self.check(entry) {
            CacheState::Valid(image) => {
                return Ok(Ensured {
                    image,
                    network_requests: 0,
                    replaced_corrupt,
                });
            }
            CacheState::Missing => {}
            CacheState::Corrupt(why) => {
                eprintln!("kernel {series}: cached image is corrupt ({why}); deleting it and fetching again");
                let d = self.kernel_dir(&entry.sha256);
                fs::remove_dir_all(&d).ctx(&d)?;
                replaced_corrupt = Some(why);
            }
        }
        let before = apt::network_requests();
        let image = self.fetch(series, entry, catalog, lock)?;
        Ok(Ensured {
            image,
            network_requests: apt::network_requests() - before,
            replaced_corrupt,
        })
    }

    fn fetch(
        &self,
        series: &str,
        entry: &LockEntry,
        catalog: &Catalog,
        lock: &Lock,
    ) -> Result<KernelImage> {
        if !catalog.mirror.contains_key(&entry.mirror) {
            return Err(Error::Other(format!(
                "kernel {series}: lock names unknown mirror {:?}",
                entry.mirror
            )));
        }
        let apt = self.apt_root(catalog, lock, &entry.mirror, &entry.suite, series)?;
        let source_desc = catalog.describe_suite(&entry.mirror, &entry.suite);
        self.with_verified_deb(series, entry, &apt, &source_desc, |deb_path| {
            let x = deb::extract_kernel(deb_path)?;
            self.store(entry, &x)
        })
    }

    /// A private apt root for `suite` of mirror `mirror_name`, its keyring resolved: a file
    /// as is, a package through [`crate::keyring::ensure`] (fetched, verified and cached
    /// like a kernel). `series` names the kernel in errors.
    pub(crate) fn apt_root(
        &self,
        catalog: &Catalog,
        lock: &Lock,
        mirror_name: &str,
        suite: &str,
        series: &str,
    ) -> Result<AptRoot> {
        let keyring = match &catalog.mirror[mirror_name].keyring {
            Keyring::File(path) => PathBuf::from(path),
            Keyring::Package(_) => {
                crate::keyring::ensure(self, catalog, lock, mirror_name, series)?
            }
        };
        let mut apt = AptRoot::new(
            &self.root,
            mirror_name,
            catalog.mirror_named(mirror_name),
            keyring,
            suite,
        );
        apt.verbose = self.verbose;
        Ok(apt)
    }

    /// Downloads the locked package `entry` through `apt` (updating its index once if it
    /// does not know that version), checks its SHA256 against the lock and hands it to `f`.
    pub(crate) fn with_verified_deb<T>(
        &self,
        series: &str,
        entry: &LockEntry,
        apt: &AptRoot,
        source_desc: &str,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        if !apt.knows(&entry.package, &entry.version) {
            apt.update().map_err(|e| Error::SourceUnreachable {
                series: series.into(),
                source_desc: source_desc.to_string(),
                reason: e.to_string(),
            })?;
            if !apt.knows(&entry.package, &entry.version) {
                return Err(Error::Other(format!(
                    "kernel {series}: {}={} is no longer in {source_desc}; run `cargo xtask kernels update`",
                    entry.package, entry.version,
                )));
            }
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}-{}", entry.sha256, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let result = (|| {
            let deb_path = apt
                .download(&entry.package, &entry.version, &tmp, entry.size)
                .map_err(|e| Error::SourceUnreachable {
                    series: series.into(),
                    source_desc: source_desc.to_string(),
                    reason: e.to_string(),
                })?;
            let (h, _) = sha256_file(&deb_path)?;
            if h != entry.sha256 {
                return Err(Error::HashMismatch {
                    what: deb_path.display().to_string(),
                    expected: entry.sha256.clone(),
                    actual: h,
                });
            }
            f(&deb_path)
        })();
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    /// Writes an extracted kernel into the cache (temp dir, rename, stamp last).
    pub fn store(&self, entry: &LockEntry, x: &deb::Extracted) -> Result<KernelImage> {
        let dir = self.kernel_dir(&entry.sha256);
        let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).ctx(&tmp)?;
        let w = |name: &str, data: &[u8]| -> Result<()> {
            let p = tmp.join(name);
            fs::write(&p, data).ctx(&p)
        };
        w("vmlinuz", &x.vmlinuz)?;
        if let Some(c) = &x.config {
            w("config", c)?;
        }
        w("release", format!("{}\n", x.release).as_bytes())?;
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).ctx(&dir)?;
        let stamp = Stamp {
            package: entry.package.clone(),
            version: entry.version.clone(),
            deb_sha256: entry.sha256.clone(),
            vmlinuz_sha256: sha256_bytes(&x.vmlinuz),
            vmlinuz_size: x.vmlinuz.len() as u64,
            release: x.release.clone(),
        };
        let sp = dir.join("stamp.json");
        let body = serde_json::to_string_pretty(&stamp).map_err(|e| Error::Other(e.to_string()))?;
        fs::write(&sp, body).ctx(&sp)?;
        Ok(KernelImage {
            vmlinuz: dir.join("vmlinuz"),
            config: x.config.as_ref().map(|_| dir.join("config")),
            release: x.release.clone(),
            vmlinuz_sha256: stamp.vmlinuz_sha256,
        })
    }
}

/// A local bzImage given with `--kernel PATH`.
pub fn local_image(path: &Path) -> Result<KernelImage> {
    let data = fs::read(path).ctx(path)?;
    if !deb::is_bzimage(&data) {
        return Err(Error::NotBzImage(path.to_path_buf()));
    }
    Ok(KernelImage {
        vmlinuz: path.to_path_buf(),
        config: None,
        release: deb::bzimage_release(&data).unwrap_or_else(|| "unknown".into()),
        vmlinuz_sha256: sha256_bytes(&data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While one [`FileLock`] is held, another open file description of the same path cannot
    /// take the lock; once it is dropped, it can.
    #[test]
    fn file_lock_excludes_until_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("entry.lock");
        let held = FileLock::exclusive(&p).unwrap();
        let other = File::options().write(true).open(&p).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().expect("lock is free after drop");
    }
}
