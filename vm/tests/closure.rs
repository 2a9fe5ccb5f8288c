//! A host program copied into the initramfs with what its loader needs, at the same paths
//! (`cargo xtask vm-test --tracer`): links on the way become links, files land where the
//! links lead, and what the program names resolves inside the archive.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use capring_vm::closure::{guest_path, needed, place, place_data, place_program};
use capring_vm::initramfs::{EntryKind, Initramfs};

/// A scratch directory outside /tmp (the guest's /tmp is its own: nothing is placed there):
/// cargo's target tmp directory, unless the checkout itself lives under /tmp (a CI clone
/// often does), then /var/tmp.
fn scratch() -> tempfile::TempDir {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let base = if target_tmp.starts_with("/tmp") {
        Path::new("/var/tmp")
    } else {
        target_tmp
    };
    tempfile::Builder::new()
        .prefix("capring-closure")
        .tempdir_in(base)
        .unwrap()
}

/// Follows the archive's own links from `path` to what it names (as the guest kernel would).
fn resolve(fs: &Initramfs, path: &Path) -> Option<(PathBuf, EntryKind)> {
    let mut cur = PathBuf::from("/");
    let comps: Vec<_> = path.components().skip(1).collect();
    let mut hops = 0;
    let mut i = 0;
    let mut todo: Vec<std::ffi::OsString> =
        comps.iter().map(|c| c.as_os_str().to_owned()).collect();
    while i < todo.len() {
        let next = cur.join(&todo[i]);
        match fs.kind(&next.to_string_lossy())? {
            EntryKind::Symlink(t) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = if t.starts_with('/') {
                    PathBuf::from(&t)
                } else {
                    cur.join(&t)
                };
                let mut rest: Vec<_> = Path::new(&lexical(&target))
                    .components()
                    .skip(1)
                    .map(|c| c.as_os_str().to_owned())
                    .collect();
                rest.extend(todo[i + 1..].iter().cloned());
                todo = rest;
                cur = PathBuf::from("/");
                i = 0;
            }
            k => {
                if i + 1 == todo.len() {
                    return Some((next, k));
                }
                cur = next;
                i += 1;
            }
        }
    }
    None
}

fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[test]
fn links_on_the_way_become_links_and_the_file_lands_where_they_lead() {
    let d = scratch();
    let root = d.path();
    std::fs::create_dir_all(root.join("usr/lib/x86")).unwrap();
    std::fs::write(root.join("usr/lib/x86/libx.so.1.2"), b"ELF-ish").unwrap();
    symlink("libx.so.1.2", root.join("usr/lib/x86/libx.so.1")).unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    let mut fs = Initramfs::new();
    place(&mut fs, &root.join("lib/x86/libx.so.1")).unwrap();
    let s = |p: &str| root.join(p).to_string_lossy().into_owned();
    assert_eq!(
        fs.kind(&s("lib")),
        Some(EntryKind::Symlink("usr/lib".into()))
    );
    assert_eq!(
        fs.kind(&s("usr/lib/x86/libx.so.1")),
        Some(EntryKind::Symlink("libx.so.1.2".into()))
    );
    assert_eq!(
        fs.kind(&s("usr/lib/x86/libx.so.1.2")),
        Some(EntryKind::File)
    );
    assert_eq!(
        resolve(&fs, &root.join("lib/x86/libx.so.1")).map(|(p, _)| p),
        Some(root.join("usr/lib/x86/libx.so.1.2"))
    );
    assert_eq!(fs.data_bytes(), 7, "one copy of the file");
}

#[test]
fn a_directory_the_guest_has_is_kept_where_the_host_has_a_link() {
    let d = scratch();
    let root = d.path();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/tool"), b"#!/bin/true\n").unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    let mut fs = Initramfs::new();
    let guest_bin = root.join("bin").to_string_lossy().into_owned();
    fs.dir(&guest_bin).unwrap();
    place(&mut fs, &root.join("bin/tool")).unwrap();
    assert_eq!(
        fs.kind(&guest_bin),
        Some(EntryKind::Dir),
        "the guest's own /bin stays"
    );
    assert_eq!(
        fs.kind(&root.join("usr/bin/tool").to_string_lossy()),
        Some(EntryKind::File)
    );
}

#[test]
fn link_loops_and_reserved_guest_paths_are_errors_not_hangs() {
    let d = scratch();
    let root = d.path();
    symlink("b", root.join("a")).unwrap();
    symlink("a", root.join("b")).unwrap();
    let err = place(&mut Initramfs::new(), &root.join("a/x")).unwrap_err();
    assert!(err.to_string().contains("too many levels"), "{err}");
    let err = place(&mut Initramfs::new(), Path::new("/tmp")).unwrap_err();
    assert!(err.to_string().contains("/tmp is its own"), "{err}");
    let err = place(&mut Initramfs::new(), Path::new("relative/x")).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[test]
fn a_script_needs_its_interpreter_and_the_interpreters_libraries() {
    let d = scratch();
    let script = d.path().join("tracer.sh");
    std::fs::write(&script, "#!/bin/sh\nexec true\n").unwrap();
    let needs = needed(&script).unwrap();
    assert_eq!(needs[0], PathBuf::from("/bin/sh"));
    assert!(
        needs
            .iter()
            .any(|p| p.to_string_lossy().contains("libc.so")),
        "{needs:?}"
    );
    let data = d.path().join("data.txt");
    std::fs::write(&data, "not a program").unwrap();
    assert!(needed(&data)
        .unwrap_err()
        .to_string()
        .contains("neither an ELF"));
}

/// A real dynamic program of the host (`/bin/sh`): everything `ldd` names, and the loader
/// its `PT_INTERP` names, resolve inside the archive to files.
#[test]
fn a_host_program_and_its_loader_resolve_inside_the_archive() {
    let mut fs = Initramfs::new();
    let needs = place_program(&mut fs, Path::new("/bin/sh")).unwrap();
    assert!(needs.len() >= 2, "libc and the loader at least: {needs:?}");
    for p in needs.iter().chain([&PathBuf::from("/bin/sh")]) {
        let got = resolve(&fs, p);
        assert!(
            matches!(got, Some((_, EntryKind::File))),
            "{} does not resolve to a file in the archive: {got:?}",
            p.display()
        );
    }
    let interp = needs
        .iter()
        .find(|p| p.to_string_lossy().contains("ld-linux"))
        .expect("an ELF loader");
    assert!(resolve(&fs, interp).is_some());
}

/// A profile and its catalog in a checkout under /tmp (which the guest keeps for itself) go
/// under /host, side by side as on the host; elsewhere they keep their path.
#[test]
fn data_files_under_a_reserved_directory_move_under_host() {
    let dir = tempfile::Builder::new()
        .prefix("capring-data")
        .tempdir_in("/tmp")
        .unwrap();
    let profile = dir.path().join("p/tracer.toml");
    let catalog = dir.path().join("p/tracer.catalog.toml");
    std::fs::create_dir_all(profile.parent().unwrap()).unwrap();
    std::fs::write(&profile, "name = \"t\"\n").unwrap();
    std::fs::write(&catalog, "[[event]]\n").unwrap();
    let mut fs = Initramfs::new();
    let guest_profile = place_data(&mut fs, &profile).unwrap();
    let guest_catalog = place_data(&mut fs, &catalog).unwrap();
    let expected = Path::new("/host").join(profile.strip_prefix("/").unwrap());
    assert_eq!(guest_profile, expected);
    assert_eq!(guest_catalog.parent(), guest_profile.parent());
    assert_eq!(
        resolve(&fs, &guest_profile).map(|(_, k)| k),
        Some(EntryKind::File)
    );
    assert_eq!(
        resolve(&fs, &profile),
        None,
        "nothing under the guest's /tmp"
    );

    let elsewhere = scratch();
    let file = elsewhere.path().join("x.toml");
    std::fs::write(&file, "x").unwrap();
    assert_eq!(guest_path(&file), file);
    assert_eq!(place_data(&mut fs, &file).unwrap(), file);
    assert_eq!(resolve(&fs, &file).map(|(_, k)| k), Some(EntryKind::File));
}
