//! A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe`, for tests that
//! load a page in headless Chromium and read back its DOM, geometry and console.
//!
//! Why the pipe: it needs no port, no HTTP and no WebSocket: Chromium reads commands on fd 3
//! and writes replies and events on fd 4, each message one JSON object ended by a NUL byte.
//! Only what the tests need is here: launch, call a method (at browser level or on a page
//! session), wait for an event, and keep every event seen (console messages, exceptions,
//! log entries).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one reply or event may take (a cold Chromium start included).
const WAIT: Duration = Duration::from_secs(60);

/// Chromium: `$CAPRING_CHROMIUM`, else `chromium` on PATH. Missing is a test failure with
/// the way out, never a skip.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPRING_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test renders the HTML report in a real browser. \
             Install Debian's chromium (apt-get install chromium; `cargo xtask test` does it) \
             or set CAPRING_CHROMIUM"
        )
    })
}

pub struct Cdp {
    child: Child,
    commands: std::fs::File,
    replies: Receiver<Value>,
    next_id: u64,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

/// A pipe end duplicated above the standard descriptors, so that `dup2` onto 3 or 4 in the
/// child is a real copy (which clears close-on-exec) whatever numbers the pipe got.
fn high(fd: &impl AsRawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new descriptor we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    assert!(n >= 10, "fcntl: {}", std::io::Error::last_os_error());
    // SAFETY: `n` is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(n) }
}

impl Cdp {
    /// Starts Chromium with a fresh profile in `profile` (which must not be shared).
    pub fn launch(chromium: &Path, profile: &Path) -> Cdp {
        let (cmd_read, cmd_write) = std::io::pipe().expect("pipe");
        let (reply_read, reply_write) = std::io::pipe().expect("pipe");
        let (child_in, child_out) = (high(&cmd_read), high(&reply_write));
        let (fd_in, fd_out) = (child_in.as_raw_fd(), child_out.as_raw_fd());
        let mut cmd = capring_report::html::headless_chromium(chromium, profile);
        cmd.arg("--remote-debugging-pipe")
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd_in, 3) < 0 || libc::dup2(fd_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
        drop((cmd_read, reply_write, child_in, child_out));
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reply_read);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop_if(|b| *b == 0);
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        Cdp {
            child,
            commands: std::fs::File::from(OwnedFd::from(cmd_write)),
            replies,
            next_id: 1,
            events: Vec::new(),
        }
    }

    fn receive(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(left) {
            Ok(v) => v,
            Err(e) => panic!("chromium: no {what} ({e}); is it still running?"),
        }
    }

    /// Calls `method`; on a page when `session` is given. Panics on a protocol error.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("chromium: sending {method}: {e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.receive(deadline, &format!("reply to {method}"));
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("chromium: {method} failed: {err}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// Waits for an event (one already received counts).
    pub fn wait_event(&mut self, session: &str, method: &str) -> Value {
        let is = |v: &Value| v["method"] == method && v["sessionId"] == session;
        if let Some(v) = self.events.iter().find(|v| is(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.receive(deadline, &format!("event {method}"));
            self.events.push(v.clone());
            if is(&v) {
                return v;
            }
        }
    }

    /// Opens `url` in a new page and waits for its load event; returns the page's session.
    pub fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            self.call(Some(&session), domain, json!({}));
        }
        let nav = self.call(Some(&session), "Page.navigate", json!({"url": url}));
        if let Some(err) = nav.get("errorText") {
            panic!("chromium: navigating to {url}: {err}");
        }
        self.wait_event(&session, "Page.loadEventFired");
        session
    }

    /// Evaluates a JavaScript expression on a page and returns its value (as JSON).
    pub fn eval(&mut self, session: &str, expression: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating the probe threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Console messages, uncaught exceptions and warning/error log entries seen so far
    /// (CSP violations and failed loads arrive as log entries), one line each.
    pub fn console_problems(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|v| {
                let p = &v["params"];
                match v["method"].as_str()? {
                    "Runtime.consoleAPICalled" => {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Log.entryAdded"
                        if matches!(p["entry"]["level"].as_str(), Some("error" | "warning")) =>
                    {
                        Some(format!(
                            "log {}: {}",
                            p["entry"]["level"], p["entry"]["text"]
                        ))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
