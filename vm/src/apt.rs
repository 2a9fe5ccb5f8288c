//! A private apt configuration per (mirror, suite): its own sources list,
//! lists dir, cache dir and status file, so the system's apt state is never
//! read or touched. Package signatures are checked with the mirror's keyring
//! through `signed-by`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::catalog::{one_line, Mirror};
use crate::error::{Error, IoCtx, Result};

static NETWORK_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Number of apt invocations that went to the network in this process
/// (`apt-get update` and `apt-get download`). A cached kernel adds none.
pub fn network_requests() -> u64 {
    NETWORK_REQUESTS.load(Ordering::SeqCst)
}

fn count_network_request() {
    NETWORK_REQUESTS.fetch_add(1, Ordering::SeqCst);
}

/// One package stanza of a `Packages` index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageInfo {
    /// `Package:`.
    pub package: String,
    /// `Version:` (a Debian version).
    pub version: String,
    /// `Filename:`, the pool path relative to the mirror URI.
    pub filename: String,
    /// `Size:` of the .deb in bytes (0 when missing or unparsable).
    pub size: u64,
    /// `SHA256:` of the .deb, as the index spells it.
    pub sha256: String,
}

/// Parses the stanzas of a `Packages` file (only the fields we need).
pub fn parse_packages(text: &str) -> Vec<PackageInfo> {
    let mut out = Vec::new();
    let mut cur = PackageInfo::default();
    let mut flush = |cur: &mut PackageInfo| {
        if !cur.package.is_empty() {
            out.push(std::mem::take(cur));
        } else {
            *cur = PackageInfo::default();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Package" => cur.package = v.to_string(),
            "Version" => cur.version = v.to_string(),
            "Filename" => cur.filename = v.to_string(),
            "Size" => cur.size = v.parse().unwrap_or(0),
            "SHA256" => cur.sha256 = v.to_string(),
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

/// The newest package (by Debian version, then name) whose name matches the glob `pattern`,
/// with a pool file, a SHA256 and at least `min_size` bytes.
pub(crate) fn newest_matching<'a>(
    pkgs: &'a [PackageInfo],
    pattern: &str,
    min_size: u64,
) -> Option<&'a PackageInfo> {
    let matcher = crate::catalog::glob_matcher(pattern);
    pkgs.iter()
        .filter(|p| {
            matcher.is_match(&p.package)
                && !p.sha256.is_empty()
                && !p.filename.is_empty()
                && p.size >= min_size
        })
        .max_by(|a, b| {
            crate::debver::compare(&a.version, &b.version)
                .then_with(|| crate::debver::compare(&a.package, &b.package))
        })
}

/// A private apt configuration for one suite of one mirror, under the cache
/// (`<cache>/apt/<mirror>-<suite>`): its own sources list, lists and archives, so the
/// host's apt configuration is neither used nor changed, and apt still verifies the
/// suite's signature.
pub(crate) struct AptRoot {
    /// Its directory.
    pub dir: PathBuf,
    /// The mirror (URI already overridden from the environment).
    pub mirror: Mirror,
    /// The keyring file that signs the suite (`signed-by`), resolved from `mirror.keyring`.
    pub keyring: PathBuf,
    /// The suite.
    pub suite: String,
    /// Show apt's output.
    pub verbose: bool,
}

/// Runs a command with a wall-clock limit; returns (success, stdout+stderr).
fn run_limited(mut cmd: Command, limit: Duration) -> Result<(bool, String)> {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        cmd: desc.clone(),
        detail: e.to_string(),
    })?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(Error::Command {
                    cmd: desc,
                    detail: e.to_string(),
                })
            }
        }
    };
    let text = format!(
        "{}{}",
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default()
    );
    match status {
        Some(st) => Ok((st.success(), text)),
        None => Ok((
            false,
            format!("timed out after {} s\n{text}", limit.as_secs()),
        )),
    }
}

/// The most telling lines of apt's output, on one line.
fn apt_errors(text: &str) -> String {
    let picked: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("E:")
                || l.starts_with("W:")
                || l.starts_with("Err:")
                || l.starts_with("timed out")
        })
        .take(3)
        .collect();
    if picked.is_empty() {
        one_line(text.lines().last().unwrap_or("no output"))
    } else {
        one_line(&picked.join(" | "))
    }
}

impl AptRoot {
    /// The apt root of `suite` of `mirror` (named `mirror_name`) under `cache_root`; nothing
    /// is written until it is used.
    pub fn new(
        cache_root: &Path,
        mirror_name: &str,
        mirror: Mirror,
        keyring: PathBuf,
        suite: &str,
    ) -> Self {
        AptRoot {
            dir: cache_root
                .join("apt")
                .join(format!("{mirror_name}-{suite}")),
            mirror,
            keyring,
            suite: suite.to_string(),
            verbose: false,
        }
    }

    fn prepare(&self) -> Result<()> {
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "etc/apt.conf.d",
            "etc/preferences.d",
        ] {
            let p = self.dir.join(d);
            std::fs::create_dir_all(&p).ctx(&p)?;
        }
        let status = self.dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "").ctx(&status)?;
        }
        let list = format!(
            "deb [arch=amd64 signed-by={}] {} {} {}\n",
            self.keyring.display(),
            self.mirror.uri,
            self.suite,
            self.mirror.components.join(" ")
        );
        let p = self.dir.join("etc/sources.list");
        if std::fs::read_to_string(&p).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(&p, list).ctx(&p)?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let d = |s: &str| self.dir.join(s).display().to_string();
        let mut c = Command::new(program);
        for (k, v) in [
            // Ignore the system configuration entirely (its hooks included).
            ("Dir::Etc::Main", "/dev/null".to_string()),
            ("Dir::Etc::Parts", d("etc/apt.conf.d")),
            ("Dir::Etc::Preferences", "/dev/null".to_string()),
            ("Dir::Etc::PreferencesParts", d("etc/preferences.d")),
            ("Dir::Etc::SourceList", d("etc/sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".to_string()),
            ("Dir::State::Lists", d("lists")),
            ("Dir::State::Status", d("status")),
            ("Dir::Cache", d("cache")),
            ("APT::Architecture", "amd64".to_string()),
            ("APT::Architectures", "amd64".to_string()),
            ("APT::Sandbox::User", "root".to_string()),
            ("Acquire::Languages", "none".to_string()),
            ("Acquire::http::Timeout", "20".to_string()),
            ("Acquire::Retries", "1".to_string()),
        ] {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        c
    }

    /// `URI SUITE`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.mirror.uri, self.suite)
    }

    /// `apt-get update` for this suite (one network request).
    pub fn update(&self) -> Result<()> {
        self.prepare()?;
        if !self.keyring.exists() {
            return Err(Error::Other(format!(
                "keyring {} does not exist",
                self.keyring.display()
            )));
        }
        count_network_request();
        let mut c = self.command("apt-get");
        c.arg("-q").arg("update");
        let (ok, text) = run_limited(c, Duration::from_secs(180))?;
        if self.verbose {
            eprintln!("{text}");
        }
        let failed = text
            .lines()
            .any(|l| l.starts_with("Err:") || l.starts_with("E:"));
        if !ok || failed {
            return Err(Error::Command {
                cmd: format!("apt-get update ({})", self.describe()),
                detail: apt_errors(&text),
            });
        }
        Ok(())
    }

    /// The suite's `Packages` index(es), decompressed (no network).
    pub fn packages(&self) -> Result<Vec<PackageInfo>> {
        self.prepare()?;
        let mut c = self.command("apt-get");
        c.args([
            "indextargets",
            "--format",
            "$(FILENAME)",
            "Created-By: Packages",
        ]);
        let (ok, text) = run_limited(c, Duration::from_secs(60))?;
        if !ok {
            return Err(Error::Command {
                cmd: "apt-get indextargets".into(),
                detail: apt_errors(&text),
            });
        }
        let mut all = Vec::new();
        for f in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && Path::new(l).exists())
        {
            let mut c = Command::new("/usr/lib/apt/apt-helper");
            c.args(["cat-file", f]);
            let (ok, body) = run_limited(c, Duration::from_secs(120))?;
            if !ok {
                return Err(Error::Command {
                    cmd: format!("apt-helper cat-file {f}"),
                    detail: apt_errors(&body),
                });
            }
            all.extend(parse_packages(&body));
        }
        Ok(all)
    }

    /// Whether the local index already knows `pkg=version` (no network).
    pub(crate) fn knows(&self, pkg: &str, version: &str) -> bool {
        if self.prepare().is_err() {
            return false;
        }
        let mut c = self.command("apt-cache");
        c.arg("show").arg(format!("{pkg}={version}"));
        matches!(run_limited(c, Duration::from_secs(60)), Ok((true, _)))
    }

    /// `apt-get download pkg=version` into `into` (one network request).
    /// Shows a progress bar sized `size` bytes. Returns the .deb path.
    pub fn download(&self, pkg: &str, version: &str, into: &Path, size: u64) -> Result<PathBuf> {
        self.prepare()?;
        std::fs::create_dir_all(into).ctx(into)?;
        count_network_request();
        let mut c = self.command("apt-get");
        c.current_dir(into)
            .arg("-q")
            .arg("download")
            .arg(format!("{pkg}={version}"));
        let bar = indicatif::ProgressBar::new(size.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("downloading {pkg} {version}"));
        let into_c = into.to_path_buf();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done_c = done.clone();
        let bar_c = bar.clone();
        let watcher = std::thread::spawn(move || {
            while !done_c.load(Ordering::SeqCst) {
                bar_c.set_position(dir_size(&into_c));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = run_limited(c, Duration::from_secs(1800));
        done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        let (ok, text) = r?;
        bar.finish_and_clear();
        if !ok {
            return Err(Error::Command {
                cmd: format!("apt-get download {pkg}={version}"),
                detail: apt_errors(&text),
            });
        }
        let debs: Vec<PathBuf> = std::fs::read_dir(into)
            .ctx(into)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        match debs.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::Command {
                cmd: format!("apt-get download {pkg}={version}"),
                detail: format!(
                    "expected one .deb in {}, found {}",
                    into.display(),
                    debs.len()
                ),
            }),
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
