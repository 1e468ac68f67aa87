//! The credential sources (SPEC section 2): what the run was given, which source wins, and the
//! [`Tokens`] each one makes, reading its files. A ready token is checked here, before anything
//! is sent; an app credential becomes a [`Fetcher`] the cache asks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use tracing::warn;

use super::credential::azure_cli::AzureCli;
use super::credential::federated::Federated;
use super::credential::managed::ManagedIdentity;
use super::credential::{AuthKind, Environment, ManagedHost, ManagedIdentityId};
use super::delegated::SignInKind;
use super::entra::{EntraGrant, Proof};
use super::{
    AuthError, Fetcher, MAX_TOKEN_TIMEOUT, Source, TokenEndpoint, Tokens, token_claims,
    token_client, unsendable,
};
use crate::graph::assertion::ClientCertificate;

/// A ready token that expires sooner than this gets a warning.
const READY_TOKEN_WARNING: Duration = Duration::from_secs(15 * 60);

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

impl Tokens {
    /// Builds the first source given (reading its files), without asking for a token yet.
    /// `timeout` bounds each token request (at most 30 s).
    pub fn from_sources(
        sources: CredentialSources,
        endpoint: &TokenEndpoint,
        timeout: Duration,
    ) -> Result<Tokens, AuthError> {
        let given = sources.given();
        let chosen = super::credential::choose(&sources)?;
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
    pub(super) fn ready(
        kind: SourceKind,
        token: &SecretString,
        now: SystemTime,
    ) -> Result<Tokens, AuthError> {
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
        let http = token_client(timeout)?;
        let grant = EntraGrant {
            http,
            token_url: endpoint.token_url(tenant),
            scope: endpoint.scope.clone(),
            client_id,
            proof,
        };
        Ok(Tokens::fetched(kind, Fetcher::Entra(grant)))
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

/// When a ready token says it expires (`exp` of a JWT); `None` for opaque tokens.
fn ready_token_expiry(token: &str) -> Option<SystemTime> {
    let claims = token_claims(token)?;
    let exp = claims.get("exp")?.as_u64()?;
    // An absurd `exp` (u64::MAX) is as good as "no expiry we can tell" (issue 10).
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tokio::time::Instant;

    use super::super::cache::Cached;
    use super::super::tests::endpoint_for;
    use super::super::{MAX_LIFETIME, parse_issued};
    use super::*;
    use crate::config::Cloud;

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
}
