//! The initramfs writer: parse back what was written.

use std::io::Read;

use capring_vm::initramfs::Initramfs;
use capring_vm::session::settings_archive;
use capring_vm::settings::{GuestSettings, SETTINGS_PATH};

struct Parsed {
    name: String,
    mode: u32,
    mtime: u32,
    uid: u32,
    ino: u32,
    data: Vec<u8>,
}

/// Reads every archive of a (possibly concatenated) newc stream.
fn parse_all(mut bytes: &[u8]) -> Vec<Vec<Parsed>> {
    let mut archives = Vec::new();
    while !bytes.is_empty() {
        let mut cur = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(bytes).expect("valid newc header");
            if r.entry().is_trailer() {
                bytes = r.finish().expect("trailer");
                break;
            }
            let e = r.entry().clone();
            let mut data = Vec::new();
            r.read_to_end(&mut data).expect("entry data");
            cur.push(Parsed {
                name: e.name().to_string(),
                mode: e.mode(),
                mtime: e.mtime(),
                uid: e.uid(),
                ino: e.ino(),
                data,
            });
            bytes = r.finish().expect("entry end");
        }
        archives.push(cur);
    }
    archives
}

fn sample() -> Initramfs {
    let mut fs = Initramfs::new();
    fs.file("/init", b"#!agent".to_vec(), 0o755).unwrap();
    fs.file("/bin/zz", vec![1, 2, 3], 0o700).unwrap();
    fs.file("/bin/aa", Vec::new(), 0o644).unwrap();
    fs.file("/fixtures/tracers/deep/x.toml", b"k = 1\n".to_vec(), 0o644)
        .unwrap();
    fs.dir("/tmp").unwrap();
    fs
}

#[test]
fn written_archive_parses_back_sorted_with_zero_mtime() {
    let bytes = sample().to_bytes();
    assert_eq!(bytes.len() % 4, 0);
    let archives = parse_all(&bytes);
    assert_eq!(archives.len(), 1);
    let a = &archives[0];
    let names: Vec<&str> = a.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/aa",
            "bin/zz",
            "fixtures",
            "fixtures/tracers",
            "fixtures/tracers/deep",
            "fixtures/tracers/deep/x.toml",
            "init",
            "tmp"
        ]
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for e in a {
        assert_eq!(e.mtime, 0, "{}", e.name);
        assert_eq!(e.uid, 0);
    }
    let inos: std::collections::BTreeSet<u32> = a.iter().map(|e| e.ino).collect();
    assert_eq!(inos.len(), a.len(), "inode numbers are unique");
    let init = a.iter().find(|e| e.name == "init").unwrap();
    assert_eq!(init.mode, 0o100755);
    assert_eq!(init.data, b"#!agent");
    let zz = a.iter().find(|e| e.name == "bin/zz").unwrap();
    assert_eq!((zz.mode, zz.data.as_slice()), (0o100700, &[1u8, 2, 3][..]));
    assert_eq!(a.iter().find(|e| e.name == "bin").unwrap().mode, 0o040755);
    assert!(a
        .iter()
        .find(|e| e.name == "bin/aa")
        .unwrap()
        .data
        .is_empty());
}

#[test]
fn same_inputs_give_same_bytes() {
    assert_eq!(sample().to_bytes(), sample().to_bytes());
}

#[test]
fn bad_paths_are_rejected_not_panicking() {
    let mut fs = Initramfs::new();
    assert!(fs.file("../etc/passwd", vec![], 0o644).is_err());
    assert!(fs.file("a//b", vec![], 0o644).is_err());
    assert!(fs.file("/", vec![], 0o644).is_err());
    assert!(fs.dir("./x").is_err());
}

#[test]
fn settings_archive_concatenates_after_base() {
    let s = GuestSettings {
        nonce: "abc".into(),
        commands: vec![],
        results_dir: "/results".into(),
        env: vec![],
        drill: None,
    };
    let mut bytes = sample().to_bytes();
    bytes.extend(settings_archive(&s).unwrap());
    let archives = parse_all(&bytes);
    assert_eq!(archives.len(), 2);
    let f = archives[1]
        .iter()
        .find(|e| format!("/{}", e.name) == SETTINGS_PATH)
        .expect("settings file");
    let back: GuestSettings = serde_json::from_slice(&f.data).unwrap();
    assert_eq!(back, s);
}

#[test]
fn tree_copies_host_directories() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("a/b")).unwrap();
    std::fs::write(d.path().join("a/b/c.txt"), "hi").unwrap();
    std::fs::write(d.path().join("top"), "x").unwrap();
    let mut fs = Initramfs::new();
    fs.tree(d.path(), "fixtures").unwrap();
    let a = &parse_all(&fs.to_bytes())[0];
    let names: Vec<&str> = a.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fixtures",
            "fixtures/a",
            "fixtures/a/b",
            "fixtures/a/b/c.txt",
            "fixtures/top"
        ]
    );
}

#[test]
fn symlinks_are_written_as_links_and_never_hold_entries_below_them() {
    let mut fs = Initramfs::new();
    fs.file("usr/lib/libc.so.6", b"elf".to_vec(), 0o755)
        .unwrap();
    fs.symlink("lib", "usr/lib").unwrap();
    fs.symlink("lib", "usr/lib").unwrap(); // the same link twice is fine
    let a = &parse_all(&fs.to_bytes())[0];
    let lib = a.iter().find(|e| e.name == "lib").unwrap();
    assert_eq!(lib.mode, 0o120777);
    assert_eq!(lib.data, b"usr/lib");
    // An entry below a link would be created through it by the kernel: refused.
    let err = fs.file("lib/libm.so.6", vec![], 0o644).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    // A link over an existing entry, or to another target, is refused too.
    assert!(fs.symlink("lib", "elsewhere").is_err());
    assert!(fs.symlink("usr/lib/libc.so.6", "x").is_err());
    assert_eq!(fs.data_bytes(), 3);
}
