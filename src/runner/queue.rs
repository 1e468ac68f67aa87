//! The dispatcher between the reader and the workers. It keeps one account's rows in file order
//! and never lets two of them run at once: a row whose account is busy is parked until the earlier
//! row finishes. Duplicates become `skipped` records here, and once the run stops every remaining
//! row becomes a `not_attempted` record, so the results hold one record per input row.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::shutdown::Stop;
use crate::input::Job;
use crate::input::plan::{AccountKey, Verdict};
use crate::outcome::{Entry, Outcome, RowStatus};

/// Rows that may wait for a busy account before reading pauses. Bounds memory when a file lists
/// one account thousands of times.
const PARK_LIMIT: usize = 4096;

pub(crate) struct Dispatcher {
    pub(crate) input: mpsc::Receiver<Vec<(Job, Verdict)>>,
    pub(crate) work_tx: async_channel::Sender<Job>,
    pub(crate) done_rx: mpsc::UnboundedReceiver<AccountKey>,
    /// The workers' side of `done_rx`, for rows the dispatcher settles itself.
    pub(crate) done_tx: mpsc::UnboundedSender<AccountKey>,
    pub(crate) entry_tx: mpsc::Sender<Entry>,
    pub(crate) stop: Arc<Stop>,
}

impl Dispatcher {
    pub(crate) async fn run(mut self) {
        // Accounts with a row at a worker, and the rows waiting behind it.
        let mut busy: HashMap<AccountKey, VecDeque<Job>> = HashMap::new();
        let mut parked = 0usize;
        let mut input_open = true;
        // The reader sends rows in chunks: one wake-up per chunk, not per row.
        let mut chunk = Vec::new().into_iter();
        loop {
            // Finished rows first: they free accounts (and their parked rows) for the workers.
            while let Ok(key) = self.done_rx.try_recv() {
                self.release(&mut busy, &mut parked, key).await;
            }
            if parked < PARK_LIMIT
                && let Some((job, verdict)) = chunk.next()
            {
                self.admit(&mut busy, &mut parked, job, verdict).await;
                continue;
            }
            if !input_open && busy.is_empty() && chunk.len() == 0 {
                break;
            }
            tokio::select! {
                biased;
                Some(key) = self.done_rx.recv() => {
                    self.release(&mut busy, &mut parked, key).await;
                }
                rows = self.input.recv(), if input_open && parked < PARK_LIMIT && chunk.len() == 0 => {
                    match rows {
                        Some(rows) => chunk = rows.into_iter(),
                        None => input_open = false,
                    }
                }
            }
        }
    }

    /// A row from the reader: skipped if a duplicate, parked behind its account's earlier row,
    /// or started.
    async fn admit(
        &self,
        busy: &mut HashMap<AccountKey, VecDeque<Job>>,
        parked: &mut usize,
        job: Job,
        verdict: Verdict,
    ) {
        if verdict == Verdict::Duplicate {
            let outcome = Outcome::unsent(
                job,
                RowStatus::Skipped,
                "duplicate of an earlier row (same identity account, account, action and provider); it runs once",
            );
            self.record(outcome).await;
            return;
        }
        let key = AccountKey::of(&job);
        match busy.get_mut(&key) {
            Some(waiting) => {
                waiting.push_back(job);
                *parked += 1;
            }
            None => {
                busy.insert(key, VecDeque::new());
                self.start(job).await;
            }
        }
    }

    /// An account's row finished: start the next row parked behind it, or free the account.
    async fn release(
        &self,
        busy: &mut HashMap<AccountKey, VecDeque<Job>>,
        parked: &mut usize,
        key: AccountKey,
    ) {
        match busy.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(job) => {
                *parked -= 1;
                self.start(job).await;
            }
            None => {
                busy.remove(&key);
            }
        }
    }

    /// Hands a row to the workers, or records it as not attempted once the run has stopped.
    async fn start(&self, job: Job) {
        if self.stop.is_stopped() {
            let reason = self
                .stop
                .reason()
                .map(|r| r.not_attempted_reason())
                .unwrap_or_default();
            // The worker protocol still needs the account released.
            let key = AccountKey::of(&job);
            self.record(Outcome::unsent(job, RowStatus::NotAttempted, reason))
                .await;
            self.release_later(key);
            return;
        }
        if let Err(returned) = self.work_tx.send(job).await {
            // Every worker is gone (they only leave when this sender closes, so this is a bug
            // path); still account for the row.
            let job = returned.into_inner();
            let key = AccountKey::of(&job);
            self.record(Outcome::unsent(
                job,
                RowStatus::NotAttempted,
                "not started: no worker was left to run it",
            ))
            .await;
            self.release_later(key);
        }
    }

    async fn record(&self, outcome: Outcome) {
        // The writer outlives the dispatcher; if it is gone, the run is failing anyway and the
        // writer's own error is what gets reported.
        let _ = self.entry_tx.send(Entry::Outcome(Box::new(outcome))).await;
    }

    /// Rows recorded without a worker still free their account, through the same path a worker
    /// uses, so parked rows behind them are seen to as well.
    fn release_later(&self, key: AccountKey) {
        // The receiver lives in this same struct, so the send cannot fail while we run.
        let _ = self.done_tx.send(key);
    }
}
