//! The capability rings on a real process. Run with
//! `cargo nextest run -p capring-reference --test rings` (one process per test: these tests
//! change process-wide credentials irreversibly). Tests that need root panic without it.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use capring_reference::rings::{Ring, RingError, RingLog, RingManager, RingPlan, ScopeError};
use capring_spec::caps::{Cap, CapSet};

const CHILD_ENV: &str = "CAPRING_RINGS_TEST_CHILD";

// ---------------------------------------------------------------------------------------------
// Helpers (independent of the module under test: own /proc parser)
// ---------------------------------------------------------------------------------------------

static ROOT_TEST_RAN: AtomicBool = AtomicBool::new(false);

/// Panics unless root, and unless this is the only credential-changing test in this process.
fn needs_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!("needs root (CI runs as root)");
    }
    if ROOT_TEST_RAN.swap(true, SeqCst) {
        panic!("these tests change process-wide credentials: run them with `cargo nextest` (one process per test)");
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sets {
    tid: i32,
    state: char,
    inh: CapSet,
    prm: CapSet,
    eff: CapSet,
    bnd: CapSet,
    amb: CapSet,
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

fn read_sets(path: &str, tid: i32) -> Option<Sets> {
    let text = std::fs::read_to_string(path).ok()?;
    let cap = |k: &str| CapSet::from_hex(&field(&text, k).expect(k)).expect(k);
    Some(Sets {
        tid,
        state: field(&text, "State")?.chars().next()?,
        inh: cap("CapInh"),
        prm: cap("CapPrm"),
        eff: cap("CapEff"),
        bnd: cap("CapBnd"),
        amb: cap("CapAmb"),
    })
}

/// Every live thread of this process.
fn all_threads() -> Vec<Sets> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let name = entry.unwrap().file_name();
        let tid: i32 = name.to_str().unwrap().parse().unwrap();
        if let Some(s) = read_sets(&format!("/proc/self/task/{tid}/status"), tid) {
            if s.state != 'Z' {
                out.push(s);
            }
        }
    }
    out
}

fn own_sets() -> Sets {
    read_sets("/proc/thread-self/status", 0).unwrap()
}

fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

#[track_caller]
fn assert_all(what: &str, eff: CapSet, prm: CapSet) -> usize {
    let threads = all_threads();
    for t in &threads {
        assert_eq!(
            t.eff, eff,
            "{what}: thread {} CapEff (all: {threads:?})",
            t.tid
        );
        assert_eq!(
            t.prm, prm,
            "{what}: thread {} CapPrm (all: {threads:?})",
            t.tid
        );
    }
    threads.len()
}

fn caps(list: &[Cap]) -> CapSet {
    list.iter().copied().collect()
}

fn start_permitted() -> CapSet {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    CapSet::from_hex(&field(&text, "CapPrm").unwrap()).unwrap()
}

/// A plan built from what this process really holds (root here lacks cap_sys_resource).
fn plan(bypass: bool, clear_bounding: bool) -> RingPlan {
    let p0 = start_permitted();
    let required = caps(&[Cap::BPF, Cap::PERFMON, Cap::IPC_LOCK, Cap::NET_ADMIN]);
    let steady = caps(&[Cap::SYSLOG, Cap::SYS_PTRACE, Cap::DAC_OVERRIDE]);
    let config = required.union(steady);
    assert!(
        config.is_subset(p0),
        "the test plan needs {config} but the process only permits {p0} (missing {})",
        config.difference(p0)
    );
    RingPlan {
        bypass,
        required,
        config_permitted: config,
        steady_permitted: steady,
        clear_bounding,
    }
}

fn temp_log(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("capring-rings-{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn log_lines(path: &PathBuf) -> Vec<serde_json::Value> {
    let file = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(file)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// Threads that do nothing useful in different ways: sleeping, blocked on a channel, spinning
/// and reading files.
struct Idle {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
    _tx: mpsc::Sender<()>,
}

impl Idle {
    fn spawn(n: usize) -> Idle {
        Idle::spawn_kind(n, None)
    }

    /// `kind`: 0 parked, 1 blocked on a channel, 2 reading /proc, 3 spinning; `None`: a mix.
    fn spawn_kind(n: usize, kind: Option<usize>) -> Idle {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let ready = Arc::new(Barrier::new(n + 1));
        let handles = (0..n)
            .map(|i| {
                let stop = stop.clone();
                let rx = rx.clone();
                let ready = ready.clone();
                std::thread::spawn(move || {
                    ready.wait();
                    while !stop.load(SeqCst) {
                        match kind.unwrap_or(i % 4) {
                            0 => std::thread::park_timeout(Duration::from_millis(5)),
                            1 => {
                                let _ = rx.lock().unwrap().recv_timeout(Duration::from_millis(5));
                            }
                            2 => {
                                let _ = std::fs::read_to_string("/proc/self/stat");
                            }
                            _ => std::hint::spin_loop(),
                        }
                    }
                })
            })
            .collect();
        ready.wait();
        Idle {
            stop,
            handles,
            _tx: tx,
        }
    }

    fn stop(self) {
        self.stop.store(true, SeqCst);
        for h in self.handles {
            h.thread().unpark();
            h.join().unwrap();
        }
    }
}

/// Re-runs this test binary with only `test` selected and `CHILD_ENV=mode`.
fn run_child(test: &str, mode: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// The rest of the line after `key` (libtest may print the test name before it).
fn marker<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.find(key).map(|i| &l[i + key.len()..]))
}

fn child_mode() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

fn seccomp_program(
    syscalls: &[i64],
    action: seccompiler::SeccompAction,
) -> seccompiler::BpfProgram {
    let rules = syscalls
        .iter()
        .map(|s| (*s, vec![]))
        .collect::<BTreeMap<_, _>>();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        action,
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    filter.try_into().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Pure
// ---------------------------------------------------------------------------------------------

#[test]
fn ring_display_and_serialize() {
    assert_eq!(Ring::Privileged.to_string(), "privileged");
    assert_eq!(Ring::Required.to_string(), "required");
    assert_eq!(
        Ring::Requested(Cap::SYSLOG).to_string(),
        "requested(cap_syslog)"
    );
    assert_eq!(Ring::Unprivileged.to_string(), "unprivileged");
    assert_eq!(
        serde_json::to_string(&Ring::Requested(Cap::BPF)).unwrap(),
        "\"requested(cap_bpf)\""
    );
    let bad = RingPlan {
        bypass: true,
        required: caps(&[Cap::BPF]),
        config_permitted: CapSet::EMPTY,
        steady_permitted: CapSet::EMPTY,
        clear_bounding: false,
    };
    let err = RingManager::new(bad, None).unwrap_err();
    assert!(matches!(err, RingError::Plan(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Every thread, every ring
// ---------------------------------------------------------------------------------------------

#[test]
fn all_threads_follow_every_ring() {
    needs_root();
    let plan = plan(false, true);
    let p0 = start_permitted();
    let before = all_threads();
    let idle = Idle::spawn(4);
    let log_path = temp_log("all");
    let mgr = RingManager::new(plan.clone(), Some(RingLog::create(&log_path).unwrap())).unwrap();
    assert_eq!(mgr.current(), Ring::Privileged);
    // new() changes nothing.
    for t in all_threads() {
        assert_eq!(t.prm, p0);
        assert_eq!(t.eff, before[0].eff);
    }
    let threads = mgr.thread_count();
    assert!(threads >= 5, "{threads} threads");

    walk_configuration(&mgr, &plan);
    walk_steady_state(&mgr, &plan);

    // No way back to configuration.
    let err = mgr.enter_required("again").unwrap_err();
    assert!(matches!(err, RingError::Order { .. }), "{err}");
    assert_all("still unprivileged", CapSet::EMPTY, plan.steady_permitted);

    idle.stop();
    assert_walk_logged(&log_path, &plan);
    let _ = std::fs::remove_file(log_path);
}

/// Step 1 of [`all_threads_follow_every_ring`]: Required (the first drop), a Requested scope
/// inside it, and back.
fn walk_configuration(mgr: &RingManager, plan: &RingPlan) {
    mgr.enter_required("configure").unwrap();
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("required", plan.required, plan.config_permitted);
    for t in all_threads() {
        assert_eq!(t.bnd, CapSet::EMPTY, "thread {} CapBnd", t.tid);
        assert_eq!(t.amb, CapSet::EMPTY, "thread {} CapAmb", t.tid);
        assert_eq!(t.inh, CapSet::EMPTY, "thread {} CapInh", t.tid);
    }

    let seen = mgr
        .with_requested(Cap::SYSLOG, "read kallsyms", || {
            assert_eq!(mgr.current(), Ring::Requested(Cap::SYSLOG));
            Ok::<_, String>(assert_all(
                "requested(cap_syslog)",
                caps(&[Cap::SYSLOG]),
                plan.config_permitted,
            ))
        })
        .unwrap();
    assert!(seen >= 5);
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("back to required", plan.required, plan.config_permitted);
}

/// Step 2 of [`all_threads_follow_every_ring`]: Unprivileged, a Requested scope inside it,
/// and back; the first drop's clears still hold.
fn walk_steady_state(mgr: &RingManager, plan: &RingPlan) {
    mgr.enter_unprivileged("configured").unwrap();
    assert_eq!(mgr.current(), Ring::Unprivileged);
    assert_all("unprivileged", CapSet::EMPTY, plan.steady_permitted);

    mgr.with_requested(Cap::SYS_PTRACE, "enrich", || {
        assert_all(
            "requested(cap_sys_ptrace)",
            caps(&[Cap::SYS_PTRACE]),
            plan.steady_permitted,
        );
        Ok::<_, String>(())
    })
    .unwrap();
    assert_all("back to unprivileged", CapSet::EMPTY, plan.steady_permitted);
    for t in all_threads() {
        assert_eq!(
            (t.bnd, t.amb, t.inh),
            (CapSet::EMPTY, CapSet::EMPTY, CapSet::EMPTY),
            "thread {}",
            t.tid
        );
    }
}

/// Step 3 of [`all_threads_follow_every_ring`]: the ring log has one line per completed
/// transition, in order, with the sets, reason and thread count of the first.
fn assert_walk_logged(log_path: &PathBuf, plan: &RingPlan) {
    let lines = log_lines(log_path);
    let rings: Vec<&str> = lines.iter().map(|l| l["ring"].as_str().unwrap()).collect();
    assert_eq!(
        rings,
        [
            "required",
            "requested(cap_syslog)",
            "required",
            "unprivileged",
            "requested(cap_sys_ptrace)",
            "unprivileged"
        ]
    );
    let first = &lines[0];
    assert_eq!(first["effective"], serde_json::json!(plan.required.names()));
    assert_eq!(
        first["permitted"],
        serde_json::json!(plan.config_permitted.names())
    );
    assert_eq!(first["reason"], "configure");
    assert_eq!(first["bypass"], false);
    assert!(first["threads"].as_u64().unwrap() >= 5);
    assert_eq!(lines[3]["effective"], serde_json::json!([]));
    let times: Vec<u64> = lines.iter().map(|l| l["t_ns"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn threads_born_later_have_the_ring() {
    needs_root();
    let plan = plan(false, true);
    let mgr = Arc::new(RingManager::new(plan.clone(), None).unwrap());
    mgr.enter_required("configure").unwrap();

    // Born after a transition: inherits the ring from its parent.
    let born = std::thread::spawn(own_sets).join().unwrap();
    assert_eq!((born.eff, born.prm), (plan.required, plan.config_permitted));
    assert_eq!(
        (born.bnd, born.amb, born.inh),
        (CapSet::EMPTY, CapSet::EMPTY, CapSet::EMPTY)
    );

    // Born inside a requested scope, still alive after it: follows the return.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (handle, inside) = mgr
        .with_requested(Cap::SYSLOG, "spawn inside", || {
            let stop = stop.clone();
            let h = std::thread::spawn(move || {
                tx.send(own_sets()).unwrap();
                while !stop.load(SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                own_sets()
            });
            Ok::<_, String>((h, rx.recv().unwrap()))
        })
        .unwrap();
    assert_eq!(inside.eff, caps(&[Cap::SYSLOG]), "born inside the scope");
    assert_all("after the scope", plan.required, plan.config_permitted);
    stop.store(true, SeqCst);
    let after = handle.join().unwrap();
    assert_eq!(
        after.eff, plan.required,
        "the scope-born thread after the scope"
    );

    mgr.enter_unprivileged("done").unwrap();
    let born = std::thread::spawn(own_sets).join().unwrap();
    assert_eq!((born.eff, born.prm), (CapSet::EMPTY, plan.steady_permitted));
}

// ---------------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------------

#[test]
fn nested_scopes_restore_the_outer_ring() {
    needs_root();
    let plan = plan(false, false);
    let idle = Idle::spawn(2);
    let mgr = RingManager::new(plan.clone(), None).unwrap();
    mgr.enter_required("configure").unwrap();
    let cfg = plan.config_permitted;

    let out = mgr
        .with_requested(Cap::SYSLOG, "outer", || {
            assert_all("outer", caps(&[Cap::SYSLOG]), cfg);
            let inner = mgr.with_requested(Cap::SYS_PTRACE, "inner", || {
                assert_eq!(mgr.current(), Ring::Requested(Cap::SYS_PTRACE));
                assert_all("inner", caps(&[Cap::SYS_PTRACE]), cfg);
                let innermost = mgr.with_requested(Cap::DAC_OVERRIDE, "innermost", || {
                    assert_all("innermost", caps(&[Cap::DAC_OVERRIDE]), cfg);
                    Ok::<_, String>(3)
                });
                assert_all("back to inner", caps(&[Cap::SYS_PTRACE]), cfg);
                innermost.map_err(|e| e.to_string())
            });
            assert_eq!(mgr.current(), Ring::Requested(Cap::SYSLOG));
            assert_all("back to outer", caps(&[Cap::SYSLOG]), cfg);
            // The base ring cannot change from inside a scope (and this does not deadlock).
            let err = mgr.enter_unprivileged("inside").unwrap_err();
            assert!(matches!(err, RingError::Order { .. }), "{err}");
            inner.map_err(|e| e.to_string())
        })
        .unwrap();
    assert_eq!(out, 3);
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("back to required", plan.required, cfg);
    idle.stop();
}

#[test]
fn concurrent_scopes_serialize() {
    needs_root();
    let plan = plan(false, false);
    let mgr = Arc::new(RingManager::new(plan.clone(), None).unwrap());
    mgr.enter_required("configure").unwrap();
    mgr.enter_unprivileged("configured").unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(2));
    let workers: Vec<_> = [Cap::SYSLOG, Cap::SYS_PTRACE]
        .into_iter()
        .map(|cap| {
            let (mgr, inside, start, steady) = (
                mgr.clone(),
                inside.clone(),
                start.clone(),
                plan.steady_permitted,
            );
            std::thread::spawn(move || {
                start.wait();
                for i in 0..40 {
                    mgr.with_requested(cap, "concurrent", || {
                        assert_eq!(inside.fetch_add(1, SeqCst), 0, "two scopes at once");
                        assert_eq!(mgr.current(), Ring::Requested(cap));
                        assert_all(&format!("{cap} #{i}"), caps(&[cap]), steady);
                        if i % 8 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        inside.fetch_sub(1, SeqCst);
                        Ok::<_, String>(())
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(mgr.current(), Ring::Unprivileged);
    assert_all("end", CapSet::EMPTY, plan.steady_permitted);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[test]
fn operation_error_is_reported_and_ring_restored() {
    needs_root();
    let plan = plan(false, false);
    let mgr = RingManager::new(plan.clone(), None).unwrap();
    mgr.enter_required("configure").unwrap();
    let err = mgr
        .with_requested(Cap::SYSLOG, "failing op", || {
            Err::<(), _>("boom: kallsyms unreadable")
        })
        .unwrap_err();
    match &err {
        ScopeError::Operation(text) => assert_eq!(text, "boom: kallsyms unreadable"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("restored", plan.required, plan.config_permitted);
}

#[test]
fn cap_not_permitted_is_enter_error_and_op_not_run() {
    needs_root();
    let plan = plan(false, false);
    let mgr = RingManager::new(plan.clone(), None).unwrap();
    mgr.enter_required("configure").unwrap();
    mgr.enter_unprivileged("configured").unwrap();
    let ran = AtomicBool::new(false);
    // cap_bpf was required during configuration only, so it left P.
    let err = mgr
        .with_requested(Cap::BPF, "too late", || {
            ran.store(true, SeqCst);
            Ok::<_, String>(())
        })
        .unwrap_err();
    assert!(!ran.load(SeqCst), "the operation ran");
    match &err {
        ScopeError::Enter(RingError::NotPermitted { missing, .. }) => {
            assert_eq!(*missing, caps(&[Cap::BPF]))
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("cap_bpf"), "{err}");
    assert_eq!(mgr.current(), Ring::Unprivileged);
    assert_all("unchanged", CapSet::EMPTY, plan.steady_permitted);
    // The manager is still usable.
    mgr.with_requested(Cap::SYSLOG, "fine", || Ok::<_, String>(()))
        .unwrap();
}

#[test]
fn bypass_changes_nothing_but_logs() {
    needs_root();
    let plan = plan(true, true);
    let idle = Idle::spawn(3);
    let before: Vec<(i32, Sets)> = all_threads().into_iter().map(|t| (t.tid, t)).collect();
    let start = own_sets();
    let log_path = temp_log("bypass");
    let mgr = RingManager::new(plan.clone(), Some(RingLog::create(&log_path).unwrap())).unwrap();
    mgr.enter_required("configure").unwrap();
    assert_eq!(mgr.current(), Ring::Required);
    mgr.with_requested(Cap::SYSLOG, "enrich", || {
        assert_eq!(mgr.current(), Ring::Requested(Cap::SYSLOG));
        Ok::<_, String>(())
    })
    .unwrap();
    mgr.enter_unprivileged("configured").unwrap();
    // cap_bpf is not in steady_permitted, but under bypass nothing was dropped.
    mgr.with_requested(Cap::BPF, "still held", || Ok::<_, String>(()))
        .unwrap();
    assert_eq!(mgr.current(), Ring::Unprivileged);
    let after = all_threads();
    for t in &after {
        if let Some((_, b)) = before.iter().find(|(tid, _)| *tid == t.tid) {
            let sets = |s: &Sets| (s.inh, s.prm, s.eff, s.bnd, s.amb);
            assert_eq!(sets(t), sets(b), "thread {} changed under bypass", t.tid);
        }
    }
    idle.stop();
    let lines = log_lines(&log_path);
    assert_eq!(lines.len(), 6, "{lines:?}");
    for l in &lines {
        assert_eq!(l["bypass"], true);
        assert_eq!(l["effective"], serde_json::json!(start.eff.names()));
        assert_eq!(l["permitted"], serde_json::json!(start.prm.names()));
    }
    assert_eq!(lines[0]["ring"], "required");
    assert_eq!(lines[3]["ring"], "unprivileged");
    let _ = std::fs::remove_file(log_path);
}

#[test]
fn bypass_makes_no_capability_syscall() {
    needs_root();
    if child_mode().as_deref() == Some("bypass") {
        // capget/capset/prctl kill the process from here on.
        let prog = seccomp_program(
            &[libc::SYS_capset, libc::SYS_capget, libc::SYS_prctl],
            seccompiler::SeccompAction::KillProcess,
        );
        seccompiler::apply_filter(&prog).unwrap();
        let mgr = RingManager::new(plan(true, true), None).unwrap();
        mgr.enter_required("configure").unwrap();
        mgr.with_requested(Cap::SYSLOG, "enrich", || Ok::<_, String>(()))
            .unwrap();
        mgr.enter_unprivileged("configured").unwrap();
        println!("CHILD-OK bypass ring={}", mgr.current());
        return;
    }
    let (status, out) = run_child("bypass_makes_no_capability_syscall", "bypass");
    assert!(status.success(), "child failed ({status}):\n{out}");
    assert!(out.contains("CHILD-OK bypass ring=unprivileged"), "{out}");
}

/// Under bypass a Requested operation runs whatever P holds: the kernel, not the tracer,
/// decides whether it works (what `capring minimize` measures). Without bypass the same call
/// is refused before the operation runs.
#[test]
fn bypass_runs_a_requested_operation_outside_the_permitted_set() {
    needs_root();
    if let Some(mode) = child_mode().filter(|m| m.starts_with("no-syslog")) {
        for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
            caps::drop(None, set, caps::Capability::CAP_SYSLOG).unwrap();
        }
        let bypass = mode == "no-syslog-bypass";
        let mgr = RingManager::new(plan(bypass, false), None).unwrap();
        let ran = std::cell::Cell::new(false);
        let r = mgr.with_requested(Cap::SYSLOG, "enrich", || {
            ran.set(true);
            Ok::<_, String>(())
        });
        println!("CHILD-OK ran={} ok={}", ran.get(), r.is_ok());
        return;
    }
    for (mode, expected) in [
        ("no-syslog-bypass", "ran=true ok=true"),
        ("no-syslog-rings", "ran=false ok=false"),
    ] {
        let (status, out) = run_child(
            "bypass_runs_a_requested_operation_outside_the_permitted_set",
            mode,
        );
        assert!(status.success(), "{mode}: child failed ({status}):\n{out}");
        assert_eq!(marker(&out, "CHILD-OK "), Some(expected), "{mode}:\n{out}");
    }
}

#[test]
fn capset_failure_is_reported() {
    needs_root();
    if child_mode().as_deref() == Some("capset-eperm") {
        let prog = seccomp_program(
            &[libc::SYS_capset],
            seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        );
        seccompiler::apply_filter(&prog).unwrap();
        let idle = Idle::spawn(2);
        let mgr = RingManager::new(plan(false, false), None).unwrap();
        let err = mgr.enter_required("configure").unwrap_err();
        println!("CHILD-ERR {err}");
        println!("CHILD-ERRNO {:?}", err.errno());
        println!("CHILD-RING {}", mgr.current());
        idle.stop();
        return;
    }
    let (status, out) = run_child("capset_failure_is_reported", "capset-eperm");
    assert!(status.success(), "child failed ({status}):\n{out}");
    let line = marker(&out, "CHILD-ERR ").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("capset"), "{line}");
    assert!(
        line.contains("Operation not permitted") || line.contains("EPERM"),
        "{line}"
    );
    assert!(line.contains("thread"), "{line}");
    assert!(out.contains("CHILD-ERRNO Some(1)"), "{out}");
    assert!(out.contains("CHILD-RING privileged"), "{out}");
}

#[test]
fn capset_failure_on_another_thread_names_that_thread() {
    needs_root();
    if child_mode().as_deref() == Some("peer-eperm") {
        // Only one peer thread gets the filter (seccomp filters are per thread without TSYNC).
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let peer = std::thread::spawn(move || {
            let prog = seccomp_program(
                &[libc::SYS_capset],
                seccompiler::SeccompAction::Errno(libc::EPERM as u32),
            );
            seccompiler::apply_filter(&prog).unwrap();
            tx.send(gettid()).unwrap();
            while !stop2.load(SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let peer_tid = rx.recv().unwrap();
        let mgr = RingManager::new(plan(false, false), None).unwrap();
        let err = mgr.enter_required("configure").unwrap_err();
        println!("CHILD-PEER {peer_tid}");
        println!("CHILD-ERR {err}");
        stop.store(true, SeqCst);
        peer.join().unwrap();
        return;
    }
    let (status, out) = run_child(
        "capset_failure_on_another_thread_names_that_thread",
        "peer-eperm",
    );
    assert!(status.success(), "child failed ({status}):\n{out}");
    let peer = marker(&out, "CHILD-PEER ").unwrap_or_else(|| panic!("{out}"));
    let line = marker(&out, "CHILD-ERR ").unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("capset"), "{line}");
    assert!(line.contains("EPERM"), "{line}");
    assert!(line.contains(&format!("thread {peer}")), "{line}");
}

#[test]
fn return_failure_keeps_the_operation_error() {
    needs_root();
    if child_mode().as_deref() == Some("return-eperm") {
        let mgr = RingManager::new(plan(false, false), None).unwrap();
        mgr.enter_required("configure").unwrap();
        let err = mgr
            .with_requested(Cap::SYSLOG, "op then capset breaks", || {
                // From now on capset fails on this (the scope owner's) thread.
                let prog = seccomp_program(
                    &[libc::SYS_capset],
                    seccompiler::SeccompAction::Errno(libc::EPERM as u32),
                );
                seccompiler::apply_filter(&prog).unwrap();
                Err::<(), _>("op boom")
            })
            .unwrap_err();
        match &err {
            ScopeError::Return { error, operation } => {
                println!("CHILD-RETURN-ERR {error}");
                println!("CHILD-OP {operation:?}");
            }
            other => println!("CHILD-WRONG {other:?}"),
        }
        println!("CHILD-TEXT {err}");
        println!("CHILD-RING {}", mgr.current());
        return;
    }
    let (status, out) = run_child("return_failure_keeps_the_operation_error", "return-eperm");
    assert!(status.success(), "child failed ({status}):\n{out}");
    assert!(!out.contains("CHILD-WRONG"), "{out}");
    let ret = marker(&out, "CHILD-RETURN-ERR ").unwrap_or_else(|| panic!("{out}"));
    assert!(ret.contains("capset") && ret.contains("EPERM"), "{ret}");
    assert!(out.contains("CHILD-OP Some(\"op boom\")"), "{out}");
    let text = marker(&out, "CHILD-TEXT ").unwrap();
    assert!(
        text.contains("capset") && text.contains("op boom"),
        "{text}"
    );
    // The process is still in the elevated ring, and says so.
    assert!(out.contains("CHILD-RING requested(cap_syslog)"), "{out}");
}

#[test]
fn panicking_operation_restores_the_ring_and_releases_the_scope() {
    needs_root();
    let plan = plan(false, false);
    let mgr = Arc::new(RingManager::new(plan.clone(), None).unwrap());
    mgr.enter_required("configure").unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mgr.with_requested(Cap::SYSLOG, "panics", || -> Result<(), String> {
            panic!("op panicked")
        })
    }));
    assert!(caught.is_err());
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("after the panic", plan.required, plan.config_permitted);
    // Another thread can open a scope (ownership was released).
    let other = mgr.clone();
    std::thread::spawn(move || {
        other
            .with_requested(Cap::SYS_PTRACE, "after panic", || Ok::<_, String>(()))
            .unwrap()
    })
    .join()
    .unwrap();
}

#[test]
fn requested_before_configuration_returns_to_privileged() {
    needs_root();
    let plan = plan(false, true);
    let p0 = start_permitted();
    let idle = Idle::spawn(2);
    let mgr = RingManager::new(plan.clone(), None).unwrap();
    mgr.with_requested(Cap::SYSLOG, "early", || {
        assert_all("requested in ring 0", caps(&[Cap::SYSLOG]), p0);
        Ok::<_, String>(())
    })
    .unwrap();
    assert_eq!(mgr.current(), Ring::Privileged);
    assert_all("back to privileged: E = P", p0, p0);
    // Bounding untouched before the first drop.
    assert!(all_threads().iter().all(|t| t.bnd != CapSet::EMPTY));
    mgr.enter_unprivileged("straight to steady").unwrap();
    assert_all("unprivileged", CapSet::EMPTY, plan.steady_permitted);
    assert!(all_threads().iter().all(|t| t.bnd == CapSet::EMPTY));
    idle.stop();
}

#[test]
fn thread_blocking_the_signal_fails_closed() {
    needs_root();
    let plan = plan(false, false);
    let mgr = RingManager::new(plan, None).unwrap();
    let signo = RingManager::signal_number().unwrap();
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let blocker = std::thread::spawn(move || {
        // SAFETY: plain sigset manipulation for this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signo);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        tx.send(gettid()).unwrap();
        while !stop2.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let tid = rx.recv().unwrap();
    let began = Instant::now();
    let err = mgr.enter_required("configure").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RingError::NoAck { .. }), "{text}");
    assert!(text.contains(&format!("thread {tid}")), "{text}");
    assert!(text.contains("blocks signal"), "{text}");
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(
        mgr.current(),
        Ring::Privileged,
        "a failed transition is not recorded"
    );
    stop.store(true, SeqCst);
    blocker.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Stress and latency
// ---------------------------------------------------------------------------------------------

#[test]
fn stress_8_threads_200_scopes_with_watcher() {
    needs_root();
    let plan = plan(false, true);
    let mgr = Arc::new(RingManager::new(plan.clone(), None).unwrap());
    mgr.enter_required("configure").unwrap();

    // The watcher checks, on request from inside each scope (so while the scope holds the
    // lock), that every thread's CapEff is equal and is exactly the requested cap.
    let (req_tx, req_rx) = mpsc::channel::<(Cap, mpsc::Sender<Result<usize, String>>)>();
    let watcher = std::thread::spawn(move || {
        let mut checks = 0usize;
        for (cap, reply) in req_rx {
            let threads = all_threads();
            let first = threads[0].eff;
            let result = if threads.iter().any(|t| t.eff != first) {
                Err(format!("CapEff differ: {threads:?}"))
            } else if first != CapSet::EMPTY.with(cap) {
                Err(format!("CapEff {first} != {{{cap}}}"))
            } else {
                checks += 1;
                Ok(threads.len())
            };
            reply.send(result).unwrap();
        }
        checks
    });

    let pool = [
        Cap::SYSLOG,
        Cap::SYS_PTRACE,
        Cap::DAC_OVERRIDE,
        Cap::BPF,
        Cap::NET_ADMIN,
    ];
    let start = Arc::new(Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (mgr, start, req_tx) = (mgr.clone(), start.clone(), req_tx.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut max_threads = 0;
                for i in 0..25 {
                    let cap = pool[(w + i) % pool.len()];
                    let n = mgr
                        .with_requested(cap, "stress", || {
                            let (tx, rx) = mpsc::channel();
                            req_tx.send((cap, tx)).unwrap();
                            rx.recv().unwrap()
                        })
                        .unwrap_or_else(|e| panic!("worker {w} scope {i} ({cap}): {e}"));
                    max_threads = max_threads.max(n);
                    if i % 5 == 0 {
                        std::thread::yield_now();
                    }
                }
                max_threads
            })
        })
        .collect();
    drop(req_tx);
    let seen: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let checks = watcher.join().unwrap();
    assert_eq!(checks, 200);
    assert!(
        seen.iter().max().is_some_and(|n| *n >= 10),
        "threads seen per worker: {seen:?}"
    );
    assert_eq!(mgr.current(), Ring::Required);
    assert_all("after stress", plan.required, plan.config_permitted);
}

fn measure(mgr: &RingManager, label: &str, rounds: usize) -> Duration {
    let threads = mgr.thread_count();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        mgr.with_requested(Cap::SYSLOG, "latency", || Ok::<_, String>(()))
            .unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / rounds as u32;
    eprintln!(
        "LATENCY {label}: threads={threads} with_requested round trip mean={mean:?} p50={:?} p99={:?} \
         max={:?} (n={rounds})",
        samples[rounds / 2],
        samples[rounds * 99 / 100],
        samples[rounds - 1]
    );
    mean
}

#[test]
fn latency_requested_round_trip_4_threads() {
    needs_root();
    let plan = plan(false, false);
    let mgr = RingManager::new(plan.clone(), None).unwrap();
    let t = Instant::now();
    mgr.enter_required("configure").unwrap();
    eprintln!("LATENCY enter_required: {:?}", t.elapsed());
    for (label, kind) in [
        ("4 parked threads", Some(0)),
        ("4 threads blocked in recv", Some(1)),
        ("4 mixed threads (1 spinning, 1 reading /proc)", None),
    ] {
        let idle = Idle::spawn_kind(4, kind);
        let mean = measure(&mgr, label, 200);
        assert!(mean < Duration::from_millis(200), "{label}: mean {mean:?}");
        idle.stop();
    }
    assert_all("after", plan.required, plan.config_permitted);
}
