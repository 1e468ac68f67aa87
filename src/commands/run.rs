//! `run`: the batch from start to end, as its steps. Before the first request ([`super::prepare`]):
//! the files, the input, the lock, earlier results, the input check, confirmation, connecting.
//! Then the batch: the reader, the runner, the results writer and the progress bar. After the
//! last outcome ([`super::finish`]): compaction, the undo file, the summary and the exit status.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ExitStatus;
use crate::config::{Mode, RunConfig};
use crate::graph::auth::token_tenant_and_app;
use crate::graph::permissions::Needs;
use crate::input::plan::{Checker, Plan, Verdict};
use crate::input::{Job, RowReader};
use crate::lookup::confirm::ListLength;
use crate::lookup::decide::{AccountDecision, Confirmed, Decider, RowDecision};
use crate::lookup::directory::Found;
use crate::lookup::{Directory, ReadCounts};
use crate::outcome::{Entry, Outcome, RowStatus, StopReason};
use crate::output::journal::rfc3339;
use crate::output::journal::{
    InflightLog, Journal, JournalStart, SYNC_INTERVAL, Sinks, WriterEnd, write_entries,
};
use crate::output::lock::{RunAbout, RunState};
use crate::output::progress::{Progress, RowCounts, Snapshot};
use crate::output::resume::{self, Earlier, Prior};
use crate::output::snapshot;
use crate::output::summary::Tally;
use crate::output::summary::shell_words;
use crate::runner::rate::ThrottleGate;
use crate::runner::shutdown::{self, Stop};
use crate::runner::{RunSettings, Shared, run_batch};
use secrecy::ExposeSecret;

use super::connect::{Connection, connect, connect_unless_interrupted};
use super::finish::{Acted, After, finish, invoked_as};
use super::look_up::{decide_rows, find};
use super::prepare::{
    CheckedInput, CreatedResults, Input, check_files, check_guards_kept, check_input,
    check_resumable, claim_results, confirm, earlier_results, guards_record, log_guards,
    print_dry_run, read_input, report_bad_rows,
};
use super::validate::Checked;

/// `run`: check every row, then act on each and record every outcome. `shutdown` resolves on the
/// first Ctrl-C or SIGTERM.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let interrupt = shutdown::listen(shutdown);
    // The guards first: a protect file that cannot be read stops the run before any other file
    // is touched (the command line's conversion only names them, issue 17).
    let protect = config.protect_files.read()?;
    let config = config.guarded_by(protect)?;
    check_files(&config)?;
    log_guards(&config.guardrails);
    let input = read_input(&config.input, &interrupt).await?;
    if config.mode == Mode::DryRun {
        return dry_run(&config, &input, &interrupt).await;
    }
    let mut claim = claim_results(&config.files)?;
    let mut created = CreatedResults::new(&config.files.results, claim.created);
    let prior = earlier_results(&config, &claim).await?;
    let checked = check_input(
        &input,
        prior.clone(),
        claim.previous.as_ref(),
        config.verify,
        &interrupt,
    )
    .await?;
    if !checked.plan.is_clean() {
        report_bad_rows(&checked.plan);
        return Ok(ExitStatus::InputError);
    }
    if let Some(earlier) = &prior {
        check_resumable(
            &config,
            claim.previous.as_ref(),
            &checked.fingerprint,
            &interrupt,
        )
        .await?;
        check_guards_kept(&config, claim.previous.as_ref(), earlier)?;
    }
    let needs = Needs::of(
        true,
        !checked.wanted.is_empty(),
        checked.wanted.reads_users(),
        config.guardrails.privileged,
    );
    // Identities are looked up before the plan is confirmed, so that it says what will be sent.
    let security = Arc::new(ThrottleGate::new());
    let (plan, confirmed, connection, lookup) = if checked.wanted.is_empty() {
        (checked.plan.clone(), checked.confirmed, None, None)
    } else {
        let connection =
            connect_unless_interrupted(&interrupt, connect(&config.graph, &input.config, &needs))
                .await?;
        let mut lookup = look_up_rows(
            &config,
            &connection,
            &security,
            &input,
            &checked,
            &prior,
            &interrupt,
        )
        .await?;
        let confirmed = std::mem::take(&mut lookup.confirmed);
        (
            lookup.plan.clone(),
            confirmed,
            Some(connection),
            Some(lookup),
        )
    };
    confirm(&config, &plan, &interrupt).await?;
    let connection = match connection {
        Some(connection) => connection,
        None => {
            connect_unless_interrupted(&interrupt, connect(&config.graph, &input.config, &needs))
                .await?
        }
    };
    let state = run_state(&config, &plan, &checked.fingerprint, &connection).await;
    claim.lock.record(&state).with_context(|| {
        format!(
            "cannot write the lock file {}; nothing was sent",
            claim.lock.path().display()
        )
    })?;
    let sinks = open_sinks(&config, claim.results, &plan, prior.as_deref())?;
    created.keep();
    let lookup_counts = lookup
        .as_ref()
        .map_or_else(ReadCounts::default, |looked_up| looked_up.counts);
    // What the lookup learned of the list's length spares the confirm phase a probe of it.
    let list = lookup
        .as_ref()
        .map_or(ListLength::Unknown, |looked_up| looked_up.list);
    let batch = Batch {
        config: &config,
        input,
        plan: &plan,
        prior,
        same_input: checked.same_input,
        directory: lookup.map(|looked_up| looked_up.directory),
        confirmed,
        security,
        interrupt: interrupt.clone(),
    };
    let acted = batch.act(connection, sinks).await;
    let after = After {
        lookup: lookup_counts,
        list,
        interrupt,
    };
    Ok(finish(&config, &plan, acted, after).await)
}

/// The results file (new, or continued after the earlier run's last complete record) and the
/// in-flight log beside it. Nothing has been sent yet.
fn open_sinks(
    config: &RunConfig,
    results_file: std::fs::File,
    plan: &Plan,
    prior: Option<&Prior>,
) -> anyhow::Result<Sinks> {
    let results = &config.files.results;
    let start = match prior {
        Some(prior) => {
            if prior.torn {
                warn!(results = %results.display(), "the last record was cut short by a crash; it is dropped and that row runs again");
            }
            JournalStart::Append {
                keep: prior.complete_len,
            }
        }
        None => JournalStart::New,
    };
    let journal =
        Journal::start(results, results_file, &plan.carry_columns, start).with_context(|| {
            format!(
                "cannot write the results file {}; nothing was sent",
                results.display()
            )
        })?;
    let inflight = InflightLog::open(results).with_context(|| {
        format!(
            "cannot open {}; nothing was sent",
            InflightLog::path_for(results).display()
        )
    })?;
    Ok(Sinks {
        journal,
        inflight: Some(inflight),
    })
}

/// What the lock file records for this run: the input, the endpoint, and who runs it and how.
async fn run_state(
    config: &RunConfig,
    plan: &Plan,
    fingerprint: &str,
    connection: &Connection,
) -> RunState {
    RunState {
        pid: std::process::id(),
        input: plan.input.clone(),
        input_fingerprint: fingerprint.to_owned(),
        rows: plan.rows,
        endpoint: Some(config.graph.target.endpoint()),
        about: run_about(config, connection).await,
        guards: Some(guards_record(&config.guardrails)),
    }
}

/// Who runs this and how, for the lock file and `report`: ids and kinds, never a secret.
async fn run_about(config: &RunConfig, connection: &Connection) -> RunAbout {
    let given = &config.graph.credentials;
    let (token_tenant, token_app) = match connection.tokens.current().await {
        Ok(token) => token_tenant_and_app(token.expose_secret()),
        Err(_) => (None, None),
    };
    let client_id = given.client_id.clone().or(token_app);
    let acted_as = connection
        .tokens
        .signed_in()
        .and_then(|signed_in| signed_in.user)
        .or_else(|| client_id.clone());
    RunAbout {
        started_at: Some(rfc3339(SystemTime::now())),
        tenant: given.tenant_id.clone().or(token_tenant),
        client_id,
        credential: Some(connection.tokens.describe().to_owned()),
        acted_as,
        command_line: Some(shell_words(
            &invoked_as(config)
                .iter()
                .map(|word| word.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        )),
        undo_file: config
            .files
            .undo
            .as_ref()
            .map(|path| path.display().to_string()),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// What the lookup found for `run`.
struct LookedUp {
    directory: Arc<Directory>,
    /// The plan with every row decided.
    plan: Plan,
    /// The digest of every decision in it.
    confirmed: Confirmed,
    counts: ReadCounts,
    /// How long the identity list is, as far as the lookup walked it.
    list: ListLength,
}

/// Looks up the rows' identities, decides every row, and keeps the identities they resolved to
/// in the snapshot file beside the results. Nothing is sent but reads.
async fn look_up_rows(
    config: &RunConfig,
    connection: &Connection,
    security: &Arc<ThrottleGate>,
    input: &Input,
    checked: &CheckedInput,
    prior: &Option<Arc<Prior>>,
    interrupt: &CancellationToken,
) -> anyhow::Result<LookedUp> {
    let (directory, strategy, counts) = find(
        &config.graph,
        &config.guardrails,
        config.progress,
        &connection.client,
        &connection.tokens,
        security,
        &checked.wanted,
        interrupt,
    )
    .await?;
    let resuming = prior.is_some();
    let Checked {
        plan,
        identities,
        confirmed,
        ..
    } = decide_rows(
        input,
        &directory,
        prior.clone(),
        checked.same_input,
        config.verify,
        interrupt,
    )
    .await?;
    let path = snapshot::path_for(&config.files.results);
    let fetched = identities
        .iter()
        .filter_map(|id| match directory.by_id(id) {
            Found::One(fetched) => Some(fetched),
            _ => None,
        });
    snapshot::write(&path, fetched, resuming).with_context(|| {
        format!(
            "cannot write the snapshot {}; nothing was sent",
            path.display()
        )
    })?;
    info!(
        rows = checked.wanted.rows,
        reads = counts.reads,
        pages = strategy.pages,
        wholeList = strategy.walked_whole_list,
        refused = plan.refused.count,
        snapshot = %path.display(),
        "identities looked up"
    );
    let list = if strategy.walked_whole_list {
        ListLength::Pages(strategy.pages)
    } else if strategy.pages > 0 {
        ListLength::MoreThan(strategy.pages)
    } else {
        ListLength::Unknown
    };
    Ok(LookedUp {
        directory,
        plan,
        confirmed: confirmed.unwrap_or_default(),
        counts,
        list,
    })
}

/// `--dry-run`: the input checked, the plan and the settings printed; nothing is sent or written.
async fn dry_run(
    config: &RunConfig,
    input: &Input,
    interrupt: &CancellationToken,
) -> anyhow::Result<ExitStatus> {
    let plan = check_input(input, None, None, config.verify, interrupt)
        .await?
        .plan;
    if !plan.is_clean() {
        report_bad_rows(&plan);
        return Ok(ExitStatus::InputError);
    }
    print_dry_run(config, &plan);
    Ok(ExitStatus::Success)
}

/// The batch itself, from the first request to the last outcome.
struct Batch<'a> {
    config: &'a RunConfig,
    input: Input,
    plan: &'a Plan,
    prior: Option<Arc<Prior>>,
    /// The input is the file the earlier run read (`--resume`).
    same_input: bool,
    /// What the lookup found, when rows needed it.
    directory: Option<Arc<Directory>>,
    /// The decisions of the plan the operator confirmed: what the feed sends.
    confirmed: Confirmed,
    /// `/security`'s throttle gate, which the lookup's reads may already have closed.
    security: Arc<ThrottleGate>,
    interrupt: CancellationToken,
}

impl Batch<'_> {
    /// Reader -> dispatcher -> workers -> results writer, with the progress bar watching. Nothing
    /// here returns an error: requests may have left, so whatever goes wrong is reported by the
    /// finishing steps (exit 4), never as "nothing was sent".
    async fn act(self, connection: Connection, sinks: Sinks) -> Acted {
        let config = self.config;
        info!(
            input = %self.plan.input,
            rows = self.plan.rows,
            actions = self.plan.actions,
            accounts = self.plan.accounts,
            rate = %config.graph.pacing.rate,
            concurrency = config.graph.pacing.concurrency,
            graph = %connection.client.service_root(),
            credentials = connection.tokens.describe(),
            results = %config.files.results.display(),
            "starting the run"
        );
        let started = Instant::now();
        let started_at = SystemTime::now();
        let stop = Arc::new(Stop::new());
        let on_signal = stop_on_signal(&self.interrupt, &stop);
        let (entry_tx, entry_rx) = mpsc::channel(1024);
        let counts = Arc::new(RowCounts::default());
        let writer = start_writer(sinks, entry_rx, counts.clone(), stop.clone());
        let ticker = start_ticker(entry_tx.clone());
        let (row_tx, row_rx) = mpsc::channel(8);
        let reader = {
            let feed = Feed {
                input: self.input,
                carry_columns: self.plan.carry_columns.clone(),
                prior: self.prior,
                same_input: self.same_input,
                directory: self.directory,
                verify: config.verify,
                results: config.files.results.clone(),
                accounts: usize::try_from(self.plan.accounts).unwrap_or(0),
                confirmed: self.confirmed,
            };
            let (stop, entry_tx) = (stop.clone(), entry_tx.clone());
            tokio::task::spawn_blocking(move || feed.run(&row_tx, &entry_tx, &stop))
        };
        let settings = RunSettings {
            concurrency: config.graph.pacing.concurrency,
            rate: config.graph.pacing.rate,
            burst: config.graph.pacing.burst,
            retry: config.graph.retry,
            max_failures: config.max_failures,
        };
        let shared = Arc::new(Shared::new(
            connection.client,
            connection.tokens,
            settings,
            stop.clone(),
            self.security,
        ));
        let progress = start_progress(self.plan.rows, config, &shared, &counts);
        run_batch(shared.clone(), row_rx, entry_tx).await;

        let mut problems = Vec::new();
        let read_whole_input = match reader.await {
            Ok(Ok(whole)) => whole,
            Ok(Err(error)) => {
                // Every row read so far has its record; the rest were never sent.
                stop.stop(StopReason::InputChanged {
                    detail: format!("{error:#}"),
                });
                false
            }
            Err(error) => {
                problems.push(format!("the input reader stopped unexpectedly: {error}"));
                false
            }
        };
        ticker.abort();
        let (writer, tally) = match writer.await {
            Ok((end, tally)) => (Some(end), tally),
            Err(error) => {
                problems.push(format!("the results writer stopped unexpectedly: {error}"));
                (None, Tally::default())
            }
        };
        if let Some(progress) = progress {
            progress.finish().await;
        }
        on_signal.abort();
        Acted {
            // Shut down by the finishing steps: the confirm phase still reads from it.
            mock: connection.mock,
            writer,
            tally,
            read_whole_input,
            problems,
            stop,
            shared,
            started_at,
            elapsed: started.elapsed(),
        }
    }
}

/// The first Ctrl-C or SIGTERM stops the batch: nothing new starts.
fn stop_on_signal(interrupt: &CancellationToken, stop: &Arc<Stop>) -> JoinHandle<()> {
    let (stop, interrupt) = (stop.clone(), interrupt.clone());
    tokio::spawn(async move {
        interrupt.cancelled().await;
        stop.stop(StopReason::Interrupted);
    })
}

/// The results writer on a thread of its own. It records; the tally (for the summary) and the
/// counts (for the progress bar) are folded here from what it shows us. A write error stops the
/// run: no request may leave that cannot be recorded.
fn start_writer(
    sinks: Sinks,
    entry_rx: mpsc::Receiver<Entry>,
    counts: Arc<RowCounts>,
    stop: Arc<Stop>,
) -> JoinHandle<(WriterEnd, Tally)> {
    tokio::task::spawn_blocking(move || {
        let mut tally = Tally::default();
        let mut observe = |outcome: &Outcome| {
            tally.push(outcome);
            counts.record(outcome.status);
        };
        let on_failure = |error: &std::io::Error| {
            stop.stop(StopReason::ResultsUnwritable {
                detail: error.to_string(),
            });
        };
        let end = write_entries(sinks, entry_rx, &mut observe, &on_failure);
        (end, tally)
    })
}

/// Lets the writer sync a quiet group on time: a tick every half [`SYNC_INTERVAL`].
fn start_ticker(entry_tx: mpsc::Sender<Entry>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SYNC_INTERVAL / 2);
        loop {
            every.tick().await;
            // A full queue means the writer is busy and will sync on its own.
            let _ = entry_tx.try_send(Entry::Tick);
        }
    })
}

/// The progress bar, reading the writer's counts and the workers' state.
fn start_progress(
    rows: u64,
    config: &RunConfig,
    shared: &Arc<Shared>,
    counts: &Arc<RowCounts>,
) -> Option<Progress> {
    let (shared, counts) = (shared.clone(), counts.clone());
    Progress::start(rows, config.progress, move || Snapshot {
        done: counts.done(),
        succeeded: counts.succeeded(),
        failed: counts.failed(),
        retrying: shared.retrying(),
        throttled_for: shared.gate.remaining(),
    })
}

/// The last read of the input, feeding the dispatcher.
struct Feed {
    input: Input,
    carry_columns: Vec<String>,
    prior: Option<Arc<Prior>>,
    same_input: bool,
    directory: Option<Arc<Directory>>,
    verify: bool,
    results: PathBuf,
    /// Distinct accounts, from the plan: sizes the checker.
    accounts: usize,
    /// The decisions of the plan the operator confirmed.
    confirmed: Confirmed,
}

impl Feed {
    /// Sends the plan's decisions: each row is decided by the decider that made the plan, from
    /// the same lookup and earlier results, and sent only when its decision is the confirmed
    /// one (a row that changed since stops the run there). A refused row is recorded `failed`
    /// at once and sends nothing; a row an earlier run did (`--resume`) has its earlier record
    /// carried over (with this input's row number and columns); a row an interrupted run had
    /// sent without recording an answer keeps count of those attempts. Returns whether the
    /// whole input was read.
    fn run(
        self,
        row_tx: &mpsc::Sender<Vec<(Job, Verdict)>>,
        entry_tx: &mpsc::Sender<Entry>,
        stop: &Stop,
    ) -> anyhow::Result<bool> {
        let config = &self.input.config;
        let mut rows = RowReader::open(&config.source, &config.options)?
            .with_carry_columns(self.carry_columns.clone());
        let checker = Checker::with_capacity(
            rows.file(),
            Some(rows.format()),
            config.unlisted,
            self.accounts,
        );
        let earlier = self.prior.as_deref().map(|prior| Earlier {
            prior,
            same_input: self.same_input,
        });
        let mut decider = Decider::new(
            checker,
            self.directory.as_deref(),
            earlier.as_ref(),
            self.verify,
        );
        // The writer drains until every sender is gone; a failed send means it died.
        let record = |outcome: Outcome| {
            entry_tx
                .blocking_send(Entry::Outcome(Box::new(outcome)))
                .is_ok()
        };
        let mut chunk = Vec::with_capacity(ROW_CHUNK);
        for (index, row) in rows.by_ref().enumerate() {
            let decision = decider.decide(row?);
            let changed = match &decision {
                RowDecision::Rejected(error) => Some(format!(
                    "line {} is now invalid: {}",
                    error.line, error.reason
                )),
                RowDecision::ToLookUp(row) => Some(not_as_confirmed(row.line)),
                RowDecision::Accounts(accounts) => (!self.confirmed.confirms(index, &decision))
                    .then(|| not_as_confirmed(accounts.first().map_or(0, |a| a.job().row))),
            };
            if let Some(detail) = changed {
                stop.stop(StopReason::InputChanged { detail });
                let _ = row_tx.blocking_send(chunk);
                return Ok(false);
            }
            let RowDecision::Accounts(accounts) = decision else {
                continue;
            };
            for account in accounts {
                let (job, verdict) = match account {
                    AccountDecision::Send(job) => (job, Verdict::Send),
                    AccountDecision::Duplicate(job) => (job, Verdict::Duplicate),
                    AccountDecision::CarriedOver { job, offset } => {
                        let outcome = resume::carried_over(&self.results, offset, job)?;
                        if !record(outcome) {
                            return Ok(false);
                        }
                        continue;
                    }
                    AccountDecision::Refused { job, refusal } => {
                        let mut outcome = Outcome::unsent(job, RowStatus::Failed, refusal.message);
                        outcome.error_code = Some(refusal.code.to_owned());
                        if !record(outcome) {
                            return Ok(false);
                        }
                        continue;
                    }
                };
                chunk.push((job, verdict));
                if chunk.len() == ROW_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(ROW_CHUNK));
                    if row_tx.blocking_send(full).is_err() {
                        return Ok(false);
                    }
                }
            }
        }
        if !chunk.is_empty() {
            let _ = row_tx.blocking_send(chunk);
        }
        Ok(true)
    }
}

/// Why the feed stops at a row decided otherwise than in the confirmed plan.
fn not_as_confirmed(line: u64) -> String {
    format!("line {line} is no longer what the confirmed plan holds")
}

/// Rows the reader hands the dispatcher at a time: one wake-up per chunk instead of per row
/// (the profile showed the reader and the dispatcher waking each other for every row).
const ROW_CHUNK: usize = 256;
