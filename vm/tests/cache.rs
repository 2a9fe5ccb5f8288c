//! Kernel cache: truncated or corrupt images are detected, deleted and never booted.

use std::collections::BTreeMap;

use capring_vm::cache::{local_image, CacheState, KernelCache};
use capring_vm::catalog::{Catalog, LockEntry, Mirror};
use capring_vm::deb::{bzimage_release, Extracted};
use capring_vm::Error;

fn fake_bzimage() -> Vec<u8> {
    let mut v = vec![0u8; 0x1000];
    v[0x202..0x206].copy_from_slice(b"HdrS");
    // kernel_version pointer: string at 0x200 + 0x300
    v[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
    let s = b"6.1.0-test-amd64 (builder@host) #1 SMP\0";
    v[0x500..0x500 + s.len()].copy_from_slice(s);
    v
}

fn entry() -> LockEntry {
    LockEntry {
        mirror: "local".into(),
        suite: "nowhere".into(),
        package: "linux-image-test".into(),
        version: "1".into(),
        filename: "pool/x.deb".into(),
        size: 1,
        sha256: "ab".repeat(32),
    }
}

fn cache_with_kernel() -> (tempfile::TempDir, KernelCache) {
    let d = tempfile::tempdir().unwrap();
    let c = KernelCache {
        root: d.path().to_path_buf(),
        verbose: false,
    };
    let x = Extracted {
        vmlinuz: fake_bzimage(),
        config: Some(b"CONFIG_X=y\n".to_vec()),
        release: "6.1.0-test-amd64".into(),
    };
    c.store(&entry(), &x).unwrap();
    (d, c)
}

#[test]
fn stored_kernel_is_valid() {
    let (_d, c) = cache_with_kernel();
    match c.check(&entry()) {
        CacheState::Valid(img) => {
            assert_eq!(img.release, "6.1.0-test-amd64");
            assert!(img.config.is_some());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_vmlinuz_is_corrupt() {
    let (_d, c) = cache_with_kernel();
    let v = c.kernel_dir(&entry().sha256).join("vmlinuz");
    let f = std::fs::OpenOptions::new().write(true).open(&v).unwrap();
    f.set_len(100).unwrap();
    assert!(matches!(c.check(&entry()), CacheState::Corrupt(w) if w.contains("truncated")));
}

#[test]
fn modified_or_unstamped_kernel_is_corrupt() {
    let (_d, c) = cache_with_kernel();
    let dir = c.kernel_dir(&entry().sha256);
    let mut data = std::fs::read(dir.join("vmlinuz")).unwrap();
    data[0] ^= 1;
    std::fs::write(dir.join("vmlinuz"), &data).unwrap();
    assert!(matches!(c.check(&entry()), CacheState::Corrupt(_)));
    std::fs::remove_file(dir.join("stamp.json")).unwrap();
    assert!(matches!(c.check(&entry()), CacheState::Corrupt(w) if w.contains("stamp")));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.check(&entry()), CacheState::Missing);
}

/// A corrupt cached kernel is deleted and refetched; with the source
/// unreachable the refetch fails cleanly, and nothing was booted.
#[test]
fn corrupt_kernel_is_deleted_and_refetched_not_booted() {
    let (_d, c) = cache_with_kernel();
    let dir = c.kernel_dir(&entry().sha256);
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("vmlinuz"))
        .unwrap()
        .set_len(10)
        .unwrap();
    let mut mirror = BTreeMap::new();
    mirror.insert(
        "local".to_string(),
        Mirror {
            // Port 9 (discard) on loopback: refused at once, no traffic leaves the host.
            uri: "http://127.0.0.1:9/debian".into(),
            keyring: "/usr/share/keyrings/debian-archive-keyring.gpg".into(),
            components: vec!["main".into()],
        },
    );
    let catalog = Catalog {
        mirror,
        kernel: BTreeMap::new(),
    };
    let err = c
        .ensure("6.1", &entry(), &catalog, &Default::default())
        .unwrap_err();
    assert!(!dir.exists(), "the corrupt image was deleted");
    match &err {
        Error::SourceUnreachable { series, .. } => assert_eq!(series, "6.1"),
        other => panic!("unexpected error: {other}"),
    }
    let msg = err.to_string();
    assert!(
        !msg.contains('\n') && msg.contains("--kernel PATH/TO/bzImage"),
        "{msg}"
    );
    assert!(capring_vm::qemu::qemu_children().is_empty());
}

#[test]
fn local_images_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("bzImage");
    std::fs::write(&good, fake_bzimage()).unwrap();
    assert_eq!(local_image(&good).unwrap().release, "6.1.0-test-amd64");
    assert_eq!(
        bzimage_release(&fake_bzimage()).as_deref(),
        Some("6.1.0-test-amd64")
    );
    let bad = d.path().join("notakernel");
    std::fs::write(&bad, b"hello").unwrap();
    assert!(matches!(local_image(&bad), Err(Error::NotBzImage(_))));
}
