//! Taking a .deb apart in Rust: `ar` → `data.tar{,.xz,.zst}` → tar. From a kernel
//! package only the image (`boot/vmlinuz-*`, or `usr/lib/modules/*/vmlinuz` in newer
//! Debian) and its config are kept, stopping as soon as both are found; from a keyring
//! package, one named file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, IoCtx, Result};

/// What the cache keeps of a kernel package.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The bzImage.
    pub vmlinuz: Vec<u8>,
    /// The kernel's build config, when the package ships one.
    pub config: Option<Vec<u8>>,
    /// `uname -r` of the kernel, from the vmlinuz file name.
    pub release: String,
}

fn scan_tar<R: Read>(r: R, deb: &Path) -> Result<Extracted> {
    let io = |e: std::io::Error| Error::io(deb, e);
    let mut ar = tar::Archive::new(r);
    let mut vmlinuz: Option<(String, Vec<u8>)> = None;
    let mut config: Option<Vec<u8>> = None;
    for entry in ar.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        // Classic layout: boot/vmlinuz-<release>; newer Debian (forky/sid):
        // usr/lib/modules/<release>/vmlinuz (and .../config).
        let modules_file = |name: &str| -> Option<String> {
            let rest = path
                .strip_prefix("usr/lib/modules/")
                .or_else(|| path.strip_prefix("lib/modules/"))?;
            let (rel, file) = rest.split_once('/')?;
            (file == name).then(|| rel.to_string())
        };
        if let Some(rel) = path
            .strip_prefix("boot/vmlinuz-")
            .map(str::to_string)
            .or_else(|| modules_file("vmlinuz"))
        {
            let mut v = Vec::new();
            entry.read_to_end(&mut v).map_err(io)?;
            vmlinuz = Some((rel, v));
        } else if path.starts_with("boot/config-") || modules_file("config").is_some() {
            let mut v = Vec::new();
            entry.read_to_end(&mut v).map_err(io)?;
            config = Some(v);
        }
        if vmlinuz.is_some() && config.is_some() {
            break;
        }
    }
    match vmlinuz {
        Some((release, vmlinuz)) => Ok(Extracted {
            vmlinuz,
            config,
            release,
        }),
        None => Err(Error::MissingInDeb {
            deb: deb.to_path_buf(),
            what: "boot/vmlinuz-*".into(),
        }),
    }
}

/// Extracts the kernel image (and its config) from a Debian/Ubuntu kernel .deb.
pub fn extract_kernel(deb: &Path) -> Result<Extracted> {
    with_data_tar(deb, |r| scan_tar(r, deb))
}

/// Extracts one regular file (`path` as in `dpkg -c`, without `./`) from a .deb.
pub fn extract_file(deb: &Path, path: &str) -> Result<Vec<u8>> {
    with_data_tar(deb, |r| {
        let io = |e: std::io::Error| Error::io(deb, e);
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
            if name.trim_start_matches("./") == path && entry.header().entry_type().is_file() {
                let mut v = Vec::new();
                entry.read_to_end(&mut v).map_err(io)?;
                return Ok(v);
            }
        }
        Err(Error::MissingInDeb {
            deb: deb.to_path_buf(),
            what: path.to_string(),
        })
    })
}

/// Opens the `data.tar{,.xz,.zst}` member of a .deb (Debian uses xz, Ubuntu zstd since 21.10) and hands
/// the decompressed stream to `f`.
fn with_data_tar<T>(deb: &Path, f: impl FnOnce(Box<dyn Read + '_>) -> Result<T>) -> Result<T> {
    let file = File::open(deb).ctx(deb)?;
    let mut ar = ar::Archive::new(BufReader::new(file));
    while let Some(entry) = ar.next_entry() {
        let entry = entry.ctx(deb)?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        match name.trim_end_matches('/') {
            "data.tar.xz" => return f(Box::new(liblzma::read::XzDecoder::new(entry))),
            "data.tar.zst" => {
                return f(Box::new(zstd::stream::read::Decoder::new(entry).ctx(deb)?))
            }
            "data.tar" => return f(Box::new(entry)),
            n if n.starts_with("data.tar") => {
                return Err(Error::parse(
                    deb,
                    format!("unsupported payload compression {n}"),
                ))
            }
            _ => {}
        }
    }
    Err(Error::MissingInDeb {
        deb: deb.to_path_buf(),
        what: "data.tar.* member".into(),
    })
}

/// Reads the version string of an x86 bzImage (`HdrS` boot protocol header).
/// Returns the first word (the `uname -r`).
pub fn bzimage_release(data: &[u8]) -> Option<String> {
    if data.len() < 0x210 || &data[0x202..0x206] != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize + 0x200;
    let s = data.get(off..)?;
    let end = s.iter().take(256).position(|&b| b == 0)?;
    let text = std::str::from_utf8(&s[..end]).ok()?;
    text.split_whitespace().next().map(str::to_string)
}

/// Whether `data` starts like an x86 bzImage.
pub(crate) fn is_bzimage(data: &[u8]) -> bool {
    data.len() >= 0x210 && &data[0x202..0x206] == b"HdrS"
}
