//! The lookup step of `run` and `resolve` (SPEC section 8): the reads, with progress shown and the
//! first signal honoured, then the input read again to decide every row from what was found.
//! A lookup that cannot go on (a 403 naming the permission, no token) stops the run with
//! nothing sent.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::Unsent;
use crate::config::GraphAccess;
use crate::graph::auth::Tokens;
use crate::graph::client::GraphClient;
use crate::lookup::guard::{Guardrails, read_guard};
use crate::lookup::{Directory, LookupStop, ReadCounts, Reader, Strategy, Wanted, look_up};
use crate::output::progress::{Progress, ProgressMode, Snapshot};
use crate::runner::rate::{Limiter, ThrottleGate};

use super::prepare::{Input, Resumed, unless_interrupted};
use super::validate::{Checked, Keep, check_rows};
use crate::lookup::decide::DoneEarlier;

/// Sends the reads `wanted` needs, then those of the `guardrails`, paced by `--rate`, through
/// `security` (the `/security` throttle gate, which the actions then share).
#[allow(clippy::too_many_arguments)]
pub(super) async fn find(
    graph: &GraphAccess,
    guardrails: &Guardrails,
    progress: ProgressMode,
    client: &GraphClient,
    tokens: &Tokens,
    security: &Arc<ThrottleGate>,
    wanted: &Wanted,
    interrupt: &CancellationToken,
) -> anyhow::Result<(Arc<Directory>, Strategy, ReadCounts)> {
    let reader = Arc::new(Reader::new(
        client.clone(),
        tokens.clone(),
        Limiter::new(graph.pacing.rate, graph.pacing.burst),
        security.clone(),
        graph.retry,
        graph.pacing.concurrency,
        interrupt.clone(),
    ));
    let progress = {
        let reader = reader.clone();
        Progress::start_lookup(progress, move || Snapshot {
            done: reader.stats().reads(),
            ..Snapshot::default()
        })
    };
    let looked_up = async {
        let (mut directory, strategy) = look_up(wanted, &reader).await?;
        let guard = read_guard(guardrails, &reader, &mut directory).await?;
        directory.set_guard(guard);
        Ok::<_, LookupStop>((directory, strategy))
    }
    .await;
    if let Some(progress) = progress {
        progress.finish().await;
    }
    let counts = reader.stats().counts();
    match looked_up {
        Ok((directory, strategy)) => Ok((Arc::new(directory), strategy, counts)),
        Err(LookupStop::Interrupted) => Err(Unsent::interrupted(LookupStop::Interrupted).into()),
        // The protect file must change, as for a line that names nobody: exit 2 (issue 16).
        Err(stop @ LookupStop::StaleProtectEntries(_)) => Err(Unsent::input(stop).into()),
        Err(stop) => Err(Unsent::stopped(stop).into()),
    }
}

/// The input read again, every row decided from what the lookup found: the plan to confirm,
/// the digest of its decisions, and the identities the rows resolved to.
pub(super) async fn decide_rows(
    input: &Input,
    directory: &Arc<Directory>,
    resumed: Option<Resumed>,
    verify: bool,
    interrupt: &CancellationToken,
) -> anyhow::Result<Checked> {
    let config = input.config.clone();
    let directory = directory.clone();
    unless_interrupted(interrupt, "deciding the rows", move || {
        let earlier = resumed.as_ref().map(Resumed::earlier);
        check_rows(
            &config.source,
            &config.options,
            config.unlisted,
            Some(&directory),
            earlier.as_ref().map(|earlier| earlier as &dyn DoneEarlier),
            verify,
            Keep::PlanAndDecisions,
        )
        .context("reading the input again")
    })
    .await
}
