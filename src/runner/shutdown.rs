//! Stopping a run: a token every task watches, and the reason ([`StopReason`]); the first reason
//! wins. Stopping means "start nothing new"; requests already on the wire are allowed to finish.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use crate::outcome::StopReason;

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

    /// The token every wait of an attempt watches: cancelled once the run is told to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
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
        assert!(matches!(
            stop.reason(),
            Some(StopReason::Forbidden { row: 4, .. })
        ));
        assert!(
            stop.reason()
                .unwrap()
                .to_string()
                .contains("SecurityIdentitiesActions.ReadWrite.All")
        );
    }
}
