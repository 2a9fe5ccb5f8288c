//! Tracer profiles: how to drive a tracer the harness knows nothing else about.
//!
//! Why so many optional keys: capring judges other people's programs, and they do not share
//! the seed's interface. A tracer may spell bypass as a bare `--no-drop`, take one
//! `--keep-cap NAME` per capability in `CAP_KILL` style, have no event option at all, print
//! its events on stderr after a banner, or end by itself. A profile (TOML, every key in
//! `harness/PROFILE.md`) says all of that, so no wrapper script is needed. Every interface is
//! optional: a scenario that needs a missing one is reported for the clauses about that
//! interface as "not supported by this tracer (profile)", never as a pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capring_spec::caps::Cap;
use capring_spec::catalog::Catalog;
use capring_spec::facts::EnvFacts;
use serde::{Deserialize, Serialize};

use capring_observe::timeline::Stream;

/// One tracer's profile, as read from its TOML file (keys in `harness/PROFILE.md`), with the
/// catalog and patterns it names loaded and checked. Relative paths in it are relative to
/// the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// A short name for reports.
    pub name: String,
    /// The tracer: a path (relative to the profile file), or a bare name looked up in
    /// `$CAPRING_BIN_DIR`, next to the `capring` binary, then in `PATH`.
    pub binary: String,
    /// Arguments given to every run, before the scenario's.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment set for every run of the tracer.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Which ring model the tracer follows (`ring_model`; default the seed's).
    #[serde(default)]
    pub ring_model: RingModel,
    /// `strict`: clauses SPEC.md marks "MUST in strict" count as MUST for this tracer.
    #[serde(default)]
    pub level: LevelChoice,
    /// `builtin` (the reference's catalog) or a path to a catalog TOML, relative to the profile.
    #[serde(default = "default_catalog")]
    pub catalog: String,
    /// How events are selected; absent = the tracer cannot select events (it always traces
    /// its whole catalog).
    #[serde(default)]
    pub events: Option<EventsSpec>,
    /// `[capabilities]`: the seed's `--capabilities` values on this tracer's command line.
    #[serde(default)]
    pub capabilities: CapabilitySpec,
    /// `[environment]`: the seed's `CAPABILITIES_*` variables under this tracer's names.
    #[serde(default)]
    pub environment: EnvironmentSpec,
    /// `[output]`: which lines of the output are events.
    #[serde(default)]
    pub output: OutputSpec,
    /// `[ready]`: when configuration is over and the steady state begins.
    #[serde(default)]
    pub ready: ReadySpec,
    /// `[stop]`: whether the program ends by itself.
    #[serde(default)]
    pub stop: StopSpec,
    /// `[workload]`: what makes the events fire; absent for a program that makes its own.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// Conditions every run of this tracer needs, on top of each scenario's (`needs`, e.g.
    /// `["tracefs"]` for a tracer that attaches tracepoints: capring then mounts tracefs
    /// when it is missing, and calls the run not applicable when it cannot).
    #[serde(default)]
    pub needs: Vec<crate::scenario::Need>,
    /// `[exit_codes]`: the tracer's codes for bad input and capability errors.
    #[serde(default)]
    pub exit_codes: ExitCodes,
    /// `[rules_engine]`: the companion program that never needs capabilities; absent, the
    /// rules scenarios are unsupported.
    #[serde(default)]
    pub rules_engine: Option<RulesEngine>,
    /// How the output shows that a Requested operation of the catalog worked, by operation
    /// name (what `capring minimize` measures each Requested need with).
    #[serde(default)]
    pub requested: BTreeMap<String, RequestedProbe>,
    /// The tracer whose measured tables (`snapshots/minimal-sets/`) judge this one
    /// (default: `name`); a variant of a measured tracer names it.
    #[serde(default)]
    pub measured_as: Option<String>,
    /// `[[expected_failure]]`: clauses this tracer is known to fail (reported as XFAIL).
    #[serde(default, rename = "expected_failure")]
    pub expected_failures: Vec<ExpectedFailure>,
    /// Verdicts recorded from the program's own behaviour (third-party subjects).
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expect>,

    /// The file it was read from: relative paths in the profile are relative to its
    /// directory. Not a key; set by [`Profile::parse`].
    #[serde(skip)]
    pub path: PathBuf,
    /// The event catalog `catalog` names, loaded by [`Profile::parse`]; read it through
    /// [`Profile::catalog`].
    #[serde(skip)]
    pub catalog_data: Option<Catalog>,
    /// `output.event_pattern`, compiled by [`Profile::parse`].
    #[serde(skip)]
    pub event_pattern: Option<regex::Regex>,
    /// `ready.pattern`, compiled by [`Profile::parse`].
    #[serde(skip)]
    pub ready_pattern: Option<regex::Regex>,
}

fn default_catalog() -> String {
    "builtin".into()
}

/// The ring model a tracer follows (`ring_model`): which rings may hold the capabilities
/// `--capabilities add=` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RingModel {
    /// The four rings of the seed page: added capabilities only in Required.
    #[default]
    Seed,
    /// Tracee since v0.14: a Base ring holds the added capabilities all the time.
    TraceeHead,
}

/// Which clauses count as MUST for this tracer (`level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LevelChoice {
    /// MUST is what the seed page states.
    #[default]
    Seed,
    /// Also capring's stricter choices (SPEC.md: "MUST in strict").
    Strict,
}

/// `[events]`: how the tracer is told which events to trace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSpec {
    /// Argument template for the selected events; `{list}` = the names joined by
    /// `separator`. E.g. `["--events", "{list}"]`.
    #[serde(default)]
    pub select: Vec<String>,
    /// Joins the names in `{list}` (default `,`).
    #[serde(default = "comma")]
    pub separator: String,
    /// Arguments per selected event, concatenated in selection order (for options that take
    /// something other than names, e.g. a probe definition). Used instead of `select`.
    #[serde(default)]
    pub per_event: BTreeMap<String, Vec<String>>,
    /// Events used when a scenario names none (default: the whole catalog).
    #[serde(default)]
    pub default: Option<Vec<String>>,
}

fn comma() -> String {
    ",".into()
}

/// How capability names are written for this tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameStyle {
    /// `cap_kill`
    #[default]
    CapLower,
    /// `CAP_KILL`
    CapUpper,
    /// `kill`
    Lower,
    /// `KILL`
    Upper,
    /// `5`
    Number,
}

impl NameStyle {
    /// `name` (a seed spelling, possibly invalid) in this style.
    pub fn spell(self, name: &str) -> String {
        let parsed = capring_spec::caps::parse_name(name).ok();
        if self == NameStyle::Number {
            if let Some(c) = parsed {
                return c.number().to_string();
            }
        }
        let canonical = parsed.map(Cap::name).unwrap_or_else(|| name.to_lowercase());
        let bare = canonical
            .strip_prefix("cap_")
            .unwrap_or(&canonical)
            .to_string();
        match self {
            NameStyle::CapLower | NameStyle::Number => format!("cap_{bare}"),
            NameStyle::CapUpper => format!("CAP_{}", bare.to_uppercase()),
            NameStyle::Lower => bare,
            NameStyle::Upper => bare.to_uppercase(),
        }
    }
}

/// How the seed's `--capabilities` values are spelled on this tracer's command line. Every
/// key is optional: absent means the tracer has no such interface.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitySpec {
    /// How capability names are written (default `cap_kill`).
    #[serde(default)]
    pub names: NameStyle,
    /// Joins a list of names in `{caps}` and in the add/drop variables (default `,`).
    #[serde(default = "comma")]
    pub separator: String,
    /// Lists the capabilities (`["--capabilities", "help"]`).
    pub help: Option<Vec<String>>,
    /// Turns bypass on: `["--capabilities", "bypass=1"]` or a bare flag `["--no-drop"]`.
    pub bypass_on: Option<Vec<String>>,
    /// Turns bypass off explicitly (absent for a bare flag).
    pub bypass_off: Option<Vec<String>>,
    /// Adds capabilities: `{caps}` = names joined by `separator`.
    pub add: Option<Vec<String>>,
    /// Adds one capability: repeated once per capability, `{cap}` = its name.
    pub add_each: Option<Vec<String>>,
    /// Drops capabilities: `{caps}` = names joined by `separator`.
    pub drop: Option<Vec<String>>,
    /// Drops one capability: repeated once per capability, `{cap}` = its name.
    pub drop_each: Option<Vec<String>>,
    /// Passes a seed-grammar value as is (`{value}`), for the usage scenarios.
    pub raw: Option<Vec<String>>,
}

/// The bypass variable and its two values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvBypass {
    /// The variable's name (the seed's is `CAPABILITIES_BYPASS`).
    pub name: String,
    /// The value that turns bypass on (default `1`).
    #[serde(default = "one")]
    pub on: String,
    /// The value that turns it off (default `0`).
    #[serde(default = "zero")]
    pub off: String,
}

fn one() -> String {
    "1".into()
}
fn zero() -> String {
    "0".into()
}

/// The seed's `CAPABILITIES_*` variables as this tracer names them (each optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// The bypass variable (the seed's `CAPABILITIES_BYPASS`).
    pub bypass: Option<EnvBypass>,
    /// The name of the variable that adds capabilities (the seed's `CAPABILITIES_ADD`); its
    /// value is a list spelled by `[capabilities] names` and `separator`.
    pub add: Option<String>,
    /// The name of the variable that drops capabilities (the seed's `CAPABILITIES_DROP`).
    pub drop: Option<String>,
}

/// `[output]`: which lines of the tracer's output are its events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Where event lines go.
    #[serde(default = "stdout")]
    pub events: Stream,
    /// Regex an event line must match (default: every non-empty line).
    pub event_pattern: Option<String>,
}

fn stdout() -> Stream {
    Stream::Stdout
}

/// When configuration is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadyOn {
    /// The first event line.
    #[default]
    FirstEvent,
    /// The first line of `stream` matching `pattern`.
    Pattern,
    /// The first successful attach (perf_event_open, or bpf attach/link/raw tracepoint).
    FirstAttach,
    /// `delay_ms` after launch.
    Delay,
}

/// `[ready]`: when the tracer's configuration is over. The checks judge configuration and
/// steady state apart, so this moment matters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadySpec {
    /// The rule (default: the first event line).
    #[serde(default)]
    pub on: ReadyOn,
    /// Where `pattern` is looked for (default stderr, where tracers report progress).
    #[serde(default = "stderr")]
    pub stream: Stream,
    /// For `on = "pattern"`: the regex of the line that says the tracer is ready.
    pub pattern: Option<String>,
    /// For `on = "delay"`: milliseconds after launch.
    #[serde(default)]
    pub delay_ms: u64,
    /// Seconds to wait for readiness (and the first events).
    #[serde(default = "default_ready")]
    pub timeout_s: u64,
}

impl Default for ReadySpec {
    fn default() -> Self {
        ReadySpec {
            on: ReadyOn::FirstEvent,
            stream: Stream::Stderr,
            pattern: None,
            delay_ms: 0,
            timeout_s: default_ready(),
        }
    }
}

fn stderr() -> Stream {
    Stream::Stderr
}
fn default_ready() -> u64 {
    30
}

/// `[stop]`: how a run of the tracer ends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// The program exits on its own (e.g. `ping -c 5`): the harness waits for it instead of
    /// stopping it after the scenario's event lines.
    #[serde(default)]
    pub ends_by_itself: bool,
}

/// `[workload]`: the commands that make the tracer's events fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Makes the events fire; started at the tracer's first attach (see PROFILE.md) and
    /// killed when it ends. A bare first word is resolved like `binary`.
    pub command: Vec<String>,
    /// Per-event workloads (event name → command), used when a scenario selects that event.
    #[serde(default)]
    pub per_event: BTreeMap<String, Vec<String>>,
}

/// `[exit_codes]`: how the tracer says why it stopped. The usage and drop-failure clauses
/// compare its exit code with these.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitCodes {
    /// The code for bad input (default 2).
    #[serde(default = "usage")]
    pub usage: i32,
    /// The code for a capability error: a failed drop, a Required capability that is not
    /// usable (default 3).
    #[serde(default = "capability")]
    pub capability: i32,
}

fn usage() -> i32 {
    2
}
fn capability() -> i32 {
    3
}

impl Default for ExitCodes {
    fn default() -> Self {
        ExitCodes {
            usage: usage(),
            capability: capability(),
        }
    }
}

/// How the tracer's output shows that one Requested operation worked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedProbe {
    /// Regex an event line matches when the operation worked (e.g. its digest is there).
    pub success: String,
    /// `success`, compiled by [`Profile::parse`].
    #[serde(skip)]
    pub success_regex: Option<regex::Regex>,
}

/// `[rules_engine]`: the tracer's rules engine, which SPEC.md's `rules.*` clauses judge: no
/// capabilities at all unless asked for every one, and no `--capabilities add=`/`drop=`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesEngine {
    /// The engine's program, resolved like [`Profile::binary`]; it must accept `--input FILE`.
    pub binary: String,
    /// The flag with which it keeps every capability it started with (default `--allcaps`).
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
    /// The clause id (`capring clauses` lists them).
    pub clause: String,
    /// Why it fails, shown next to the XFAIL.
    pub reason: String,
    /// Only when the environment's feature key contains this text (e.g. `paranoid3`).
    #[serde(default)]
    pub when_feature: Option<String>,
    /// Only in this scenario.
    #[serde(default)]
    pub scenario: Option<String>,
}

/// A verdict recorded from a program's own behaviour: what capring must say, and the lines
/// of the program's strace excerpt (`NAME.strace` next to the profile) that justify it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The scenario's name.
    pub scenario: String,
    /// The clause id.
    pub clause: String,
    /// What capring must say.
    pub verdict: ExpectedVerdict,
    /// Why, in words: the behaviour that earns this verdict.
    pub why: String,
    /// Lines quoted from the strace excerpt; a test checks each is there.
    #[serde(default)]
    pub lines: Vec<String>,
}

/// A verdict as an `[[expect]]` entry spells it (`pass`, `fail`, `fail-unsupported`, `n/a`):
/// one per [`Verdict`](crate::checks::Verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedVerdict {
    /// The clause holds.
    Pass,
    /// A misbehaviour is observed.
    Fail,
    /// The clause is about an interface the program does not have.
    FailUnsupported,
    /// Nothing to judge in this scenario.
    #[serde(rename = "n/a")]
    NotApplicable,
}

/// Why a profile could not be used. Bad input: the message names the file (and line) and
/// is printed as one line before exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The profile's path, as given.
        path: String,
        /// What reading it said.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The profile's path, as given.
        path: String,
        /// The 1-based line of the offending key or value.
        line: usize,
        /// What is wrong, and a pointer to `harness/PROFILE.md`.
        message: String,
    },
    /// Well-formed, but inconsistent: an unknown event or clause, a template without its
    /// placeholder, an unreadable catalog, a bad regex.
    #[error("{path}: {message}")]
    Invalid {
        /// The profile's path, as given.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Profile {
    /// Reads and parses the profile at `path` (see [`Profile::parse`]).
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a profile's TOML `text`; `path` is where it came from (relative paths are
    /// resolved against its directory). Loads the catalog, compiles the patterns and checks
    /// what the TOML types cannot (events known to the catalog, placeholders in templates,
    /// clause ids).
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
        profile.finish().map_err(|message| ProfileError::Invalid {
            path: shown,
            message,
        })?;
        Ok(profile)
    }

    /// Loads the catalog, compiles the patterns and checks what serde cannot.
    fn finish(&mut self) -> Result<(), String> {
        self.catalog_data = Some(if self.catalog == "builtin" {
            Catalog::builtin()
        } else {
            let p = self.relative(&self.catalog);
            let t =
                std::fs::read_to_string(&p).map_err(|e| format!("catalog {}: {e}", p.display()))?;
            Catalog::parse(&t).map_err(|e| format!("catalog {}: {e}", p.display()))?
        });
        let regex = |key: &str, p: &Option<String>| -> Result<Option<regex::Regex>, String> {
            p.as_deref()
                .map(|p| regex::Regex::new(p).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        self.event_pattern = regex("output.event_pattern", &self.output.event_pattern)?;
        self.ready_pattern = regex("ready.pattern", &self.ready.pattern)?;
        if self.ready.on == ReadyOn::Pattern && self.ready_pattern.is_none() {
            return Err("ready.on = \"pattern\" needs ready.pattern".into());
        }
        self.check_events()?;
        self.check_templates()?;
        self.check_requested()?;
        let clauses = capring_spec::clauses::all();
        for x in &self.expected_failures {
            if !clauses.iter().any(|c| c.id == x.clause) {
                return Err(format!(
                    "expected_failure names unknown clause '{}' (see `capring clauses`)",
                    x.clause
                ));
            }
        }
        if let Some(x) = self
            .expectations
            .iter()
            .find(|x| !clauses.iter().any(|c| c.id == x.clause))
        {
            return Err(format!("expect names unknown clause '{}'", x.clause));
        }
        if self.workload.as_ref().is_some_and(|w| w.command.is_empty()) {
            return Err(
                "workload.command is empty: give the command that makes the events fire".into(),
            );
        }
        Ok(())
    }

    fn check_events(&self) -> Result<(), String> {
        let catalog = self.catalog();
        let Some(events) = &self.events else {
            return Ok(());
        };
        let named = events
            .default
            .iter()
            .flatten()
            .chain(events.per_event.keys());
        for e in named {
            if catalog.event(e).is_none() {
                return Err(format!(
                    "events names '{e}', which its catalog does not define (known: {})",
                    catalog.names().join(", ")
                ));
            }
        }
        if events.select.is_empty() && events.per_event.is_empty() {
            return Err("[events] needs `select` (a template with {list}) or `per_event`".into());
        }
        if !events.select.is_empty() && !events.select.iter().any(|a| a.contains("{list}")) {
            return Err(format!(
                "events.select = {:?} must contain {{list}}",
                events.select
            ));
        }
        Ok(())
    }

    /// Each `[requested.OP]` names an operation of the catalog and has a valid pattern.
    fn check_requested(&mut self) -> Result<(), String> {
        let known: Vec<String> = self
            .catalog()
            .events
            .iter()
            .flat_map(|e| e.requested.iter().map(|r| r.operation.clone()))
            .collect();
        for (op, probe) in &mut self.requested {
            if !known.contains(op) {
                return Err(format!(
                    "requested.{op}: the catalog has no Requested operation '{op}' (known: {})",
                    known.join(", ")
                ));
            }
            let re = regex::Regex::new(&probe.success)
                .map_err(|e| format!("requested.{op}.success: {e}"))?;
            probe.success_regex = Some(re);
        }
        Ok(())
    }

    fn check_templates(&self) -> Result<(), String> {
        let c = &self.capabilities;
        for (key, tpl, placeholder) in [
            ("capabilities.add", &c.add, "{caps}"),
            ("capabilities.drop", &c.drop, "{caps}"),
            ("capabilities.add_each", &c.add_each, "{cap}"),
            ("capabilities.drop_each", &c.drop_each, "{cap}"),
            ("capabilities.raw", &c.raw, "{value}"),
        ] {
            if let Some(t) = tpl {
                if !t.iter().any(|a| a.contains(placeholder)) {
                    return Err(format!("{key} = {t:?} must contain {placeholder}"));
                }
            }
        }
        Ok(())
    }

    /// The event catalog the profile names.
    ///
    /// # Panics
    ///
    /// On a `Profile` not made by [`Profile::parse`] (which always loads it).
    pub fn catalog(&self) -> &Catalog {
        self.catalog_data.as_ref().expect("set by parse")
    }

    /// The events of a run whose scenario names none.
    pub fn default_events(&self) -> Vec<String> {
        match self.events.as_ref().and_then(|e| e.default.clone()) {
            Some(d) => d,
            None => self
                .catalog()
                .names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
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

    /// The fixtures directory the profile belongs to: the nearest ancestor of the profile
    /// that holds `scenarios/rules-input.jsonl` (the rules engine's input), else the
    /// profile's grandparent.
    pub fn fixtures_dir(&self) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.ancestors()
            .find(|d| d.join("scenarios/rules-input.jsonl").is_file())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join(".."))
    }

    /// Resolves a program named in the profile (see [`Profile::binary`]): `None` when it
    /// cannot be found, with the places looked at.
    pub fn resolve_program(&self, name: &str) -> Result<PathBuf, String> {
        if name.contains('/') {
            let p = self.relative(name);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{} (relative to the profile) does not exist",
                    p.display()
                ))
            };
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(d) = std::env::var_os("CAPRING_BIN_DIR") {
            dirs.push(PathBuf::from(d));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(d) = exe.parent() {
                dirs.push(d.to_path_buf());
                // integration tests run from target/<profile>/deps
                if let Some(up) = d.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
        if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            return Ok(found);
        }
        which::which(name).map_err(|_| {
            format!(
                "'{name}' is not in $CAPRING_BIN_DIR, next to capring ({}) or in PATH",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
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
        assert!(p.capabilities.bypass_on.is_some());
        assert_eq!(p.default_events(), vec!["execve", "openat"]);
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let bad = GOOD.replace("usage = 2", "usage = \"two\"");
        let err = Profile::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:"), "{err}");
        assert!(err.contains("see harness/PROFILE.md"), "{err}");
        let line: usize = err.split(':').nth(1).unwrap().parse().unwrap();
        assert_eq!(GOOD.lines().nth(line - 1).unwrap().trim(), "usage = 2");

        let unknown =
            format!("{GOOD}\n[[expected_failure]]\nclause = \"no.such\"\nreason = \"x\"\n");
        let err = Profile::parse(&unknown, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no.such"), "{err}");

        let typo = GOOD.replace("ring_model", "ring_modle");
        assert!(Profile::parse(&typo, Path::new("x.toml")).is_err());
        let regex = format!("{GOOD}\n[output]\nevent_pattern = \"(\"\n");
        let err = Profile::parse(&regex, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("output.event_pattern"), "{err}");
    }

    #[test]
    fn a_minimal_profile_needs_only_name_and_binary() {
        let p = Profile::parse(
            "name = \"x\"\nbinary = \"/bin/true\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert!(p.events.is_none() && p.capabilities.help.is_none());
        assert!(p.workload.is_none());
        assert_eq!(p.ready.on, ReadyOn::FirstEvent);
        // Without [events] the tracer traces its whole catalog.
        assert_eq!(p.default_events().len(), p.catalog().events.len());
    }

    #[test]
    fn name_styles() {
        assert_eq!(NameStyle::CapUpper.spell("cap_kill"), "CAP_KILL");
        assert_eq!(NameStyle::Lower.spell("CAP_SYS_ADMIN"), "sys_admin");
        assert_eq!(NameStyle::Upper.spell("bpf"), "BPF");
        assert_eq!(NameStyle::Number.spell("cap_kill"), "5");
        assert_eq!(NameStyle::CapLower.spell("kill"), "cap_kill");
        // Invalid names keep their (styled) spelling: usage scenarios pass them through.
        assert_eq!(NameStyle::CapUpper.spell("cap_sys_admn"), "CAP_SYS_ADMN");
    }

    #[test]
    fn unresolvable_binaries_say_where_they_were_looked_for() {
        let p = Profile::parse(
            "name = \"x\"\nbinary = \"no-such-tracer-xyz\"\n",
            Path::new("/tmp/x.toml"),
        )
        .unwrap();
        let err = p.resolve_program(&p.binary).unwrap_err();
        assert!(
            err.contains("no-such-tracer-xyz") && err.contains("PATH"),
            "{err}"
        );
        let err = p.resolve_program("./missing").unwrap_err();
        assert!(err.contains("/tmp/./missing"), "{err}");
    }
}
