//! Classifying a VM run from the evidence the runner collected.

use std::fmt;

use serde::Serialize;

use crate::protocol::{decode_qemu_status, DebugExit};

/// The verdict on one VM run, as `vm-test`'s table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// DONE ok, every command accepted, and QEMU exited by itself.
    Pass,
    /// The guest ran but something failed: a command, the protocol, the exit code.
    Fail,
    /// The guest kernel died (a console panic marker, or QEMU gone without DONE).
    KernelPanic,
    /// No HELLO before the boot deadline.
    BootTimeout,
    /// HELLO, but no DONE before the test deadline.
    TestTimeout,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::KernelPanic => "KERNEL_PANIC",
            Outcome::BootTimeout => "BOOT_TIMEOUT",
            Outcome::TestTimeout => "TEST_TIMEOUT",
        })
    }
}

/// Which host-side deadline fired (QEMU was then killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Deadline {
    /// No HELLO before the boot deadline.
    Boot,
    /// HELLO, but no DONE before the test deadline.
    Test,
    /// DONE seen, but QEMU did not exit by itself.
    Exit,
}

/// What the runner saw, from which [`classify`] decides the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// The agent said HELLO.
    pub hello: bool,
    /// `Some(ok)` once a DONE line was accepted.
    pub done: Option<bool>,
    /// Rejected protocol lines (their messages), in order.
    pub protocol_errors: Vec<String>,
    /// Commands whose EXIT was not `code=0`.
    pub failed_commands: Vec<String>,
    /// A panic or hang marker was seen on the console (the line).
    pub console_panic: Option<String>,
    /// QEMU's exit status if it exited by itself (`None`: we killed it).
    pub qemu_status: Option<i32>,
    /// The host deadline that fired, if one did.
    pub deadline: Option<Deadline>,
}

/// Decides the outcome and a one-line reason. A hang is never a pass.
pub fn classify(e: &Evidence) -> (Outcome, String) {
    if e.done.is_none() {
        if let Some(line) = &e.console_panic {
            return (Outcome::KernelPanic, format!("console: {line}"));
        }
    }
    if !e.hello {
        return match (e.qemu_status, e.deadline) {
            (Some(st), _) => match decode_qemu_status(st) {
                DebugExit::Fail(_) => (
                    Outcome::Fail,
                    "the agent failed before HELLO (see console.log)".into(),
                ),
                _ => (
                    Outcome::KernelPanic,
                    format!("QEMU exited (status {st}) before the agent said HELLO"),
                ),
            },
            (None, _) => (
                Outcome::BootTimeout,
                "no HELLO before the boot deadline".into(),
            ),
        };
    }
    let Some(ok) = e.done else {
        return match e.qemu_status {
            Some(st) => (
                Outcome::KernelPanic,
                format!("QEMU exited (status {st}) without DONE"),
            ),
            None => (
                Outcome::TestTimeout,
                "HELLO but no DONE before the test deadline".into(),
            ),
        };
    };
    if !e.protocol_errors.is_empty() {
        return (
            Outcome::Fail,
            format!("protocol error: {}", e.protocol_errors[0]),
        );
    }
    if !ok || !e.failed_commands.is_empty() {
        let which = if e.failed_commands.is_empty() {
            "DONE fail".to_string()
        } else {
            format!("failed: {}", e.failed_commands.join(", "))
        };
        return (Outcome::Fail, which);
    }
    match e.qemu_status.map(decode_qemu_status) {
        Some(DebugExit::Ok) => (Outcome::Pass, "DONE ok, isa-debug-exit ok".into()),
        Some(DebugExit::None) => (
            Outcome::Pass,
            "DONE ok (powered off without isa-debug-exit)".into(),
        ),
        Some(DebugExit::Fail(c)) => (
            Outcome::Fail,
            format!("DONE ok but isa-debug-exit reported failure code {c}"),
        ),
        None => (
            Outcome::Fail,
            "DONE ok but the guest did not power off".into(),
        ),
    }
}

/// Whether a console line means the guest kernel died or hung: a panic, an RCU stall dump, or
/// the second soft-lockup report (`soft_lockups` counts them across calls; one can be a
/// slow TCG host).
pub fn console_marker(line: &str, soft_lockups: &mut u32) -> bool {
    if line.contains("Kernel panic") || line.contains("RCU grace-period kthread stack dump") {
        return true;
    }
    if line.contains("watchdog: BUG: soft lockup") {
        *soft_lockups += 1;
        return *soft_lockups >= 2;
    }
    false
}
