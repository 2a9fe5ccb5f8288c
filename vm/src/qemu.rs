//! Boots one kernel in QEMU, follows the protocol on ttyS1 and the console on
//! ttyS0, enforces the host deadlines and always kills QEMU before returning.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::accel::Accel;
use crate::error::{Error, IoCtx, Result};
use crate::outcome::{classify, console_marker, Deadline, Evidence, Outcome};
use crate::protocol::{Event, ExitStatus, Transcript};

/// Kills QEMU on drop: SIGTERM, then SIGKILL after 2 s.
pub(crate) struct QemuGuard {
    child: Option<Child>,
}

impl QemuGuard {
    /// `Some(status)` once QEMU exited by itself (a signal death gives -signal).
    pub(crate) fn try_wait(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                use std::os::unix::process::ExitStatusExt;
                Some(st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)))
            }
            _ => None,
        }
    }

    /// Stops QEMU (SIGTERM, so it can flush its serial files; SIGKILL if it is still there
    /// 2 s later) and reaps it. Does nothing if it already exited or was killed.
    pub(crate) fn kill(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        // SAFETY: kill(2) takes no pointers; the pid is our own unreaped child (try_wait above
        // did not reap it), so it cannot name another process.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything one QEMU run needs (built by [`crate::session`] from its options and the
/// guest settings).
#[derive(Debug, Clone)]
pub(crate) struct VmConfig {
    /// The `qemu-system-x86_64` binary.
    pub qemu: PathBuf,
    /// The bzImage booted with `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs (agent, suite, settings) booted with `-initrd`.
    pub initrd: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// Guest memory in MiB (`-m`).
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`); under TCG each is one host thread (MTTCG).
    pub cpus: u32,
    /// Kernel command-line words appended after ours (`--append`).
    pub extra_append: Vec<String>,
    /// Per-kernel output directory (emptied first).
    pub out_dir: PathBuf,
    /// The token every protocol line must carry ([`crate::settings::GuestSettings::nonce`]).
    pub nonce: String,
    /// Spawn → HELLO.
    pub boot_timeout: Duration,
    /// HELLO → DONE.
    pub test_timeout: Duration,
    /// Echo protocol lines as they arrive.
    pub verbose: bool,
    /// Name of the run in messages and the report (the kernel series, or `probe`).
    pub label: String,
    /// Exit codes other than 0 that count as success, per command name
    /// ([`crate::settings::GuestCommand::ok_codes`]).
    pub ok_codes: std::collections::BTreeMap<String, Vec<i32>>,
}

/// What one VM run produced; written to `<out_dir>/vm-result.json` (without the
/// transcript) and summarised per kernel by `cargo xtask vm-test`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Name of the run (the kernel series, or `probe`).
    pub label: String,
    /// The verdict ([`classify`]).
    pub outcome: Outcome,
    /// One line saying why (e.g. `DONE ok, isa-debug-exit ok`, `failed: check (code=2)`).
    pub reason: String,
    /// The accelerator the run used.
    pub accel: Accel,
    /// `uname -r` of the guest, from HELLO (`None` if the agent never said it).
    pub release: Option<String>,
    /// The guest's current clocksource, from HELLO (TCG timing depends on it).
    pub clocksource: Option<String>,
    /// Spawn → HELLO.
    pub boot_secs: Option<f64>,
    /// HELLO → DONE.
    pub run_secs: Option<f64>,
    /// Spawn → QEMU gone, in seconds.
    pub total_secs: f64,
    /// What the outcome was decided from.
    pub evidence: Evidence,
    /// `(command name, exit status)` in the order the guest ran them; the status as in EXIT
    /// lines (`code=0`, `signal=9`, `timeout`) or `no EXIT`.
    pub commands: Vec<(String, String)>,
    /// Files the guest sent, relative to the run's output directory (`results/…`).
    pub files: Vec<String>,
    /// TAP summary over all command stdout: (ok, not ok).
    pub tap: Option<(usize, usize)>,
    /// The agent's INFO lines (facts about the guest worth showing, in order).
    pub infos: Vec<String>,
    /// The last 40 lines of the guest console (ttyS0), for a failure message.
    pub console_tail: Vec<String>,
    /// Everything parsed from the protocol port, with command output and files.
    #[serde(skip)]
    pub transcript: Transcript,
}

impl VmConfig {
    /// QEMU's command line: a q35 machine without default devices, the kernel and initramfs,
    /// the console on the first serial port and the protocol on the second (both into files
    /// of `out_dir`), and isa-debug-exit for the guest's verdict. Paths must not contain `,`
    /// (QEMU's option separator).
    pub(crate) fn args(&self) -> Result<Vec<String>> {
        let console = self.out_dir.join("console.log");
        let proto = self.out_dir.join("protocol.log");
        for p in [&console, &proto, &self.kernel, &self.initrd] {
            if p.to_string_lossy().contains(',') {
                return Err(Error::Other(format!(
                    "{}: QEMU paths must not contain ','",
                    p.display()
                )));
            }
        }
        let mut append = vec![
            "console=ttyS0".to_string(),
            "panic=-1".into(),
            "rdinit=/init".into(),
            // Speculative-execution mitigations (retpolines, buffer clears on every return to
            // user space) are emulated instruction by instruction under TCG and slow every
            // syscall and context switch the observer causes; they have no bearing on
            // capabilities. `--append mitigations=auto` restores the default.
            "mitigations=off".into(),
        ];
        append.extend(self.extra_append.iter().cloned());
        let accel = match self.accel {
            Accel::Kvm => "kvm".to_string(),
            Accel::Tcg => "tcg,tb-size=256".to_string(),
        };
        Ok([
            "-nodefaults",
            "-no-user-config",
            "-machine",
            "q35",
            "-cpu",
            "max",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-m".into(),
            format!("{}M", self.memory_mb),
            "-smp".into(),
            self.cpus.max(1).to_string(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-accel".into(),
            accel,
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            append.join(" "),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-serial".into(),
            format!("file:{}", proto.display()),
            "-device".into(),
            "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
        ])
        .collect())
    }
}

/// Follows a file that another process appends to, yielding whole lines.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Tail {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    fn poll(&mut self, flush: bool) -> Vec<String> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut lines = Vec::new();
        if let Some(f) = self.file.as_mut() {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            self.partial.extend_from_slice(&buf);
        }
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = self.partial.drain(..=i).collect();
            lines.push(
                String::from_utf8_lossy(&l)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            );
        }
        if flush && !self.partial.is_empty() {
            let l = std::mem::take(&mut self.partial);
            lines.push(
                String::from_utf8_lossy(&l)
                    .trim_end_matches('\r')
                    .to_string(),
            );
        }
        lines
    }
}

/// What `run` learns from the two serial logs while QEMU runs.
struct Watch {
    console: Tail,
    proto: Tail,
    transcript: Transcript,
    ev: Evidence,
    soft_lockups: u32,
    hello_at: Option<Instant>,
    done_at: Option<Instant>,
    panic_at: Option<Instant>,
    /// The last console lines, for the report.
    tail: VecDeque<String>,
}

impl Watch {
    const TAIL_LINES: usize = 40;

    /// Nothing seen yet; follows the two logs of `cfg.out_dir`.
    fn new(cfg: &VmConfig) -> Self {
        Watch {
            console: Tail::new(cfg.out_dir.join("console.log")),
            proto: Tail::new(cfg.out_dir.join("protocol.log")),
            transcript: Transcript::new(&cfg.nonce),
            ev: Evidence::default(),
            soft_lockups: 0,
            hello_at: None,
            done_at: None,
            panic_at: None,
            tail: VecDeque::new(),
        }
    }

    /// Polls both logs every 20 ms until QEMU exits by itself (its status goes into the
    /// evidence) or a deadline fires (then QEMU is killed and the logs read to the end).
    /// Calls `on_hello` when HELLO arrives; returns whether it did.
    fn follow(
        &mut self,
        cfg: &VmConfig,
        guard: &mut QemuGuard,
        started: Instant,
        on_hello: &mut dyn FnMut(),
    ) -> bool {
        let mut hello_called = false;
        loop {
            let status = guard.try_wait();
            self.poll(cfg, status.is_some());
            if self.hello_at.is_some() && !hello_called {
                hello_called = true;
                on_hello();
            }
            if let Some(st) = status {
                self.ev.qemu_status = Some(st);
                return hello_called;
            }
            self.ev.deadline = self.deadline(cfg, started, Instant::now());
            if self.ev.deadline.is_some() {
                guard.kill();
                self.poll(cfg, true);
                return hello_called;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The deadline that has passed at `now`, if any: no HELLO within `boot_timeout` of the
    /// start, no DONE within `test_timeout` of HELLO, QEMU still up 5 s after DONE, or a
    /// console panic marker 3 s old (the kernel will not power off by itself).
    fn deadline(&self, cfg: &VmConfig, started: Instant, now: Instant) -> Option<Deadline> {
        let by_phase = match (self.hello_at, self.done_at) {
            (None, _) if now - started > cfg.boot_timeout => Some(Deadline::Boot),
            (Some(h), None) if now - h > cfg.test_timeout => Some(Deadline::Test),
            (_, Some(d)) if now - d > Duration::from_secs(5) => Some(Deadline::Exit),
            _ => None,
        };
        let panicked = self
            .panic_at
            .is_some_and(|p| now - p > Duration::from_secs(3));
        by_phase.or(panicked.then_some(Deadline::Test))
    }

    /// Reads the new lines of both logs (all of them when `flush`, e.g. once QEMU is gone).
    fn poll(&mut self, cfg: &VmConfig, flush: bool) {
        for l in self.console.poll(flush) {
            if self.ev.console_panic.is_none() && console_marker(&l, &mut self.soft_lockups) {
                self.ev.console_panic = Some(l.trim().to_string());
                self.panic_at = Some(Instant::now());
            }
            if self.tail.len() == Self::TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(l);
        }
        for l in self.proto.poll(flush) {
            match self.transcript.feed(&l) {
                Ok(Some(e)) => {
                    if cfg.verbose {
                        eprintln!(
                            "  [{}] {}",
                            cfg.label,
                            l.split_once(' ').map(|x| x.1).unwrap_or(&l)
                        );
                    }
                    match e {
                        Event::Hello { .. } if self.hello_at.is_none() => {
                            self.hello_at = Some(Instant::now())
                        }
                        Event::Done { .. } => self.done_at = Some(Instant::now()),
                        _ => {}
                    }
                }
                Ok(None) => {}
                Err(e) => self.ev.protocol_errors.push(e.to_string()),
            }
        }
    }
}

/// Boots the VM and returns its report; QEMU never outlives this call.
/// `on_hello` is called once, when the agent says HELLO (or the run ends).
pub(crate) fn run(cfg: &VmConfig, on_hello: &mut dyn FnMut()) -> Result<RunReport> {
    let qlog_path = prepare_out_dir(&cfg.out_dir)?;
    let started = Instant::now();
    let mut guard = spawn(cfg, &qlog_path)?;
    let mut watch = Watch::new(cfg);
    let hello_called = watch.follow(cfg, &mut guard, started, on_hello);
    guard.kill();
    if !hello_called {
        on_hello();
    }
    if let Some(e) = qemu_failure(cfg, &watch, &qlog_path) {
        return Err(e);
    }
    let total = started.elapsed();
    let Watch {
        transcript,
        mut ev,
        tail,
        hello_at,
        done_at,
        ..
    } = watch;
    ev.hello = transcript.hello.is_some();
    ev.done = transcript.done;
    ev.failed_commands = failed_commands(cfg, &transcript);
    let (outcome, reason) = classify(&ev);
    let files = save_files(&cfg.out_dir, &transcript)?;
    let report = RunReport {
        label: cfg.label.clone(),
        outcome,
        reason,
        accel: cfg.accel,
        release: transcript.hello.as_ref().map(|h| h.0.clone()),
        clocksource: transcript.hello.as_ref().map(|h| h.1.clone()),
        boot_secs: hello_at.map(|h| (h - started).as_secs_f64()),
        run_secs: match (hello_at, done_at) {
            (Some(h), Some(d)) => Some((d - h).as_secs_f64()),
            _ => None,
        },
        total_secs: total.as_secs_f64(),
        evidence: ev,
        commands: transcript
            .commands
            .iter()
            .map(|c| (c.name.clone(), exit_text(c.exit)))
            .collect(),
        files,
        tap: tap_summary(&transcript),
        infos: transcript.infos.clone(),
        console_tail: tail.into(),
        transcript,
    };
    write_report(&cfg.out_dir, &report)?;
    Ok(report)
}

/// Empties `out_dir` and creates the two serial logs QEMU appends to; returns the path of
/// `qemu.log` (QEMU's own stdout and stderr).
fn prepare_out_dir(out_dir: &Path) -> Result<PathBuf> {
    if out_dir.exists() {
        fs::remove_dir_all(out_dir).ctx(out_dir)?;
    }
    fs::create_dir_all(out_dir).ctx(out_dir)?;
    for f in ["console.log", "protocol.log"] {
        let p = out_dir.join(f);
        File::create(&p).ctx(&p)?;
    }
    Ok(out_dir.join("qemu.log"))
}

/// Starts QEMU with [`VmConfig::args`], its output in `qlog_path`, set to die with the
/// thread that started it.
fn spawn(cfg: &VmConfig, qlog_path: &Path) -> Result<QemuGuard> {
    let qlog = File::create(qlog_path).ctx(qlog_path)?;
    let qlog2 = qlog.try_clone().ctx(qlog_path)?;
    let args = cfg.args()?;
    let mut cmd = Command::new(&cfg.qemu);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(qlog)
        .stderr(qlog2);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe; it touches no memory of the parent (no allocation, no
    // locks).
    unsafe {
        cmd.pre_exec(|| {
            // QEMU dies with the thread that started it, whatever happens to us.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| Error::Command {
        cmd: cfg.qemu.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(QemuGuard { child: Some(child) })
}

/// QEMU itself failed (bad option, accelerator unavailable…), which is not a guest outcome:
/// no HELLO, a non-zero exit status that is not an isa-debug-exit code, and an empty
/// console. The error carries the first line of `qemu.log`.
fn qemu_failure(cfg: &VmConfig, watch: &Watch, qlog_path: &Path) -> Option<Error> {
    let st = watch.ev.qemu_status?;
    if watch.transcript.hello.is_some() {
        return None;
    }
    let console_empty = fs::metadata(cfg.out_dir.join("console.log"))
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    if st == 0
        || crate::protocol::decode_qemu_status(st) != crate::protocol::DebugExit::None
        || !console_empty
    {
        return None;
    }
    let log = fs::read_to_string(qlog_path).unwrap_or_default();
    let first = log
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string();
    Some(Error::Command {
        cmd: format!(
            "{} (exit status {st}, log {})",
            cfg.qemu.display(),
            qlog_path.display()
        ),
        detail: first,
    })
}

/// `name (status)` of every command that exited with a status it does not accept (0 or one
/// of its `ok_codes`), or that never said EXIT although the agent said DONE.
fn failed_commands(cfg: &VmConfig, transcript: &Transcript) -> Vec<String> {
    let accepted = |name: &str, s: ExitStatus| {
        s.success()
            || matches!(s, ExitStatus::Code(code)
                if cfg.ok_codes.get(name).is_some_and(|ok| ok.contains(&code)))
    };
    transcript
        .commands
        .iter()
        .filter(|c| {
            c.exit.is_some_and(|s| !accepted(&c.name, s))
                || c.exit.is_none() && transcript.done.is_some()
        })
        .map(|c| format!("{} ({})", c.name, exit_text(c.exit)))
        .collect()
}

/// An EXIT status as the report shows it (`no EXIT` when the command never ended).
fn exit_text(exit: Option<ExitStatus>) -> String {
    exit.map(|s| s.to_string())
        .unwrap_or_else(|| "no EXIT".into())
}

/// Writes the files the guest sent to `<out_dir>/results/`; returns their paths relative to
/// `out_dir`.
fn save_files(out_dir: &Path, transcript: &Transcript) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for (rel, data) in &transcript.files {
        let p = out_dir.join("results").join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).ctx(d)?;
        }
        fs::write(&p, data).ctx(&p)?;
        files.push(format!("results/{rel}"));
    }
    Ok(files)
}

/// `(ok, not ok)` counts of TAP result lines over the stdout of all commands; `None` when the
/// commands printed no TAP at all.
fn tap_summary(transcript: &Transcript) -> Option<(usize, usize)> {
    let mut ok = 0;
    let mut not_ok = 0;
    for l in transcript.commands.iter().flat_map(|c| &c.stdout) {
        if l.starts_with("ok ") || l == "ok" {
            ok += 1;
        } else if l.starts_with("not ok") {
            not_ok += 1;
        }
    }
    (ok + not_ok > 0).then_some((ok, not_ok))
}

/// Writes `<out_dir>/vm-result.json`.
fn write_report(out_dir: &Path, report: &RunReport) -> Result<()> {
    let p = out_dir.join("vm-result.json");
    let mut f = File::create(&p).ctx(&p)?;
    let body = serde_json::to_string_pretty(report).map_err(|e| Error::Other(e.to_string()))?;
    f.write_all(body.as_bytes()).ctx(&p)
}

/// Children of this process whose command name starts with `qemu-system`.
pub fn qemu_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = stat[..close].split_once('(').map(|x| x.1).unwrap_or("");
        let ppid = stat[close + 1..].split_whitespace().nth(1).unwrap_or("");
        if ppid == me && comm.starts_with("qemu-system") {
            out.push(pid);
        }
    }
    out
}

/// The QEMU to use: `$CAPRING_VM_QEMU` if set, else the first executable
/// `qemu-system-x86_64` on `PATH`; `None` when there is neither.
pub fn find_qemu() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAPRING_VM_QEMU") {
        return Some(PathBuf::from(p));
    }
    which::which("qemu-system-x86_64").ok()
}
