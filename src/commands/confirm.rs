//! Confirming that each accepted action took effect (SPEC section 10): the phase `run --confirm`
//! ends with, and the `confirm` subcommand, which does the same later from the results file (an
//! AD change can take its replication and sync time to show). Both read the succeeded records,
//! check those whose effect is not settled yet in rounds ([`crate::lookup::confirm`]), and
//! rewrite the records' `effect` and `confirmedAt` through the compaction's safe rewrite
//! ([`crate::output::effects`]). `confirm` holds the results' lock for as long as it runs, so it
//! never rewrites a file a run is writing, and can be run again at any time: rows already
//! `confirmed` or `notObservable` are not read again.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{ConfirmConfig, GraphAccess, InputConfig};
use crate::graph::auth::Tokens;
use crate::graph::client::GraphClient;
use crate::input::InputSource;
use crate::lookup::confirm::{Acted, ConfirmCounts, ListLength, confirm_effects};
use crate::lookup::{LookupStop, Reader};
use crate::outcome::Effect;
use crate::output::effects::{self, EffectCounts, Effects};
use crate::output::lock::{LockError, MOCK_ENDPOINT, RunLock};
use crate::output::progress::{Progress, ProgressMode};
use crate::output::summary::shell_words;
use crate::runner::rate::{Limiter, ThrottleGate};
use crate::runner::shutdown;
use crate::{ExitStatus, Fatal};

use super::connect::{connect, connect_unless_interrupted};
use crate::graph::permissions::Needs;

/// Where the phase reads from and what it rewrites.
pub(super) struct Phase<'a> {
    pub(super) graph: &'a GraphAccess,
    pub(super) client: &'a GraphClient,
    pub(super) tokens: &'a Tokens,
    /// `/security`'s throttle gate, shared with whatever ran before (a window told to the
    /// actions holds the reads too).
    pub(super) security: Arc<ThrottleGate>,
    pub(super) results: &'a Path,
    pub(super) wait: Duration,
    /// What the lookup learned of the list's length, if it walked it.
    pub(super) list: ListLength,
    pub(super) progress: ProgressMode,
    pub(super) interrupt: CancellationToken,
}

/// What the phase saw and what became of it.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// Every succeeded row's effect, as the results now say.
    pub(super) counts: EffectCounts,
    /// Why the rounds stopped before the deadline.
    pub(super) stopped: Option<LookupStop>,
    /// What went wrong with the files (reading the records, rewriting them).
    pub(super) problem: Option<String>,
    pub(super) reads: u64,
    pub(super) rounds: u64,
    pub(super) elapsed: Duration,
}

impl Checked {
    /// The exit status this phase asks for, when nothing else does: 130 after Ctrl-C, 4 when it
    /// could not go on, 3 when an action never showed.
    pub(super) fn status(&self) -> ExitStatus {
        match &self.stopped {
            Some(LookupStop::Interrupted) => ExitStatus::Interrupted,
            Some(_) => ExitStatus::StoppedEarly,
            None if self.problem.is_some() => ExitStatus::StoppedEarly,
            None if self.counts.not_confirmed > 0 => ExitStatus::RowsFailed,
            None => ExitStatus::Success,
        }
    }

    /// Why the phase stopped, in words that fit after the actions were sent.
    pub(super) fn stop_text(&self) -> Option<String> {
        let text = match self.stopped.as_ref()? {
            LookupStop::Interrupted => return None,
            LookupStop::Forbidden { service, detail } => format!(
                "Graph refused a read (403: {detail}); grant the application permission {} with admin consent, then run `graph-remediate confirm` on the results",
                service.permission()
            ),
            LookupStop::Credentials(detail) => format!(
                "no access token for the confirm phase's reads: {detail}; run `graph-remediate confirm` on the results once signing in works"
            ),
            LookupStop::Throttled { wait } => format!(
                "Graph asked the confirm phase's reads to wait {}, longer than --max-retry-wait; run `graph-remediate confirm` on the results later",
                humantime::format_duration(*wait)
            ),
            // The confirm phase reads no protect list; the lookup's stops are all matched here.
            LookupStop::Guard(detail) | LookupStop::StaleProtectEntries(detail) => detail.clone(),
        };
        Some(format!("the effects were not all checked: {text}"))
    }
}

/// Reads the succeeded records of `phase.results`, checks the unsettled ones in rounds, and
/// rewrites their `effect`. Never returns an error: the actions were sent, so whatever goes
/// wrong is reported in [`Checked`].
pub(super) async fn check_effects(phase: Phase<'_>) -> Checked {
    let started = Instant::now();
    let mut checked = Checked::default();
    let records = match effects::acted_records(phase.results) {
        Ok(records) => records,
        Err(error) => {
            checked.problem = Some(format!("cannot read the results to confirm them: {error}"));
            return checked;
        }
    };
    // Rows already settled by an earlier look keep what it saw.
    let (settled, open): (Vec<_>, Vec<_>) = records.into_iter().partition(|record| {
        matches!(
            record.effect,
            Some(Effect::Confirmed | Effect::NotObservable)
        )
    });
    for record in &settled {
        checked.counts.push(record.effect);
    }
    let rows: Vec<Acted> = open
        .iter()
        .map(|record| Acted {
            identity_account_id: record.identity_account_id.clone(),
            account_id: record.account_id.clone(),
            provider: record.provider,
            action: record.action,
            acted_at: record.started_at,
        })
        .collect();
    let reader = Arc::new(Reader::new(
        phase.client.clone(),
        phase.tokens.clone(),
        Limiter::new(phase.graph.pacing.rate, phase.graph.pacing.burst),
        phase.security.clone(),
        phase.graph.retry,
        phase.graph.pacing.concurrency,
        phase.interrupt.clone(),
    ));
    let counts = Arc::new(ConfirmCounts::default());
    let progress = {
        let counts = counts.clone();
        Progress::start_confirm(rows.len() as u64, phase.progress, move || {
            (
                counts.confirmed.load(std::sync::atomic::Ordering::Relaxed),
                counts.rounds.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    };
    let confirmation = confirm_effects(
        &rows,
        &reader,
        phase.wait,
        phase.graph.pacing.rate,
        phase.list,
        &counts,
        &phase.interrupt,
    )
    .await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let mut decided = Effects::new();
    for (record, effect) in open.iter().zip(&confirmation.effects) {
        checked
            .counts
            .push(effect.map(|(effect, _)| effect).or(record.effect));
        if let Some(effect) = effect {
            decided.insert(record.client_request_id.clone(), *effect);
        }
    }
    if let Err(error) = effects::rewrite(phase.results, &decided) {
        checked.problem = Some(format!(
            "cannot rewrite {} with the effects seen ({error}); the records still say what they said before",
            phase.results.display()
        ));
    }
    checked.reads = reader.stats().reads();
    checked.rounds = confirmation.rounds;
    checked.stopped = confirmation.stopped;
    checked.elapsed = started.elapsed();
    info!(
        checked = rows.len(),
        confirmed = checked.counts.confirmed,
        notConfirmed = checked.counts.not_confirmed,
        notObservable = checked.counts.not_observable,
        rounds = confirmation.rounds,
        reads = checked.reads,
        identityReads = confirmation.identity_reads,
        pageReads = confirmation.page_reads,
        userReads = confirmation.user_reads,
        elapsedSeconds = checked.elapsed.as_secs_f64(),
        "confirm phase finished"
    );
    checked
}

/// The command that looks again at the effects of the results at `results`.
pub(super) fn confirm_command(results: &Path) -> String {
    shell_words(&[
        "graph-remediate".to_owned(),
        "confirm".to_owned(),
        results.display().to_string(),
    ])
}

/// `graph-remediate confirm RESULTS`: the check of `run --confirm`, later.
pub async fn confirm(
    config: ConfirmConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitStatus> {
    let interrupt = shutdown::listen(shutdown);
    let results = &config.results;
    if !results.is_file() {
        return Err(anyhow!(
            "{}: no such results file; give the results a run wrote (-o)",
            results.display()
        ));
    }
    // Held until the end: a run (or another confirm) on these results is refused meanwhile.
    let claim = RunLock::claim(results).map_err(|error| match error {
        LockError::Busy { .. } | LockError::BusyElsewhere { .. } => {
            Fatal::stopped(anyhow::Error::new(error).context("nothing was read or rewritten"))
        }
        LockError::Io { .. } => anyhow::Error::new(error).context("nothing was read"),
    })?;
    match claim
        .previous
        .as_ref()
        .and_then(|state| state.endpoint.as_deref())
    {
        Some(MOCK_ENDPOINT) => {
            return Err(anyhow!(
                "{} holds a rehearsal's results (run --mock): the built-in mock that ran it is gone, so there is nothing to read back; rehearse the check with run --mock --confirm",
                results.display()
            ));
        }
        Some(endpoint) if endpoint != config.graph.target.endpoint() => {
            return Err(anyhow!(
                "{} holds the results of a run against {endpoint}, not {}: give the run's --cloud or --graph-url",
                results.display(),
                config.graph.target.endpoint()
            ));
        }
        _ => {}
    }
    // Read first: a file that is not results is refused before signing in.
    effects::acted_records(results).map_err(anyhow::Error::new)?;
    // `connect` reads the input only for `--mock`, which `confirm` refuses.
    let no_input = InputConfig {
        source: InputSource::File(results.clone()),
        options: Default::default(),
        unlisted: Default::default(),
    };
    // The reads of identities (and, for Entra ID rows, of users, whose 403 names its permission
    // when it comes); no action.
    let needs = Needs::of(false, true, false, false);
    // A responder's sign-in may wait minutes; the first Ctrl-C ends it, as in `run` and `auth`.
    let connection =
        connect_unless_interrupted(&interrupt, connect(&config.graph, &no_input, &needs)).await?;
    let checked = check_effects(Phase {
        graph: &config.graph,
        client: &connection.client,
        tokens: &connection.tokens,
        security: Arc::new(ThrottleGate::new()),
        results,
        wait: config.wait,
        list: ListLength::Unknown,
        progress: config.progress,
        interrupt,
    })
    .await;
    drop(claim);
    let status = checked.status();
    if let Some(problem) = &checked.problem {
        error!(problem = %problem, "after the confirm phase");
    }
    if let Some(text) = checked.stop_text() {
        warn!("{text}");
    }
    eprint!("{}", render(&checked, results, status));
    Ok(status)
}

/// The end-of-command summary of `confirm`.
fn render(checked: &Checked, results: &Path, status: ExitStatus) -> String {
    use std::fmt::Write as _;
    let counts = &checked.counts;
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Confirm: {} confirmed, {} notConfirmed, {} notObservable{} (exit {})",
        counts.confirmed,
        counts.not_confirmed,
        counts.not_observable,
        if counts.unchecked > 0 {
            format!(", {} not checked yet", counts.unchecked)
        } else {
            String::new()
        },
        status.code()
    );
    let _ = writeln!(
        out,
        "  reads       {} in {} round(s), {:.1}s",
        checked.reads,
        checked.rounds,
        checked.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "  results     {}", results.display());
    if let Some(problem) = &checked.problem {
        let _ = writeln!(out, "  problem     {problem}");
    }
    if let Some(text) = checked.stop_text() {
        let _ = writeln!(out, "  stopped     {text}");
    }
    let again = confirm_command(results);
    if counts.not_confirmed > 0 {
        let _ = writeln!(
            out,
            "Next:\n  - {} action(s) never showed: check the Defender for Identity action account's rights in Active Directory, the sensor's health, and the Entra role of the Defender for Identity app; then look again: {again}",
            counts.not_confirmed
        );
    } else if counts.unchecked > 0 {
        let _ = writeln!(out, "Next:\n  - look at the rest: {again}");
    }
    out
}
