//! `cargo xtask screenshots`: the pictures of the HTML report under `docs/`, taken with
//! `chromium --headless --screenshot` from pages `capring report` renders out of recorded
//! real runs (`fixtures/runs/`), so they need no root and show real tracers.
//!
//! * `docs/report-reference.png`: the reference's full host run (verdict matrix and the
//!   first timelines);
//! * `docs/report-steady-state.png`: the page of the reference's steady-state run alone;
//! * `docs/report-late-bpf-call.png`: a failing negative control, its failure marked at the
//!   late bpf call.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{prereq, workspace};

/// (picture, recorded runs, window width, height).
const SHOTS: &[(&str, &str, u32, u32)] = &[
    ("report-reference", "fixtures/runs/reference", 1280, 1300),
    (
        "report-steady-state",
        "fixtures/runs/reference/steady-state.json.gz",
        1280,
        900,
    ),
    (
        "report-late-bpf-call",
        "fixtures/runs/controls/late-bpf-call.json.gz",
        1280,
        900,
    ),
];

/// Loads `page` and writes the window's picture to `png`.
fn shoot(chromium: &Path, page: &Path, png: &Path, size: (u32, u32), profile: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(profile);
    let url = format!("file://{}", page.canonicalize()?.display());
    let out = capring_report::html::headless_chromium(chromium, profile)
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .context("starting chromium")?;
    if !out.status.success() || !png.is_file() {
        bail!(
            "chromium --screenshot {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn execute() -> Result<u8> {
    let chromium = prereq::chromium()?;
    let ws = workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .current_dir(&ws)
        .args(["build", "-p", "capring-harness", "--bin", "capring"])
        .status()?;
    if !built.success() {
        bail!("building capring failed");
    }
    let tmp = ws.join("target/screenshots");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(ws.join("docs"))?;
    for (name, source, w, h) in SHOTS {
        let page = tmp.join(format!("{name}.html"));
        let st = Command::new(ws.join("target/debug/capring"))
            .arg("report")
            .arg(ws.join(source))
            .arg("--html")
            .arg(&page)
            .arg("--quiet")
            .stdout(std::process::Stdio::null())
            .status()?;
        if !matches!(st.code(), Some(0 | 1)) {
            bail!("capring report {source} failed ({st})");
        }
        let png = ws.join("docs").join(format!("{name}.png"));
        shoot(&chromium, &page, &png, (*w, *h), &tmp.join("profile"))?;
        eprintln!("screenshots: {} ({source})", png.display());
    }
    Ok(0)
}
