//! `vm/guest.toml`: which static binaries go into the guest's `/bin` and which
//! commands the agent runs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::one_line;
use crate::error::{Error, IoCtx, Result};
use crate::settings::GuestCommand;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    pub name: String,
    pub argv: Vec<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// When `--scenario GLOB` is given, `[scenario_flag, GLOB]` is appended.
    #[serde(default)]
    pub scenario_flag: Option<String>,
    /// Run only when `cargo xtask vm-test` is asked for this (`--minimize`: "minimize"),
    /// and then instead of the commands without it.
    #[serde(default)]
    pub only_with: Option<String>,
}

fn default_timeout() -> u64 {
    300
}

fn default_results() -> String {
    "/results".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// Static musl binaries (names under target/x86_64-unknown-linux-musl/release/) copied to /bin.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Cargo packages built for the musl target to produce `binaries`.
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default = "default_results")]
    pub results_dir: String,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default, rename = "command")]
    pub commands: Vec<CommandSpec>,
    /// Virtual CPUs of the guest (1–8). Bare boots in `cargo xtask bench vm` use the same.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
}

fn default_vcpus() -> u32 {
    1
}

impl GuestConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(path)?;
        Self::parse(&text).map_err(|m| Error::parse(path, m))
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let g: GuestConfig = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
        for c in &g.commands {
            if c.name.is_empty() || c.name.contains(char::is_whitespace) {
                return Err(format!(
                    "command name {:?} must be non-empty without whitespace",
                    c.name
                ));
            }
            match c.argv.first() {
                Some(p) if p.starts_with('/') => {}
                _ => {
                    return Err(format!(
                        "command {:?}: argv[0] must be an absolute guest path",
                        c.name
                    ))
                }
            }
        }
        if !(1..=8).contains(&g.vcpus) {
            return Err(format!("vcpus = {} is outside 1..=8", g.vcpus));
        }
        for b in &g.binaries {
            if b.is_empty() || b.contains('/') {
                return Err(format!("binary name {b:?} must be a plain file name"));
            }
        }
        Ok(g)
    }

    /// The commands to run (those without `only_with`), with `{vcpus}` in an argument
    /// replaced by the guest's CPU count.
    pub fn commands(&self, scenario: Option<&str>, vcpus: u32) -> Vec<GuestCommand> {
        self.commands_with(None, scenario, vcpus)
    }

    /// The commands whose `only_with` is `with` (None: those without one).
    pub fn commands_with(
        &self,
        with: Option<&str>,
        scenario: Option<&str>,
        vcpus: u32,
    ) -> Vec<GuestCommand> {
        self.commands
            .iter()
            .filter(|c| c.only_with.as_deref() == with)
            .map(|c| {
                let mut argv: Vec<String> = c
                    .argv
                    .iter()
                    .map(|a| a.replace("{vcpus}", &vcpus.to_string()))
                    .collect();
                if let (Some(flag), Some(glob)) = (&c.scenario_flag, scenario) {
                    argv.push(flag.clone());
                    argv.push(glob.to_string());
                }
                GuestCommand {
                    name: c.name.clone(),
                    argv,
                    timeout_secs: c.timeout_secs,
                }
            })
            .collect()
    }
}
