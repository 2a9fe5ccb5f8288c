//! Keyrings taken from a package of another mirror: catalog and lock syntax, the cache
//! (valid, corrupt, deleted), what an unreachable source says, and .deb extraction of one
//! file from a zstd payload (Ubuntu's compression).

use std::io::Write;

use capring_vm::cache::KernelCache;
use capring_vm::catalog::{Catalog, Keyring, Lock, LockEntry};
use capring_vm::keyring::{self, KeyringState};
use capring_vm::{deb, Error};

const CATALOG: &str = r#"
[mirror.debian]
uri = "http://127.0.0.1:9/debian"
keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

[mirror.ubuntu]
uri = "http://127.0.0.1:9/ubuntu"
keyring = { mirror = "debian", suite = "trixie", package = "ubuntu-keyring", file = "usr/share/keyrings/ubuntu-archive-keyring.gpg" }

[kernel."5.15"]
suite = "jammy-updates"
mirror = "ubuntu"
package = "linux-image-unsigned-5.15.*-generic"
"#;

const FILE: &str = "usr/share/keyrings/ubuntu-archive-keyring.gpg";

fn keyring_entry() -> LockEntry {
    LockEntry {
        mirror: "debian".into(),
        suite: "trixie".into(),
        package: "ubuntu-keyring".into(),
        version: "2023.11.28.1-0.2".into(),
        filename: "pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1-0.2_all.deb".into(),
        size: 14132,
        sha256: "cd".repeat(32),
    }
}

fn kernel_entry() -> LockEntry {
    LockEntry {
        mirror: "ubuntu".into(),
        suite: "jammy-updates".into(),
        package: "linux-image-unsigned-5.15.0-1-generic".into(),
        version: "5.15.0-1.1".into(),
        filename: "pool/main/l/linux/x.deb".into(),
        size: 1,
        sha256: "ef".repeat(32),
    }
}

fn lock() -> Lock {
    let mut l = Lock::default();
    l.keyring.insert("ubuntu".into(), keyring_entry());
    l
}

fn cache() -> (tempfile::TempDir, KernelCache) {
    let d = tempfile::tempdir().unwrap();
    let c = KernelCache {
        root: d.path().to_path_buf(),
        verbose: false,
    };
    (d, c)
}

#[test]
fn catalog_takes_a_keyring_from_a_package_of_another_mirror() {
    let c = Catalog::parse(CATALOG).unwrap();
    assert_eq!(
        c.mirror["debian"].keyring,
        Keyring::File("/usr/share/keyrings/debian-archive-keyring.gpg".into())
    );
    match &c.mirror["ubuntu"].keyring {
        Keyring::Package(k) => {
            assert_eq!(
                (k.mirror.as_str(), k.package.as_str()),
                ("debian", "ubuntu-keyring")
            );
            assert_eq!(k.file, FILE);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_keyring_packages_are_one_line_errors() {
    for (bad, needle) in [
        (
            CATALOG.replace("mirror = \"debian\", suite", "mirror = \"nope\", suite"),
            "unknown mirror \"nope\"",
        ),
        (
            CATALOG.replace("file = \"usr/", "file = \"/usr/"),
            "bad keyring file",
        ),
        (
            CATALOG.replace("file = \"usr/share", "file = \"../share"),
            "bad keyring file",
        ),
        (
            CATALOG.replace(
                "keyring = \"/usr/share/keyrings/debian-archive-keyring.gpg\"",
                "keyring = { mirror = \"ubuntu\", suite = \"x\", package = \"y\", file = \"z\" }",
            ),
            "only one step",
        ),
    ] {
        let err = Catalog::parse(&bad).expect_err(&bad);
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn lock_pins_keyrings_and_checks_them() {
    let l = lock();
    let text = l.render();
    assert!(text.contains("[keyring.ubuntu]"), "{text}");
    assert_eq!(Lock::parse(&text).unwrap(), l);
    let err = Lock::parse(&text.replace(&"cd".repeat(32), "nothex")).unwrap_err();
    assert!(
        err.contains("keyring \"ubuntu\"") && err.contains("64 hex digits"),
        "{err}"
    );
    // A lock without keyrings renders no [keyring] table.
    assert!(!Lock::default()
        .render()
        .lines()
        .any(|l| l.starts_with("[keyring")));
}

#[test]
fn cached_keyring_is_valid_and_a_modified_one_is_corrupt() {
    let (_d, c) = cache();
    let e = keyring_entry();
    assert_eq!(keyring::check(&c, &e, FILE), KeyringState::Missing);
    let path = keyring::store(&c, &e, FILE, b"not really a keyring").unwrap();
    assert_eq!(
        keyring::check(&c, &e, FILE),
        KeyringState::Valid(path.clone())
    );
    // The same package asked for another file: not this cache entry.
    assert!(matches!(
        keyring::check(&c, &e, "usr/share/other.gpg"),
        KeyringState::Corrupt(_)
    ));
    std::fs::write(&path, b"tampered").unwrap();
    assert!(
        matches!(keyring::check(&c, &e, FILE), KeyringState::Corrupt(w) if w.contains("SHA256"))
    );
}

#[test]
fn a_cached_keyring_needs_no_network() {
    let (_d, c) = cache();
    let catalog = Catalog::parse(CATALOG).unwrap();
    let stored = keyring::store(&c, &keyring_entry(), FILE, b"keys").unwrap();
    let before = capring_vm::apt::network_requests();
    // Both mirrors point at a closed port: any request would fail.
    let got = keyring::ensure(&c, &catalog, &lock(), "ubuntu", "5.15").unwrap();
    assert_eq!(got, stored);
    assert_eq!(capring_vm::apt::network_requests(), before);
}

/// A corrupt cached keyring is deleted; with the mirror it comes from unreachable, fetching
/// it again fails in one line that names the keyring package and `--kernel PATH`.
#[test]
fn corrupt_keyring_with_unreachable_source_is_one_line_naming_kernel_path() {
    let (_d, c) = cache();
    let catalog = Catalog::parse(CATALOG).unwrap();
    let e = keyring_entry();
    let path = keyring::store(&c, &e, FILE, b"keys").unwrap();
    std::fs::write(&path, b"truncated").unwrap();
    let err = c
        .ensure("5.15", &kernel_entry(), &catalog, &lock())
        .unwrap_err();
    assert!(
        !keyring::dir(&c, &e).exists(),
        "the corrupt keyring was deleted"
    );
    assert!(
        matches!(err, Error::SourceUnreachable { ref series, .. } if series == "5.15"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    for needle in [
        "ubuntu-keyring",
        "debian trixie",
        "--kernel PATH/TO/bzImage",
    ] {
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
}

#[test]
fn lock_pinning_another_keyring_package_asks_for_kernels_update() {
    let (_d, c) = cache();
    let catalog = Catalog::parse(CATALOG).unwrap();
    let mut l = lock();
    l.keyring.get_mut("ubuntu").unwrap().package = "old-keyring".into();
    let err = keyring::ensure(&c, &catalog, &l, "ubuntu", "5.15")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cargo xtask kernels update") && !err.contains('\n'),
        "{err}"
    );
}

/// A .deb like Ubuntu's: `data.tar.zst`.
fn zstd_deb(dir: &std::path::Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("./{path}"), *data).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    z.write_all(&tar).unwrap();
    let data = z.finish().unwrap();
    let path = dir.join("test.deb");
    let mut ar = ar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, body) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar.zst", &b""[..]),
        ("data.tar.zst", &data[..]),
    ] {
        let h = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        ar.append(&h, body).unwrap();
    }
    path
}

#[test]
fn files_come_out_of_zstd_debs() {
    let d = tempfile::tempdir().unwrap();
    let deb_path = zstd_deb(
        d.path(),
        &[
            ("usr/share/doc/x/copyright", b"c"),
            (FILE, b"keyring bytes"),
            ("boot/vmlinuz-5.15.0-1-generic", b"kernel"),
            ("boot/config-5.15.0-1-generic", b"CONFIG_BPF=y"),
        ],
    );
    assert_eq!(
        deb::extract_file(&deb_path, FILE).unwrap(),
        b"keyring bytes"
    );
    let k = deb::extract_kernel(&deb_path).unwrap();
    assert_eq!(
        (k.release.as_str(), &k.vmlinuz[..]),
        ("5.15.0-1-generic", &b"kernel"[..])
    );
    assert_eq!(k.config.as_deref(), Some(&b"CONFIG_BPF=y"[..]));
    let missing = deb::extract_file(&deb_path, "usr/share/keyrings/none.gpg").unwrap_err();
    assert!(matches!(missing, Error::MissingInDeb { .. }), "{missing}");
}
