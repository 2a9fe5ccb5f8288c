//! The faults of the negative controls (compiled only with the cargo feature `faults`).
//!
//! Each fault is a mistake a real tracer author could make; `fixtures/mutants/mutants.toml`
//! names the scenario that exposes it and the clause that must fail. A fault binary
//! (`ref-tracer-mutant`, `ref-rules-mutant`) calls [`select`] once at start, with the name
//! from `CAPRING_MUTANT`; every hook then acts only for that fault.
//!
//! Each fault's name is compiled in as a marker string `capring-fault:NAME;`, so that
//! `tests/no_faults.rs` can tell a binary with fault code from one without.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use capring_spec::caps::{Cap, CapSet};
use capring_spec::catalog::Catalog;
use capring_spec::facts::EnvFacts;
use capring_spec::options::{self, CapEnv, CapOptions};
use capring_spec::oracle::{self, Outcome, Rings};

use crate::rings::{Ring, RingManager, RingPlan};

/// The variable that names the fault.
pub const ENV: &str = "CAPRING_MUTANT";

/// The prefix of every fault's marker string.
pub const MARKER_PREFIX: &str = "capring-fault:";

/// Which program a fault belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `ref-tracer-mutant`, the reference tracer with one fault.
    Tracer,
    /// `ref-rules-mutant`, the reference rules engine with one fault.
    Rules,
}

macro_rules! faults {
    ($($variant:ident = $name:literal, $target:ident, $doc:literal;)*) => {
        /// One deliberate fault.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Fault {
            $(#[doc = $doc] $variant,)*
        }

        /// Every fault.
        pub const ALL: &[Fault] = &[$(Fault::$variant,)*];

        impl Fault {
            /// `capring-fault:NAME;`: the string every hook compares with (see `is`).
            pub fn marker(self) -> &'static str {
                match self {
                    $(Fault::$variant => concat!("capring-fault:", $name, ";"),)*
                }
            }

            fn target(self) -> Target {
                match self {
                    $(Fault::$variant => Target::$target,)*
                }
            }
        }
    };
}

faults! {
    NeverDrops = "never-drops", Tracer,
        "Never calls capset or prctl: every capability stays effective.";
    IgnoresDropFailure = "ignores-drop-failure", Tracer,
        "Warns about a failed drop and carries on.";
    KeepsSysAdmin = "keeps-sys-admin", Tracer,
        "Keeps cap_sys_admin effective on the main thread in the steady state.";
    ForgetsThread = "forgets-thread", Tracer,
        "Leaves one thread (started before the first drop) out of every transition.";
    IgnoresDropFlag = "ignores-drop-flag", Tracer,
        "Ignores `drop=` (and CAPABILITIES_DROP).";
    BypassStillDrops = "bypass-still-drops", Tracer,
        "Ignores `bypass=1`: drops anyway.";
    RequestedLeftRaised = "requested-left-raised", Tracer,
        "Raises cap_syslog for the kallsyms read and never lowers it.";
    EnvOverridesFlag = "env-overrides-flag", Tracer,
        "Lets CAPABILITIES_BYPASS override `--capabilities bypass=` given on the command line.";
    EnvDropMerged = "env-drop-merged", Tracer,
        "Adds CAPABILITIES_DROP to the command line's `drop=` instead of letting the flag shadow it.";
    LoadsBeforeDrop = "loads-before-drop", Tracer,
        "Loads its eBPF programs before the first drop.";
    KeepsBounding = "keeps-bounding", Tracer,
        "Never empties the bounding set.";
    RequiredTooWide = "required-too-wide", Tracer,
        "Configures with every usable capability effective instead of the Required ring.";
    PrefersSysAdmin = "prefers-sys-admin", Tracer,
        "Configures with cap_sys_admin instead of cap_bpf + cap_perfmon, although both are usable.";
    UndeclaredRequested = "undeclared-requested", Tracer,
        "Raises cap_net_raw alone, once in the steady state, for an operation no event declares.";
    LateBpfCall = "late-bpf-call", Tracer,
        "Creates a statistics map with bpf(2) from the Unprivileged ring, after the second event.";
    LateUnprivileged = "late-unprivileged", Tracer,
        "Leaves the Required ring only after its first event was written.";
    RequestedTwoCaps = "requested-two-caps", Tracer,
        "Raises cap_sys_ptrace together with cap_dac_read_search for the exe hash.";
    HelpMissesLastCap = "help-misses-last-cap", Tracer,
        "`--capabilities help` lists 0..cap_last_cap-1: the kernel's last capability is missing.";
    IgnoresBypassEnv = "ignores-bypass-env", Tracer,
        "Ignores CAPABILITIES_BYPASS.";
    AddStaysEffective = "add-stays-effective", Tracer,
        "Keeps the added capabilities effective all the time (Tracee since v0.14).";
    IgnoresEnvAddDrop = "ignores-env-add-drop", Tracer,
        "Ignores CAPABILITIES_ADD and CAPABILITIES_DROP.";
    SkipsMissingCheck = "skips-missing-check", Tracer,
        "Does not check the Required capabilities: drops to what it has, fails to load, exits 1.";
    LeavesPinnedProgram = "leaves-pinned-program", Tracer,
        "A helper pins a program in bpffs before the first drop; a failed drop leaves it there.";
    BypassCapsetAborts = "bypass-capset-aborts", Tracer,
        "Under bypass still calls capset (E=P) and aborts with the capability code when it fails.";
    RulesKeepsDacReadSearch = "rules-keeps-dac-read-search", Rules,
        "The rules engine keeps cap_dac_read_search effective and permitted.";
    RulesIgnoresAllcaps = "rules-ignores-allcaps", Rules,
        "The rules engine ignores --allcaps and drops everything.";
    RulesIgnoresBypassEnv = "rules-ignores-bypass-env", Rules,
        "The rules engine ignores CAPABILITIES_BYPASS.";
}

impl Fault {
    /// The name used in `CAPRING_MUTANT` and `mutants.toml`.
    pub fn name(self) -> &'static str {
        let marker = self.marker();
        marker
            .strip_prefix(MARKER_PREFIX)
            .and_then(|m| m.strip_suffix(';'))
            .unwrap_or(marker)
    }

    fn parse(name: &str) -> Option<Fault> {
        ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// cap_dac_read_search and cap_net_raw (`capring_spec::caps::Cap` names only the
/// capabilities the reference itself uses).
fn dac_read_search() -> Cap {
    Cap::new(2).unwrap_or(Cap::DAC_OVERRIDE)
}

fn net_raw() -> Cap {
    Cap::new(13).unwrap_or(Cap::NET_ADMIN)
}

/// The selected fault's marker.
static ACTIVE: OnceLock<&'static str> = OnceLock::new();
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Is `fault` the selected one? Compares the markers' text, through `black_box` so that the
/// optimizer keeps each marker whole: any binary with a hook of this module in it (say, a
/// `ref-tracer` built with the feature by mistake) carries the markers of the faults its
/// hooks test, which is what `tests/no_faults.rs` looks for.
fn is(fault: Fault) -> bool {
    let marker = std::hint::black_box(fault.marker());
    ACTIVE.get().is_some_and(|active| *active == marker)
}

/// The selected fault (through [`is`], so the same markers are kept).
fn active() -> Option<Fault> {
    ALL.iter().copied().find(|f| is(*f))
}

fn warn(message: impl std::fmt::Display) {
    let program = PROGRAM.get().copied().unwrap_or("ref-tracer-mutant");
    eprintln!("{program}: warning: {message}");
}

/// Selects the fault named by `CAPRING_MUTANT` for `target`; a missing or unknown name is a
/// usage error (exit 2). Also removes what an earlier `leaves-pinned-program` run left.
pub fn select(program: &'static str, target: Target) -> Fault {
    let names = || {
        ALL.iter()
            .filter(|f| f.target() == target)
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fault = match std::env::var(ENV) {
        Ok(name) => Fault::parse(&name)
            .filter(|f| f.target() == target)
            .unwrap_or_else(|| {
                crate::cli::usage_exit(
                    program,
                    format!(
                        "{ENV}={name} is not a fault of {program} (known: {})",
                        names()
                    ),
                )
            }),
        Err(_) => crate::cli::usage_exit(program, format!("set {ENV} to one of: {}", names())),
    };
    let _ = PROGRAM.set(program);
    let _ = ACTIVE.set(fault.marker());
    if target == Target::Tracer {
        pin::release();
    }
    fault
}

// ----- hooks (same signatures as `inert.rs`) -------------------------------------------------

/// The tracer's `CAPABILITIES_*` variables, before they are parsed: `ignores-bypass-env`
/// forgets `CAPABILITIES_BYPASS`, `ignores-env-add-drop` forgets `CAPABILITIES_ADD` and
/// `CAPABILITIES_DROP`.
pub(crate) fn environment(env: &mut CapEnv) {
    if is(Fault::IgnoresBypassEnv) {
        env.bypass = None;
    }
    if is(Fault::IgnoresEnvAddDrop) {
        env.add = None;
        env.drop = None;
    }
}

/// The resolved `--capabilities` options: `ignores-drop-flag` empties `drop=`,
/// `bypass-still-drops` clears `bypass=`, `env-overrides-flag` lets `CAPABILITIES_BYPASS`
/// win over the command line.
pub(crate) fn options(options: &mut CapOptions, env: &CapEnv) {
    if is(Fault::IgnoresDropFlag) {
        options.drop = CapSet::EMPTY;
    }
    if is(Fault::BypassStillDrops) {
        options.bypass = false;
    }
    if is(Fault::EnvOverridesFlag) {
        if let Some(b) = env.bypass.as_deref().and_then(options::parse_bypass) {
            options.bypass = b;
        }
    }
    if is(Fault::EnvDropMerged) {
        let names = env.drop.iter().flat_map(|list| list.split(','));
        for cap in names.filter_map(|n| capring_spec::caps::parse_name(n.trim()).ok()) {
            options.drop.insert(cap);
        }
    }
}

/// The last capability number `--capabilities help` lists: one less under
/// `help-misses-last-cap`.
pub(crate) fn help_last_cap(last: u8) -> u8 {
    if is(Fault::HelpMissesLastCap) {
        last.saturating_sub(1)
    } else {
        last
    }
}

/// The oracle said the tracer cannot run (a Required capability is not usable); a fault
/// may return rings to run with anyway. `skips-missing-check` evaluates as if every
/// capability were usable, then silently shrinks the rings to what is really usable.
pub(crate) fn cannot_run(
    options: &CapOptions,
    events: &[String],
    catalog: &Catalog,
    facts: &EnvFacts,
) -> Option<(bool, Rings, Vec<String>)> {
    if !is(Fault::SkipsMissingCheck) {
        return None;
    }
    let mut assumed = facts.clone();
    assumed.permitted = CapSet::all_up_to(facts.cap_last_cap);
    assumed.bounding = assumed.permitted;
    match oracle::evaluate(options, events, catalog, &assumed) {
        Ok(Outcome::Runs {
            bypass,
            mut rings,
            warnings,
        }) => {
            let usable = facts.usable();
            rings.required = rings.required.intersection(usable);
            rings.config_permitted = rings.config_permitted.intersection(usable);
            rings.steady_permitted = rings.steady_permitted.intersection(usable);
            Some((bypass, rings, warnings))
        }
        _ => None,
    }
}

/// Capabilities `add=` put in the Required ring (`add-stays-effective` keeps them).
static ADDED: OnceLock<CapSet> = OnceLock::new();

/// The ring plan, before the ring manager gets it. Most tracer faults act here: they widen
/// the rings (`keeps-sys-admin`, `required-too-wide`, `undeclared-requested`,
/// `requested-two-caps`, `add-stays-effective`), swap a capability (`prefers-sys-admin`),
/// keep the bounding set (`keeps-bounding`) or turn every change off (`never-drops`, as
/// bypass does).
pub(crate) fn ring_plan(plan: &mut RingPlan, rings: &Rings, facts: &EnvFacts) {
    let usable = facts.usable();
    let permit = |plan: &mut RingPlan, cap: Cap| {
        plan.config_permitted.insert(cap);
        plan.steady_permitted.insert(cap);
    };
    match active() {
        Some(Fault::NeverDrops) => plan.bypass = true,
        Some(Fault::KeepsBounding) => plan.clear_bounding = false,
        Some(Fault::RequiredTooWide) => {
            plan.required = usable;
            plan.config_permitted = usable;
        }
        Some(Fault::KeepsSysAdmin) => permit(plan, Cap::SYS_ADMIN),
        Some(Fault::PrefersSysAdmin)
            if usable.contains(Cap::SYS_ADMIN)
                && plan.required.contains(Cap::BPF)
                && plan.required.contains(Cap::PERFMON) =>
        {
            let base: CapSet = [Cap::BPF, Cap::PERFMON].into_iter().collect();
            plan.required = plan.required.difference(base).with(Cap::SYS_ADMIN);
            plan.config_permitted = plan.config_permitted.difference(base).with(Cap::SYS_ADMIN);
        }
        Some(Fault::UndeclaredRequested) if usable.contains(net_raw()) => permit(plan, net_raw()),
        Some(Fault::RequestedTwoCaps) if plan.steady_permitted.contains(Cap::SYS_PTRACE) => {
            permit(plan, dac_read_search())
        }
        Some(Fault::AddStaysEffective) => {
            let added: CapSet = rings
                .required_needs
                .iter()
                .filter(|n| n.source == "add")
                .map(|n| n.capability)
                .collect();
            plan.steady_permitted = plan.steady_permitted.union(added);
            let _ = ADDED.set(added);
        }
        _ => {}
    }
}

/// Just before the ring manager is created (still one thread): `forgets-thread` starts the
/// thread every transition will leave out.
pub(crate) fn before_ring_manager() {
    if is(Fault::ForgetsThread) {
        spawn_forgotten_thread();
    }
}

/// Just before the first drop (still one thread, every capability effective):
/// `bypass-capset-aborts` makes a capset that changes nothing and aborts if it fails;
/// `leaves-pinned-program` pins a program from a helper process.
pub(crate) fn before_first_drop(plan: &RingPlan) -> Result<(), String> {
    if is(Fault::BypassCapsetAborts) && plan.bypass {
        // "Enter the Privileged ring" explicitly: a capset that changes nothing, treated as
        // a drop whose failure is fatal.
        let permitted =
            caps::read(None, caps::CapSet::Permitted).map_err(|e| format!("capget failed: {e}"))?;
        caps::set(None, caps::CapSet::Effective, &permitted).map_err(|e| {
            format!("capset (entering the Privileged ring under bypass) failed: {e}")
        })?;
    }
    if is(Fault::LeavesPinnedProgram) && !plan.bypass {
        pin::pin_from_helper()?;
    }
    Ok(())
}

/// Load the eBPF programs before the first drop instead of after it? Yes under
/// `loads-before-drop`.
pub(crate) fn load_before_first_drop() -> bool {
    is(Fault::LoadsBeforeDrop)
}

/// Carry on after a failed drop? Yes under `ignores-drop-failure`.
pub(crate) fn ignore_drop_failure() -> bool {
    is(Fault::IgnoresDropFailure)
}

/// The first drop succeeded: `leaves-pinned-program` removes its pin (only the abort path
/// leaves it behind).
pub(crate) fn after_first_drop() {
    if is(Fault::LeavesPinnedProgram) {
        // Configured: the pin is not needed any more (only the abort path forgets it).
        pin::release();
    }
}

/// Report a permission error while loading as a runtime error (exit 1)? Yes under
/// `skips-missing-check`.
pub(crate) fn permission_error_is_runtime() -> bool {
    is(Fault::SkipsMissingCheck)
}

/// Stay in the Required ring after configuration (until `after_event` moves on)? Yes under
/// `late-unprivileged`.
pub(crate) fn defer_unprivileged() -> bool {
    is(Fault::LateUnprivileged)
}

/// The Unprivileged ring was entered: `keeps-sys-admin` raises cap_sys_admin again on the
/// calling (main) thread only, behind the ring manager's back.
pub(crate) fn steady_state_entered() {
    if is(Fault::KeepsSysAdmin) {
        let _ = caps::raise(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        );
    }
}

/// The start-up Requested operation (reading /proc/kallsyms) is over:
/// `requested-left-raised` raises cap_syslog again on the calling thread.
pub(crate) fn after_kallsyms() {
    if is(Fault::RequestedLeftRaised) {
        let _ = caps::raise(None, caps::CapSet::Effective, caps::Capability::CAP_SYSLOG);
    }
}

/// An event line was handed to the writer; `emitted` counts them, this one included. After
/// the first event `late-unprivileged` finally drops to Unprivileged; after the second,
/// `undeclared-requested` opens a raw socket in a Requested ring of cap_net_raw and
/// `late-bpf-call` creates a map with bpf(2) from the Unprivileged ring.
pub(crate) fn after_event(emitted: u64, manager: &RingManager) -> Result<(), String> {
    match (active(), emitted) {
        (Some(Fault::LateUnprivileged), 1) => {
            // Long enough for the harness to read the line and sample every thread.
            std::thread::sleep(Duration::from_millis(300));
            manager
                .enter_unprivileged("configuration done (after the first event)")
                .map_err(|e| format!("dropping to the Unprivileged ring failed: {e}"))
        }
        (Some(Fault::UndeclaredRequested), 2) => {
            let probe = manager.with_requested(
                net_raw(),
                "probe: open a raw packet socket",
                open_raw_socket,
            );
            if let Err(e) = probe {
                warn(format!("raw socket probe: {e}"));
            }
            Ok(())
        }
        (Some(Fault::LateBpfCall), 2) => {
            if let Err(e) = create_stats_map() {
                warn(format!("statistics map not created: {e}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The `forgets-thread` thread id (0 = none).
static FORGOTTEN_TID: AtomicI32 = AtomicI32::new(0);

/// Leave this thread out of every ring transition? Yes for the `forgets-thread` thread.
pub(crate) fn is_forgotten(tid: i32) -> bool {
    tid != 0 && FORGOTTEN_TID.load(Ordering::SeqCst) == tid
}

/// The effective set a ring transition applies: `requested-two-caps` adds
/// cap_dac_read_search to the cap_sys_ptrace Requested ring, `add-stays-effective` keeps the
/// `add=` capabilities in Unprivileged and Requested rings.
pub(crate) fn effective(ring: Ring, eff: CapSet) -> CapSet {
    match (active(), ring) {
        (Some(Fault::RequestedTwoCaps), Ring::Requested(Cap::SYS_PTRACE)) => {
            eff.with(dac_read_search())
        }
        (Some(Fault::AddStaysEffective), Ring::Unprivileged | Ring::Requested(_)) => {
            eff.union(ADDED.get().copied().unwrap_or_default())
        }
        _ => eff,
    }
}

/// The rules engine's `CAPABILITIES_*` variables, before they are read:
/// `rules-ignores-bypass-env` forgets `CAPABILITIES_BYPASS`.
pub(crate) fn rules_environment(env: &mut CapEnv) {
    if is(Fault::RulesIgnoresBypassEnv) {
        env.bypass = None;
    }
}

/// The rules engine's `--allcaps` flag as given: always off under `rules-ignores-allcaps`.
pub(crate) fn rules_allcaps_flag(flag: bool) -> bool {
    flag && !is(Fault::RulesIgnoresAllcaps)
}

/// Capabilities the rules engine keeps when it drops everything: cap_dac_read_search under
/// `rules-keeps-dac-read-search`.
pub(crate) fn rules_keep() -> CapSet {
    if is(Fault::RulesKeepsDacReadSearch) {
        CapSet::EMPTY.with(dac_read_search())
    } else {
        CapSet::EMPTY
    }
}

// ----- what some faults do -------------------------------------------------------------------

/// Starts a thread, before the first drop, that every transition leaves out. It only sleeps.
fn spawn_forgotten_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("forgotten".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() });
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
    if spawned.is_ok() {
        if let Ok(tid) = rx.recv() {
            FORGOTTEN_TID.store(tid, Ordering::SeqCst);
        }
    }
}

fn open_raw_socket() -> Result<(), std::io::Error> {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    unsafe { libc::close(fd) };
    Ok(())
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;

/// `union bpf_attr`, large enough for the commands used here (zero-filled).
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> BpfAttr {
        BpfAttr([0; 128])
    }

    fn put_u32(&mut self, offset: usize, v: u32) {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, v: u64) {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> libc::c_long {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed, valid for the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len() as u32) }
}

/// `late-bpf-call`: an array map for statistics, created lazily.
fn create_stats_map() -> Result<(), std::io::Error> {
    let mut attr = BpfAttr::new();
    attr.put_u32(0, 2); // BPF_MAP_TYPE_ARRAY
    attr.put_u32(4, 4); // key_size
    attr.put_u32(8, 8); // value_size
    attr.put_u32(12, 1); // max_entries
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by bpf(2) and is owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// `leaves-pinned-program`: a private bpffs instance holding one pinned program.
///
/// The pin outlives the tracer (that is the fault). It is removed by unmounting the
/// instance: after a successful first drop, and at the start of every `ref-tracer-mutant`
/// run; by hand: `umount -l /run/capring-mutant-bpffs`.
mod pin {
    use super::*;

    const DIR: &CStr = c"/run/capring-mutant-bpffs";
    const PATH: &CStr = c"/run/capring-mutant-bpffs/capring_leak";

    /// Unmounts the instance (and so releases its pinned program), if it is mounted.
    pub fn release() {
        // SAFETY: umount2 with a static C string; EINVAL/ENOENT (not mounted) are fine.
        unsafe { libc::umount2(DIR.as_ptr(), libc::MNT_DETACH) };
    }

    /// Mounts a fresh bpffs instance, then a forked helper loads a two-instruction socket
    /// filter and pins it there. The helper exits at once; the pin keeps the program loaded.
    pub fn pin_from_helper() -> Result<(), String> {
        release();
        let dir = DIR.to_str().unwrap_or_default();
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
        // SAFETY: mount(2) with static C strings.
        let r = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                DIR.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            return Err(format!(
                "mounting bpffs on {dir}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // r0 = 0; exit
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut load = BpfAttr::new();
        load.put_u32(0, 1); // BPF_PROG_TYPE_SOCKET_FILTER
        load.put_u32(4, insns.len() as u32);
        load.put_u64(8, insns.as_ptr() as u64);
        load.put_u64(16, license.as_ptr() as u64);
        load.0[48..48 + 12].copy_from_slice(b"capring_leak");
        let mut pin = BpfAttr::new();
        pin.put_u64(0, PATH.as_ptr() as u64);
        // SAFETY: the process is still single-threaded here (before the writer thread and
        // before aya); the child makes only raw system calls and leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let fd = bpf(BPF_PROG_LOAD, &mut load);
            let code = if fd < 0 {
                1
            } else {
                pin.put_u32(8, fd as u32);
                if bpf(BPF_OBJ_PIN, &mut pin) == 0 {
                    0
                } else {
                    2
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        if child < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe { libc::waitpid(child, &mut status, 0) };
        match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
            (true, 0) => Ok(()),
            (true, 1) => Err("the helper could not load its program".into()),
            (true, 2) => Err("the helper could not pin its program".into()),
            _ => Err(format!("the helper ended with status {status:#x}")),
        }
    }
}
