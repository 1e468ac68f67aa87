//! graph-remediate: run Defender for Identity response actions on every row of a spreadsheet.
//!
//! `main.rs` parses the command line and calls [`execute`]; tests and benches call the same
//! functions in process ([`run`], [`check_input`]). This file holds the module list, the exit
//! statuses of SPEC section 6 and the dispatch to the subcommands in `commands`.
//!
//! The public surface is what the binary, the tests and the benches drive: the command line
//! ([`cli`]), the typed configurations ([`config`]), the mock ([`mock`]), logging, and the
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
pub use crate::output::progress::eprint_above;
pub use crate::retry::RetryPolicy;
pub use crate::units::ProgressMode;

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
    if let Some(unsent) = error.downcast_ref::<Unsent>() {
        return unsent.status;
    }
    error
        .downcast_ref::<Fatal>()
        .map_or(ExitStatus::InputError, |fatal| fatal.status)
}

/// Why a command ended before its first action was sent: the exit status that picks (2 usage or
/// input, 4 stopped early: another run, credentials, a permission, a read refused; 130
/// interrupted), and the cause. Its message says "nothing was sent" once, here, after the cause's
/// own first message, so the steps before the first send need not each say it.
#[derive(Debug)]
pub struct Unsent {
    pub status: ExitStatus,
    cause: anyhow::Error,
}

impl Unsent {
    /// A usage or input error (exit 2).
    pub(crate) fn input(cause: impl Into<anyhow::Error>) -> Unsent {
        Unsent::with(ExitStatus::InputError, cause)
    }

    /// Stopped early (exit 4): another run holds the results, credentials, a permission.
    pub(crate) fn stopped(cause: impl Into<anyhow::Error>) -> Unsent {
        Unsent::with(ExitStatus::StoppedEarly, cause)
    }

    /// The first Ctrl-C or SIGTERM (exit 130).
    pub(crate) fn interrupted(cause: impl Into<anyhow::Error>) -> Unsent {
        Unsent::with(ExitStatus::Interrupted, cause)
    }

    fn with(status: ExitStatus, cause: impl Into<anyhow::Error>) -> Unsent {
        Unsent {
            status,
            cause: cause.into(),
        }
    }
}

impl std::fmt::Display for Unsent {
    /// The cause as `{:#}` shows it, with "; nothing was sent" after its first message, unless
    /// a part it comes from (a protect file, a path check) says so itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let said = self.cause.chain().any(|part| {
            part.to_string()
                .to_ascii_lowercase()
                .contains("nothing was sent")
        });
        let mut chain = self.cause.chain();
        if let Some(first) = chain.next() {
            write!(f, "{first}")?;
        }
        if !said {
            f.write_str("; nothing was sent")?;
        }
        chain.try_for_each(|part| write!(f, ": {part}"))
    }
}

// No `source`: the message already holds the whole chain.
impl std::error::Error for Unsent {}

/// Every error before the first send is one: an [`Unsent`] as it was, a [`Fatal`] with its
/// status, anything else with the status of what it wraps (exit 2 if nothing says otherwise).
impl From<anyhow::Error> for Unsent {
    fn from(error: anyhow::Error) -> Unsent {
        // Only when outermost: a context around them is part of the message.
        let outermost = error.chain().next();
        if outermost.is_some_and(|top| top.is::<Unsent>()) {
            return match error.downcast::<Unsent>() {
                Ok(unsent) => unsent,
                Err(error) => Unsent::with(status_of(&error), error),
            };
        }
        if outermost.is_some_and(|top| top.is::<Fatal>()) {
            return match error.downcast::<Fatal>() {
                Ok(fatal) => Unsent::with(fatal.status, fatal.error),
                Err(error) => Unsent::with(status_of(&error), error),
            };
        }
        Unsent::with(status_of(&error), error)
    }
}

impl Fatal {
    pub(crate) fn stopped(error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Fatal {
            status: ExitStatus::StoppedEarly,
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
        Command::Validate(args) => {
            commands::validate::validate(&config::ValidateConfig::from(args))
        }
        Command::Run(args) => run(config::RunConfig::try_from(*args)?, shutdown).await,
        Command::Resolve(args) => {
            commands::resolve::resolve(config::ResolveConfig::try_from(*args)?, shutdown).await
        }
        Command::Report(args) => commands::report::report(&config::ReportConfig::from(args)),
        Command::Confirm(args) => {
            commands::confirm::confirm(config::ConfirmConfig::try_from(*args)?, shutdown).await
        }
        Command::Mock(args) => {
            mock::run_cli(*args, shutdown).await?;
            Ok(ExitStatus::Success)
        }
        Command::Completions(args) => {
            commands::completions::completions(&config::CompletionsConfig::from(args))
        }
        Command::Auth(args) => {
            commands::auth::auth(config::AuthConfig::try_from(*args)?, shutdown).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_says_nothing_was_sent_after_its_own_message_and_before_the_cause() {
        let cause = anyhow::anyhow!("AADSTS7000215: Invalid client secret provided.")
            .context("cannot get an access token");
        let error = anyhow::Error::new(Unsent::stopped(cause));
        assert_eq!(
            format!("{error:#}"),
            "cannot get an access token; nothing was sent: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(status_of(&error), ExitStatus::StoppedEarly);
    }

    #[test]
    fn unsent_says_it_once_when_a_part_already_does() {
        let cause = anyhow::anyhow!("--auth device-code needs --client-id; nothing was sent")
            .context("no usable credentials");
        let message = Unsent::stopped(cause).to_string();
        assert_eq!(message.matches("nothing was sent").count(), 1, "{message}");
        let paths = anyhow::anyhow!(
            "the input and the results file are the same file. Nothing was sent or changed"
        );
        assert!(
            !Unsent::input(paths)
                .to_string()
                .contains("; nothing was sent")
        );
    }

    #[test]
    fn every_error_before_the_first_send_keeps_its_status() {
        let fatal = Fatal::stopped(anyhow::anyhow!("another run holds the lock"));
        let unsent = Unsent::from(fatal);
        assert_eq!(unsent.status, ExitStatus::StoppedEarly);
        assert_eq!(
            unsent.to_string(),
            "another run holds the lock; nothing was sent"
        );
        let interrupted: anyhow::Error = Unsent::interrupted(anyhow::anyhow!("interrupted")).into();
        assert_eq!(Unsent::from(interrupted).status, ExitStatus::Interrupted);
        // A context around one is part of the message, and the status is still the one inside.
        let wrapped =
            anyhow::Error::new(Unsent::stopped(anyhow::anyhow!("refused"))).context("looking up");
        let unsent = Unsent::from(wrapped);
        assert_eq!(unsent.status, ExitStatus::StoppedEarly);
        assert_eq!(unsent.to_string(), "looking up: refused; nothing was sent");
        assert_eq!(
            Unsent::from(anyhow::anyhow!("bad input")).status,
            ExitStatus::InputError
        );
    }
}
