//! graph-remediate: run Defender for Identity response actions on every row of a spreadsheet.
//!
//! `main.rs` parses the command line and calls [`execute`]; tests and benches call the same
//! functions in process ([`run`], [`check_input`]). This file holds the module list, the exit
//! statuses of SPEC section 6 and the dispatch to the subcommands in `commands`.
//!
//! The public surface is what the binary, the tests and the benches drive: the command line
//! ([`cli`]), the typed run configuration ([`config`]), the mock ([`mock`]), logging, and the
//! few types those name. Everything else is `pub(crate)`, so the compiler finds dead code.

pub(crate) mod attempt;
pub mod cli;
pub(crate) mod commands;
pub mod config;
pub(crate) mod graph;
pub(crate) mod input;
pub mod logging;
pub(crate) mod lookup;
pub mod mock;
pub(crate) mod outcome;
pub(crate) mod output;
pub(crate) mod retry;
pub(crate) mod runner;
pub(crate) mod sanitize;
pub mod units;

use std::future::Future;

use crate::cli::Command;

pub use crate::commands::run::run;
pub use crate::commands::validate::check_input;
pub use crate::graph::auth::CredentialSources;
pub use crate::graph::client::ApiVersion;
pub use crate::graph::model::{Action, Provider, ResponseShape};
pub use crate::input::plan::Unlisted;
pub use crate::input::{InputFormat, InputOptions, InputSource};
pub use crate::output::progress::{ProgressMode, eprint_above};
pub use crate::retry::RetryPolicy;

/// The process exit codes of SPEC section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every row succeeded or was skipped (or, for `validate`, every row is good).
    Success = 0,
    /// Usage or input errors; nothing was sent.
    InputError = 2,
    /// The run finished and some rows failed.
    RowsFailed = 3,
    /// Stopped early: 403, `--max-failures`, credentials.
    StoppedEarly = 4,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that ends the process with a particular status. Errors without one exit 2: they
/// happen before anything is sent (usage, input, files).
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct Fatal {
    pub status: ExitStatus,
    pub error: anyhow::Error,
}

/// The exit status for an error returned by [`execute`].
pub fn status_of(error: &anyhow::Error) -> ExitStatus {
    error
        .downcast_ref::<Fatal>()
        .map_or(ExitStatus::InputError, |fatal| fatal.status)
}

impl Fatal {
    pub(crate) fn stopped(error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Fatal {
            status: ExitStatus::StoppedEarly,
            error,
        })
    }

    /// The first Ctrl-C or SIGTERM came before anything was sent.
    pub(crate) fn interrupted(error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Fatal {
            status: ExitStatus::Interrupted,
            error,
        })
    }
}

/// Runs one subcommand to completion. `shutdown` resolves on the first Ctrl-C or SIGTERM.
pub async fn execute(
    command: Command,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Validate(args) => commands::validate::validate(&args),
        Command::Run(args) => run(config::RunConfig::try_from(*args)?, shutdown).await,
        Command::Resolve(args) => {
            commands::resolve::resolve(config::ResolveConfig::try_from(*args)?, shutdown).await
        }
        Command::Report(args) => commands::report::report(&args),
        Command::Confirm(args) => {
            commands::confirm::confirm(config::ConfirmConfig::try_from(*args)?, shutdown).await
        }
        Command::Mock(args) => {
            mock::run_cli(*args, shutdown).await?;
            Ok(ExitStatus::Success)
        }
        Command::Completions(args) => commands::completions::completions(&args),
        Command::Auth(args) => commands::auth::auth(*args, shutdown).await,
    }
}
