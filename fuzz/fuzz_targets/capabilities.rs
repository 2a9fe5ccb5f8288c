//! Differential fuzzing of the `--capabilities` grammar.
//!
//! The input is split into lines: the first three are `CAPABILITIES_BYPASS`,
//! `CAPABILITIES_ADD` and `CAPABILITIES_DROP` (a lone `-` means unset), the rest are
//! `--capabilities` values. The spec's parser must never panic, must accept exactly what an
//! independent model of the grammar (below, written from SPEC.md, not from the parser)
//! accepts, and the oracle must give an answer for every accepted input.
#![no_main]

use capring_spec::caps::{CapSet, NAMES};
use capring_spec::catalog::Catalog;
use capring_spec::facts::EnvFacts;
use capring_spec::options::{self, CapEnv};
use capring_spec::oracle;
use libfuzzer_sys::fuzz_target;

const LAST: u8 = 40;

/// A capability name as SPEC.md describes it: `cap_x`, `CAP_X`, `x` or a number, known to a
/// kernel whose cap_last_cap is 40.
fn model_cap(name: &str) -> Option<u8> {
    let t = name.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<u8>().ok().filter(|n| *n <= LAST);
    }
    let lower = t.to_ascii_lowercase();
    let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u8)
}

fn model_list(list: &str) -> Option<u64> {
    let mut bits = 0u64;
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        bits |= 1 << model_cap(item)?;
    }
    Some(bits)
}

fn model_bypass(v: &str) -> bool {
    matches!(v, "1" | "0" | "true" | "false")
}

/// Accepts exactly the inputs SPEC.md's grammar accepts.
fn model_accepts(values: &[&str], env: &CapEnv) -> bool {
    let (mut add, mut drop) = (0u64, 0u64);
    let (mut cli_bypass, mut cli_add, mut cli_drop) = (false, false, false);
    for v in values {
        match v.split_once('=') {
            None if *v == "help" => {}
            Some(("bypass", b)) => {
                if !model_bypass(b) {
                    return false;
                }
                cli_bypass = true;
            }
            Some(("add", l)) => {
                cli_add = true;
                match model_list(l) {
                    Some(b) => add |= b,
                    None => return false,
                }
            }
            Some(("drop", l)) => {
                cli_drop = true;
                match model_list(l) {
                    Some(b) => drop |= b,
                    None => return false,
                }
            }
            _ => return false,
        }
    }
    let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    if !cli_bypass {
        if let Some(b) = set(&env.bypass) {
            if !model_bypass(&b) {
                return false;
            }
        }
    }
    if !cli_add {
        if let Some(l) = set(&env.add) {
            match model_list(&l) {
                Some(b) => add |= b,
                None => return false,
            }
        }
    }
    if !cli_drop {
        if let Some(l) = set(&env.drop) {
            match model_list(&l) {
                Some(b) => drop |= b,
                None => return false,
            }
        }
    }
    add & drop == 0
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let mut env_line = || match lines.next() {
        None | Some("-") => None,
        Some(v) => Some(v.to_string()),
    };
    let env = CapEnv {
        bypass: env_line(),
        add: env_line(),
        drop: env_line(),
    };
    let values: Vec<&str> = lines.collect();
    let parsed = options::parse_and_resolve(&values, &env, LAST, "fuzz");
    let model = model_accepts(&values, &env);
    assert_eq!(parsed.is_ok(), model, "parser {parsed:?} vs model {model} for {values:?} {env:?}");
    if let Ok(opts) = parsed {
        assert!(opts.add.intersection(opts.drop) == CapSet::EMPTY);
        let _ = oracle::evaluate(&opts, &["execve".to_string(), "net_packet".to_string()], &Catalog::builtin(), &EnvFacts::example());
    }
});
