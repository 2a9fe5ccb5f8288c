//! The `--capabilities` grammar as `spec/SPEC.md` states it, written plainly.
//!
//! This is the *model*: the code under test (`capring_spec::options`, `capring_spec::caps`)
//! is never called from here, and this file imports nothing but `std` (a unit test in
//! `lib.rs` reads this file to keep it so). It is written for obviousness, not speed: one
//! function per rule, in the order a reader checks them.
//!
//! # Rules, and the SPEC.md sentence each one comes from
//!
//! | rule | SPEC.md |
//! |---|---|
//! | `help` is a key without a value and asks for the list | `help.lists-kernel-caps`: "`--capabilities help` lists exactly the capabilities the running kernel knows" |
//! | `bypass=1` and `bypass=true` set bypass | `bypass.flag`: "With `--capabilities bypass=1` (or `true`)" |
//! | `bypass=0` and `bypass=false` keep dropping | `bypass.env`: "`0`/`false` keeps dropping" (the flag takes the same values as the variable: "has the same effect as the flag") |
//! | any other bypass value is a usage error | `usage.exit`: "Invalid input (an unknown key, a bad bypass value, …) makes the tracer exit with its usage code" |
//! | `add=LIST` adds to the Required ring, `drop=LIST` removes from it | `add.required`, `drop.required` |
//! | `CAPABILITIES_BYPASS`, `CAPABILITIES_ADD`, `CAPABILITIES_DROP` act like the flags | `bypass.env`: "has the same effect as the flag"; `env.add-drop`: "`CAPABILITIES_ADD` and `CAPABILITIES_DROP` behave like `add=` and `drop=`" |
//! | a key on the command line shadows its variable; other keys still come from the environment | `env.cli-wins`: "A key given on the command line (bypass, add or drop) shadows the same key's environment variable; the other keys still come from the environment"; `bypass.env`: "The flag, when given, wins over the variable" |
//! | names: `cap_x`, `CAP_X`, `x`, and numbers | `usage.exit`: "The reference … accepts `cap_x`, `CAP_X`, `x` and numbers" |
//! | an unknown name is a usage error | `usage.exit`: "an unknown capability … name" |
//! | a name above the running kernel's `cap_last_cap` is a usage error | `help.lists-kernel-caps` defines the capabilities the running kernel knows as "0 through `cap_last_cap`"; any other is unknown to it (`usage.exit`) |
//! | any other key is a usage error | `usage.exit`: "an unknown key"; *Tracee:* "The reference rejects unknown keys" |
//! | a capability both added and dropped, in any spelling, is a usage error | `usage.add-drop-conflict` |
//!
//! # Readings where SPEC.md is silent
//!
//! SPEC.md does not decide these. The model takes the reading below, each is reported to
//! the lead as a sentence SPEC.md should gain, and each is exercised by a unit test here.
//!
//! * **R1, repeated bypass:** the last `bypass=` on the command line wins.
//! * **R2, letter case:** a name matches ignoring ASCII letter case, with or without the
//!   `cap_` prefix (`SYS_ADMIN`, `Cap_Kill`); SPEC.md lists `cap_x`, `CAP_X` and `x` and
//!   says "in any spelling" for conflicts. Keys and bypass values are exact (`ADD=` and
//!   `bypass=True` are usage errors). Non-ASCII letters never fold.
//! * **R3, white space:** white space around a list item, and around a whole variable's
//!   value, is ignored; a command-line value is otherwise taken as written (`bypass= 1` is
//!   a bad value, `CAPABILITIES_BYPASS=" 1 "` means 1).
//! * **R4, empty items:** empty list items are skipped: `add=`, `add=cap_kill,,`.
//! * **R5, empty variables:** a variable that is empty or only white space counts as unset.
//! * **R6, numbers:** ASCII decimal digits only, leading zeros allowed, no sign.
//! * **R7, accumulation:** repeated `add=` (and `drop=`) on the command line accumulate; one
//!   `add=` on the command line, even an empty one, shadows `CAPABILITIES_ADD` entirely.
//! * **R8, a shadowed variable is not read:** a bad value in it is no error.
//! * **R9, usage errors first:** `help` with invalid input elsewhere is a usage error
//!   (`usage.exit` names no exception for `help`).

use std::collections::BTreeSet;

/// The capability names of `include/uapi/linux/capability.h`, by number, without `CAP_`.
pub const NAMED_CAPABILITIES: [(u8, &str); 41] = [
    (0, "chown"),
    (1, "dac_override"),
    (2, "dac_read_search"),
    (3, "fowner"),
    (4, "fsetid"),
    (5, "kill"),
    (6, "setgid"),
    (7, "setuid"),
    (8, "setpcap"),
    (9, "linux_immutable"),
    (10, "net_bind_service"),
    (11, "net_broadcast"),
    (12, "net_admin"),
    (13, "net_raw"),
    (14, "ipc_lock"),
    (15, "ipc_owner"),
    (16, "sys_module"),
    (17, "sys_rawio"),
    (18, "sys_chroot"),
    (19, "sys_ptrace"),
    (20, "sys_pacct"),
    (21, "sys_admin"),
    (22, "sys_boot"),
    (23, "sys_nice"),
    (24, "sys_resource"),
    (25, "sys_time"),
    (26, "sys_tty_config"),
    (27, "mknod"),
    (28, "lease"),
    (29, "audit_write"),
    (30, "audit_control"),
    (31, "setfcap"),
    (32, "mac_override"),
    (33, "mac_admin"),
    (34, "syslog"),
    (35, "wake_alarm"),
    (36, "block_suspend"),
    (37, "audit_read"),
    (38, "perfmon"),
    (39, "bpf"),
    (40, "checkpoint_restore"),
];

/// The three `CAPABILITIES_*` variables as the process sees them (`None` = unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `CAPABILITIES_BYPASS` exactly as set (blanks included; R3 and R5 apply when read).
    pub bypass: Option<String>,
    /// `CAPABILITIES_ADD` exactly as set.
    pub add: Option<String>,
    /// `CAPABILITIES_DROP` exactly as set.
    pub drop: Option<String>,
}

/// Where the bypass setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Neither the command line nor the environment said anything: no bypass.
    Default,
    /// A `bypass=` value on the command line (the last one, R1).
    Cli,
    /// `CAPABILITIES_BYPASS`, read because the command line had no `bypass=`.
    Env,
}

/// What the flags and the environment ask for. Capabilities are numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// A `help` value was given: list the kernel's capabilities.
    pub help: bool,
    /// Run without dropping any capability.
    pub bypass: bool,
    /// Which input decided `bypass`.
    pub bypass_source: Source,
    /// Capability numbers added to the Required ring (each at most `cap_last_cap`).
    pub add: BTreeSet<u8>,
    /// Capability numbers removed from the Required ring; disjoint from `add`.
    pub drop: BTreeSet<u8>,
}

/// Why the input is a usage error (the tracer exits 2). The differential check compares
/// only "accepted or not" with the parser, never which error: the two sides may find a
/// different first fault in the same input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// A command-line value that is not `help`, `bypass=…`, `add=…` or `drop=…` (the
    /// whole value).
    UnknownKey(String),
    /// A bypass value other than `1`, `0`, `true`, `false` (the value).
    BadBypassValue(String),
    /// A list item that names no capability (the item).
    UnknownCapability(String),
    /// A capability number above the running kernel's `cap_last_cap`, named or numbered
    /// (the item).
    NotOnThisKernel(String),
    /// This capability number is both added and dropped (the lowest such number).
    AddedAndDropped(u8),
}

/// Resolves the `--capabilities` values (in command-line order) and the environment on a
/// kernel whose highest capability is `cap_last_cap`.
pub fn resolve<S: AsRef<str>>(
    cli: &[S],
    env: &Environment,
    cap_last_cap: u8,
) -> Result<Resolved, UsageError> {
    // The command line, value by value. `None` means "this key was not given".
    let mut help = false;
    let mut cli_bypass: Option<bool> = None;
    let mut cli_add: Option<BTreeSet<u8>> = None;
    let mut cli_drop: Option<BTreeSet<u8>> = None;
    for value in cli {
        let value = value.as_ref();
        if value == "help" {
            help = true;
            continue;
        }
        let Some((key, rest)) = value.split_once('=') else {
            return Err(UsageError::UnknownKey(value.to_string()));
        };
        match key {
            "bypass" => cli_bypass = Some(bypass_value(rest)?),
            "add" => cli_add
                .get_or_insert_with(BTreeSet::new)
                .extend(capability_list(rest, cap_last_cap)?),
            "drop" => cli_drop
                .get_or_insert_with(BTreeSet::new)
                .extend(capability_list(rest, cap_last_cap)?),
            _ => return Err(UsageError::UnknownKey(value.to_string())),
        }
    }

    // Each key the command line did not give comes from its variable, if that is set.
    let (bypass, bypass_source) = match (cli_bypass, variable(&env.bypass)) {
        (Some(b), _) => (b, Source::Cli),
        (None, Some(v)) => (bypass_value(v)?, Source::Env),
        (None, None) => (false, Source::Default),
    };
    let add = match (cli_add, variable(&env.add)) {
        (Some(set), _) => set,
        (None, Some(v)) => capability_list(v, cap_last_cap)?,
        (None, None) => BTreeSet::new(),
    };
    let drop = match (cli_drop, variable(&env.drop)) {
        (Some(set), _) => set,
        (None, Some(v)) => capability_list(v, cap_last_cap)?,
        (None, None) => BTreeSet::new(),
    };

    if let Some(both) = add.intersection(&drop).next() {
        return Err(UsageError::AddedAndDropped(*both));
    }
    Ok(Resolved {
        help,
        bypass,
        bypass_source,
        add,
        drop,
    })
}

/// A variable's value, or `None` when it is unset, empty or blank (R3, R5).
fn variable(value: &Option<String>) -> Option<&str> {
    let v = value.as_deref()?.trim();
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

fn bypass_value(v: &str) -> Result<bool, UsageError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(UsageError::BadBypassValue(v.to_string())),
    }
}

/// `name[,name…]`; empty items are skipped (R4).
fn capability_list(list: &str, cap_last_cap: u8) -> Result<BTreeSet<u8>, UsageError> {
    let mut set = BTreeSet::new();
    for item in list.split(',') {
        let item = item.trim();
        if !item.is_empty() {
            set.insert(capability(item, cap_last_cap)?);
        }
    }
    Ok(set)
}

/// One capability: `cap_x`, `CAP_X`, `x` in any ASCII case (R2), or a number (R6); it must
/// be one the running kernel knows.
fn capability(item: &str, cap_last_cap: u8) -> Result<u8, UsageError> {
    let number = if item.bytes().all(|b| b.is_ascii_digit()) {
        // More than 255 is above every kernel's cap_last_cap.
        item.parse::<u8>()
            .map_err(|_| UsageError::NotOnThisKernel(item.to_string()))?
    } else {
        // `cap_x` is `x` with the prefix (no name itself starts with `cap_`).
        let bare = match item.get(..4) {
            Some(prefix) if prefix.eq_ignore_ascii_case("cap_") => &item[4..],
            _ => item,
        };
        NAMED_CAPABILITIES
            .iter()
            .find(|(_, name)| bare.eq_ignore_ascii_case(name))
            .map(|(number, _)| *number)
            .ok_or_else(|| UsageError::UnknownCapability(item.to_string()))?
    };
    if number > cap_last_cap {
        return Err(UsageError::NotOnThisKernel(item.to_string()));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(bypass: Option<&str>, add: Option<&str>, drop: Option<&str>) -> Environment {
        Environment {
            bypass: bypass.map(Into::into),
            add: add.map(Into::into),
            drop: drop.map(Into::into),
        }
    }

    fn ok(cli: &[&str], e: Environment) -> Resolved {
        resolve(cli, &e, 40).unwrap()
    }

    fn set(numbers: &[u8]) -> BTreeSet<u8> {
        numbers.iter().copied().collect()
    }

    #[test]
    fn names_are_numbered_like_the_kernel_header() {
        for (i, (n, name)) in NAMED_CAPABILITIES.iter().enumerate() {
            assert_eq!(usize::from(*n), i);
            assert!(!name.starts_with("cap_"), "{name}");
        }
    }

    #[test]
    fn spellings() {
        for spelling in ["cap_sys_admin", "CAP_SYS_ADMIN", "sys_admin", "21"] {
            assert_eq!(
                ok(&[&format!("add={spelling}")], env(None, None, None)).add,
                set(&[21])
            );
        }
        // R2: any ASCII case; R6: leading zeros.
        for spelling in ["SYS_ADMIN", "Cap_Sys_Admin", "021"] {
            assert_eq!(
                ok(&[&format!("add={spelling}")], env(None, None, None)).add,
                set(&[21])
            );
        }
        for bad in [
            "cap_",
            "cap_cap_kill",
            "+5",
            "-1",
            "sys-admin",
            "capkill",
            "ca\u{17f}_kill",
        ] {
            assert!(
                resolve(&[format!("add={bad}")], &Environment::default(), 40).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_running_kernel_bounds_names() {
        assert!(resolve(&["add=cap_bpf"], &Environment::default(), 38).is_err());
        assert!(resolve(&["add=cap_bpf"], &Environment::default(), 39).is_ok());
        assert!(resolve(&["add=41"], &Environment::default(), 40).is_err());
        assert_eq!(
            resolve(&["add=41"], &Environment::default(), 41)
                .unwrap()
                .add,
            set(&[41])
        );
        assert!(resolve(&["add=256"], &Environment::default(), 63).is_err());
    }

    #[test]
    fn bypass_values_and_sources() {
        assert!(ok(&["bypass=true"], env(None, None, None)).bypass);
        assert!(!ok(&["bypass=1", "bypass=false"], env(None, None, None)).bypass); // R1
        for bad in [
            "bypass=yes",
            "bypass=True",
            "bypass=",
            "bypass= 1",
            "bypass",
        ] {
            assert!(
                resolve(&[bad], &Environment::default(), 40).is_err(),
                "{bad}"
            );
        }
        let r = ok(&[], env(Some(" 1 "), None, None)); // R3
        assert_eq!((r.bypass, r.bypass_source), (true, Source::Env));
        let r = ok(&[], env(Some("  "), None, None)); // R5
        assert_eq!((r.bypass, r.bypass_source), (false, Source::Default));
        let r = ok(&["bypass=0"], env(Some("nonsense"), None, None)); // R8
        assert_eq!((r.bypass, r.bypass_source), (false, Source::Cli));
        assert!(resolve(&[] as &[&str], &env(Some("yes"), None, None), 40).is_err());
    }

    #[test]
    fn the_command_line_shadows_key_by_key() {
        let e = env(Some("1"), Some("kill"), Some("chown"));
        let r = ok(&["add=lease"], e.clone());
        assert_eq!((r.bypass, r.add, r.drop), (true, set(&[28]), set(&[0])));
        let r = ok(&["add="], e.clone()); // R7
        assert_eq!((r.add, r.drop), (set(&[]), set(&[0])));
        let r = ok(&["add=kill", "add=lease,,"], env(None, None, None)); // R4, R7
        assert_eq!(r.add, set(&[5, 28]));
        // R8: a bad variable counts only when it is read.
        assert!(resolve(&["add=kill"], &env(None, Some("nope"), None), 40).is_ok());
        assert!(resolve(&["drop=kill"], &env(None, Some("nope"), None), 40).is_err());
    }

    #[test]
    fn conflicts_in_any_spelling_and_from_any_source() {
        assert_eq!(
            resolve(&["add=cap_kill", "drop=KILL"], &Environment::default(), 40),
            Err(UsageError::AddedAndDropped(5))
        );
        assert!(resolve(&["add=5"], &env(None, None, Some("Cap_Kill")), 40).is_err());
        // A shadowed variable cannot conflict.
        assert!(resolve(&["drop=chown"], &env(None, None, Some("kill")), 40).is_ok());
        assert!(resolve(
            &["help", "add=kill", "drop=kill"],
            &Environment::default(),
            40
        )
        .is_err()); // R9
    }

    #[test]
    fn unknown_keys() {
        for bad in ["frob=1", "ADD=kill", "help=1", " help", "add"] {
            assert!(
                resolve(&[bad], &Environment::default(), 40).is_err(),
                "{bad}"
            );
        }
        assert!(ok(&["help", "help"], env(None, None, None)).help);
    }
}
