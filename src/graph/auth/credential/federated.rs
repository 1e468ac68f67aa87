//! Federated assertions for Entra's client-credentials grant (`client_assertion`), got afresh
//! for every token request (issue 18, research/credentials.md section 1):
//! - workload identity: the file `AZURE_FEDERATED_TOKEN_FILE` as it is now. Kubernetes rotates
//!   it; a tool that reads it once is refused (AADSTS700024) once the first copy expires.
//! - GitHub Actions: a new OIDC token from `ACTIONS_ID_TOKEN_REQUEST_URL` with the audience
//!   `api://AzureADTokenExchange`. GitHub's tokens live five minutes, so none is kept.
//!
//! Both are secrets: they go into the form and nowhere else, and the request token GitHub wants
//! is scrubbed from anything its endpoint answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION};
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::super::refusal::{scrub, transport_reason};
use super::super::{Attempt, AuthError, CredentialSources, token_client};
use super::AuthKind;
use crate::graph::client::retry_after;
use crate::retry::AttemptKind;

/// The audience Entra's federated credentials expect (research/credentials.md section 1).
pub(crate) const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Where the assertion comes from.
pub(crate) enum Federated {
    /// Workload identity: the token file, read for every request.
    File(PathBuf),
    /// GitHub Actions: a token minted for every request.
    GitHub(GitHubOidc),
}

pub(crate) struct GitHubOidc {
    http: reqwest::Client,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` with `audience=` added.
    url: reqwest::Url,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    request_token: SecretString,
}

impl Federated {
    /// Workload identity's inputs, checked: the token file must be named (its contents are read
    /// per request, so that a missing or empty file is reported then, nothing sent).
    pub(crate) fn workload_identity(sources: &CredentialSources) -> Result<Federated, AuthError> {
        let path = sources
            .environment
            .federated_token_file
            .clone()
            .ok_or_else(|| AuthError::MissingInput {
                kind: AuthKind::WorkloadIdentity.as_str(),
                missing: "AZURE_FEDERATED_TOKEN_FILE (the projected service account token; in AKS, label the pod azure.workload.identity/use: \"true\")".to_owned(),
            })?;
        let federated = Federated::File(path);
        Ok(federated)
    }

    /// GitHub Actions' inputs, checked: both variables, and a URL that parses.
    pub(crate) fn github(
        sources: &CredentialSources,
        timeout: Duration,
    ) -> Result<Federated, AuthError> {
        let env = &sources.environment;
        let missing = |what: &str| AuthError::MissingInput {
            kind: AuthKind::GithubOidc.as_str(),
            missing: format!(
                "{what}: GitHub sets it only in a job with `permissions: id-token: write`"
            ),
        };
        let url = env
            .actions_request_url
            .as_deref()
            .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_URL"))?;
        let request_token = env
            .actions_request_token
            .clone()
            .ok_or_else(|| missing("ACTIONS_ID_TOKEN_REQUEST_TOKEN"))?;
        let mut url =
            crate::graph::client::check_service_url(url).map_err(|_| AuthError::MissingInput {
                kind: AuthKind::GithubOidc.as_str(),
                missing:
                    "an ACTIONS_ID_TOKEN_REQUEST_URL that is an https URL (or http to loopback)"
                        .to_owned(),
            })?;
        // The URL GitHub gives already holds a query (`?api-version=2.0`).
        url.query_pairs_mut()
            .append_pair("audience", TOKEN_EXCHANGE_AUDIENCE);
        let http = token_client(timeout)?;
        Ok(Federated::GitHub(GitHubOidc {
            http,
            url,
            request_token,
        }))
    }

    /// The assertion for one token request; a failure is the token request's [`Attempt`].
    pub(crate) async fn assertion(&self) -> Result<SecretString, Attempt> {
        match self {
            Federated::File(path) => read_token_file(path).await.map_err(Attempt::Final),
            Federated::GitHub(github) => github.mint().await,
        }
    }
}

/// The token file as it is now, trimmed. Read on tokio's blocking pool: a token request may be
/// on any worker's path.
async fn read_token_file(path: &Path) -> Result<SecretString, AuthError> {
    let unreadable = |reason: String| AuthError::ReadFile {
        what: "workload-identity token file (AZURE_FEDERATED_TOKEN_FILE)",
        path: path.display().to_string(),
        reason,
    };
    let mut text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    let token = SecretString::from(text.trim());
    text.zeroize();
    if token.expose_secret().is_empty() {
        return Err(AuthError::Empty {
            what: "workload-identity token file (AZURE_FEDERATED_TOKEN_FILE)",
        });
    }
    if token.expose_secret().contains(char::is_whitespace) {
        return Err(unreadable(
            "it holds more than one token (a space or line break inside); it must hold the service account token alone".to_owned(),
        ));
    }
    Ok(token)
}

impl GitHubOidc {
    /// `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=...` with the request token: `{"value": JWT}`.
    async fn mint(&self) -> Result<SecretString, Attempt> {
        let sent = self.request_token.expose_secret();
        let shown = shown_url(&self.url);
        let failed = |reason: String| AuthError::GitHubOidc {
            url: shown.clone(),
            reason,
        };
        let response = self
            .http
            .get(self.url.clone())
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, format!("Bearer {sent}"))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_timeout() {
                    AttemptKind::Timeout
                } else {
                    AttemptKind::Connection
                };
                return Err(Attempt::Transient(
                    failed(scrub(&transport_reason(&error), sent)),
                    kind,
                ));
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Err(Attempt::Transient(
                    failed(scrub(&transport_reason(&error), sent)),
                    AttemptKind::Connection,
                ));
            }
        };
        if !(200..300).contains(&status) {
            let quoted: String = String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(200)
                .collect();
            let error = failed(format!(
                "HTTP {status}: {}{}",
                scrub(&quoted, sent),
                if matches!(status, 401 | 403) {
                    "; does the job have `permissions: id-token: write`, and is the request token still valid (it lasts about 6 hours)?"
                } else {
                    ""
                }
            ));
            return Err(if status == 429 || status >= 500 {
                Attempt::Transient(
                    error,
                    AttemptKind::Status {
                        // 5xx from GitHub is retried as a 503 would be.
                        status: if status == 429 { 429 } else { 503 },
                        retry_after,
                    },
                )
            } else {
                Attempt::Final(error)
            });
        }
        #[derive(Deserialize)]
        struct Minted {
            value: Option<String>,
        }
        let mut minted: Minted = serde_json::from_slice(&body)
            .map_err(|_| Attempt::Final(failed("the answer is not JSON".to_owned())))?;
        let mut value = minted
            .value
            .take()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Attempt::Final(failed("the answer has no `value` token".to_owned())))?;
        let token = SecretString::from(value.trim());
        value.zeroize();
        Ok(token)
    }
}

/// The request URL without its query, for messages.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::auth::credential::Environment;

    #[tokio::test]
    async fn issue_18_an_empty_or_missing_token_file_is_named_and_nothing_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " \n").unwrap();
        let Err(Attempt::Final(error)) = Federated::File(path.clone()).assertion().await else {
            panic!("an empty file is final");
        };
        assert!(error.to_string().contains("is empty"), "{error}");
        std::fs::write(&path, "alpha\nbeta").unwrap();
        let Err(Attempt::Final(error)) = Federated::File(path.clone()).assertion().await else {
            panic!("two tokens are final");
        };
        assert!(!error.to_string().contains("alpha"), "{error}");
        std::fs::write(&path, "jwt-now\n").unwrap();
        let Ok(token) = Federated::File(path).assertion().await else {
            panic!("a token is read");
        };
        assert_eq!(token.expose_secret(), "jwt-now");
        let error = Federated::workload_identity(&CredentialSources::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("workload-identity") && error.contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{error}"
        );
    }

    #[test]
    fn issue_18_github_needs_both_variables_and_asks_for_the_exchange_audience() {
        let sources = |url: Option<&str>, token: Option<&str>| CredentialSources {
            environment: Environment {
                actions_request_url: url.map(str::to_owned),
                actions_request_token: token.map(SecretString::from),
                ..Environment::default()
            },
            ..CredentialSources::default()
        };
        let timeout = Duration::from_secs(1);
        let error = Federated::github(&sources(None, Some("t")), timeout)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("ACTIONS_ID_TOKEN_REQUEST_URL"), "{error}");
        let error = Federated::github(&sources(Some("http://127.0.0.1:1/x?a=1"), None), timeout)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("ACTIONS_ID_TOKEN_REQUEST_TOKEN"), "{error}");
        let Ok(Federated::GitHub(github)) = Federated::github(
            &sources(Some("http://127.0.0.1:1/x?api-version=2.0"), Some("t")),
            timeout,
        ) else {
            panic!("both set");
        };
        assert_eq!(
            github.url.as_str(),
            "http://127.0.0.1:1/x?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange"
        );
    }
}
