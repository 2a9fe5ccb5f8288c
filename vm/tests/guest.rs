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
    let c = g.commands("6.1", Some("bypass-*"), 1);
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
    assert_eq!(g.commands("6.1", None, 2)[0].argv[3], "2");
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
    let check = g.commands("6.1", None, g.vcpus);
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
    let default = names(g.commands("6.1", None, g.vcpus));
    assert!(default.contains(&"check".to_string()), "{default:?}");
    assert!(!default.contains(&"minimize".to_string()), "{default:?}");
    let minimize = g.commands_with(Some("minimize"), "6.1", None, g.vcpus);
    assert_eq!(names(minimize.clone()), ["minimize"]);
    let argv = &minimize[0].argv;
    assert_eq!(&argv[..2], ["/bin/capring", "minimize"]);
    let out = argv.iter().position(|a| a == "--out").expect("--out");
    assert!(argv[out + 1].starts_with("/results/"), "{argv:?}");
}

const FILTERED: &str = r#"
[[command]]
name = "check"
argv = ["/bin/capring", "check", "--tracer", "/fixtures/tracers/ref-tracer.toml", "--jobs", "{vcpus}"]
scenario_flag = "--scenario"
[[command]]
name = "mutants"
argv = ["/bin/capring", "mutants"]
kernels = ["6.1"]
ok_codes = [3]
"#;

#[test]
fn a_command_with_kernels_runs_only_on_those_series() {
    let g = GuestConfig::parse(FILTERED).unwrap();
    let names =
        |k: &str| -> Vec<String> { g.commands(k, None, 1).into_iter().map(|c| c.name).collect() };
    assert_eq!(names("6.1"), ["check", "mutants"]);
    assert_eq!(names("6.12"), ["check"], "6.12 is not 6.1");
    assert_eq!(names("local-bzImage"), ["check"]);
    assert_eq!(g.commands("6.1", None, 1)[1].ok_codes, [3]);
    let err = GuestConfig::parse("[[command]]\nname = \"x\"\nargv = [\"/bin/x\"]\nkernels = []\n")
        .unwrap_err();
    assert!(err.contains("never run"), "{err}");
}

#[test]
fn the_tracer_command_replaces_the_profile_accepts_exit_1_and_drops_the_other_commands() {
    let g = GuestConfig::parse(FILTERED).unwrap();
    let c = g
        .tracer_command("/work/x/bpftrace.toml", Some("steady-*"), 2)
        .unwrap();
    assert_eq!(c.name, "check");
    assert_eq!(
        c.argv,
        [
            "/bin/capring",
            "check",
            "--tracer",
            "/work/x/bpftrace.toml",
            "--jobs",
            "2",
            "--scenario",
            "steady-*"
        ]
    );
    assert!(c.accepts(capring_vm::protocol::ExitStatus::Code(1)));
    assert!(
        !c.accepts(capring_vm::protocol::ExitStatus::Code(2)),
        "bad input stays a failure"
    );
    assert!(!c.accepts(capring_vm::protocol::ExitStatus::Timeout));
    let none = GuestConfig::parse("[[command]]\nname = \"run\"\nargv = [\"/bin/x\"]\n").unwrap();
    assert!(none
        .tracer_command("/p.toml", None, 1)
        .unwrap_err()
        .contains("check"));
}

#[test]
fn a_feature_build_must_name_its_binaries() {
    let ok = GuestConfig::parse(
        "[[build]]\npackage = \"capring-reference\"\nfeatures = [\"faults\"]\nbins = [\"ref-tracer-mutant\", \"ref-rules-mutant\"]\n",
    )
    .unwrap();
    assert_eq!(
        ok.feature_builds[0].cargo_args(),
        [
            "-p",
            "capring-reference",
            "--features",
            "faults",
            "--bin",
            "ref-tracer-mutant",
            "--bin",
            "ref-rules-mutant"
        ]
    );
    let err = GuestConfig::parse(
        "[[build]]\npackage = \"capring-reference\"\nfeatures = [\"faults\"]\nbins = []\n",
    )
    .unwrap_err();
    assert!(err.contains("production"), "{err}");
}

#[test]
fn repository_guest_config_runs_the_controls_on_one_kernel_with_the_fault_binaries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let g = GuestConfig::load(&root.join("guest.toml")).unwrap();
    let mutants = g
        .commands
        .iter()
        .find(|c| c.name == "mutants")
        .expect("a mutants command");
    assert_eq!(
        mutants.kernels.as_ref().map(Vec::len),
        Some(1),
        "one kernel of the matrix"
    );
    let build = &g.feature_builds[0];
    for b in ["ref-tracer-mutant", "ref-rules-mutant"] {
        assert!(
            build.bins.iter().any(|x| x == b) && g.binaries.iter().any(|x| x == b),
            "{b}"
        );
    }
    assert!(
        !build.bins.iter().any(|b| b == "ref-tracer"),
        "never the production tracer"
    );
}
