//! `completions`: prints the shell completion script that `cli` generated from its clap
//! definition (a closed pipe is no error).

use std::io::Write;

use anyhow::Context;

use crate::ExitStatus;
use crate::config::CompletionsConfig;

use super::validate::ignore_broken_pipe;

/// `completions`: the shell's completion script on stdout.
pub fn completions(config: &CompletionsConfig) -> anyhow::Result<ExitStatus> {
    std::io::stdout()
        .lock()
        .write_all(&config.script)
        .or_else(ignore_broken_pipe)
        .context("cannot write the completion script")?;
    Ok(ExitStatus::Success)
}
