//! Fault drills: real QEMU boots of the locked 6.1 kernel (TCG).
//!
//! Needs qemu-system-x86_64 and the kernel (cached under target/vm-test/cache
//! or `$CAPRING_VM_CACHE`, else fetched once from the Debian mirror). A missing
//! QEMU fails the test with the install command; it is never skipped.
//! Drills are serialised with a file lock: parallel TCG boots on a 2-core host
//! starve each other.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use capring_vm::accel::Accel;
use capring_vm::catalog::{Catalog, Lock};
use capring_vm::outcome::Outcome;
use capring_vm::protocol::ExitStatus;
use capring_vm::qemu::{qemu_children, RunReport};
use capring_vm::session::{self, KernelSpec, Paths, RunOptions};
use capring_vm::settings::{Drill, GuestCommand, GuestSettings};

struct Env {
    paths: Paths,
    vmlinuz: PathBuf,
    base: Vec<u8>,
    qemu: PathBuf,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let qemu = capring_vm::qemu::find_qemu().unwrap_or_else(|| {
            panic!("qemu-system-x86_64 not found: install it with `apt-get install -y qemu-system-x86` (the VM drills need it)")
        });
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let paths = Paths::new(&ws);
        let catalog = Catalog::load(&paths.catalog).unwrap();
        let lock = Lock::load(&paths.lock).unwrap();
        let k = session::prepare_kernel(&KernelSpec::Series("6.1".into()), &catalog, &lock, &paths.cache())
            .unwrap_or_else(|e| panic!("kernel 6.1 for the drills: {e}"));
        let agent = session::build_agent(&paths).unwrap_or_else(|e| panic!("building the guest agent: {e}"));
        let base = session::base_initramfs(&agent, &[], None).unwrap();
        Env { paths, vmlinuz: k.ensured.image.vmlinuz, base, qemu }
    })
}

/// Serialises the drills across test processes.
struct Serial(#[allow(dead_code)] std::fs::File);

fn serial(paths: &Paths) -> Serial {
    std::fs::create_dir_all(&paths.out_root).unwrap();
    let f = std::fs::File::create(paths.out_root.join("drills.lock")).unwrap();
    f.lock().unwrap();
    Serial(f)
}

fn boot(name: &str, s: &GuestSettings, tweak: impl FnOnce(&mut RunOptions)) -> RunReport {
    boot_with(name, &env().base, s, tweak)
}

fn boot_with(
    name: &str,
    base: &[u8],
    s: &GuestSettings,
    tweak: impl FnOnce(&mut RunOptions),
) -> RunReport {
    let e = env();
    let _g = serial(&e.paths);
    let mut opts = RunOptions::new(e.qemu.clone(), Accel::Tcg);
    // Generous: the host may be busy with other builds.
    opts.boot_timeout = Duration::from_secs(60);
    opts.test_slack = Duration::from_secs(10);
    tweak(&mut opts);
    let out = e.paths.out_root.join("drills").join(name);
    let r = session::run_vm(name, &e.vmlinuz, base, s, &out, &opts, &mut || {}).unwrap();
    assert!(
        qemu_children().is_empty(),
        "{name}: a QEMU process outlived the run"
    );
    r
}

fn selftest(args: &[&str], timeout: u64) -> GuestSettings {
    let mut argv = vec!["/init".to_string(), "--selftest".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    session::settings(
        vec![GuestCommand {
            name: "selftest".into(),
            argv,
            timeout_secs: timeout,
            ok_codes: vec![],
        }],
        "/results",
        vec![],
    )
}

#[test]
fn selftest_passes_and_sends_its_file() {
    let r = boot("pass", &selftest(&["--spam", "50"], 60), |_| {});
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.reason);
    assert!(r.release.as_deref().unwrap_or("").starts_with("6.1."));
    assert_eq!(r.commands, [("selftest".to_string(), "code=0".to_string())]);
    let spam = r.transcript.commands[0]
        .stdout
        .iter()
        .filter(|l| l.starts_with("selftest: line "))
        .count();
    assert_eq!(spam, 50, "every stdout line arrives");
    let f = &r.transcript.files["selftest.json"];
    let v: serde_json::Value = serde_json::from_slice(f).unwrap();
    assert!(
        v["fstypes"].as_array().unwrap().iter().any(|t| t == "bpf"),
        "bpffs mounted: {v}"
    );
    assert!(r.boot_secs.is_some() && r.run_secs.is_some());
}

#[test]
fn failing_command_is_fail() {
    let r = boot("fail", &selftest(&["--exit", "3"], 60), |_| {});
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.reason);
    assert_eq!(r.transcript.commands[0].exit, Some(ExitStatus::Code(3)));
    // (0x20 | 3) << 1 | 1
    assert_eq!(r.evidence.qemu_status, Some(71));
}

#[test]
fn agent_enforces_the_command_timeout() {
    let r = boot("cmd-timeout", &selftest(&["--sleep", "600"], 2), |_| {});
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.reason);
    assert_eq!(r.transcript.commands[0].exit, Some(ExitStatus::Timeout));
}

#[test]
fn missing_binary_is_fail_not_hang() {
    let s = session::settings(
        vec![GuestCommand {
            name: "nope".into(),
            argv: vec!["/bin/does-not-exist".into()],
            timeout_secs: 10,
            ok_codes: vec![],
        }],
        "/results",
        vec![],
    );
    let r = boot("missing-binary", &s, |_| {});
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.reason);
    assert_eq!(r.transcript.commands[0].exit, Some(ExitStatus::Code(127)));
}

#[test]
fn kernel_panic_drill_is_kernel_panic() {
    let mut s = selftest(&[], 30);
    s.drill = Some(Drill::Panic);
    let r = boot("panic", &s, |_| {});
    assert_eq!(r.outcome, Outcome::KernelPanic, "{}", r.reason);
    assert!(r.evidence.hello);
}

#[test]
fn hang_drill_is_test_timeout() {
    let mut s = selftest(&[], 1);
    s.drill = Some(Drill::Hang);
    let r = boot("hang", &s, |o| o.test_slack = Duration::from_secs(3));
    assert_eq!(r.outcome, Outcome::TestTimeout, "{}", r.reason);
    assert!(r.evidence.hello && r.evidence.done.is_none());
}

#[test]
fn no_hello_in_time_is_boot_timeout() {
    let r = boot("boot-timeout", &selftest(&[], 30), |o| {
        o.boot_timeout = Duration::from_millis(300)
    });
    assert_eq!(r.outcome, Outcome::BootTimeout, "{}", r.reason);
}

/// An exit code a command accepts (`capring check` exiting 1 on a tracer's failed clause,
/// under `vm-test --tracer`) is a pass for the agent and the host alike; the commands after
/// it still run.
#[test]
fn an_accepted_exit_code_passes() {
    let mut s = selftest(&["--exit", "1"], 60);
    s.commands[0].ok_codes = vec![1];
    s.commands.push(GuestCommand {
        name: "after".into(),
        argv: vec!["/init".into(), "--selftest".into()],
        timeout_secs: 60,
        ok_codes: vec![],
    });
    let r = boot("ok-codes", &s, |_| {});
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.reason);
    assert_eq!(r.transcript.commands[0].exit, Some(ExitStatus::Code(1)));
    assert_eq!(r.transcript.commands[1].exit, Some(ExitStatus::Code(0)));
    assert_eq!(r.evidence.qemu_status, Some(33), "isa-debug-exit ok");
}

/// A dynamically linked host program (`/bin/sh`), copied in with its loader and libraries at
/// their host paths, runs in the guest: what `vm-test --tracer` relies on.
#[test]
fn a_host_program_with_its_libraries_runs_in_the_guest() {
    let e = env();
    let agent = e.paths.musl_bin("vm-agent");
    let mut fs = session::base_fs(&agent, &[], None).unwrap();
    capring_vm::closure::place_program(&mut fs, Path::new("/bin/sh")).unwrap();
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let s = session::settings(
        vec![GuestCommand {
            name: "sh".into(),
            argv: vec![
                sh.to_string_lossy().into_owned(),
                "-c".into(),
                "echo from-the-host $((6 * 7))".into(),
            ],
            timeout_secs: 60,
            ok_codes: vec![],
        }],
        "/results",
        vec![],
    );
    let r = boot_with("host-program", &fs.to_bytes(), &s, |_| {});
    assert_eq!(
        r.outcome,
        Outcome::Pass,
        "{}: {:?}",
        r.reason,
        r.transcript.commands
    );
    assert_eq!(r.transcript.commands[0].stdout, ["from-the-host 42"]);
}
