//! `run`: the batch from start to end. Prepare (input check, lock, resume, confirmation:
//! [`super::prepare`]), connect (credentials or the in-process mock, the first token), then start
//! the reader, the runner, the results writer and the progress bar, and finish (compaction, undo
//! file, summary, exit status).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{LogFormat, RunArgs};
use crate::graph::auth::{TokenEndpoint, Tokens};
use crate::graph::client::GraphClient;
use crate::input::plan::{Checker, Plan, RowKey, Unlisted, Verdict};
use crate::input::{InputOptions, InputSource, Job, RowReader};
use crate::mock::{MockConfig, MockServer};
use crate::output::journal::{
    Entry, InflightLog, Journal, JournalStart, SYNC_INTERVAL, Sinks, UndoFile, write_entries,
};
use crate::output::lock::{self, RunLock, RunState};
use crate::output::progress::{Progress, ProgressMode, RowCounts, Snapshot};
use crate::output::resume::{self, Prior};
use crate::output::summary::{RunFacts, Summary, resume_command};
use crate::runner::retry::RetryPolicy;
use crate::runner::shutdown::{Stop, StopReason};
use crate::runner::{RunSettings, Shared, run_batch};
use crate::units::Rate;
use crate::{ExitStatus, Fatal, logging, output};

use super::prepare::{
    check_resumable, confirm, credentials, print_dry_run, report_bad_rows, results_path,
    spool_stdin,
};
use super::validate::check_input_against;

/// The client id `run --mock` signs in with, at the in-process mock's token endpoint.
const MOCK_CLIENT_ID: &str = "graph-remediate-mock";

/// `run`: check every row, then act on each and record every outcome.
pub async fn run(
    args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let graph_root = match (&args.graph_url, args.mock) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => None,
        (None, false) => Some(args.cloud.graph_root().map_err(|e| anyhow!(e))?.to_owned()),
    };
    let spooled = spool_stdin(args.input.source())?;
    let source = spooled.source.clone();
    let output = results_path(args.output.as_deref(), &source)?;
    let options = args.input.options();
    let unlisted = args.input.unlisted();

    // One run per results file; the lock also holds the previous run's input fingerprint.
    let (mut lock, previous_run) = if args.dry_run {
        (None, None)
    } else {
        let (lock, previous) = RunLock::acquire(&output).map_err(|e| Fatal::stopped(e.into()))?;
        (Some(lock), previous)
    };
    let prior = if output.exists() && !args.dry_run {
        if !args.resume && !args.mock {
            return Err(anyhow!(
                "{} already holds an earlier run's results. Pass --resume to continue that run (rows that succeeded are skipped), or choose another file with -o",
                output.display()
            ));
        }
        if args.resume {
            let path = output.clone();
            let prior = tokio::task::spawn_blocking(move || resume::scan(&path))
                .await
                .context("reading the earlier results stopped unexpectedly")??;
            Some(Arc::new(prior))
        } else {
            None
        }
    } else {
        None
    };

    // Every row is checked before the first request leaves.
    let (plan, fingerprint) = {
        let (source, options, prior) = (source.clone(), options.clone(), prior.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Plan, String)> {
            let done = prior.as_deref().map(|p| &p.succeeded);
            let plan = check_input_against(&source, &options, unlisted, done)?;
            let fingerprint = match &source {
                InputSource::File(path) | InputSource::Spooled { path, .. } => {
                    lock::fingerprint(path).context("cannot read the input")?
                }
                InputSource::Stdin => String::new(),
            };
            Ok((plan, fingerprint))
        })
        .await
        .context("the input check stopped unexpectedly")??
    };
    if !plan.is_clean() {
        report_bad_rows(&plan);
        return Ok(ExitStatus::InputError);
    }
    if let Some(prior) = &prior {
        check_resumable(&args, &output, prior, previous_run.as_ref(), &fingerprint)?;
    }
    if args.dry_run {
        print_dry_run(&args, &plan, &output);
        return Ok(ExitStatus::Success);
    }
    if !args.mock && !args.yes {
        confirm(&plan)?;
    }

    let Connection {
        tokens,
        graph_root,
        mock,
    } = connect(&args, graph_root).await?;
    let concurrency = usize::from(args.concurrency);
    let client = GraphClient::new(&graph_root, args.api_version, args.timeout, concurrency)?;
    if let Some(lock) = &mut lock {
        let state = RunState {
            pid: std::process::id(),
            input: plan.input.clone(),
            input_fingerprint: fingerprint,
            rows: plan.rows,
        };
        lock.record(&state)
            .with_context(|| format!("cannot write the lock file {}", lock.path().display()))?;
    }
    let start = match &prior {
        Some(prior) => {
            if prior.torn {
                warn!(results = %output.display(), "the last record was cut short by a crash; it is dropped and that row runs again");
            }
            JournalStart::Append {
                keep: prior.complete_len,
            }
        }
        None => JournalStart::New,
    };
    let sinks = Sinks {
        journal: Journal::open(&output, &plan.carry_columns, start)
            .with_context(|| format!("cannot open the results file {}", output.display()))?,
        inflight: Some(InflightLog::open(&output).with_context(|| {
            format!("cannot open {}", InflightLog::path_for(&output).display())
        })?),
        undo: match &args.undo_file {
            Some(path) => Some(
                UndoFile::create(path, &plan.carry_columns)
                    .with_context(|| format!("cannot create the undo file {}", path.display()))?,
            ),
            None => None,
        },
    };

    info!(
        input = %plan.input,
        rows = plan.rows,
        actions = plan.actions,
        accounts = plan.accounts,
        rate = %args.rate,
        concurrency,
        graph = %format!("{}/{}", graph_root.trim_end_matches('/'), args.api_version.as_str()),
        credentials = tokens.describe(),
        results = %output.display(),
        "starting the run"
    );
    let started = Instant::now();
    let started_at = SystemTime::now();
    let stop = Arc::new(Stop::new());
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.stop(StopReason::Interrupted);
        })
    };

    let (entry_tx, entry_rx) = mpsc::channel(1024);
    // Finished rows by status, for the progress bar; the writer counts them as they pass.
    let counts = Arc::new(RowCounts::default());
    let writer = {
        let counts = counts.clone();
        tokio::task::spawn_blocking(move || write_entries(sinks, entry_rx, &counts))
    };
    let ticker = {
        let entry_tx = entry_tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SYNC_INTERVAL / 2);
            loop {
                every.tick().await;
                // A full queue means the writer is busy and will sync on its own.
                let _ = entry_tx.try_send(Entry::Tick);
            }
        })
    };
    let (row_tx, row_rx) = mpsc::channel(8);
    let reader = {
        let feed = Feed {
            source,
            options,
            unlisted,
            carry_columns: plan.carry_columns.clone(),
            prior: prior.clone(),
            results: output.clone(),
            accounts: usize::try_from(plan.accounts).unwrap_or(0),
        };
        let (stop, entry_tx) = (stop.clone(), entry_tx.clone());
        tokio::task::spawn_blocking(move || feed.run(&row_tx, &entry_tx, &stop))
    };
    let settings = RunSettings {
        concurrency,
        rate: args.rate,
        burst: args.burst,
        retry: RetryPolicy {
            max_retries: args.max_retries,
            backoff_base: args.backoff_base,
            ..RetryPolicy::default()
        },
        max_retry_wait: args.max_retry_wait,
        max_failures: args.max_failures,
    };
    let shared = Arc::new(Shared::new(client, tokens, settings, stop.clone()));
    let progress = {
        let (shared, counts) = (shared.clone(), counts.clone());
        let mode = if args.no_progress {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        };
        Progress::start(plan.rows, mode, move || Snapshot {
            done: counts.done(),
            succeeded: counts.succeeded(),
            failed: counts.failed(),
            retrying: shared.retrying(),
            throttled_for: shared.gate.remaining(),
        })
    };
    run_batch(shared.clone(), row_rx, entry_tx).await;
    reader
        .await
        .context("the input reader stopped unexpectedly")??;
    ticker.abort();
    let _ = ticker.await;
    let (sinks, tally) = writer
        .await
        .context("the results writer stopped unexpectedly")?
        .with_context(|| format!("cannot write the results file {}", output.display()))?;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    on_signal.abort();
    // Every row has its record now: leave one per input row, and nothing in flight.
    sinks
        .journal
        .compact()
        .with_context(|| format!("cannot rewrite the results file {}", output.display()))?;
    if let Some(inflight) = sinks.inflight {
        let path = InflightLog::path_for(&output);
        inflight
            .remove()
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    // Reported in the summary, with the command that reverses the batch.
    let undo_rows = match sinks.undo {
        Some(undo) => Some(undo.finish().context("cannot write the undo file")?),
        None => None,
    };
    if let Some(mock) = mock {
        mock.shutdown().await;
    }

    let status = match stop.reason() {
        Some(reason) => {
            if *reason != StopReason::Interrupted {
                error!("stopped early: {reason}");
            }
            reason.exit_status()
        }
        None if tally.failed > 0 => ExitStatus::RowsFailed,
        None => ExitStatus::Success,
    };
    let elapsed = started.elapsed();
    info!(
        succeeded = tally.succeeded,
        failed = tally.failed,
        skipped = tally.skipped,
        notAttempted = tally.not_attempted,
        elapsedSeconds = elapsed.as_secs_f64(),
        exitCode = status.code(),
        "run finished"
    );
    let resume = resume_command(&invoked_as(&args, &output));
    let facts = RunFacts {
        started_at,
        finished_at: SystemTime::now(),
        elapsed,
        requests: shared.requests(),
        responses_429: shared.responses_429(),
        pauses: shared.gate.pauses(),
        paused: shared.gate.paused_total(),
        rate: args.rate,
        already_succeeded: plan.already_succeeded,
        results: &output,
        stop: stop.reason(),
        exit: status,
        resume_command: &resume,
        undo: args.undo_file.as_deref().zip(undo_rows),
    };
    let summary = Summary::new(&tally, &facts);
    match logging::format() {
        LogFormat::Text => eprint!("{}", summary.render_text()),
        // One more JSON line among the logs, so that every line on stderr parses.
        LogFormat::Json => {
            eprintln!("{}", logging::json_line("INFO", "run summary", &summary));
        }
    }
    if let Some(path) = &args.summary_json {
        write_summary_json(path, &summary.to_json())
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(status)
}

/// Where the run sends its requests, and with which tokens.
struct Connection {
    tokens: Tokens,
    graph_root: String,
    /// The in-process mock of `--mock`, shut down when the run ends.
    mock: Option<MockServer>,
}

/// Credentials for `graph_root`, or the in-process mock when there is none (`--mock`); then the
/// first token, before the first row: wrong credentials fail in seconds, with nothing sent.
async fn connect(args: &RunArgs, graph_root: Option<String>) -> anyhow::Result<Connection> {
    let (tokens, graph_root, mock) = match graph_root {
        Some(root) => (credentials(args, &root)?, root, None),
        None => {
            // A secret made up for this run: `--mock` goes through the same token fetch and
            // renewal as app credentials, and needs none from the user.
            let secret = uuid::Uuid::new_v4().to_string();
            let mock = MockServer::start(mock_profile(args.rate, &secret))
                .await
                .context("cannot start the built-in mock")?;
            // A log line, so that `--log-format json` output stays JSON throughout.
            info!(
                mock = %mock.base_url(),
                "--mock: running against the built-in mock (nothing is sent to Microsoft)"
            );
            let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url())?;
            let tokens = Tokens::for_mock(
                &endpoint,
                MOCK_CLIENT_ID,
                SecretString::from(secret),
                args.timeout,
            )?;
            (tokens, mock.base_url(), Some(mock))
        }
    };
    // The first token before the first row: wrong credentials fail in seconds, nothing sent.
    tokens.current().await.map_err(|error| {
        Fatal::stopped(
            anyhow::Error::new(error).context("cannot get an access token; nothing was sent"),
        )
    })?;
    Ok(Connection {
        tokens,
        graph_root,
        mock,
    })
}

/// The command line this run was started with; in process (tests, benches), where there is
/// none, the shortest command that names the same input and results.
fn invoked_as(args: &RunArgs, output: &Path) -> Vec<std::ffi::OsString> {
    if !args.argv.is_empty() {
        return args.argv.clone();
    }
    vec![
        "graph-remediate".into(),
        "run".into(),
        args.input.input.clone().into_os_string(),
        "-o".into(),
        output.as_os_str().to_owned(),
    ]
}

/// `--summary-json`: the summary as one JSON line, replacing the file, readable by the owner
/// only like the results it describes.
fn write_summary_json(path: &Path, json: &str) -> std::io::Result<()> {
    let mut file = output::journal::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(json.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The second read of the input, feeding the dispatcher.
struct Feed {
    source: InputSource,
    options: InputOptions,
    unlisted: Unlisted,
    carry_columns: Vec<String>,
    prior: Option<Arc<Prior>>,
    results: PathBuf,
    /// Distinct accounts, from the first pass: sizes the second pass's checker.
    accounts: usize,
}

impl Feed {
    /// The checker gives each row its verdict again (duplicates), exactly as in the first pass.
    /// On `--resume`, a row that already succeeded is not sent again: its earlier record is
    /// carried over (with this input's row number and columns), and a row an interrupted run
    /// had sent without recording an answer keeps count of that attempt.
    fn run(
        self,
        row_tx: &mpsc::Sender<Vec<(Job, Verdict)>>,
        entry_tx: &mpsc::Sender<Entry>,
        stop: &Stop,
    ) -> anyhow::Result<()> {
        let mut rows =
            RowReader::open(&self.source, &self.options)?.with_carry_columns(self.carry_columns);
        let mut checker = Checker::with_capacity(
            rows.file(),
            Some(rows.format()),
            self.unlisted,
            self.accounts,
        );
        let mut chunk = Vec::with_capacity(ROW_CHUNK);
        for row in rows.by_ref() {
            let verdict = row?.and_then(|job| checker.check(&job).map(|verdict| (job, verdict)));
            let (mut job, verdict) = match verdict {
                Ok(pair) => pair,
                Err(error) => {
                    stop.stop(StopReason::InputChanged {
                        detail: format!("line {} is now invalid: {}", error.line, error.reason),
                    });
                    break;
                }
            };
            if let (Some(prior), Verdict::Send) = (&self.prior, verdict) {
                let key = RowKey::of(&job);
                if let Some(offset) = prior.succeeded.get(&key) {
                    let outcome = resume::carried_over(&self.results, *offset, job)?;
                    if entry_tx
                        .blocking_send(Entry::Outcome(Box::new(outcome)))
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                job.earlier_attempts = prior.unknown_attempts.get(&key).copied().unwrap_or(0);
            }
            chunk.push((job, verdict));
            if chunk.len() == ROW_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(ROW_CHUNK));
                if row_tx.blocking_send(full).is_err() {
                    return Ok(());
                }
            }
        }
        if !chunk.is_empty() {
            let _ = row_tx.blocking_send(chunk);
        }
        Ok(())
    }
}

/// Rows the reader hands the dispatcher at a time: one wake-up per chunk instead of per row
/// (the profile showed the reader and the dispatcher waking each other for every row).
const ROW_CHUNK: usize = 256;

/// The in-process mock behind `run --mock`: some latency, an occasional 503 or 504, and a limit a
/// little under the run's rate so that an occasional 429 shows how throttling is handled.
fn mock_profile(run_rate: Rate, client_secret: &str) -> MockConfig {
    let slower = Rate {
        count: run_rate.count,
        per: run_rate.per.mul_f64(1.25),
    };
    MockConfig {
        rate: Some(slower),
        burst: 3,
        fail_rate: 0.05,
        fault_retry_after: Some(Duration::from_secs(1)),
        latency: Duration::from_millis(40),
        client_id: Some(MOCK_CLIENT_ID.to_owned()),
        client_secret: Some(client_secret.to_owned()),
        ..MockConfig::default()
    }
}
