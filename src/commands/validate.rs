//! `validate`: read and check every row, print the plan, send nothing; and the input check that
//! `run` shares.

use std::io::Write;

use anyhow::Context;

use crate::cli::{PlanFormat, ValidateArgs};
use crate::input::plan::{Checker, KeyMap, Plan, RowKey, Unlisted, Verdict};
use crate::input::{InputError, InputOptions, InputSource, RowReader};
use crate::{ExitStatus, output};

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
    check_input_against(source, options, unlisted, None)
}

/// [`check_input`], also counting the rows an earlier run already did (`--resume`).
pub fn check_input_against(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
    already_succeeded: Option<&KeyMap<RowKey, u64>>,
) -> Result<Plan, InputError> {
    let mut rows = RowReader::open(source, options)?;
    let mut checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    let mut done = 0u64;
    for row in rows.by_ref() {
        match row? {
            Ok(job) => {
                // A refused row is recorded in the plan by the checker itself.
                let verdict = checker.check(&job);
                if verdict == Ok(Verdict::Send)
                    && already_succeeded.is_some_and(|keys| keys.contains_key(&RowKey::of(&job)))
                {
                    done += 1;
                }
            }
            Err(error) => checker.reject(error),
        }
    }
    let mut plan = checker.finish(rows.carry_columns());
    plan.already_succeeded = done;
    Ok(plan)
}

/// A closed pipe (`| head`) is not an error for a command that only prints.
pub(crate) fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}
