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
pub struct QemuGuard {
    child: Option<Child>,
}

impl QemuGuard {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status)` once QEMU exited by itself (a signal death gives -signal).
    pub fn try_wait(&mut self) -> Option<i32> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                use std::os::unix::process::ExitStatusExt;
                Some(st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)))
            }
            _ => None,
        }
    }

    pub fn kill(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
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

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`); under TCG each is one host thread (MTTCG).
    pub cpus: u32,
    pub extra_append: Vec<String>,
    /// Per-kernel output directory (emptied first).
    pub out_dir: PathBuf,
    pub nonce: String,
    /// Spawn → HELLO.
    pub boot_timeout: Duration,
    /// HELLO → DONE.
    pub test_timeout: Duration,
    /// Echo protocol lines as they arrive.
    pub verbose: bool,
    pub label: String,
    /// Exit codes other than 0 that count as success, per command name
    /// ([`crate::settings::GuestCommand::ok_codes`]).
    pub ok_codes: std::collections::BTreeMap<String, Vec<i32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub label: String,
    pub outcome: Outcome,
    pub reason: String,
    pub accel: Accel,
    pub release: Option<String>,
    pub clocksource: Option<String>,
    /// Spawn → HELLO.
    pub boot_secs: Option<f64>,
    /// HELLO → DONE.
    pub run_secs: Option<f64>,
    pub total_secs: f64,
    pub evidence: Evidence,
    pub commands: Vec<(String, String)>,
    pub files: Vec<String>,
    /// TAP summary over all command stdout: (ok, not ok).
    pub tap: Option<(usize, usize)>,
    pub infos: Vec<String>,
    pub console_tail: Vec<String>,
    #[serde(skip)]
    pub transcript: Transcript,
}

impl VmConfig {
    pub fn args(&self) -> Result<Vec<String>> {
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
pub fn run(cfg: &VmConfig, on_hello: &mut dyn FnMut()) -> Result<RunReport> {
    if cfg.out_dir.exists() {
        fs::remove_dir_all(&cfg.out_dir).ctx(&cfg.out_dir)?;
    }
    fs::create_dir_all(&cfg.out_dir).ctx(&cfg.out_dir)?;
    for f in ["console.log", "protocol.log"] {
        let p = cfg.out_dir.join(f);
        File::create(&p).ctx(&p)?;
    }
    let qlog_path = cfg.out_dir.join("qemu.log");
    let qlog = File::create(&qlog_path).ctx(&qlog_path)?;
    let qlog2 = qlog.try_clone().ctx(&qlog_path)?;
    let args = cfg.args()?;
    let mut cmd = Command::new(&cfg.qemu);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(qlog)
        .stderr(qlog2);
    unsafe {
        cmd.pre_exec(|| {
            // QEMU dies with the thread that started it, whatever happens to us.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| Error::Command {
        cmd: cfg.qemu.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut guard = QemuGuard { child: Some(child) };
    let mut watch = Watch {
        console: Tail::new(cfg.out_dir.join("console.log")),
        proto: Tail::new(cfg.out_dir.join("protocol.log")),
        transcript: Transcript::new(&cfg.nonce),
        ev: Evidence::default(),
        soft_lockups: 0,
        hello_at: None,
        done_at: None,
        panic_at: None,
        tail: VecDeque::new(),
    };
    let mut hello_called = false;
    loop {
        let status = guard.try_wait();
        watch.poll(cfg, status.is_some());
        if watch.hello_at.is_some() && !hello_called {
            hello_called = true;
            on_hello();
        }
        if let Some(st) = status {
            watch.ev.qemu_status = Some(st);
            break;
        }
        let now = Instant::now();
        let ev = &mut watch.ev;
        match (watch.hello_at, watch.done_at) {
            (None, _) if now - started > cfg.boot_timeout => ev.deadline = Some(Deadline::Boot),
            (Some(h), None) if now - h > cfg.test_timeout => ev.deadline = Some(Deadline::Test),
            (_, Some(d)) if now - d > Duration::from_secs(5) => ev.deadline = Some(Deadline::Exit),
            _ => {}
        }
        if watch
            .panic_at
            .is_some_and(|p| now - p > Duration::from_secs(3))
            && ev.deadline.is_none()
        {
            ev.deadline = Some(Deadline::Test);
        }
        if ev.deadline.is_some() {
            guard.kill();
            watch.poll(cfg, true);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Watch {
        transcript,
        mut ev,
        tail,
        hello_at,
        done_at,
        ..
    } = watch;
    guard.kill();
    if !hello_called {
        on_hello();
    }
    // QEMU itself failed (bad option, accelerator unavailable…): not a guest outcome.
    if let (false, Some(st)) = (transcript.hello.is_some(), ev.qemu_status) {
        let console_empty = fs::metadata(cfg.out_dir.join("console.log"))
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        if st != 0
            && crate::protocol::decode_qemu_status(st) == crate::protocol::DebugExit::None
            && console_empty
        {
            let log = fs::read_to_string(&qlog_path).unwrap_or_default();
            let first = log
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_string();
            return Err(Error::Command {
                cmd: format!(
                    "{} (exit status {st}, log {})",
                    cfg.qemu.display(),
                    qlog_path.display()
                ),
                detail: first,
            });
        }
    }
    let total = started.elapsed();
    ev.hello = transcript.hello.is_some();
    ev.done = transcript.done;
    ev.failed_commands = transcript
        .commands
        .iter()
        .filter(|c| {
            let accepted = |s: ExitStatus| {
                s.success()
                    || matches!(s, ExitStatus::Code(code)
                        if cfg.ok_codes.get(&c.name).is_some_and(|ok| ok.contains(&code)))
            };
            c.exit.is_some_and(|s| !accepted(s)) || c.exit.is_none() && transcript.done.is_some()
        })
        .map(|c| {
            format!(
                "{} ({})",
                c.name,
                c.exit
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no EXIT".into())
            )
        })
        .collect();
    let (outcome, reason) = classify(&ev);

    // Files sent by the guest go to <out>/results/.
    let mut files = Vec::new();
    for (rel, data) in &transcript.files {
        let p = cfg.out_dir.join("results").join(rel);
        if let Some(d) = p.parent() {
            fs::create_dir_all(d).ctx(d)?;
        }
        fs::write(&p, data).ctx(&p)?;
        files.push(format!("results/{rel}"));
    }
    let mut ok = 0;
    let mut not_ok = 0;
    for c in &transcript.commands {
        for l in &c.stdout {
            if l.starts_with("ok ") || l == "ok" {
                ok += 1;
            } else if l.starts_with("not ok") {
                not_ok += 1;
            }
        }
    }
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
            .map(|c| {
                (
                    c.name.clone(),
                    c.exit
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "no EXIT".into()),
                )
            })
            .collect(),
        files,
        tap: (ok + not_ok > 0).then_some((ok, not_ok)),
        infos: transcript.infos.clone(),
        console_tail: tail.into(),
        transcript,
    };
    let p = cfg.out_dir.join("vm-result.json");
    let mut f = File::create(&p).ctx(&p)?;
    let body = serde_json::to_string_pretty(&report).map_err(|e| Error::Other(e.to_string()))?;
    f.write_all(body.as_bytes()).ctx(&p)?;
    Ok(report)
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

/// True if `path` is an executable QEMU.
pub fn find_qemu() -> Option<PathBuf> {
    let name = "qemu-system-x86_64";
    if let Some(p) = std::env::var_os("CAPRING_VM_QEMU") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| Path::new(p).is_file())
    })
}
