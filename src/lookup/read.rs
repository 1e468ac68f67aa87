//! One read with its retries, run by the one attempt driver ([`crate::attempt`]): wait for the
//! service's throttle gate and its limiter cell ([`Door`]), send, and let the one retry policy
//! say what follows. A 429 pauses the
//! reads of its own service only: Graph throttles `/security` and `/users` apart (research
//! section 5). A 403 stops the lookup, naming the permission that service needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::attempt::{Attempts, Ended, Failure, Request, Retrying, Spent};
use crate::graph::auth::{AuthError, Tokens};
use crate::graph::client::{GraphClient, GraphError};
use crate::retry::{RetryPolicy, StopCause};
use crate::runner::rate::{Api, Door, Limiter, ThrottleGate};

/// The Graph services a lookup reads from; each has its own throttle gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// `/security/identities/identityAccounts`: identities.
    Security,
    /// `/users`: a user by UPN or object id.
    Users,
    /// `/roleManagement/directory/roleAssignments`: who holds a directory role. Throttled with
    /// `/users`, as the directory's other reads are (so are the guard's reads below).
    Roles,
    /// Issue 20's guard reads: the roles Microsoft labels privileged (beta), PIM eligibility for
    /// a role, members of a role-assignable group, PIM for Groups eligibility, and the
    /// administrative units (for the restricted-management ones).
    RoleDefinitions,
    Eligibility,
    GroupMembers,
    GroupEligibility,
    AdministrativeUnits,
}

impl Service {
    /// The application permission a read of this service needs.
    pub(crate) fn permission(self) -> &'static str {
        match self {
            Service::Security => "SecurityIdentitiesAccount.Read.All",
            Service::Users => "User.Read.All",
            Service::Roles | Service::RoleDefinitions => "RoleManagement.Read.Directory",
            Service::Eligibility => "RoleEligibilitySchedule.Read.Directory",
            Service::GroupMembers => "GroupMember.Read.All",
            Service::GroupEligibility => "PrivilegedEligibilitySchedule.Read.AzureADGroup",
            Service::AdministrativeUnits => "AdministrativeUnit.Read.All",
        }
    }

    /// What a signed-in user (delegated permissions) needs besides the permission.
    fn user_role(self) -> &'static str {
        match self {
            Service::Security => "the Security Administrator role",
            Service::Users => "a directory role that can read users",
            Service::Roles | Service::RoleDefinitions => {
                "a role that can read role assignments, such as Global Reader"
            }
            Service::Eligibility | Service::GroupEligibility => {
                "a role that can read PIM eligibility, such as Global Reader or Security Reader"
            }
            Service::GroupMembers => "a role that can read group members, such as Global Reader",
            Service::AdministrativeUnits => {
                "a role that can read administrative units, such as Global Reader"
            }
        }
    }

    /// Whose cells in the limiter a read of this service takes.
    fn api(self) -> Api {
        match self {
            Service::Security => Api::Security,
            _ => Api::Users,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Service::Security => "/security/identities/identityAccounts",
            Service::Users => "/users",
            Service::Roles => "/roleManagement/directory/roleAssignments",
            Service::RoleDefinitions => "/roleManagement/directory/roleDefinitions",
            Service::Eligibility => "/roleManagement/directory/roleEligibilityScheduleInstances",
            Service::GroupMembers => {
                "the members of role-assignable groups (/groups/{id}/transitiveMembers)"
            }
            Service::GroupEligibility => {
                "/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances"
            }
            Service::AdministrativeUnits => "/directory/administrativeUnits",
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
    /// Protect entries Graph knows nobody by (issue 16): an input error, not a stop.
    #[error(
        "the protect list names nobody Graph knows at {0}. Such an entry protects nobody while the person it was meant for is acted on: correct it (invisible and non-ASCII characters are shown escaped as \\u{{..}}), or pass --accept-stale-protect-entries to run with it. No action was sent"
    )]
    StaleProtectEntries(String),
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
    /// Cancelled when the lookup must stop (a 403, a throttle past `--max-retry-wait`, no
    /// token), or with `interrupt`: the reads parked on a gate end at once with the first
    /// reason, as the action phase stops (issue 16: they waited out the hour they were told,
    /// then exited 4).
    halt: CancellationToken,
    halted: OnceLock<LookupStop>,
    /// Reads in flight at once (`--concurrency`).
    slots: Semaphore,
    stats: ReadStats,
    /// How far a walk of a paged list may go (issue 16); smaller in tests.
    walk_limits: Limits,
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
            halt: interrupt.child_token(),
            interrupt,
            halted: OnceLock::new(),
            slots: Semaphore::new(concurrency.max(1)),
            stats: ReadStats::default(),
            walk_limits: Limits::default(),
        }
    }

    /// The same reader with other bounds on its walks, so that tests reach them quickly.
    #[cfg(test)]
    pub(crate) fn with_walk_limits(mut self, limits: Limits) -> Reader {
        self.walk_limits = limits;
        self
    }

    pub(crate) fn walk_limits(&self) -> Limits {
        self.walk_limits
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

    /// Stops every read with `why` (the first reason wins), and returns it for this one.
    fn halt(&self, why: LookupStop) -> ReadError {
        let _ = self.halted.set(why.clone());
        self.halt.cancel();
        ReadError::Stop(why)
    }

    /// Why the reads were stopped (once they were).
    fn halted(&self) -> ReadError {
        ReadError::Stop(
            self.halted
                .get()
                .cloned()
                .unwrap_or(LookupStop::Interrupted),
        )
    }

    fn gate(&self, service: Service) -> &ThrottleGate {
        match service {
            Service::Security => &self.security,
            _ => &self.users,
        }
    }

    /// `GET url` until it answers: the body, `None` for a 404, or why not.
    pub(crate) async fn read(
        &self,
        service: Service,
        url: reqwest::Url,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        let door = Door {
            gate: self.gate(service),
            limiter: &self.limiter,
            api: service.api(),
        };
        let mut read = Read {
            reader: self,
            service,
            url,
            client_request_id: uuid::Uuid::new_v4().to_string(),
        };
        let ended = Attempts {
            policy: &self.retry,
            admission: &door,
            stop: Some(&self.halt),
        }
        .run(&mut read)
        .await;
        match ended {
            Ended::Answered(body) => Ok(body),
            // The operator's stop counts before any other (exit 130).
            Ended::Stopped { .. } if self.interrupt.is_cancelled() => {
                Err(ReadError::Stop(LookupStop::Interrupted))
            }
            Ended::Stopped { .. } | Ended::Unprepared { .. } => Err(self.halted()),
            Ended::NoToken { error, .. } | Ended::RefreshRefused { refusal: error, .. } => {
                Err(self.halt(LookupStop::Credentials(error.to_string())))
            }
            Ended::Failed(error, Spent::GiveUp(_)) => Err(ReadError::Failed(error)),
            Ended::Failed(error, Spent::StopRun(StopCause::Forbidden)) => {
                Err(self.halt(LookupStop::Forbidden {
                    service,
                    detail: error.to_string(),
                }))
            }
            Ended::Failed(_, Spent::StopRun(StopCause::ThrottledPastBudget { wait })) => {
                Err(self.halt(LookupStop::Throttled { wait }))
            }
        }
    }
}

/// One `GET`, as the attempt driver sends it.
struct Read<'a> {
    reader: &'a Reader,
    service: Service,
    url: reqwest::Url,
    client_request_id: String,
}

impl Request for Read<'_> {
    type Token = Arc<SecretString>;
    /// The body, or `None` for a 404.
    type Answer = Option<Vec<u8>>;
    type Error = GraphError;
    type TokenError = AuthError;

    async fn token(&mut self) -> Result<Self::Token, AuthError> {
        self.reader.tokens.current().await
    }

    async fn refresh(&mut self, stale: &Self::Token) -> Option<Result<Self::Token, AuthError>> {
        Some(self.reader.tokens.refresh(stale).await)
    }

    async fn send(
        &mut self,
        token: &Self::Token,
        _attempt: u32,
    ) -> Result<Self::Answer, Failure<GraphError>> {
        self.reader.stats.reads.fetch_add(1, Ordering::Relaxed);
        match self
            .reader
            .client
            .get(self.url.clone(), token, &self.client_request_id)
            .await
        {
            Ok(body) => Ok(Some(body)),
            Err(error) if error.http_status() == Some(404) => Ok(None),
            Err(error) => {
                let kind = error.attempt_kind();
                Err(Failure::Retryable(error, kind))
            }
        }
    }

    fn retrying(&mut self, event: Retrying<'_, GraphError>) {
        let service = self.service.path();
        match event {
            Retrying::Throttled {
                pause, extended, ..
            } => {
                self.reader
                    .stats
                    .responses_429
                    .fetch_add(1, Ordering::Relaxed);
                if extended {
                    warn!(
                        service,
                        waitMs = pause.as_millis() as u64,
                        "throttled by Graph (429): the lookup's reads of this service pause"
                    );
                }
            }
            Retrying::Backoff {
                error,
                attempt,
                wait,
            } => {
                warn!(service, attempt, waitMs = wait.as_millis() as u64, error = %error, "retrying a read");
            }
            Retrying::Refreshed { .. } => {}
        }
    }
}

/// The most directory objects one tenant holds: Entra ID's quota is 50,000 objects (300,000
/// with a verified domain), raised on request; the largest tenants hold a few million. A walk
/// listing more entries than this, or reading more pages (every page but a few lists someone),
/// is not reading a tenant.
pub(crate) const MAX_TENANT_OBJECTS: u64 = 10_000_000;

/// Pages in one walk that list nobody. Graph may send an empty page with a link now and then;
/// a run of them is a server going round in circles with fresh links (10,000 were followed for
/// one row before issue 16).
pub(crate) const MAX_EMPTY_PAGES: u64 = 16;

/// How far a walk of a paged list may go ([`super::walk`], issue 16): the bounds each
/// [`Reader`] carries. They live here, beside the reader, so that `read` needs nothing of `walk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) pages: u64,
    pub(crate) entries: u64,
    pub(crate) empty_pages: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pages: MAX_TENANT_OBJECTS,
            entries: MAX_TENANT_OBJECTS,
            empty_pages: MAX_EMPTY_PAGES,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::super::hostile_tests::{Hostile, Reply, paced_reader_for, policy};
    use super::*;
    use crate::graph::auth::{CredentialSources, TokenEndpoint};

    /// A read that waited out a 429's pause leaves paced, as the actions do (issue 17: the
    /// reads' own copy of admission did not drain the cells gathered during the pause, so the
    /// reads parked at the gate all left at once, a burst that re-provokes the 429).
    #[tokio::test]
    async fn issue_17_reads_resume_paced_after_a_pause() {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let arrivals = arrivals.clone();
            Hostile::start(move |_, _| {
                let mut arrivals = arrivals.lock().expect("not poisoned");
                arrivals.push(Instant::now());
                if arrivals.len() == 1 {
                    return Reply {
                        retry_after: Some("1".into()),
                        ..Reply::status(429)
                    };
                }
                Reply::json(&serde_json::json!({"id": "u"}))
            })
            .await
        };
        // 10/s with a burst of 5: the one-second pause gathers the whole burst.
        let limiter = Limiter::new(
            crate::units::parse_rate("10/s").expect("a rate"),
            NonZeroU32::new(5).expect("not zero"),
        );
        let reader = paced_reader_for(
            &server.root,
            policy(),
            Limits::default(),
            CancellationToken::new(),
            limiter,
        );
        let read = |n: usize| {
            let reader = reader.clone();
            tokio::spawn(async move {
                let url = reader.client().user_url(&format!("u{n}")).expect("a url");
                reader.read(Service::Users, url).await.map(|_| ())
            })
        };
        let mut reads = vec![read(0)];
        while server.requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The others come while the gate is closed, and wait at it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        reads.extend((1..5).map(read));
        for read in reads {
            assert!(read.await.expect("the read ran").is_ok());
        }
        let arrivals = arrivals.lock().expect("not poisoned").clone();
        assert_eq!(arrivals.len(), 6, "a 429, its retry, and four more reads");
        let after_pause = &arrivals[1..];
        let spread = after_pause[after_pause.len() - 1].duration_since(after_pause[0]);
        assert!(
            spread >= Duration::from_millis(350),
            "the five reads after the pause left within {spread:?}: a burst, not 100 ms apart"
        );
    }

    /// A 429's window told while a read waited for its token holds that read back: the reads'
    /// own admission did not look at the gate again after the token (issue 17), so a read
    /// whose token came late left inside a window another read was just told.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_17_a_window_told_while_a_read_gets_its_token_holds_the_read_back() {
        // The token endpoint says when it is asked, then answers only once the test has told
        // the window: the order is fixed by the handshake, not by sleeps a loaded machine may
        // stretch.
        let (asked_tx, asked_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (asked_tx, go_rx) = (Mutex::new(asked_tx), Mutex::new(go_rx));
        let reads_at = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let reads_at = reads_at.clone();
            Hostile::start(move |_, target| {
                if target.contains("/oauth2/v2.0/token") {
                    // Blocks one of the runtime's two threads until the window is told; the
                    // test is woken from a blocking thread, so the other worker runs it.
                    let _ = asked_tx.lock().expect("not poisoned").send(());
                    let _ = go_rx
                        .lock()
                        .expect("not poisoned")
                        .recv_timeout(Duration::from_secs(10));
                    return Reply::json(&serde_json::json!({
                        "access_token": "t", "expires_in": 3599, "token_type": "Bearer"
                    }));
                }
                reads_at.lock().expect("not poisoned").push(Instant::now());
                Reply::json(&serde_json::json!({"id": "u"}))
            })
            .await
        };
        let endpoint = TokenEndpoint::new(&server.root, &server.root).expect("an endpoint");
        let tokens = Tokens::from_sources(
            CredentialSources {
                client_secret: Some(SecretString::from("s")),
                tenant_id: Some("tenant".into()),
                client_id: Some("app".into()),
                ..CredentialSources::default()
            },
            &endpoint,
            Duration::from_secs(5),
        )
        .expect("app tokens");
        let client = GraphClient::new(
            &server.root,
            crate::graph::client::ApiVersion::V1,
            Duration::from_secs(5),
            4,
        )
        .expect("a client");
        let reader = Arc::new(Reader::new(
            client,
            tokens,
            Limiter::new(
                crate::units::parse_rate("1000/s").expect("a rate"),
                NonZeroU32::MIN,
            ),
            Arc::new(ThrottleGate::new()),
            policy(),
            4,
            CancellationToken::new(),
        ));
        let read = {
            let reader = reader.clone();
            tokio::spawn(async move {
                let url = reader.client().user_url("u").expect("a url");
                reader.read(Service::Users, url).await.map(|_| ())
            })
        };
        // Admitted at once, the read now waits for its token; another read's 429 comes.
        tokio::task::spawn_blocking(move || asked_rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("the wait ran")
            .expect("the read asked for its token");
        let window = Duration::from_millis(800);
        reader.gate(Service::Users).pause_for(window);
        let told_at = Instant::now();
        go_tx.send(()).expect("the token endpoint waits");
        assert!(read.await.expect("the read ran").is_ok());
        let reads_at = reads_at.lock().expect("not poisoned").clone();
        assert_eq!(reads_at.len(), 1);
        let left_after = reads_at[0].duration_since(told_at);
        assert!(
            left_after >= window - Duration::from_millis(5),
            "the read left {left_after:?} into a {window:?} window"
        );
    }
}
