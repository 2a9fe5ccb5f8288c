//! vm/guest.toml: the guest's CPU count reaches the commands.

use std::path::Path;

use capring_vm::guest::GuestConfig;

const GUEST: &str = r#"
binaries = ["capring"]
vcpus = 2
[[command]]
name = "check"
argv = ["/bin/capring", "check", "--jobs", "{vcpus}"]
scenario_flag = "--scenario"
"#;

#[test]
fn vcpus_placeholder_becomes_the_cpu_count() {
    let g = GuestConfig::parse(GUEST).unwrap();
    assert_eq!(g.vcpus, 2);
    let c = g.commands(Some("bypass-*"), 1);
    assert_eq!(
        c[0].argv,
        [
            "/bin/capring",
            "check",
            "--jobs",
            "1",
            "--scenario",
            "bypass-*"
        ]
    );
    assert_eq!(g.commands(None, 2)[0].argv[3], "2");
}

#[test]
fn vcpus_outside_one_to_eight_is_an_error() {
    for bad in ["vcpus = 0", "vcpus = 9"] {
        let err = GuestConfig::parse(&format!("{bad}\n")).unwrap_err();
        assert!(err.contains("outside 1..=8"), "{err}");
    }
    assert_eq!(GuestConfig::parse("").unwrap().vcpus, 1, "default");
}

#[test]
fn repository_guest_config_passes_its_cpu_count_as_jobs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let g = GuestConfig::load(&root.join("guest.toml")).unwrap();
    let check = g.commands(None, g.vcpus);
    let argv = &check[0].argv;
    let jobs = argv.iter().position(|a| a == "--jobs").expect("--jobs");
    assert_eq!(argv[jobs + 1], g.vcpus.to_string());
}

#[test]
fn minimize_runs_only_when_asked_and_then_alone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let g = GuestConfig::load(&root.join("guest.toml")).unwrap();
    let names = |c: Vec<capring_vm::settings::GuestCommand>| -> Vec<String> {
        c.into_iter().map(|c| c.name).collect()
    };
    let default = names(g.commands(None, g.vcpus));
    assert!(default.contains(&"check".to_string()), "{default:?}");
    assert!(!default.contains(&"minimize".to_string()), "{default:?}");
    let minimize = g.commands_with(Some("minimize"), None, g.vcpus);
    assert_eq!(names(minimize.clone()), ["minimize"]);
    let argv = &minimize[0].argv;
    assert_eq!(&argv[..2], ["/bin/capring", "minimize"]);
    let out = argv.iter().position(|a| a == "--out").expect("--out");
    assert!(argv[out + 1].starts_with("/results/"), "{argv:?}");
}
