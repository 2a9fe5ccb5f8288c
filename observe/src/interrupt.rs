//! Ctrl-C and SIGTERM to capring itself.
//!
//! Why a flag and not the default disposition: capring changes machine-wide state for some
//! scenarios (perf_event_paranoid, a tracefs mount) and runs strangers' programs that may
//! hang, fork daemons or ignore SIGTERM. Dying on the spot would leave all of that behind.
//! Instead the first SIGINT or SIGTERM is recorded here; the observer's monitor sees it
//! within its poll interval (≤ 50 ms), kills the whole tree and the workload, every guard
//! restores what it changed as the stack unwinds normally, the partial report is written
//! marked *interrupted*, and capring exits 130 (SIGINT) or 143 (SIGTERM). A second signal
//! while that clean-up runs is ignored: the clean-up is short and bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static SIGNAL: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();

/// Catches SIGINT and SIGTERM from now on (idempotent).
pub fn install() -> std::io::Result<()> {
    if SIGNAL.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal wins; later ones store the same kind of value.
        signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)?;
    }
    let _ = SIGNAL.set(flag);
    Ok(())
}

/// The signal that interrupted capring, if any.
pub fn requested() -> Option<i32> {
    let v = SIGNAL.get()?.load(Ordering::SeqCst);
    (v != 0).then_some(v as i32)
}

/// The exit status for an interrupt by `signal` (the shell's 128 + n).
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Marks capring as interrupted without a signal (tests of the clean-up paths).
#[doc(hidden)]
pub fn simulate(signal: i32) {
    let flag = SIGNAL.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    flag.store(signal as usize, Ordering::SeqCst);
}
