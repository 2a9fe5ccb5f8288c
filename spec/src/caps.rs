//! The capability universe: numbers, canonical names, parsing and a compact set type.
//!
//! Linux knows capabilities 0..=40 today (`cap_chown` … `cap_checkpoint_restore`). A newer
//! kernel may know more; those are "numbered unknowns" written as decimal numbers (`41`).
//! Whether a capability exists on *this* kernel is decided by `cap_last_cap`, never by a
//! version string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Canonical names, indexed by capability number (without the `cap_` prefix).
pub const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Highest capability number that has a name.
pub const LAST_NAMED: u8 = 40;
/// Highest capability number a 64-bit set can hold.
pub const LAST_POSSIBLE: u8 = 63;

/// One capability, by its kernel number (the bit it occupies in a [`CapSet`]).
///
/// Always 0..=[`LAST_POSSIBLE`]: [`Cap::new`] and [`parse_name`] refuse larger numbers.
/// Whether the running kernel knows it is a separate question ([`parse_on_kernel`]).
/// Debug, Display and serde all use the canonical name (`cap_bpf`, or `41` for an unknown).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cap(u8);

/// The capabilities capring's code names (the others are reached through [`NAMES`] or
/// [`parse_name`]). Each line: what the kernel grants with it (capabilities(7)), and where
/// it matters to tracers.
impl Cap {
    /// `cap_chown` (0): change the owner of any file.
    pub const CHOWN: Cap = Cap(0);
    /// `cap_dac_override` (1): bypass file read, write and execute permission checks.
    pub const DAC_OVERRIDE: Cap = Cap(1);
    /// `cap_dac_read_search` (2): bypass file read and directory search checks (reading
    /// another user's `/proc` files, for instance).
    pub const DAC_READ_SEARCH: Cap = Cap(2);
    /// `cap_kill` (5): send signals to any process. No event needs it, so scenarios use it
    /// as a harmless capability to `add` or `drop`.
    pub const KILL: Cap = Cap(5);
    /// `cap_setpcap` (8): drop capabilities from the bounding set (`PR_CAPBSET_DROP`). When
    /// usable at start, the tracer empties its bounding set (`ring.bounding.cleared`).
    pub const SETPCAP: Cap = Cap(8);
    /// `cap_net_raw` (13): open raw and packet sockets (a privileged operation).
    pub const NET_RAW: Cap = Cap(13);
    /// `cap_net_admin` (12): network administration; the kernel asks for it to load and
    /// attach BPF network programs such as cgroup_skb.
    pub const NET_ADMIN: Cap = Cap(12);
    /// `cap_ipc_lock` (14): lock memory beyond `RLIMIT_MEMLOCK` (Tracee adds it always).
    pub const IPC_LOCK: Cap = Cap(14);
    /// `cap_sys_module` (16): load and unload kernel modules (a privileged operation).
    pub const SYS_MODULE: Cap = Cap(16);
    /// `cap_sys_ptrace` (19): trace or inspect any process; opening `/proc/PID/exe` of a
    /// process with more capabilities needs it (the reference's per-event Requested ring).
    pub const SYS_PTRACE: Cap = Cap(19);
    /// `cap_sys_admin` (21): the catch-all. Before cap_bpf/cap_perfmon (5.8) the only way to
    /// load tracing programs; on kernels with Debian's perf restriction, the only way to
    /// open perf events at `perf_event_paranoid` > 2.
    pub const SYS_ADMIN: Cap = Cap(21);
    /// `cap_sys_resource` (24): raise a hard resource limit; needed only when
    /// `RLIMIT_MEMLOCK`'s hard limit is below what the BPF objects are charged.
    pub const SYS_RESOURCE: Cap = Cap(24);
    /// `cap_lease` (28): take file leases. Unused by every event: a spare for scenarios.
    pub const LEASE: Cap = Cap(28);
    /// `cap_syslog` (34): see real kernel addresses in `/proc/kallsyms` (`kptr_restrict`);
    /// the reference raises it once at start-up for module_load.
    pub const SYSLOG: Cap = Cap(34);
    /// `cap_wake_alarm` (35): set wake-up alarms. Unused by every event: a spare for
    /// scenarios.
    pub const WAKE_ALARM: Cap = Cap(35);
    /// `cap_audit_read` (37): read the audit log by multicast netlink; the highest
    /// capability of kernels before 5.8 (`cap_last_cap` 37).
    pub const AUDIT_READ: Cap = Cap(37);
    /// `cap_perfmon` (38, Linux 5.8): perf events and, with cap_bpf, tracing BPF programs.
    pub const PERFMON: Cap = Cap(38);
    /// `cap_bpf` (39, Linux 5.8): create maps and load programs, the eBPF base with
    /// cap_perfmon.
    pub const BPF: Cap = Cap(39);
    /// `cap_checkpoint_restore` (40, Linux 5.9): the highest named capability
    /// ([`LAST_NAMED`]).
    pub const CHECKPOINT_RESTORE: Cap = Cap(40);

    /// A capability by number; `None` above 63 (no 64-bit set can hold it).
    pub fn new(number: u8) -> Option<Cap> {
        (number <= LAST_POSSIBLE).then_some(Cap(number))
    }

    /// The kernel's number for it: its bit in a [`CapSet`], its line in `--capabilities
    /// help`.
    pub fn number(self) -> u8 {
        self.0
    }

    /// Canonical lowercase name (`cap_sys_admin`), or the decimal number for unknowns.
    pub fn name(self) -> String {
        match NAMES.get(self.0 as usize) {
            Some(n) => format!("cap_{n}"),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Debug for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Cap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Cap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_name(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a capability name was refused.
///
/// Each message is one line, made to be printed as a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapNameError {
    /// Neither a known name in any accepted spelling nor a number 0..=63.
    #[error("unknown capability '{given}'{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        /// The text as the user wrote it (white space included).
        given: String,
        /// The closest canonical name (`cap_sys_admin`) when one is close enough to be a
        /// likely typo; `None` for numbers and for text nothing resembles.
        suggestion: Option<String>,
    },
    /// A valid capability above the running kernel's `cap_last_cap` (`cap_bpf` on 5.4).
    #[error("capability '{name}' ({number}) is not known to the running kernel {kernel} (its cap_last_cap is {last})")]
    NotOnKernel {
        /// Canonical name, as [`Cap::name`] gives it.
        name: String,
        /// Its kernel number.
        number: u8,
        /// The running kernel's release (`uname -r`), so the message says which kernel.
        kernel: String,
        /// The kernel's `cap_last_cap`: the highest number it knows.
        last: u8,
    },
}

/// Parses one capability name without looking at the running kernel.
///
/// Accepted: `cap_sys_admin`, `CAP_SYS_ADMIN`, `sys_admin`, `SYS_ADMIN`, and decimal numbers
/// 0..=63. Surrounding white space is ignored. An unknown name suggests the closest one.
pub fn parse_name(given: &str) -> Result<Cap, CapNameError> {
    let trimmed = given.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u8>()
            .ok()
            .and_then(Cap::new)
            .ok_or_else(|| CapNameError::Unknown {
                given: given.to_string(),
                suggestion: None,
            });
    }
    let lower = trimmed.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    if let Some(i) = NAMES.iter().position(|n| *n == bare) {
        return Ok(Cap(i as u8));
    }
    let suggestion = NAMES
        .iter()
        .map(|n| (strsim::levenshtein(n, bare), *n))
        .min()
        .filter(|(d, _)| {
            bare.bytes().any(|b| b.is_ascii_alphabetic()) && *d <= 2.max(bare.len() / 3)
        })
        .map(|(_, n)| format!("cap_{n}"));
    Err(CapNameError::Unknown {
        given: given.to_string(),
        suggestion,
    })
}

/// Parses a name and checks that the running kernel knows it: its number is at most
/// `cap_last_cap`. `kernel` (the release) only goes into the error message.
pub fn parse_on_kernel(given: &str, cap_last_cap: u8, kernel: &str) -> Result<Cap, CapNameError> {
    let cap = parse_name(given)?;
    if cap.0 > cap_last_cap {
        return Err(CapNameError::NotOnKernel {
            name: cap.name(),
            number: cap.0,
            kernel: kernel.to_string(),
            last: cap_last_cap,
        });
    }
    Ok(cap)
}

/// A set of capabilities, as the kernel stores it: bit n (value `1 << n`) is capability
/// number n, so the `u64` is the same mask as `/proc/PID/status`'s `CapEff:` line and
/// capset(2)'s two 32-bit words (low word first).
///
/// `Display` is `{cap_bpf, cap_perfmon}`-style (lowest number first); serde writes a list
/// of names. Order (`Ord`) is the numeric order of the masks: arbitrary but stable, used to
/// sort and deduplicate sets.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapSet(u64);

impl CapSet {
    /// No capability: the Unprivileged ring's E.
    pub const EMPTY: CapSet = CapSet(0);

    /// The set whose mask is `bits` (bit n = capability n); every `u64` is a valid set.
    pub fn from_bits(bits: u64) -> CapSet {
        CapSet(bits)
    }

    /// Every capability 0..=last (the full set of a kernel with that `cap_last_cap`).
    pub fn all_up_to(last: u8) -> CapSet {
        let last = last.min(LAST_POSSIBLE);
        if last == 63 {
            CapSet(u64::MAX)
        } else {
            CapSet((1u64 << (last + 1)) - 1)
        }
    }

    /// The set of the named capabilities, in any spelling [`parse_name`] accepts; the first
    /// name it rejects is the error.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<CapSet, CapNameError> {
        names.into_iter().map(parse_name).collect()
    }

    /// Parses the hex masks of `/proc/PID/status` (`CapEff:\t000001ffffffffff`).
    pub fn from_hex(hex: &str) -> Option<CapSet> {
        u64::from_str_radix(hex.trim(), 16).ok().map(CapSet)
    }

    /// The mask (bit n = capability n), for capset(2) and comparisons with raw kernel data.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// The mask as 16 lowercase hex digits, the way `/proc/PID/status` prints it.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    /// No capability in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many capabilities the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether `cap`'s bit is set.
    pub fn contains(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap.0) != 0
    }

    /// Adds `cap` (no effect when it is already there).
    pub fn insert(&mut self, cap: Cap) {
        self.0 |= 1u64 << cap.0;
    }

    /// Removes `cap` (no effect when it is absent).
    pub fn remove(&mut self, cap: Cap) {
        self.0 &= !(1u64 << cap.0);
    }

    /// This set plus `cap`, by value: `CapSet::EMPTY.with(Cap::BPF)` builds a set in one
    /// expression.
    pub fn with(mut self, cap: Cap) -> CapSet {
        self.insert(cap);
        self
    }

    /// Capabilities in either set.
    pub fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    /// Capabilities in both sets.
    pub fn intersection(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    /// Capabilities of this set that are not in `other` (`self − other`).
    pub fn difference(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    /// Every capability of this set is in `other` (the kernel's E ⊆ P rule is
    /// `effective.is_subset(permitted)`).
    pub fn is_subset(self, other: CapSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The capabilities in the set, lowest number first.
    pub fn iter(self) -> impl Iterator<Item = Cap> {
        (0..=LAST_POSSIBLE)
            .filter(move |i| self.0 & (1u64 << i) != 0)
            .map(Cap)
    }

    /// Canonical names, lowest number first.
    pub fn names(self) -> Vec<String> {
        self.iter().map(Cap::name).collect()
    }
}

impl FromIterator<Cap> for CapSet {
    fn from_iter<I: IntoIterator<Item = Cap>>(iter: I) -> Self {
        let mut set = CapSet::EMPTY;
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Debug for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// `{cap_bpf, cap_perfmon}`, or `{}` for the empty set.
impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.names().join(", "))
    }
}

impl Serialize for CapSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for CapSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let caps = Vec::<Cap>::deserialize(d)?;
        Ok(caps.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn a_set_from_names_takes_every_spelling_and_names_the_bad_one() {
        let set = CapSet::from_names(["cap_kill", "CAP_BPF", "perfmon"]).unwrap();
        assert_eq!(
            set,
            CapSet::EMPTY
                .with(Cap::KILL)
                .with(Cap::BPF)
                .with(Cap::PERFMON)
        );
        let err = CapSet::from_names(["cap_kill", "frobnicate"]).unwrap_err();
        assert!(err.to_string().contains("frobnicate"), "{err}");
    }

    #[rstest]
    #[case("cap_sys_admin", 21)]
    #[case("CAP_SYS_ADMIN", 21)]
    #[case("sys_admin", 21)]
    #[case("SYS_ADMIN", 21)]
    #[case(" cap_bpf ", 39)]
    #[case("0", 0)]
    #[case("40", 40)]
    #[case("41", 41)]
    #[case("cap_checkpoint_restore", 40)]
    fn accepted_spellings(#[case] given: &str, #[case] number: u8) {
        assert_eq!(parse_name(given).unwrap().number(), number);
    }

    #[rstest]
    #[case("cap_sys_admn", Some("cap_sys_admin"))]
    #[case("CAP_NETADMIN", Some("cap_net_admin"))]
    #[case("cap_bfp", Some("cap_bpf"))]
    #[case("zzzzzzzzzzzzzzzzzz", None)]
    #[case("64", None)]
    #[case("", None)]
    #[case("-1", None)]
    fn unknown_names_suggest_the_closest(#[case] given: &str, #[case] suggestion: Option<&str>) {
        match parse_name(given) {
            Err(CapNameError::Unknown { suggestion: s, .. }) => {
                assert_eq!(s.as_deref(), suggestion)
            }
            other => panic!("{given:?} gave {other:?}"),
        }
    }

    #[test]
    fn names_above_cap_last_cap_name_the_kernel() {
        let err = parse_on_kernel("cap_bpf", 37, "5.4.0-test").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("5.4.0-test"), "{text}");
        assert!(text.contains("cap_bpf"), "{text}");
        assert!(parse_on_kernel("cap_bpf", 40, "6.1").is_ok());
    }

    #[test]
    fn sets_print_and_parse_like_proc() {
        let set = CapSet::from_hex("000001fffeffffff").unwrap();
        assert_eq!(set.len(), 40);
        assert!(!set.contains(Cap::SYS_RESOURCE));
        assert_eq!(set.hex(), "000001fffeffffff");
        assert_eq!(CapSet::all_up_to(40).bits(), 0x1ff_ffff_ffff);
        let two: CapSet = [Cap::BPF, Cap::PERFMON].into_iter().collect();
        assert_eq!(two.to_string(), "{cap_perfmon, cap_bpf}");
        assert_eq!(CapSet::EMPTY.to_string(), "{}");
    }

    #[test]
    fn every_name_round_trips() {
        for n in 0..=LAST_POSSIBLE {
            let cap = Cap::new(n).unwrap();
            assert_eq!(parse_name(&cap.name()).unwrap(), cap);
        }
    }
}
