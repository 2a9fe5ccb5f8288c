//! The reference binaries as a user runs them, as root: every thread's
//! `/proc/PID/task/*/status` while events flow, a seccomp filter that makes capset fail,
//! bypass, a capability missing from the bounding set, help and `--print-rings`.
//! Run with `cargo nextest run -p capring-reference --test tracer` (CI runs as root).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capring_spec::caps::{Cap, CapSet};

const TRACER: &str = env!("CARGO_BIN_EXE_ref-tracer");
const RULES: &str = env!("CARGO_BIN_EXE_ref-rules");
const WORKLOAD: &str = env!("CARGO_BIN_EXE_ref-workload");

fn require_root() {
    assert!(
        capring_spec::sys::is_root(),
        "this test needs root (CI runs as root)"
    );
}

/// E and P of every thread of `pid`.
fn thread_sets(pid: u32) -> BTreeMap<i32, (CapSet, CapSet)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| CapSet::from_hex(v.trim()))
                .unwrap_or_default()
        };
        out.insert(tid, (field("CapEff:"), field("CapPrm:")));
    }
    out
}

struct Workload(Child);

impl Workload {
    fn start(kinds: &str) -> Workload {
        Workload(
            Command::new(WORKLOAD)
                .args(["--duration", "60", "--rate", "50", "--kinds", kinds])
                .stdout(Stdio::null())
                .spawn()
                .expect("ref-workload starts"),
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A seccomp filter (built before fork) making capset(2) fail with EPERM.
fn capset_eperm(cmd: &mut Command) {
    let filter = seccompiler::SeccompFilter::new(
        [(libc::SYS_capset, vec![])].into_iter().collect(),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        seccompiler::TargetArch::x86_64,
    )
    .expect("filter");
    let program: seccompiler::BpfProgram = filter.try_into().expect("compiles");
    // SAFETY: apply_filter only makes prctl/seccomp syscalls.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
}

#[test]
fn fifty_events_while_every_thread_has_an_empty_effective_set() {
    require_root();
    let _w = Workload::start("exec,open");
    let mut child = Command::new(TRACER)
        .args(["--events", "execve,openat", "--max-events", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ref-tracer starts");
    let pid = child.id();
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut lines = 0;
    let mut samples = 0;
    for line in stdout.lines() {
        let line = line.expect("utf-8 lines");
        let v: serde_json::Value = serde_json::from_str(&line).expect("each line is JSON");
        assert!(
            matches!(v["event"].as_str(), Some("execve" | "openat")),
            "{line}"
        );
        lines += 1;
        for (tid, (e, p)) in thread_sets(pid) {
            samples += 1;
            assert!(
                e.is_empty(),
                "tid {tid} has E={e} while events flow (line {lines})"
            );
            assert!(
                p.is_empty(),
                "tid {tid} has P={p}: no Requested operation is enabled for these events"
            );
        }
    }
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
    assert_eq!(lines, 50);
    assert!(
        samples >= 50,
        "every line was checked on every thread ({samples} thread samples)"
    );
}

#[test]
fn a_failed_capset_aborts_with_code_3_and_no_event() {
    require_root();
    let _w = Workload::start("exec,open");
    let mut cmd = Command::new(TRACER);
    cmd.args(["--events", "execve,openat", "--max-events", "5"]);
    capset_eperm(&mut cmd);
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(out.stdout.is_empty(), "no event may be emitted");
    assert!(
        stderr.contains("capset") && stderr.contains("bypass"),
        "{stderr}"
    );
}

#[test]
fn bypass_runs_under_the_same_filter_with_every_capability() {
    require_root();
    let _w = Workload::start("exec,open");
    let mut cmd = Command::new(TRACER);
    cmd.args([
        "--events",
        "execve,openat",
        "--max-events",
        "5",
        "--capabilities",
        "bypass=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    capset_eperm(&mut cmd);
    let mut child = cmd.spawn().expect("starts");
    let pid = child.id();
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("a line");
    for (tid, (e, p)) in thread_sets(pid) {
        assert_eq!(e, p, "tid {tid}: bypass keeps E = P");
        assert!(
            e.contains(Cap::BPF) || e.contains(Cap::SYS_ADMIN),
            "tid {tid}: E={e}"
        );
    }
    let out = child.wait_with_output().expect("exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bypass"),
        "a warning says so"
    );
}

#[test]
fn a_required_capability_missing_from_the_bounding_set_exits_3_naming_it() {
    require_root();
    let mut cmd = Command::new(TRACER);
    cmd.args(["--events", "net_packet", "--max-events", "1"]);
    // SAFETY: prctl only.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_CAPBSET_DROP,
                Cap::NET_ADMIN.number() as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("cap_net_admin") && stderr.contains("net_packet"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn help_lists_the_kernels_capabilities_and_exits_0() {
    let out = Command::new(TRACER)
        .args(["--capabilities", "help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let last: u8 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for cap in CapSet::all_up_to(last).iter() {
        assert!(
            text.contains(&cap.name()),
            "{} missing from:\n{text}",
            cap.name()
        );
    }
}

#[test]
fn usage_errors_are_one_line_with_code_2() {
    for args in [
        vec!["--events", "execve", "--capabilities", "bypass=maybe"],
        vec!["--events", "execve", "--capabilities", "add=cap_nope"],
        vec!["--events", "exec"],
        vec!["--events", "execve", "--max-events", "many"],
        vec!["--no-such-flag"],
    ] {
        let out = Command::new(TRACER).args(&args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn rules_engine_runs_with_nothing_and_rejects_add() {
    require_root();
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/scenarios/rules-input.jsonl"
    );
    let mut child = Command::new(RULES)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ref-rules starts");
    let pid = child.id();
    // Give it time to drop, while its stdin is still open.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sets = thread_sets(pid);
        if !sets.is_empty() && sets.values().all(|(e, p)| e.is_empty() && p.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ref-rules still has capabilities: {sets:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::io::copy(
        &mut std::fs::File::open(input).unwrap(),
        child.stdin.as_mut().unwrap(),
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        3,
        "three detections"
    );

    let out = Command::new(RULES)
        .args(["--capabilities", "add=cap_kill"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
}
