//! The production side of the fault seam: every hook does nothing and is inlined away.
//! Keep the signatures (and `pub(crate)`: the hooks are the crate's own seam, not API)
//! identical to `active.rs` (both configurations are compiled by `cargo xtask test`).

use capring_spec::caps::CapSet;
use capring_spec::catalog::Catalog;
use capring_spec::facts::EnvFacts;
use capring_spec::options::{CapEnv, CapOptions};
use capring_spec::oracle::Rings;

use crate::rings::{Ring, RingManager, RingPlan};

/// The tracer's `CAPABILITIES_*` variables, before they are parsed.
#[inline(always)]
pub(crate) fn environment(_env: &mut CapEnv) {}

/// The resolved `--capabilities` options.
#[inline(always)]
pub(crate) fn options(_options: &mut CapOptions, _env: &CapEnv) {}

/// The last capability number `--capabilities help` lists.
#[inline(always)]
pub(crate) fn help_last_cap(last: u8) -> u8 {
    last
}

/// The oracle said the tracer cannot run (a Required capability is not usable); a fault
/// may return rings to run with anyway.
#[inline(always)]
pub(crate) fn cannot_run(
    _options: &CapOptions,
    _events: &[String],
    _catalog: &Catalog,
    _facts: &EnvFacts,
) -> Option<(bool, Rings, Vec<String>)> {
    None
}

/// The ring plan, before the ring manager gets it.
#[inline(always)]
pub(crate) fn ring_plan(_plan: &mut RingPlan, _rings: &Rings, _facts: &EnvFacts) {}

/// Just before the ring manager is created (still one thread).
#[inline(always)]
pub(crate) fn before_ring_manager() {}

/// Just before the first drop (still one thread, every capability effective).
#[inline(always)]
pub(crate) fn before_first_drop(_plan: &RingPlan) -> Result<(), String> {
    Ok(())
}

/// Load the eBPF programs before the first drop instead of after it?
#[inline(always)]
pub(crate) fn load_before_first_drop() -> bool {
    false
}

/// Carry on after a failed drop?
#[inline(always)]
pub(crate) fn ignore_drop_failure() -> bool {
    false
}

/// The first drop succeeded.
#[inline(always)]
pub(crate) fn after_first_drop() {}

/// Report a permission error while loading as a runtime error (exit 1)?
#[inline(always)]
pub(crate) fn permission_error_is_runtime() -> bool {
    false
}

/// Stay in the Required ring after configuration (until `after_event` moves on)?
#[inline(always)]
pub(crate) fn defer_unprivileged() -> bool {
    false
}

/// The Unprivileged ring was entered.
#[inline(always)]
pub(crate) fn steady_state_entered() {}

/// The start-up Requested operation (reading /proc/kallsyms) is over.
#[inline(always)]
pub(crate) fn after_kallsyms() {}

/// An event line was handed to the writer; `emitted` counts them, this one included.
#[inline(always)]
pub(crate) fn after_event(_emitted: u64, _manager: &RingManager) -> Result<(), String> {
    Ok(())
}

/// Leave this thread out of every ring transition?
#[inline(always)]
pub(crate) fn is_forgotten(_tid: i32) -> bool {
    false
}

/// The effective set a ring transition applies.
#[inline(always)]
pub(crate) fn effective(_ring: Ring, eff: CapSet) -> CapSet {
    eff
}

/// The rules engine's `CAPABILITIES_*` variables, before they are read.
#[inline(always)]
pub(crate) fn rules_environment(_env: &mut CapEnv) {}

/// The rules engine's `--allcaps` flag as given.
#[inline(always)]
pub(crate) fn rules_allcaps_flag(flag: bool) -> bool {
    flag
}

/// Capabilities the rules engine keeps when it drops everything.
#[inline(always)]
pub(crate) fn rules_keep() -> CapSet {
    CapSet::EMPTY
}
