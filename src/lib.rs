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
pub mod runner;
pub mod units;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{Command, CompletionsArgs, LogFormat, PlanFormat, RunArgs, ValidateArgs};
use crate::graph::auth::{CredentialSources, TokenEndpoint, Tokens};
use crate::graph::client::GraphClient;
use crate::input::plan::{Checker, KeyMap, Plan, RowKey, Unlisted, Verdict};
use crate::input::{InputError, InputOptions, InputSource, Job, RowReader};
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
    fn stopped(error: anyhow::Error) -> anyhow::Error {
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
        Command::Validate(args) => validate(&args),
        Command::Run(args) => run(*args, shutdown).await,
        Command::Mock(args) => {
            mock::run_cli(args, shutdown).await?;
            Ok(ExitStatus::Success)
        }
        Command::Completions(args) => completions(&args),
    }
}

/// `completions`: the shell's completion script on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitStatus> {
    use clap::CommandFactory;
    // Generated in memory: clap_complete panics when its writer fails, and `| head` must not.
    let mut script = Vec::new();
    clap_complete::generate(
        args.shell,
        &mut cli::Cli::command(),
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
fn ignore_broken_pipe(error: std::io::Error) -> std::io::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(error)
    }
}

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
        let message = format!(
            "{} row error(s) in {}; nothing was sent. Fix them and run again (`graph-remediate validate` shows the plan).",
            plan.errors.count, plan.input
        );
        match logging::format() {
            LogFormat::Text => {
                eprint!("{}", output::plan::render_errors(&plan));
                eprintln!("graph-remediate: {message}");
            }
            // A scheduled job's log collector gets the rows' errors as JSON lines too.
            LogFormat::Json => {
                for note in &plan.errors.shown {
                    let fields = serde_json::json!({"input": plan.input, "line": note.line, "error": note.message});
                    eprintln!("{}", logging::json_line("ERROR", "bad input row", &fields));
                }
                let fields = serde_json::json!({"input": plan.input, "errors": plan.errors.count});
                eprintln!("{}", logging::json_line("ERROR", &message, &fields));
            }
        }
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

    let (tokens, graph_root, mock) = match graph_root {
        Some(root) => (credentials(&args, &root)?, root, None),
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

/// Refuses to resume onto results written for another input, unless the user says so.
fn check_resumable(
    args: &RunArgs,
    output: &Path,
    prior: &Prior,
    previous: Option<&RunState>,
    fingerprint: &str,
) -> anyhow::Result<()> {
    let Some(previous) = previous else {
        warn!(results = %output.display(), "no record of the input the earlier run used (its lock file is gone); cannot tell whether the input changed");
        return Ok(());
    };
    if previous.input_fingerprint == fingerprint || args.accept_changed_input {
        if previous.input_fingerprint != fingerprint {
            warn!(
                "the input changed since the results were written; continuing because of --accept-changed-input"
            );
        }
        return Ok(());
    }
    let message = format!(
        "the input changed since {} was written (then: {} rows of {}). Rows that succeeded are still matched by identity account, account, action and provider, but check the input is the one you mean",
        output.display(),
        previous.rows,
        previous.input
    );
    if is_interactive() {
        eprintln!("graph-remediate: {message}.");
        if ask("Resume anyway? [y/N] ")? {
            return Ok(());
        }
        return Err(anyhow!("not resumed; nothing was sent"));
    }
    let _ = prior;
    Err(anyhow!(
        "{message}; pass --accept-changed-input to resume anyway. Nothing was sent"
    ))
}

/// Before sending: on a terminal, show the plan and ask; elsewhere, demand `--yes`.
fn confirm(plan: &Plan) -> anyhow::Result<()> {
    let to_send = plan.actions - plan.already_succeeded;
    if !is_interactive() {
        return Err(anyhow!(
            "not on a terminal, so there is no one to confirm {to_send} actions on {} accounts; add --yes to send them (see the plan with --dry-run). Nothing was sent",
            plan.accounts
        ));
    }
    eprint!("{}", output::plan::render_text(plan));
    if ask(&format!(
        "Proceed with {to_send} actions on {} accounts? [y/N] ",
        plan.accounts
    ))? {
        Ok(())
    } else {
        Err(anyhow!("not confirmed; nothing was sent"))
    }
}

fn is_interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks a yes/no question on the terminal; only `y` or `yes` is yes.
fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `--dry-run`: the plan, the resolved settings and the expected duration.
fn print_dry_run(args: &RunArgs, plan: &Plan, output: &Path) {
    use std::fmt::Write as _;
    let to_send = plan.actions - plan.already_succeeded;
    let graph = match (&args.graph_url, args.mock) {
        (Some(url), _) => url.clone(),
        (None, true) => "the built-in mock".to_owned(),
        (None, false) => args.cloud.graph_root().unwrap_or_default().to_owned(),
    };
    let seconds = to_send as f64 / args.rate.per_second_f64();
    let mut text = output::plan::render_text(plan);
    let _ = writeln!(text);
    let _ = writeln!(text, "Dry run: nothing was sent. The run would use:");
    let _ = writeln!(
        text,
        "  endpoint      {}/{}/security/identities/identityAccounts/{{id}}/microsoft.graph.security.invokeAction",
        graph.trim_end_matches('/'),
        args.api_version.as_str()
    );
    let _ = writeln!(text, "  cloud         {:?}", args.cloud);
    let _ = writeln!(text, "  credentials   {}", credential_source(args));
    let _ = writeln!(
        text,
        "  rate          {} (burst {}), concurrency {}",
        args.rate, args.burst, args.concurrency
    );
    let _ = writeln!(
        text,
        "  retries       up to {} per row, waiting at most {} per row",
        args.max_retries,
        humantime::format_duration(args.max_retry_wait)
    );
    let _ = writeln!(text, "  results       {}", output.display());
    if plan.already_succeeded > 0 {
        let _ = writeln!(
            text,
            "  resume        {} row(s) already succeeded and would be skipped",
            plan.already_succeeded
        );
    }
    let _ = writeln!(
        text,
        "  expected      {to_send} requests take at least {} at {} (more if Graph throttles)",
        humantime::format_duration(Duration::from_secs(seconds.ceil() as u64)),
        args.rate
    );
    print!("{text}");
}

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

/// The run's credentials (SPEC section 2), from the flags and the environment, for the Graph at
/// `graph_root`. Bad URLs are usage errors (exit 2); missing or unreadable credentials stop the
/// run before anything is sent (exit 4).
fn credentials(args: &RunArgs, graph_root: &str) -> anyhow::Result<Tokens> {
    let cloud_authority = args.cloud.authority().map_err(|e| anyhow!(e))?;
    let authority = args.authority_url.as_deref().unwrap_or(cloud_authority);
    let endpoint = TokenEndpoint::new(authority, graph_root)
        .context("--authority-url (or AZURE_AUTHORITY_HOST)")?;
    if args.graph_url.is_none() {
        let cloud = TokenEndpoint::new(cloud_authority, graph_root)?;
        if endpoint.authority() != cloud.authority() {
            warn!(
                authority = endpoint.authority(),
                cloud_authority = cloud.authority(),
                "--authority-url (or AZURE_AUTHORITY_HOST) is not the --cloud's sign-in authority; Graph refuses tokens from another cloud"
            );
        }
    }
    Tokens::from_sources(credential_sources(args), &endpoint, args.timeout).map_err(|error| {
        Fatal::stopped(anyhow::Error::new(error).context("no usable credentials; nothing was sent"))
    })
}

/// The credential sources given by flags and environment. Secrets come from the environment (or
/// files), never from argv.
fn credential_sources(args: &RunArgs) -> CredentialSources {
    let env_secret = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(SecretString::from)
    };
    CredentialSources {
        access_token_file: args.access_token_file.clone(),
        access_token: env_secret("GRAPH_ACCESS_TOKEN"),
        certificate: args.certificate.clone(),
        certificate_key: args.certificate_key.clone(),
        client_secret_file: args.client_secret_file.clone(),
        client_secret: env_secret("AZURE_CLIENT_SECRET"),
        tenant_id: args.tenant_id.clone(),
        client_id: args.client_id.clone(),
    }
}

/// Which credential the run would use, without reading it: for `--dry-run`.
fn credential_source(args: &RunArgs) -> String {
    if args.mock {
        return "the built-in mock's token endpoint (no credentials needed)".to_owned();
    }
    match credential_sources(args).given().first() {
        Some(kind) => kind.describe().to_owned(),
        None => "none found (the run would stop: see --help for the ways to give credentials)"
            .to_owned(),
    }
}

/// `-o`, or `<input stem>.results.jsonl` beside the input.
fn results_path(output: Option<&Path>, source: &InputSource) -> anyhow::Result<PathBuf> {
    if let Some(path) = output {
        return Ok(path.to_path_buf());
    }
    match source {
        InputSource::File(path) => {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("input");
            Ok(path.with_file_name(format!("{stem}.results.jsonl")))
        }
        InputSource::Stdin | InputSource::Spooled { .. } => Err(anyhow!(
            "reading from standard input: name the results file with -o"
        )),
    }
}

/// Standard input can be read only once, and the run reads its input twice (check, then act),
/// so stdin is first copied to a private temporary file.
struct Spooled {
    source: InputSource,
    _file: Option<tempfile::NamedTempFile>,
}

fn spool_stdin(source: InputSource) -> anyhow::Result<Spooled> {
    if source != InputSource::Stdin {
        return Ok(Spooled {
            source,
            _file: None,
        });
    }
    let mut file = tempfile::NamedTempFile::new()
        .context("cannot create a temporary file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("cannot read standard input")?;
    Ok(Spooled {
        source: InputSource::Spooled {
            path: file.path().to_path_buf(),
            name: "<stdin>".to_owned(),
        },
        _file: Some(file),
    })
}
