//! Managed identity: a token from the identity endpoint of the Azure host the tool runs on
//! (SPEC section 9, research/credentials.md section 2). One protocol per host:
//! - App Service, Functions, Container Apps, Automation: `GET $IDENTITY_ENDPOINT` with
//!   `X-IDENTITY-HEADER: $IDENTITY_HEADER`, api-version 2019-08-01;
//! - Cloud Shell: `POST $MSI_ENDPOINT`, form `resource`, `Metadata: true`;
//! - Arc: `GET $IDENTITY_ENDPOINT` answers 401 naming a key file in `WWW-Authenticate`; the file
//!   is checked to be the agent's (its directory, `.key`, at most 4096 bytes, no link), read, and
//!   sent back as `Authorization: Basic`;
//! - IMDS (VMs, scale sets, AKS nodes): `GET http://169.254.169.254/metadata/identity/oauth2/token`,
//!   api-version 2018-02-01, `Metadata: true`; `AZURE_POD_IDENTITY_AUTHORITY_HOST` replaces the
//!   scheme and host. Retried on 404, 410, 429 and 5xx. The first request has a short timeout,
//!   so a machine outside Azure stops in seconds naming IMDS instead of hanging.
//!
//! `resource` is the Graph root (no `/.default`). Expiry comes as `expires_in` or `expires_on`,
//! numbers or numeric strings, depending on the host. The identity header and Arc's key are
//! secrets: scrubbed from anything an endpoint answers.
//!
//! Guard (issue 18): no test may reach the real IMDS address. Under `cargo test` (cfg(test), or a
//! process cargo started, which has `CARGO_MANIFEST_DIR` set), the default address is refused
//! unless `AZURE_POD_IDENTITY_AUTHORITY_HOST` points elsewhere.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::super::refusal::{scrub, transport_reason};
use super::super::{Attempt, AuthError, CredentialSources};
use super::{AuthKind, ManagedHost, ManagedIdentityId};
use crate::graph::client::USER_AGENT;
use crate::retry::{AttemptKind, RetryPolicy};

/// IMDS's address on every Azure VM. Never reached by a test: see the module docs.
pub(crate) const IMDS_DEFAULT_HOST: &str = "http://169.254.169.254";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const IMDS_API_VERSION: &str = "2018-02-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const ARC_API_VERSION: &str = "2020-06-01";
/// The agent's key directory on Linux (Windows: `%ProgramData%\AzureConnectedMachineAgent\Tokens`).
#[cfg(not(windows))]
const ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
#[cfg(windows)]
const ARC_KEY_DIR: &str = r"C:\ProgramData\AzureConnectedMachineAgent\Tokens";
/// Arc's key files are small; anything larger is not one (azure-identity checks the same).
const ARC_KEY_MAX_BYTES: u64 = 4096;
/// The first IMDS request's time limit when `auto` chose it: about a second, as the SDKs' probe.
pub(crate) const IMDS_PROBE_TIMEOUT_AUTO: Duration = Duration::from_secs(1);
/// The first IMDS request's time limit when asked for by name: a little more room.
pub(crate) const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a managed-identity endpoint: Entra's guidance (5 tries with growing waits; 410
/// means "back within 70 seconds").
const MANAGED_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 5,
    backoff_base: Duration::from_millis(800),
    backoff_cap: Duration::from_secs(16),
    max_wait: Duration::from_secs(75),
};
/// The most of a non-JSON error body quoted.
const MAX_QUOTED: usize = 200;

/// A managed-identity token source for one host.
pub(crate) struct ManagedIdentity {
    http: reqwest::Client,
    host: Host,
    /// The Graph root, as `resource`.
    resource: String,
    id: Option<ManagedIdentityId>,
    /// The first request's time limit (IMDS only).
    first_timeout: Duration,
    /// Whether the endpoint has answered once: after that, no answer is worth retrying.
    answered: AtomicBool,
}

enum Host {
    AppService {
        endpoint: reqwest::Url,
        header: SecretString,
    },
    CloudShell {
        endpoint: reqwest::Url,
    },
    Arc {
        endpoint: reqwest::Url,
        key_dir: PathBuf,
    },
    Imds {
        url: reqwest::Url,
    },
}

impl ManagedIdentity {
    /// The source for `host`, its variables checked. `resource` is the Graph root; `by_auto`
    /// shortens IMDS's first timeout.
    pub(crate) fn new(
        sources: &CredentialSources,
        host: ManagedHost,
        resource: &str,
        timeout: Duration,
        by_auto: bool,
    ) -> Result<ManagedIdentity, AuthError> {
        let env = &sources.environment;
        let id = sources.managed_identity_id.clone();
        let bad = |missing: String| AuthError::MissingInput {
            kind: AuthKind::ManagedIdentity.as_str(),
            missing,
        };
        let endpoint = |name: &str, value: &Option<String>| {
            let value = value.as_deref().ok_or_else(|| bad(name.to_owned()))?;
            let url = reqwest::Url::parse(value).map_err(|_| {
                bad(format!(
                    "{name} to be a URL, not {:?}",
                    crate::sanitize::printable_owned(value)
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad(format!("{name} to be an http or https URL")));
            }
            Ok(url)
        };
        let no_user_assigned = |host: &str| {
            bad(format!(
                "no --managed-identity-id: {host} has only the system-assigned identity here"
            ))
        };
        let host = match host {
            ManagedHost::AppService => Host::AppService {
                endpoint: endpoint("IDENTITY_ENDPOINT", &env.identity_endpoint)?,
                header: env
                    .identity_header
                    .clone()
                    .ok_or_else(|| bad("IDENTITY_HEADER beside IDENTITY_ENDPOINT".to_owned()))?,
            },
            ManagedHost::CloudShell => {
                if id.is_some() {
                    return Err(no_user_assigned("Cloud Shell"));
                }
                Host::CloudShell {
                    endpoint: endpoint("MSI_ENDPOINT", &env.msi_endpoint)?,
                }
            }
            ManagedHost::Arc => {
                if id.is_some() {
                    return Err(no_user_assigned("Azure Arc"));
                }
                endpoint("IMDS_ENDPOINT", &env.imds_endpoint)?;
                Host::Arc {
                    endpoint: endpoint("IDENTITY_ENDPOINT", &env.identity_endpoint)?,
                    key_dir: env
                        .arc_key_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(ARC_KEY_DIR)),
                }
            }
            ManagedHost::Imds => {
                let authority = match &env.imds_authority_host {
                    Some(host) => host.trim_end_matches('/').to_owned(),
                    None => {
                        if under_cargo() {
                            return Err(AuthError::ImdsGuard);
                        }
                        IMDS_DEFAULT_HOST.to_owned()
                    }
                };
                let authority = if authority.contains("://") {
                    authority
                } else {
                    format!("http://{authority}")
                };
                let url = reqwest::Url::parse(&format!("{authority}{IMDS_PATH}")).map_err(|_| {
                    bad("AZURE_POD_IDENTITY_AUTHORITY_HOST to be a scheme and host, such as http://127.0.0.1:8080".to_owned())
                })?;
                Host::Imds { url }
            }
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // IMDS takes no proxy; the other endpoints are on this machine.
            .no_proxy()
            // A redirect would carry the identity header or the key somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AuthError::Client(e.to_string()))?;
        Ok(ManagedIdentity {
            http,
            host,
            resource: resource.to_owned(),
            id,
            first_timeout: if by_auto {
                IMDS_PROBE_TIMEOUT_AUTO
            } else {
                IMDS_PROBE_TIMEOUT
            }
            .min(timeout),
            answered: AtomicBool::new(false),
        })
    }

    pub(crate) fn policy(&self) -> RetryPolicy {
        MANAGED_RETRY
    }

    /// The endpoint, for logs and messages.
    pub(crate) fn url(&self) -> &str {
        match &self.host {
            Host::AppService { endpoint, .. }
            | Host::CloudShell { endpoint }
            | Host::Arc { endpoint, .. } => endpoint.as_str(),
            Host::Imds { url } => url.as_str(),
        }
    }

    fn host_name(&self) -> &'static str {
        match self.host {
            Host::AppService { .. } => {
                "the App Service identity endpoint (IDENTITY_ENDPOINT; App Service, Functions, Container Apps, Automation)"
            }
            Host::CloudShell { .. } => "Cloud Shell's identity endpoint (MSI_ENDPOINT)",
            Host::Arc { .. } => "the Azure Arc agent's identity endpoint (IDENTITY_ENDPOINT)",
            Host::Imds { .. } => "the Azure Instance Metadata Service (IMDS)",
        }
    }

    /// One token request, Arc's challenge included.
    pub(crate) async fn request_once(&self) -> Attempt {
        let first = !self.answered.load(Ordering::Relaxed);
        let request = self.request(None);
        let request = match (&self.host, first) {
            (Host::Imds { .. }, true) => request.timeout(self.first_timeout),
            _ => request,
        };
        let header_secret = match &self.host {
            Host::AppService { header, .. } => header.expose_secret().to_owned(),
            _ => String::new(),
        };
        let answer = match self.send(request, &header_secret, first).await {
            Ok(answer) => answer,
            Err(attempt) => return attempt,
        };
        let answer = match (&self.host, answer.status) {
            (Host::Arc { key_dir, .. }, 401) => {
                let key = match arc_key(&answer.challenge, key_dir) {
                    Ok(key) => key,
                    Err(reason) => return Attempt::Final(self.failed(reason)),
                };
                let request = self.request(Some(&key));
                match self.send(request, key.expose_secret(), false).await {
                    Ok(answer) => answer,
                    Err(attempt) => return attempt,
                }
            }
            _ => answer,
        };
        self.judge(answer, SystemTime::now())
    }

    fn request(&self, arc_key: Option<&SecretString>) -> reqwest::RequestBuilder {
        let resource = self.resource.as_str();
        match &self.host {
            Host::AppService { endpoint, header } => {
                let mut query = vec![
                    ("api-version", APP_SERVICE_API_VERSION),
                    ("resource", resource),
                ];
                if let Some(id) = &self.id {
                    query.push(match id {
                        ManagedIdentityId::Client(v) => ("client_id", v.as_str()),
                        ManagedIdentityId::Object(v) => ("principal_id", v.as_str()),
                        ManagedIdentityId::Resource(v) => ("mi_res_id", v.as_str()),
                    });
                }
                self.http
                    .get(with_query(endpoint, &query))
                    .header("X-IDENTITY-HEADER", header.expose_secret())
            }
            Host::CloudShell { endpoint } => self
                .http
                .post(endpoint.clone())
                .header("Metadata", "true")
                .form(&[("resource", resource)]),
            Host::Arc { endpoint, .. } => {
                let request = self
                    .http
                    .get(with_query(
                        endpoint,
                        &[("api-version", ARC_API_VERSION), ("resource", resource)],
                    ))
                    .header("Metadata", "true");
                match arc_key {
                    Some(key) => {
                        request.header(AUTHORIZATION, format!("Basic {}", key.expose_secret()))
                    }
                    None => request,
                }
            }
            Host::Imds { url } => {
                let mut query = vec![("api-version", IMDS_API_VERSION), ("resource", resource)];
                if let Some(id) = &self.id {
                    query.push(match id {
                        ManagedIdentityId::Client(v) => ("client_id", v.as_str()),
                        ManagedIdentityId::Object(v) => ("object_id", v.as_str()),
                        ManagedIdentityId::Resource(v) => ("msi_res_id", v.as_str()),
                    });
                }
                self.http
                    .get(with_query(url, &query))
                    .header("Metadata", "true")
            }
        }
    }

    fn failed(&self, reason: String) -> AuthError {
        AuthError::ManagedIdentity {
            host: self.host_name(),
            url: self.url().to_owned(),
            reason,
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        sent_secret: &str,
        first: bool,
    ) -> Result<Answer, Attempt> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(self.unreachable(&error, sent_secret, first)),
        };
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header(RETRY_AFTER);
        let challenge = header(WWW_AUTHENTICATE);
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(error) => return Err(self.unreachable(&error, sent_secret, first)),
        };
        self.answered.store(true, Ordering::Relaxed);
        Ok(Answer {
            status,
            retry_after,
            challenge,
            body,
            sent_secret: sent_secret.to_owned(),
        })
    }

    /// No answer. IMDS's first request gives up at once: nothing listening (or nothing in time)
    /// means this machine has no managed identity, and saying so in seconds beats a long hang.
    fn unreachable(&self, error: &reqwest::Error, sent_secret: &str, first: bool) -> Attempt {
        if first && let Host::Imds { url } = &self.host {
            return Attempt::Final(AuthError::ManagedIdentityNowhere {
                url: url.to_string(),
                waited: humantime::format_duration(self.first_timeout).to_string(),
            });
        }
        let kind = if error.is_timeout() {
            AttemptKind::Timeout
        } else {
            AttemptKind::Connection
        };
        Attempt::Transient(
            self.failed(scrub(&transport_reason(error), sent_secret)),
            kind,
        )
    }

    fn judge(&self, answer: Answer, now: SystemTime) -> Attempt {
        let Answer {
            status,
            retry_after,
            body,
            sent_secret,
            ..
        } = answer;
        if (200..300).contains(&status) {
            return match parse_managed(&body, now) {
                Ok((token, lifetime)) => Attempt::Issued { token, lifetime },
                Err(reason) => Attempt::Final(self.failed(reason)),
            };
        }
        let said = scrub(&error_text(&body), &sent_secret);
        let retried = match self.host {
            // IMDS's documented list: 404 (the identity is being set up), 410 (IMDS is
            // updating), 429 and 5xx.
            Host::Imds { .. } => matches!(status, 404 | 410 | 429 | 500..=599),
            _ => matches!(status, 429 | 500..=599),
        };
        let hint = match (status, &self.host) {
            (400, Host::Imds { .. }) => {
                "; no such identity on this VM: check --managed-identity-id, or assign the identity to the VM"
            }
            (403, Host::Imds { .. }) if said.contains("unreachable") => {
                "; this looks like Docker Desktop's answer, not Azure's: there is no managed identity here"
            }
            (401 | 403, Host::AppService { .. }) => {
                "; IDENTITY_HEADER was refused: the platform rotates it, so take it from the environment the host gives, not a copy"
            }
            (401, Host::Arc { .. }) => {
                "; the agent refused the key: is this user in the himds group?"
            }
            _ => "",
        };
        let error = self.failed(format!("HTTP {status}: {said}{hint}"));
        if retried {
            // The retry decision knows Graph's statuses; IMDS's other retried statuses are
            // waited on as a 503 is.
            let status = if status == 429 { 429 } else { 503 };
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

/// `url` with `pairs` added to its query, each percent-encoded.
fn with_query(url: &reqwest::Url, pairs: &[(&str, &str)]) -> reqwest::Url {
    let mut url = url.clone();
    url.query_pairs_mut().extend_pairs(pairs);
    url
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    challenge: Option<String>,
    body: Vec<u8>,
    sent_secret: String,
}

/// Under `cargo test` (or any process cargo started for it): where the default IMDS address is
/// refused. Read from the process, not the passed-in environment: it is a safety net that a test
/// cannot leave out.
fn under_cargo() -> bool {
    cfg!(test) || std::env::var_os("CARGO_MANIFEST_DIR").is_some()
}

/// The key file Arc's challenge names (`Basic realm=PATH`), read once it is checked to be the
/// agent's: otherwise any endpoint could make the tool read and send any file.
fn arc_key(challenge: &Option<String>, key_dir: &Path) -> Result<SecretString, String> {
    let challenge = challenge
        .as_deref()
        .ok_or("it answered 401 without WWW-Authenticate naming its key file")?;
    let path = challenge
        .split_once('=')
        .map(|(_, path)| path.trim().trim_matches('"'))
        .filter(|path| !path.is_empty())
        .ok_or("its WWW-Authenticate names no key file (Basic realm=PATH)")?;
    let path = Path::new(path);
    let shown = crate::sanitize::printable_owned(&path.display().to_string());
    let in_dir = path.parent() == Some(key_dir)
        && !path.components().any(|c| matches!(c, Component::ParentDir));
    if !in_dir || path.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(format!(
            "its key file {shown} is not a .key file directly in {}; refusing to read it",
            key_dir.display()
        ));
    }
    let metadata = std::fs::symlink_metadata(path).map_err(|e| {
        format!("cannot read its key file {shown}: {e} (reading it needs root or the himds group)")
    })?;
    if !metadata.is_file() || metadata.len() > ARC_KEY_MAX_BYTES {
        return Err(format!(
            "its key file {shown} is not a plain file of at most {ARC_KEY_MAX_BYTES} bytes; refusing to read it"
        ));
    }
    let mut text = std::fs::read_to_string(path).map_err(|e| {
        format!("cannot read its key file {shown}: {e} (reading it needs root or the himds group)")
    })?;
    let key = SecretString::from(text.trim());
    text.zeroize();
    if key.expose_secret().is_empty() {
        return Err(format!("its key file {shown} is empty"));
    }
    Ok(key)
}

/// What an error body says: Entra-style `error_description` / `error`, a `message`, or the
/// start of the text.
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Said {
        error: Option<serde_json::Value>,
        error_description: Option<String>,
        message: Option<String>,
    }
    if let Ok(said) = serde_json::from_slice::<Said>(body) {
        let error = match &said.error {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                o.get("message").and_then(|m| m.as_str()).map(str::to_owned)
            }
            _ => None,
        };
        if let Some(text) = said.error_description.or(said.message).or(error) {
            return text.lines().next().unwrap_or_default().trim().to_owned();
        }
    }
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(MAX_QUOTED)
        .collect()
}

/// A managed-identity token answer: the token, and its lifetime from `expires_in`, else from
/// `expires_on` (epoch seconds); each a number or a numeric string, as the hosts send them.
pub(crate) fn parse_managed(
    body: &[u8],
    now: SystemTime,
) -> Result<(SecretString, Duration), String> {
    #[derive(Deserialize)]
    struct Issued {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        expires_on: Option<serde_json::Value>,
    }
    let mut issued: Issued =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_owned())?;
    let seconds = |value: &Option<serde_json::Value>, name: &str| -> Result<Option<u64>, String> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or_else(|| format!("{name} {n} is not a number of seconds")),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                format!(
                    "{name} {:?} is not a number of seconds (an old api-version's date?)",
                    crate::sanitize::printable_owned(&s.chars().take(40).collect::<String>())
                )
            }),
            Some(other) => Err(format!("{name} {other} is not a number of seconds")),
        }
    };
    let lifetime = match seconds(&issued.expires_in, "expires_in")? {
        Some(secs) => Duration::from_secs(secs),
        None => match seconds(&issued.expires_on, "expires_on")? {
            Some(epoch) => SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(epoch))
                .and_then(|at| at.duration_since(now).ok())
                .unwrap_or(Duration::ZERO),
            None => return Err("the answer has neither expires_in nor expires_on".to_owned()),
        },
    };
    let mut text = issued
        .access_token
        .take()
        .filter(|t| !t.trim().is_empty())
        .ok_or("the answer has no access_token")?;
    let token = SecretString::from(text.trim());
    text.zeroize();
    if token.expose_secret().chars().any(|c| !c.is_ascii_graphic()) {
        return Err("the access_token holds characters an HTTP header cannot carry".to_owned());
    }
    if lifetime.is_zero() {
        return Err("the token it gave has already expired (check the system clock)".to_owned());
    }
    Ok((token, lifetime.min(super::super::MAX_LIFETIME)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::auth::credential::Environment;

    const NOW: u64 = 2_000_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    #[test]
    fn issue_18_expiry_in_every_form_the_hosts_send() {
        let lifetime =
            |body: String| parse_managed(body.as_bytes(), now()).map(|(_, l)| l.as_secs());
        // IMDS: strings.
        assert_eq!(
            lifetime(format!(
                r#"{{"access_token":"a","expires_in":"3599","expires_on":"{}"}}"#,
                NOW + 10
            )),
            Ok(3599)
        );
        // App Service 2019-08-01: expires_on only, a string or a number.
        assert_eq!(
            lifetime(format!(
                r#"{{"access_token":"a","expires_on":"{}"}}"#,
                NOW + 600
            )),
            Ok(600)
        );
        assert_eq!(
            lifetime(format!(
                r#"{{"access_token":"a","expires_on":{}}}"#,
                NOW + 60
            )),
            Ok(60)
        );
        assert_eq!(
            lifetime(r#"{"access_token":"a","expires_in":120}"#.into()),
            Ok(120)
        );
        let old =
            lifetime(r#"{"access_token":"a","expires_on":"1/10/2020 8:01:28 AM +00:00"}"#.into())
                .unwrap_err();
        assert!(
            old.contains("expires_on") && old.contains("not a number"),
            "{old}"
        );
        assert!(
            lifetime(r#"{"access_token":"a"}"#.into())
                .unwrap_err()
                .contains("neither")
        );
        assert!(
            lifetime(format!(
                r#"{{"access_token":"a","expires_on":"{}"}}"#,
                NOW - 5
            ))
            .unwrap_err()
            .contains("expired")
        );
        assert!(
            lifetime(r#"{"expires_in":5}"#.into())
                .unwrap_err()
                .contains("access_token")
        );
        let huge = lifetime(format!(
            r#"{{"access_token":"a","expires_in":{}}}"#,
            u64::MAX
        ))
        .unwrap();
        assert_eq!(huge, super::super::super::MAX_LIFETIME.as_secs());
    }

    #[test]
    fn issue_18_arc_key_files_outside_the_agents_directory_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("abc.key");
        std::fs::write(&key, "the-arc-key\n").unwrap();
        let challenge = |path: &Path| Some(format!("Basic realm={}", path.display()));
        assert_eq!(
            arc_key(&challenge(&key), dir.path())
                .unwrap()
                .expose_secret(),
            "the-arc-key"
        );
        let other = tempfile::tempdir().unwrap();
        let error = arc_key(&challenge(&key), other.path()).unwrap_err();
        assert!(error.contains("refusing"), "{error}");
        let not_key = dir.path().join("passwd");
        std::fs::write(&not_key, "x").unwrap();
        assert!(
            arc_key(&challenge(&not_key), dir.path())
                .unwrap_err()
                .contains(".key")
        );
        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![b'a'; 5000]).unwrap();
        assert!(
            arc_key(&challenge(&big), dir.path())
                .unwrap_err()
                .contains("4096")
        );
        assert!(arc_key(&None, dir.path()).is_err());
        let sneaky = dir
            .path()
            .join("..")
            .join(dir.path().file_name().unwrap())
            .join("abc.key");
        assert!(arc_key(&challenge(&sneaky), dir.path()).is_err());
    }

    fn source(host: ManagedHost, env: Environment, id: Option<&str>) -> ManagedIdentity {
        let sources = CredentialSources {
            environment: env,
            managed_identity_id: id.map(|id| ManagedIdentityId::parse(id).unwrap()),
            ..CredentialSources::default()
        };
        ManagedIdentity::new(
            &sources,
            host,
            "https://graph.microsoft.com",
            Duration::from_secs(5),
            false,
        )
        .unwrap()
    }

    fn local() -> Environment {
        Environment {
            identity_endpoint: Some("http://127.0.0.1:9/msi/token".into()),
            identity_header: Some(SecretString::from("the-HEADER-secret")),
            imds_authority_host: Some("http://127.0.0.1:9".into()),
            ..Environment::default()
        }
    }

    #[test]
    fn issue_18_each_host_names_a_user_assigned_identity_its_own_way() {
        let guid = "11111111-2222-3333-4444-555555555555";
        let resource = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mi";
        let cases = [
            (
                ManagedHost::Imds,
                guid.to_owned(),
                format!("client_id={guid}"),
            ),
            (
                ManagedHost::Imds,
                format!("object-id={guid}"),
                format!("object_id={guid}"),
            ),
            (
                ManagedHost::Imds,
                resource.to_owned(),
                "msi_res_id=%2Fsubscriptions%2F".to_owned(),
            ),
            (
                ManagedHost::AppService,
                guid.to_owned(),
                format!("client_id={guid}"),
            ),
            (
                ManagedHost::AppService,
                format!("object-id={guid}"),
                format!("principal_id={guid}"),
            ),
            (
                ManagedHost::AppService,
                resource.to_owned(),
                "mi_res_id=%2Fsubscriptions%2F".to_owned(),
            ),
        ];
        for (host, id, wanted) in cases {
            let identity = source(host, local(), Some(&id));
            let request = identity.request(None).build().unwrap();
            let query = request.url().query().unwrap_or_default().to_owned();
            assert!(query.contains(&wanted), "{id}: {query}");
            assert!(
                query.contains("resource=https%3A%2F%2Fgraph.microsoft.com"),
                "{query}"
            );
            assert!(!query.contains(".default"), "{query}");
        }
        let imds = source(ManagedHost::Imds, local(), None)
            .request(None)
            .build()
            .unwrap();
        assert_eq!(imds.url().path(), "/metadata/identity/oauth2/token");
        assert!(
            imds.url()
                .query()
                .unwrap()
                .contains("api-version=2018-02-01")
        );
        assert_eq!(imds.headers()["metadata"], "true");
        let app = source(ManagedHost::AppService, local(), None)
            .request(None)
            .build()
            .unwrap();
        assert!(
            app.url()
                .query()
                .unwrap()
                .contains("api-version=2019-08-01")
        );
        assert_eq!(app.headers()["x-identity-header"], "the-HEADER-secret");
        // Cloud Shell and Arc have only the system-assigned identity here.
        let sources = CredentialSources {
            environment: Environment {
                msi_endpoint: Some("http://127.0.0.1:9/cs".into()),
                ..Environment::default()
            },
            managed_identity_id: Some(ManagedIdentityId::Client(guid.into())),
            ..CredentialSources::default()
        };
        let error = ManagedIdentity::new(
            &sources,
            ManagedHost::CloudShell,
            "r",
            Duration::from_secs(1),
            false,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("Cloud Shell"), "{error}");
    }

    #[test]
    fn issue_18_an_echoed_identity_header_is_scrubbed_and_only_busy_answers_are_retried() {
        let identity = source(ManagedHost::AppService, local(), None);
        let answer = |status: u16, body: &str| Answer {
            status,
            retry_after: None,
            challenge: None,
            body: body.as_bytes().to_vec(),
            sent_secret: "the-HEADER-secret".to_owned(),
        };
        let Attempt::Final(error) = identity.judge(
            answer(
                401,
                r#"{"error":"x","error_description":"bad header the-HEADER-secret"}"#,
            ),
            now(),
        ) else {
            panic!("a 401 is final");
        };
        let error = error.to_string();
        assert!(
            !error.contains("the-HEADER-secret") && error.contains("[redacted]"),
            "{error}"
        );
        assert!(matches!(
            identity.judge(answer(503, "busy"), now()),
            Attempt::Transient(..)
        ));
        assert!(matches!(
            identity.judge(answer(404, "no"), now()),
            Attempt::Final(_)
        ));
        // IMDS also retries 404 and 410.
        let imds = source(ManagedHost::Imds, local(), None);
        for status in [404, 410, 429, 500, 503] {
            assert!(
                matches!(
                    imds.judge(answer(status, "x"), now()),
                    Attempt::Transient(..)
                ),
                "{status}"
            );
        }
        assert!(matches!(
            imds.judge(answer(400, "x"), now()),
            Attempt::Final(_)
        ));
    }

    #[test]
    fn issue_18_auto_gives_imds_the_shorter_first_timeout() {
        let sources = CredentialSources {
            environment: local(),
            ..CredentialSources::default()
        };
        let first = |by_auto| {
            ManagedIdentity::new(
                &sources,
                ManagedHost::Imds,
                "r",
                Duration::from_secs(60),
                by_auto,
            )
            .unwrap()
            .first_timeout
        };
        assert_eq!(first(true), IMDS_PROBE_TIMEOUT_AUTO);
        assert_eq!(first(false), IMDS_PROBE_TIMEOUT);
        assert!(IMDS_PROBE_TIMEOUT_AUTO <= Duration::from_secs(1));
        let arc = CredentialSources {
            environment: Environment {
                identity_endpoint: Some("http://127.0.0.1:9/arc".into()),
                imds_endpoint: Some("http://127.0.0.1:9".into()),
                ..Environment::default()
            },
            managed_identity_id: Some(ManagedIdentityId::Client("x".into())),
            ..CredentialSources::default()
        };
        let error =
            ManagedIdentity::new(&arc, ManagedHost::Arc, "r", Duration::from_secs(1), false)
                .err()
                .unwrap()
                .to_string();
        assert!(error.contains("Azure Arc"), "{error}");
    }

    #[test]
    fn issue_18_the_default_imds_address_is_refused_under_cargo_test() {
        let sources = CredentialSources::default();
        let error = ManagedIdentity::new(
            &sources,
            ManagedHost::Imds,
            "https://graph.microsoft.com",
            Duration::from_secs(5),
            false,
        )
        .err()
        .unwrap();
        assert!(matches!(error, AuthError::ImdsGuard), "{error}");
        assert!(error.to_string().contains("169.254.169.254"));
    }
}
