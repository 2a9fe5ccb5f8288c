//! Uncompressed newc initramfs written with the `cpio` crate: entries sorted
//! by name, mtime 0, uid/gid 0, inode numbers assigned in order, so the same
//! inputs always give the same bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoCtx, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
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
    pub fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, p: &str) {
        let mut acc = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            self.nodes.entry(acc.clone()).or_insert(Node::Dir);
        }
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) -> Result<&mut Self> {
        let p = norm(path)?;
        self.parents(&p);
        self.nodes.insert(p, Node::Dir);
        Ok(self)
    }

    /// Adds a regular file (and its parent directories); `mode` is the permission bits.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<&mut Self> {
        let p = norm(path)?;
        if data.len() > u32::MAX as usize {
            return Err(Error::Other(format!("{path}: too large for newc")));
        }
        self.parents(&p);
        self.nodes.insert(
            p,
            Node::File {
                data,
                mode: mode & 0o7777,
            },
        );
        Ok(self)
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

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

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
            }
        }
        cpio::newc::trailer(w)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.write(Vec::new()).unwrap_or_default()
    }
}
