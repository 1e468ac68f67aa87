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
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::cli::{Command, PlanFormat, RunArgs, ValidateArgs};
use crate::graph::auth::Tokens;
use crate::graph::client::GraphClient;
use crate::input::plan::{Checker, Plan, Unlisted, Verdict};
use crate::input::{InputError, InputOptions, InputSource, Job, RowReader};
use crate::mock::{MockConfig, MockServer};
use crate::output::journal::{Journal, write_outcomes};
use crate::output::summary::{RunFacts, render};
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

/// The bearer token `run --mock` uses; the in-process mock accepts only this one.
const MOCK_TOKEN: &str = "graph-remediate-mock-token";

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

    // Every row is checked before the first request leaves.
    let plan = {
        let (source, options) = (source.clone(), options.clone());
        tokio::task::spawn_blocking(move || check_input(&source, &options, unlisted))
            .await
            .context("the input check stopped unexpectedly")??
    };
    if !plan.is_clean() {
        eprint!("{}", output::plan::render_errors(&plan));
        eprintln!(
            "graph-remediate: {} row error(s) in {}; nothing was sent. Fix them and run again (`graph-remediate validate` shows the plan).",
            plan.errors.count, plan.input
        );
        return Ok(ExitStatus::InputError);
    }
    if output.exists() && !args.mock {
        return Err(anyhow!(
            "{} already exists and holds an earlier run's results; move it away or choose another file with -o",
            output.display()
        ));
    }

    let (tokens, graph_root, mock) = match graph_root {
        Some(root) => (read_token(args.access_token_file.as_deref())?, root, None),
        None => {
            let mock = MockServer::start(mock_profile(args.rate))
                .await
                .context("cannot start the built-in mock")?;
            eprintln!(
                "graph-remediate: --mock: running against the built-in mock at {} (nothing is sent to Microsoft)",
                mock.base_url()
            );
            let token = Tokens::Ready(Arc::new(SecretString::from(MOCK_TOKEN)));
            (token, mock.base_url(), Some(mock))
        }
    };
    let concurrency = usize::from(args.concurrency);
    let client = GraphClient::new(&graph_root, args.api_version, args.timeout, concurrency)?;
    let journal = Journal::create(&output, &plan.carry_columns)
        .with_context(|| format!("cannot create the results file {}", output.display()))?;

    info!(
        input = %plan.input,
        rows = plan.rows,
        actions = plan.actions,
        accounts = plan.accounts,
        rate = %args.rate,
        concurrency,
        graph = %format!("{}/{}", graph_root.trim_end_matches('/'), args.api_version.as_str()),
        results = %output.display(),
        "starting the run"
    );
    let started = Instant::now();
    let stop = Arc::new(Stop::new());
    let on_signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.stop(StopReason::Interrupted);
        })
    };

    let (outcome_tx, outcome_rx) = mpsc::channel(1024);
    let writer = tokio::task::spawn_blocking(move || write_outcomes(journal, outcome_rx));
    let (row_tx, row_rx) = mpsc::channel(1024);
    let reader = {
        let (stop, carry) = (stop.clone(), plan.carry_columns.clone());
        tokio::task::spawn_blocking(move || {
            feed_rows(&source, &options, unlisted, carry, &row_tx, &stop)
        })
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
    };
    let shared = Arc::new(Shared::new(client, tokens, settings, stop.clone()));
    run_batch(shared.clone(), row_rx, outcome_tx).await;
    reader
        .await
        .context("the input reader stopped unexpectedly")??;
    let tally = writer
        .await
        .context("the results writer stopped unexpectedly")?
        .with_context(|| format!("cannot write the results file {}", output.display()))?;
    on_signal.abort();
    if let Some(mock) = mock {
        mock.shutdown().await;
    }

    let facts = RunFacts {
        elapsed: started.elapsed(),
        throttled: shared.gate.pauses(),
        paused: shared.gate.paused_total(),
        results: &output,
    };
    eprint!("{}", render(&tally, &facts));
    let status = match stop.reason() {
        Some(reason) => {
            if *reason != StopReason::Interrupted {
                error!("stopped early: {reason}");
                eprintln!("graph-remediate: stopped early: {reason}");
            }
            reason.exit_status()
        }
        None if tally.failed > 0 => ExitStatus::RowsFailed,
        None => ExitStatus::Success,
    };
    info!(
        succeeded = tally.succeeded,
        failed = tally.failed,
        skipped = tally.skipped,
        not_attempted = tally.not_attempted,
        exit_code = status.code(),
        "run finished"
    );
    Ok(status)
}

/// Reads the input a second time and feeds the dispatcher; the checker gives each row its verdict
/// again (duplicates), exactly as in the first pass.
fn feed_rows(
    source: &InputSource,
    options: &InputOptions,
    unlisted: Unlisted,
    carry_columns: Vec<String>,
    row_tx: &mpsc::Sender<(Job, Verdict)>,
    stop: &Stop,
) -> Result<(), InputError> {
    let mut rows = RowReader::open(source, options)?.with_carry_columns(carry_columns);
    let mut checker = Checker::new(rows.file(), Some(rows.format()), unlisted);
    for row in rows.by_ref() {
        let verdict = row?.and_then(|job| checker.check(&job).map(|verdict| (job, verdict)));
        match verdict {
            Ok(pair) => {
                if row_tx.blocking_send(pair).is_err() {
                    break;
                }
            }
            Err(error) => {
                stop.stop(StopReason::InputChanged {
                    detail: format!("line {} is now invalid: {}", error.line, error.reason),
                });
                break;
            }
        }
    }
    Ok(())
}

/// The in-process mock behind `run --mock`: some latency, an occasional 503 or 504, and a limit a
/// little under the run's rate so that an occasional 429 shows how throttling is handled.
fn mock_profile(run_rate: Rate) -> MockConfig {
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
        static_tokens: vec![MOCK_TOKEN.to_owned()],
        ..MockConfig::default()
    }
}

/// A ready token: `--access-token-file` first, then `GRAPH_ACCESS_TOKEN`.
fn read_token(file: Option<&Path>) -> anyhow::Result<Tokens> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .with_context(|| format!("cannot read the access token file {}", path.display()))
            .map_err(Fatal::stopped)?,
        None => std::env::var("GRAPH_ACCESS_TOKEN")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if token.is_empty() {
        return Err(Fatal::stopped(anyhow!(
            "no credentials: set GRAPH_ACCESS_TOKEN or pass --access-token-file (or use --mock to rehearse); nothing was sent"
        )));
    }
    Ok(Tokens::Ready(Arc::new(SecretString::from(token))))
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
