//! `validate`: read and check every row, print the plan, send nothing; and the input check that
//! `run` shares.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Context;

use crate::config::{PlanFormat, ValidateConfig};
use crate::input::plan::{Checker, Plan, Unlisted, Verdict};
use crate::input::{InputError, InputOptions, InputSource, RowReader};
use crate::lookup::{Directory, Settled, Wanted, settle};
use crate::output::resume::Earlier;
use crate::{ExitStatus, output};

/// `validate`: check every row, print the plan, send nothing.
pub fn validate(config: &ValidateConfig) -> anyhow::Result<ExitStatus> {
    let input = &config.input;
    let plan = check_input(&input.source, &input.options, input.unlisted)?;
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    match config.format {
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
    check_rows(source, options, unlisted, None, false).map(|checked| checked.plan)
}

/// What the first read of the input found: the plan, and what the lookup must ask.
pub(crate) struct Checked {
    pub(crate) plan: Plan,
    pub(crate) wanted: Wanted,
}

/// Reads the whole input once, checking every row. Rows that carry all three ids are decided
/// here (duplicates, Microsoft's table); rows to look up (or every row, with `verify`) are
/// counted and their keys gathered for the lookup, and decided once it has answered
/// ([`resolve_rows`]). With `earlier` (`--resume`), rows an earlier run already did are counted.
pub(crate) fn check_rows(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
    earlier: Option<&Earlier<'_>>,
    verify: bool,
) -> Result<Checked, InputError> {
    let mut rows = RowReader::open(source, options)?;
    let mut checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    let mut wanted = Wanted::default();
    let mut done = 0u64;
    for row in rows.by_ref() {
        let row = match row? {
            Ok(row) => row,
            Err(error) => {
                checker.reject(error);
                continue;
            }
        };
        if let Some(earlier) = earlier
            && earlier.did_line(&row)
        {
            // Done by the earlier run, ids and all: carried over, not looked up again.
            checker.done_earlier(earlier.key_of_line(&row));
            done += 1;
            continue;
        }
        match row.as_given().filter(|_| !verify) {
            Some(job) => {
                // A refused row is recorded in the plan by the checker itself.
                let verdict = checker.check(&job);
                if verdict == Ok(Verdict::Send) && earlier.is_some_and(|e| e.did(&job)) {
                    done += 1;
                }
            }
            None => {
                checker.defer(row.action);
                wanted.add(&row, verify);
            }
        }
    }
    let mut plan = checker.finish(rows.carry_columns());
    plan.already_succeeded = done;
    Ok(Checked { plan, wanted })
}

/// Reads the whole input again once the lookup has answered: each row resolved or refused,
/// duplicates found among the resolved ids (the same identity named by SID on one line and by
/// UPN on another runs once). The plan the responder confirms, and the identities the rows
/// resolved to (for the snapshot file).
pub(crate) fn resolve_rows(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
    directory: &Directory,
    earlier: Option<&Earlier<'_>>,
    verify: bool,
) -> Result<(Plan, BTreeSet<String>), InputError> {
    let mut rows = RowReader::open(source, options)?;
    let mut checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    let mut done = 0u64;
    let mut identities = BTreeSet::new();
    for row in rows.by_ref() {
        let row = match row? {
            Ok(row) => row,
            Err(error) => {
                checker.reject(error);
                continue;
            }
        };
        if let Some(earlier) = earlier
            && earlier.did_line(&row)
        {
            checker.done_earlier(earlier.key_of_line(&row));
            done += 1;
            continue;
        }
        match settle(row, Some(directory), verify) {
            Settled::Send(job) => {
                if job.resolved_by.is_some() {
                    identities.insert(job.identity_account_id.clone());
                }
                let verdict = checker.check(&job);
                if verdict == Ok(Verdict::Send) && earlier.is_some_and(|e| e.did(&job)) {
                    done += 1;
                }
                // Issue 20: flagged, not refused: Graph decides, and if it refuses, the row says why.
                if verdict == Ok(Verdict::Send)
                    && let Some(note) = directory.restricted_note(&job)
                {
                    tracing::warn!(row = job.row, note = %note, "flagged in the plan");
                    checker.warn(job.row, note);
                }
            }
            Settled::Refused(job, refusal) => {
                if let Some(id) = &refusal.identity_id {
                    identities.insert(id.clone());
                }
                checker.refuse(job.row, refusal.code, &refusal.message);
            }
        }
    }
    let mut plan = checker.finish(rows.carry_columns());
    plan.already_succeeded = done;
    Ok((plan, identities))
}

/// A closed pipe (`| head`) is not an error for a command that only prints.
pub(crate) fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}
