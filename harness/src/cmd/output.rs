//! How a judged report is shown: the options `capring check` and `capring report` share,
//! so that a report read back later prints exactly as the run did.

use std::path::PathBuf;

use anyhow::Result;
use capring_judge::results::Report;
use capring_report::render;

/// What to print on standard output (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
    Junit,
    Tap,
}

impl Format {
    fn render(self) -> render::Format {
        match self {
            Format::Human => render::Format::Human,
            Format::Json => render::Format::Json,
            Format::Junit => render::Format::Junit,
            Format::Tap => render::Format::Tap,
        }
    }
}

/// When the human table is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum ColorWhen {
    /// Only on a terminal (and not with NO_COLOR set).
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    fn choice(self) -> anstream::ColorChoice {
        match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        }
    }
}

/// How a judged report is shown: the same options for `capring check` and `capring report`,
/// so that a report read back later prints exactly as the run did.
#[derive(Debug, clap::Args)]
pub(crate) struct OutputArgs {
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
    /// Colour the human table: auto (only on a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    pub(crate) color: ColorWhen,
    /// Quiet: the human table shows only the failures that count (nothing when all pass);
    /// no progress or summary on stderr. Other formats are printed whole.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Write the HTML report (one self-contained page: verdicts, SPEC text, per-thread ring
    /// timelines) to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) html: Option<PathBuf>,
    /// Write one Perfetto (Chrome Trace Event JSON) file per scenario into DIR.
    #[arg(long, value_name = "DIR")]
    pub(crate) perfetto: Option<PathBuf>,
}

impl OutputArgs {
    /// Prints the report on standard output as `--format`, `--color` and `--quiet` say.
    pub(crate) fn print(&self, report: &Report) -> Result<()> {
        render::print(
            report,
            self.format.render(),
            self.color.choice(),
            self.quiet,
        )
    }
}
