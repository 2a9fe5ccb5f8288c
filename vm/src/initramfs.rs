//! Uncompressed newc initramfs written with the `cpio` crate: entries sorted
//! by name, mtime 0, uid/gid 0, inode numbers assigned in order, so the same
//! inputs always give the same bytes.
//!
//! Symbolic links are entries too: a host program copied in with its shared libraries
//! ([`crate::closure`]) needs the host's `/lib → usr/lib` and `/lib64` links, since its
//! `PT_INTERP` and the loader's search paths name them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoCtx, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// What a path is in an archive being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (mode 0755).
    Dir,
    /// A regular file.
    File,
    /// A symbolic link to this target.
    Symlink(String),
}

/// Collects the entries of one cpio archive.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

fn norm(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    if p.is_empty() || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(Error::Other(format!("bad initramfs path {path:?}")));
    }
    Ok(p.to_string())
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the missing parent directories of `p`. A parent that is a file or a link is an
    /// error: entries are always placed at link-free paths.
    fn parents(&mut self, p: &str) -> Result<()> {
        let mut acc = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            match self.nodes.entry(acc.clone()).or_insert(Node::Dir) {
                Node::Dir => {}
                _ => {
                    return Err(Error::Other(format!(
                        "initramfs: cannot add {p:?}: its parent {acc:?} is not a directory"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> Result<&mut Self> {
        let p = norm(path)?;
        self.parents(&p)?;
        self.nodes.insert(p, Node::Dir);
        Ok(self)
    }

    /// Adds a regular file (and its parent directories); `mode` is the permission bits.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<&mut Self> {
        let p = norm(path)?;
        if data.len() > u32::MAX as usize {
            return Err(Error::Other(format!("{path}: too large for newc")));
        }
        self.parents(&p)?;
        self.nodes.insert(
            p,
            Node::File {
                data,
                mode: mode & 0o7777,
            },
        );
        Ok(self)
    }

    /// Adds a symbolic link `path` → `target` (and the parents of `path`). A link over an
    /// existing directory or file is an error; the same link twice is not.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let p = norm(path)?;
        if target.is_empty() {
            return Err(Error::Other(format!(
                "symlink {path:?} has an empty target"
            )));
        }
        match self.nodes.get(&p) {
            None => {}
            Some(Node::Symlink(t)) if t == target => return Ok(self),
            Some(_) => {
                return Err(Error::Other(format!(
                    "initramfs: {path:?} already exists, cannot make it a link to {target:?}"
                )))
            }
        }
        self.parents(&p)?;
        self.nodes.insert(p, Node::Symlink(target.to_string()));
        Ok(self)
    }

    /// What `path` is in the archive: a directory, a file, a link (with its target), or nothing.
    pub fn kind(&self, path: &str) -> Option<EntryKind> {
        let p = norm(path).ok()?;
        self.nodes.get(&p).map(|n| match n {
            Node::Dir => EntryKind::Dir,
            Node::File { .. } => EntryKind::File,
            Node::Symlink(t) => EntryKind::Symlink(t.clone()),
        })
    }

    /// Total bytes of file contents (what the guest's memory must hold once unpacked).
    pub fn data_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Copies a host directory tree (regular files and directories) under `prefix`.
    pub fn tree(&mut self, host: &Path, prefix: &str) -> Result<&mut Self> {
        self.dir(prefix)?;
        let mut entries: Vec<_> = std::fs::read_dir(host).ctx(host)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let guest = format!("{}/{}", prefix.trim_end_matches('/'), name);
            let p = e.path();
            let m = std::fs::metadata(&p).ctx(&p)?;
            if m.is_dir() {
                self.tree(&p, &guest)?;
            } else if m.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let data = std::fs::read(&p).ctx(&p)?;
                self.file(&guest, data, m.permissions().mode())?;
            }
        }
        Ok(self)
    }

    /// Number of entries (directories, files and links).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Writes the archive (with its trailer).
    pub fn write<W: Write>(&self, mut w: W) -> std::io::Result<W> {
        for (i, (name, node)) in self.nodes.iter().enumerate() {
            let b = cpio::NewcBuilder::new(name)
                .ino(i as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            match node {
                Node::Dir => {
                    let wr = b.mode(0o040755).nlink(2).write(w, 0);
                    w = wr.finish()?;
                }
                Node::File { data, mode } => {
                    let mut wr = b.mode(0o100000 | mode).nlink(1).write(w, data.len() as u32);
                    wr.write_all(data)?;
                    w = wr.finish()?;
                }
                Node::Symlink(target) => {
                    let mut wr = b.mode(0o120777).nlink(1).write(w, target.len() as u32);
                    wr.write_all(target.as_bytes())?;
                    w = wr.finish()?;
                }
            }
        }
        cpio::newc::trailer(w)
    }

    /// The archive as bytes ([`Self::write`] into memory). Concatenated cpio archives are one
    /// initramfs to the kernel, so per-run settings are appended to a shared base.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.write(Vec::new()).unwrap_or_default()
    }
}
