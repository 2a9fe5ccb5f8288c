//! Keyrings that come from a package of another mirror
//! (`keyring = { mirror, suite, package, file }` in `vm/kernels.toml`).
//!
//! Why: Ubuntu's archive is signed by keys that a Debian host does not have installed, but
//! Debian ships them (`ubuntu-keyring`), signed through Debian's own keyring. So the keyring
//! package is fetched through the private apt root of that other mirror, checked against the
//! SHA256 pinned in `kernels.lock` (`[keyring.<mirror>]`) and cached by that hash, exactly
//! like a kernel: `<cache>/keyrings/<deb-sha256>/{keyring.gpg,stamp.json}`. The keyring file
//! is re-hashed on every use; a corrupt one is deleted and fetched again. A cached kernel
//! needs no keyring at all, so a cached re-run makes no network request.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::{sha256_bytes, sha256_file, FileLock, KernelCache};
use crate::catalog::{Catalog, Keyring, KeyringPackage, Lock, LockEntry};
use crate::deb;
use crate::error::{Error, IoCtx, Result};

/// File name of the extracted keyring inside its cache directory.
const KEYRING_FILE: &str = "keyring.gpg";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    package: String,
    version: String,
    deb_sha256: String,
    /// Path of the keyring inside the package.
    file: String,
    sha256: String,
    size: u64,
}

/// What the cache holds for one keyring lock entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringState {
    /// The cached keyring file, its hash matching the stamp.
    Valid(PathBuf),
    /// Not cached yet.
    Missing,
    /// Present but unusable (the reason); deleted before a new fetch.
    Corrupt(String),
}

/// `<cache>/keyrings/<deb-sha256>`.
pub fn dir(cache: &KernelCache, entry: &LockEntry) -> PathBuf {
    cache.root.join("keyrings").join(&entry.sha256)
}

/// Inspects the cached keyring of `entry` (hashes it; no network).
pub fn check(cache: &KernelCache, entry: &LockEntry, file: &str) -> KeyringState {
    let d = dir(cache, entry);
    if !d.exists() {
        return KeyringState::Missing;
    }
    let stamp: Stamp = match fs::read_to_string(d.join("stamp.json")) {
        Ok(s) => match serde_json::from_str(&s) {
            Ok(st) => st,
            Err(e) => return KeyringState::Corrupt(format!("unreadable stamp.json: {e}")),
        },
        Err(_) => return KeyringState::Corrupt("no stamp.json (interrupted extraction?)".into()),
    };
    if stamp.deb_sha256 != entry.sha256 || stamp.file != file {
        return KeyringState::Corrupt("stamp.json belongs to another package or file".into());
    }
    let path = d.join(KEYRING_FILE);
    match sha256_file(&path) {
        Ok((h, n)) if h == stamp.sha256 && n == stamp.size => KeyringState::Valid(path),
        Ok((h, n)) => KeyringState::Corrupt(format!(
            "{KEYRING_FILE} is {n} bytes with SHA256 {h}, stamp says {} bytes with SHA256 {}",
            stamp.size, stamp.sha256
        )),
        Err(e) => KeyringState::Corrupt(format!("{KEYRING_FILE} unreadable: {e}")),
    }
}

fn package_of<'a>(catalog: &'a Catalog, mirror_name: &str) -> Result<&'a KeyringPackage> {
    match catalog.mirror.get(mirror_name).map(|m| &m.keyring) {
        Some(Keyring::Package(k)) => Ok(k),
        _ => Err(Error::Other(format!(
            "mirror {mirror_name:?} has no keyring package in vm/kernels.toml"
        ))),
    }
}

fn source_desc(catalog: &Catalog, mirror_name: &str, k: &KeyringPackage) -> String {
    format!(
        "{} [keyring package {} of mirror {mirror_name}]",
        catalog.describe_suite(&k.mirror, &k.suite),
        k.package
    )
}

/// The newest version of the keyring package of `mirror_name` (network: one `apt-get
/// update` of the suite it comes from).
pub fn resolve(
    cache: &KernelCache,
    catalog: &Catalog,
    mirror_name: &str,
    series: &str,
) -> Result<LockEntry> {
    let k = package_of(catalog, mirror_name)?;
    let apt = cache.apt_root(catalog, &Lock::default(), &k.mirror, &k.suite, series)?;
    apt.update().map_err(|e| Error::SourceUnreachable {
        series: series.into(),
        source_desc: source_desc(catalog, mirror_name, k),
        reason: e.to_string(),
    })?;
    let pkgs = apt.packages()?;
    let p = crate::apt::newest_matching(&pkgs, &k.package, 0).ok_or_else(|| Error::NoPackage {
        series: series.into(),
        pattern: k.package.clone(),
        source_desc: source_desc(catalog, mirror_name, k),
    })?;
    Ok(LockEntry::from_package(&k.mirror, &k.suite, p))
}

/// The verified keyring file of `mirror_name`: cached, else fetched through the mirror the
/// package comes from (the version pinned in `lock`, or the newest when none is pinned).
pub fn ensure(
    cache: &KernelCache,
    catalog: &Catalog,
    lock: &Lock,
    mirror_name: &str,
    series: &str,
) -> Result<PathBuf> {
    let k = package_of(catalog, mirror_name)?;
    let entry = match lock.keyring.get(mirror_name) {
        Some(e) if e.package == k.package && e.mirror == k.mirror && e.suite == k.suite => {
            e.clone()
        }
        Some(e) => {
            return Err(Error::Other(format!(
                "keyring of mirror {mirror_name}: vm/kernels.lock pins {} from {} {}, vm/kernels.toml asks for {} from {} {}; run `cargo xtask kernels update`",
                e.package, e.mirror, e.suite, k.package, k.mirror, k.suite
            )))
        }
        None => {
            let e = resolve(cache, catalog, mirror_name, series)?;
            eprintln!(
                "keyring of mirror {mirror_name}: not in vm/kernels.lock; using {} {} (run `cargo xtask kernels update` to pin it)",
                e.package, e.version
            );
            e
        }
    };
    let root = cache.root.join("keyrings");
    fs::create_dir_all(&root).ctx(&root)?;
    let _lock = FileLock::exclusive(&root.join(format!("{}.lock", entry.sha256)))?;
    match check(cache, &entry, &k.file) {
        KeyringState::Valid(path) => return Ok(path),
        KeyringState::Missing => {}
        KeyringState::Corrupt(why) => {
            eprintln!("keyring of mirror {mirror_name}: cached copy is corrupt ({why}); deleting it and fetching again");
            let d = dir(cache, &entry);
            fs::remove_dir_all(&d).ctx(&d)?;
        }
    }
    let apt = cache.apt_root(catalog, lock, &k.mirror, &k.suite, series)?;
    let desc = source_desc(catalog, mirror_name, k);
    cache.with_verified_deb(series, &entry, &apt, &desc, |deb_path| {
        let data = deb::extract_file(deb_path, &k.file)?;
        store(cache, &entry, &k.file, &data)
    })
}

/// Writes a keyring into the cache (temp dir, rename, stamp last).
pub fn store(cache: &KernelCache, entry: &LockEntry, file: &str, data: &[u8]) -> Result<PathBuf> {
    let d = dir(cache, entry);
    let tmp = d.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).ctx(&tmp)?;
    let p = tmp.join(KEYRING_FILE);
    fs::write(&p, data).ctx(&p)?;
    let _ = fs::remove_dir_all(&d);
    fs::rename(&tmp, &d).ctx(&d)?;
    let stamp = Stamp {
        package: entry.package.clone(),
        version: entry.version.clone(),
        deb_sha256: entry.sha256.clone(),
        file: file.to_string(),
        sha256: sha256_bytes(data),
        size: data.len() as u64,
    };
    let sp = d.join("stamp.json");
    let body = serde_json::to_string_pretty(&stamp).map_err(|e| Error::Other(e.to_string()))?;
    fs::write(&sp, body).ctx(&sp)?;
    Ok(d.join(KEYRING_FILE))
}
