//! `capring completions SHELL` and the hidden `capring man DIR`: what clap derives from the
//! command line itself (given by the binary's root, which owns it).

use std::path::Path;

use anyhow::{Context, Result};

/// `capring completions SHELL`: the completion script of `cmd` on standard output.
pub(crate) fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> Result<i32> {
    clap_complete::generate(shell, &mut cmd, "capring", &mut std::io::stdout());
    Ok(0)
}

/// `capring.1`, and `capring-<command>.1` for each visible subcommand.
pub(crate) fn man_pages(mut cmd: clap::Command, dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Built, the subcommands know their full usage (`capring check …`).
    cmd.build();
    let mut pages = vec![("capring".to_string(), cmd.clone())];
    // Not the hidden `man` itself, nor clap's `help`.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("capring-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().display_name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}
