//! The observer against real programs (capsh, setpriv, sh, sleep) and a multi-threaded helper.
//!
//! Tests that change capabilities need root and panic without it ("needs root (CI runs as
//! root)"): they are never skipped silently. Root on the CI machines may lack some capabilities
//! (CAP_SYS_RESOURCE here), so expectations are computed from the observed starting sets.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use capring_observe::timeline::{
    Call, Condition, Event, FaultKind, PrctlOp, SampleCause, Status, Stream,
};
use capring_observe::{run, Entry, LaunchSpec, Observation, ObserveError, ThreadCaps};
use capring_spec::caps::{parse_name, Cap, CapSet};

fn need_root() {
    if !capring_spec::sys::is_root() {
        panic!("needs root (CI runs as root)");
    }
}

fn need_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        panic!("needs `{name}` (apt-get install -y {package})");
    }
}

fn cap(name: &str) -> Cap {
    parse_name(name).unwrap()
}

fn set(names: &[&str]) -> CapSet {
    CapSet::from_names(names.iter().copied()).unwrap()
}

fn observe(spec: &LaunchSpec) -> Observation {
    run(spec).unwrap_or_else(|e| panic!("observing {:?}: {e}", spec.command_line()))
}

fn dump(obs: &Observation) -> String {
    format!(
        "exit: {}\n{}stderr: {}",
        obs.exit,
        obs.timeline
            .render(capring_observe::observer::cap_last_cap()),
        obs.stderr()
    )
}

/// Entries whose event matches.
fn entries(obs: &Observation, pred: impl Fn(&Event) -> bool) -> Vec<&Entry> {
    obs.timeline
        .entries
        .iter()
        .filter(|e| pred(&e.event))
        .collect()
}

/// Entries of calls to `syscall`.
fn calls<'a>(obs: &'a Observation, syscall: &str) -> Vec<&'a Entry> {
    obs.timeline
        .calls()
        .filter(|(_, c, ..)| c.syscall() == syscall)
        .map(|(e, ..)| e)
        .collect()
}

fn result(e: &Entry) -> i64 {
    e.call().expect("a call entry").1
}

fn stdout_lines(obs: &Observation) -> Vec<(u64, &str)> {
    obs.stream(Stream::Stdout)
        .map(|l| (l.t_ns, l.text.as_str()))
        .collect()
}

fn is_capbset_drop(e: &Entry, cap: u64) -> bool {
    matches!(
        e.call(),
        Some((Call::Prctl { op: PrctlOp::CapbsetDrop, arg }, ..)) if *arg == cap
    )
}

fn own(e: &Entry) -> &ThreadCaps {
    e.own()
        .unwrap_or_else(|| panic!("entry without the acting thread: {e:?}"))
}

fn first_exec<'a>(obs: &'a Observation, comm: &str) -> &'a Entry {
    entries(obs, |e| matches!(e, Event::Exec { .. }))
        .into_iter()
        .find(|e| own(e).comm == comm)
        .unwrap_or_else(|| panic!("no exec of {comm}:\n{}", dump(obs)))
}

/// The process no longer runs: it does not exist, or is a zombie waiting for its real parent
/// (init) to reap it, which may take a moment once the tracer has released it.
fn gone(pid: i32) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat
                    .rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next().map(String::from));
                if matches!(state.as_deref(), Some("Z") | Some("X")) {
                    return true;
                }
            }
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn capsh_bounding_drop_and_capset_are_recorded_with_post_change_sets() {
    need_root();
    need_program("capsh", "libcap2-bin");
    let spec = LaunchSpec::new(
        "capsh",
        [
            "--drop=cap_net_raw",
            "--caps=cap_net_admin+eip cap_setpcap+ep",
            "--",
            "-c",
            "exit 0",
        ],
    );
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(obs.exit.success(), "{text}");
    let start = own(first_exec(&obs, "capsh")).clone();
    assert!(start.bounding.contains(cap("cap_net_raw")), "{text}");

    let drops: Vec<&Entry> = calls(&obs, "prctl")
        .into_iter()
        .filter(|e| is_capbset_drop(e, 13))
        .collect();
    assert_eq!(drops.len(), 1, "{text}");
    assert_eq!(result(drops[0]), 0);
    assert_eq!(
        own(drops[0]).bounding,
        start.bounding.difference(set(&["cap_net_raw"])),
        "{text}"
    );

    let capsets = calls(&obs, "capset");
    assert_eq!(capsets.len(), 1, "{text}");
    let c = capsets[0];
    assert_eq!(result(c), 0);
    assert!(c.t_ns > drops[0].t_ns);
    let Some((Call::Capset { data: Some(d), .. }, ..)) = c.call() else {
        panic!("{text}");
    };
    assert_eq!(d.effective, set(&["cap_net_admin", "cap_setpcap"]));
    assert_eq!(d.inheritable, set(&["cap_net_admin"]));
    let after = own(c);
    assert_eq!(
        after.effective,
        set(&["cap_net_admin", "cap_setpcap"]),
        "{text}"
    );
    assert_eq!(
        after.permitted,
        set(&["cap_net_admin", "cap_setpcap"]),
        "{text}"
    );
    assert_eq!(after.inheritable, set(&["cap_net_admin"]), "{text}");

    // root exec'ing bash: P' = bounding (which lacks cap_net_raw), E' = P', I kept.
    let bash = first_exec(&obs, "bash");
    assert!(
        matches!(&bash.event, Event::Exec { path, .. } if path.ends_with("sh")),
        "{text}"
    );
    let b = own(bash);
    assert_eq!(
        b.permitted,
        start.bounding.difference(set(&["cap_net_raw"])),
        "{text}"
    );
    assert_eq!(b.effective, b.permitted);
    assert_eq!(b.inheritable, set(&["cap_net_admin"]));
    assert!(!b.bounding.contains(cap("cap_net_raw")));
    assert_eq!(
        entries(&obs, |e| matches!(e, Event::ProcessExit { .. })).len(),
        1,
        "{text}"
    );
}

#[test]
fn setpriv_bounding_and_inheritable_changes() {
    need_root();
    need_program("setpriv", "util-linux");
    let mut spec = LaunchSpec::new(
        "setpriv",
        ["--inh-caps=-all", "--bounding-set=-net_raw", "true"],
    );
    spec.env_set.push(("PATH".into(), "/usr/bin:/bin".into()));
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(obs.exit.success(), "{text}");
    let drop = calls(&obs, "prctl")
        .into_iter()
        .find(|e| is_capbset_drop(e, 13))
        .unwrap_or_else(|| panic!("no PR_CAPBSET_DROP of cap_net_raw:\n{text}"));
    assert_eq!(result(drop), 0);
    assert!(!own(drop).bounding.contains(cap("cap_net_raw")));
    assert!(!calls(&obs, "capset").is_empty(), "{text}");
    let t = own(first_exec(&obs, "true"));
    assert!(!t.bounding.contains(cap("cap_net_raw")), "{text}");
    assert!(!t.effective.contains(cap("cap_net_raw")), "{text}");
    assert!(t.inheritable.is_empty());
}

#[test]
fn capset_fault_is_noted_and_the_program_fails() {
    need_root();
    need_program("capsh", "libcap2-bin");
    let mut spec = LaunchSpec::new(
        "capsh",
        [
            "--caps=cap_net_admin+eip cap_setpcap+ep",
            "--",
            "-c",
            "exit 0",
        ],
    );
    spec.faults = vec![FaultKind::CapsetEperm];
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(!obs.exit.success(), "{text}");
    assert!(
        obs.stderr().contains("Unable to set capabilities"),
        "{text}"
    );
    let conditions = entries(&obs, |e| {
        matches!(
            e,
            Event::Condition {
                condition: Condition::Fault {
                    fault: FaultKind::CapsetEperm
                }
            }
        )
    });
    assert_eq!(conditions.len(), 1, "{text}");
    // The fault is injected by the tracer: the attempt is recorded, failed and marked.
    let capsets = calls(&obs, "capset");
    assert_eq!(capsets.len(), 1, "{text}");
    assert_eq!(
        capsets[0].call().map(|(_, r, injected)| (r, injected)),
        Some((-(libc::EPERM as i64), true)),
        "{text}"
    );
    // …and really failed: capsh's sets did not change.
    let before = own(first_exec(&obs, "capsh"));
    assert_eq!(own(capsets[0]).effective, before.effective, "{text}");
    assert!(
        entries(&obs, |e| matches!(e, Event::Exec { .. }))
            .iter()
            .all(|e| own(e).comm != "bash"),
        "{text}"
    );
}

#[test]
fn capbset_drop_fault_makes_capsh_drop_fail() {
    need_root();
    need_program("capsh", "libcap2-bin");
    let mut spec = LaunchSpec::new("capsh", ["--drop=cap_net_raw", "--", "-c", "exit 0"]);
    spec.faults = vec![FaultKind::CapbsetDropEperm];
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(!obs.exit.success(), "{text}");
    let drops: Vec<&Entry> = calls(&obs, "prctl")
        .into_iter()
        .filter(|e| is_capbset_drop(e, 13))
        .collect();
    assert_eq!(drops.len(), 1, "{text}");
    assert_eq!(drops[0].call().map(|(_, r, i)| (r, i)), Some((-1, true)));
    assert!(
        own(drops[0]).bounding.contains(cap("cap_net_raw")),
        "{text}"
    );
}

#[test]
fn bounding_drop_removes_caps_from_bounding_and_root_permitted() {
    need_root();
    let mut spec = LaunchSpec::new("grep", ["^Cap", "/proc/self/status"]);
    spec.bounding_drop = set(&["cap_net_raw", "cap_sys_module"]);
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(obs.exit.success(), "{text}");
    let condition = entries(&obs, |e| matches!(e, Event::Condition { .. }));
    assert_eq!(
        condition[0].event,
        Event::Condition {
            condition: Condition::BoundingDrop {
                caps: spec.bounding_drop
            }
        },
        "{text}"
    );
    let g = own(first_exec(&obs, "grep"));
    assert!(
        g.bounding.intersection(spec.bounding_drop).is_empty(),
        "{text}"
    );
    assert!(
        g.permitted.intersection(spec.bounding_drop).is_empty(),
        "{text}"
    );
    // The program's own view agrees.
    let lines = stdout_lines(&obs);
    let line = |key: &str| {
        let l = lines
            .iter()
            .find(|(_, l)| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key}:\n{text}"));
        CapSet::from_hex(l.1.split_whitespace().nth(1).unwrap()).unwrap()
    };
    assert_eq!(line("CapBnd:"), g.bounding);
    assert_eq!(line("CapPrm:"), g.permitted);
}

#[test]
fn threads_are_seen_and_per_thread_sets_disagree() {
    need_root();
    let exe = std::env::current_exe().unwrap();
    let mut spec = LaunchSpec::new(
        &exe,
        [
            "helper_process_for_the_threads_test",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ],
    );
    spec.env_set
        .push(("CAPRING_HELPER".into(), "threads".into()));
    spec.sample_on_event = true;
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(obs.exit.success(), "{text}");
    let root = obs.root_pid;
    let starts: Vec<&Entry> = entries(&obs, |e| matches!(e, Event::ThreadStart { .. }))
        .into_iter()
        .filter(|e| e.pid == root)
        .collect();
    // libtest's test thread + cr-keep + cr-drop
    assert!(starts.len() >= 3, "{text}");
    assert!(
        starts
            .iter()
            .all(|e| matches!(e.event, Event::ThreadStart { from_tid: Some(_) }) && e.tid != root),
        "{text}"
    );
    assert!(
        entries(&obs, |e| matches!(e, Event::ThreadExit { .. })).len() >= 3,
        "{text}"
    );
    // Each thread was seen at its exit stop, with its last sets.
    let exiting = entries(&obs, |e| matches!(e, Event::Exiting { .. }));
    assert!(
        exiting.iter().any(|e| e
            .own()
            .is_some_and(|t| t.comm == "cr-keep" && t.effective.contains(cap("cap_net_raw")))),
        "{text}"
    );

    let capsets = calls(&obs, "capset");
    assert_eq!(capsets.len(), 1, "{text}");
    let c = capsets[0];
    assert_eq!(result(c), 0);
    let dropper = own(c);
    assert_eq!(dropper.comm, "cr-drop");
    assert!(!dropper.effective.contains(cap("cap_net_raw")), "{text}");
    assert!(dropper.permitted.contains(cap("cap_net_raw")), "{text}");
    let keeper = c
        .threads
        .iter()
        .find(|t| t.comm == "cr-keep")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(keeper.effective.contains(cap("cap_net_raw")), "{text}");
    assert!(!keeper.same_sets(dropper), "{text}");
    let line = capring_observe::timeline::render_entry(c, 40);
    assert!(line.contains("threads disagree"), "{line}");

    // The helper printed one line after the drop: its sample shows the drop too.
    let n = obs
        .events()
        .position(|l| l.text.ends_with("HELPER dropped"))
        .expect("helper line")
        + 1;
    let sample = obs
        .timeline
        .samples()
        .find(|s| {
            s.event
                == Event::Sample {
                    cause: SampleCause::EventLine { n },
                }
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(sample.threads.iter().any(|t| t.comm == "cr-keep"), "{text}");
    let procs = obs.timeline.processes();
    assert_eq!(procs.len(), 1, "{text}");
    assert!(procs[0].tids.len() >= 4, "{text}");
}

/// Not a test: the body of the helper process of `threads_are_seen_and_per_thread_sets_disagree`
/// (this test binary re-executed with CAPRING_HELPER=threads). Passes trivially otherwise.
#[test]
fn helper_process_for_the_threads_test() {
    if std::env::var("CAPRING_HELPER").as_deref() != Ok("threads") {
        return;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let keeper = std::thread::Builder::new()
        .name("cr-keep".into())
        .spawn(move || {
            ready_tx.send(()).unwrap(); // its comm is set by now
            rx.recv().ok()
        })
        .unwrap();
    ready_rx.recv().unwrap();
    let dropper = std::thread::Builder::new()
        .name("cr-drop".into())
        // SAFETY: capget/capset read and write the two local structs, laid out as the kernel's.
        .spawn(|| unsafe {
            let mut hdr = Header {
                version: 0x2008_0522,
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
                0
            );
            data[0].effective &= !(1 << 13); // cap_net_raw, this thread only
            assert_eq!(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()), 0);
            println!("HELPER dropped");
        })
        .unwrap();
    dropper.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    tx.send(()).unwrap();
    keeper.join().unwrap();
}

#[test]
fn timeout_kills_the_whole_tree() {
    let mut spec = LaunchSpec::new("sh", ["-c", "sleep 100 & sleep 100"]);
    spec.timeout = Duration::from_secs(1);
    let t = Instant::now();
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(t.elapsed() < Duration::from_secs(10), "{text}");
    assert!(obs.exit.timed_out, "{text}");
    assert_eq!(obs.exit.signal, Some(libc::SIGKILL), "{text}");
    let procs = obs.timeline.processes();
    assert_eq!(procs.len(), 3, "sh and two sleeps:\n{text}");
    for p in &procs {
        assert!(gone(p.pid), "pid {} still exists:\n{text}", p.pid);
        assert!(p.exit.is_some(), "{text}");
    }
}

#[test]
fn leftovers_die_with_the_root() {
    // The root exits at once; its background child must not outlive it.
    let spec = LaunchSpec::new("sh", ["-c", "sleep 100 & exit 0"]);
    let t = Instant::now();
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(t.elapsed() < Duration::from_secs(10), "{text}");
    assert_eq!(obs.exit.code, Some(0));
    assert!(!obs.exit.timed_out);
    for p in obs.timeline.processes() {
        assert!(gone(p.pid), "{text}");
    }
}

#[test]
fn stop_after_lines_terms_then_kills() {
    let mut spec = LaunchSpec::new("sh", ["-c", "echo one; echo two; exec sleep 100"]);
    spec.stop_after_events = Some(2);
    let obs = observe(&spec);
    assert!(obs.exit.stopped_by_harness);
    assert_eq!(obs.exit.signal, Some(libc::SIGTERM), "{}", dump(&obs));
    assert_eq!(obs.event_count, 2);
    // The harness's own SIGTERM is a normal end, and says so.
    assert!(
        obs.exit.to_string().starts_with("stopped by capring"),
        "{}",
        obs.exit
    );
    assert!(
        entries(&obs, |e| matches!(e, Event::Signal { signal: 15, .. })).len() == 1,
        "{}",
        dump(&obs)
    );

    let mut spec = LaunchSpec::new("sh", ["-c", "trap '' TERM; echo one; echo two; sleep 100"]);
    spec.stop_after_events = Some(2);
    let t = Instant::now();
    let obs = observe(&spec);
    let text = dump(&obs);
    assert!(obs.exit.stopped_by_harness, "{text}");
    assert_eq!(obs.exit.signal, Some(libc::SIGKILL), "{text}");
    assert!(!obs.exit.timed_out);
    assert!(
        t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(8),
        "{text}"
    );
}

#[test]
fn samples_on_stdout_and_periodic() {
    let mut spec = LaunchSpec::new("sh", ["-c", "echo a; sleep 0.1; echo b; sleep 0.3"]);
    spec.sample_on_event = true;
    spec.sample_every = Some(Duration::from_millis(50));
    let obs = observe(&spec);
    let text = dump(&obs);
    let samples: Vec<&Entry> = obs.timeline.samples().collect();
    let causes: Vec<&Event> = samples.iter().map(|s| &s.event).collect();
    for n in [1, 2] {
        let cause = Event::Sample {
            cause: SampleCause::EventLine { n },
        };
        assert!(causes.contains(&&cause), "{text}");
    }
    let periodic: Vec<&&Entry> = samples
        .iter()
        .filter(|s| {
            s.event
                == Event::Sample {
                    cause: SampleCause::Periodic,
                }
        })
        .collect();
    assert!(periodic.len() >= 4, "{text}");
    assert!(
        periodic
            .iter()
            .any(|s| s.threads.iter().any(|t| t.comm == "sh")),
        "{text}"
    );
    // merged by time
    assert!(obs
        .timeline
        .entries
        .windows(2)
        .all(|w| w[0].t_ns <= w[1].t_ns));
    let lines = stdout_lines(&obs);
    let (t1, _) = lines[0];
    let (t2, _) = lines[1];
    assert!(t2 - t1 >= 90_000_000, "{t1} {t2}");
}

#[test]
fn without_observation_faults_still_apply() {
    need_root();
    need_program("capsh", "libcap2-bin");
    let mut spec = LaunchSpec::new("capsh", ["--caps=cap_net_admin+eip", "--", "-c", "exit 0"]);
    spec.observe = false;
    spec.faults = vec![FaultKind::CapsetEperm];
    let obs = observe(&spec);
    assert!(!obs.exit.success());
    // A seccomp filter makes it fail here: nothing is traced, the condition is recorded.
    assert!(calls(&obs, "capset").is_empty());
    assert_eq!(
        entries(&obs, |e| matches!(e, Event::Condition { .. })).len(),
        1
    );
    spec.faults.clear();
    let obs = observe(&spec);
    assert!(obs.exit.success(), "{}", obs.stderr());
    assert!(entries(&obs, |e| matches!(e, Event::Exec { .. })).is_empty());

    let mut spec = LaunchSpec::new("sh", ["-c", "sleep 100 & sleep 100"]);
    spec.observe = false;
    spec.timeout = Duration::from_secs(1);
    let obs = observe(&spec);
    assert!(obs.exit.timed_out);
    assert_eq!(obs.exit.signal, Some(libc::SIGKILL));
}

#[test]
fn launch_errors_are_errors() {
    let spec = LaunchSpec::new("no-such-program-capring", Vec::<String>::new());
    assert!(matches!(run(&spec), Err(ObserveError::NotFound(_))));
    let spec = LaunchSpec::new(Path::new("/proc/self/status"), Vec::<String>::new());
    match run(&spec) {
        Err(ObserveError::ChildSetup {
            stage: "execve",
            source,
        }) => {
            assert_eq!(source.raw_os_error(), Some(libc::EACCES))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_runs_do_not_steal_each_others_children() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let spec = LaunchSpec::new("sh", ["-c", &format!("sleep 0.2; exit {i}")]);
                observe(&spec).exit.code
            })
        })
        .collect();
    // A plain child of this process, waited for with std, must not be reaped by the tracers.
    let status = Command::new("sh")
        .args(["-c", "sleep 0.3; exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), Some(i as i32));
    }
}

#[test]
fn normalized_timelines_are_stable_across_runs() {
    let spec = LaunchSpec::new("sh", ["-c", "/bin/true; /bin/true"]);
    let a = observe(&spec).timeline.normalized();
    let b = observe(&spec).timeline.normalized();
    assert_eq!(a, b);
    assert_eq!(a.root_pid, 1);
    assert!(a.entries.iter().all(|e| e.t_ns == 0));
    assert!(
        matches!(a.entries[0].event, Event::Exec { .. }),
        "{:?}",
        a.entries[0]
    );
}

// ---------------------------------------------------------------------------------------------
// the binary

fn capring(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capring"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_observe_prints_and_propagates_the_exit_code() {
    let dir = std::env::temp_dir().join(format!("capring-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("t.json");
    let out = capring(&[
        "observe",
        "--out",
        out_file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(" exec /usr/bin/sh") || stdout.contains(" exec /bin/sh"),
        "{stdout}"
    );
    assert!(stdout.contains("process_exit code 3"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdout| hi"));
    let t: capring_observe::Timeline =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert!(t.entries.iter().any(|e| e.event
        == Event::ProcessExit {
            status: Status::Code(3)
        }));
    std::fs::remove_dir_all(&dir).unwrap();

    let out = capring(&["observe", "--json", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let t: capring_observe::Timeline = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t.entries.iter().any(|e| e.event
        == Event::ProcessExit {
            status: Status::Signal(libc::SIGTERM)
        }));

    let out = capring(&["observe", "--sample-ms", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let out = capring(&["observe"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `capring check --out DIR` writes the report files, the timelines and the per-scenario
/// summaries that vm-test compares with snapshots/.
#[test]
fn check_out_dir_holds_reports_timelines_and_summaries() {
    assert!(capring_spec::sys::is_root(), "needs root (CI runs as root)");
    let dir = std::env::temp_dir().join(format!("capring-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let profile = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tracers/ref-tracer.toml"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capring"))
        .args([
            "check",
            "--tracer",
            profile,
            "--scenario",
            "usage-bad-bypass",
            "--format",
            "tap",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("capring runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .starts_with("TAP version 13\n1..1\nok 1 - usage-bad-bypass usage.exit"));
    for f in [
        "results.json",
        "report.tap",
        "junit.xml",
        "runs/usage-bad-bypass.json",
        "summaries/usage-bad-bypass.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summaries/usage-bad-bypass.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["outcome"], "exit 2");
    // The recorded run reads back, plan and all.
    let rec = capring_judge::run::RunRecord::load(&dir.join("runs/usage-bad-bypass.json"))
        .expect("a recorded run reads back");
    assert_eq!(rec.plan.scenario.name, "usage-bad-bypass");
    assert_eq!(rec.observation.exit.code, Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
