//! `capring report DIR`: the results of an earlier run, printed again and rendered as an
//! HTML page or Perfetto traces. Needs no root: the directory is read back
//! (`capring_report::outdir`) and, without results.json, its runs are judged again.

use std::path::PathBuf;

use anyhow::Result;
use capring_report::outdir::load_dir;
use capring_report::views::{views_of_records, write_html, write_perfetto_dir, NamedRun};

use super::output::OutputArgs;

/// `capring report`'s options (the subcommand's help text is in the binary).
#[derive(Debug, clap::Args)]
pub(crate) struct ReportArgs {
    /// A `capring check --out` directory (results.json, runs/<scenario>.json), or a directory
    /// of recorded runs (*.json, *.json.gz) or one such file, which are judged again.
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// How the report is shown.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// `capring report`.
pub(crate) fn execute(a: &ReportArgs) -> Result<i32> {
    let (report, records) = match load_dir(&a.dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("capring: {e}");
            return Ok(2);
        }
    };
    a.output.print(&report)?;
    if let Some(path) = &a.output.html {
        write_html(
            path,
            &report,
            || views_of_records(&report, &records),
            a.output.quiet,
        )?;
    }
    if let Some(dir) = &a.output.perfetto {
        let named: Vec<NamedRun<'_>> = records.iter().map(|(n, r)| (n.as_str(), r)).collect();
        write_perfetto_dir(dir, &report, &named)?;
    }
    Ok(if report.failed_must().is_empty() {
        0
    } else {
        1
    })
}
