//! `completions`: shell completion scripts from the clap definition.

use std::io::Write;

use anyhow::Context;

use crate::ExitStatus;
use crate::cli::CompletionsArgs;

use super::validate::ignore_broken_pipe;

/// `completions`: the shell's completion script on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitStatus> {
    use clap::CommandFactory;
    // Generated in memory: clap_complete panics when its writer fails, and `| head` must not.
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut crate::cli::Cli::command(),
        "graph-remediate",
        &mut script,
    );
    std::io::stdout()
        .lock()
        .write_all(&script)
        .or_else(ignore_broken_pipe)
        .context("cannot write the completion script")?;
    Ok(ExitStatus::Success)
}
