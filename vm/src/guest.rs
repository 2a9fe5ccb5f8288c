//! `vm/guest.toml`: which static binaries go into the guest's `/bin` and which
//! commands the agent runs.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalog::one_line;
use crate::error::{Error, IoCtx, Result};
use crate::settings::GuestCommand;

/// One `[[command]]` of the guest config: a template that becomes a
/// [`GuestCommand`] per kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Name in START/EXIT lines and the report (non-empty, no whitespace).
    pub name: String,
    /// Program (an absolute guest path) and arguments; `{vcpus}` is replaced.
    pub argv: Vec<String>,
    /// The agent kills the command after this many seconds (default 300).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// When `--scenario GLOB` is given, `[scenario_flag, GLOB]` is appended.
    #[serde(default)]
    pub scenario_flag: Option<String>,
    /// Run only when `cargo xtask vm-test` is asked for this (`--minimize`: "minimize"),
    /// and then instead of the commands without it.
    #[serde(default)]
    pub only_with: Option<String>,
    /// Only on these kernel series (labels of `--kernel`); absent: on every kernel. Keeps a
    /// slow command (the negative controls) to one kernel of the matrix.
    #[serde(default)]
    pub kernels: Option<Vec<String>>,
    /// Exit codes besides 0 that count as success.
    #[serde(default)]
    pub ok_codes: Vec<i32>,
}

impl CommandSpec {
    /// Whether this command runs on the kernel labelled `kernel`.
    pub(crate) fn runs_on(&self, kernel: &str) -> bool {
        self.kernels
            .as_ref()
            .is_none_or(|ks| ks.iter().any(|k| k == kernel))
    }
}

/// Binaries built with cargo features of their package, named one by one:
/// `cargo build --release --target <musl> -p PACKAGE --features F --bin B…`. Never `--bins`,
/// which would rebuild the package's production binaries with the features, over the ones
/// `packages` built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBuild {
    /// The cargo package.
    pub package: String,
    /// Its features to enable (at least one).
    pub features: Vec<String>,
    /// The binaries to build with them (at least one).
    pub bins: Vec<String>,
}

impl FeatureBuild {
    /// The cargo arguments after `build --release --target <musl>`.
    pub fn cargo_args(&self) -> Vec<String> {
        let mut a = vec![
            "-p".to_string(),
            self.package.clone(),
            "--features".into(),
            self.features.join(","),
        ];
        for b in &self.bins {
            a.push("--bin".into());
            a.push(b.clone());
        }
        a
    }
}

fn default_timeout() -> u64 {
    300
}

fn default_results() -> String {
    "/results".into()
}

/// `vm/guest.toml` (or `--guest-config`): what goes into the guest and what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// Static musl binaries (names under target/x86_64-unknown-linux-musl/release/) copied to /bin.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Cargo packages built for the musl target to produce `binaries`.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Binaries that need cargo features (built after `packages`).
    #[serde(default, rename = "build")]
    pub feature_builds: Vec<FeatureBuild>,
    /// Guest directory whose files are sent back after each command (default `/results`).
    #[serde(default = "default_results")]
    pub results_dir: String,
    /// Extra environment of every command, as `[name, value]` pairs.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The `[[command]]` entries, in run order.
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
    /// Reads and checks `path` ([`Self::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx(path)?;
        Self::parse(&text).map_err(|m| Error::parse(path, m))
    }

    /// Parses a guest config and checks what TOML cannot: command names without whitespace,
    /// absolute `argv[0]`, 1–8 vCPUs, plain binary names, `[[build]]` entries that name their
    /// features and binaries, no `kernels = []`. The error is one line.
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
        for f in &g.feature_builds {
            if f.features.is_empty() || f.bins.is_empty() {
                return Err(format!(
                    "[[build]] of {}: name its features and each binary (`bins`); building every binary with features would replace the production ones",
                    f.package
                ));
            }
        }
        for c in &g.commands {
            if c.kernels.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "command {:?}: `kernels = []` would never run (leave it out for every kernel)",
                    c.name
                ));
            }
        }
        Ok(g)
    }

    /// The commands to run on `kernel` (those without `only_with`), with `{vcpus}` in an
    /// argument replaced by the guest's CPU count.
    pub fn commands(&self, kernel: &str, scenario: Option<&str>, vcpus: u32) -> Vec<GuestCommand> {
        self.commands_with(None, kernel, scenario, vcpus)
    }

    /// The commands to run on `kernel` whose `only_with` is `with` (None: those without one).
    pub fn commands_with(
        &self,
        with: Option<&str>,
        kernel: &str,
        scenario: Option<&str>,
        vcpus: u32,
    ) -> Vec<GuestCommand> {
        self.commands
            .iter()
            .filter(|c| c.only_with.as_deref() == with && c.runs_on(kernel))
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
                    ok_codes: c.ok_codes.clone(),
                }
            })
            .collect()
    }
}

/// The name of the guest command that judges a tracer (`capring check --tracer …`).
pub(crate) const CHECK_COMMAND: &str = "check";

impl GuestConfig {
    /// The command that judges the tracer of `profile` (a guest path) instead of the
    /// reference: the `check` command with its `--tracer` value replaced, and exit code 1
    /// ("a MUST clause failed") accepted, since that is the tracer's verdict, compared on the
    /// host, and not a broken guest. The other commands (the reference's negative controls)
    /// do not run.
    pub fn tracer_command(
        &self,
        profile: &str,
        scenario: Option<&str>,
        vcpus: u32,
    ) -> std::result::Result<GuestCommand, String> {
        let spec = self
            .commands
            .iter()
            .find(|c| c.name == CHECK_COMMAND)
            .ok_or_else(|| {
                format!("no [[command]] named {CHECK_COMMAND:?} to run a tracer with")
            })?;
        let at = spec
            .argv
            .iter()
            .position(|a| a == "--tracer")
            .filter(|i| i + 1 < spec.argv.len())
            .ok_or_else(|| {
                format!("command {CHECK_COMMAND:?} has no `--tracer PROFILE` to replace")
            })?;
        let one = CommandSpec {
            kernels: None,
            ..spec.clone()
        };
        let mut cmd = GuestConfig {
            commands: vec![one],
            ..self.clone()
        }
        .commands("any", scenario, vcpus)
        .remove(0);
        cmd.argv[at + 1] = profile.to_string();
        cmd.ok_codes = vec![1];
        Ok(cmd)
    }
}
