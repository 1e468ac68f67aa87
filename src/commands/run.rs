//! `run`: the batch from start to end, as three phases, each taking what the last returned.
//! `prepare`, before the first request (its steps in [`super::prepare`]): the files, the input,
//! the lock, earlier results, the input check, the lookup, confirmation, connecting; any error
//! there is an [`Unsent`]. `act`, the batch: the feed sending the confirmed plan's decisions, the
//! runner, the results writer and the progress bar. [`super::finish`], after the last outcome:
//! compaction, the undo file, the summary and the exit status.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Mode, RunConfig};
use crate::graph::auth::token_tenant_and_app;
use crate::graph::permissions::Needs;
use crate::input::plan::{Checker, Plan, Verdict};
use crate::input::{Job, RowReader};
use crate::lookup::confirm::ListLength;
use crate::lookup::decide::{AccountDecision, Confirmed, Decider, DoneEarlier, RowDecision};
use crate::lookup::directory::Found;
use crate::lookup::{Directory, ReadCounts, Wanted};
use crate::outcome::{Entry, Outcome, RowStatus, StopReason};
use crate::output::journal::rfc3339;
use crate::output::journal::{
    InflightLog, Journal, JournalStart, SYNC_INTERVAL, Sinks, WriterEnd, write_entries,
};
use crate::output::lock::{RunAbout, RunLock, RunState};
use crate::output::progress::{Progress, RowCounts, Snapshot};
use crate::output::resume;
use crate::output::snapshot;
use crate::output::summary::Tally;
use crate::output::summary::shell_words;
use crate::runner::rate::ThrottleGate;
use crate::runner::shutdown::{self, Stop};
use crate::runner::{RunSettings, Shared, run_batch};
use crate::{ExitStatus, Unsent};
use secrecy::ExposeSecret;

use super::connect::{Connection, Connector};
use super::finish::{Acted, After, finish, invoked_as};
use super::look_up::{decide_rows, find};
use super::prepare::{
    CreatedResults, Input, Resumed, check_files, check_guards_kept, check_input, check_resumable,
    claim_results, confirm, earlier_results, guards_record, log_guards, print_dry_run, read_input,
    report_bad_rows,
};
use super::validate::Checked;

/// `run`: check every row, then act on each and record every outcome. `shutdown` resolves on the
/// first Ctrl-C or SIGTERM. Every error before the first request is an [`Unsent`], whatever
/// step it came from: it picks the exit status and says that nothing was sent.
pub async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let interrupt = shutdown::listen(shutdown);
    // The guards first: a protect file that cannot be read stops the run before any other file
    // is touched (the command line's conversion only names them, issue 17).
    let protect = config.protect_files.read().map_err(Unsent::input)?;
    let config = config.guarded_by(protect).map_err(Unsent::input)?;
    let ready = match prepare(&config, &interrupt).await.map_err(Unsent::from)? {
        Prepared::Finished(status) => return Ok(status),
        Prepared::Ready(ready) => *ready,
    };
    // The lock is held until the run ends: no other run writes these results meanwhile.
    let (plan, acted, after, _lock) = ready.act(&config, interrupt).await;
    Ok(finish(&config, &plan, acted, after).await)
}

/// What the steps before the first request came to.
enum Prepared<'c> {
    /// Everything the batch needs; nothing has been sent.
    Ready(Box<Ready<'c>>),
    /// Nothing to send: `--dry-run`, or rows with errors (their report is printed).
    Finished(ExitStatus),
}

/// What the batch starts from: the confirmed plan and its decisions, what the lookup found, the
/// connection and the results file, claimed and open.
struct Ready<'c> {
    input: Input,
    plan: Plan,
    /// The decisions of the plan the operator confirmed: what the feed sends.
    confirmed: Confirmed,
    resumed: Option<Resumed>,
    lookup: Option<LookedUp>,
    /// `/security`'s throttle gate, which the lookup's reads may already have closed.
    security: Arc<ThrottleGate>,
    connection: Connection,
    /// The run's lock on its results, taken first and held to the end.
    lock: RunLock,
    sinks: Sinks,
    /// The results file this run created, removed if the run ends before its first request.
    created: CreatedResults<'c>,
}

/// Everything before the first request: the files, the input, the lock, earlier results, the
/// input check, the lookup, confirmation, connecting, and the results file opened.
async fn prepare<'c>(
    config: &'c RunConfig,
    interrupt: &CancellationToken,
) -> anyhow::Result<Prepared<'c>> {
    check_files(config)?;
    log_guards(&config.guardrails);
    let input = read_input(&config.input, interrupt).await?;
    if config.mode == Mode::DryRun {
        return dry_run(config, &input, interrupt)
            .await
            .map(Prepared::Finished);
    }
    let mut claim = claim_results(&config.files)?;
    let created = CreatedResults::new(&config.files.results, claim.created);
    let prior = earlier_results(config, &claim).await?;
    let checked = check_input(
        &input,
        prior.clone(),
        claim.previous.as_ref(),
        config.verify,
        interrupt,
    )
    .await?;
    if !checked.plan.is_clean() {
        report_bad_rows(&checked.plan);
        return Ok(Prepared::Finished(ExitStatus::InputError));
    }
    let resumed = match prior {
        Some(prior) => {
            check_resumable(
                config,
                claim.previous.as_ref(),
                &checked.fingerprint,
                interrupt,
            )
            .await?;
            check_guards_kept(config, claim.previous.as_ref(), &prior)?;
            Some(Resumed {
                prior,
                same_input: checked.same_input,
            })
        }
        None => None,
    };
    let needs = Needs::of(
        true,
        !checked.wanted.is_empty(),
        checked.wanted.reads_users(),
        config.guardrails.privileged,
    );
    let mut connector = Connector::new(&config.graph, &input.config, needs, interrupt);
    // Identities are looked up before the plan is confirmed, so that it says what will be sent.
    let security = Arc::new(ThrottleGate::new());
    let (plan, confirmed, lookup) = if checked.wanted.is_empty() {
        (checked.plan, checked.confirmed, None)
    } else {
        let connection = connector.connection().await?;
        let mut lookup = look_up_rows(
            config,
            connection,
            &security,
            &input,
            &checked.wanted,
            resumed.as_ref(),
            interrupt,
        )
        .await?;
        let confirmed = std::mem::take(&mut lookup.confirmed);
        (lookup.plan.clone(), confirmed, Some(lookup))
    };
    confirm(config, &plan, interrupt).await?;
    // Without a lookup, an unconfirmed run never signs in.
    let connection = connector.into_connection().await?;
    let state = run_state(config, &plan, &checked.fingerprint, &connection).await;
    claim
        .lock
        .record(&state)
        .with_context(|| format!("cannot write the lock file {}", claim.lock.path().display()))?;
    let sinks = open_sinks(config, claim.results, &plan, resumed.as_ref())?;
    Ok(Prepared::Ready(Box::new(Ready {
        input,
        plan,
        confirmed,
        resumed,
        lookup,
        security,
        connection,
        lock: claim.lock,
        sinks,
        created,
    })))
}

/// The results file (new, or continued after the earlier run's last complete record) and the
/// in-flight log beside it. Nothing has been sent yet.
fn open_sinks(
    config: &RunConfig,
    results_file: std::fs::File,
    plan: &Plan,
    resumed: Option<&Resumed>,
) -> anyhow::Result<Sinks> {
    let results = &config.files.results;
    let start = match resumed.map(|resumed| &*resumed.prior) {
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
    let journal = Journal::start(results, results_file, &plan.carry_columns, start)
        .with_context(|| format!("cannot write the results file {}", results.display()))?;
    let inflight = InflightLog::open(results)
        .with_context(|| format!("cannot open {}", InflightLog::path_for(results).display()))?;
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
    wanted: &Wanted,
    resumed: Option<&Resumed>,
    interrupt: &CancellationToken,
) -> anyhow::Result<LookedUp> {
    let (directory, strategy, counts) = find(
        &config.graph,
        &config.guardrails,
        config.progress,
        &connection.client,
        &connection.tokens,
        security,
        wanted,
        interrupt,
    )
    .await?;
    let resuming = resumed.is_some();
    let Checked {
        plan,
        identities,
        confirmed,
        ..
    } = decide_rows(
        input,
        &directory,
        resumed.cloned(),
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
    snapshot::write(&path, fetched, resuming)
        .with_context(|| format!("cannot write the snapshot {}", path.display()))?;
    info!(
        rows = wanted.rows,
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

impl Ready<'_> {
    /// The batch, from the first request to the last outcome: reader -> dispatcher -> workers
    /// -> results writer, with the progress bar watching; and what the finishing steps need.
    /// Nothing here returns an error: requests may have left, so whatever goes wrong is
    /// reported by the finishing steps (exit 4), never as "nothing was sent".
    async fn act(
        self,
        config: &RunConfig,
        interrupt: CancellationToken,
    ) -> (Plan, Acted, After, RunLock) {
        let Ready {
            input,
            plan,
            confirmed,
            resumed,
            lookup,
            security,
            connection,
            lock,
            sinks,
            mut created,
        } = self;
        created.keep();
        let (directory, after) = match lookup {
            Some(looked_up) => (
                Some(looked_up.directory),
                After {
                    lookup: looked_up.counts,
                    // What the lookup learned of the list's length spares the confirm phase a
                    // probe of it.
                    list: looked_up.list,
                    interrupt: interrupt.clone(),
                },
            ),
            None => (
                None,
                After {
                    lookup: ReadCounts::default(),
                    list: ListLength::Unknown,
                    interrupt: interrupt.clone(),
                },
            ),
        };
        info!(
            input = %plan.input,
            rows = plan.rows,
            actions = plan.actions,
            accounts = plan.accounts,
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
        let on_signal = stop_on_signal(&interrupt, &stop);
        let (entry_tx, entry_rx) = mpsc::channel(1024);
        let counts = Arc::new(RowCounts::default());
        let writer = start_writer(sinks, entry_rx, counts.clone(), stop.clone());
        let ticker = start_ticker(entry_tx.clone());
        let (row_tx, row_rx) = mpsc::channel(8);
        let reader = {
            let feed = Feed {
                input,
                carry_columns: plan.carry_columns.clone(),
                resumed,
                directory,
                verify: config.verify,
                results: config.files.results.clone(),
                accounts: usize::try_from(plan.accounts).unwrap_or(0),
                confirmed,
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
            security,
        ));
        let progress = start_progress(plan.rows, config, &shared, &counts);
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
        let acted = Acted {
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
        };
        (plan, acted, after, lock)
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
    resumed: Option<Resumed>,
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
        let earlier = self.resumed.as_ref().map(Resumed::earlier);
        let mut decider = Decider::new(
            checker,
            self.directory.as_deref(),
            earlier.as_ref().map(|earlier| earlier as &dyn DoneEarlier),
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
