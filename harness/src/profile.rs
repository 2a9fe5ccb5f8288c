//! Tracer profiles: how to drive a tracer the harness knows nothing else about.
//!
//! A profile (TOML, documented in `harness/PROFILE.md`) names the binary and its base
//! arguments, how events are selected, how bypass/add/drop are spelled on the command line
//! and in the environment, the workload that makes its events fire, its exit codes, its ring
//! model, its event catalog (capability needs per ring, with reasons) and the clauses it is
//! expected to fail. Errors name the file, the line and the fix.

use std::path::{Path, PathBuf};

use capring_spec::catalog::Catalog;
use capring_spec::facts::EnvFacts;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// A short name for reports.
    pub name: String,
    /// The tracer binary: a path (relative to the profile file), or a bare name looked up
    /// next to the `capring` binary, in `$CAPRING_BIN_DIR`, then in `PATH`.
    pub binary: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment set for every run of the tracer.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// `seed` (the four rings of the seed page) or `tracee-head` (Base ring holds added caps).
    #[serde(default = "default_model")]
    pub ring_model: RingModel,
    pub events: EventsFlag,
    pub capabilities: CapabilityFlags,
    pub workload: Workload,
    #[serde(default)]
    pub exit_codes: ExitCodes,
    /// Event catalog: `builtin` (the reference's) or a path to a TOML file of the same shape
    /// as `fixtures/spec/events.toml`, relative to the profile.
    #[serde(default = "default_catalog")]
    pub catalog: String,
    #[serde(default)]
    pub rules_engine: Option<RulesEngine>,
    #[serde(default, rename = "expected_failure")]
    pub expected_failures: Vec<ExpectedFailure>,
    /// Seconds to wait for the first event line.
    #[serde(default = "default_ready")]
    pub ready_timeout_s: u64,

    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    pub catalog_data: Option<Catalog>,
}

fn default_model() -> RingModel {
    RingModel::Seed
}
fn default_catalog() -> String {
    "builtin".into()
}
fn default_ready() -> u64 {
    30
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RingModel {
    Seed,
    TraceeHead,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFlag {
    /// e.g. `--events`
    pub flag: String,
    #[serde(default = "comma")]
    pub separator: String,
    /// Events used when a scenario does not name any.
    pub default: Vec<String>,
}

fn comma() -> String {
    ",".into()
}

/// How the `--capabilities` options are written. `{value}` / `{list}` are replaced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityFlags {
    pub flag: String,
    pub help: String,
    pub bypass: String,
    pub add: String,
    pub drop: String,
    pub env_bypass: Option<String>,
    pub env_add: Option<String>,
    pub env_drop: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Started at launch, next to the tracer, and killed when the tracer ends. A bare first
    /// word is resolved like `binary`.
    pub command: Vec<String>,
    /// Per-event workloads (event name → command), used when a scenario selects that event.
    #[serde(default)]
    pub per_event: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCodes {
    pub usage: i32,
    pub capability: i32,
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            usage: 2,
            capability: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesEngine {
    pub binary: String,
    #[serde(default = "allcaps")]
    pub allcaps_flag: String,
    /// Flag through which add/drop would be passed (to check they are rejected).
    #[serde(default)]
    pub capabilities_flag: Option<String>,
}

fn allcaps() -> String {
    "--allcaps".into()
}

/// A clause this tracer is known to fail, in the spirit of web-platform-tests expectations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    pub clause: String,
    pub reason: String,
    /// Only when the environment's feature key contains this text (e.g. `paranoid3`).
    #[serde(default)]
    pub when_feature: Option<String>,
    /// Only in this scenario.
    #[serde(default)]
    pub scenario: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let shown = path.display().to_string();
        let mut profile: Profile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            let message = e.message().replace('\n', " ");
            ProfileError::Syntax {
                path: shown.clone(),
                line,
                message: format!("{message} (fix the key or value there; see harness/PROFILE.md)"),
            }
        })?;
        profile.path = path.to_path_buf();
        let invalid = |message: String| ProfileError::Invalid {
            path: shown.clone(),
            message,
        };
        profile.catalog_data = Some(if profile.catalog == "builtin" {
            Catalog::builtin()
        } else {
            let p = profile.relative(&profile.catalog);
            let t = std::fs::read_to_string(&p)
                .map_err(|e| invalid(format!("catalog {}: {e}", p.display())))?;
            Catalog::parse(&t).map_err(|e| invalid(format!("catalog {}: {e}", p.display())))?
        });
        let catalog = profile.catalog();
        for e in &profile.events.default {
            if catalog.event(e).is_none() {
                return Err(invalid(format!(
                    "events.default names '{e}', which its catalog does not define (known: {})",
                    catalog.names().join(", ")
                )));
            }
        }
        for (key, tpl, placeholder) in [
            (
                "capabilities.bypass",
                &profile.capabilities.bypass,
                "{value}",
            ),
            ("capabilities.add", &profile.capabilities.add, "{list}"),
            ("capabilities.drop", &profile.capabilities.drop, "{list}"),
        ] {
            if !tpl.contains(placeholder) {
                return Err(invalid(format!(
                    "{key} = {tpl:?} must contain {placeholder}"
                )));
            }
        }
        let clauses = capring_spec::clauses::all();
        for x in &profile.expected_failures {
            if !clauses.iter().any(|c| c.id == x.clause) {
                return Err(invalid(format!(
                    "expected_failure names unknown clause '{}' (see `capring clauses`)",
                    x.clause
                )));
            }
        }
        if profile.workload.command.is_empty() {
            return Err(invalid(
                "workload.command is empty: give the command that makes the events fire".into(),
            ));
        }
        Ok(profile)
    }

    pub fn catalog(&self) -> &Catalog {
        self.catalog_data.as_ref().expect("set by parse")
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }

    /// Resolves a program named in the profile (see [`Profile::binary`]).
    pub fn resolve_program(&self, name: &str) -> PathBuf {
        if name.contains('/') {
            return self.relative(name);
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            if let Some(d) = exe.parent() {
                dirs.push(d.to_path_buf());
                // integration tests run from target/<profile>/deps
                if let Some(up) = d.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
        if let Some(d) = std::env::var_os("CAPRING_BIN_DIR") {
            dirs.insert(0, PathBuf::from(d));
        }
        dirs.into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    }

    /// Is `clause` an expected failure here?
    pub fn expected_failure(
        &self,
        clause: &str,
        scenario: &str,
        facts: &EnvFacts,
    ) -> Option<&ExpectedFailure> {
        let key = facts.feature_key();
        self.expected_failures.iter().find(|x| {
            x.clause == clause
                && x.scenario.as_deref().is_none_or(|s| s == scenario)
                && x.when_feature.as_deref().is_none_or(|f| key.contains(f))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../fixtures/tracers/ref-tracer.toml");

    #[test]
    fn the_reference_profile_loads() {
        let p = Profile::parse(GOOD, Path::new("fixtures/tracers/ref-tracer.toml")).unwrap();
        assert_eq!(p.name, "ref-tracer");
        assert!(p.rules_engine.is_some());
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let bad = GOOD.replace("flag = \"--events\"", "flag = 3");
        let err = Profile::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:"), "{err}");
        assert!(err.contains("see harness/PROFILE.md"), "{err}");
        let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            GOOD.lines().nth(line - 1).unwrap().trim(),
            "flag = \"--events\""
        );

        let unknown =
            format!("{GOOD}\n[[expected_failure]]\nclause = \"no.such\"\nreason = \"x\"\n");
        let err = Profile::parse(&unknown, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no.such"), "{err}");

        let typo = GOOD.replace("ring_model", "ring_modle");
        assert!(Profile::parse(&typo, Path::new("x.toml")).is_err());
    }
}
