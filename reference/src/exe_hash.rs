//! SHA-256 of the program behind each exec, the repeated Requested operation of
//! `sched_process_exec`.
//!
//! Opening `/proc/PID/exe` of another process passes `ptrace_may_access`, which needs
//! CAP_SYS_PTRACE once the tracer's permitted set is smaller than the target's. Only the
//! `open` runs in the Requested ring; hashing happens after returning to Unprivileged.
//! Digests are cached by the file's identity (device, inode, size, mtime), looked up with a
//! plain `stat` of the exec'd path, so a storm of execs of one program raises the
//! capability once.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};

/// What makes two looks at a program file "the same file, unchanged": the cache key.
///
/// Device and inode name the file; size and modification time (in nanoseconds since the
/// epoch) catch a program replaced in place, so a rebuilt binary is hashed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl FileIdentity {
    /// The identity of the file `meta` describes (from `stat`/`fstat`, no capability needed).
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }
}

/// SHA-256 digests of exec'd programs, keyed by the file's identity (device, inode, size,
/// mtime), for the life of the tracer.
///
/// Why: `sched_process_exec` events carry the program's digest (`sha256`), and hashing needs a
/// Requested-ring `open` of `/proc/PID/exe`. With the cache, only the first exec of a
/// program raises CAP_SYS_PTRACE; later execs of the same unchanged file are answered from
/// a plain `stat`. The cache never forgets (a tracer sees a bounded set of programs).
#[derive(Debug, Default)]
pub struct ExeHashCache {
    /// Lower-case hexadecimal SHA-256 (64 characters) per file identity.
    digests: HashMap<FileIdentity, String>,
    /// Lookups answered from the cache (no capability raised); the tracer reports it at exit.
    pub hits: u64,
    /// Files hashed (each one after a Requested-ring open); the tracer reports it at exit.
    pub misses: u64,
}

impl ExeHashCache {
    /// A cached digest for the program at `path` (no capability needed), if known.
    pub fn lookup(&mut self, path: &str) -> Option<String> {
        let id = FileIdentity::of(&std::fs::metadata(path).ok()?);
        let found = self.digests.get(&id).cloned();
        if found.is_some() {
            self.hits += 1;
        }
        found
    }

    /// Hashes an already opened program file and remembers the digest.
    pub fn hash_open_file(&mut self, mut file: File) -> std::io::Result<String> {
        self.misses += 1;
        let id = FileIdentity::of(&file.metadata()?);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = format!("{:x}", hasher.finalize());
        self.digests.insert(id, digest.clone());
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_caches_by_identity() {
        let dir = std::env::temp_dir().join(format!("capring-exe-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prog");
        std::fs::write(&path, b"abc").unwrap();
        let mut cache = ExeHashCache::default();
        let p = path.to_str().unwrap();
        assert_eq!(cache.lookup(p), None);
        let d = cache.hash_open_file(File::open(&path).unwrap()).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(cache.lookup(p).as_deref(), Some(d.as_str()));
        assert_eq!((cache.hits, cache.misses), (1, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
