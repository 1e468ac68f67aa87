//! One read with its retries: wait for the service's throttle gate and its limiter cell, send,
//! and let the one retry policy ([`crate::retry::decide`]) say what follows. A 429 pauses the
//! reads of its own service only: Graph throttles `/security` and `/users` apart (research
//! section 5). A 403 stops the lookup, naming the permission that service needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::graph::auth::Tokens;
use crate::graph::client::{GraphClient, GraphError};
use crate::retry::{Next, RetryPolicy, RowSoFar, StopCause, decide};
use crate::runner::rate::{Api, Limiter, ThrottleGate};

/// The Graph services a lookup reads from; each has its own throttle gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// `/security/identities/identityAccounts`: identities.
    Security,
    /// `/users`: a user by UPN or object id.
    Users,
    /// `/roleManagement/directory/roleAssignments`: who holds a directory role. Throttled with
    /// `/users`, as the directory's other reads are.
    Roles,
}

impl Service {
    /// The application permission a read of this service needs.
    pub(crate) fn permission(self) -> &'static str {
        match self {
            Service::Security => "SecurityIdentitiesAccount.Read.All",
            Service::Users => "User.Read.All",
            Service::Roles => "RoleManagement.Read.Directory",
        }
    }

    /// What a signed-in user (delegated permissions) needs besides the permission.
    fn user_role(self) -> &'static str {
        match self {
            Service::Security => "the Security Administrator role",
            Service::Users => "a directory role that can read users",
            Service::Roles => "a role that can read role assignments, such as Global Reader",
        }
    }

    /// Whose cells in the limiter a read of this service takes.
    fn api(self) -> Api {
        match self {
            Service::Security => Api::Security,
            Service::Users | Service::Roles => Api::Users,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Service::Security => "/security/identities/identityAccounts",
            Service::Users => "/users",
            Service::Roles => "/roleManagement/directory/roleAssignments",
        }
    }
}

/// Why the lookup cannot go on at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LookupStop {
    #[error(
        "Graph refused to let the app read {} (403: {detail}); grant the application permission {} with admin consent (a signed-in user also needs {}), then run again. No action was sent",
        service.path(),
        service.permission(),
        service.user_role()
    )]
    Forbidden { service: Service, detail: String },
    #[error("no access token for the lookup: {0}; no action was sent")]
    Credentials(String),
    #[error("Graph asked the lookup to wait {}, longer than --max-retry-wait; run again later. No action was sent", humantime::format_duration(*wait))]
    Throttled { wait: Duration },
    #[error("interrupted while looking identities up; no action was sent")]
    Interrupted,
    #[error(
        "{0}: the guardrails cannot know whom they protect, so no action was sent; run again later"
    )]
    Guard(String),
}

/// How a read ended other than with an answer.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The whole lookup stops.
    Stop(LookupStop),
    /// This read failed for good (after its retries); the rows that needed it are refused.
    Failed(GraphError),
}

/// Counts of what the lookup sent.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    reads: AtomicU64,
    responses_429: AtomicU64,
}

impl ReadStats {
    /// Requests sent, retries included.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub(crate) fn counts(&self) -> ReadCounts {
        ReadCounts {
            reads: self.reads(),
            responses_429: self.responses_429.load(Ordering::Relaxed),
        }
    }
}

/// What the lookup's reads cost, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadCounts {
    /// Requests sent, retries included.
    pub(crate) reads: u64,
    pub(crate) responses_429: u64,
}

/// Everything a read needs, shared by the reads in flight.
pub(crate) struct Reader {
    client: GraphClient,
    tokens: Tokens,
    limiter: Limiter,
    /// `/security`'s gate, handed on to the actions (a window told to a read holds them too).
    security: Arc<ThrottleGate>,
    users: ThrottleGate,
    retry: RetryPolicy,
    interrupt: CancellationToken,
    /// Reads in flight at once (`--concurrency`).
    slots: Semaphore,
    stats: ReadStats,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        client: GraphClient,
        tokens: Tokens,
        limiter: Limiter,
        security: Arc<ThrottleGate>,
        retry: RetryPolicy,
        concurrency: usize,
        interrupt: CancellationToken,
    ) -> Reader {
        Reader {
            client,
            tokens,
            limiter,
            security,
            users: ThrottleGate::new(),
            retry,
            interrupt,
            slots: Semaphore::new(concurrency.max(1)),
            stats: ReadStats::default(),
        }
    }

    pub(crate) fn client(&self) -> &GraphClient {
        &self.client
    }

    pub(crate) fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// A place among the reads in flight.
    pub(crate) async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    fn gate(&self, service: Service) -> &ThrottleGate {
        match service {
            Service::Security => &self.security,
            Service::Users | Service::Roles => &self.users,
        }
    }

    /// `GET url` until it answers: the body, `None` for a 404, or why not.
    pub(crate) async fn read(
        &self,
        service: Service,
        url: reqwest::Url,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let gate = self.gate(service);
        let mut row = RowSoFar::default();
        let mut fresh_token: Option<Arc<SecretString>> = None;
        loop {
            let admission = tokio::select! {
                biased;
                () = self.interrupt.cancelled() => return Err(ReadError::Stop(LookupStop::Interrupted)),
                admission = async {
                    loop {
                        gate.wait_open().await;
                        let admission = self.limiter.until_ready_for(service.api()).await;
                        if gate.remaining().is_none() {
                            break admission;
                        }
                    }
                } => admission,
            };
            let token =
                match fresh_token.take() {
                    Some(token) => token,
                    None => self.tokens.current().await.map_err(|error| {
                        ReadError::Stop(LookupStop::Credentials(error.to_string()))
                    })?,
                };
            row.attempt += 1;
            self.stats.reads.fetch_add(1, Ordering::Relaxed);
            let result = self
                .client
                .get(url.clone(), &token, &client_request_id)
                .await;
            let error = match result {
                Ok(body) => {
                    self.limiter.succeeded();
                    return Ok(Some(body));
                }
                Err(error) if error.http_status() == Some(404) => return Ok(None),
                Err(error) => error,
            };
            let decision = decide(
                &error.attempt_kind(),
                &row,
                &self.retry,
                SystemTime::now(),
                fastrand::f64(),
            );
            if let Some(pause) = decision.pause_all {
                self.stats.responses_429.fetch_add(1, Ordering::Relaxed);
                self.limiter.throttled(admission, pause);
                if gate.pause_for(pause) {
                    warn!(
                        service = service.path(),
                        waitMs = pause.as_millis() as u64,
                        "throttled by Graph (429): the lookup's reads of this service pause"
                    );
                }
            }
            match decision.next {
                Next::Retry { wait } => {
                    row.waited += wait;
                    if decision.pause_all.is_none() {
                        warn!(service = service.path(), attempt = row.attempt, waitMs = wait.as_millis() as u64, error = %error, "retrying a read");
                        tokio::select! {
                            biased;
                            () = self.interrupt.cancelled() => return Err(ReadError::Stop(LookupStop::Interrupted)),
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
                Next::RefreshToken => {
                    row.refreshed = true;
                    match self.tokens.refresh(&token).await {
                        Ok(token) => fresh_token = Some(token),
                        Err(refusal) => {
                            return Err(ReadError::Stop(LookupStop::Credentials(
                                refusal.to_string(),
                            )));
                        }
                    }
                }
                Next::Succeeded | Next::GiveUp(_) => return Err(ReadError::Failed(error)),
                Next::StopRun(StopCause::Forbidden) => {
                    return Err(ReadError::Stop(LookupStop::Forbidden {
                        service,
                        detail: error.to_string(),
                    }));
                }
                Next::StopRun(StopCause::ThrottledPastBudget { wait }) => {
                    return Err(ReadError::Stop(LookupStop::Throttled { wait }));
                }
            }
        }
    }
}
