//! Errors of the host side. Every variant renders as one line.

use std::path::PathBuf;

/// The host side's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop `vm-test`, `kernels update` or a fault drill before a guest
/// outcome exists. `cargo xtask` prints it as one line and exits 2 (bad input or
/// infrastructure), unlike a guest that fails, which is a verdict (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A configuration file (`kernels.toml`, `kernels.lock`, `guest.toml`, a tracer profile)
    /// could not be parsed or is inconsistent.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// One line saying what is wrong.
        msg: String,
    },
    /// `--kernel` named a series that `kernels.toml` does not have: (the name, the known
    /// series joined by `, `).
    #[error(
        "unknown kernel series {0:?} (known: {1}); or pass a local image: --kernel PATH/TO/bzImage"
    )]
    UnknownSeries(String, String),
    /// A series of `kernels.toml` has no pinned package in `kernels.lock` yet.
    #[error("kernel {series}: no entry in {lock}; run `cargo xtask kernels update`")]
    NotLocked {
        /// The series.
        series: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The mirror could not be reached, or its index failed apt's signature check.
    #[error("kernel {series}: source {source_desc} could not be reached or verified ({reason}); pass a local image instead: --kernel PATH/TO/bzImage")]
    SourceUnreachable {
        /// The series whose package was wanted.
        series: String,
        /// The suite, as [`crate::catalog::Catalog::describe_suite`] shows it.
        source_desc: String,
        /// apt's message, on one line.
        reason: String,
    },
    /// No package of the suite matches the series' pattern (nor its fallbacks).
    #[error("kernel {series}: no package matching {pattern} in {source_desc}")]
    NoPackage {
        /// The series (or the mirror, for a keyring package).
        series: String,
        /// The pattern(s) tried.
        pattern: String,
        /// The suite searched.
        source_desc: String,
    },
    /// A downloaded file's SHA256 is not the one pinned in the lock.
    #[error("{what}: SHA256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The file.
        what: String,
        /// The pinned hash (hex).
        expected: String,
        /// The hash of what arrived (hex).
        actual: String,
    },
    /// A `.deb` lacks the member it must have (a kernel image, a keyring file).
    #[error("{deb}: no {what} inside the package")]
    MissingInDeb {
        /// The package file.
        deb: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// A helper program (apt, QEMU, cargo, ldd) could not start or failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line, as shown to the user.
        cmd: String,
        /// Its exit status and first line of output, or the spawn error.
        detail: String,
    },
    /// `--kernel PATH` is not an x86 boot image.
    #[error("{0} is not an x86 bzImage (no HdrS header)")]
    NotBzImage(PathBuf),
    /// A binary that `vm/guest.toml` puts into the guest was not built.
    #[error("guest binary {name:?} listed in {config} was not found at {path}")]
    MissingGuestBinary {
        /// The binary's name in the guest config.
        name: String,
        /// The guest config that lists it.
        config: PathBuf,
        /// Where the musl build should have put it.
        path: PathBuf,
    },
    /// Anything else, already phrased as one line.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, msg: impl ToString) -> Self {
        Error::Parse {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

/// Attaches a path to io errors: `fs::read(p).ctx(p)?`.
pub(crate) trait IoCtx<T> {
    /// Turns an io error into [`Error::Io`] naming `path`.
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoCtx<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
