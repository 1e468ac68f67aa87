//! Entra's refusals: a token endpoint's error body turned into a message naming the AADSTS code,
//! its first line of description, the trace ids, and what to do next, with whatever was sent
//! (secret, assertion, key) scrubbed out however it was echoed. Shared by every credential kind
//! that asks Entra or a managed-identity endpoint for a token.

use serde::Deserialize;

use super::AuthError;
use crate::sanitize::{printable_owned, redact};

/// The most of an error body quoted when it is not Entra's JSON.
const MAX_QUOTED_BODY: usize = 300;

/// Entra's error body (research/graph.md section 4): `{error, error_description, error_codes,
/// timestamp, trace_id, correlation_id}`.
#[derive(Debug, Default, Deserialize)]
struct EntraError {
    error: Option<String>,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

/// Turns a refusal from the token endpoint into an error naming the AADSTS code, its description
/// and what to do, with anything sent scrubbed out.
pub(crate) fn refusal(url: &str, status: u16, body: &[u8], sent_secret: &str) -> AuthError {
    let parsed: Option<EntraError> = serde_json::from_slice(body).ok();
    let Some(entra) = parsed.filter(|e| e.error.is_some() || e.error_description.is_some()) else {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(MAX_QUOTED_BODY).collect();
        return AuthError::Refused {
            url: url.to_owned(),
            status,
            error: None,
            description: scrub(&text, sent_secret),
            ids: None,
            hint: "This does not look like Entra's answer: check --authority-url (or AZURE_AUTHORITY_HOST)".to_owned(),
        };
    };
    // Entra appends "\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ..." lines.
    let description = entra
        .error_description
        .as_deref()
        .and_then(|d| d.lines().next())
        .unwrap_or("no description")
        .trim()
        .to_owned();
    let code = entra
        .error_codes
        .first()
        .copied()
        .or_else(|| aadsts_code(&description));
    let ids = match (&entra.trace_id, &entra.correlation_id) {
        (None, None) => None,
        (trace, correlation) => Some(format!(
            "trace id {}, correlation id {}",
            trace.as_deref().unwrap_or("-"),
            correlation.as_deref().unwrap_or("-")
        )),
    };
    AuthError::Refused {
        url: url.to_owned(),
        status,
        error: entra.error.map(|e| scrub(&e, sent_secret)),
        description: scrub(&description, sent_secret),
        ids,
        hint: hint(code),
    }
}

/// `AADSTS7000215: ...` -> 7000215.
pub(crate) fn aadsts_code(description: &str) -> Option<u64> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What to do about the AADSTS codes a batch job meets most.
fn hint(code: Option<u64>) -> String {
    let what = match code {
        Some(7000215) => {
            "Give the client secret's value (not its secret ID), from the app registration's Certificates & secrets"
        }
        Some(7000222) => {
            "The client secret has expired: create a new one under Certificates & secrets in the app registration"
        }
        Some(700016) => {
            "Check --client-id (AZURE_CLIENT_ID), and that the app is registered in the tenant given by --tenant-id"
        }
        Some(90002) | Some(900023) | Some(90072) => {
            "Check --tenant-id (AZURE_TENANT_ID): the directory (tenant) id or its domain, and --cloud"
        }
        Some(700027) | Some(700024) => {
            "Upload this certificate (its public part) to the app registration under Certificates & secrets, and check the system clock"
        }
        Some(1002012) | Some(70011) | Some(500011) => {
            "The Graph scope was refused: check --cloud and --graph-url"
        }
        Some(7000112) | Some(7000113) => "The app is disabled in the tenant: ask an administrator",
        _ => "",
    };
    match (code, what.is_empty()) {
        (Some(code), true) => format!("See https://login.microsoftonline.com/error?code={code}"),
        (Some(code), false) => {
            format!("{what} (https://login.microsoftonline.com/error?code={code})")
        }
        (None, _) => "Check the credentials and --tenant-id".to_owned(),
    }
}

/// Text that came back from the token endpoint, made safe to print: what was sent scrubbed out
/// in whatever encoding it was echoed in, and control characters escaped.
pub(crate) fn scrub(text: &str, sent_secret: &str) -> String {
    printable_owned(&redact(text, sent_secret))
}

/// reqwest's message and its causes ("error sending request" alone says little).
pub(crate) fn transport_reason(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    // The URL is named by the caller's message already.
    let mut message = match error.url() {
        Some(url) => error.to_string().replace(&format!(" for url ({url})"), ""),
        None => error.to_string(),
    };
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
