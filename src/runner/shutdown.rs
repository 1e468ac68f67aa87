//! Stopping a run: why it stopped, and a token every task watches. The first reason wins.
//! Stopping means "start nothing new"; requests already on the wire are allowed to finish.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ExitStatus;

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
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            StopReason::Interrupted => ExitStatus::Interrupted,
            _ => ExitStatus::StoppedEarly,
        }
    }

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

/// Turns the shutdown future (the first Ctrl-C or SIGTERM) into a token that any step can watch,
/// from the first: reading a named pipe or waiting at the confirmation prompt must stop on a
/// signal as the batch does (issue 10). Must be called inside the runtime.
pub fn listen(
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        cancel.cancel();
    });
    token
}

/// Shared by every task of a run.
#[derive(Debug, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: OnceLock<StopReason>,
}

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks every task to start nothing new. Only the first reason is kept.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }

    /// Completes once the run is told to stop.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins() {
        let stop = Stop::new();
        assert!(!stop.is_stopped());
        stop.stop(StopReason::Forbidden {
            row: 4,
            detail: "accessDenied".into(),
        });
        stop.stop(StopReason::Interrupted);
        assert!(stop.is_stopped());
        assert_eq!(
            stop.reason().unwrap().exit_status(),
            ExitStatus::StoppedEarly
        );
        assert!(
            stop.reason()
                .unwrap()
                .to_string()
                .contains("SecurityIdentitiesActions.ReadWrite.All")
        );
    }
}
