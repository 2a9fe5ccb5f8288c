//! The `--capabilities` grammar and the `CAPABILITIES_*` environment variables.
//!
//! ```text
//! --capabilities help            list the capabilities of the running kernel, exit 0
//! --capabilities bypass=1|0|true|false   last one wins
//! --capabilities add=LIST        LIST = name[,name…]; repeatable, accumulates
//! --capabilities drop=LIST       same
//! ```
//! `CAPABILITIES_BYPASS`, `CAPABILITIES_ADD` and `CAPABILITIES_DROP` apply unless the same
//! key was given on the command line (an empty variable counts as unset, so the container
//! idiom `add=$CAPABILITIES_ADD` works). Parsing happens in two steps: [`parse`] checks the
//! syntax, [`CapabilityArgs::resolve`] turns names into capabilities against the running
//! kernel's `cap_last_cap` and rejects conflicts.

use serde::Serialize;

use crate::caps::{self, Cap, CapNameError, CapSet};

/// The container spelling of `bypass=` (`1`, `0`, `true` or `false`).
pub const ENV_BYPASS: &str = "CAPABILITIES_BYPASS";
/// The container spelling of `add=` (a comma-separated list).
pub const ENV_ADD: &str = "CAPABILITIES_ADD";
/// The container spelling of `drop=` (a comma-separated list).
pub const ENV_DROP: &str = "CAPABILITIES_DROP";

/// A one-line usage error: the tracer exits 2 with this text.
///
/// "Origin" fields say where the bad input was written, in the user's terms: a whole
/// command-line value (`--capabilities add=cap_kill`), `--capabilities`, or a variable name
/// (`CAPABILITIES_DROP`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A `--capabilities` value that is not `help`, `bypass=…`, `add=…` or `drop=…` (keys
    /// are exact: `BYPASS=1` is unknown).
    #[error("--capabilities: unknown key '{given}' (expected help, bypass=, add= or drop=)")]
    UnknownKey {
        /// The whole value as written.
        given: String,
    },
    /// A bare `bypass` without `=VALUE`.
    #[error("--capabilities: bypass needs a value: bypass=1|0|true|false")]
    BypassWithoutValue,
    /// A bypass value other than exactly `1`, `0`, `true` or `false`.
    #[error("{origin}: bad bypass value '{value}' (expected 1, 0, true or false)")]
    BadBypass {
        /// `--capabilities` or [`ENV_BYPASS`].
        origin: String,
        /// The value as written (trimmed when it came from the variable).
        value: String,
    },
    /// A list item that is not a capability, or not one the running kernel knows.
    #[error("{origin}: {source}")]
    BadName {
        /// The command-line value or variable that holds the item.
        origin: String,
        /// What is wrong with the name (with a suggestion when there is one).
        #[source]
        source: CapNameError,
    },
    /// The same capability, in whatever spelling, is both added and dropped.
    #[error("capability {cap} is both added and dropped ({add_origin} and {drop_origin})")]
    AddAndDrop {
        /// The capability (its canonical name is printed).
        cap: Cap,
        /// Where it was added (the first such item).
        add_origin: String,
        /// Where it was dropped (the first such item).
        drop_origin: String,
    },
    /// A selected event the catalog does not have (raised by
    /// [`crate::oracle::check_events`], not by this module).
    #[error("unknown event '{given}'{}", suggestion.as_ref().map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default())]
    UnknownEvent {
        /// The event name as given.
        given: String,
        /// The closest catalog name, when one is close ([`crate::catalog::Catalog::suggest`]).
        suggestion: Option<String>,
    },
    /// Any other usage error, already worded as its one line (no event selected, for
    /// instance).
    #[error("{0}")]
    Other(String),
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Neither the command line nor the environment set it: no bypass.
    Default,
    /// A `--capabilities bypass=` value (the last one).
    Cli,
    /// [`ENV_BYPASS`], read because no `bypass=` was on the command line.
    Env,
}

/// The three environment variables, as read, unparsed: `None` = unset. [`parse`] also
/// treats an empty or blank value as unset and trims the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapEnv {
    /// [`ENV_BYPASS`].
    pub bypass: Option<String>,
    /// [`ENV_ADD`].
    pub add: Option<String>,
    /// [`ENV_DROP`].
    pub drop: Option<String>,
}

impl CapEnv {
    /// Builds from any lookup (a real environment, a test map, a harness profile).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> CapEnv {
        CapEnv {
            bypass: get(ENV_BYPASS),
            add: get(ENV_ADD),
            drop: get(ENV_DROP),
        }
    }
}

/// A list item together with where it was written (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedItem {
    /// The capability name as written, blanks around it removed; not yet checked.
    pub name: String,
    /// The whole command-line value (`--capabilities add=cap_kill,cap_lease`) or the
    /// variable name ([`ENV_ADD`], [`ENV_DROP`]).
    pub origin: String,
}

/// The syntax-checked, not yet resolved, capability arguments: command line and
/// environment already merged key by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityArgs {
    /// A `help` value was given (anywhere among the values).
    pub help: bool,
    /// Whether to skip dropping, after the merge (false when nothing set it).
    pub bypass: bool,
    /// Which input decided [`CapabilityArgs::bypass`].
    pub bypass_source: Source,
    /// Items to add, in input order: every `add=` value's items, or [`ENV_ADD`]'s when no
    /// `add=` was given. Duplicates are kept until [`CapabilityArgs::resolve`].
    pub add: Vec<NamedItem>,
    /// Items to drop, gathered like [`CapabilityArgs::add`].
    pub drop: Vec<NamedItem>,
}

/// Parses a bypass value: exactly `1`, `0`, `true` or `false`.
pub fn parse_bypass(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn split_list(list: &str, origin: &str, into: &mut Vec<NamedItem>) {
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        into.push(NamedItem {
            name: item.to_string(),
            origin: origin.to_string(),
        });
    }
}

/// Parses every `--capabilities` value (in order) and merges the environment.
pub fn parse<S: AsRef<str>>(values: &[S], env: &CapEnv) -> Result<CapabilityArgs, UsageError> {
    let mut args = CapabilityArgs {
        help: false,
        bypass: false,
        bypass_source: Source::Default,
        add: Vec::new(),
        drop: Vec::new(),
    };
    let (mut add_given, mut drop_given) = (false, false);
    for value in values {
        let value = value.as_ref();
        let origin = format!("--capabilities {value}");
        match value.split_once('=') {
            None if value == "help" => args.help = true,
            None if value == "bypass" => return Err(UsageError::BypassWithoutValue),
            Some(("bypass", v)) => {
                args.bypass = parse_bypass(v).ok_or_else(|| UsageError::BadBypass {
                    origin: "--capabilities".into(),
                    value: v.into(),
                })?;
                args.bypass_source = Source::Cli;
            }
            Some(("add", list)) => {
                add_given = true;
                split_list(list, &origin, &mut args.add);
            }
            Some(("drop", list)) => {
                drop_given = true;
                split_list(list, &origin, &mut args.drop);
            }
            _ => {
                return Err(UsageError::UnknownKey {
                    given: value.to_string(),
                })
            }
        }
    }
    let set = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if args.bypass_source == Source::Default {
        if let Some(v) = set(&env.bypass) {
            args.bypass = parse_bypass(&v).ok_or_else(|| UsageError::BadBypass {
                origin: ENV_BYPASS.into(),
                value: v.clone(),
            })?;
            args.bypass_source = Source::Env;
        }
    }
    if !add_given {
        if let Some(v) = set(&env.add) {
            split_list(&v, ENV_ADD, &mut args.add);
        }
    }
    if !drop_given {
        if let Some(v) = set(&env.drop) {
            split_list(&v, ENV_DROP, &mut args.drop);
        }
    }
    Ok(args)
}

/// Resolved capability options: what the oracle and the tracers act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CapOptions {
    /// List the kernel's capabilities and exit 0; the oracle answers this before looking
    /// at events.
    pub help: bool,
    /// Keep every permitted capability effective for the whole run (no drop at all).
    pub bypass: bool,
    /// Which input decided [`CapOptions::bypass`] (reports show it).
    pub bypass_source: Source,
    /// Capabilities added to the Required ring; all known to the running kernel, none in
    /// [`CapOptions::drop`].
    pub add: CapSet,
    /// Capabilities removed from the Required ring, and never raised for a Requested
    /// operation either.
    pub drop: CapSet,
}

impl CapabilityArgs {
    /// Resolves names against the running kernel and rejects a capability that is both
    /// added and dropped (whatever its spelling).
    pub fn resolve(&self, cap_last_cap: u8, kernel: &str) -> Result<CapOptions, UsageError> {
        fn resolve_all<'a>(
            items: &'a [NamedItem],
            cap_last_cap: u8,
            kernel: &str,
        ) -> Result<Vec<(Cap, &'a NamedItem)>, UsageError> {
            items
                .iter()
                .map(|i| {
                    caps::parse_on_kernel(&i.name, cap_last_cap, kernel)
                        .map(|c| (c, i))
                        .map_err(|source| UsageError::BadName {
                            origin: i.origin.clone(),
                            source,
                        })
                })
                .collect()
        }
        let add = resolve_all(&self.add, cap_last_cap, kernel)?;
        let drop = resolve_all(&self.drop, cap_last_cap, kernel)?;
        for (cap, a) in &add {
            if let Some((_, d)) = drop.iter().find(|(c, _)| c == cap) {
                return Err(UsageError::AddAndDrop {
                    cap: *cap,
                    add_origin: a.origin.clone(),
                    drop_origin: d.origin.clone(),
                });
            }
        }
        Ok(CapOptions {
            help: self.help,
            bypass: self.bypass,
            bypass_source: self.bypass_source,
            add: add.iter().map(|(c, _)| *c).collect(),
            drop: drop.iter().map(|(c, _)| *c).collect(),
        })
    }
}

/// Parse and resolve in one step.
pub fn parse_and_resolve<S: AsRef<str>>(
    values: &[S],
    env: &CapEnv,
    cap_last_cap: u8,
    kernel: &str,
) -> Result<CapOptions, UsageError> {
    parse(values, env)?.resolve(cap_last_cap, kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn env(b: Option<&str>, a: Option<&str>, d: Option<&str>) -> CapEnv {
        CapEnv {
            bypass: b.map(Into::into),
            add: a.map(Into::into),
            drop: d.map(Into::into),
        }
    }

    fn ok(values: &[&str], e: CapEnv) -> CapOptions {
        parse_and_resolve(values, &e, 40, "test").unwrap()
    }

    fn set(names: &[&str]) -> CapSet {
        CapSet::from_names(names.iter().copied()).unwrap()
    }

    // Seed: "the --capabilities bypass=1 flag can be used"
    #[rstest]
    #[case(&["bypass=1"], true)]
    #[case(&["bypass=true"], true)]
    #[case(&["bypass=0"], false)]
    #[case(&["bypass=false"], false)]
    #[case(&[], false)]
    // last one wins (Tracee HEAD keeps an earlier true: fixed here)
    #[case(&["bypass=1", "bypass=0"], false)]
    #[case(&["bypass=0", "bypass=true"], true)]
    fn bypass_values(#[case] values: &[&str], #[case] expected: bool) {
        assert_eq!(ok(values, CapEnv::default()).bypass, expected);
    }

    // Seed: "the environment variable CAPABILITIES_BYPASS=0|1 will have the same effect"
    #[rstest]
    #[case(Some("1"), &[], true, Source::Env)]
    #[case(Some("true"), &[], true, Source::Env)]
    #[case(Some("0"), &[], false, Source::Env)]
    #[case(Some(""), &[], false, Source::Default)]
    #[case(Some("1"), &["bypass=0"], false, Source::Cli)]
    #[case(Some("0"), &["bypass=1"], true, Source::Cli)]
    fn bypass_env(
        #[case] value: Option<&str>,
        #[case] cli: &[&str],
        #[case] expected: bool,
        #[case] source: Source,
    ) {
        let o = ok(cli, env(value, None, None));
        assert_eq!((o.bypass, o.bypass_source), (expected, source));
    }

    // Seed: "--capabilities add=cap_X,cap_Y (docker env variable CAPABILITIES_ADD)"
    // Seed: "--capabilities drop=cap_Y,capZ (docker env variable CAPABILITIES_DROP)"
    #[rstest]
    #[case(&["add=cap_kill,cap_syslog"], env(None, None, None), &["cap_kill", "cap_syslog"], &[])]
    #[case(&["add=cap_kill", "add=CAP_SYSLOG"], env(None, None, None), &["cap_kill", "cap_syslog"], &[])]
    #[case(&["drop=cap_chown"], env(None, None, None), &[], &["cap_chown"])]
    #[case(&["add=", "drop="], env(None, None, None), &[], &[])]
    #[case(&["add=cap_kill,,cap_kill"], env(None, None, None), &["cap_kill"], &[])]
    #[case(&[], env(None, Some("cap_kill,sys_ptrace"), Some("chown")), &["cap_kill", "cap_sys_ptrace"], &["cap_chown"])]
    // the command line wins over the environment, key by key
    #[case(&["add=cap_kill"], env(None, Some("cap_syslog"), Some("cap_chown")), &["cap_kill"], &["cap_chown"])]
    #[case(&["drop=cap_fowner"], env(None, Some("cap_syslog"), Some("cap_chown")), &["cap_syslog"], &["cap_fowner"])]
    // an explicitly empty add= on the command line still shadows the environment
    #[case(&["add="], env(None, Some("cap_syslog"), None), &[], &[])]
    fn add_and_drop(
        #[case] values: &[&str],
        #[case] e: CapEnv,
        #[case] add: &[&str],
        #[case] drop: &[&str],
    ) {
        let o = ok(values, e);
        assert_eq!((o.add, o.drop), (set(add), set(drop)));
    }

    #[rstest]
    #[case(&["bypass=yes"], env(None, None, None), "bad bypass value 'yes'")]
    #[case(&["bypass=True"], env(None, None, None), "bad bypass value 'True'")]
    #[case(&["bypass="], env(None, None, None), "bad bypass value ''")]
    #[case(&["bypass"], env(None, None, None), "bypass needs a value")]
    #[case(&["frobnicate=1"], env(None, None, None), "unknown key 'frobnicate=1'")]
    #[case(&["cap_sys_admin"], env(None, None, None), "unknown key 'cap_sys_admin'")]
    #[case(&["BYPASS=1"], env(None, None, None), "unknown key 'BYPASS=1'")]
    #[case(&[], env(Some("yes"), None, None), "CAPABILITIES_BYPASS: bad bypass value 'yes'")]
    #[case(&["add=cap_sys_admn"], env(None, None, None), "did you mean 'cap_sys_admin'")]
    #[case(&[], env(None, Some("cap_nope_nope_nope_x"), None), "CAPABILITIES_ADD: unknown capability")]
    #[case(&["add=cap_kill", "drop=CAP_KILL"], env(None, None, None), "cap_kill is both added and dropped")]
    #[case(&["add=cap_kill"], env(None, None, Some("kill")), "(--capabilities add=cap_kill and CAPABILITIES_DROP)")]
    fn usage_errors(#[case] values: &[&str], #[case] e: CapEnv, #[case] needle: &str) {
        let err = parse_and_resolve(values, &e, 40, "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        assert!(!err.contains('\n'), "usage errors are one line: {err:?}");
    }

    #[test]
    fn names_the_kernel_lacks_are_refused() {
        let err =
            parse_and_resolve(&["add=cap_bpf"], &CapEnv::default(), 37, "5.4.0-old").unwrap_err();
        assert!(err.to_string().contains("5.4.0-old"), "{err}");
    }

    // Seed: "You may see all available capabilities ... by running: --capabilities help"
    #[test]
    fn help_is_a_key() {
        assert!(ok(&["help"], CapEnv::default()).help);
        assert!(ok(&["help", "bypass=1"], CapEnv::default()).help);
    }
}
