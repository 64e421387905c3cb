//! `flow-store generate-docs`: man pages (`flow-store(8)` and one page per
//! subcommand, e.g. `flow-store-backup-verify(8)`) and bash, zsh and fish
//! completions, all from the clap definitions, so they never drift from
//! `--help`. The package build (`packaging/build-static.sh`) runs it and
//! the .deb installs the result in the standard places.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Section of every page: system administration commands.
const SECTION: &str = "8";

/// Writes `<name>.8` for the command and every subcommand into `dir`;
/// returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let root = Cli::command();
    write_pages(&root, root.get_name(), root.get_name(), dir, &mut written)?;
    Ok(written)
}

// `name` is the page's (flow-store-backup-verify), `usage` what is typed
// (flow-store backup verify).
fn write_pages(
    command: &clap::Command,
    name: &str,
    usage: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = command
        .clone()
        .display_name(name.to_string())
        .bin_name(usage.to_string());
    let path = dir.join(format!("{name}.{SECTION}"));
    let mut out = File::create(&path)?;
    clap_mangen::Man::new(page)
        .section(SECTION)
        .manual("flow-store")
        .render(&mut out)?;
    out.flush()?;
    written.push(path);
    let documented = command
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set());
    for sub in documented {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub_usage = format!("{usage} {}", sub.get_name());
        write_pages(sub, &sub_name, &sub_usage, dir, written)?;
    }
    Ok(())
}

/// Writes bash (`flow-store`), zsh (`_flow-store`) and fish
/// (`flow-store.fish`) completions into `dir`; returns the files written.
pub fn completions(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = Cli::command();
        let path = clap_complete::generate_to(shell, &mut command, "flow-store", dir)?;
        written.push(path);
    }
    Ok(written)
}
