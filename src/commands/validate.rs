//! `validate`: read and check every row, print the plan, send nothing; and the input check that
//! `run` shares.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::Context;

use crate::config::{PlanFormat, ValidateConfig};
use crate::input::plan::{Checker, Plan, Unlisted};
use crate::input::{InputError, InputOptions, InputSource, RowReader};
use crate::lookup::decide::{AccountDecision, Confirmed, Decider, DoneEarlier, RowDecision};
use crate::lookup::{Directory, Wanted};
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
    check_rows(source, options, unlisted, None, None, false, Keep::Plan).map(|checked| checked.plan)
}

/// What a read of the input decided: the plan, what the lookup must ask, the identities the
/// rows resolved to (for the snapshot file), and, when asked for, the digest of every decision
/// (what the feed must send).
pub(crate) struct Checked {
    pub(crate) plan: Plan,
    pub(crate) wanted: Wanted,
    pub(crate) identities: BTreeSet<String>,
    pub(crate) confirmed: Option<Confirmed>,
}

/// Whether a read of the input keeps the digest of every decision, besides the plan: `run`
/// does (8 bytes a row), `validate` need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    Plan,
    PlanAndDecisions,
}

/// Reads the whole input once, deciding every row ([`Decider`]). Before the lookup
/// (`directory` is `None`), rows that carry all three ids are decided (duplicates, Microsoft's
/// table) and the others (every row, with `verify`) are counted and their keys gathered for the
/// lookup. Once it has answered, every row is resolved or refused, and duplicates are found
/// among the resolved ids (the same identity named by SID on one line and by UPN on another
/// runs once). With `earlier` (`--resume`), rows an earlier run already did are counted.
pub(crate) fn check_rows(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
    directory: Option<&Directory>,
    earlier: Option<&dyn DoneEarlier>,
    verify: bool,
    keep: Keep,
) -> Result<Checked, InputError> {
    let mut rows = RowReader::open(source, options)?;
    let checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    let mut decider = Decider::new(checker, directory, earlier, verify);
    let mut wanted = Wanted::default();
    let mut identities = BTreeSet::new();
    let mut confirmed = (keep == Keep::PlanAndDecisions).then(Confirmed::default);
    for row in rows.by_ref() {
        let decision = decider.decide(row?);
        if let Some(confirmed) = &mut confirmed {
            confirmed.push(&decision);
        }
        match decision {
            RowDecision::Rejected(_) => {}
            RowDecision::ToLookUp(row) => wanted.add(&row, verify),
            RowDecision::Accounts(accounts) => {
                for account in &accounts {
                    let job = account.job();
                    match account {
                        AccountDecision::Refused { refusal, .. } => {
                            identities.extend(refusal.identity_id.clone());
                        }
                        _ => identities
                            .extend(job.resolved_by.map(|_| job.identity_account_id.clone())),
                    }
                    // Issue 20: flagged, not refused: Graph decides, and if it refuses, the row
                    // says why.
                    if let (
                        AccountDecision::Send(_) | AccountDecision::CarriedOver { .. },
                        Some(directory),
                    ) = (account, directory)
                        && let Some(note) = directory.restricted_note(job)
                    {
                        tracing::warn!(row = job.row, note = %note, "flagged in the plan");
                        decider.warn(job.row, note);
                    }
                }
            }
        }
    }
    Ok(Checked {
        plan: decider.finish(rows.carry_columns()),
        wanted,
        identities,
        confirmed,
    })
}

/// A closed pipe (`| head`) is not an error for a command that only prints.
pub(crate) fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}
