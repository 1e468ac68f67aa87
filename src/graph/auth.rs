//! Access tokens for Graph (SPEC section 2, issue 4): [`Tokens`], what every request asks for a
//! token, and [`AuthError`], why none could be had. The parts live apart, by what each owns:
//!
//! - [`sources`]: the credential sources, first match wins: a ready token
//!   (`--access-token-file`, env `GRAPH_ACCESS_TOKEN`); a client certificate (`--certificate`,
//!   env `AZURE_CLIENT_CERTIFICATE_PATH`), which signs a client assertion; a client secret
//!   (`--client-secret-file`, env `AZURE_CLIENT_SECRET`). Which kind is used is
//!   `credential::choose`'s decision (`--auth`, SPEC section 9); the unattended kinds
//!   ([`credential`]) plug in as a [`Fetcher`] (how one token request is made).
//! - [`entra`]: Entra's client-credentials grant, asked of
//!   `{authority}/{tenant}/oauth2/v2.0/token` for `{graph root}/.default`.
//! - [`cache`]: the token cache and its single flight, shared with a responder's sign-in
//!   ([`delegated`]); token requests run through the one attempt driver ([`crate::attempt`]).
//! - [`refusal`]: Entra's refusals, and what to do about them.
//!
//! The runner asks for [`Tokens::current`] before each attempt and calls [`Tokens::refresh`]
//! once when Graph answers 401 with the token it used.
//!
//! Secrets (tokens, client secrets, assertions, keys) live in `secrecy` types and never reach a
//! log or an error message: errors name files and sources, and the token endpoint's error text is
//! scrubbed of what was sent.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};

use crate::retry::{AttemptKind, RetryPolicy};

use self::cache::AppTokens;
pub(crate) use self::cache::{TOKEN_RETRY, unpaced, warn_retrying};
use self::credential::azure_cli::AzureCli;
use self::credential::managed::ManagedIdentity;
use self::delegated::{DelegatedTokens, SignInKind, SignedIn};
use self::entra::EntraGrant;
// The hostile token responses are read in `graph::hostile_tests`.
#[cfg(test)]
pub(crate) use self::entra::parse_issued;
pub(super) use self::refusal::refusal;
pub(crate) use self::sources::app_ids;
pub use self::sources::{CredentialSources, SourceKind};
use super::assertion::CertificateError;
use super::client::{ClientError, check_service_url};
use super::permissions::Granted;

mod cache;
pub mod credential;
pub mod delegated;
mod entra;
pub(crate) mod refusal;
mod sources;

/// Entra's lifetime when a response leaves `expires_in` out (60-90 minutes in practice).
pub(crate) const DEFAULT_LIFETIME: Duration = Duration::from_secs(3599);
/// The longest time one token request may take.
pub(crate) const MAX_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Tokens from `fetcher`, cached and renewed like app credentials.
    pub(crate) fn fetched(kind: SourceKind, fetcher: Fetcher) -> Tokens {
        Tokens {
            kind,
            source: Arc::new(Source::App(AppTokens::new(fetcher))),
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

/// An HTTP client for a token endpoint. It follows no redirect: one would carry the form (a
/// secret, an assertion, a code) somewhere else. `timeout` bounds each request and its
/// connection.
pub(crate) fn token_client(timeout: Duration) -> Result<reqwest::Client, AuthError> {
    reqwest::Client::builder()
        .user_agent(super::client::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| AuthError::Client(e.to_string()))
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

/// How one token request is made: the part each credential kind owns. The cache, the single
/// flight and the attempt driver around it are shared ([`cache`]).
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

    const TENANT: &str = "contoso.onmicrosoft.com";

    pub(super) fn endpoint_for(cloud: Cloud) -> TokenEndpoint {
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
}
