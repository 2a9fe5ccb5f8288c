//! `vm-agent`: PID 1 of the capring test VM (static musl binary at `/init`).
//!
//! It mounts the pseudo file systems, reads `/etc/capring-vm.json`, speaks the
//! framed line protocol of `capring_vm::protocol` on `/dev/ttyS1`, runs the
//! requested commands with a per-command timeout, sends back the files of the
//! results directory, and finally leaves the VM through `isa-debug-exit`
//! (falling back to `reboot(RB_POWER_OFF)`).
//!
//! Run outside a VM it only offers `vm-agent --selftest`, a tiny built-in test
//! command that is also what the VM drills run inside the guest.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capring_vm::protocol::{
    debug_exit_fail, deflate, Event, ExitStatus, DEBUG_EXIT_OK, FILE_CHUNK,
};
use capring_vm::settings::{Drill, GuestCommand, GuestSettings, SETTINGS_PATH};

/// The protocol channel: a serial port (or the console as a fallback).
#[derive(Clone)]
struct Channel {
    out: Arc<Mutex<File>>,
    nonce: String,
}

impl Channel {
    /// Writes one framed line (the nonce, then the event); a write error is ignored, as
    /// nothing else could report it.
    fn emit(&self, ev: &Event) {
        let mut line = ev.to_line(&self.nonce);
        line.push('\n');
        if let Ok(mut f) = self.out.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Waits until the serial port has sent everything written so far (before leaving the
    /// VM, which would cut the last lines off).
    fn drain(&self) {
        if let Ok(f) = self.out.lock() {
            // SAFETY: tcdrain(3) only takes a file descriptor, which `f` keeps open for the
            // duration of the call.
            unsafe {
                libc::tcdrain(f.as_raw_fd());
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--selftest") {
        std::process::exit(selftest(&args[2..]));
    }
    if std::process::id() != 1 {
        eprintln!(
            "vm-agent: refusing to run: this is the test VM's /init and must be PID 1 (use `vm-agent --selftest` for the built-in check)"
        );
        std::process::exit(2);
    }
    run_init();
}

/// Built-in test command: `--selftest [--exit N] [--sleep SECS] [--spam N]`.
fn selftest(args: &[String]) -> i32 {
    let mut exit = 0;
    let mut sleep = 0u64;
    let mut spam = 0usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), v) {
            ("--exit", Some(v)) => exit = v as i32,
            ("--sleep", Some(v)) => sleep = v,
            ("--spam", Some(v)) => spam = v as usize,
            _ => {
                eprintln!("vm-agent --selftest: bad argument {a:?} (expected --exit N, --sleep SECS, --spam N)");
                return 2;
            }
        }
    }
    let release = uname_release();
    let clock = clocksource();
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let fstypes: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    println!(
        "selftest: kernel {release}, clocksource {clock}, pid {}",
        std::process::id()
    );
    println!("selftest: mounted types: {}", fstypes.join(","));
    let lo = fs::read_to_string("/sys/class/net/lo/operstate").unwrap_or_default();
    let lo_flags = fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
    println!(
        "selftest: lo operstate {} flags {}",
        lo.trim(),
        lo_flags.trim()
    );
    for i in 0..spam {
        println!("selftest: line {i}");
    }
    eprintln!("selftest: this line goes to stderr");
    if sleep > 0 {
        std::thread::sleep(Duration::from_secs(sleep));
    }
    let dir = std::env::var("CAPRING_RESULTS").unwrap_or_else(|_| "/results".into());
    let report = serde_json::json!({
        "release": release,
        "clocksource": clock,
        "fstypes": fstypes,
        "lo_flags": lo_flags.trim(),
        "exit": exit,
    });
    let _ = fs::create_dir_all(&dir);
    if let Err(e) = fs::write(Path::new(&dir).join("selftest.json"), report.to_string()) {
        eprintln!("selftest: cannot write results: {e}");
        return 1;
    }
    exit
}

/// `uname -r` of the running kernel.
fn uname_release() -> String {
    // SAFETY: utsname is plain old data (arrays of c_char), so all-zero is a valid value;
    // uname(2) fills it, and on success `release` is a NUL-terminated string inside `u`, which
    // outlives the CStr borrowed from it.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// The kernel's current clocksource (`tsc`, `hpet`, …; TCG timing depends on it).
fn clocksource() -> String {
    fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Mounts `fstype` on `target` (created first), as mount(8) would.
fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> Result<(), String> {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("static string without NUL");
    let (s, t, f) = (c(src), c(target), c(fstype));
    // SAFETY: the three pointers are NUL-terminated strings owned by `s`, `t` and `f`, alive
    // across the call; the data argument may be NULL.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, std::ptr::null()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Mounts the pseudo file systems the suite needs (proc, sys, dev, tmp, tracefs, debugfs,
/// bpffs, cgroup2); returns one message per mount that failed (an older kernel may lack one).
fn mount_all() -> Vec<String> {
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let table: &[(&str, &str, &str, libc::c_ulong)] = &[
        ("proc", "/proc", "proc", nosuid),
        ("sysfs", "/sys", "sysfs", nosuid),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID),
        ("tmpfs", "/tmp", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV),
        ("tracefs", "/sys/kernel/tracing", "tracefs", nosuid),
        ("debugfs", "/sys/kernel/debug", "debugfs", nosuid),
        ("bpffs", "/sys/fs/bpf", "bpf", nosuid),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid),
    ];
    table
        .iter()
        .filter_map(|(s, t, f, fl)| mount(s, t, f, *fl).err())
        .collect()
}

/// Brings the loopback interface up (the kernel leaves it down without an init system).
fn loopback_up() -> Result<(), String> {
    // SAFETY: socket(2) and close(2) take no pointers; ifreq is plain old data, so all-zero is
    // valid, and "lo" (2 bytes) fits in ifr_name (IFNAMSIZ = 16) with its NUL; both ioctls get
    // a pointer to `ifr`, which lives across them and is the type SIOC[GS]IFFLAGS expect.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!(
                "loopback: socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(format!("loopback: bringing lo up: {err}"));
        }
    }
    Ok(())
}

/// Opens the protocol port `/dev/ttyS1` in raw mode, or `/dev/console` with a warning to
/// report; with neither there is no way to speak to the host, so the VM is left at once.
fn open_channel() -> (File, Option<String>) {
    let open = |p: &str| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(p)
    };
    match open("/dev/ttyS1") {
        Ok(f) => {
            // SAFETY: termios is plain old data (all-zero is valid); every call gets `f`'s open
            // descriptor and a pointer to `t`, which lives across them.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
                    libc::cfmakeraw(&mut t);
                    libc::cfsetospeed(&mut t, libc::B115200);
                    libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
                }
            }
            (f, None)
        }
        Err(e) => {
            let why = format!("cannot open /dev/ttyS1 ({e}); protocol falls back to /dev/console");
            match open("/dev/console") {
                Ok(f) => (f, Some(why)),
                Err(_) => {
                    console_line(&why);
                    leave_vm(debug_exit_fail(15));
                }
            }
        }
    }
}

/// Best-effort line to the kernel console (ttyS0).
fn console_line(msg: &str) {
    if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(f, "vm-agent: {msg}");
    } else {
        eprintln!("vm-agent: {msg}");
    }
}

/// PID 1's life: mount, read the settings, say HELLO, run the drill or the commands, say
/// DONE and leave the VM with the verdict.
fn run_init() -> ! {
    let mount_errors = mount_all();
    let settings = match load_settings() {
        Ok(s) => s,
        Err(e) => {
            console_line(&e);
            leave_vm(debug_exit_fail(15));
        }
    };
    let (file, channel_warning) = open_channel();
    let ch = Channel {
        out: Arc::new(Mutex::new(file)),
        nonce: settings.nonce.clone(),
    };
    ch.emit(&Event::Hello {
        release: uname_release(),
        clocksource: clocksource(),
    });
    console_line("HELLO sent");
    for w in channel_warning.into_iter().chain(mount_errors) {
        ch.emit(&Event::Info(w));
    }
    if let Err(e) = loopback_up() {
        ch.emit(&Event::Info(e));
    }
    // RLIMIT_MEMLOCK stays as the kernel boots it (64 KiB on 5.10): whether a tracer must
    // raise it, and so needs cap_sys_resource, is part of what the suite proves per kernel.

    match settings.drill {
        Some(Drill::Panic) => drill_panic(&ch),
        Some(Drill::Hang) => drill_hang(&ch),
        None => {}
    }
    let first_failure = run_commands(&ch, &settings);
    ch.emit(&Event::Done {
        ok: first_failure.is_none(),
    });
    ch.drain();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
    leave_vm(match first_failure {
        None => DEBUG_EXIT_OK,
        Some(c) => debug_exit_fail(c),
    });
}

/// Reads and parses [`SETTINGS_PATH`]; the error is one line for the console.
fn load_settings() -> Result<GuestSettings, String> {
    let text = fs::read_to_string(SETTINGS_PATH)
        .map_err(|e| format!("cannot read {SETTINGS_PATH}: {e}"))?;
    serde_json::from_str::<GuestSettings>(&text).map_err(|e| format!("bad {SETTINGS_PATH}: {e}"))
}

/// Runs every command in order between START and EXIT lines, sending the new result files
/// after each. Returns the isa-debug-exit failure code of the first command whose status it
/// does not accept: its exit code, 15 for a signal, 14 for a timeout (`None`: all passed).
fn run_commands(ch: &Channel, settings: &GuestSettings) -> Option<i32> {
    let _ = fs::create_dir_all(&settings.results_dir);
    let mut sent = BTreeMap::new();
    let mut first_failure: Option<i32> = None;
    for cmd in &settings.commands {
        ch.emit(&Event::Start {
            name: cmd.name.clone(),
        });
        let status = run_command(ch, cmd, settings);
        send_files(ch, Path::new(&settings.results_dir), &mut sent);
        ch.emit(&Event::Exit {
            name: cmd.name.clone(),
            status,
        });
        if !cmd.accepts(status) && first_failure.is_none() {
            first_failure = Some(match status {
                ExitStatus::Code(c) => c,
                ExitStatus::Signal(_) => 15,
                ExitStatus::Timeout => 14,
            });
        }
    }
    first_failure
}

/// The hang drill: says so, then sleeps forever without DONE (the host's test deadline must
/// fire).
fn drill_hang(ch: &Channel) -> ! {
    ch.emit(&Event::Info("drill: hang (never saying DONE)".into()));
    ch.drain();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The panic drill: crashes the kernel through sysrq (the host must see KERNEL_PANIC).
fn drill_panic(ch: &Channel) -> ! {
    ch.emit(&Event::Info("drill: panic (sysrq c)".into()));
    ch.drain();
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
    let _ = fs::write("/proc/sys/kernel/sysrq", "1");
    let _ = fs::write("/proc/sysrq-trigger", "c");
    // Still alive (no sysrq support): PID 1 exiting panics the kernel too.
    std::process::exit(1);
}

/// Writes to the isa-debug-exit port; falls back to power-off. Never returns.
fn leave_vm(value: u8) -> ! {
    // SAFETY: sync, ioperm and reboot take no pointers. The `out` instruction runs only after
    // ioperm granted this process ports 0xf4..0xf8, where QEMU's isa-debug-exit device sits
    // (`-device isa-debug-exit,iobase=0xf4`); it touches no memory, stack or flags.
    unsafe {
        libc::sync();
        if libc::syscall(
            libc::SYS_ioperm,
            0xf4 as libc::c_ulong,
            4 as libc::c_ulong,
            1 as libc::c_int,
        ) == 0
        {
            #[cfg(target_arch = "x86_64")]
            core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") value,
                options(nomem, nostack, preserves_flags));
        }
        libc::reboot(libc::RB_POWER_OFF);
    }
    // PID 1 must not exit (that would panic the kernel): wait to be killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Forwards the lines of a command's stdout (or stderr when `err`) as OUT (ERR) events from a
/// thread of its own, until end of file; then signals `done`. Once `muted` is set (the
/// command's EXIT was sent), further lines are dropped.
fn forward<R: Read + Send + 'static>(
    r: R,
    ch: Channel,
    err: bool,
    done: mpsc::Sender<()>,
    muted: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    if muted.load(Ordering::SeqCst) {
                        // A process that escaped the group still writes after EXIT: drop it.
                        continue;
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    ch.emit(&if err {
                        Event::Err(line)
                    } else {
                        Event::Out(line)
                    });
                }
            }
        }
        let _ = done.send(());
    })
}

/// Runs one command in a process group of its own, its output forwarded line by line, and
/// returns how it ended; after `timeout_secs` the whole group is killed.
fn run_command(ch: &Channel, cmd: &GuestCommand, s: &GuestSettings) -> ExitStatus {
    let mut child = match spawn_command(cmd, s) {
        Ok(c) => c,
        Err(msg) => {
            ch.emit(&Event::Err(msg));
            return ExitStatus::Code(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let muted = Arc::new(AtomicBool::new(false));
    let mut readers = 0;
    if let Some(o) = child.stdout.take() {
        forward(o, ch.clone(), false, tx.clone(), muted.clone());
        readers += 1;
    }
    if let Some(e) = child.stderr.take() {
        forward(e, ch.clone(), true, tx.clone(), muted.clone());
        readers += 1;
    }
    drop(tx);
    let status = wait_with_timeout(ch, cmd, pid);
    // SAFETY: kill(2) takes no pointers; `-pid` names the command's own process group.
    // Leftover members of the group would keep the pipes open.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let until = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        let left = until.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
    muted.store(true, Ordering::SeqCst);
    status
}

/// Starts `cmd` with piped output, a fixed environment (`PATH`, `HOME`, `RUST_BACKTRACE`,
/// `CAPRING_RESULTS`) plus the settings' `env`, in a new process group. The error is the
/// line to send as ERR.
fn spawn_command(cmd: &GuestCommand, s: &GuestSettings) -> Result<std::process::Child, String> {
    let Some(prog) = cmd.argv.first() else {
        return Err(format!("command {} has an empty argv", cmd.name));
    };
    let mut c = Command::new(prog);
    c.args(&cmd.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PATH", "/bin:/sbin:/usr/bin")
        .env("HOME", "/tmp")
        .env("RUST_BACKTRACE", "1")
        .env("CAPRING_RESULTS", &s.results_dir)
        .current_dir("/")
        .process_group(0);
    for (k, v) in &s.env {
        c.env(k, v);
    }
    c.spawn().map_err(|e| format!("cannot start {prog}: {e}"))
}

/// Waits for `pid`, reaping the orphans PID 1 inherits meanwhile; after the command's
/// timeout kills its process group and says so on ERR.
fn wait_with_timeout(ch: &Channel, cmd: &GuestCommand, pid: libc::pid_t) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(cmd.timeout_secs.max(1));
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid(2) writes the status into `st`, a live local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFSIGNALED(st) {
                ExitStatus::Signal(libc::WTERMSIG(st))
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(st))
            };
        }
        if r > 0 {
            continue; // reaped an orphan re-parented to PID 1
        }
        if r < 0 {
            return ExitStatus::Code(255);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) takes no pointers (`-pid` is the command's process group);
            // waitpid(2) writes into the live local `st`.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut st, 0);
            }
            ch.emit(&Event::Err(format!(
                "vm-agent: {} killed after its {} s timeout",
                cmd.name, cmd.timeout_secs
            )));
            return ExitStatus::Timeout;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends every regular file under `dir` to `out`, depth first in name order (symlinks
/// are not followed).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Sends every file of `dir` that is new or changed since the last call.
fn send_files(ch: &Channel, dir: &Path, sent: &mut BTreeMap<PathBuf, (u64, i64, i64)>) {
    let mut files = Vec::new();
    walk(dir, &mut files);
    for p in files {
        let Ok(m) = fs::metadata(&p) else { continue };
        let key = (m.len(), m.mtime(), m.mtime_nsec());
        if sent.get(&p) == Some(&key) {
            continue;
        }
        let Ok(rel) = p.strip_prefix(dir) else {
            continue;
        };
        let rel = rel.to_string_lossy().into_owned();
        if rel.contains(char::is_whitespace) {
            ch.emit(&Event::Info(format!(
                "not sending {rel:?}: name contains whitespace"
            )));
            continue;
        }
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) => {
                ch.emit(&Event::Info(format!("cannot read result file {rel}: {e}")));
                continue;
            }
        };
        let packed = deflate(&data);
        for chunk in packed.chunks(FILE_CHUNK) {
            ch.emit(&Event::File {
                path: rel.clone(),
                chunk: chunk.to_vec(),
            });
        }
        ch.emit(&Event::FileEnd {
            path: rel,
            size: packed.len() as u64,
            deflated: true,
        });
        sent.insert(p, key);
    }
}
