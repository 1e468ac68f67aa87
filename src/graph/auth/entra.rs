//! Entra's client-credentials grant (`{authority}/{tenant}/oauth2/v2.0/token`): one token
//! request of an app, with a client secret, a certificate's assertion or a federated one, and
//! the token response read. Entra's refusals are read in [`super::refusal`].

use std::time::{Duration, SystemTime};

use reqwest::header::ACCEPT;
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::credential::federated::Federated;
use super::refusal::{refusal, scrub, transport_reason};
use super::{Attempt, AuthError, DEFAULT_LIFETIME, MAX_LIFETIME, unsendable};
use crate::graph::assertion::ClientCertificate;
use crate::graph::client::retry_after;
use crate::retry::AttemptKind;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The proof of the app's identity sent to the token endpoint.
pub(crate) enum Proof {
    Secret(SecretString),
    Certificate(Box<ClientCertificate>),
    /// Workload identity or GitHub OIDC: an assertion got afresh for every token request.
    Federated(Federated),
}

/// Entra's client-credentials grant for one app.
pub(crate) struct EntraGrant {
    pub(super) http: reqwest::Client,
    pub(super) token_url: String,
    pub(super) scope: String,
    pub(super) client_id: String,
    pub(super) proof: Proof,
}

impl EntraGrant {
    pub(super) async fn request_once(&self) -> Attempt {
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
        let retry_after = retry_after(&response);
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

#[cfg(test)]
mod tests {
    use super::super::{CredentialSources, TokenEndpoint, Tokens};
    use super::*;
    use crate::mock::{MockConfig, MockServer};

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
