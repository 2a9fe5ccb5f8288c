//! Loads the reference tracer's real eBPF programs into the running kernel.
//!
//! Why these tests exist: they are the only proof that the C programs pass the verifier,
//! attach where they should and deliver decodable events, and that dropping `Probes`
//! unloads them. They need root; run them with nextest (one process per test) because
//! aya caches its kernel feature probes process-wide:
//!
//! `cargo nextest run -p capring-reference --test ebpf_load`
//!
//! The cgroup v2 directory used for `net_packet` is `$CAPRING_CGROUP_ROOT` or, when unset,
//! the first cgroup2 mount found in /proc/self/mountinfo.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capring_reference::ebpf::{self, EbpfError, LoadPlan, Probes, TraceEvent};
use capring_reference::transport::{MemoryRead, Output, Support};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_ref-workload");

/// Root check, tracefs mount and aya's feature probe; the first call of every test.
fn setup() {
    if !capring_spec::sys::is_root() {
        panic!("this test needs root (CI runs as root)");
    }
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    if !tracing.join("events").is_dir() {
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting tracefs failed: {status}");
    }
    // While privileged, before the first load (aya caches the result process-wide).
    let _ = aya::features();
}

fn cgroup_root() -> PathBuf {
    if let Some(path) = std::env::var_os("CAPRING_CGROUP_ROOT") {
        return PathBuf::from(path);
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mount point> <options> ... - <fstype> <source> <super options>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(mount_point) = left.split_whitespace().nth(4) {
                return PathBuf::from(mount_point);
            }
        }
    }
    panic!("no cgroup2 mount found; set CAPRING_CGROUP_ROOT");
}

fn plan(events: &[&str]) -> LoadPlan {
    LoadPlan {
        events: events.iter().map(|e| e.to_string()).collect(),
        cgroup_root: Some(cgroup_root()),
        self_tgid: std::process::id(),
    }
}

fn load(events: &[&str]) -> Probes {
    match ebpf::load_and_attach(&plan(events)) {
        Ok(probes) => probes,
        Err(e) => panic!("load_and_attach({events:?}) failed: {e}"),
    }
}

/// Runs ref-workload for about a second and collects everything the probes report meanwhile.
/// Returns the events and the workload's pid.
fn run_workload(probes: &mut Probes, kinds: &str) -> (Vec<TraceEvent>, u32) {
    let mut child = Command::new(WORKLOAD)
        .args(["--duration", "1", "--rate", "20", "--kinds", kinds])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning ref-workload");
    let pid = child.id();
    let mut events = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        events.extend(probes.poll(Duration::from_millis(100)).expect("poll"));
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < give_up, "ref-workload did not finish");
    }
    let drain_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_until {
        events.extend(probes.poll(Duration::from_millis(50)).expect("poll"));
    }
    (events, pid)
}

/// `bpf(BPF_PROG_GET_FD_BY_ID)`: Ok(()) if the program exists (the fd is closed again).
fn program_exists(id: u32) -> Result<(), std::io::Error> {
    #[repr(C)]
    struct GetFdById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    let attr = GetFdById {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &attr as *const GetFdById,
            std::mem::size_of::<GetFdById>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just returned by the kernel and is owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Asserts the programs exist, drops the probes, then asserts the kernel forgot them.
fn assert_unloaded_on_drop(probes: Probes) {
    let ids = probes.program_ids();
    assert!(!ids.is_empty(), "no program ids reported");
    for id in &ids {
        program_exists(*id)
            .unwrap_or_else(|e| panic!("program {id} should exist while loaded: {e}"));
    }
    drop(probes);
    let deadline = Instant::now() + Duration::from_secs(5);
    for id in &ids {
        loop {
            match program_exists(*id) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => panic!("unexpected error looking up program {id}: {e}"),
                Ok(()) => {
                    assert!(
                        Instant::now() < deadline,
                        "program {id} still loaded 5 s after drop"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

fn assert_only(events: &[TraceEvent], name: &str) {
    if let Some(other) = events.iter().find(|e| e.name() != name) {
        panic!("only {name} was loaded but got {other:?}");
    }
}

fn summary(events: &[TraceEvent]) -> String {
    let shown: Vec<String> = events.iter().take(5).map(|e| format!("{e:?}")).collect();
    format!("{} events, first: {}", events.len(), shown.join("; "))
}

#[test]
fn execve_reports_bin_true() {
    setup();
    let mut probes = load(&["execve"]);
    let (events, workload_pid) = run_workload(&mut probes, "exec");
    assert_only(&events, "execve");
    let hit = events.iter().find(|e| {
        matches!(e, TraceEvent::Execve { filename, syscall, uid, .. }
            if filename == "/bin/true" && syscall == "execve" && *uid == 0)
    });
    assert!(
        hit.is_some(),
        "no execve of /bin/true: {}",
        summary(&events)
    );
    // The exec is issued by a child forked from the workload; the test's own spawn of
    // ref-workload is reported too (the tracer only filters the loader process itself).
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TraceEvent::Execve { pid, .. } if *pid == workload_pid)),
        "the workload's own exec was not reported: {}",
        summary(&events)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn openat_reports_etc_hostname() {
    setup();
    let mut probes = load(&["openat"]);
    let (events, workload_pid) = run_workload(&mut probes, "open");
    assert_only(&events, "openat");
    let hit = events.iter().find(|e| {
        matches!(e, TraceEvent::Openat { path, pid, syscall, flags, comm, .. }
            if path.contains("hostname") && *pid == workload_pid && syscall == "openat"
               && (*flags as i32 & libc::O_ACCMODE) == libc::O_RDONLY && comm.starts_with("ref-workload"))
    });
    assert!(
        hit.is_some(),
        "no openat of /etc/hostname by {workload_pid}: {}",
        summary(&events)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn module_load_reports_finit_module() {
    setup();
    let mut probes = load(&["module_load"]);
    let (events, workload_pid) = run_workload(&mut probes, "module");
    assert_only(&events, "module_load");
    let hit = events.iter().find(|e| {
        matches!(e, TraceEvent::ModuleLoad { syscall, pid, .. } if syscall == "finit_module" && *pid == workload_pid)
    });
    assert!(
        hit.is_some(),
        "no finit_module from {workload_pid}: {}",
        summary(&events)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn sched_process_exec_reports_the_exec() {
    setup();
    let mut probes = load(&["sched_process_exec"]);
    let (events, _) = run_workload(&mut probes, "exec");
    assert_only(&events, "sched_process_exec");
    let hit = events.iter().find(|e| {
        matches!(e, TraceEvent::SchedProcessExec { filename, pid, old_pid, ts_ns, .. }
            if (filename == "/bin/true" || filename == WORKLOAD) && *pid > 0 && *old_pid > 0 && *ts_ns > 0)
    });
    assert!(
        hit.is_some(),
        "no sched_process_exec of /bin/true: {}",
        summary(&events)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn net_packet_reports_udp_to_discard_port() {
    setup();
    let mut probes = load(&["net_packet"]);
    let (events, _) = run_workload(&mut probes, "net");
    assert_only(&events, "net_packet");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TraceEvent::NetPacket { length, .. } if *length > 0)),
        "no packet seen: {}",
        summary(&events)
    );
    let to_discard = events.iter().find(|e| {
        matches!(e, TraceEvent::NetPacket { direction, protocol, ip_protocol, dst_port, length, .. }
            if direction == "egress" && protocol == "ipv4" && *ip_protocol == 17
               && *dst_port == Some(9) && *length >= 20 + 8)
    });
    assert!(
        to_discard.is_some(),
        "no egress UDP packet to port 9: {}",
        summary(&events)
    );
    // Port 9 has no listener, so nothing reaches a socket's ingress hook. Ingress is checked
    // with a datagram to a socket of our own (packets are not filtered by process).
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let port = receiver.local_addr().expect("local addr").port();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    sender
        .send_to(b"ingress check", ("127.0.0.1", port))
        .expect("send");
    let mut buf = [0u8; 64];
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    receiver.recv_from(&mut buf).expect("datagram delivered");
    let mut more = Vec::new();
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        more.extend(probes.poll(Duration::from_millis(50)).expect("poll"));
    }
    assert!(
        more.iter().any(
            |e| matches!(e, TraceEvent::NetPacket { direction, dst_port, .. }
            if direction == "ingress" && *dst_port == Some(port))
        ),
        "no ingress packet to port {port}: {}",
        summary(&more)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn all_events_together() {
    setup();
    let mut probes = load(ebpf::EVENT_NAMES);
    // 6 programs: execve, openat, module_load, sched_process_exec, net ingress + egress.
    assert_eq!(probes.program_ids().len(), 6, "{probes:?}");
    let (events, _) = run_workload(&mut probes, "exec,open,module,net");
    for name in ebpf::EVENT_NAMES {
        assert!(
            events.iter().any(|e| e.name() == *name),
            "no {name} event: {}",
            summary(&events)
        );
    }
    for event in events.iter().take(20) {
        let json = serde_json::to_value(event).expect("serializes");
        assert_eq!(json["event"], event.name());
        assert!(json["ts_ns"].as_u64().unwrap_or(0) > 0, "{json}");
    }
    assert_eq!(probes.malformed_records(), 0);
    assert_eq!(probes.lost_events().expect("lost counter"), 0);
    assert_unloaded_on_drop(probes);
}

/// Every compiled variant (ring buffer or perf event array; split or legacy read helpers)
/// passes the verifier and delivers every event with its strings read: this kernel has all
/// the features, so the variants that older kernels need are proved here too.
#[test]
fn every_object_variant_reports_every_event() {
    setup();
    for output in [Output::RingBuf, Output::PerfArray] {
        for read in [MemoryRead::Split, MemoryRead::Legacy] {
            let support = Support { output, read };
            let mut probes = ebpf::load_and_attach_with(&plan(ebpf::EVENT_NAMES), support)
                .unwrap_or_else(|e| panic!("{support}: {e}"));
            assert_eq!(probes.support(), support);
            let (events, pid) = run_workload(&mut probes, "exec,open,module,net");
            for name in ebpf::EVENT_NAMES {
                assert!(
                    events.iter().any(|e| e.name() == *name),
                    "{support}: no {name} event: {}",
                    summary(&events)
                );
            }
            // User memory (execve's path) and kernel memory (the exec tracepoint's filename).
            let read_user = events.iter().any(|e| {
                matches!(e, TraceEvent::Execve { pid: p, filename, .. } if *p == pid && filename.starts_with('/'))
            });
            let read_kernel = events.iter().any(|e| {
                matches!(e, TraceEvent::SchedProcessExec { filename, .. } if filename.starts_with('/'))
            });
            assert!(read_user && read_kernel, "{support}: {}", summary(&events));
            assert_eq!(probes.malformed_records(), 0, "{support}");
            assert_eq!(probes.lost_events().expect("lost counter"), 0, "{support}");
            assert_unloaded_on_drop(probes);
        }
    }
}

#[test]
fn own_process_is_filtered_out() {
    setup();
    let mut probes = load(&["openat"]);
    let me = std::process::id();
    for _ in 0..20 {
        let _ = std::fs::read_to_string("/etc/hostname");
    }
    let mut events = Vec::new();
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        events.extend(probes.poll(Duration::from_millis(50)).expect("poll"));
    }
    assert!(
        !events.iter().any(|e| e.pid() == Some(me)),
        "the loader's own opens were reported: {}",
        summary(&events)
    );
    assert_unloaded_on_drop(probes);
}

#[test]
fn bad_plans_are_refused_with_clear_errors() {
    setup();
    let err = ebpf::load_and_attach(&LoadPlan {
        events: vec!["bogus".into()],
        cgroup_root: None,
        self_tgid: 0,
    })
    .expect_err("unknown event");
    assert!(matches!(err, EbpfError::UnknownEvent { .. }), "{err}");

    let err = ebpf::load_and_attach(&LoadPlan {
        events: vec!["net_packet".into()],
        cgroup_root: None,
        self_tgid: 0,
    })
    .expect_err("no cgroup root");
    assert!(matches!(err, EbpfError::MissingCgroupRoot), "{err}");

    let missing = PathBuf::from("/nonexistent/capring-cgroup");
    let err = ebpf::load_and_attach(&LoadPlan {
        events: vec!["net_packet".into()],
        cgroup_root: Some(missing.clone()),
        self_tgid: 0,
    })
    .expect_err("missing cgroup dir");
    let text = err.to_string();
    assert!(
        text.starts_with("net_packet: ") && text.contains("/nonexistent/capring-cgroup"),
        "{text}"
    );
    assert_eq!(err.errno(), Some(libc::ENOENT), "{text}");
    assert!(!err.is_permission_denied());

    // A regular file is not a cgroup: the attach itself fails and names everything.
    let err = ebpf::load_and_attach(&LoadPlan {
        events: vec!["net_packet".into()],
        cgroup_root: Some(PathBuf::from("/etc/hostname")),
        self_tgid: 0,
    })
    .expect_err("not a cgroup");
    let text = err.to_string();
    assert!(
        text.starts_with("net_packet: attaching cgroup_skb/ingress (program net_ingress) to /etc/hostname failed: "),
        "{text}"
    );
    assert!(err.errno().is_some(), "{text}");
}
