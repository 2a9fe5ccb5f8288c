//! `cargo xtask ci-matrix`: the kernel matrix of `ci/github-actions.yml`, generated from
//! `vm/kernels.toml` (the series `--kernel all` runs), so that the list of kernels is written
//! in one place. The workflow marks the generated line with [`MARKER`] on the line above it;
//! everything else in the file is hand-written. A unit test fails when the checked-in
//! workflow is not what this command would write.

use std::path::Path;

use anyhow::{bail, Context, Result};
use capring_vm::catalog::Catalog;

/// The comment above the generated `kernel: [...]` line.
pub const MARKER: &str =
    "# Generated from vm/kernels.toml by `cargo xtask ci-matrix`; do not edit.";

/// The workflow with its matrix line replaced by `series`.
pub fn render(workflow: &str, series: &[String]) -> Result<String> {
    let lines: Vec<&str> = workflow.lines().collect();
    let Some(at) = lines.iter().position(|l| l.trim() == MARKER) else {
        bail!("no line `{MARKER}` in the workflow");
    };
    let Some(next) = lines
        .get(at + 1)
        .filter(|l| l.trim_start().starts_with("kernel:"))
    else {
        bail!("the line after `{MARKER}` is not the `kernel: [...]` matrix line");
    };
    let indent = &next[..next.len() - next.trim_start().len()];
    let quoted: Vec<String> = series.iter().map(|s| format!("\"{s}\"")).collect();
    let matrix = format!("{indent}kernel: [{}]", quoted.join(", "));
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[at + 1] = matrix;
    Ok(out.join("\n") + "\n")
}

/// The workflow as `vm/kernels.toml` makes it.
pub fn generate(workspace: &Path) -> Result<(std::path::PathBuf, String, String)> {
    let catalog = Catalog::load(&workspace.join("vm/kernels.toml"))?;
    let path = workspace.join("ci/github-actions.yml");
    let current =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let wanted = render(&current, &catalog.all_series())?;
    Ok((path, current, wanted))
}

/// `cargo xtask ci-matrix [--print | --check]`.
pub fn run(print: bool, check: bool) -> Result<u8> {
    let (path, current, wanted) = generate(&crate::workspace())?;
    if print {
        print!("{wanted}");
        return Ok(0);
    }
    if current == wanted {
        println!("{} is current", path.display());
        return Ok(0);
    }
    if check {
        println!(
            "{} is not current: run `cargo xtask ci-matrix`",
            path.display()
        );
        return Ok(1);
    }
    std::fs::write(&path, wanted).with_context(|| format!("writing {}", path.display()))?;
    println!("rewrote the kernel matrix of {}", path.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = "jobs:\n  kernel:\n    strategy:\n      matrix:\n        # Generated from vm/kernels.toml by `cargo xtask ci-matrix`; do not edit.\n        kernel: [\"6.1\"]\n    steps:\n      - run: x\n";

    #[test]
    fn only_the_marked_line_changes() {
        let out = render(WORKFLOW, &["5.4".into(), "6.1".into()]).unwrap();
        assert_eq!(
            out,
            WORKFLOW.replace("[\"6.1\"]", "[\"5.4\", \"6.1\"]"),
            "{out}"
        );
        assert!(render("jobs: {}\n", &[]).is_err());
        let unmarked = WORKFLOW.replace("kernel: [", "other: [");
        assert!(render(&unmarked, &[]).is_err());
    }

    /// The checked-in workflow runs exactly the kernels of `--kernel all`.
    #[test]
    fn checked_in_workflow_is_current() {
        let (path, current, wanted) = generate(&crate::workspace()).unwrap();
        assert!(
            current == wanted,
            "{} is not current: run `cargo xtask ci-matrix`",
            path.display()
        );
    }
}
