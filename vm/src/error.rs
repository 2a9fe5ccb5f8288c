//! Errors of the host side. Every variant renders as one line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error(
        "unknown kernel series {0:?} (known: {1}); or pass a local image: --kernel PATH/TO/bzImage"
    )]
    UnknownSeries(String, String),
    #[error("kernel {series}: no entry in {lock}; run `cargo xtask kernels update`")]
    NotLocked { series: String, lock: PathBuf },
    #[error("kernel {series}: source {source_desc} could not be reached or verified ({reason}); pass a local image instead: --kernel PATH/TO/bzImage")]
    SourceUnreachable {
        series: String,
        source_desc: String,
        reason: String,
    },
    #[error("kernel {series}: no package matching {pattern} in {source_desc}")]
    NoPackage {
        series: String,
        pattern: String,
        source_desc: String,
    },
    #[error("{what}: SHA256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{deb}: no {what} inside the package")]
    MissingInDeb { deb: PathBuf, what: String },
    #[error("`{cmd}` failed: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{0} is not an x86 bzImage (no HdrS header)")]
    NotBzImage(PathBuf),
    #[error("guest binary {name:?} listed in {config} was not found at {path}")]
    MissingGuestBinary {
        name: String,
        config: PathBuf,
        path: PathBuf,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn parse(path: impl Into<PathBuf>, msg: impl ToString) -> Self {
        Error::Parse {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

/// Attaches a path to io errors: `fs::read(p).ctx(p)?`.
pub trait IoCtx<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoCtx<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
