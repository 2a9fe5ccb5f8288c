//! Environment facts the rings depend on.
//!
//! Expectations are keyed on probed features, never on kernel version strings: whether the
//! kernel knows CAP_BPF (its `cap_last_cap`), what this process may use (permitted and
//! bounding sets at start), `perf_event_paranoid`, whether BPF memory is charged to memory
//! cgroups (else `RLIMIT_MEMLOCK` must be high enough, and how high depends on whether the
//! kernel has the BPF ring buffer), and where cgroup v2 is mounted. The kernel release is
//! kept for messages only.

use serde::{Deserialize, Serialize};

use crate::caps::{Cap, CapSet};

/// Locked memory the reference tracer needs when BPF memory is charged to `RLIMIT_MEMLOCK`
/// (kernels before memcg accounting) and it sends events through a BPF ring buffer: the
/// 512 KiB ring (528 KiB charged), the programs and aya's probes (~570 KiB measured on 5.10),
/// with room to spare.
pub const MEMLOCK_RINGBUF: u64 = 8 << 20;

/// The same without a BPF ring buffer, where events go through a perf event array: the
/// programs and small maps (48 KiB charged on 5.4) and aya's probes, with room for the
/// objects of a previous run the kernel has not freed yet (it frees them after an RCU grace
/// period) and for perf buffers beyond `perf_event_mlock_kb`.
pub const MEMLOCK_PERF: u64 = 1 << 20;

/// Value the probe uses for an unlimited rlimit.
pub const UNLIMITED: u64 = u64::MAX;

/// What the oracle needs to know about the machine and the tracer's starting credentials,
/// probed once at start (`probe`, with the `probe` feature) or written by hand in tests.
///
/// Convention for the `Option<bool>` and `Option<i32>` facts: `None` means the probe could
/// not tell, or did not look because the answer could not change the rings, and each field
/// says how the rules read it (an unreadable `perf_event_paranoid` as the strictest level,
/// an unknown perf restriction as enforced, unknown BPF tokens as absent). The
/// `#[serde(default)]` fields may be missing from recordings made before they existed; they
/// load as `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFacts {
    /// `uname -r`, for messages only.
    pub kernel_release: String,
    /// Highest capability the kernel knows (`/proc/sys/kernel/cap_last_cap`).
    pub cap_last_cap: u8,
    /// Permitted set of the tracer at start.
    pub permitted: CapSet,
    /// Bounding set of the tracer at start.
    pub bounding: CapSet,
    /// `perf_event_paranoid`; `None` when unreadable (treated as the most restrictive).
    pub perf_event_paranoid: Option<i32>,
    /// BPF maps are charged to memory cgroups (since 5.11), not to `RLIMIT_MEMLOCK`.
    /// Probed only when it matters (the memlock soft limit is below [`MEMLOCK_RINGBUF`]);
    /// `None` = not probed.
    pub bpf_memcg: Option<bool>,
    /// The kernel has the BPF ring buffer (BPF_MAP_TYPE_RINGBUF, since 5.8); without it the
    /// tracer sends events through a perf event array, which needs less locked memory
    /// ([`MEMLOCK_PERF`]). Probed with [`EnvFacts::bpf_memcg`], from the same kernel symbol
    /// names; `None` = not probed.
    #[serde(default)]
    pub bpf_ringbuf: Option<bool>,
    /// `RLIMIT_MEMLOCK`'s soft limit at start, in bytes ([`UNLIMITED`] for infinity; 0 when
    /// `/proc/self/limits` is unreadable).
    pub memlock_soft: u64,
    /// `RLIMIT_MEMLOCK`'s hard limit at start, in bytes (same conventions): the soft limit
    /// can be raised to it without a capability, beyond it only with cap_sys_resource.
    pub memlock_hard: u64,
    /// Mount point of the cgroup v2 hierarchy, if any.
    pub cgroup2: Option<String>,
    /// perf_event_paranoid > 2 reserves perf events to cap_sys_admin: Debian's patch
    /// (`CONFIG_SECURITY_PERF_EVENTS_RESTRICT`). Upstream kernels treat 3 like 2. Ubuntu
    /// carries the same config option but its patch accepts cap_perfmon (measured: Ubuntu
    /// 5.15 at paranoid 4 configures with {cap_bpf, cap_perfmon};
    /// `snapshots/minimal-sets/ref-tracer@vm-5.15.*`), so an Ubuntu build (its
    /// `/proc/version` names its compiler "Ubuntu") is `Some(false)`. Otherwise read from
    /// the kernel's configuration (`/proc/config.gz`, `/boot/config-RELEASE`); `None` =
    /// unknown, taken as enforced.
    #[serde(default)]
    pub perf_restricted: Option<bool>,
    /// The kernel has BPF tokens (6.9+: `bpf_token_capable` in its BTF). Its BPF network
    /// checks then accept cap_sys_admin for cap_net_admin (measured: a cgroup_skb program
    /// attaches with {cap_sys_admin} alone on 6.12, 7.2 and 6.18, not on 5.10 and 6.1).
    /// `None` = unknown (no BTF), taken as no.
    #[serde(default)]
    pub bpf_token: Option<bool>,
}

/// What must be done about `RLIMIT_MEMLOCK` before loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemlockAction {
    /// BPF memory is memcg-accounted, or the soft limit is already high enough.
    Nothing,
    /// Raise the soft limit up to the hard limit: no capability needed.
    RaiseSoft,
    /// Raise the hard limit too: needs CAP_SYS_RESOURCE.
    RaiseHard,
}

impl EnvFacts {
    /// `perf_event_paranoid` as the rules see it: unreadable counts as the most restrictive.
    pub fn paranoid(&self) -> i32 {
        self.perf_event_paranoid.unwrap_or(4)
    }

    /// Capabilities usable by the tracer: permitted and still in the bounding set.
    pub fn usable(&self) -> CapSet {
        self.permitted.intersection(self.bounding)
    }

    /// Perf events need cap_sys_admin: perf_event_paranoid > 2 on a kernel that enforces it
    /// (or might).
    pub fn perf_needs_sys_admin(&self) -> bool {
        self.paranoid() > 2 && self.perf_restricted != Some(false)
    }

    /// The running kernel knows `cap` (its number is at most `cap_last_cap`): cap_bpf and
    /// cap_perfmon exist only from 5.8 on.
    pub fn kernel_has(&self, cap: Cap) -> bool {
        cap.number() <= self.cap_last_cap
    }

    /// Locked memory the tracer's BPF objects need where they are charged to
    /// `RLIMIT_MEMLOCK`: less without a ring buffer; the larger need when not probed.
    pub fn memlock_needed(&self) -> u64 {
        if self.bpf_ringbuf == Some(false) {
            MEMLOCK_PERF
        } else {
            MEMLOCK_RINGBUF
        }
    }

    /// What the tracer must do about `RLIMIT_MEMLOCK` before loading, from
    /// [`EnvFacts::memlock_needed`], memcg accounting and the two limits.
    pub fn memlock_action(&self) -> MemlockAction {
        let needed = self.memlock_needed();
        if self.memlock_soft >= needed || self.bpf_memcg == Some(true) {
            MemlockAction::Nothing
        } else if self.memlock_hard >= needed {
            MemlockAction::RaiseSoft
        } else {
            MemlockAction::RaiseHard
        }
    }

    /// A short key naming the facts that change the rings, used to suffix per-environment
    /// snapshots (`capbpf.paranoid3.memlock-hard.cgroup2`).
    pub fn feature_key(&self) -> String {
        let ebpf = if self.kernel_has(Cap::BPF)
            && self.usable().contains(Cap::BPF)
            && self.usable().contains(Cap::PERFMON)
        {
            "capbpf"
        } else {
            "sysadmin"
        };
        let paranoid = match self.perf_event_paranoid {
            Some(p) if p > 2 => "paranoid3".to_string(),
            Some(p) => format!("paranoid{}", p.max(-1)),
            None => "paranoid-unreadable".to_string(),
        };
        let memlock = match self.memlock_action() {
            MemlockAction::Nothing if self.memlock_soft >= self.memlock_needed() => "memlock-ok",
            MemlockAction::Nothing => "memcg",
            MemlockAction::RaiseSoft => "memlock-soft",
            MemlockAction::RaiseHard => "memlock-hard",
        };
        let cgroup = if self.cgroup2.is_some() {
            "cgroup2"
        } else {
            "nocgroup2"
        };
        format!("{ebpf}.{paranoid}.{memlock}.{cgroup}")
    }

    /// Facts of a typical modern root process, for tests and examples.
    pub fn example() -> EnvFacts {
        EnvFacts {
            kernel_release: "6.1.0-example".into(),
            cap_last_cap: 40,
            permitted: CapSet::all_up_to(40),
            bounding: CapSet::all_up_to(40),
            perf_event_paranoid: Some(2),
            bpf_memcg: None,
            bpf_ringbuf: None,
            memlock_soft: 8 << 20,
            memlock_hard: 8 << 20,
            cgroup2: Some("/sys/fs/cgroup".into()),
            perf_restricted: None,
            bpf_token: None,
        }
    }
}

#[cfg(feature = "probe")]
mod probe_impl {
    use std::fs;

    use super::*;

    /// Why the facts could not be probed. Only the facts every ring depends on are fatal
    /// (the thread's own sets, `cap_last_cap`, the kernel release); the others become
    /// `None` or a conservative default instead.
    #[derive(Debug, thiserror::Error)]
    pub enum ProbeError {
        /// A file the probe cannot do without was unreadable or unparsable.
        #[error("reading {path}: {source}")]
        Read {
            /// The file (`/proc/thread-self/status`, `/proc/sys/kernel/cap_last_cap`, …).
            path: String,
            /// The I/O or parse error.
            #[source]
            source: std::io::Error,
        },
    }

    fn read(path: &str) -> Result<String, ProbeError> {
        fs::read_to_string(path).map_err(|source| ProbeError::Read {
            path: path.into(),
            source,
        })
    }

    /// Symbols that appeared with memcg-based accounting of BPF memory (Linux 5.11).
    const MEMCG_SYMBOLS: [&str; 3] = [
        "bpf_map_kmalloc_node",
        "bpf_map_kzalloc",
        "bpf_map_alloc_percpu",
    ];

    /// Symbols of the BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8).
    const RINGBUF_SYMBOLS: [&str; 3] = [
        "ringbuf_map_alloc",
        "bpf_ringbuf_reserve",
        "bpf_ringbuf_output",
    ];

    /// The kernel's BTF: mapped where sysfs allows it (6.16+), one pass of page faults
    /// instead of some 1,300 reads of 4 KiB (sysfs hands out a page per read: ~4 ms on this
    /// host, ~40 ms under TCG); read otherwise.
    enum KernelBtf {
        Mapped(memmap2::Mmap),
        Read(Vec<u8>),
    }

    impl std::ops::Deref for KernelBtf {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self {
                KernelBtf::Mapped(m) => m,
                KernelBtf::Read(v) => v,
            }
        }
    }

    fn kernel_btf() -> Option<KernelBtf> {
        const PATH: &str = "/sys/kernel/btf/vmlinux";
        let file = fs::File::open(PATH).ok()?;
        // SAFETY: a private, read-only mapping of the kernel's own BTF, which the kernel never
        // changes or truncates while the system runs.
        let mapped = unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) };
        match mapped {
            Ok(m) => Some(KernelBtf::Mapped(m)),
            Err(_) => fs::read(PATH).ok().map(KernelBtf::Read),
        }
    }

    /// Whether the kernel's BTF names `symbol` (BTF strings are NUL-terminated: whole
    /// names only).
    fn btf_names(btf: &[u8], symbol: &str) -> bool {
        let needle = [b"\0", symbol.as_bytes(), b"\0"].concat();
        memchr::memmem::find(btf, &needle).is_some()
    }

    /// (memcg accounting of BPF memory, BPF ring buffer), from the kernel's symbol names.
    fn probe_bpf_symbols(btf: Option<&[u8]>) -> (bool, bool) {
        // Kernel BTF names every global function; kallsyms names them too (addresses need
        // CAP_SYSLOG, names do not). No BPF program is loaded to find out. When the kernel
        // has BTF its answer is final: kallsyms (100k+ lines, seconds under emulation) is
        // read only on kernels built without BTF.
        if let Some(btf) = btf {
            let has = |names: &[&str]| names.iter().any(|s| btf_names(btf, s));
            return (has(&MEMCG_SYMBOLS), has(&RINGBUF_SYMBOLS));
        }
        let (mut memcg, mut ringbuf) = (false, false);
        if let Ok(k) = fs::read_to_string("/proc/kallsyms") {
            for name in k.lines().filter_map(|l| l.rsplit(' ').next()) {
                memcg |= MEMCG_SYMBOLS.contains(&name);
                ringbuf |= RINGBUF_SYMBOLS.contains(&name);
            }
        }
        (memcg, ringbuf)
    }

    fn parse_limit(v: &str) -> Option<u64> {
        if v == "unlimited" {
            Some(UNLIMITED)
        } else {
            v.parse().ok()
        }
    }

    fn probe_memlock() -> (u64, u64) {
        fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
                let mut f = line["Max locked memory".len()..].split_whitespace();
                Some((parse_limit(f.next()?)?, parse_limit(f.next()?)?))
            })
            .unwrap_or((0, 0))
    }

    fn probe_cgroup2() -> Option<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        info.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_string))?
        })
    }

    /// Whether paranoid > 2 reserves perf to cap_sys_admin here (see
    /// [`EnvFacts::perf_restricted`]): false on an Ubuntu build, else whether the kernel's
    /// configuration enables `CONFIG_SECURITY_PERF_EVENTS_RESTRICT` (None when neither
    /// `/proc/config.gz` nor `/boot/config-RELEASE` is readable).
    fn probe_perf_restricted(release: &str) -> Option<bool> {
        use std::io::Read;
        let version = fs::read_to_string("/proc/version").unwrap_or_default();
        if version.contains("Ubuntu") {
            return Some(false);
        }
        let config = fs::read("/proc/config.gz")
            .ok()
            .and_then(|gz| {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_string(&mut text)
                    .ok()
                    .map(|_| text)
            })
            .or_else(|| fs::read_to_string(format!("/boot/config-{release}")).ok())?;
        Some(
            config
                .lines()
                .any(|l| l.trim() == "CONFIG_SECURITY_PERF_EVENTS_RESTRICT=y"),
        )
    }

    /// Reads the running system's facts. Only file reads: no capability is used or changed.
    pub fn probe() -> Result<EnvFacts, ProbeError> {
        let own = crate::sys::own_thread().map_err(|source| ProbeError::Read {
            path: "/proc/thread-self/status".into(),
            source,
        })?;
        let cap_last_cap = crate::sys::cap_last_cap().map_err(|source| ProbeError::Read {
            path: "/proc/sys/kernel/cap_last_cap".into(),
            source,
        })?;
        let (memlock_soft, memlock_hard) = probe_memlock();
        // The kernel's BTF (5 MiB) answers BPF tokens always, and memcg accounting and the
        // ring buffer when the memlock limit could matter.
        let btf = kernel_btf();
        let (bpf_memcg, bpf_ringbuf) = if memlock_soft < MEMLOCK_RINGBUF {
            let (memcg, ringbuf) = probe_bpf_symbols(btf.as_deref());
            (Some(memcg), Some(ringbuf))
        } else {
            (None, None)
        };
        let kernel_release = read("/proc/sys/kernel/osrelease")?.trim().to_string();
        Ok(EnvFacts {
            perf_restricted: probe_perf_restricted(&kernel_release),
            bpf_token: btf.as_deref().map(|b| btf_names(b, "bpf_token_capable")),
            kernel_release,
            cap_last_cap,
            permitted: own.permitted,
            bounding: own.bounding,
            perf_event_paranoid: fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            bpf_memcg,
            bpf_ringbuf,
            memlock_soft,
            memlock_hard,
            cgroup2: probe_cgroup2(),
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn probe_reads_this_machine() {
            let f = super::probe().unwrap();
            assert!(f.cap_last_cap >= 36, "{f:?}");
            assert!(!f.kernel_release.is_empty());
            assert!(f
                .permitted
                .is_subset(crate::caps::CapSet::all_up_to(f.cap_last_cap)));
        }

        /// The mapped BTF is byte for byte what reading the file gives.
        #[test]
        fn the_mapped_btf_is_the_file() {
            let read = std::fs::read("/sys/kernel/btf/vmlinux")
                .expect("this test needs the kernel's BTF at /sys/kernel/btf/vmlinux");
            let btf = super::kernel_btf().expect("the BTF opens");
            assert_eq!(btf.len(), read.len());
            assert!(btf[..] == read[..], "contents differ");
        }
    }
}

#[cfg(feature = "probe")]
pub use probe_impl::{probe, ProbeError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_actions() {
        let mut f = EnvFacts::example();
        assert_eq!(f.memlock_action(), MemlockAction::Nothing);
        f.bpf_memcg = Some(false);
        f.memlock_soft = 64 << 10;
        f.memlock_hard = 64 << 10;
        assert_eq!(f.memlock_action(), MemlockAction::RaiseHard);
        f.memlock_hard = UNLIMITED;
        assert_eq!(f.memlock_action(), MemlockAction::RaiseSoft);
        f.bpf_memcg = Some(true);
        assert_eq!(f.memlock_action(), MemlockAction::Nothing);
    }

    #[test]
    fn the_memlock_need_follows_the_ring_buffer() {
        let mut f = EnvFacts::example();
        f.bpf_memcg = Some(false);
        f.memlock_soft = MEMLOCK_PERF;
        f.memlock_hard = MEMLOCK_PERF;
        // Not probed, or a ring buffer: the larger need.
        assert_eq!(f.memlock_needed(), MEMLOCK_RINGBUF);
        assert_eq!(f.memlock_action(), MemlockAction::RaiseHard);
        f.bpf_ringbuf = Some(true);
        assert_eq!(f.memlock_action(), MemlockAction::RaiseHard);
        f.bpf_ringbuf = Some(false);
        assert_eq!(f.memlock_needed(), MEMLOCK_PERF);
        assert_eq!(f.memlock_action(), MemlockAction::Nothing);
        assert_eq!(f.feature_key(), "capbpf.paranoid2.memlock-ok.cgroup2");
        f.memlock_soft = 64 << 10;
        assert_eq!(f.memlock_action(), MemlockAction::RaiseSoft);
    }

    #[test]
    fn feature_keys() {
        let mut f = EnvFacts::example();
        assert_eq!(f.feature_key(), "capbpf.paranoid2.memlock-ok.cgroup2");
        f.memlock_soft = 64 << 10;
        f.bpf_memcg = Some(true);
        assert_eq!(f.feature_key(), "capbpf.paranoid2.memcg.cgroup2");
        f.perf_event_paranoid = Some(3);
        f.bpf_memcg = Some(false);
        f.memlock_soft = 64 << 10;
        f.memlock_hard = 64 << 10;
        f.permitted.remove(Cap::BPF);
        assert_eq!(f.feature_key(), "sysadmin.paranoid3.memlock-hard.cgroup2");
    }
}
