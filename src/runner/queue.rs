//! The dispatcher between the reader and the workers. It keeps one account's rows in file order
//! and never lets two of them run at once: a row whose account is busy is parked until the earlier
//! row finishes. Duplicates become `skipped` records here, and once the run stops every remaining
//! row becomes a `not_attempted` record, so the results hold one record per input row.
//!
//! It also sends each row's first in-flight note to the writer as it hands the row on (issue 17):
//! the note's fdatasync then runs while the rows ahead of it are on the wire, grouped with every
//! other note queued meanwhile, instead of on the path of its own request. The worker still
//! waits for the note to be on disk before the request may leave, so `--resume` sees every send;
//! at most the rows queued for a worker (`--concurrency`) are noted ahead of their requests.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::shutdown::Stop;
use crate::input::Job;
use crate::input::plan::{AccountKey, Verdict};
use crate::outcome::{Entry, InflightNote, Outcome, RowStatus};

/// Rows that may wait for a busy account before reading pauses. Bounds memory when a file lists
/// one account thousands of times.
const PARK_LIMIT: usize = 4096;

/// A row handed to a worker, with the in-flight note of its first attempt on its way to disk.
pub(crate) struct Dispatched {
    pub(crate) job: Job,
    /// `None` for a row that cannot be sent (no identity provider): nothing was noted.
    pub(crate) first_note: Option<FirstNote>,
}

/// The first attempt's note, sent to the writer: its request id, and the writer's answer once
/// the note is on disk (`Err`: the request must not leave, and why).
pub(crate) struct FirstNote {
    pub(crate) client_request_id: String,
    pub(crate) on_disk: oneshot::Receiver<Result<(), String>>,
}

pub(crate) struct Dispatcher {
    pub(crate) input: mpsc::Receiver<Vec<(Job, Verdict)>>,
    pub(crate) work_tx: async_channel::Sender<Dispatched>,
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
        let first_note = match job.provider {
            Some(provider) => Some(self.note_first_attempt(&job, provider).await),
            None => None,
        };
        if let Err(returned) = self.work_tx.send(Dispatched { job, first_note }).await {
            // Every worker is gone (they only leave when this sender closes, so this is a bug
            // path); still account for the row.
            let job = returned.into_inner().job;
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

    /// Sends the note of `job`'s first attempt to the writer, without waiting for the disk.
    async fn note_first_attempt(
        &self,
        job: &Job,
        provider: crate::graph::model::Provider,
    ) -> FirstNote {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let note = InflightNote::new(job, provider, &client_request_id, 1);
        let (ack, on_disk) = oneshot::channel();
        // A writer that is gone drops `ack`: the worker then sends nothing.
        let _ = self.entry_tx.send(Entry::Started { note, ack }).await;
        FirstNote {
            client_request_id,
            on_disk,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{Action, Provider};
    use crate::outcome::StopReason;
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    fn job(row: u64, account: &str, action: Action) -> Job {
        Job {
            row,
            identity_account_id: format!("ia-{account}"),
            account_id: account.to_owned(),
            action,
            provider: Some(Provider::Okta),
            carry: vec![],
            resolved_by: None,
            earlier_attempts: 0,
        }
    }

    /// What the fake workers saw, and what the dispatcher recorded itself.
    #[derive(Default)]
    struct Seen {
        started: Vec<u64>,
        recorded: Vec<(u64, RowStatus)>,
    }

    /// Runs the dispatcher over `rows` with `workers` fake workers that hold each row for a few
    /// milliseconds (longer for earlier rows, so later rows would overtake them if allowed), and
    /// checks that no two rows of one account are ever at a worker at once.
    async fn dispatch(rows: Vec<(Job, Verdict)>, workers: usize, stop: Arc<Stop>) -> Seen {
        let (input_tx, input) = mpsc::channel(8);
        let (work_tx, work_rx) = async_channel::bounded::<Dispatched>(workers);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (entry_tx, mut entry_rx) = mpsc::channel(64);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let busy = Arc::new(Mutex::new(HashSet::<AccountKey>::new()));
        let mut pool = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (work_rx, done_tx, seen, busy) =
                (work_rx.clone(), done_tx.clone(), seen.clone(), busy.clone());
            pool.spawn(async move {
                while let Ok(Dispatched { job, .. }) = work_rx.recv().await {
                    let key = AccountKey::of(&job);
                    assert!(
                        busy.lock().unwrap().insert(key),
                        "row {} overlapped its account's earlier row",
                        job.row
                    );
                    seen.lock().unwrap().started.push(job.row);
                    tokio::time::sleep(Duration::from_millis(20u64.saturating_sub(job.row))).await;
                    busy.lock().unwrap().remove(&key);
                    let _ = done_tx.send(key);
                }
            });
        }
        drop(work_rx);
        let recorder = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Some(entry) = entry_rx.recv().await {
                    if let Entry::Outcome(outcome) = entry {
                        seen.lock()
                            .unwrap()
                            .recorded
                            .push((outcome.job.row, outcome.status));
                    }
                }
            })
        };
        let dispatcher = Dispatcher {
            input,
            work_tx,
            done_rx,
            done_tx,
            entry_tx,
            stop,
        };
        let running = tokio::spawn(dispatcher.run());
        input_tx.send(rows).await.unwrap();
        drop(input_tx);
        running.await.unwrap();
        while pool.join_next().await.is_some() {}
        recorder.await.unwrap();
        Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn one_accounts_rows_run_one_at_a_time_in_file_order() {
        let rows = vec![
            (job(2, "a", Action::Disable), Verdict::Send),
            (job(3, "b", Action::Disable), Verdict::Send),
            (job(4, "a", Action::RevokeAllSessions), Verdict::Send),
            (job(5, "a", Action::Enable), Verdict::Send),
            (job(6, "c", Action::Disable), Verdict::Send),
            (job(7, "b", Action::Enable), Verdict::Send),
        ];
        let seen = dispatch(rows, 4, Arc::new(Stop::new())).await;
        let order_of = |rows: &[u64]| -> Vec<u64> {
            seen.started
                .iter()
                .copied()
                .filter(|r| rows.contains(r))
                .collect()
        };
        assert_eq!(
            order_of(&[2, 4, 5]),
            vec![2, 4, 5],
            "account a in file order"
        );
        assert_eq!(order_of(&[3, 7]), vec![3, 7], "account b in file order");
        assert_eq!(seen.started.len(), 6);
        assert!(seen.recorded.is_empty(), "the workers record sent rows");
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_are_recorded_skipped_without_a_worker() {
        let rows = vec![
            (job(2, "a", Action::Disable), Verdict::Send),
            (job(3, "a", Action::Disable), Verdict::Duplicate),
        ];
        let seen = dispatch(rows, 2, Arc::new(Stop::new())).await;
        assert_eq!(seen.started, vec![2]);
        assert_eq!(seen.recorded, vec![(3, RowStatus::Skipped)]);
    }

    #[tokio::test(start_paused = true)]
    async fn once_stopped_every_row_is_recorded_not_attempted() {
        let stop = Arc::new(Stop::new());
        stop.stop(StopReason::Interrupted);
        let rows = (2..8)
            .map(|row| (job(row, "a", Action::Disable), Verdict::Send))
            .collect();
        let seen = dispatch(rows, 2, stop).await;
        assert!(seen.started.is_empty());
        let mut recorded = seen.recorded;
        recorded.sort_unstable_by_key(|(row, _)| *row);
        assert_eq!(
            recorded,
            (2..8)
                .map(|row| (row, RowStatus::NotAttempted))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_account_listed_past_the_park_limit_still_runs_every_row_in_order() {
        let rows: Vec<(Job, Verdict)> = (0..(PARK_LIMIT as u64 + 50))
            .map(|i| {
                let action = if i % 2 == 0 {
                    Action::Disable
                } else {
                    Action::Enable
                };
                (job(100 + i, "same", action), Verdict::Send)
            })
            .collect();
        let expected: Vec<u64> = rows.iter().map(|(job, _)| job.row).collect();
        let seen = dispatch(rows, 8, Arc::new(Stop::new())).await;
        assert_eq!(seen.started, expected);
    }
}
