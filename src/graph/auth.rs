//! Access tokens for Graph (SPEC section 2, issue 4). Owns the credential sources, first match
//! wins: a ready token (`--access-token-file`, env `GRAPH_ACCESS_TOKEN`); a client certificate
//! (`--certificate`, env `AZURE_CLIENT_CERTIFICATE_PATH`), which signs a client assertion; a
//! client secret (`--client-secret-file`, env `AZURE_CLIENT_SECRET`). The last two ask Entra's
//! token endpoint (`{authority}/{tenant}/oauth2/v2.0/token`) for `{graph root}/.default`.
//!
//! Which kind is used is `credential::choose`'s decision (`--auth`, SPEC section 9); the
//! unattended kinds plug in here as a [`Fetcher`] (how one token request is made), so that they
//! all share the cache, the single flight and the retry loop below.
//!
//! Token lifecycle: the token is cached and renewed ahead of expiry (when less than
//! min(5 min, a quarter of its lifetime) remains); one request to the token endpoint at a time
//! however many workers wait (single flight); other workers keep using the old token while it is
//! still good. The runner asks for [`Tokens::current`] before each attempt and calls
//! [`Tokens::refresh`] once when Graph answers 401 with the token it used.
//!
//! Secrets (tokens, client secrets, assertions, keys) live in `secrecy` types and never reach a
//! log or an error message: errors name files and sources, and the token endpoint's error text is
//! scrubbed of what was sent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, warn};

use self::credential::azure_cli::AzureCli;
use self::credential::federated::Federated;
use self::credential::managed::ManagedIdentity;
use self::credential::{AuthKind, Environment, ManagedHost, ManagedIdentityId};
use self::delegated::{DelegatedTokens, SignInKind, SignedIn};
#[cfg(test)]
use self::refusal::aadsts_code;
pub(super) use self::refusal::refusal;
use self::refusal::{scrub, transport_reason};
use super::assertion::{CertificateError, ClientCertificate};
use super::client::{ClientError, USER_AGENT, check_service_url};
use super::permissions::Granted;
use crate::attempt::{Attempts, Ended, Failure, Request, Retrying, Unpaced};
use crate::retry::{AttemptKind, RetryPolicy};
use std::convert::Infallible;

pub mod credential;
pub mod delegated;
pub(crate) mod refusal;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The most ahead of expiry a token is renewed (azure-identity uses the same 5 minutes).
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Entra's lifetime when a response leaves `expires_in` out (60-90 minutes in practice).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3599);
/// How a token or sign-in request is retried when the endpoint is busy (429, 503, 504) or
/// unreachable: the same policy, `Retry-After` reading and backoff as Graph's requests, with
/// tighter bounds, since the whole run waits on it. A told wait past `max_wait` is not waited
/// out: the request fails.
pub(crate) const TOKEN_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 2,
    backoff_base: Duration::from_secs(1),
    backoff_cap: Duration::from_secs(10),
    max_wait: Duration::from_secs(20),
};
/// The longest a failed early renewal waits before trying again, while the token still works.
const MAX_TOKEN_RETRY_WAIT: Duration = Duration::from_secs(10);
/// The longest time one token request may take.
pub(crate) const MAX_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// A ready token that expires sooner than this gets a warning.
const READY_TOKEN_WARNING: Duration = Duration::from_secs(15 * 60);
/// The longest lifetime believed of an issued token (Entra's are 60-90 minutes); a larger
/// `expires_in` is read as this, so no clock arithmetic can overflow (issue 10).
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Why no token could be had. Messages never hold a secret, and say what to do next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credentials: give a client certificate (--certificate or AZURE_CLIENT_CERTIFICATE_PATH) or a client secret (AZURE_CLIENT_SECRET or --client-secret-file), with --tenant-id and --client-id (or AZURE_TENANT_ID and AZURE_CLIENT_ID); or a ready token (GRAPH_ACCESS_TOKEN or --access-token-file); or set up an unattended kind (workload-identity: AZURE_FEDERATED_TOKEN_FILE; github-oidc: ACTIONS_ID_TOKEN_REQUEST_URL; managed-identity: IDENTITY_ENDPOINT or MSI_ENDPOINT); or pick one with --auth (managed-identity on a VM, azure-cli, auto); or use --mock to rehearse"
    )]
    NoCredentials,
    /// A kind was chosen (or found) without all it needs (issue 18).
    #[error("--auth {kind} needs {missing}; nothing was sent")]
    MissingInput { kind: &'static str, missing: String },
    #[error(
        "--auth auto found more than one credential set up ({found}); choose one with --auth, or unset the others. Nothing was sent"
    )]
    AutoConflict { found: String },
    #[error("managed identity: {host} at {url}: {reason}")]
    ManagedIdentity {
        host: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "managed identity: nothing answered at {url} within {waited}: the Azure Instance Metadata Service (IMDS) is not reachable, so this machine has no managed identity (it is not an Azure VM, or IMDS is blocked). Run it where Azure gives an identity, or choose another --auth"
    )]
    ManagedIdentityNowhere { url: String, waited: String },
    #[error(
        "managed identity: refusing to contact IMDS at its real address (169.254.169.254) under cargo: tests must point AZURE_POD_IDENTITY_AUTHORITY_HOST at the mock"
    )]
    ImdsGuard,
    #[error("github-oidc: GitHub's OIDC token endpoint {url}: {reason}")]
    GitHubOidc { url: String, reason: String },
    #[error("azure-cli: {reason}")]
    AzureCli { reason: String },
    #[error("azure-cli: {}", self::credential::azure_cli::USER_LOGIN)]
    AzureCliUserLogin,
    #[error("{needed_by} needs the {what}: pass {flag} or set {env}")]
    MissingId {
        needed_by: &'static str,
        what: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("{flag} {value:?} is not usable: give {what} (letters, digits, '.', '-', '_' only)")]
    BadId {
        flag: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("cannot read the {what} {path}: {reason}")]
    ReadFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the {what} is empty")]
    Empty { what: &'static str },
    #[error(
        "the {what} holds {found}, which cannot be sent in an HTTP header; it must hold the token alone, on one line"
    )]
    Unsendable {
        what: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error(
        "the ready access token expired {} ago; get a fresh one, or give app credentials (a certificate or secret), which renew themselves",
        humantime::format_duration(*ago)
    )]
    ReadyTokenExpired { ago: Duration },
    #[error(
        "the token endpoint {url} refused the credentials (HTTP {status}{}): {description}{}. {hint}",
        error.as_deref().map(|e| format!(" {e}")).unwrap_or_default(),
        ids.as_deref().map(|ids| format!(" [{ids}]")).unwrap_or_default()
    )]
    Refused {
        url: String,
        status: u16,
        error: Option<String>,
        /// `AADSTS7000215: Invalid client secret provided. ...`, first line only.
        description: String,
        /// Trace and correlation ids, for Microsoft support.
        ids: Option<String>,
        hint: String,
    },
    #[error(
        "cannot reach the token endpoint {url}: {reason}; check --cloud, --authority-url (or AZURE_AUTHORITY_HOST), and the network or proxy"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "the token endpoint {url} answered HTTP {status} without a usable token ({reason}); check --authority-url (or AZURE_AUTHORITY_HOST) points at Entra"
    )]
    BadResponse {
        url: String,
        status: u16,
        reason: String,
    },
    /// A delegated sign-in (`--auth device-code` or `browser`) gave no token.
    #[error(transparent)]
    SignIn(#[from] delegated::SignInError),
    #[error("cannot set up the token client: {0}")]
    Client(String),
    /// A ready token cannot be renewed by this tool.
    #[error(
        "Graph refused the access token and a ready token cannot be renewed here; get a fresh one (or give app credentials)"
    )]
    CannotRefresh,
}

/// What the run was given, before any file is read. Env values are passed in (not read here) so
/// that tests and the caller decide where they come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// `--access-token-file`
    pub access_token_file: Option<PathBuf>,
    /// env `GRAPH_ACCESS_TOKEN`
    pub access_token: Option<SecretString>,
    /// `--certificate` or env `AZURE_CLIENT_CERTIFICATE_PATH`
    pub certificate: Option<PathBuf>,
    /// `--certificate-key`, when the key is not in the certificate file
    pub certificate_key: Option<PathBuf>,
    /// `--client-secret-file`
    pub client_secret_file: Option<PathBuf>,
    /// env `AZURE_CLIENT_SECRET`
    pub client_secret: Option<SecretString>,
    /// `--tenant-id` or env `AZURE_TENANT_ID`
    pub tenant_id: Option<String>,
    /// `--client-id` or env `AZURE_CLIENT_ID`
    pub client_id: Option<String>,
    /// `--auth` or env `AZURE_TOKEN_CREDENTIALS`; `None`: as SPEC section 9 decides.
    pub auth: Option<AuthKind>,
    /// `--managed-identity-id`: a user-assigned identity.
    pub managed_identity_id: Option<ManagedIdentityId>,
    /// What the environment holds for the unattended kinds.
    pub environment: Environment,
    /// env `BROWSER`, for `--auth browser`.
    pub browser: Option<std::ffi::OsString>,
}

/// Which source the tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    TokenFile,
    TokenEnv,
    Certificate,
    SecretFile,
    SecretEnv,
    /// `run --mock`: the in-process mock's token endpoint, with a secret made up for the run.
    Mock,
    WorkloadIdentity,
    GithubOidc,
    ManagedIdentity(ManagedHost),
    AzureCli,
    /// `--auth device-code`: a responder signed in as themselves (issue 18).
    DeviceCode,
    /// `--auth browser`: a responder signed in as themselves in the browser (issue 18).
    Browser,
}

impl SourceKind {
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::TokenFile => "a ready access token (--access-token-file)",
            SourceKind::TokenEnv => "a ready access token (GRAPH_ACCESS_TOKEN)",
            SourceKind::Certificate => {
                "a client certificate (--certificate or AZURE_CLIENT_CERTIFICATE_PATH)"
            }
            SourceKind::SecretFile => "a client secret (--client-secret-file)",
            SourceKind::SecretEnv => "a client secret (AZURE_CLIENT_SECRET)",
            SourceKind::Mock => "the built-in mock's client secret",
            SourceKind::WorkloadIdentity => {
                "workload identity (AZURE_FEDERATED_TOKEN_FILE, read for every token request)"
            }
            SourceKind::GithubOidc => {
                "GitHub Actions OIDC (a fresh ACTIONS_ID_TOKEN_REQUEST_URL token for every token request)"
            }
            SourceKind::ManagedIdentity(ManagedHost::AppService) => {
                "managed identity (IDENTITY_ENDPOINT: App Service, Functions, Container Apps, Automation)"
            }
            SourceKind::ManagedIdentity(ManagedHost::CloudShell) => {
                "managed identity (MSI_ENDPOINT: Cloud Shell)"
            }
            SourceKind::ManagedIdentity(ManagedHost::Arc) => {
                "managed identity (IDENTITY_ENDPOINT and IMDS_ENDPOINT: Azure Arc)"
            }
            SourceKind::ManagedIdentity(ManagedHost::Imds) => {
                "managed identity (IMDS: an Azure VM or scale set)"
            }
            SourceKind::AzureCli => "the Azure CLI (az account get-access-token)",
            SourceKind::DeviceCode => "a responder's own sign-in (--auth device-code)",
            SourceKind::Browser => "a responder's own sign-in (--auth browser)",
        }
    }

    /// Whether the tokens are a signed-in user's (delegated), not an app's.
    pub fn is_delegated(self) -> bool {
        matches!(self, SourceKind::DeviceCode | SourceKind::Browser)
    }
}

impl CredentialSources {
    /// The delegated sign-in `--auth` (or `AZURE_TOKEN_CREDENTIALS`) asks for, if any: a
    /// responder signing in as themselves (issue 18).
    pub fn sign_in(&self) -> Option<SignInKind> {
        match self.auth {
            Some(AuthKind::DeviceCode) => Some(SignInKind::DeviceCode),
            Some(AuthKind::Browser) => Some(SignInKind::Browser),
            _ => None,
        }
    }

    /// Every source given, in the order of SPEC section 2; the first one wins. An explicit file
    /// flag comes before its environment variable.
    pub fn given(&self) -> Vec<SourceKind> {
        let mut given = Vec::new();
        if self.access_token_file.is_some() {
            given.push(SourceKind::TokenFile);
        }
        if self.access_token.is_some() {
            given.push(SourceKind::TokenEnv);
        }
        if self.certificate.is_some() {
            given.push(SourceKind::Certificate);
        }
        if self.client_secret_file.is_some() {
            given.push(SourceKind::SecretFile);
        }
        if self.client_secret.is_some() {
            given.push(SourceKind::SecretEnv);
        }
        given
    }
}

/// Where tokens are asked for, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    /// `https://login.microsoftonline.com`, without a trailing slash.
    authority: String,
    /// `{graph root}/.default`
    scope: String,
}

impl TokenEndpoint {
    /// `authority` as `--authority-url` or `AZURE_AUTHORITY_HOST` give it (a bare host name
    /// means https); `graph_root` is the Graph service root the tokens are for.
    pub fn new(authority: &str, graph_root: &str) -> Result<TokenEndpoint, ClientError> {
        let authority = authority.trim();
        let authority = if authority.contains("://") {
            authority.to_owned()
        } else {
            format!("https://{authority}")
        };
        let authority = check_service_url(&authority)?;
        let graph = check_service_url(graph_root)?;
        // The scope names the Graph resource by its origin: any path on --graph-url (a proxy
        // prefix) is not part of the resource's identifier.
        let scope = format!("{}/.default", graph.origin().ascii_serialization());
        Ok(TokenEndpoint {
            authority: authority.as_str().trim_end_matches('/').to_owned(),
            scope,
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    #[cfg(test)]
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The Graph root (`https://graph.microsoft.com`): a managed identity's `resource`, and the
    /// prefix of a delegated sign-in's scopes. The scope without `/.default`.
    pub fn resource(&self) -> &str {
        self.scope.trim_end_matches("/.default")
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`: also the `aud` of a client assertion.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.authority)
    }
}

/// Where the run's tokens come from, and the cache. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct Tokens {
    kind: SourceKind,
    source: Arc<Source>,
}

// One per run, behind an Arc: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// A token obtained elsewhere; used as it is until Graph refuses it.
    Ready(Arc<SecretString>),
    App(AppTokens),
    /// A responder's own sign-in ([`delegated`]).
    Delegated(DelegatedTokens),
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Tokens {
    /// Builds the first source given (reading its files), without asking for a token yet.
    /// `timeout` bounds each token request (at most 30 s).
    pub fn from_sources(
        sources: CredentialSources,
        endpoint: &TokenEndpoint,
        timeout: Duration,
    ) -> Result<Tokens, AuthError> {
        let given = sources.given();
        let chosen = self::credential::choose(&sources)?;
        let kind = chosen.kind;
        if sources.auth.is_none() && given.len() > 1 {
            let ignored: Vec<&str> = given[1..].iter().map(|k| k.describe()).collect();
            warn!(
                using = kind.describe(),
                ignored = %ignored.join("; "),
                "more than one credential given: the first in SPEC order wins (ready token, certificate, secret)"
            );
        }
        match kind {
            SourceKind::TokenFile | SourceKind::TokenEnv => {
                let token = match (&sources.access_token_file, sources.access_token) {
                    (Some(path), _) if kind == SourceKind::TokenFile => {
                        read_secret_file(path, "access token file")?
                    }
                    (_, Some(token)) => token,
                    _ => return Err(AuthError::NoCredentials),
                };
                Tokens::ready(kind, &token, SystemTime::now())
            }
            SourceKind::Certificate | SourceKind::SecretFile | SourceKind::SecretEnv => {
                let (tenant, client_id) = app_ids(kind, &sources)?;
                let proof = match kind {
                    SourceKind::Certificate => {
                        let certificate = sources
                            .certificate
                            .as_deref()
                            .ok_or(AuthError::NoCredentials)?;
                        let key = sources.certificate_key.as_deref();
                        let loaded = ClientCertificate::load(certificate, key)?;
                        warn_if_shared(key.unwrap_or(certificate), "certificate key file");
                        Proof::Certificate(Box::new(loaded))
                    }
                    SourceKind::SecretFile => {
                        let path = sources
                            .client_secret_file
                            .as_deref()
                            .ok_or(AuthError::NoCredentials)?;
                        Proof::Secret(read_secret_file(path, "client secret file")?)
                    }
                    _ => Proof::Secret(sources.client_secret.ok_or(AuthError::NoCredentials)?),
                };
                Tokens::app(kind, endpoint, &tenant, client_id, proof, timeout)
            }
            SourceKind::WorkloadIdentity | SourceKind::GithubOidc => {
                let (tenant, client_id) = app_ids(kind, &sources)?;
                let federated = if kind == SourceKind::WorkloadIdentity {
                    Federated::workload_identity(&sources)?
                } else {
                    Federated::github(&sources, timeout.min(MAX_TOKEN_TIMEOUT))?
                };
                Tokens::app(
                    kind,
                    endpoint,
                    &tenant,
                    client_id,
                    Proof::Federated(federated),
                    timeout,
                )
            }
            SourceKind::ManagedIdentity(host) => {
                let identity = ManagedIdentity::new(
                    &sources,
                    host,
                    endpoint.resource(),
                    timeout.min(MAX_TOKEN_TIMEOUT),
                    chosen.by_auto,
                )?;
                Ok(Tokens::fetched(kind, Fetcher::Managed(identity)))
            }
            SourceKind::AzureCli => {
                let cli = AzureCli::new(&endpoint.scope, sources.tenant_id.as_deref());
                Ok(Tokens::fetched(kind, Fetcher::AzureCli(cli)))
            }
            // A responder's sign-in needs what the run asks for and a printer for its message:
            // `delegated::tokens` makes it (see `commands::prepare::credentials`).
            SourceKind::Mock | SourceKind::DeviceCode | SourceKind::Browser => {
                Err(AuthError::NoCredentials)
            }
        }
    }

    /// `run --mock`: the in-process mock's token endpoint, with the client id and secret it was
    /// started with.
    pub fn for_mock(
        endpoint: &TokenEndpoint,
        client_id: &str,
        secret: SecretString,
        timeout: Duration,
    ) -> Result<Tokens, AuthError> {
        Tokens::app(
            SourceKind::Mock,
            endpoint,
            "mock",
            client_id.to_owned(),
            Proof::Secret(secret),
            timeout,
        )
    }

    /// A ready token, checked for expiry when it is a JWT (Entra's are).
    fn ready(kind: SourceKind, token: &SecretString, now: SystemTime) -> Result<Tokens, AuthError> {
        let text = token.expose_secret().trim();
        // People paste the whole header value.
        let text = match text.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => text[7..].trim(),
            _ => text,
        };
        if text.is_empty() {
            return Err(AuthError::Empty {
                what: "ready access token",
            });
        }
        // Caught here, before anything is sent: otherwise every row would fail to build its
        // request and be retried as if the network were down (issue 10).
        if let Some(found) = unsendable(text) {
            return Err(AuthError::Unsendable {
                what: "ready access token",
                found,
            });
        }
        match ready_token_expiry(text).map(|exp| (exp.duration_since(now), now.duration_since(exp)))
        {
            Some((_, Ok(ago))) => return Err(AuthError::ReadyTokenExpired { ago }),
            Some((Ok(left), _)) if left < READY_TOKEN_WARNING => warn!(
                expires_in = %humantime::format_duration(Duration::from_secs(left.as_secs())),
                "the ready access token expires soon; rows sent after that fail with 401 (app credentials renew themselves)"
            ),
            _ => {}
        }
        Ok(Tokens {
            kind,
            source: Arc::new(Source::Ready(Arc::new(SecretString::from(text)))),
        })
    }

    fn app(
        kind: SourceKind,
        endpoint: &TokenEndpoint,
        tenant: &str,
        client_id: String,
        proof: Proof,
        timeout: Duration,
    ) -> Result<Tokens, AuthError> {
        let timeout = timeout.min(MAX_TOKEN_TIMEOUT);
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirect would carry the form (and the secret) somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AuthError::Client(e.to_string()))?;
        let grant = EntraGrant {
            http,
            token_url: endpoint.token_url(tenant),
            scope: endpoint.scope.clone(),
            client_id,
            proof,
        };
        Ok(Tokens::fetched(kind, Fetcher::Entra(grant)))
    }

    /// Tokens from `fetcher`, cached and renewed like app credentials.
    pub(crate) fn fetched(kind: SourceKind, fetcher: Fetcher) -> Tokens {
        Tokens {
            kind,
            source: Arc::new(Source::App(AppTokens {
                fetcher,
                cache: std::sync::Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            })),
        }
    }

    /// The token to send now: the cached one, or a new one when it is due for renewal.
    pub async fn current(&self) -> Result<Arc<SecretString>, AuthError> {
        match self.source.as_ref() {
            Source::Ready(token) => Ok(token.clone()),
            Source::App(app) => app.current().await,
            Source::Delegated(delegated) => delegated.current().await,
        }
    }

    /// A fresh token after Graph refused `stale` with a 401. Many workers may report the same
    /// stale token at once; only one renewal follows, and the others get its token.
    pub async fn refresh(&self, stale: &Arc<SecretString>) -> Result<Arc<SecretString>, AuthError> {
        match self.source.as_ref() {
            Source::Ready(_) => Err(AuthError::CannotRefresh),
            Source::App(app) => app.refresh(stale).await,
            Source::Delegated(delegated) => delegated.refresh(stale).await,
        }
    }

    /// A responder's sign-in (`--auth device-code` or `browser`); nothing is asked until the
    /// first [`Tokens::current`].
    pub fn delegated(delegated: DelegatedTokens) -> Tokens {
        let kind = match delegated.kind() {
            SignInKind::DeviceCode => SourceKind::DeviceCode,
            SignInKind::Browser => SourceKind::Browser,
        };
        Tokens {
            kind,
            source: Arc::new(Source::Delegated(delegated)),
        }
    }

    /// What `token` (the current one) may do: the delegated sign-in's `scope`, else the
    /// token's own `roles` or `scp` claims.
    pub fn granted(&self, token: &SecretString) -> Granted {
        match self.source.as_ref() {
            Source::Delegated(delegated) => delegated
                .signed_in()
                .map_or(Granted::Unreadable, |signed_in| signed_in.granted),
            _ => Granted::from_token(token.expose_secret()),
        }
    }

    /// Who signed in (delegated kinds) and until when the token is good; `None` for app tokens.
    pub fn signed_in(&self) -> Option<SignedIn> {
        match self.source.as_ref() {
            Source::Delegated(delegated) => delegated.signed_in(),
            _ => None,
        }
    }

    /// Names the source, never the secret: for `--dry-run` and logs.
    pub fn describe(&self) -> &'static str {
        self.kind.describe()
    }
}

/// The proof of the app's identity sent to the token endpoint.
pub(crate) enum Proof {
    Secret(SecretString),
    Certificate(Box<ClientCertificate>),
    /// Workload identity or GitHub OIDC: an assertion got afresh for every token request.
    Federated(Federated),
}

/// How one token request is made: the part each credential kind owns. The cache, the single
/// flight and the retry loop around it are shared (`AppTokens`).
pub(crate) enum Fetcher {
    /// Entra's client-credentials grant: a secret, a certificate or a federated assertion.
    Entra(EntraGrant),
    /// A managed-identity endpoint of the host (IMDS, App Service, Cloud Shell, Arc).
    Managed(ManagedIdentity),
    /// `az account get-access-token`.
    AzureCli(AzureCli),
}

impl Fetcher {
    async fn request_once(&self) -> Attempt {
        match self {
            Fetcher::Entra(grant) => grant.request_once().await,
            Fetcher::Managed(identity) => identity.request_once().await,
            Fetcher::AzureCli(cli) => cli.request_once().await,
        }
    }

    fn policy(&self) -> RetryPolicy {
        match self {
            Fetcher::Managed(identity) => identity.policy(),
            Fetcher::Entra(_) | Fetcher::AzureCli(_) => TOKEN_RETRY,
        }
    }

    /// Where tokens are asked for, for logs (no secret in it).
    fn target(&self) -> &str {
        match self {
            Fetcher::Entra(grant) => &grant.token_url,
            Fetcher::Managed(identity) => identity.url(),
            Fetcher::AzureCli(_) => "az account get-access-token",
        }
    }
}

/// Entra's client-credentials grant for one app.
pub(crate) struct EntraGrant {
    http: reqwest::Client,
    token_url: String,
    scope: String,
    client_id: String,
    proof: Proof,
}

/// Tokens from a fetcher, cached and renewed.
struct AppTokens {
    fetcher: Fetcher,
    /// Read by every worker before every attempt; never held across an await.
    cache: std::sync::Mutex<Option<Cached>>,
    /// Held while a token request is in flight: the single flight.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Cached {
    token: Arc<SecretString>,
    /// From here on, the next caller renews it.
    renew_at: Instant,
    /// Until here, workers may keep sending it while another renews it.
    usable_until: Instant,
}

impl Cached {
    /// A token valid for `lifetime` from `asked_at` (when the request left: never later than
    /// Entra's own clock started).
    fn new(token: SecretString, lifetime: Duration, asked_at: Instant) -> Cached {
        let margin = renewal_margin(lifetime);
        let expires_at = asked_at + lifetime;
        Cached {
            token: Arc::new(token),
            renew_at: expires_at - margin,
            usable_until: expires_at - margin / 2,
        }
    }
}

/// How long before expiry a token is renewed: min(5 min, a quarter of its lifetime), so a
/// 75-minute token is renewed 5 minutes early and a 2-second one half a second early.
pub fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_RENEWAL_MARGIN)
}

/// What one token request gave.
pub(crate) enum Attempt {
    Issued {
        token: SecretString,
        lifetime: Duration,
    },
    /// Worth another try (429, 5xx, no connection), as the retry policy decides.
    Transient(AuthError, AttemptKind),
    Final(AuthError),
}

impl AppTokens {
    fn cached(&self) -> Option<Cached> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn store(&self, cached: Option<Cached>) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = cached;
    }

    async fn current(&self) -> Result<Arc<SecretString>, AuthError> {
        let cached = self.cached();
        let now = Instant::now();
        if let Some(cached) = &cached
            && now < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        // Due for renewal, or none yet. One worker asks; while it does, the others keep sending
        // the old token if it is still good, or wait for the new one.
        let _fetching = match self.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(cached) = &cached
                    && now < cached.usable_until
                {
                    return Ok(cached.token.clone());
                }
                self.fetching.lock().await
            }
        };
        // Another worker may have renewed it while this one waited for the lock.
        let cached = self.cached();
        if let Some(cached) = &cached
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                self.store(Some(fresh));
                Ok(token)
            }
            Err(error) => {
                let now = Instant::now();
                match cached {
                    // Renewing early failed but the token still works: keep it, try again soon.
                    Some(cached) if now < cached.usable_until => {
                        warn!(error = %error, "cannot renew the access token yet; using the current one until it is due");
                        let retry = ((cached.usable_until - now) / 4).min(MAX_TOKEN_RETRY_WAIT);
                        let token = cached.token.clone();
                        self.store(Some(Cached {
                            renew_at: now + retry,
                            ..cached
                        }));
                        Ok(token)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    async fn refresh(&self, stale: &Arc<SecretString>) -> Result<Arc<SecretString>, AuthError> {
        let _fetching = self.fetching.lock().await;
        if let Some(cached) = self.cached()
            && !Arc::ptr_eq(&cached.token, stale)
            && Instant::now() < cached.usable_until
        {
            // Another worker already renewed it.
            return Ok(cached.token);
        }
        // Graph refused the cached token: forget it, so that if no new one can be had the next
        // row stops the run (exit 4) instead of sending the refused token again.
        self.store(None);
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        self.store(Some(fresh));
        Ok(token)
    }

    /// Asks the token endpoint, retrying a busy or unreachable one as the fetcher's policy
    /// ([`TOKEN_RETRY`]) allows, through the one attempt driver.
    async fn fetch(&self) -> Result<Cached, AuthError> {
        let policy = self.fetcher.policy();
        unpaced(
            &mut TokenRequest {
                fetcher: &self.fetcher,
            },
            &policy,
        )
        .await
    }
}

/// Runs a request to a token endpoint (a token or a sign-in request) through the attempt
/// driver: no pacing, no token of its own, and no stop but its caller dropping it.
pub(crate) async fn unpaced<R>(
    request: &mut R,
    policy: &RetryPolicy,
) -> Result<R::Answer, AuthError>
where
    R: Request<Token = (), Error = AuthError, TokenError = Infallible>,
{
    let ended = Attempts {
        policy,
        admission: &Unpaced,
        stop: None,
    }
    .run(request)
    .await;
    match ended {
        Ended::Answered(answer) => Ok(answer),
        Ended::Failed(error, _) => Err(error),
        Ended::NoToken { error, .. } | Ended::RefreshRefused { refusal: error, .. } => {
            match error {}
        }
        // Neither comes without a stop or a `prepare`; were one to, the last error says why.
        Ended::Stopped { last } | Ended::Unprepared { last, .. } => {
            Err(last.unwrap_or_else(|| {
                AuthError::Client("the request to the token endpoint was stopped".to_owned())
            }))
        }
    }
}

/// Logs a token endpoint's failed attempt that is tried again; `what` names the request.
pub(crate) fn warn_retrying(event: Retrying<'_, AuthError>, what: &'static str) {
    let (error, attempt, wait) = match event {
        Retrying::Throttled {
            error,
            attempt,
            pause,
            again: true,
            ..
        } => (error, attempt, pause),
        Retrying::Backoff {
            error,
            attempt,
            wait,
        } => (error, attempt, wait),
        Retrying::Throttled { .. } | Retrying::Refreshed { .. } => return,
    };
    warn!(error = %error, attempt, wait_ms = wait.as_millis() as u64, "{what} failed; retrying");
}

/// One token request, as the attempt driver sends it: no token of its own, and no pacing.
struct TokenRequest<'a> {
    fetcher: &'a Fetcher,
}

impl Request for TokenRequest<'_> {
    type Token = ();
    type Answer = Cached;
    type Error = AuthError;
    type TokenError = Infallible;

    async fn token(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn send(&mut self, (): &(), attempt: u32) -> Result<Cached, Failure<AuthError>> {
        let asked_at = Instant::now();
        debug!(url = %self.fetcher.target(), attempt, "asking for an access token");
        match self.fetcher.request_once().await {
            Attempt::Issued { token, lifetime } => {
                debug!(lifetime_s = lifetime.as_secs(), "got an access token");
                Ok(Cached::new(token, lifetime, asked_at))
            }
            Attempt::Final(error) => Err(Failure::Final(error)),
            Attempt::Transient(error, kind) => Err(Failure::Retryable(error, kind)),
        }
    }

    fn retrying(&mut self, event: Retrying<'_, AuthError>) {
        warn_retrying(event, "token request");
    }
}

impl EntraGrant {
    async fn request_once(&self) -> Attempt {
        let assertion = match &self.proof {
            Proof::Secret(_) => None,
            Proof::Certificate(certificate) => {
                match certificate.assertion(&self.client_id, &self.token_url, SystemTime::now()) {
                    Ok(assertion) => Some(assertion),
                    Err(error) => return Attempt::Final(error.into()),
                }
            }
            // Read or minted now, for this request only: the file rotates and GitHub's token
            // lives five minutes (issue 18).
            Proof::Federated(federated) => match federated.assertion().await {
                Ok(assertion) => Some(assertion),
                Err(failed) => return failed,
            },
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("scope", &self.scope),
        ];
        let sent_secret = match (&self.proof, &assertion) {
            (Proof::Secret(secret), _) => {
                form.push(("client_secret", secret.expose_secret()));
                secret.expose_secret()
            }
            (_, Some(assertion)) => {
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", assertion.expose_secret()));
                assertion.expose_secret()
            }
            (Proof::Certificate(_) | Proof::Federated(_), None) => "",
        };
        let response = self
            .http
            .post(&self.token_url)
            .header(ACCEPT, "application/json")
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .form(&form)
            .send()
            .await;
        let unreachable = |error: &reqwest::Error| {
            let kind = if error.is_timeout() {
                AttemptKind::Timeout
            } else {
                AttemptKind::Connection
            };
            let reason = scrub(&transport_reason(error), sent_secret);
            Attempt::Transient(
                AuthError::Unreachable {
                    url: self.token_url.clone(),
                    reason,
                },
                kind,
            )
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => return unreachable(&error),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return unreachable(&error),
        };
        if (200..300).contains(&status) {
            return match parse_issued(&body) {
                Ok((token, lifetime)) => Attempt::Issued { token, lifetime },
                Err(reason) => Attempt::Final(AuthError::BadResponse {
                    url: self.token_url.clone(),
                    status,
                    reason,
                }),
            };
        }
        let error = refusal(&self.token_url, status, &body, sent_secret);
        if status == 429 || status >= 500 {
            Attempt::Transient(
                error,
                AttemptKind::Status {
                    status,
                    retry_after,
                },
            )
        } else {
            Attempt::Final(error)
        }
    }
}

/// The tenant and client id an app credential needs, checked for what may go in a URL path.
pub(crate) fn app_ids(
    kind: SourceKind,
    sources: &CredentialSources,
) -> Result<(String, String), AuthError> {
    let needed_by = kind.describe();
    let tenant = sources
        .tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::MissingId {
            needed_by,
            what: "directory (tenant) id",
            flag: "--tenant-id",
            env: "AZURE_TENANT_ID",
        })?;
    let client_id = sources
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::MissingId {
            needed_by,
            what: "application (client) id",
            flag: "--client-id",
            env: "AZURE_CLIENT_ID",
        })?;
    let plain = |text: &str| {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !plain(tenant) {
        return Err(AuthError::BadId {
            flag: "--tenant-id",
            value: tenant.to_owned(),
            what: "the directory (tenant) id, a GUID, or its domain such as contoso.onmicrosoft.com",
        });
    }
    if !plain(client_id) {
        return Err(AuthError::BadId {
            flag: "--client-id",
            value: client_id.to_owned(),
            what: "the application (client) id, a GUID",
        });
    }
    Ok((tenant.to_owned(), client_id.to_owned()))
}

/// Reads a file holding one secret (trimmed), warning if other users can read it.
fn read_secret_file(path: &Path, what: &'static str) -> Result<SecretString, AuthError> {
    warn_if_shared(path, what);
    let mut text = std::fs::read_to_string(path).map_err(|e| AuthError::ReadFile {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let secret = SecretString::from(text.trim());
    text.zeroize();
    if secret.expose_secret().is_empty() {
        return Err(AuthError::Empty { what });
    }
    Ok(secret)
}

/// Warns when a file holding a secret is open to group or others (Unix mode & 0o077).
fn warn_if_shared(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(
                    file = %path.display(),
                    mode = %format!("{mode:03o}"),
                    fix = %format!("chmod 600 {}", path.display()),
                    "the {what} {} can be read by other users; restrict it with `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, what);
    }
}

/// The claims of a JWT (unverified: Graph verifies; this reads what the token says of itself);
/// `None` for opaque tokens.
pub(crate) fn token_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let claims = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&claims).ok()
}

/// The tenant (`tid`) and application (`appid`, or `azp` in v2 tokens) a token was issued for:
/// ids, not secrets, for the run's record.
pub(crate) fn token_tenant_and_app(token: &str) -> (Option<String>, Option<String>) {
    let Some(claims) = token_claims(token) else {
        return (None, None);
    };
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_str())
            .map(crate::sanitize::printable_owned)
    };
    (text("tid"), text("appid").or_else(|| text("azp")))
}

/// When a ready token says it expires (`exp` of a JWT); `None` for opaque tokens.
fn ready_token_expiry(token: &str) -> Option<SystemTime> {
    let claims = token_claims(token)?;
    let exp = claims.get("exp")?.as_u64()?;
    // An absurd `exp` (u64::MAX) is as good as "no expiry we can tell" (issue 10).
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// A successful token response: the token and its lifetime.
pub(crate) fn parse_issued(body: &[u8]) -> Result<(SecretString, Duration), String> {
    #[derive(Deserialize)]
    struct Issued {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    let mut issued: Issued =
        serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let mut text = issued
        .access_token
        .take()
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| "no access_token".to_owned())?;
    let token = SecretString::from(text.trim());
    text.zeroize();
    if let Some(found) = unsendable(token.expose_secret()) {
        return Err(format!("the access_token holds {found}"));
    }
    // A number in v2.0 responses, a string in some older ones.
    let seconds = match &issued.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let lifetime = seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME)
        .clamp(Duration::from_secs(1), MAX_LIFETIME);
    Ok((token, lifetime))
}

/// What in a token would keep it out of an `Authorization` header: anything but visible ASCII.
fn unsendable(token: &str) -> Option<&'static str> {
    token
        .chars()
        .find(|c| !c.is_ascii_graphic())
        .map(|c| match c {
            '\r' | '\n' => "a line break",
            ' ' | '\t' => "a space",
            c if c.is_control() => "a control character",
            _ => "a character outside ASCII",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cloud;
    use crate::mock::{MockConfig, MockServer};

    const TENANT: &str = "contoso.onmicrosoft.com";

    fn endpoint_for(cloud: Cloud) -> TokenEndpoint {
        TokenEndpoint::new(cloud.authority().unwrap(), cloud.graph_root().unwrap()).unwrap()
    }

    #[test]
    fn each_cloud_has_its_authority_and_graph_scope() {
        let global = endpoint_for(Cloud::Global);
        assert_eq!(
            global.token_url(TENANT),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(global.scope(), "https://graph.microsoft.com/.default");

        let usgov = endpoint_for(Cloud::UsGov);
        assert_eq!(
            usgov.token_url(TENANT),
            "https://login.microsoftonline.us/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(usgov.scope(), "https://graph.microsoft.us/.default");

        let dod = endpoint_for(Cloud::UsGovDod);
        assert_eq!(dod.authority(), "https://login.microsoftonline.us");
        assert_eq!(dod.scope(), "https://dod-graph.microsoft.us/.default");

        assert!(Cloud::China.authority().unwrap_err().contains("not offer"));
    }

    #[test]
    fn authority_overrides_take_a_url_or_a_bare_host_and_refuse_plain_http() {
        let host =
            TokenEndpoint::new("login.microsoftonline.us", "https://graph.microsoft.us").unwrap();
        assert_eq!(host.authority(), "https://login.microsoftonline.us");
        let url = TokenEndpoint::new(
            "https://login.microsoftonline.com/",
            "https://graph.microsoft.com",
        )
        .unwrap();
        assert_eq!(url.authority(), "https://login.microsoftonline.com");
        let mock = TokenEndpoint::new("http://127.0.0.1:8080", "http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            mock.token_url("t"),
            "http://127.0.0.1:8080/t/oauth2/v2.0/token"
        );
        assert_eq!(mock.scope(), "http://127.0.0.1:8080/.default");
        // A --graph-url with a path (a proxy prefix) still names the resource by its origin.
        let proxied =
            TokenEndpoint::new("login.microsoftonline.com", "https://proxy.example/graph").unwrap();
        assert_eq!(proxied.scope(), "https://proxy.example/.default");
        assert!(matches!(
            TokenEndpoint::new("http://login.example.com", "https://graph.microsoft.com"),
            Err(ClientError::InsecureUrl(_))
        ));
    }

    #[test]
    fn the_renewal_margin_scales_with_the_lifetime() {
        assert_eq!(
            renewal_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(4500)),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn the_first_source_in_spec_order_wins() {
        let all = CredentialSources {
            access_token_file: Some("t".into()),
            access_token: Some(SecretString::from("x")),
            certificate: Some("c.pem".into()),
            client_secret_file: Some("s".into()),
            client_secret: Some(SecretString::from("y")),
            ..CredentialSources::default()
        };
        assert_eq!(
            all.given(),
            vec![
                SourceKind::TokenFile,
                SourceKind::TokenEnv,
                SourceKind::Certificate,
                SourceKind::SecretFile,
                SourceKind::SecretEnv
            ]
        );
        let secret_only = CredentialSources {
            client_secret: Some(SecretString::from("y")),
            ..CredentialSources::default()
        };
        assert_eq!(secret_only.given(), vec![SourceKind::SecretEnv]);
        assert!(CredentialSources::default().given().is_empty());
    }

    fn build(sources: CredentialSources) -> Result<Tokens, AuthError> {
        Tokens::from_sources(
            sources,
            &endpoint_for(Cloud::Global),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn app_credentials_need_a_tenant_and_client_id_that_fit_a_url() {
        let secret = || Some(SecretString::from("s3cret"));
        let error = build(CredentialSources {
            client_secret: secret(),
            client_id: Some("app".into()),
            ..CredentialSources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--tenant-id") && error.contains("AZURE_TENANT_ID"),
            "{error}"
        );
        let error = build(CredentialSources {
            client_secret: secret(),
            tenant_id: Some("t".into()),
            ..CredentialSources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--client-id"), "{error}");
        let error = build(CredentialSources {
            client_secret: secret(),
            tenant_id: Some("../evil?x=".into()),
            client_id: Some("app".into()),
            ..CredentialSources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("tenant"), "{error}");
        assert!(!error.contains("s3cret"));
        let ok = build(CredentialSources {
            client_secret: secret(),
            tenant_id: Some(" 72f988bf-86f1-41af-91ab-2d7cd011db47 ".into()),
            client_id: Some("app".into()),
            ..CredentialSources::default()
        })
        .unwrap();
        assert_eq!(ok.describe(), "a client secret (AZURE_CLIENT_SECRET)");
        assert!(matches!(
            build(CredentialSources::default()),
            Err(AuthError::NoCredentials)
        ));
    }

    fn jwt_with_exp(exp: u64) -> String {
        let claims = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
        format!("eyJhbGciOiJub25lIn0.{claims}.sig")
    }

    #[tokio::test]
    async fn ready_tokens_are_trimmed_and_an_expired_jwt_is_refused() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let tokens = Tokens::ready(
            SourceKind::TokenEnv,
            &SecretString::from("  Bearer abc.def  \n"),
            now,
        )
        .unwrap();
        assert_eq!(tokens.current().await.unwrap().expose_secret(), "abc.def");
        assert!(matches!(
            tokens.refresh(&tokens.current().await.unwrap()).await,
            Err(AuthError::CannotRefresh)
        ));
        let expired = Tokens::ready(
            SourceKind::TokenEnv,
            &SecretString::from(jwt_with_exp(2_000_000_000 - 120)),
            now,
        )
        .unwrap_err();
        assert!(expired.to_string().contains("expired 2m ago"), "{expired}");
        let valid = jwt_with_exp(2_000_000_000 + 3600);
        assert!(Tokens::ready(SourceKind::TokenEnv, &SecretString::from(valid), now).is_ok());
        assert!(matches!(
            Tokens::ready(SourceKind::TokenEnv, &SecretString::from(" \n"), now),
            Err(AuthError::Empty { .. })
        ));
    }

    #[test]
    fn issue_10_huge_lifetimes_and_expiries_do_not_overflow() {
        let (_, lifetime) = parse_issued(
            format!(r#"{{"expires_in":{},"access_token":"at"}}"#, u64::MAX).as_bytes(),
        )
        .unwrap();
        assert_eq!(lifetime, MAX_LIFETIME);
        // The cache's arithmetic takes it.
        let cached = Cached::new(SecretString::from("at"), lifetime, Instant::now());
        assert!(cached.renew_at < cached.usable_until);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        assert!(
            Tokens::ready(
                SourceKind::TokenEnv,
                &SecretString::from(jwt_with_exp(u64::MAX)),
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn issue_10_a_token_with_a_line_break_is_refused_before_anything_is_sent() {
        let now = SystemTime::UNIX_EPOCH;
        for (token, found) in [
            ("abc\r\ndef", "a line break"),
            ("abc def", "a space"),
            ("abc\u{7}def", "a control character"),
            ("abcé", "a character outside ASCII"),
        ] {
            let error = Tokens::ready(SourceKind::TokenFile, &SecretString::from(token), now)
                .unwrap_err()
                .to_string();
            assert!(error.contains(found), "{token:?}: {error}");
            assert!(!error.contains("abc"), "the token is not echoed: {error}");
        }
        assert!(parse_issued(br#"{"access_token":"a\r\nb"}"#).is_err());
    }

    #[test]
    fn entra_errors_give_the_aadsts_code_description_and_a_hint_without_the_secret() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'app-1'.\r\nTrace ID: 0000\r\nCorrelation ID: 1111\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[7000215],"timestamp":"2026-01-01 00:00:00Z","trace_id":"0000","correlation_id":"1111"}"#;
        let error = refusal(
            "https://login.example/t/oauth2/v2.0/token",
            401,
            body,
            "hunter22",
        )
        .to_string();
        assert!(error.contains("HTTP 401 invalid_client"), "{error}");
        assert!(
            error.contains("AADSTS7000215: Invalid client secret provided."),
            "{error}"
        );
        assert!(
            !error.contains("Timestamp: 2026"),
            "only the first line: {error}"
        );
        assert!(
            error.contains("trace id 0000, correlation id 1111"),
            "{error}"
        );
        assert!(error.contains("not its secret ID"), "{error}");
        assert!(error.contains("error?code=7000215"), "{error}");

        let echoed = refusal(
            "u",
            400,
            br#"{"error":"x","error_description":"AADSTS1: got hunter22"}"#,
            "hunter22",
        )
        .to_string();
        assert!(!echoed.contains("hunter22"), "{echoed}");
        assert!(echoed.contains("[redacted]"));

        let html = refusal("u", 502, b"<html>bad gateway hunter22</html>", "hunter22").to_string();
        assert!(
            html.contains("HTTP 502") && !html.contains("hunter22"),
            "{html}"
        );
        assert_eq!(aadsts_code("AADSTS90002: Tenant not found"), Some(90002));
    }

    #[test]
    fn token_responses_give_a_token_and_its_lifetime() {
        let (token, lifetime) =
            parse_issued(br#"{"token_type":"Bearer","expires_in":3599,"access_token":"at"}"#)
                .unwrap();
        assert_eq!(token.expose_secret(), "at");
        assert_eq!(lifetime, Duration::from_secs(3599));
        let (_, lifetime) = parse_issued(br#"{"expires_in":"60","access_token":"at"}"#).unwrap();
        assert_eq!(lifetime, Duration::from_secs(60));
        let (_, lifetime) = parse_issued(br#"{"access_token":"at"}"#).unwrap();
        assert_eq!(lifetime, DEFAULT_LIFETIME);
        assert!(parse_issued(br#"{"expires_in":5}"#).is_err());
        assert!(parse_issued(b"<html>").is_err());
    }

    async fn mock_tokens(lifetime: Duration) -> (MockServer, Tokens) {
        let mock = MockServer::start(MockConfig {
            token_lifetime: lifetime,
            client_id: Some("app".into()),
            client_secret: Some("right".into()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url()).unwrap();
        let tokens = Tokens::from_sources(
            CredentialSources {
                client_secret: Some(SecretString::from("right")),
                tenant_id: Some("tenant".into()),
                client_id: Some("app".into()),
                ..CredentialSources::default()
            },
            &endpoint,
            Duration::from_secs(5),
        )
        .unwrap();
        (mock, tokens)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiting_workers_cause_one_token_request() {
        let (mock, tokens) = mock_tokens(Duration::from_secs(3599)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let tokens = tokens.clone();
            tasks.spawn(async move { tokens.current().await.unwrap() });
        }
        let mut seen = Vec::new();
        while let Some(token) = tasks.join_next().await {
            seen.push(token.unwrap());
        }
        assert!(seen.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert_eq!(mock.stats().token_requests, 1);

        // Sixteen workers report the same stale token: one renewal, and all get the new token.
        let stale = seen[0].clone();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (tokens, stale) = (tokens.clone(), stale.clone());
            tasks.spawn(async move { tokens.refresh(&stale).await.unwrap() });
        }
        let mut renewed = Vec::new();
        while let Some(token) = tasks.join_next().await {
            renewed.push(token.unwrap());
        }
        assert!(renewed.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert!(!Arc::ptr_eq(&renewed[0], &stale));
        assert_eq!(mock.stats().token_requests, 2);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_are_renewed_ahead_of_expiry() {
        let (mock, tokens) = mock_tokens(Duration::from_secs(2)).await;
        let first = tokens.current().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(Arc::ptr_eq(&first, &tokens.current().await.unwrap()));
        // Past 1.5 s (2 s less a quarter): renewed before Graph would refuse it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let second = tokens.current().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(mock.stats().token_requests, 2);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn a_wrong_secret_is_reported_with_its_aadsts_code_and_never_retried() {
        let mock = MockServer::start(MockConfig {
            client_secret: Some("right".into()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url()).unwrap();
        let tokens = Tokens::from_sources(
            CredentialSources {
                client_secret: Some(SecretString::from("wrong-secret-value")),
                tenant_id: Some("tenant".into()),
                client_id: Some("app".into()),
                ..CredentialSources::default()
            },
            &endpoint,
            Duration::from_secs(5),
        )
        .unwrap();
        let error = tokens.current().await.unwrap_err().to_string();
        assert!(error.contains("AADSTS7000215"), "{error}");
        assert!(!error.contains("wrong-secret-value"), "{error}");
        assert_eq!(mock.stats().token_requests, 1);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn an_unreachable_authority_is_named() {
        // A port nothing listens on: bind, learn the port, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let endpoint = TokenEndpoint::new(&url, &url).unwrap();
        let tokens = Tokens::for_mock(
            &endpoint,
            "app",
            SecretString::from("s"),
            Duration::from_secs(2),
        )
        .unwrap();
        let error = tokens.current().await.unwrap_err().to_string();
        assert!(error.contains("cannot reach the token endpoint"), "{error}");
    }
}
