//! What becomes of a row and of a run: the types the runner decides and the output records,
//! shared by both so that neither imports the other. A row's [`Outcome`] with its [`RowStatus`];
//! why a run stopped ([`StopReason`]); and the [`Entry`] protocol between the workers and the
//! results writer, with the [`InflightNote`] each request leaves before it goes.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::graph::model::{Action, Provider};
use crate::input::Job;
use crate::input::plan::{AccountKey, RowKey};

/// What became of a row (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Succeeded,
    Failed,
    Skipped,
    NotAttempted,
}

impl RowStatus {
    #[cfg(test)]
    pub const ALL: [RowStatus; 4] = [
        RowStatus::Succeeded,
        RowStatus::Failed,
        RowStatus::Skipped,
        RowStatus::NotAttempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Succeeded => "succeeded",
            RowStatus::Failed => "failed",
            RowStatus::Skipped => "skipped",
            RowStatus::NotAttempted => "not_attempted",
        }
    }
}

/// One row's outcome: the job and what happened to it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: Job,
    pub status: RowStatus,
    pub correlation_id: Option<String>,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Whether the action's effect was seen (`run --confirm`, `confirm`: SPEC section 10);
    /// `None` when nobody looked.
    pub effect: Option<Effect>,
    /// When a read first showed the effect.
    pub confirmed_at: Option<SystemTime>,
}

/// What a read after the action showed of it (SPEC section 10). A 200 from invokeAction means
/// Defender for Identity accepted the action, not that its sensor carried it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// The identity's state shows the action.
    Confirmed,
    /// It did not show before the wait ran out.
    NotConfirmed,
    /// Graph shows nothing that would tell (a password reset, an AD or Okta session revoke).
    NotObservable,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Confirmed => "confirmed",
            Effect::NotConfirmed => "notConfirmed",
            Effect::NotObservable => "notObservable",
        }
    }
}

impl Outcome {
    /// A row that was never sent, with the reason.
    pub fn unsent(job: Job, status: RowStatus, reason: impl Into<String>) -> Outcome {
        Outcome {
            job,
            status,
            correlation_id: None,
            http_status: None,
            attempts: 0,
            error_code: None,
            error_message: Some(reason.into()),
            request_id: None,
            client_request_id: None,
            started_at: None,
            finished_at: None,
            effect: None,
            confirmed_at: None,
        }
    }
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Graph answered 403: the app lacks the permission or the user the role.
    Forbidden { row: u64, detail: String },
    /// The input changed between the check and the run.
    InputChanged { detail: String },
    /// No token could be had (the token endpoint refused the credentials, or is unreachable).
    Credentials { detail: String },
    /// `--max-failures` rows failed.
    TooManyFailures { limit: u64 },
    /// Graph told the run to wait longer than `--max-retry-wait`.
    ThrottledTooLong {
        row: u64,
        wait: Duration,
        limit: Duration,
    },
    /// The results file (or the in-flight log beside it) could not be written: no request may
    /// leave that cannot be recorded.
    ResultsUnwritable { detail: String },
}

impl StopReason {
    /// The text recorded on rows that were not attempted because of this stop.
    pub fn not_attempted_reason(&self) -> String {
        match self {
            StopReason::Interrupted => "not started: the run was interrupted".to_owned(),
            StopReason::Forbidden { row, .. } => {
                format!("not started: the run stopped after a 403 on row {row}")
            }
            StopReason::InputChanged { .. } => {
                "not started: the input changed while the run was reading it".to_owned()
            }
            StopReason::Credentials { .. } => {
                "not started: the run stopped because no access token could be had".to_owned()
            }
            StopReason::TooManyFailures { limit } => {
                format!("not started: the run stopped after {limit} failed rows (--max-failures)")
            }
            StopReason::ThrottledTooLong { row, .. } => {
                format!("not started: Graph throttled row {row} for longer than --max-retry-wait")
            }
            StopReason::ResultsUnwritable { .. } => {
                "not started: the results could not be written".to_owned()
            }
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Interrupted => f.write_str("interrupted"),
            StopReason::Forbidden { row, detail } => write!(
                f,
                "Graph refused row {row} with 403 ({detail}). The app needs the application permission SecurityIdentitiesActions.ReadWrite.All with admin consent (a delegated user also needs the Security Administrator role); no new rows were started"
            ),
            StopReason::InputChanged { detail } => write!(
                f,
                "the input changed after it was checked ({detail}); no new rows were started"
            ),
            StopReason::Credentials { detail } => {
                write!(f, "no access token: {detail}; no new rows were started")
            }
            StopReason::TooManyFailures { limit } => write!(
                f,
                "{limit} rows failed (--max-failures {limit}); no new rows were started. Look at the errors in the results before resuming"
            ),
            StopReason::ThrottledTooLong { row, wait, limit } => write!(
                f,
                "Graph throttled row {row} and asked to wait {}, longer than --max-retry-wait {}; no new rows were started and nothing was sent inside that window. Resume once it has passed",
                humantime::format_duration(*wait),
                humantime::format_duration(*limit)
            ),
            StopReason::ResultsUnwritable { detail } => write!(
                f,
                "the results could not be written ({detail}); no new rows were started and no request left without its record. Free space or fix the cause, then resume: rows with a record are kept"
            ),
        }
    }
}

/// What the writer thread is sent.
pub enum Entry {
    /// A row's final record.
    Outcome(Box<Outcome>),
    /// A request is about to leave. The writer notes it in the in-flight log, syncs the log, and
    /// only then answers on `ack`: the request waits for that answer and does not leave without
    /// it, so a run killed before the row's record is written still knows, on `--resume`, every
    /// attempt that went out (issue 10).
    Started {
        note: InflightNote,
        ack: oneshot::Sender<Result<(), String>>,
    },
    /// Time passes: lets the writer sync a quiet group within [`SYNC_INTERVAL`].
    Tick,
}

/// One line of `<results>.inflight`: a request that is about to leave, named by the row's own
/// fields (not a hash, which could change between versions) and its attempt number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InflightNote {
    pub identity_account_id: String,
    pub account_id: String,
    pub action: Action,
    pub identity_provider: Provider,
    pub client_request_id: String,
    /// This run's attempt number for the row, from 1.
    pub attempt: u32,
}

impl InflightNote {
    pub fn new(
        job: &Job,
        provider: Provider,
        client_request_id: &str,
        attempt: u32,
    ) -> InflightNote {
        InflightNote {
            identity_account_id: job.identity_account_id.clone(),
            account_id: job.account_id.clone(),
            action: job.action,
            identity_provider: provider,
            client_request_id: client_request_id.to_owned(),
            attempt,
        }
    }

    pub fn key(&self) -> RowKey {
        RowKey::new(
            AccountKey::new(&self.identity_account_id, &self.account_id),
            self.action,
            Some(self.identity_provider),
        )
    }
}
