//! Ctrl-C (SIGINT) and SIGTERM to `capring check` while strangers' programs misbehave.
//!
//! Each case runs the real `capring` binary on `fixtures/tracers/misbehaving/misbehave.sh`
//! (a "tracer" that hangs, forks a daemon, ignores SIGTERM or floods stdout), interrupts it in
//! one phase (configuration, the steady state, a drop-failure scenario), and checks what a
//! user relies on: the exit status (130 for SIGINT, 143 for SIGTERM), no process of the tree
//! left behind (each process of the script logs its pid), perf_event_paranoid and the tracefs
//! mount as they were, and a report marked interrupted. The delay between the signal and the
//! exit is printed here; `cargo xtask bench interrupt` measures it properly.
//!
//! Needs root (it changes perf_event_paranoid): fails loudly without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

fn tracefs_mounted() -> bool {
    Path::new("/sys/kernel/tracing/events").is_dir()
}

struct Case {
    dir: PathBuf,
    pids: PathBuf,
}

impl Case {
    fn new(name: &str, mode: &str) -> Case {
        assert!(capring_spec::sys::is_root(), "needs root (CI runs as root)");
        let dir =
            std::env::temp_dir().join(format!("capring-interrupt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fx = root().join("fixtures/tracers/misbehaving");
        let profile = format!(
            "name = \"misbehave-{mode}\"\nbinary = \"{}\"\nargs = [\"{mode}\"]\ncatalog = \"{}\"\n[ready]\ntimeout_s = 60\n",
            fx.join("misbehave.sh").display(),
            fx.join("misbehave.catalog.toml").display()
        );
        std::fs::write(dir.join("profile.toml"), profile).unwrap();
        let pids = dir.join("pids");
        std::fs::write(&pids, "").unwrap();
        Case { dir, pids }
    }

    fn start(&self, scenario: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_capring"))
            .args(["check", "--format", "json", "--scenarios"])
            .arg(root().join("fixtures/tracers/misbehaving/scenarios.toml"))
            .args(["--scenario", scenario, "--tracer"])
            .arg(self.dir.join("profile.toml"))
            .arg("--out")
            .arg(self.dir.join("out"))
            .env("CAPRING_TEST_PIDS", &self.pids)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("capring starts")
    }

    /// Waits until the script logged `n` pids (it is running), at most 20 s.
    fn wait_pids(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.logged().len() < n {
            assert!(
                Instant::now() < end,
                "the script never started ({} pids)",
                self.logged().len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logged(&self) -> Vec<i32> {
        std::fs::read_to_string(&self.pids)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Sends `sig` to capring, waits for it (at most 10 s) and checks the aftermath.
    fn interrupt(&self, mut child: Child, sig: i32, paranoid_before: &str, mounted_before: bool) {
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "capring ignored signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let delay = sent.elapsed();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "signal {sig}: capring exited after {:.0} ms",
            delay.as_secs_f64() * 1e3
        );
        assert_eq!(status.code(), Some(128 + sig), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // Nothing left behind.
        std::thread::sleep(Duration::from_millis(100));
        for pid in self.logged() {
            assert!(
                gone(pid),
                "pid {pid} of the tracer's tree is still running\n{stderr}"
            );
        }
        assert_eq!(std::fs::read_to_string(PARANOID).unwrap(), paranoid_before);
        assert_eq!(
            tracefs_mounted(),
            mounted_before,
            "the tracefs mount was not restored"
        );
        // The partial report says so.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(report["interrupted"], true, "{report}");
        let results: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("out/results.json")).unwrap())
                .unwrap();
        assert_eq!(results["interrupted"], true);
        assert!(stderr.contains("INTERRUPTED"), "{stderr}");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process is gone (or a zombie waiting for init).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
    }
}

fn paranoid() -> String {
    std::fs::read_to_string(PARANOID).unwrap()
}

#[test]
fn sigint_during_configuration_restores_the_sysctl_and_the_mount() {
    let case = Case::new("config", "hang");
    let before = paranoid();
    // capring mounts tracefs for the scenario when it is not mounted: unmount it first, and
    // put it back afterwards whatever happens.
    let was_mounted = tracefs_mounted();
    if was_mounted {
        // SAFETY: umount2 with a static C string.
        unsafe { libc::umount2(c"/sys/kernel/tracing".as_ptr(), libc::MNT_DETACH) };
    }
    let child = case.start("interrupt-paranoid");
    case.wait_pids(1);
    std::thread::sleep(Duration::from_millis(200));
    assert_ne!(
        paranoid(),
        before,
        "capring set perf_event_paranoid for the run"
    );
    let mounted_during = tracefs_mounted();
    case.interrupt(child, libc::SIGINT, &before, false);
    if was_mounted {
        // SAFETY: mount(2) with static C strings.
        unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
    }
    assert!(mounted_during, "capring mounted tracefs for the run");
}

#[test]
fn sigterm_in_the_steady_state_kills_a_daemon_too() {
    let case = Case::new("daemon", "daemon");
    let before = paranoid();
    let child = case.start("interrupt-paranoid");
    case.wait_pids(2); // the script and its daemon
    std::thread::sleep(Duration::from_millis(500));
    case.interrupt(child, libc::SIGTERM, &before, tracefs_mounted());
}

#[test]
fn sigint_in_a_drop_failure_scenario_kills_a_tracer_that_ignores_sigterm() {
    let case = Case::new("fault", "ignore-term");
    let before = paranoid();
    let child = case.start("interrupt-drop-failure");
    case.wait_pids(1);
    std::thread::sleep(Duration::from_millis(500));
    case.interrupt(child, libc::SIGINT, &before, tracefs_mounted());
}

#[test]
fn sigterm_while_the_tracer_floods_stdout() {
    let case = Case::new("flood", "flood");
    let before = paranoid();
    let child = case.start("interrupt-paranoid");
    case.wait_pids(1);
    std::thread::sleep(Duration::from_millis(500));
    case.interrupt(child, libc::SIGTERM, &before, tracefs_mounted());
}
