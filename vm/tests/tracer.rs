//! `vm-test --tracer PROFILE`: which of a profile's files go into the guest.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use capring_vm::tracer::{Search, TracerFiles};

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tracer")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn exe(p: &Path) {
    std::fs::write(p, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const PROFILE: &str = r#"
name = "mine"
binary = "bin/mytracer"
catalog = "mine.catalog.toml"
[workload]
command = ["ref-workload", "--rate", "5"]
per_event = { net = ["helper", "--udp"] }
[rules_engine]
binary = "bin/myrules"
[[expect]]
scenario = "steady-state"
clause = "ring.unprivileged.empty"
verdict = "pass"
"#;

#[test]
fn programs_resolve_as_the_guests_capring_would_find_them() {
    let d = scratch();
    let dir = d.path().join("prof");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let path_dir = d.path().join("pathdir");
    std::fs::create_dir_all(&path_dir).unwrap();
    exe(&dir.join("bin/mytracer"));
    exe(&dir.join("bin/myrules"));
    exe(&path_dir.join("helper"));
    std::fs::write(dir.join("mine.catalog.toml"), "").unwrap();
    std::fs::write(dir.join("mine.toml"), PROFILE).unwrap();
    let guest_bins = ["capring".to_string(), "ref-workload".to_string()];
    let search = Search {
        bin_dir: None,
        path: path_dir.to_string_lossy().into_owned(),
    };
    let t = TracerFiles::load(&dir.join("mine.toml"), &guest_bins, &search).unwrap();
    assert_eq!(t.name, "mine");
    assert_eq!(t.profile, dir.join("mine.toml"));
    // ref-workload is a guest binary (/bin): not copied. The others are host files.
    assert_eq!(
        t.programs,
        [
            dir.join("bin/mytracer"),
            path_dir.join("helper"),
            dir.join("bin/myrules")
        ]
    );
    assert_eq!(
        t.data,
        [dir.join("mine.toml"), dir.join("mine.catalog.toml")]
    );
    assert_eq!(t.expectations.len(), 1);

    // A program found nowhere is bad input naming the profile and the key.
    let nowhere = Search {
        bin_dir: None,
        path: "/nonexistent".into(),
    };
    let err = TracerFiles::load(&dir.join("mine.toml"), &guest_bins, &nowhere)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mine.toml") && err.contains("helper") && err.contains("PATH"),
        "{err}"
    );
    // $CAPRING_BIN_DIR comes before PATH, as in capring.
    let bin_dir = d.path().join("bindir");
    std::fs::create_dir_all(&bin_dir).unwrap();
    exe(&bin_dir.join("helper"));
    let both = Search {
        bin_dir: Some(bin_dir.clone()),
        ..search.clone()
    };
    let t = TracerFiles::load(&dir.join("mine.toml"), &guest_bins, &both).unwrap();
    assert_eq!(t.programs[1], bin_dir.join("helper"));

    std::fs::remove_file(dir.join("bin/mytracer")).unwrap();
    let err = TracerFiles::load(&dir.join("mine.toml"), &guest_bins, &search)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("binary") && err.contains("bin/mytracer"),
        "{err}"
    );
}

#[test]
fn the_repository_profiles_of_the_reference_need_no_host_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins: Vec<String> = ["capring", "ref-tracer", "ref-rules", "ref-workload"]
        .map(String::from)
        .to_vec();
    let t = TracerFiles::load(
        &root.join("fixtures/tracers/ref-tracer.toml"),
        &bins,
        &Search::default(),
    )
    .unwrap();
    assert!(t.programs.is_empty(), "{:?}", t.programs);
}
