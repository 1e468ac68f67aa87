//! The one attempt driver (issue 17): every request the tool sends (an action, a lookup, guard
//! or confirm read, a token request, a sign-in request) runs its attempts here, whole:
//! admission (the throttle gate, the limiter, the gate again), the token, the send, the decision
//! after a failure ([`crate::retry::decide`], called from here only), and what that decision
//! asks for: the shared pause, one fresh token after a 401, or a backoff. Every wait watches the
//! request's stop.
//!
//! A caller says what one send is and what its endings mean ([`Request`]), and how its requests
//! are let out ([`Admit`]: `runner::rate::Door`, or [`Unpaced`]). The driver knows nothing
//! of Graph, the limiter or the journal, so that `graph` (token requests) uses it as `runner`
//! and `lookup` do, while importing neither.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::retry::{AttemptKind, GiveUp, Next, RetryPolicy, RowSoFar, StopCause, decide};

/// How a request is let out.
pub(crate) trait Admit {
    /// What an attempt was admitted at (the limiter's rate then), handed back on a 429.
    type Ticket: Copy;

    /// Waits until the request may leave.
    async fn admit(&self) -> Self::Ticket;

    /// Whether a pause began after admission (another request was told to wait while this one
    /// got its token): the request goes back to admission instead of into that window.
    fn closed(&self) -> bool;

    /// Graph throttled an attempt admitted at `ticket` and told every request to pause for
    /// `pause`. True when this lengthened the pause.
    fn throttled(&self, ticket: Self::Ticket, pause: Duration) -> bool;

    /// An attempt succeeded.
    fn succeeded(&self);

    /// Whether a told pause is waited at the next admission, with every other request. When
    /// not, the request waits it alone.
    fn holds_pauses(&self) -> bool;
}

/// No pacing: a token or sign-in request waits a told pause by itself.
pub(crate) struct Unpaced;

impl Admit for Unpaced {
    type Ticket = ();

    async fn admit(&self) {}

    fn closed(&self) -> bool {
        false
    }

    fn throttled(&self, (): (), _pause: Duration) -> bool {
        false
    }

    fn succeeded(&self) {}

    fn holds_pauses(&self) -> bool {
        false
    }
}

/// How one attempt failed.
pub(crate) enum Failure<E> {
    /// Worth asking the retry policy about.
    Retryable(E, AttemptKind),
    /// No attempt can change it (the request's own judgement: a refused credential, an
    /// unparseable answer).
    Final(E),
}

/// What one request is: its token, one send, and what it tells of its failures.
pub(crate) trait Request {
    /// What each attempt is sent with (an access token), or `()`.
    type Token;
    type Answer;
    type Error;
    type TokenError;

    /// Runs before each admission; an `Err` (why) ends the request before that attempt leaves.
    async fn prepare(&mut self, _attempt: u32) -> Result<(), String> {
        Ok(())
    }

    /// The token for the next attempt.
    async fn token(&mut self) -> Result<Self::Token, Self::TokenError>;

    /// A fresh token after a 401 with `stale`; `None` when this request has no token to renew
    /// (a 401 is then final).
    async fn refresh(
        &mut self,
        _stale: &Self::Token,
    ) -> Option<Result<Self::Token, Self::TokenError>> {
        None
    }

    /// Sends attempt number `attempt` (from 1).
    async fn send(
        &mut self,
        token: &Self::Token,
        attempt: u32,
    ) -> Result<Self::Answer, Failure<Self::Error>>;

    /// Told after a failed attempt that goes on, for the caller's log and counts.
    fn retrying(&mut self, _event: Retrying<'_, Self::Error>) {}
}

/// A failed attempt that does not end its request, or a 429 whatever follows it.
pub(crate) enum Retrying<'a, E> {
    /// A 429: every request pauses for `pause` (`extended`: this answer lengthened the pause).
    /// `again`: this request is tried again after it.
    Throttled {
        error: &'a E,
        attempt: u32,
        pause: Duration,
        extended: bool,
        again: bool,
    },
    /// Tried again after `wait`, alone.
    Backoff {
        error: &'a E,
        attempt: u32,
        wait: Duration,
    },
    /// A fresh token came after a 401: tried again at once.
    Refreshed { error: &'a E, attempt: u32 },
}

/// Why a request is not tried again after its last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spent {
    /// This request ends; the others go on.
    GiveUp(GiveUp),
    /// Every request should stop.
    StopRun(StopCause),
}

/// How a request's attempts ended.
pub(crate) enum Ended<R: Request> {
    Answered(R::Answer),
    /// The last attempt failed, and `Spent` says why no other follows.
    Failed(R::Error, Spent),
    /// No token for the next attempt. `last`: the error of the attempt before, if one was sent.
    NoToken {
        last: Option<R::Error>,
        error: R::TokenError,
    },
    /// Graph refused the token with a 401 and no fresh one could be had.
    RefreshRefused {
        error: R::Error,
        refusal: R::TokenError,
    },
    /// [`Request::prepare`] refused the next attempt.
    Unprepared {
        last: Option<R::Error>,
        reason: String,
    },
    /// The stop came first. `last`: the error of the attempt before, if one was sent.
    Stopped {
        last: Option<R::Error>,
    },
}

/// The bounds and the stop of one request's attempts.
pub(crate) struct Attempts<'a, D> {
    pub(crate) policy: &'a RetryPolicy,
    pub(crate) admission: &'a D,
    /// Ends every wait, and the request with it. `None`: the caller stops it by dropping it (a
    /// token request runs inside an attempt or a sign-in, whose own stop drops it).
    pub(crate) stop: Option<&'a CancellationToken>,
}

impl<D: Admit> Attempts<'_, D> {
    /// Runs `request` until it is answered, spent, or stopped.
    pub(crate) async fn run<R: Request>(&self, request: &mut R) -> Ended<R> {
        let mut so_far = RowSoFar::default();
        let mut last: Option<R::Error> = None;
        let mut fresh: Option<R::Token> = None;
        loop {
            if let Err(reason) = request.prepare(so_far.attempt + 1).await {
                return Ended::Unprepared { last, reason };
            }
            let Some(ticket) = self.unless_stopped(self.admission.admit()).await else {
                return Ended::Stopped { last };
            };
            let token = match fresh.take() {
                Some(token) => token,
                None => match self.unless_stopped(request.token()).await {
                    None => return Ended::Stopped { last },
                    Some(Err(error)) => return Ended::NoToken { last, error },
                    Some(Ok(token)) => token,
                },
            };
            // Getting the token took time: the run may have stopped, or a 429 closed the gate,
            // meanwhile. Checked as late as possible, so that only requests already on the wire
            // meet a window another request was just told (helper's review of issue 10).
            if self.stop.is_some_and(CancellationToken::is_cancelled) {
                return Ended::Stopped { last };
            }
            if self.admission.closed() {
                fresh = Some(token);
                continue;
            }
            so_far.attempt += 1;
            let (error, kind) = match request.send(&token, so_far.attempt).await {
                Ok(answer) => {
                    self.admission.succeeded();
                    return Ended::Answered(answer);
                }
                Err(Failure::Final(error)) => {
                    return Ended::Failed(error, Spent::GiveUp(GiveUp::Final));
                }
                Err(Failure::Retryable(error, kind)) => (error, kind),
            };
            let decision = decide(
                &kind,
                &so_far,
                self.policy,
                SystemTime::now(),
                fastrand::f64(),
            );
            if let Some(pause) = decision.pause_all {
                // Graph allows less than we send: slow down (once per throttle event), and hold
                // every request for the told window, whatever this one does next.
                let extended = self.admission.throttled(ticket, pause);
                request.retrying(Retrying::Throttled {
                    error: &error,
                    attempt: so_far.attempt,
                    pause,
                    extended,
                    again: matches!(decision.next, Next::Retry { .. }),
                });
            }
            let wait = match decision.next {
                Next::Retry { wait } => wait,
                Next::RefreshToken => {
                    so_far.refreshed = true;
                    match request.refresh(&token).await {
                        None => return Ended::Failed(error, Spent::GiveUp(GiveUp::Final)),
                        Some(Err(refusal)) => return Ended::RefreshRefused { error, refusal },
                        Some(Ok(token)) => {
                            request.retrying(Retrying::Refreshed {
                                error: &error,
                                attempt: so_far.attempt,
                            });
                            fresh = Some(token);
                            last = Some(error);
                            continue;
                        }
                    }
                }
                Next::GiveUp(reason) => return Ended::Failed(error, Spent::GiveUp(reason)),
                Next::StopRun(cause) => return Ended::Failed(error, Spent::StopRun(cause)),
            };
            so_far.waited += wait;
            // A paused request waits at the gate (in `admit`) with every other one.
            if decision.pause_all.is_none() || !self.admission.holds_pauses() {
                if decision.pause_all.is_none() {
                    request.retrying(Retrying::Backoff {
                        error: &error,
                        attempt: so_far.attempt,
                        wait,
                    });
                }
                if self
                    .unless_stopped(tokio::time::sleep(wait))
                    .await
                    .is_none()
                {
                    return Ended::Stopped { last: Some(error) };
                }
            }
            last = Some(error);
        }
    }

    /// `work`'s output, or `None` when the stop comes first.
    async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let Some(stop) = self.stop else {
            return Some(work.await);
        };
        if stop.is_cancelled() {
            return None;
        }
        // The work is polled first: when it is ready at once (an open gate, a cached token), the
        // stop's waiter is never registered, which takes a lock every request shares.
        tokio::select! {
            biased;
            done = work => Some(done),
            () = stop.cancelled() => None,
        }
    }
}
