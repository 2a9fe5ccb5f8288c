//! `vm/kernels.toml` (where each kernel series comes from) and
//! `vm/kernels.lock` (the exact package chosen for each series).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoCtx, Result};

/// An apt source (one archive, signed by one keyring).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The archive root (`http://deb.debian.org/debian`); `CAPRING_VM_MIRROR_<NAME>`
    /// overrides it ([`Catalog::mirror_named`]).
    pub uri: String,
    /// What verifies the archive's signed `Release` file.
    pub keyring: Keyring,
    /// Archive components searched (default `["main"]`).
    #[serde(default = "default_components")]
    pub components: Vec<String>,
}

/// Where a mirror's signing keyring comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Keyring {
    /// A keyring file on this machine (`keyring = "/usr/share/keyrings/…gpg"`).
    File(String),
    /// A keyring file inside a package of another mirror, so that a machine without the
    /// keyring installed can still verify the archive: the package is fetched through that
    /// mirror (whose own keyring must be a file), checked against its SHA256 pinned in
    /// `kernels.lock` and cached by that hash, like a kernel.
    Package(KeyringPackage),
}

impl From<&str> for Keyring {
    fn from(path: &str) -> Self {
        Keyring::File(path.to_string())
    }
}

/// `keyring = { mirror = "debian", suite = "trixie", package = "…", file = "usr/share/…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringPackage {
    /// The mirror the package comes from (its own keyring must be a file).
    pub mirror: String,
    /// The suite of that mirror.
    pub suite: String,
    /// The package name (exact, no pattern).
    pub package: String,
    /// Path of the keyring inside the package (as in `dpkg -c`, without `./`).
    pub file: String,
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

fn default_min_size() -> u64 {
    4 << 20
}

fn yes() -> bool {
    true
}

/// Where one kernel series comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The suite searched (`bookworm`, `focal-updates`).
    pub suite: String,
    /// The name of a `[mirror.NAME]` table.
    pub mirror: String,
    /// Package-name pattern; `*` matches any run of characters.
    pub package: String,
    /// Tried in order when nothing matches `package` (e.g. a suite without
    /// `-unsigned`, or one that moved the image into `linux-binary-*`).
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Packages smaller than this are skipped (meta and transitional
    /// packages that depend on the real image).
    #[serde(default = "default_min_size")]
    pub min_size: u64,
    /// Part of `--kernel all`.
    #[serde(default = "yes")]
    pub all: bool,
}

/// `vm/kernels.toml`: the one list of kernel series, and the mirrors they come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Apt sources by name (`[mirror.debian]`).
    #[serde(default)]
    pub mirror: BTreeMap<String, Mirror>,
    /// Kernel series by name (`[kernel."6.1"]`); the name is what `--kernel` takes.
    #[serde(default)]
    pub kernel: BTreeMap<String, Source>,
}

impl Catalog {
    /// Reads and checks `path` ([`Self::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(path)?;
        Self::parse(&text).map_err(|m| Error::parse(path, m))
    }

    /// Parses a catalog and checks what TOML cannot: every series names a known mirror, and a
    /// keyring package comes from a known mirror whose own keyring is a file, at a relative
    /// path inside the package. The error is one line.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let c: Catalog = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        for (name, m) in &c.mirror {
            let Keyring::Package(k) = &m.keyring else {
                continue;
            };
            match c.mirror.get(&k.mirror).map(|from| &from.keyring) {
                None => {
                    return Err(format!(
                        "mirror {name:?}: keyring package from unknown mirror {:?}",
                        k.mirror
                    ))
                }
                Some(Keyring::Package(_)) => {
                    return Err(format!(
                        "mirror {name:?}: keyring package from mirror {:?}, whose own keyring is a package too (only one step is supported)",
                        k.mirror
                    ))
                }
                Some(Keyring::File(_)) => {}
            }
            if k.file.is_empty() || k.file.starts_with('/') || k.file.contains("..") {
                return Err(format!("mirror {name:?}: bad keyring file {:?}", k.file));
            }
        }
        for (series, src) in &c.kernel {
            if !c.mirror.contains_key(&src.mirror) {
                return Err(format!(
                    "kernel {series:?}: unknown mirror {:?}",
                    src.mirror
                ));
            }
        }
        Ok(c)
    }

    /// A mirror by name (which must exist), with `CAPRING_VM_MIRROR_<NAME>` overriding its URI.
    pub fn mirror_named(&self, name: &str) -> Mirror {
        let mut m = self.mirror[name].clone();
        let var = format!(
            "CAPRING_VM_MIRROR_{}",
            name.to_uppercase().replace('-', "_")
        );
        if let Ok(uri) = std::env::var(var) {
            if !uri.is_empty() {
                m.uri = uri;
            }
        }
        m
    }

    /// Series names, oldest first.
    pub fn series(&self) -> Vec<String> {
        sorted_series(self.kernel.keys().cloned())
    }

    /// Series that `--kernel all` runs, oldest first.
    pub fn all_series(&self) -> Vec<String> {
        sorted_series(
            self.kernel
                .iter()
                .filter(|(_, s)| s.all)
                .map(|(k, _)| k.clone()),
        )
    }

    /// Where a series comes from, for messages ([`Self::describe_suite`]).
    pub fn describe(&self, src: &Source) -> String {
        self.describe_suite(&src.mirror, &src.suite)
    }

    /// `debian trixie (http://deb.debian.org/debian)`.
    pub fn describe_suite(&self, mirror: &str, suite: &str) -> String {
        let m = self.mirror_named(mirror);
        format!("{mirror} {suite} ({})", m.uri)
    }
}

/// Series names oldest first, in Debian version order (`5.4` before `5.10`).
pub fn sorted_series(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort_by(|a, b| crate::debver::compare(a, b));
    v
}

/// Collapses a multi-line message (toml's errors quote the source) into one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compiles a package-name pattern of `vm/kernels.toml`, where `*` matches any (possibly
/// empty) run of characters and every other character, `?`, `[`, `{` and `\` included,
/// stands for itself. The matcher is compiled once and applied to every package of a
/// `Packages` index (tens of thousands of names).
pub fn glob_matcher(pattern: &str) -> globset::GlobMatcher {
    let mut glob = String::with_capacity(pattern.len());
    for (i, literal) in pattern.split('*').enumerate() {
        // `**` would mean "any directories" to globset; a run of stars is one star here.
        if i > 0 && !glob.ends_with('*') {
            glob.push('*');
        }
        glob.push_str(&globset::escape(literal));
    }
    globset::GlobBuilder::new(&glob)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .expect("an escaped pattern whose only operator is `*` is a valid glob")
        .compile_matcher()
}

/// Whether `name` matches `pattern` (see [`glob_matcher`]; compile it once when matching many
/// names).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    glob_matcher(pattern).is_match(name)
}

/// One locked kernel package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    /// The mirror it was found in.
    pub mirror: String,
    /// The suite it was found in.
    pub suite: String,
    /// The exact package name (`linux-image-6.1.0-50-cloud-amd64-unsigned`).
    pub package: String,
    /// Its Debian version; `apt-get download` asks for exactly this one.
    pub version: String,
    /// Path of the .deb relative to the mirror URI.
    pub filename: String,
    /// Size of the .deb in bytes (sizes the download's progress bar).
    pub size: u64,
    /// SHA256 of the .deb (64 lower-case hex digits); also the name of its cache entry.
    pub sha256: String,
}

impl LockEntry {
    /// The lock entry of one package of a `Packages` index.
    pub fn from_package(mirror: &str, suite: &str, p: &crate::apt::PackageInfo) -> Self {
        LockEntry {
            mirror: mirror.to_string(),
            suite: suite.to_string(),
            package: p.package.clone(),
            version: p.version.clone(),
            filename: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.to_lowercase(),
        }
    }
}

/// `vm/kernels.lock`: the exact package of each series (and of each keyring package), so
/// that every machine boots the same kernels until `cargo xtask kernels update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// By series name.
    #[serde(default)]
    pub kernel: BTreeMap<String, LockEntry>,
    /// Keyring packages, by the name of the mirror whose keyring they hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keyring: BTreeMap<String, LockEntry>,
}

/// The comment block every rendered lock starts with.
const LOCK_HEADER: &str = "# Generated by `cargo xtask kernels update` from vm/kernels.toml. Do not edit by hand.\n# Each entry pins the exact package (name, version, pool filename, SHA256) of one kernel\n# series, or of the keyring of a mirror whose keyring comes from a package ([keyring.NAME]).\n\n";

impl Lock {
    /// A missing lock file is an empty lock.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|m| Error::parse(path, m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Parses a lock and checks each entry's SHA256 (64 hex digits) and pool filename
    /// (relative, no `..`); the error is one line.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let l: Lock = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        let entries = l.kernel.iter().map(|(s, e)| ("kernel", s, e));
        for (what, name, e) in entries.chain(l.keyring.iter().map(|(m, e)| ("keyring", m, e))) {
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{what} {name:?}: sha256 {:?} is not 64 hex digits",
                    e.sha256
                ));
            }
            if e.filename.is_empty() || e.filename.starts_with('/') || e.filename.contains("..") {
                return Err(format!("{what} {name:?}: bad filename {:?}", e.filename));
            }
        }
        Ok(l)
    }

    /// The lock file's text: the header, then the entries as TOML.
    pub fn render(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!("{LOCK_HEADER}{body}")
    }

    /// Writes [`Self::render`] to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, self.render()).ctx(&tmp)?;
        std::fs::rename(&tmp, path).ctx(path)
    }
}
