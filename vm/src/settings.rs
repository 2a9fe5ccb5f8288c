//! Settings handed to the guest agent in `/etc/capring-vm.json`.

use serde::{Deserialize, Serialize};

/// Where the agent reads its settings inside the guest.
pub const SETTINGS_PATH: &str = "/etc/capring-vm.json";

/// Fault drills the agent can perform instead of (or before) running commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drill {
    /// Panic the kernel (sysrq 'c') right after HELLO.
    Panic,
    /// Print HELLO, then sleep forever and never say DONE.
    Hang,
}

/// One command the agent runs inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCommand {
    /// Short name used in START/EXIT lines (no whitespace).
    pub name: String,
    /// Program and arguments; `argv[0]` is an absolute path in the guest.
    pub argv: Vec<String>,
    /// The agent kills the command (its whole process group) after this long.
    pub timeout_secs: u64,
    /// Exit codes that count as success (empty: only 0). `capring check` of a tracer that
    /// fails clauses exits 1: that is a verdict, judged on the host, not a broken guest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ok_codes: Vec<i32>,
}

impl GuestCommand {
    /// Whether `status` is a success for this command.
    pub fn accepts(&self, status: crate::protocol::ExitStatus) -> bool {
        match status {
            crate::protocol::ExitStatus::Code(0) => true,
            crate::protocol::ExitStatus::Code(c) => self.ok_codes.contains(&c),
            _ => false,
        }
    }
}

/// Everything the guest agent needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSettings {
    /// Random token; every protocol line carries it, so stray output that
    /// happens to look like a protocol line is ignored by the host.
    pub nonce: String,
    /// Commands run in order.
    pub commands: Vec<GuestCommand>,
    /// Directory whose files are sent back to the host after each command.
    pub results_dir: String,
    /// Extra environment for the commands.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Optional fault drill.
    #[serde(default)]
    pub drill: Option<Drill>,
}

impl GuestSettings {
    /// Total time the commands may take inside the guest, as the agent enforces it.
    pub fn commands_budget_secs(&self) -> u64 {
        self.commands.iter().map(|c| c.timeout_secs).sum()
    }
}
