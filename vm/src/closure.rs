//! A host program and everything its loader needs, placed in the initramfs at the same
//! absolute paths (`cargo xtask vm-test --tracer`).
//!
//! Why a copy and not a shared host root: the guests' kernels differ in which of virtio-pci,
//! fuse and virtiofs are modules (Debian 5.10/6.1 build them as modules, 6.12 in; Ubuntu's
//! modules are a separate package), while an initramfs works the same on every kernel, needs
//! no daemon on the host and no module from the kernel's packages (vm/README.md has the
//! measurements).
//!
//! The library list is what the host's own loader resolves (`ldd`), so the guest gets
//! exactly the files the program uses on the host; a script's `#!` interpreter is followed
//! the same way. Every symbolic link met on a path (`/lib → usr/lib`, `/lib64`,
//! `libfoo.so.1 → libfoo.so.1.2.3`) becomes a link in the archive and the file is copied
//! where it leads, so `PT_INTERP` and the loader's default search path resolve in the guest
//! as they do on the host. What a program opens by itself at run time (`dlopen` of a name
//! that is not `DT_NEEDED`, data files) is not found this way: `--guest-file` adds it.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoCtx, Result};
use crate::initramfs::{EntryKind, Initramfs};

/// Guest paths the agent mounts over or writes to: a host file placed there would be hidden
/// or sent back as a result.
pub(crate) const RESERVED: &[&str] = &["proc", "sys", "dev", "tmp", "results", "init"];

/// Links followed on one path before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Parses `ldd`'s output: the absolute paths it resolved (libraries and the interpreter).
/// A library it could not find is an error naming it; a static program needs nothing.
pub(crate) fn parse_ldd(text: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") || line.contains("not a dynamic executable") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("shared library {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
        // Otherwise a virtual object (linux-vdso.so.1 (0x…)): nothing to copy.
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The interpreter of a `#!` script (its first word), if `head` starts like one.
pub(crate) fn shebang(head: &[u8]) -> Option<PathBuf> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.split_whitespace()
        .next()
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
}

fn head(path: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).ctx(path)?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf).ctx(path)?;
    buf.truncate(n);
    Ok(buf)
}

/// What `program` needs besides itself: its `#!` interpreter (and that one's needs), or the
/// shared libraries and loader of an ELF program as the host's `ldd` resolves them.
pub fn needed(program: &Path) -> Result<Vec<PathBuf>> {
    needed_depth(program, 0)
}

fn needed_depth(program: &Path, depth: usize) -> Result<Vec<PathBuf>> {
    let h = head(program)?;
    if let Some(interp) = shebang(&h) {
        if depth > 4 {
            return Err(Error::Other(format!(
                "{}: too many nested #! interpreters",
                program.display()
            )));
        }
        let mut v = vec![interp.clone()];
        v.extend(needed_depth(&interp, depth + 1)?);
        return Ok(v);
    }
    if !h.starts_with(b"\x7fELF") {
        return Err(Error::Other(format!(
            "{}: neither an ELF program nor a #! script",
            program.display()
        )));
    }
    let out = Command::new("ldd")
        .arg(program)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Command {
            cmd: format!("ldd {}", program.display()),
            detail: e.to_string(),
        })?;
    // ldd exits 1 for a static program ("not a dynamic executable"): parse either way.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_ldd(&text).map_err(|e| Error::Other(format!("{}: {e}", program.display())))
}

/// `a/./b/../c` → `a/c`, without touching the file system (callers only join link-free
/// prefixes with link targets, so `..` means the lexical parent).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn reserved(guest: &str) -> Option<&'static str> {
    let first = guest.split('/').find(|c| !c.is_empty())?;
    RESERVED.iter().copied().find(|r| *r == first)
}

/// Where the guest finds a host data file (a profile, a catalog): the same path, or the same
/// path under `/host` when it starts in a directory the guest keeps for itself (a checkout
/// in `/tmp`). Relative paths between such files stay valid, since all move alike.
pub fn guest_path(host: &Path) -> PathBuf {
    match reserved(&host.to_string_lossy()) {
        Some(_) => Path::new("/host").join(lexical(host).strip_prefix("/").unwrap_or(host)),
        None => host.to_path_buf(),
    }
}

/// Copies a host data file (not a program) to [`guest_path`]: its own path when it can, or its
/// content under `/host`. Returns the guest path.
pub fn place_data(fs: &mut Initramfs, host: &Path) -> Result<PathBuf> {
    let guest = guest_path(host);
    if guest == host {
        place(fs, host)?;
    } else {
        let data = std::fs::read(host).ctx(host)?;
        fs.file(&guest.to_string_lossy(), data, 0o644)?;
    }
    Ok(guest)
}

/// Places host `path` (a file, or a directory and everything under it) at the same absolute
/// path of `fs`, turning every symbolic link on the way into a link of the archive. A
/// directory the guest already has where the host has a link (the guest's own `/bin`, the
/// host's `/bin → usr/bin`) is kept, and the file goes where the link leads.
pub fn place(fs: &mut Initramfs, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::Other(format!(
            "{}: not an absolute path",
            path.display()
        )));
    }
    place_depth(fs, &lexical(path), 0)
}

fn place_depth(fs: &mut Initramfs, path: &Path, links: usize) -> Result<()> {
    if links > MAX_LINKS {
        return Err(Error::Other(format!(
            "{}: too many levels of symbolic links",
            path.display()
        )));
    }
    let comps: Vec<_> = path.components().skip(1).collect();
    let mut cur = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        let next = cur.join(c);
        let guest = next.to_string_lossy().into_owned();
        if let Some(r) = reserved(&guest) {
            return Err(Error::Other(format!(
                "{}: cannot be placed in the guest, whose /{r} is its own",
                path.display()
            )));
        }
        let meta = std::fs::symlink_metadata(&next).ctx(&next)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&next).ctx(&next)?;
            if fs.kind(&guest) != Some(EntryKind::Dir) {
                fs.symlink(&guest, &target.to_string_lossy())?;
            }
            let mut resolved = cur.join(&target);
            for rest in &comps[i + 1..] {
                resolved.push(rest);
            }
            return place_depth(fs, &lexical(&resolved), links + 1);
        }
        if i + 1 == comps.len() {
            return place_entry(fs, &next, &guest, &meta, links);
        }
        cur = next;
    }
    Ok(())
}

fn place_entry(
    fs: &mut Initramfs,
    host: &Path,
    guest: &str,
    meta: &std::fs::Metadata,
    links: usize,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if meta.is_dir() {
        fs.dir(guest)?;
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .ctx(host)?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            place_depth(fs, &e, links)?;
        }
        return Ok(());
    }
    if !meta.is_file() {
        return Err(Error::Other(format!(
            "{}: neither a regular file nor a directory",
            host.display()
        )));
    }
    match fs.kind(guest) {
        // The same host path placed twice (libc is needed by everything): one copy.
        Some(EntryKind::File) => Ok(()),
        Some(other) => Err(Error::Other(format!(
            "{}: the guest already has a {other:?} there",
            host.display()
        ))),
        None => {
            let data = std::fs::read(host).ctx(host)?;
            fs.file(guest, data, meta.permissions().mode())?;
            Ok(())
        }
    }
}

/// Places `program` and everything it needs (see [`needed`]); returns the needed paths.
pub fn place_program(fs: &mut Initramfs, program: &Path) -> Result<Vec<PathBuf>> {
    let needs = needed(program)?;
    place(fs, program)?;
    for n in &needs {
        place(fs, n)?;
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_resolved_paths_and_the_interpreter_but_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5b5f1000)\n\
                    \tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007f0e0a0a0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e09e00000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e0a2c4000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libbpf.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it_and_a_static_program_needs_nothing() {
        let e = parse_ldd("\tlibz3.so.4 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n")
            .unwrap_err();
        assert!(e.contains("libz3.so.4"), "{e}");
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn shebang_takes_the_interpreter_only() {
        assert_eq!(
            shebang(b"#!/usr/bin/python3 -u\nprint(1)\n"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(shebang(b"#! /bin/sh\n"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(shebang(b"\x7fELF\x02\x01"), None);
        assert_eq!(shebang(b"#!relative\n"), None);
    }

    #[test]
    fn lexical_normalisation_resolves_dot_dot_against_the_prefix() {
        assert_eq!(
            lexical(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/./ld.so")),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/ld.so")
        );
        assert_eq!(lexical(Path::new("/../a")), PathBuf::from("/a"));
    }

    #[test]
    fn reserved_guest_paths_are_named() {
        assert_eq!(reserved("/tmp/x/tracer"), Some("tmp"));
        assert_eq!(reserved("/results"), Some("results"));
        assert_eq!(reserved("/usr/bin/bpftrace"), None);
        assert_eq!(reserved("/tmpfoo/x"), None);
    }
}
