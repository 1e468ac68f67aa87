//! graph-remediate: run Defender for Identity response actions on every row of a spreadsheet.
//!
//! `main.rs` parses the command line and calls [`execute`]; tests and benches call the same
//! functions in process.

pub mod cli;
pub mod graph;
pub mod input;
pub mod logging;
pub mod mock;
pub mod output;
pub mod units;

use std::io::Write;

use anyhow::Context;

use crate::cli::{Command, PlanFormat, ValidateArgs};
use crate::input::plan::{Checker, Plan, Unlisted};
use crate::input::{InputError, InputOptions, InputSource, RowReader};

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

/// Runs one subcommand to completion.
pub fn execute(command: Command) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Validate(args) => validate(&args),
    }
}

/// `validate`: check every row, print the plan, send nothing.
pub fn validate(args: &ValidateArgs) -> anyhow::Result<ExitStatus> {
    let plan = check_input(
        &args.input.source(),
        &args.input.options(),
        args.input.unlisted(),
    )?;
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    match args.format {
        PlanFormat::Text => {
            eprint!("{}", output::plan::render_errors(&plan));
            write!(stdout, "{}", output::plan::render_text(&plan))
        }
        PlanFormat::Json => writeln!(stdout, "{}", output::plan::render_json(&plan)),
    }
    .or_else(ignore_broken_pipe)
    .context("cannot write the plan")?;
    Ok(if plan.is_clean() {
        ExitStatus::Success
    } else {
        ExitStatus::InputError
    })
}

/// Reads the whole input once, checking every row, and returns the plan.
pub fn check_input(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
) -> Result<Plan, InputError> {
    let mut rows = RowReader::open(source, options)?;
    let mut checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    for row in rows.by_ref() {
        match row? {
            Ok(job) => {
                // A refused row is recorded in the plan by the checker itself.
                let _ = checker.check(&job);
            }
            Err(error) => checker.reject(error),
        }
    }
    Ok(checker.finish(rows.carry_columns()))
}

/// A closed pipe (`| head`) is not an error for a command that only prints.
fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}
