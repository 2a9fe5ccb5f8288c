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

/// One capability, by number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cap(u8);

impl Cap {
    pub const CHOWN: Cap = Cap(0);
    pub const DAC_OVERRIDE: Cap = Cap(1);
    pub const DAC_READ_SEARCH: Cap = Cap(2);
    pub const KILL: Cap = Cap(5);
    pub const SETPCAP: Cap = Cap(8);
    pub const NET_RAW: Cap = Cap(13);
    pub const NET_ADMIN: Cap = Cap(12);
    pub const IPC_LOCK: Cap = Cap(14);
    pub const SYS_MODULE: Cap = Cap(16);
    pub const SYS_PTRACE: Cap = Cap(19);
    pub const SYS_ADMIN: Cap = Cap(21);
    pub const SYS_RESOURCE: Cap = Cap(24);
    pub const LEASE: Cap = Cap(28);
    pub const SYSLOG: Cap = Cap(34);
    pub const WAKE_ALARM: Cap = Cap(35);
    pub const AUDIT_READ: Cap = Cap(37);
    pub const PERFMON: Cap = Cap(38);
    pub const BPF: Cap = Cap(39);
    pub const CHECKPOINT_RESTORE: Cap = Cap(40);

    /// A capability by number; `None` above 63 (no 64-bit set can hold it).
    pub fn new(number: u8) -> Option<Cap> {
        (number <= LAST_POSSIBLE).then_some(Cap(number))
    }

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapNameError {
    #[error("unknown capability '{given}'{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    Unknown {
        given: String,
        suggestion: Option<String>,
    },
    #[error("capability '{name}' ({number}) is not known to the running kernel {kernel} (its cap_last_cap is {last})")]
    NotOnKernel {
        name: String,
        number: u8,
        kernel: String,
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

/// Parses a name and checks that the running kernel knows it.
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

/// A set of capabilities, as the kernel stores it: one bit per capability.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapSet(u64);

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);

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

    /// Parses the hex masks of `/proc/PID/status` (`CapEff:\t000001ffffffffff`).
    pub fn from_hex(hex: &str) -> Option<CapSet> {
        u64::from_str_radix(hex.trim(), 16).ok().map(CapSet)
    }

    pub fn bits(self) -> u64 {
        self.0
    }

    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn contains(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap.0) != 0
    }

    pub fn insert(&mut self, cap: Cap) {
        self.0 |= 1u64 << cap.0;
    }

    pub fn remove(&mut self, cap: Cap) {
        self.0 &= !(1u64 << cap.0);
    }

    pub fn with(mut self, cap: Cap) -> CapSet {
        self.insert(cap);
        self
    }

    pub fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    pub fn intersection(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    pub fn difference(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    pub fn is_subset(self, other: CapSet) -> bool {
        self.0 & !other.0 == 0
    }

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
