//! What `run` does after the last outcome: make the results one record per input row (only when
//! the whole input was read and every record written), with `--confirm` the confirm phase
//! ([`super::confirm`]), the undo file, the summary, and the exit status, decided in one place
//! ([`exit_status`], [`with_effects`]). A failure here happens after requests left, so
//! it is reported as a problem (exit 4) and never as exit 2, and no row's record is lost to it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::LogFormat;
use crate::config::RunConfig;
use crate::input::InputSource;
use crate::input::plan::Plan;
use crate::lookup::ReadCounts;
use crate::lookup::confirm::ListLength;
use crate::mock::MockServer;
use crate::outcome::StopReason;
use crate::output::journal::{InflightLog, WriterEnd, open_private, private_options};
use crate::output::paths;
use crate::output::summary::{RunFacts, Summary, Tally, resume_command};
use crate::output::undo::write_undo;
use crate::runner::Shared;
use crate::runner::shutdown::Stop;
use crate::{ExitStatus, logging};

use super::confirm::{Checked, Phase, check_effects, confirm_command};

/// What the batch left for the finishing steps.
pub(super) struct Acted {
    /// The writer's end: `None` if it died (a bug), and then the results hold what it wrote.
    pub(super) writer: Option<WriterEnd>,
    /// Every outcome, folded as the writer passed it on.
    pub(super) tally: Tally,
    /// Whether the reader went through the whole input (a run cut short by a changed input must
    /// not compact its results from a partial read: issue 10).
    pub(super) read_whole_input: bool,
    /// What already went wrong during the batch, besides the stop reason.
    pub(super) problems: Vec<String>,
    pub(super) stop: Arc<Stop>,
    pub(super) shared: Arc<Shared>,
    pub(super) started_at: SystemTime,
    pub(super) elapsed: Duration,
    /// The in-process mock of `--mock`: the confirm phase reads from it, then it is shut down.
    pub(super) mock: Option<MockServer>,
}

/// What the finishing steps need from before the batch.
pub(super) struct After {
    /// What the lookup's reads cost.
    pub(super) lookup: ReadCounts,
    /// The identity list's length, as far as the lookup walked it (for the confirm phase).
    pub(super) list: ListLength,
    /// The first Ctrl-C or SIGTERM: it ends the confirm phase, keeping what it saw.
    pub(super) interrupt: CancellationToken,
}

/// Finishes the run and returns its exit status.
pub(super) async fn finish(
    config: &RunConfig,
    plan: &Plan,
    mut acted: Acted,
    after: After,
) -> ExitStatus {
    let lookup = after.lookup;
    let results = &config.files.results;
    let mock = acted.mock.take();
    let mut problems = std::mem::take(&mut acted.problems);
    let writer = acted.writer.take();
    let tally = &acted.tally;
    let (sinks, failure) = match writer {
        Some(WriterEnd { sinks, failure }) => (Some(sinks), failure.map(|e| e.to_string())),
        None => (
            None,
            Some("the results writer stopped unexpectedly".to_owned()),
        ),
    };
    if let Some(error) = &failure {
        problems.push(format!(
            "cannot write the results file {}: {error}",
            results.display()
        ));
    }
    if let Some(sinks) = sinks
        && failure.is_none()
        && acted.read_whole_input
    {
        // Every row has its record now: leave one per input row, and nothing in flight.
        if let Err(error) = sinks.journal.compact() {
            problems.push(format!(
                "cannot rewrite the results file {} as one record per row ({error}); it holds every record, and --resume reads it as it is",
                results.display()
            ));
        } else if let Some(inflight) = sinks.inflight {
            let path = InflightLog::path_for(results);
            if let Err(error) = inflight.remove() {
                problems.push(format!("cannot remove {}: {error}", path.display()));
            }
        }
    }
    let checked = confirm_effects(config, &acted, failure.is_none(), after).await;
    if let Some(checked) = &checked {
        problems.extend(checked.problem.clone());
        problems.extend(checked.stop_text());
    }
    if let Some(mock) = mock {
        mock.shutdown().await;
    }
    let undo_rows = match &config.files.undo {
        Some(path) if failure.is_none() => match undo_is_free(results, path)
            .and_then(|()| write_undo(results, path, &plan.carry_columns))
        {
            Ok(rows) => Some(rows),
            Err(error) => {
                problems.push(format!(
                    "cannot write the undo file {}: {error}",
                    path.display()
                ));
                None
            }
        },
        Some(path) => {
            problems.push(format!(
                "the undo file {} was not written: the results are incomplete; resume first, then ask for it again",
                path.display()
            ));
            None
        }
        None => None,
    };
    for problem in &problems {
        error!(problem = %problem, "after the batch");
    }
    let stop = acted.stop.reason();
    let confirmed_status = checked.as_ref().map(Checked::status);
    let status_of =
        |problems: &[String]| with_effects(exit_status(stop, tally, problems), confirmed_status);
    let mut status = status_of(&problems);
    if let Some(reason) = stop
        && *reason != StopReason::Interrupted
    {
        error!("stopped early: {reason}");
    }
    info!(
        succeeded = tally.succeeded,
        failed = tally.failed,
        skipped = tally.skipped,
        notAttempted = tally.not_attempted,
        elapsedSeconds = acted.elapsed.as_secs_f64(),
        exitCode = status.code(),
        "run finished"
    );
    let resume = resume_command(&invoked_as(config));
    let summary_of = |status: ExitStatus, problems: &[String]| {
        let facts = RunFacts {
            started_at: acted.started_at,
            finished_at: SystemTime::now(),
            elapsed: acted.elapsed,
            requests: acted.shared.requests(),
            responses_429: acted.shared.responses_429() + lookup.responses_429,
            pauses: acted.shared.gate.pauses(),
            paused: acted.shared.gate.paused_total(),
            rate: config.graph.pacing.rate,
            already_succeeded: plan.already_succeeded,
            input_rows: plan.rows,
            results,
            stop,
            exit: status,
            resume_command: &resume,
            undo: config.files.undo.as_deref().zip(undo_rows),
            rehearsal: config.graph.target.is_rehearsal(),
            lookup_reads: lookup.reads,
            problems,
        };
        let summary = Summary::new(tally, &facts);
        match &checked {
            Some(checked) => summary.with_effects(
                checked.counts,
                (checked.reads, checked.elapsed),
                &confirm_command(results),
            ),
            None => summary,
        }
    };
    let mut summary = summary_of(status, &problems);
    if let Some(path) = &config.files.summary_json
        && let Err(error) = write_summary_json(path, &summary.to_json())
    {
        let problem = format!("cannot write the summary to {}: {error}", path.display());
        error!(problem = %problem, "after the batch");
        problems.push(problem);
        status = status_of(&problems);
        summary = summary_of(status, &problems);
    }
    match logging::format() {
        LogFormat::Text => eprint!("{}", summary.render_text()),
        // One more JSON line among the logs, so that every line on stderr parses.
        LogFormat::Json => {
            eprintln!("{}", logging::json_line("INFO", "run summary", &summary));
        }
    }
    status
}

/// `--confirm`: the confirm phase after the last action, when every record was written and the
/// run was not interrupted (rows not checked keep a null effect, for `confirm` to look at).
async fn confirm_effects(
    config: &RunConfig,
    acted: &Acted,
    records_written: bool,
    after: After,
) -> Option<Checked> {
    let wait = config.confirm_effect?;
    let stop = acted.stop.reason();
    if !records_written || stop == Some(&StopReason::Interrupted) {
        warn!(
            "the effects were not checked: the batch did not end in order; check them with graph-remediate confirm"
        );
        return None;
    }
    let shared = &acted.shared;
    Some(
        check_effects(Phase {
            graph: &config.graph,
            client: &shared.client,
            tokens: &shared.tokens,
            security: shared.gate.clone(),
            results: &config.files.results,
            wait,
            list: after.list,
            progress: config.progress,
            interrupt: after.interrupt,
        })
        .await,
    )
}

/// The run's status with the confirm phase's: Ctrl-C during it is 130, and an action that never
/// showed makes a run that otherwise succeeded exit 3.
fn with_effects(status: ExitStatus, confirmed: Option<ExitStatus>) -> ExitStatus {
    match (status, confirmed) {
        (ExitStatus::Interrupted, _) | (_, Some(ExitStatus::Interrupted)) => {
            ExitStatus::Interrupted
        }
        (ExitStatus::Success, Some(ExitStatus::RowsFailed)) => ExitStatus::RowsFailed,
        (status, _) => status,
    }
}

/// The exit status of a run whose requests may have left (SPEC section 6): never 2, which says
/// nothing was sent.
fn exit_status(stop: Option<&StopReason>, tally: &Tally, problems: &[String]) -> ExitStatus {
    match stop {
        Some(StopReason::Interrupted) => ExitStatus::Interrupted,
        Some(_) => ExitStatus::StoppedEarly,
        None if !problems.is_empty() => ExitStatus::StoppedEarly,
        None if tally.failed > 0 => ExitStatus::RowsFailed,
        None => ExitStatus::Success,
    }
}

/// The command line this run was started with; in process (tests, benches), where there is
/// none, the shortest command that names the same input and results.
pub(super) fn invoked_as(config: &RunConfig) -> Vec<std::ffi::OsString> {
    if !config.command_line.is_empty() {
        return config.command_line.clone();
    }
    let input = match &config.input.source {
        InputSource::File(path) => path.as_os_str().to_owned(),
        _ => "-".into(),
    };
    let mut words = vec!["graph-remediate".into(), "run".into(), input];
    if config.graph.target.is_rehearsal() {
        words.push("--mock".into());
    }
    words.push("-o".into());
    words.push(config.files.results.as_os_str().to_owned());
    words
}

/// `--summary-json`: the summary as one JSON line, replacing the file, readable by the owner
/// only like the results it describes, and never written through a link.
fn write_summary_json(path: &Path, json: &str) -> std::io::Result<()> {
    let mut file = open_private(
        private_options().write(true).create(true).truncate(true),
        path,
    )?;
    crate::output::journal::restrict(&file)?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The undo file is still no run's record: the batch took a while, and another run may have
/// taken the path as its results or input since the start checked it (issue 16).
fn undo_is_free(results: &std::path::Path, path: &std::path::Path) -> std::io::Result<()> {
    let undo = paths::NamedPath {
        role: "undo file (--undo-file)",
        path,
    };
    let search = [paths::parent_dir(results), std::path::Path::new(".")];
    paths::check_not_a_record(&undo, paths::Existing::Replace, &search, &[])
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_after_sending_is_exit_4_never_2() {
        let tally = Tally::default();
        assert_eq!(exit_status(None, &tally, &[]), ExitStatus::Success);
        assert_eq!(
            exit_status(None, &tally, &["disk full".to_owned()]),
            ExitStatus::StoppedEarly
        );
        let failed = Tally {
            failed: 1,
            ..Tally::default()
        };
        assert_eq!(exit_status(None, &failed, &[]), ExitStatus::RowsFailed);
        assert_eq!(
            exit_status(Some(&StopReason::Interrupted), &failed, &[]),
            ExitStatus::Interrupted
        );
    }
}
