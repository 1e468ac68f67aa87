//! Responders who sign in as themselves (SPEC section 9, issue 18): `--auth device-code` and
//! `--auth browser` with the tenant's own public client app, and the renewal of what they give.
//!
//! - Device code: `POST {authority}/{tenant}/oauth2/v2.0/devicecode`, the sign-in message on
//!   stderr, then `/token` polled every `interval` (5 s more after each `slow_down`) until the
//!   user signs in, declines, or the code expires.
//! - Browser: authorization code with PKCE (S256) and `state`; the redirect comes back to
//!   `http://localhost:{port}` on a loopback listener of the tool's own, which refuses a redirect
//!   whose `state` is not this sign-in's. `$BROWSER` is honoured; the URL is printed always, for
//!   where no browser opens.
//! - Both ask for the Graph permissions the run needs, plus `offline_access` for a refresh
//!   token. Tokens are renewed with the refresh-token grant before they expire: one renewal at a
//!   time however many workers wait, and the refresh token each answer carries replaces the old.
//!   Everything is held in memory only, never on disk: a Security Administrator's refresh token
//!   is a 90-day credential.
//!
//! Secrets here: access and refresh tokens, the device code, the authorization code and the PKCE
//! verifier. None reaches a log, an error or argv; text from the server is scrubbed of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::ACCEPT;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, info};

use super::cache::{Cached, Holds, SingleFlight};
use super::{
    AuthError, CredentialSources, DEFAULT_LIFETIME, MAX_LIFETIME, SourceKind, TOKEN_RETRY,
    TokenEndpoint, Tokens, app_ids, refusal, token_client, unpaced, warn_retrying,
};
use crate::attempt::{Failure, Request, Retrying};
use crate::graph::client::retry_after;
use crate::graph::permissions::{Granted, Needs, claims};
use crate::retry::AttemptKind;
use crate::sanitize::{printable_owned, redact};

const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 section 3.5: each `slow_down` adds 5 seconds to the polling interval.
const SLOW_DOWN_STEP: u64 = 5;
/// RFC 8628 section 3.2: the interval when the server names none.
const DEFAULT_INTERVAL: u64 = 5;
/// Entra's device codes live 15 minutes.
const DEFAULT_CODE_LIFETIME: u64 = 900;
/// How long the browser flow waits for the redirect (Entra's codes live about 10 minutes).
const BROWSER_WAIT: Duration = Duration::from_secs(10 * 60);

/// Which delegated sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignInKind {
    /// A code to enter at microsoft.com/devicelogin, from any device (a jump box without a browser).
    DeviceCode,
    /// The system browser, with a redirect to a loopback listener (where device code is blocked).
    Browser,
}

impl SignInKind {
    /// The `--auth` name, which every message names.
    pub fn name(self) -> &'static str {
        match self {
            SignInKind::DeviceCode => "device-code",
            SignInKind::Browser => "browser",
        }
    }
}

/// Why a delegated sign-in gave no token. Every message names the kind and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignInError {
    #[error(
        "--auth {kind}: the sign-in was declined ({reason}); nothing was sent. Sign in again and approve it, as a user with the Security Administrator role"
    )]
    Declined { kind: &'static str, reason: String },
    #[error(
        "--auth device-code: the code expired before the sign-in was completed; nothing was sent. Run again and enter the code within {}",
        humantime::format_duration(*lifetime)
    )]
    Expired { lifetime: Duration },
    #[error(
        "--auth device-code: Entra did not recognise the device code (bad_verification_code); nothing was sent. Run again"
    )]
    BadCode,
    #[error(
        "--auth browser: the redirect to {redirect_uri} carried a state that is not this sign-in's, so it was refused (a stale browser tab, or a page that did not come from this sign-in); nothing was sent. Sign in again"
    )]
    WrongState { redirect_uri: String },
    #[error(
        "--auth browser: the redirect to {redirect_uri} carried neither a code nor an error; nothing was sent. Sign in again"
    )]
    NoCode { redirect_uri: String },
    #[error(
        "--auth browser: no sign-in came back within {}; nothing was sent. Open the printed URL in a browser on this machine, or use --auth device-code",
        humantime::format_duration(*waited)
    )]
    NoRedirect { waited: Duration },
    #[error("--auth browser: cannot listen on 127.0.0.1 for the redirect: {0}")]
    Listener(String),
    #[error("--auth {kind}: {what}; sign in again (run the command again). Nothing more was sent")]
    Renewal { kind: &'static str, what: String },
}

/// The tokens of `--auth device-code` or `--auth browser`: the tenant and the public client's id
/// checked now, the sign-in itself at the first token asked for. `needs` are the permissions
/// asked for (the run's, plus `offline_access`).
pub fn tokens(
    kind: SignInKind,
    sources: &CredentialSources,
    endpoint: &TokenEndpoint,
    needs: &Needs,
    timeout: Duration,
    prompt: Prompt,
) -> Result<Tokens, AuthError> {
    let source = match kind {
        SignInKind::DeviceCode => SourceKind::DeviceCode,
        SignInKind::Browser => SourceKind::Browser,
    };
    let (tenant, client_id) = app_ids(source, sources)?;
    let mut settings = SignInSettings::new(
        kind,
        tenant,
        client_id,
        endpoint,
        needs,
        sources.browser.clone(),
    );
    settings.prompt = prompt;
    Ok(Tokens::delegated(DelegatedTokens::new(
        settings,
        endpoint,
        timeout.min(Duration::from_secs(30)),
    )?))
}

/// Shows the responder what to do (the device code's message, the browser's URL): one line or
/// two of text, without a trailing newline. The command decides where it goes (stderr, above the
/// progress bar); nothing here prints.
pub type Prompt = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a browser sign-in opens its URL.
#[derive(Clone)]
pub enum Launcher {
    /// `$BROWSER` when set (a `:`-separated list of commands, `%s` standing for the URL), else
    /// the desktop's opener where there is a desktop.
    System { browser: Option<OsString> },
    /// Tests act as the browser: they get the URL.
    #[cfg(test)]
    Test(Arc<dyn Fn(String) + Send + Sync>),
}

/// What a delegated sign-in needs: the tenant's public client and what to ask for.
#[derive(Clone)]
pub struct SignInSettings {
    pub kind: SignInKind,
    pub tenant: String,
    pub client_id: String,
    /// `{graph origin}/{permission}` for each permission the run needs, then `offline_access`
    /// (a refresh token), `openid profile` (who signed in).
    pub scope: String,
    pub launcher: Launcher,
    /// Where the sign-in's instructions go.
    pub prompt: Prompt,
    /// How long the server's "second" is: `interval` and `expires_in` count in it. One second,
    /// except in tests, which shorten it so that a 5-second interval takes 5 ms.
    pub second: Duration,
}

impl SignInSettings {
    pub fn new(
        kind: SignInKind,
        tenant: String,
        client_id: String,
        endpoint: &TokenEndpoint,
        needs: &Needs,
        browser: Option<OsString>,
    ) -> SignInSettings {
        let resource = endpoint.resource();
        let mut scope: Vec<String> = needs
            .iter()
            .map(|permission| format!("{resource}/{}", permission.name()))
            .collect();
        scope.extend(["offline_access", "openid", "profile"].map(str::to_owned));
        SignInSettings {
            kind,
            tenant,
            client_id,
            scope: scope.join(" "),
            launcher: Launcher::System { browser },
            prompt: Arc::new(|_| {}),
            second: Duration::from_secs(1),
        }
    }
}

/// Delegated tokens: the sign-in on first use, then renewals with the refresh token.
pub struct DelegatedTokens {
    http: reqwest::Client,
    settings: SignInSettings,
    /// `{authority}/{tenant}/oauth2/v2.0`
    base: String,
    /// The session, and the one sign-in or renewal in flight.
    flight: SingleFlight<Session>,
}

#[derive(Clone)]
struct Session {
    /// The access token, and when it is due.
    held: Cached,
    /// The newest refresh token: each renewal's answer replaces it. Memory only.
    refresh: Option<Arc<SecretString>>,
    expires_at: SystemTime,
    granted: Granted,
    user: Option<String>,
}

impl Holds for Session {
    fn held(&self) -> &Cached {
        &self.held
    }

    fn held_mut(&mut self) -> &mut Cached {
        &mut self.held
    }
}

/// What a sign-in tells about itself, for `auth`, the lock file and the report: never a secret.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: Option<String>,
    pub expires_at: SystemTime,
    pub granted: Granted,
}

impl DelegatedTokens {
    pub fn new(
        settings: SignInSettings,
        endpoint: &TokenEndpoint,
        timeout: Duration,
    ) -> Result<DelegatedTokens, AuthError> {
        let http = token_client(timeout)?;
        Ok(DelegatedTokens {
            http,
            base: format!("{}/{}/oauth2/v2.0", endpoint.authority(), settings.tenant),
            settings,
            flight: SingleFlight::new(),
        })
    }

    pub fn kind(&self) -> SignInKind {
        self.settings.kind
    }

    /// Who signed in and what the token may do; `None` before the sign-in.
    pub fn signed_in(&self) -> Option<SignedIn> {
        self.flight.cached().map(|session| SignedIn {
            user: session.user,
            expires_at: session.expires_at,
            granted: session.granted,
        })
    }

    /// The token to send now: signs in on first use, renews when due.
    pub async fn current(&self) -> Result<Arc<SecretString>, AuthError> {
        self.flight
            .current(|session| self.sign_in_or_renew(session))
            .await
    }

    /// A fresh token after Graph refused `stale` with a 401: one renewal however many report it.
    pub async fn refresh(&self, stale: &Arc<SecretString>) -> Result<Arc<SecretString>, AuthError> {
        self.flight
            .refresh(stale, |session| self.sign_in_or_renew(session))
            .await
    }

    /// A sign-in when there is no session yet, else a renewal of `session`.
    async fn sign_in_or_renew(&self, session: Option<Session>) -> Result<Session, AuthError> {
        match session {
            None => self.sign_in().await,
            Some(session) => self.renew(&session).await,
        }
    }

    async fn sign_in(&self) -> Result<Session, AuthError> {
        match self.settings.kind {
            SignInKind::DeviceCode => self.device_code().await,
            SignInKind::Browser => self.browser().await,
        }
    }

    /// The refresh-token grant; its answer's refresh token replaces the one sent.
    async fn renew(&self, session: &Session) -> Result<Session, AuthError> {
        let kind = self.settings.kind.name();
        let Some(refresh) = &session.refresh else {
            return Err(SignInError::Renewal {
                kind,
                what: "the signed-in token is expiring and there is no refresh token to renew it (offline_access was not granted)".to_owned(),
            }
            .into());
        };
        debug!("renewing the signed-in token with its refresh token");
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.settings.client_id.as_str()),
            ("refresh_token", refresh.expose_secret()),
            ("scope", self.settings.scope.as_str()),
        ];
        let secrets = [refresh.expose_secret()];
        let reply = self.post("token", &form, &secrets).await?;
        if reply.status == 200 {
            let mut fresh = self.session_from(&reply.body, reply.asked_at, &secrets)?;
            // Entra may leave the refresh token out of a renewal: keep the one that worked.
            if fresh.refresh.is_none() {
                fresh.refresh = Some(refresh.clone());
            }
            if fresh.user.is_none() {
                fresh.user = session.user.clone();
            }
            return Ok(fresh);
        }
        let error = self.refused(&reply, &secrets);
        if reply.error.as_deref() == Some("invalid_grant") {
            return Err(SignInError::Renewal {
                kind,
                what: format!("Entra refused the refresh token ({error})"),
            }
            .into());
        }
        Err(error)
    }

    /// The device code flow (RFC 8628, entra-docs v2-oauth2-device-code).
    async fn device_code(&self) -> Result<Session, AuthError> {
        let second = self.settings.second;
        let form = [
            ("client_id", self.settings.client_id.as_str()),
            ("scope", self.settings.scope.as_str()),
        ];
        let reply = self.post("devicecode", &form, &[]).await?;
        if reply.status != 200 {
            return Err(self.refused(&reply, &[]));
        }
        #[derive(Deserialize)]
        struct Started {
            device_code: Option<String>,
            user_code: Option<String>,
            verification_uri: Option<String>,
            expires_in: Option<serde_json::Value>,
            interval: Option<serde_json::Value>,
            message: Option<String>,
        }
        let started: Started = serde_json::from_slice(&reply.body)
            .map_err(|_| self.bad_response(&reply, "not JSON"))?;
        let device_code = started
            .device_code
            .filter(|c| !c.is_empty())
            .map(SecretString::from)
            .ok_or_else(|| self.bad_response(&reply, "no device_code"))?;
        let secrets = [device_code.expose_secret()];
        let message = match (
            started.message,
            &started.user_code,
            &started.verification_uri,
        ) {
            (Some(message), _, _) => message,
            (None, Some(code), Some(uri)) => {
                format!("To sign in, open {uri} in a browser and enter the code {code}.")
            }
            _ => return Err(self.bad_response(&reply, "no user_code or verification_uri")),
        };
        // Shown on stderr (above the progress bar), never logged: the device code itself is a
        // secret and is scrubbed should the server have put it in the message.
        (self.settings.prompt)(&format!(
            "graph-remediate: {}",
            printable_owned(&redact(&message, device_code.expose_secret()))
        ));
        let lifetime = seconds(started.expires_in.as_ref()).unwrap_or(DEFAULT_CODE_LIFETIME);
        let lifetime = second * u32::try_from(lifetime.clamp(1, 3600)).unwrap_or(900);
        let deadline = Instant::now() + lifetime;
        let mut interval = seconds(started.interval.as_ref())
            .unwrap_or(DEFAULT_INTERVAL)
            .clamp(1, 60);
        let poll = [
            ("grant_type", DEVICE_CODE_GRANT),
            ("client_id", self.settings.client_id.as_str()),
            ("device_code", device_code.expose_secret()),
        ];
        loop {
            let wait = second * u32::try_from(interval).unwrap_or(60);
            if Instant::now() + wait > deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(SignInError::Expired { lifetime }.into());
            }
            tokio::time::sleep(wait).await;
            let reply = self.post("token", &poll, &secrets).await?;
            if reply.status == 200 {
                return self.session_from(&reply.body, reply.asked_at, &secrets);
            }
            match reply.error.as_deref() {
                Some("authorization_pending") => {}
                Some("slow_down") => {
                    interval += SLOW_DOWN_STEP;
                    debug!(interval_s = interval, "slow_down: polling less often");
                }
                Some("authorization_declined") => {
                    return Err(SignInError::Declined {
                        kind: "device-code",
                        reason: "authorization_declined".to_owned(),
                    }
                    .into());
                }
                Some("expired_token") => return Err(SignInError::Expired { lifetime }.into()),
                Some("bad_verification_code") => return Err(SignInError::BadCode.into()),
                _ => return Err(self.refused(&reply, &secrets)),
            }
        }
    }

    /// Authorization code with PKCE, redirected to a loopback listener (entra-docs
    /// v2-oauth2-auth-code-flow, reply-url: `http://localhost` matches any port).
    async fn browser(&self) -> Result<Session, AuthError> {
        let verifier = SecretString::from(random_text(32)?);
        let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            verifier.expose_secret().as_bytes(),
        ));
        let state = random_text(16)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| SignInError::Listener(e.to_string()))?;
        let port = listener
            .local_addr()
            .map_err(|e| SignInError::Listener(e.to_string()))?
            .port();
        let redirect_uri = format!("http://localhost:{port}");
        let mut url = reqwest::Url::parse(&format!("{}/authorize", self.base))
            .map_err(|e| AuthError::Client(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", &self.settings.scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "select_account");
        let (redirect_tx, redirect_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_redirect(
            listener,
            state,
            redirect_uri.clone(),
            redirect_tx,
            stop_rx,
        ));
        (self.settings.prompt)(&format!(
            "graph-remediate: sign in in the browser; if none opens, open this URL on this machine:\n  {url}"
        ));
        if let Err(reason) = launch(&self.settings.launcher, url.as_str()) {
            info!(reason = %reason, "no browser was opened; open the URL printed above");
        }
        let waited = BROWSER_WAIT.min(self.settings.second * 600);
        let outcome = tokio::time::timeout(waited, redirect_rx).await;
        // A graceful stop: the page answering the redirect still reaches the browser.
        let _ = stop_tx.send(());
        if tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .is_err()
        {
            debug!("the sign-in redirect listener did not stop in time");
        }
        let code = match outcome {
            Ok(Ok(Ok(code))) => code,
            Ok(Ok(Err(error))) => return Err(error.into()),
            Ok(Err(_)) | Err(_) => return Err(SignInError::NoRedirect { waited }.into()),
        };
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", self.settings.client_id.as_str()),
            ("code", code.expose_secret()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.expose_secret()),
            ("scope", self.settings.scope.as_str()),
        ];
        let secrets = [code.expose_secret(), verifier.expose_secret()];
        let reply = self.post("token", &form, &secrets).await?;
        if reply.status != 200 {
            return Err(self.refused(&reply, &secrets));
        }
        self.session_from(&reply.body, reply.asked_at, &secrets)
    }

    /// One form POST to `{base}/{path}`, retried by the one attempt driver (as a token request
    /// is) when the endpoint is busy or unreachable. Any other status is returned; the caller
    /// reads it.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        secrets: &[&str],
    ) -> Result<Reply, AuthError> {
        let mut post = SignInPost {
            http: &self.http,
            url: format!("{}/{path}", self.base),
            form,
            secrets,
        };
        unpaced(&mut post, &TOKEN_RETRY).await
    }

    fn refused(&self, reply: &Reply, secrets: &[&str]) -> AuthError {
        let mut error = refusal(
            &reply.url,
            reply.status,
            &reply.body,
            secrets.first().unwrap_or(&""),
        );
        if let AuthError::Refused {
            description, error, ..
        } = &mut error
        {
            for secret in secrets {
                *description = redact(description, secret);
                if let Some(code) = error {
                    *code = redact(code, secret);
                }
            }
        }
        error
    }

    fn bad_response(&self, reply: &Reply, reason: &str) -> AuthError {
        AuthError::BadResponse {
            url: reply.url.clone(),
            status: reply.status,
            reason: reason.to_owned(),
        }
    }

    /// A successful token response: the tokens, their lifetime, what they may do, who signed in.
    fn session_from(
        &self,
        body: &[u8],
        asked_at: Instant,
        secrets: &[&str],
    ) -> Result<Session, AuthError> {
        #[derive(Deserialize)]
        struct Issued {
            access_token: Option<String>,
            refresh_token: Option<String>,
            expires_in: Option<serde_json::Value>,
            scope: Option<String>,
            id_token: Option<String>,
        }
        let bad = |reason: &str| AuthError::BadResponse {
            url: format!("{}/token", self.base),
            status: 200,
            reason: reason.to_owned(),
        };
        let issued: Issued =
            serde_json::from_slice(body).map_err(|_| bad("the body is not JSON"))?;
        let token = issued
            .access_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no access_token"))?;
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("the access_token cannot be sent in an HTTP header"));
        }
        let lifetime = seconds(issued.expires_in.as_ref())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME)
            .clamp(Duration::from_secs(1), MAX_LIFETIME);
        let granted = match issued.scope.as_deref() {
            Some(scope) => Granted::from_scope(scope),
            None => Granted::from_token(&token),
        };
        let user = issued
            .id_token
            .as_deref()
            .and_then(user_of)
            .or_else(|| user_of(&token))
            .map(|user| secrets.iter().fold(user, |u, s| redact(&u, s)));
        Ok(Session {
            held: Cached::new(SecretString::from(token), lifetime, asked_at),
            refresh: issued
                .refresh_token
                .filter(|t| !t.trim().is_empty())
                .map(|t| Arc::new(SecretString::from(t.trim().to_owned()))),
            expires_at: SystemTime::now() + lifetime.saturating_sub(asked_at.elapsed()),
            granted,
            user,
        })
    }
}

/// The answer to one POST.
struct Reply {
    url: String,
    status: u16,
    body: Vec<u8>,
    /// Entra's `error` (`authorization_pending`, `invalid_grant`, ...).
    error: Option<String>,
    asked_at: Instant,
}

/// One sign-in POST, as the attempt driver sends it.
struct SignInPost<'a> {
    http: &'a reqwest::Client,
    url: String,
    form: &'a [(&'a str, &'a str)],
    secrets: &'a [&'a str],
}

impl Request for SignInPost<'_> {
    type Token = ();
    type Answer = Reply;
    type Error = AuthError;
    type TokenError = Infallible;

    async fn token(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn send(&mut self, (): &(), _attempt: u32) -> Result<Reply, Failure<AuthError>> {
        let (url, secrets) = (&self.url, self.secrets);
        let asked_at = Instant::now();
        let unreachable = |error: &reqwest::Error| {
            let kind = if error.is_timeout() {
                AttemptKind::Timeout
            } else {
                AttemptKind::Connection
            };
            Failure::Retryable(cannot_reach(url, error, secrets), kind)
        };
        let response = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .header("client-request-id", uuid::Uuid::new_v4().to_string())
            .form(self.form)
            .send()
            .await
            .map_err(|error| unreachable(&error))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let body = response
            .bytes()
            .await
            .map_err(|error| unreachable(&error))?;
        if status == 429 || status >= 500 {
            let error = refusal(url, status, &body, secrets.first().unwrap_or(&""));
            return Err(Failure::Retryable(
                error,
                AttemptKind::Status {
                    status,
                    retry_after,
                },
            ));
        }
        let error = serde_json::from_slice::<ErrorCode>(&body)
            .ok()
            .and_then(|e| e.error);
        Ok(Reply {
            url: url.clone(),
            status,
            body: body.to_vec(),
            error,
            asked_at,
        })
    }

    fn retrying(&mut self, event: Retrying<'_, AuthError>) {
        warn_retrying(event, "sign-in request");
    }
}

#[derive(Deserialize)]
struct ErrorCode {
    error: Option<String>,
}

fn cannot_reach(url: &str, error: &reqwest::Error, secrets: &[&str]) -> AuthError {
    let reason = if error.is_timeout() {
        "no answer in time".to_owned()
    } else {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        reason
    };
    AuthError::Unreachable {
        url: url.to_owned(),
        reason: printable_owned(&secrets.iter().fold(reason, |r, s| redact(&r, s))),
    }
}

/// `expires_in` and `interval`: a number, or a numeric string.
fn seconds(value: Option<&serde_json::Value>) -> Option<u64> {
    match value? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The signed-in user's UPN from an id token or access token (`preferred_username`, `upn`,
/// `unique_name`): a name for the record, not a secret.
fn user_of(token: &str) -> Option<String> {
    let claims = claims(token)?;
    ["preferred_username", "upn", "unique_name"]
        .iter()
        .find_map(|name| claims.get(*name).and_then(|v| v.as_str()))
        .filter(|user| !user.is_empty())
        .map(printable_owned)
}

/// `bytes` random bytes from the operating system, as base64url: the PKCE verifier (32 bytes,
/// 43 characters, RFC 7636 section 4.1) and the state.
fn random_text(bytes: usize) -> Result<String, AuthError> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut buffer = vec![0u8; bytes];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| AuthError::Client("the system's random number generator failed".to_owned()))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

type RedirectResult = Result<SecretString, SignInError>;

/// Serves the loopback redirect until the first answer: a code with this sign-in's state, an
/// error from Entra, or a redirect with a state not this sign-in's (refused).
async fn serve_redirect(
    listener: tokio::net::TcpListener,
    state: String,
    redirect_uri: String,
    redirect_tx: tokio::sync::oneshot::Sender<RedirectResult>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    use axum::response::Html;
    let sender = Arc::new(std::sync::Mutex::new(Some(redirect_tx)));
    let handler = move |uri: axum::http::Uri| {
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let sender = sender.clone();
        let state = state.clone();
        let redirect_uri = redirect_uri.clone();
        async move {
            // Anything else a browser asks for (a favicon) is not the redirect.
            if !query.contains_key("state")
                && !query.contains_key("code")
                && !query.contains_key("error")
            {
                return (
                    axum::http::StatusCode::NOT_FOUND,
                    Html("Not found".to_owned()),
                );
            }
            let (status, page, result) = redirect_outcome(&query, &state, &redirect_uri);
            if let Some(tx) = sender.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = tx.send(result);
            }
            (status, Html(page))
        }
    };
    let app = axum::Router::new().route("/", axum::routing::get(handler));
    let stopped = async move {
        let _ = stop.await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        debug!(error = %error, "the sign-in redirect listener stopped");
    }
}

fn redirect_outcome(
    query: &HashMap<String, String>,
    state: &str,
    redirect_uri: &str,
) -> (axum::http::StatusCode, String, RedirectResult) {
    use axum::http::StatusCode;
    let page = |text: &str| {
        format!("<!doctype html><title>graph-remediate</title><p>graph-remediate: {text}</p>")
    };
    if query.get("state").map(String::as_str) != Some(state) {
        return (
            StatusCode::BAD_REQUEST,
            page("this sign-in was refused: its state does not match. Return to the terminal."),
            Err(SignInError::WrongState {
                redirect_uri: redirect_uri.to_owned(),
            }),
        );
    }
    if let Some(error) = query.get("error") {
        let description = query
            .get("error_description")
            .and_then(|d| d.lines().next())
            .unwrap_or("");
        return (
            StatusCode::OK,
            page("the sign-in did not complete. Return to the terminal."),
            Err(SignInError::Declined {
                kind: "browser",
                reason: printable_owned(&format!("{error}: {description}")),
            }),
        );
    }
    match query.get("code").filter(|c| !c.is_empty()) {
        Some(code) => (
            StatusCode::OK,
            page("signed in. You can close this tab and return to the terminal."),
            Ok(SecretString::from(code.clone())),
        ),
        None => (
            StatusCode::BAD_REQUEST,
            page("the redirect carried no code. Return to the terminal."),
            Err(SignInError::NoCode {
                redirect_uri: redirect_uri.to_owned(),
            }),
        ),
    }
}

/// Opens `url` in a browser: `$BROWSER` first (each `:`-separated command in turn; `%s` is the
/// URL, else it is appended), else the desktop's opener. The URL holds no secret (the PKCE
/// challenge and state are meant to be seen), so it may go on a command line.
fn launch(launcher: &Launcher, url: &str) -> Result<(), String> {
    match launcher {
        #[cfg(test)]
        Launcher::Test(open) => {
            open(url.to_owned());
            Ok(())
        }
        Launcher::System { browser } => {
            if let Some(browser) = browser.as_ref().and_then(|b| b.to_str()) {
                for command in browser.split(':').filter(|c| !c.trim().is_empty()) {
                    let Some(mut words) = shlex::split(command).filter(|w| !w.is_empty()) else {
                        continue;
                    };
                    if words.iter().any(|w| w.contains("%s")) {
                        words = words.into_iter().map(|w| w.replace("%s", url)).collect();
                    } else {
                        words.push(url.to_owned());
                    }
                    // Inherits the terminal: a text browser named by $BROWSER runs in it.
                    if spawn(&words, false).is_ok() {
                        return Ok(());
                    }
                }
                return Err("no command in $BROWSER could be started".to_owned());
            }
            desktop_opener(url)
        }
    }
}

#[cfg(target_os = "macos")]
fn desktop_opener(url: &str) -> Result<(), String> {
    spawn(&["open".to_owned(), url.to_owned()], true)
}

#[cfg(windows)]
fn desktop_opener(url: &str) -> Result<(), String> {
    // Not `cmd /c start`: cmd would read the URL's `&` as a command separator.
    spawn(
        &[
            "rundll32".to_owned(),
            "url.dll,FileProtocolHandler".to_owned(),
            url.to_owned(),
        ],
        true,
    )
}

#[cfg(not(any(target_os = "macos", windows)))]
fn desktop_opener(url: &str) -> Result<(), String> {
    // A jump box over ssh has no desktop: print the URL only (it is printed already).
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if !desktop {
        return Err("no desktop session (DISPLAY and WAYLAND_DISPLAY are unset)".to_owned());
    }
    spawn(&["xdg-open".to_owned(), url.to_owned()], true)
}

/// Starts a browser without waiting for it; a thread reaps it when it exits.
fn spawn(words: &[String], quiet: bool) -> Result<(), String> {
    let (program, args) = words.split_first().ok_or("an empty command")?;
    let mut command = std::process::Command::new(program);
    command.args(args).stdin(std::process::Stdio::null());
    if quiet {
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }
    let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
    std::thread::spawn(move || child.wait());
    Ok(())
}

#[cfg(test)]
mod tests {
    // The delegated sign-ins against the in-process mock (issue 18). The server's "second" is
    // shortened to a few milliseconds, so a 5-second interval and its `slow_down` steps run in
    // milliseconds while keeping their proportions.

    use super::*;
    use crate::graph::permissions::Permission;
    use crate::mock::{
        AuthorizeScript, DeviceCodeScript, MockConfig, MockServer, Poll, SignInMock,
    };

    const CLIENT_ID: &str = "public-client-app";
    const UNIT: Duration = Duration::from_millis(20);

    async fn start_mock(sign_in: SignInMock, lifetime: Duration) -> MockServer {
        MockServer::start(MockConfig {
            client_id: Some(CLIENT_ID.to_owned()),
            token_lifetime: lifetime,
            sign_in,
            ..MockConfig::default()
        })
        .await
        .unwrap()
    }

    fn device_script(polls: Vec<Poll>, end: Poll) -> SignInMock {
        SignInMock {
            device_code: DeviceCodeScript {
                polls,
                end,
                interval: 1,
                expires_in: 900,
            },
            ..SignInMock::default()
        }
    }

    fn tokens_for(
        mock: &MockServer,
        kind: SignInKind,
        launcher: Option<Launcher>,
    ) -> DelegatedTokens {
        let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url()).unwrap();
        let mut settings = SignInSettings::new(
            kind,
            "contoso.onmicrosoft.com".to_owned(),
            CLIENT_ID.to_owned(),
            &endpoint,
            &Needs::of(true, true, false, false),
            None,
        );
        settings.second = UNIT;
        if let Some(launcher) = launcher {
            settings.launcher = launcher;
        }
        DelegatedTokens::new(settings, &endpoint, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn issue_18_the_sign_in_asks_for_what_the_run_needs_and_a_refresh_token() {
        let endpoint =
            TokenEndpoint::new("login.microsoftonline.us", "https://graph.microsoft.us").unwrap();
        let settings = SignInSettings::new(
            SignInKind::DeviceCode,
            "t".to_owned(),
            "c".to_owned(),
            &endpoint,
            &Needs::of(true, false, true, false),
            None,
        );
        assert_eq!(
            settings.scope,
            "https://graph.microsoft.us/SecurityIdentitiesActions.ReadWrite.All https://graph.microsoft.us/SecurityIdentitiesAccount.Read.All https://graph.microsoft.us/User.Read.All offline_access openid profile"
        );
    }

    #[tokio::test]
    async fn issue_18_device_code_polls_while_pending_then_signs_in() {
        let mock = start_mock(
            device_script(
                vec![Poll::Pending, Poll::Pending, Poll::Pending],
                Poll::Approve,
            ),
            Duration::from_secs(3599),
        )
        .await;
        let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
        let token = tokens.current().await.unwrap();
        assert!(token.expose_secret().contains("mock-at-"));
        let stats = mock.sign_in_stats();
        assert_eq!((stats.device_codes, stats.device_polls), (1, 4));
        let signed_in = tokens.signed_in().unwrap();
        assert_eq!(signed_in.user.as_deref(), Some("responder@contoso.com"));
        assert!(
            signed_in
                .granted
                .missing(&Needs::of(true, true, false, false))
                .is_empty()
        );
        // Signed in once: later callers get the same token without a poll.
        assert!(Arc::ptr_eq(&token, &tokens.current().await.unwrap()));
        assert_eq!(mock.sign_in_stats().device_polls, 4);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_device_code_slow_down_adds_five_seconds_to_the_interval() {
        let mock = start_mock(
            device_script(vec![Poll::SlowDown, Poll::Pending], Poll::Approve),
            Duration::from_secs(3599),
        )
        .await;
        let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
        let started = std::time::Instant::now();
        tokens.current().await.unwrap();
        let took = started.elapsed();
        // 1 unit before the first poll, then 6 (1 + 5) before each of the next two: 13 units.
        // Ignoring slow_down would take 3.
        assert!(took >= UNIT * 13, "took {took:?}");
        assert_eq!(mock.sign_in_stats().device_polls, 3);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_a_declined_device_code_sign_in_stops_naming_the_kind_and_sends_nothing() {
        let mock = start_mock(
            device_script(vec![Poll::Pending], Poll::Decline),
            Duration::from_secs(3599),
        )
        .await;
        let error = tokens_for(&mock, SignInKind::DeviceCode, None)
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--auth device-code") && error.contains("declined"),
            "{error}"
        );
        assert!(error.contains("nothing was sent"), "{error}");
        assert!(
            !error.contains("mock-dc-"),
            "the device code is a secret: {error}"
        );
        assert_eq!(mock.stats().graph_requests, 0);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_an_expired_device_code_stops_the_sign_in() {
        let mock = start_mock(
            device_script(vec![], Poll::Expire),
            Duration::from_secs(3599),
        )
        .await;
        let error = tokens_for(&mock, SignInKind::DeviceCode, None)
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--auth device-code") && error.contains("expired"),
            "{error}"
        );
        mock.shutdown().await;

        // Still pending when the code's own lifetime runs out: the tool stops without Entra's word.
        let mut script = device_script(vec![], Poll::Pending);
        script.device_code.expires_in = 4;
        let mock = start_mock(script, Duration::from_secs(3599)).await;
        let error = tokens_for(&mock, SignInKind::DeviceCode, None)
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("expired"), "{error}");
        assert!(mock.sign_in_stats().device_polls <= 4);
        let bad = mock_bad_code().await;
        assert!(bad.contains("bad_verification_code"), "{bad}");
        mock.shutdown().await;
    }

    async fn mock_bad_code() -> String {
        let mock = start_mock(
            device_script(vec![], Poll::BadCode),
            Duration::from_secs(3599),
        )
        .await;
        let error = tokens_for(&mock, SignInKind::DeviceCode, None)
            .current()
            .await
            .unwrap_err()
            .to_string();
        mock.shutdown().await;
        error
    }

    /// A browser: follows the mock's `/authorize` redirect to the tool's loopback listener.
    fn test_browser() -> (Launcher, tokio::sync::mpsc::UnboundedReceiver<u16>) {
        let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
        let launcher = Launcher::Test(Arc::new(move |url: String| {
            let status_tx = status_tx.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                let authorized = http.get(&url).send().await.unwrap();
                assert_eq!(authorized.status(), 302);
                let location = authorized.headers()["location"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(location.starts_with("http://localhost:"), "{location}");
                let landed = http.get(&location).send().await.unwrap();
                let _ = status_tx.send(landed.status().as_u16());
            });
        }));
        (launcher, status_rx)
    }

    #[tokio::test]
    async fn issue_18_browser_sign_in_with_pkce_comes_back_to_the_loopback_listener() {
        let mock = start_mock(SignInMock::default(), Duration::from_secs(3599)).await;
        let (launcher, mut landed) = test_browser();
        let tokens = tokens_for(&mock, SignInKind::Browser, Some(launcher));
        tokens.current().await.unwrap();
        assert_eq!(landed.recv().await, Some(200));
        let signed_in = tokens.signed_in().unwrap();
        assert_eq!(signed_in.user.as_deref(), Some("responder@contoso.com"));
        assert_eq!(mock.sign_in_stats().authorizations, 1);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_a_browser_redirect_with_the_wrong_state_is_refused() {
        let mock = start_mock(
            SignInMock {
                authorize: AuthorizeScript::WrongState,
                ..SignInMock::default()
            },
            Duration::from_secs(3599),
        )
        .await;
        let (launcher, mut landed) = test_browser();
        let error = tokens_for(&mock, SignInKind::Browser, Some(launcher))
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--auth browser") && error.contains("state"),
            "{error}"
        );
        assert!(
            !error.contains("mock-code-"),
            "the code is a secret: {error}"
        );
        assert_eq!(landed.recv().await, Some(400), "the browser is told too");
        // The code that came with the forged state was never redeemed.
        assert_eq!(mock.stats().token_requests, 0);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_a_declined_browser_sign_in_names_the_kind() {
        let mock = start_mock(
            SignInMock {
                authorize: AuthorizeScript::Deny,
                ..SignInMock::default()
            },
            Duration::from_secs(3599),
        )
        .await;
        let (launcher, _landed) = test_browser();
        let error = tokens_for(&mock, SignInKind::Browser, Some(launcher))
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--auth browser") && error.contains("access_denied"),
            "{error}"
        );
        mock.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_18_refresh_rotation_under_64_workers_makes_one_refresh_and_uses_the_newest_token()
     {
        // One-second tokens: renewed from 0.75 s on.
        let mock = start_mock(device_script(vec![], Poll::Approve), Duration::from_secs(1)).await;
        let tokens = Arc::new(tokens_for(&mock, SignInKind::DeviceCode, None));
        let mut previous = tokens.current().await.unwrap();
        for round in 1..=2u64 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let tokens = tokens.clone();
                workers.spawn(async move { tokens.current().await.unwrap() });
            }
            let mut seen = Vec::new();
            while let Some(token) = workers.join_next().await {
                seen.push(token.unwrap());
            }
            // Workers that came while the renewal was in flight kept the old, still good token;
            // everyone after it has the new one, and there was one renewal.
            let newest = tokens.current().await.unwrap();
            assert!(!Arc::ptr_eq(&newest, &previous), "round {round}");
            assert!(
                seen.iter()
                    .all(|t| Arc::ptr_eq(t, &newest) || Arc::ptr_eq(t, &previous))
            );
            let stats = mock.sign_in_stats();
            assert_eq!(stats.refresh_grants, round, "one refresh per round");
            // The mock refuses a refresh token used before: the newest one was sent each time.
            assert_eq!(stats.stale_refresh_tokens, 0);
            previous = newest;
        }
        // Sixty-four workers whose requests Graph refused with a 401: one renewal between them.
        let stale = previous.clone();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (tokens, stale) = (tokens.clone(), stale.clone());
            workers.spawn(async move { tokens.refresh(&stale).await.unwrap() });
        }
        let mut renewed = Vec::new();
        while let Some(token) = workers.join_next().await {
            renewed.push(token.unwrap());
        }
        assert!(renewed.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert!(!Arc::ptr_eq(&renewed[0], &stale));
        assert_eq!(mock.sign_in_stats().refresh_grants, 3);
        assert_eq!(mock.sign_in_stats().stale_refresh_tokens, 0);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn issue_18_the_delegated_scope_says_what_the_token_may_do() {
        let mock = start_mock(
            SignInMock {
                delegated_permissions: Some(vec!["SecurityIdentitiesAccount.Read.All".to_owned()]),
                ..device_script(vec![], Poll::Approve)
            },
            Duration::from_secs(3599),
        )
        .await;
        let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
        tokens.current().await.unwrap();
        let granted = tokens.signed_in().unwrap().granted;
        assert!(granted.is_delegated());
        assert_eq!(
            granted.missing(&Needs::of(true, true, false, false)),
            [Permission::SecurityIdentitiesActions]
        );
        mock.shutdown().await;
    }

    /// A server on 127.0.0.1 answering its requests in turn with `answers` (status,
    /// `Retry-After`), the last for every request after them; its root and its request count.
    async fn answering(
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            let at = seen.fetch_add(1, Ordering::SeqCst);
            let (status, retry_after) = answers[at.min(answers.len() - 1)];
            async move {
                let mut response = axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    r#"{"error":"temporarily_unavailable"}"#,
                ));
                if let Some(wait) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", wait.parse().unwrap());
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (root, count)
    }

    fn sign_in_at(root: &str) -> DelegatedTokens {
        let endpoint = TokenEndpoint::new(root, root).unwrap();
        let settings = SignInSettings::new(
            SignInKind::DeviceCode,
            "contoso.onmicrosoft.com".to_owned(),
            CLIENT_ID.to_owned(),
            &endpoint,
            &Needs::of(true, false, false, false),
            None,
        );
        DelegatedTokens::new(settings, &endpoint, Duration::from_secs(5)).unwrap()
    }

    /// A busy sign-in endpoint is retried as a token request is (issue 17): its `Retry-After`
    /// is waited, not a fixed 2 s then 4 s, and a 500 is final, as it is from the app token
    /// endpoint.
    #[tokio::test]
    async fn issue_17_sign_in_requests_follow_the_one_retry_policy() {
        use std::sync::atomic::Ordering;
        let (root, count) = answering(vec![(429, Some("0.3")), (200, None)]).await;
        let started = Instant::now();
        let reply = sign_in_at(&root)
            .post("devicecode", &[("client_id", CLIENT_ID)], &[])
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
            "the told 300 ms was waited, not a fixed backoff: {took:?}"
        );

        let (root, count) = answering(vec![(500, None)]).await;
        let Err(error) = sign_in_at(&root)
            .post("devicecode", &[("client_id", CLIENT_ID)], &[])
            .await
        else {
            panic!("a 500 is a failure");
        };
        assert!(
            matches!(error, AuthError::Refused { status: 500, .. }),
            "{error}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "a 500 is not retried");
    }
}
