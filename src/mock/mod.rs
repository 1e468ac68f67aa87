//! A local imitation of Microsoft Graph's identityAccounts `invokeAction` endpoint and of Entra's
//! token endpoint, for tests, benches, `graph-remediate mock` and `run --mock` (SPEC section 7).
//!
//! It validates bodies and the support matrix as Graph does, demands bearer tokens, limits each
//! token's rate per Graph service (`/security`; `/users` with `/roleManagement`) with 429 +
//! `Retry-After` and keeps every window it told, injects 503/504 faults and
//! latency, plays scripted scenarios chosen by the identity account id, and can record every
//! request in memory or as JSONL. This file holds the public API; each submodule owns one part.
//!
//! For the unattended credential kinds (issue 18, `unattended.rs`) it also serves GitHub's OIDC
//! token endpoint and the managed-identity endpoints (IMDS on the path
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST` reaches, App Service, Cloud Shell, Arc's challenge), and
//! the token endpoint checks a federated assertion against a token file (`federated_token_file`).
//!
//! Scenario ids (the `{id}` path segment): `http{NNN}-...` always answers status NNN (400-599) with
//! Graph's error body; `http{NNN}x{K}-...` answers NNN for the first K requests to that id, then
//! behaves normally; `nullcorr-...` succeeds with `"correlationId": null`.
//!
//! With a [`Tenant`] ([`MockConfig::tenant`]) the mock also serves the reads a lookup makes
//! (SPEC section 8; see `reads.rs`): identityAccounts paged, filtered by SID and by id, users by
//! UPN or object id, and directory role assignments. Scenario ids work there too, as an identity
//! id or a user's key. And actions are then checked against the tenant: an unknown identity is
//! 404, an account it does not have or an action that account does not offer is 400, and a
//! `disable` or `enable` changes what the account offers afterwards. Without a tenant none of
//! those paths exist and actions are checked against the documented support matrix, as before.
//!
//! Delegated sign-ins (`delegated.rs`, issue 18): `/devicecode`, `/authorize` with PKCE, the
//! device code, authorization code and refresh token grants at `/token`, tokens carrying `scp` or
//! (with [`SignInMock::app_roles`]) `roles`, and 403 from invokeAction for a token whose claims
//! lack the action permission.

mod args;
mod delegated;
mod effect;
mod graph;
mod log;
mod reads;
mod reply;
mod sessions;
mod state;
mod tenant;
mod throttle;
mod token;
mod unattended;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use axum::serve::ListenerExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::graph::model::{Action, ResponseShape};
use crate::units::Rate;

pub use args::{IdentitySource, MockArgs, run_cli, run_cli_with_output};
pub use delegated::{AuthorizeScript, DeviceCodeScript, Poll, SignInMock};
pub use log::LoggedRequest;
pub use sessions::SignInStats;
pub use tenant::privileged::PrivilegedSeed;
pub use tenant::{RoleAssignment, Tenant, TenantError};

/// The identity model a [`Tenant`] holds and [`MockServer::identity`] returns (shared with the
/// client, so the mock serves exactly what the tool parses).
pub use crate::graph::identity::{Identity, LinkedAccount};

use state::Shared;

/// How the mock writes `Retry-After`. Every form is rounded up, so a client that obeys it is
/// never early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RetryAfterFormat {
    /// Whole seconds, at least 1 (`Retry-After: 2`), as Graph documents.
    #[default]
    Seconds,
    /// Seconds with three decimals (`Retry-After: 0.250`), as Graph's `$batch` has been seen to send.
    Decimal,
    /// An HTTP-date at a whole second (`Retry-After: Tue, 14 Nov 2023 22:13:21 GMT`).
    HttpDate,
}

/// What the mock does. `Default` is a well-behaved Graph: no limit, no faults, no latency.
#[derive(Clone)]
pub struct MockConfig {
    /// Per-token limit, counted apart for each Graph service (`/security`; `/users` with
    /// `/roleManagement`), as Graph limits them; `None`: unlimited.
    pub rate: Option<Rate>,
    /// Requests a token may send back to back (at least 1).
    pub burst: u32,
    pub retry_after_format: RetryAfterFormat,
    /// Fraction (0.0..=1.0) of Graph requests answered 503 or 504, half each, at random.
    pub fail_rate: f64,
    /// `Retry-After` on injected 503s (504s never carry one); `None`: no header.
    pub fault_retry_after: Option<Duration>,
    /// Added before every Graph response.
    pub latency: Duration,
    pub response_shape: ResponseShape,
    /// JSONL, one line per request to either endpoint.
    pub request_log: Option<PathBuf>,
    /// Keep every `LoggedRequest` in memory for [`MockServer::requests`] (off for benches).
    pub record: bool,
    pub token_lifetime: Duration,
    /// When set, the token endpoint requires this client id.
    pub client_id: Option<String>,
    /// When set, client-secret grants must present exactly this secret.
    pub client_secret: Option<String>,
    /// Bearer tokens accepted forever.
    pub static_tokens: Vec<String>,
    /// Accept any non-empty bearer token (issued tokens still expire).
    pub accept_any_token: bool,
    /// Seed for reproducible fault injection.
    pub seed: Option<u64>,
    /// Identities to serve and check actions against; `None`: no reads, and actions are checked
    /// against the support matrix only.
    pub tenant: Option<Tenant>,
    /// Identities per page of the identityAccounts list (at least 1).
    pub page_size: usize,
    /// Answer role assignment reads 403, as Graph does for an app without
    /// RoleManagement.Read.Directory.
    pub deny_role_reads: bool,
    /// Answer the reads of issue 20 that need one of these permissions 403, as Graph does for an
    /// app without it (`RoleEligibilitySchedule.Read.Directory`, `GroupMember.Read.All`,
    /// `PrivilegedEligibilitySchedule.Read.AzureADGroup`, `AdministrativeUnit.Read.All`,
    /// `RoleManagement.Read.Directory` for role definitions).
    pub denied_permissions: Vec<String>,
    /// Workload identity (issue 18): a `client_assertion` that is not a certificate's must be
    /// this file's content at the time of the token request (it rotates), else AADSTS700024.
    pub federated_token_file: Option<PathBuf>,
    /// GitHub Actions' OIDC endpoint (`GET /github/idtoken`): the bearer it wants; `None`: any.
    pub oidc_request_token: Option<String>,
    /// How long the OIDC tokens it mints live (GitHub's: 5 minutes); the token endpoint refuses
    /// them after that.
    pub oidc_lifetime: Duration,
    /// App Service's identity endpoint (`GET /msi/token`): the `X-IDENTITY-HEADER` it wants;
    /// `None`: any non-empty one.
    pub identity_header: Option<String>,
    /// Arc's identity endpoint (`GET /arc/token`): the key file its challenge names; the client
    /// must send its content as `Authorization: Basic`. `None`: no Arc endpoint.
    pub arc_key_file: Option<PathBuf>,
    /// The first managed-identity requests (any host) are answered with these statuses, in
    /// order, then tokens are issued.
    pub managed_identity_faults: Vec<u16>,
    /// Delegated sign-ins and the permissions tokens carry (issue 18).
    pub sign_in: SignInMock,
    /// How long after an accepted action its effect shows in the tenant's reads, as a sensor
    /// carries it out later (SPEC section 10).
    pub effect_delay: Duration,
    /// Identity or account ids whose actions are accepted and never carried out, as by a sensor
    /// whose action account lacks rights in AD.
    pub effect_never: Option<regex::Regex>,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            rate: None,
            burst: 1,
            retry_after_format: RetryAfterFormat::Seconds,
            fail_rate: 0.0,
            fault_retry_after: None,
            latency: Duration::ZERO,
            response_shape: ResponseShape::Docs,
            request_log: None,
            record: false,
            token_lifetime: Duration::from_secs(3599),
            client_id: None,
            client_secret: None,
            static_tokens: Vec::new(),
            accept_any_token: false,
            seed: None,
            tenant: None,
            page_size: 100,
            deny_role_reads: false,
            denied_permissions: Vec::new(),
            federated_token_file: None,
            oidc_request_token: None,
            oidc_lifetime: Duration::from_secs(300),
            identity_header: None,
            arc_key_file: None,
            managed_identity_faults: Vec::new(),
            sign_in: SignInMock::default(),
            effect_delay: Duration::ZERO,
            effect_never: None,
        }
    }
}

/// Secrets and tokens are redacted.
impl fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockConfig")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("retry_after_format", &self.retry_after_format)
            .field("fail_rate", &self.fail_rate)
            .field("fault_retry_after", &self.fault_retry_after)
            .field("latency", &self.latency)
            .field("response_shape", &self.response_shape)
            .field("request_log", &self.request_log)
            .field("record", &self.record)
            .field("token_lifetime", &self.token_lifetime)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "static_tokens",
                &format_args!("<{} redacted>", self.static_tokens.len()),
            )
            .field("accept_any_token", &self.accept_any_token)
            .field("seed", &self.seed)
            .field(
                "tenant",
                &self
                    .tenant
                    .as_ref()
                    .map(|t| format!("<{} identities>", t.len())),
            )
            .field("page_size", &self.page_size)
            .field("deny_role_reads", &self.deny_role_reads)
            .field("denied_permissions", &self.denied_permissions)
            .field("federated_token_file", &self.federated_token_file)
            .field("oidc_lifetime", &self.oidc_lifetime)
            .field("arc_key_file", &self.arc_key_file)
            .field("managed_identity_faults", &self.managed_identity_faults)
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

/// Counters since the server started. The read counters (`identity_gets` to `role_reads`) count
/// every read of that kind however it was answered (401, 429 and faults included), except reads
/// whose query was refused with 400, which count in none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Requests to anything but the token endpoint.
    pub graph_requests: u64,
    pub token_requests: u64,
    /// Graph requests that came from a token while a window told to it with a 429 was open.
    pub inside_told_window: u64,
    /// Graph responses by HTTP status (token endpoint responses are not included).
    pub by_status: BTreeMap<u16, u64>,
    /// `GET .../security/identities/identityAccounts/{id}`.
    pub identity_gets: u64,
    /// Pages of the identityAccounts list (requests without `$filter`).
    pub identity_list_pages: u64,
    /// identityAccounts requests with `$filter=onPremisesSecurityIdentifier eq '...'`.
    pub sid_filter_queries: u64,
    /// `GET /users/{key}` and `GET /users('{upn}')`.
    pub user_reads: u64,
    /// `GET .../roleManagement/directory/roleAssignments`.
    pub role_reads: u64,
    /// Issue 20's reads: role eligibility, role definitions, group members, PIM for Groups
    /// eligibility, administrative units and their members.
    pub privileged_reads: u64,
    /// Requests to the GitHub OIDC endpoint (issue 18).
    pub oidc_requests: u64,
    /// Requests to the managed-identity endpoints (IMDS, App Service, Cloud Shell, Arc), Arc's
    /// unauthenticated first request included.
    pub managed_identity_requests: u64,
}

impl MockStats {
    /// Graph responses with `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

/// An account's state as the mock's successful actions left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AccountState {
    /// Last `enable`d (and not disabled since).
    Enabled,
    /// Last `disable`d (and not enabled since).
    Disabled,
    /// Only actions that do not enable or disable (forcePasswordReset, revokeAllSessions, ...).
    Unchanged,
}

/// A running mock, bound to a loopback port. Dropping it stops the server too; `shutdown` also
/// waits for in-flight requests and flushes the request log.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MockServer {
    /// Starts a mock on `127.0.0.1:0` (a free port).
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        MockServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    pub async fn bind(addr: SocketAddr, config: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, addr).await?);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), async move {
            // A dropped sender (the server was dropped) stops the server as well.
            let _ = shutdown_rx.await;
        }));
        Ok(MockServer {
            addr,
            shared,
            shutdown_tx,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: both the Graph root and the token authority.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in the order they were answered; empty unless `record` is set.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.recorded()
    }

    pub fn stats(&self) -> MockStats {
        self.shared.stats()
    }

    /// Counters of the delegated sign-ins (device codes, polls, refresh grants).
    pub fn sign_in_stats(&self) -> SignInStats {
        self.shared.sign_in.stats()
    }

    /// The state the last successful `disable`/`enable` left the account in, or `Unchanged` if
    /// only other actions were applied; `None` if no action succeeded for it.
    pub fn account_state(
        &self,
        identity_account_id: &str,
        account_id: &str,
    ) -> Option<AccountState> {
        self.shared
            .account(identity_account_id, account_id)
            .map(|(state, _)| state)
    }

    /// The identity as the tenant holds it now (after any actions); `None` without a tenant or
    /// when no identity has this id.
    pub fn identity(&self, id: &str) -> Option<Identity> {
        self.shared.directory()?.identity(id).cloned()
    }

    /// The last action applied successfully to the account.
    pub fn last_action(&self, identity_account_id: &str, account_id: &str) -> Option<Action> {
        self.shared
            .account(identity_account_id, account_id)
            .map(|(_, action)| action)
    }

    /// Stops accepting connections, lets in-flight requests finish, and flushes the request log.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "mock server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "mock server task failed"),
        }
    }
}

/// Serves the mock on `listener` until `shutdown` resolves, then flushes the request log. For the
/// `mock` subcommand; tests and benches use [`MockServer`].
pub async fn serve_until(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config, addr).await?);
    serve(listener, shared, shutdown).await
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&shared));
    // Small request/response pairs: do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    shared.close_log().await;
    served
}

/// The first path segment is the API version on Graph paths and the tenant on the token path;
/// the router needs one name for both.
const ROOT: &str = "root";

fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new()
        .route(
            "/{root}/security/identities/identityAccounts/{id}/{action}",
            any(graph::invoke_action),
        )
        .route("/{root}/oauth2/v2.0/token", any(token::issue_token))
        .route("/github/idtoken", any(unattended::github_token))
        .route("/msi/token", any(unattended::app_service_token))
        .route("/cloudshell/token", any(unattended::cloud_shell_token))
        .route("/arc/token", any(unattended::arc_token))
        .route(
            "/metadata/identity/oauth2/token",
            any(unattended::imds_token),
        )
        .route(
            "/{root}/oauth2/v2.0/devicecode",
            any(delegated::device_code_route),
        )
        .route(
            "/{root}/oauth2/v2.0/authorize",
            any(delegated::authorize_route),
        );
    // Without a tenant these paths stay unknown (404), as they always were.
    if shared.has_tenant() {
        router = router
            .route(
                "/{root}/security/identities/identityAccounts",
                reads::read_route(reads::Route::IdentityList),
            )
            .route(
                "/{root}/security/identities/identityAccounts/{id}",
                reads::read_route(reads::Route::IdentityGet),
            )
            .route("/{root}/users/{key}", reads::read_route(reads::Route::User))
            // `users('{upn}')`: one segment after the version.
            .route("/{root}/{resource}", any(reads::get_user_by_key))
            .route(
                "/{root}/roleManagement/directory/roleAssignments",
                reads::read_route(reads::Route::RoleAssignments),
            )
            .route(
                "/{root}/roleManagement/directory/roleEligibilityScheduleInstances",
                reads::read_route(reads::Route::RoleEligibility),
            )
            .route(
                "/{root}/roleManagement/directory/roleDefinitions",
                reads::read_route(reads::Route::RoleDefinitions),
            )
            .route(
                "/{root}/groups/{id}/transitiveMembers",
                reads::read_route(reads::Route::GroupMembers),
            )
            .route(
                "/{root}/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances",
                reads::read_route(reads::Route::GroupEligibility),
            )
            .route(
                "/{root}/directory/administrativeUnits",
                reads::read_route(reads::Route::Units),
            )
            .route(
                "/{root}/directory/administrativeUnits/{id}/members",
                reads::read_route(reads::Route::UnitMembers),
            );
    }
    router.fallback(graph::not_found).with_state(shared)
}
