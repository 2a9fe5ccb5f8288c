//! Executing one [`Plan`]: set the machine-wide conditions (restored afterwards, also on an
//! interrupt), launch the tracer under the observer with its workload, and keep everything the
//! checks need in a [`RunRecord`] that can be written and read back.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use capring_observe::observer::{self, Observation};
use capring_spec::sys::loaded_programs;
use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::scenario::Need;

/// Everything one run produced: the plan it executed and what was observed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// What was decided before launch, expectation included.
    pub plan: Plan,
    /// What the run did: timeline, output, exit.
    pub observation: Observation,
    /// The kernel's BPF program ids before and after the run.
    pub programs_before: BTreeSet<u32>,
    /// The ids once the run's tree ended (for a run that runs alone, after up to 2 s for
    /// the kernel to free its programs): a program of the run still here was left behind.
    pub programs_after: BTreeSet<u32>,
}

impl RunRecord {
    /// Reads a record written by `capring check --out` (`runs/<scenario>.json`), or a
    /// gzipped one (`.json.gz`, as kept under `fixtures/runs/`).
    pub fn load(path: &Path) -> anyhow::Result<RunRecord> {
        use anyhow::Context;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let json = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
                .with_context(|| format!("gunzipping {}", path.display()))?;
            out
        } else {
            bytes
        };
        serde_json::from_slice(&json).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Why a planned scenario could not run here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Skip {
    /// The machine cannot offer what the scenario needs (a tracefs that cannot be mounted,
    /// a perf_event_paranoid that cannot be set): why.
    #[error("not applicable here: {0}")]
    NotApplicable(String),
    /// The harness itself failed (launching, observing): the error. Judged as a failure of
    /// every clause of the scenario.
    #[error("harness error: {0}")]
    Harness(String),
}

/// A tracefs mount capring made for the tracers (scenarios or profiles that `need` it):
/// made by the first run that needs it, undone by [`TracefsMount::restore`] once the whole
/// command (check, minimize, mutants) ends, so a machine is left as it was found.
pub struct TracefsMount;

static MOUNTED_BY_US: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

impl TracefsMount {
    /// Mounts tracefs if needed. The lock is held across the mount so that two scenarios
    /// started together (`--jobs`) cannot stack two mounts, of which one would be left.
    fn ensure() -> Result<(), String> {
        let mut mounted = MOUNTED_BY_US.lock().unwrap_or_else(|e| e.into_inner());
        let made = capring_spec::sys::mount_tracefs().map_err(|e| {
            format!(
                "tracefs is not mounted at {} and mounting it failed: {e}",
                capring_spec::sys::TRACEFS
            )
        })?;
        *mounted |= made;
        Ok(())
    }

    /// Undoes a mount capring made (no-op otherwise). Called once a whole command ends.
    pub fn restore() {
        let mut mounted = MOUNTED_BY_US.lock().unwrap_or_else(|e| e.into_inner());
        if *mounted && capring_spec::sys::unmount_tracefs().is_ok() {
            *mounted = false;
        }
    }
}

/// Sets perf_event_paranoid for the scenario and restores it on drop.
struct ParanoidGuard(Option<String>);

impl ParanoidGuard {
    const PATH: &'static str = "/proc/sys/kernel/perf_event_paranoid";

    fn set(value: i32) -> Result<ParanoidGuard, Skip> {
        let old = std::fs::read_to_string(Self::PATH)
            .map_err(|e| Skip::NotApplicable(format!("perf_event_paranoid is unreadable: {e}")))?;
        std::fs::write(Self::PATH, value.to_string()).map_err(|e| {
            Skip::NotApplicable(format!("perf_event_paranoid is not writable here: {e}"))
        })?;
        match std::fs::read_to_string(Self::PATH) {
            Ok(now) if now.trim() == value.to_string() => Ok(ParanoidGuard(Some(old))),
            _ => {
                let _ = std::fs::write(Self::PATH, old.trim());
                Err(Skip::NotApplicable(format!(
                    "this kernel does not accept perf_event_paranoid={value}"
                )))
            }
        }
    }
}

impl Drop for ParanoidGuard {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = std::fs::write(Self::PATH, old.trim());
        }
    }
}

/// Runs one plan; `observe = false` launches the same run without ptrace (overhead
/// benchmarks: the checks then lack a timeline).
pub fn execute(plan: &Plan, observe: bool) -> Result<RunRecord, Skip> {
    if plan.scenario.needs.contains(&Need::Tracefs) {
        TracefsMount::ensure().map_err(Skip::NotApplicable)?;
    }
    let _paranoid = plan.paranoid.map(ParanoidGuard::set).transpose()?;
    let spec = plan.launch_spec(observe);
    let programs_before = loaded_programs();
    let observed = observer::run(&spec);
    if let Some(w) = &spec.companion {
        w.stop()
            .map_err(|e| Skip::Harness(format!("cannot start the workload {e}")))?;
    }
    let observation: Observation = observed.map_err(|e| Skip::Harness(e.to_string()))?;
    // The kernel frees a program whose last reference was the exited process a little later
    // (RCU, then a workqueue): give programs the run added up to 2 s to go before calling
    // them left behind (500 ms was not always enough with the test suite loading both CPUs).
    // Only drop-failure runs are judged on it (and only they run alone, see
    // `Scenario::runs_alone`): others do not wait for programs of runs next to them.
    let mut programs_after = loaded_programs();
    let release_deadline = Instant::now() + Duration::from_secs(2);
    while plan.scenario.runs_alone()
        && !programs_after.is_subset(&programs_before)
        && Instant::now() < release_deadline
    {
        std::thread::sleep(Duration::from_millis(10));
        programs_after = loaded_programs();
    }
    Ok(RunRecord {
        plan: plan.clone(),
        observation,
        programs_before,
        programs_after,
    })
}
