//! Deliberate faults for the suite's negative controls (`fixtures/mutants/`).
//!
//! `ref-tracer-mutant` runs the reference tracer with exactly one of these faults, chosen by
//! `CAPRING_MUTANT`; `ref-tracer` always runs with [`Mutation::None`]. The harness must fail
//! each mutant by the clause `fixtures/mutants/mutants.toml` names, which proves that the
//! checks can fail.

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    None,
    /// Never calls capset or prctl: every capability stays effective.
    NeverDrops,
    /// Warns about a failed drop and carries on.
    IgnoresDropFailure,
    /// Keeps cap_sys_admin effective on the main thread in the steady state.
    KeepsSysAdmin,
    /// Leaves one thread (started before the first drop) out of every transition.
    ForgetsThread,
    /// Ignores `drop=` (and CAPABILITIES_DROP).
    IgnoresDropFlag,
    /// Ignores `bypass=1`: drops anyway.
    BypassStillDrops,
    /// Raises cap_syslog for the kallsyms read and never lowers it.
    RequestedLeftRaised,
    /// Lets CAPABILITIES_BYPASS override `--capabilities bypass=` given on the command line.
    EnvOverridesFlag,
    /// Loads its eBPF programs before the first drop.
    LoadsBeforeDrop,
    /// Never empties the bounding set.
    KeepsBounding,
    /// Configures with every permitted capability effective instead of the Required ring.
    RequiredTooWide,
}

pub const ENV: &str = "CAPRING_MUTANT";

pub const ALL: &[(&str, Mutation)] = &[
    ("never-drops", Mutation::NeverDrops),
    ("ignores-drop-failure", Mutation::IgnoresDropFailure),
    ("keeps-sys-admin", Mutation::KeepsSysAdmin),
    ("forgets-thread", Mutation::ForgetsThread),
    ("ignores-drop-flag", Mutation::IgnoresDropFlag),
    ("bypass-still-drops", Mutation::BypassStillDrops),
    ("requested-left-raised", Mutation::RequestedLeftRaised),
    ("env-overrides-flag", Mutation::EnvOverridesFlag),
    ("loads-before-drop", Mutation::LoadsBeforeDrop),
    ("keeps-bounding", Mutation::KeepsBounding),
    ("required-too-wide", Mutation::RequiredTooWide),
];

impl FromStr for Mutation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!(
                    "unknown mutant '{s}' (known: {})",
                    ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )
            })
    }
}

/// Starts a thread before the first drop that the ring manager is told to leave out of
/// every transition (the `forgets-thread` fault). It only sleeps.
pub fn spawn_forgotten_thread() -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("forgotten".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let _ = tx.send(tid);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        })
        .expect("spawning a thread");
    if let Ok(tid) = rx.recv() {
        crate::rings::forget_thread_for_mutant(tid);
    }
    handle
}
