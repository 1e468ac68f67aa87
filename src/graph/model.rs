//! The vocabulary of the invokeAction call: actions, identity providers, the support matrix,
//! the request body, both response shapes Microsoft documents, Graph's error body, and the
//! `request-id` shape that tells the built-in mock's answers from Microsoft's.
//!
//! Pure data and parsing; no I/O. Shared by the client, the input validator and the mock, so the
//! three can never disagree about what Graph accepts.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sanitize::printable_owned;

/// The last bytes of every `request-id` the built-in mock sends: `mock` in ASCII. Graph's own
/// request ids are random version-4 UUIDs; results record the request id, so a record the mock
/// answered can be told apart from one Microsoft answered even when the lock file that names the
/// endpoint is gone (issue 10: a rehearsal never passes for the real run). A fact of the wire,
/// here so that the mock (which makes such ids) and `--resume` (which reads them) share it
/// without `output` importing `mock`.
pub const MOCK_REQUEST_ID_MARK: [u8; 4] = *b"mock";

/// Whether `request_id` came from this tool's mock ([`MOCK_REQUEST_ID_MARK`]).
pub fn is_mock_request_id(request_id: &str) -> bool {
    uuid::Uuid::parse_str(request_id).is_ok_and(|id| id.as_bytes()[12..] == MOCK_REQUEST_ID_MARK)
}

/// A response action, spelled on the wire exactly as Graph's `microsoft.graph.security.action` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Disable,
    Enable,
    ForcePasswordReset,
    RevokeAllSessions,
    RequireUserToSignInAgain,
    MarkUserAsCompromised,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Disable,
        Action::Enable,
        Action::ForcePasswordReset,
        Action::RevokeAllSessions,
        Action::RequireUserToSignInAgain,
        Action::MarkUserAsCompromised,
    ];

    /// Graph's spelling, as sent in the request body.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::ForcePasswordReset => "forcePasswordReset",
            Action::RevokeAllSessions => "revokeAllSessions",
            Action::RequireUserToSignInAgain => "requireUserToSignInAgain",
            Action::MarkUserAsCompromised => "markUserAsCompromised",
        }
    }

    /// Matches a user's spelling ignoring case, spaces, `_` and `-` (`Force Password Reset` works).
    pub fn parse(text: &str) -> Option<Action> {
        // Most inputs already use Graph's spelling: match that without allocating.
        if let Some(action) = Action::ALL.into_iter().find(|a| a.as_str() == text) {
            return Some(action);
        }
        let wanted = fold_name(text);
        Action::ALL
            .into_iter()
            .find(|action| fold_name(action.as_str()) == wanted)
    }

    /// The action that undoes this one, where Graph offers one.
    pub fn opposite(self) -> Option<Action> {
        match self {
            Action::Disable => Some(Action::Enable),
            Action::Enable => Some(Action::Disable),
            _ => None,
        }
    }

    /// Position in [`Action::ALL`]; used for compact bit sets.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An identity provider, spelled as Graph's `microsoft.graph.security.identityProvider` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Provider {
    #[serde(rename = "entraID")]
    EntraId,
    #[serde(rename = "activeDirectory")]
    ActiveDirectory,
    #[serde(rename = "okta")]
    Okta,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::EntraId, Provider::ActiveDirectory, Provider::Okta];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::EntraId => "entraID",
            Provider::ActiveDirectory => "activeDirectory",
            Provider::Okta => "okta",
        }
    }

    /// Matches ignoring case, spaces, `_` and `-`; also takes the common short forms `AD` and
    /// `Entra`/`AzureAD`, which responders' spreadsheets use.
    pub fn parse(text: &str) -> Option<Provider> {
        if let Some(provider) = Provider::ALL.into_iter().find(|p| p.as_str() == text) {
            return Some(provider);
        }
        match fold_name(text).as_str() {
            "entraid" | "entra" | "azuread" | "aad" => Some(Provider::EntraId),
            "activedirectory" | "ad" => Some(Provider::ActiveDirectory),
            "okta" => Some(Provider::Okta),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether Microsoft documents `action` for `provider` (SPEC section 1). Anything else is refused
/// before sending unless the user passes `--allow-unlisted`.
pub fn is_documented(action: Action, provider: Provider) -> bool {
    use Action::*;
    use Provider::*;
    matches!(
        (action, provider),
        (Disable | Enable, ActiveDirectory | Okta)
            | (ForcePasswordReset, ActiveDirectory)
            | (RevokeAllSessions, Okta)
    )
}

/// The providers documented for an action, for error messages.
pub fn documented_providers(action: Action) -> Vec<Provider> {
    Provider::ALL
        .into_iter()
        .filter(|provider| is_documented(action, *provider))
        .collect()
}

/// Lowercases and drops spaces, `_` and `-`: the folding SPEC section 3 asks for names.
pub fn fold_name(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The body of `invokeAction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeActionRequest<'a> {
    pub account_id: &'a str,
    pub action: Action,
    pub identity_provider: Provider,
}

/// What Graph answered, after folding the two documented shapes together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvokeActionResult {
    pub account_id: Option<String>,
    pub action: Option<String>,
    pub identity_provider: Option<String>,
    pub correlation_id: Option<String>,
}

/// Both shapes in one pass: the schema's bare `invokeActionResult`, or the docs' example
/// `{"value": {..., "provider": ...}}` (then `value` holds the fields). One struct rather than an
/// untagged enum, which would buffer and parse the body twice.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultFields {
    account_id: Option<String>,
    action: Option<String>,
    #[serde(alias = "provider")]
    identity_provider: Option<String>,
    correlation_id: Option<String>,
    value: Option<Box<ResultFields>>,
}

impl InvokeActionResult {
    /// Parses either response shape; an empty or non-JSON body yields an empty result rather than
    /// an error, because the action has already been accepted by the time we read it.
    pub fn parse(body: &[u8]) -> InvokeActionResult {
        let fields = match serde_json::from_slice::<ResultFields>(body) {
            Ok(ResultFields {
                value: Some(value), ..
            }) => *value,
            Ok(fields) => fields,
            Err(_) => return InvokeActionResult::default(),
        };
        // Recorded and printed: made safe like any text from outside (issue 10).
        let clean = |text: Option<String>| text.map(|t| printable_owned(&t));
        InvokeActionResult {
            account_id: clean(fields.account_id),
            action: clean(fields.action),
            identity_provider: clean(fields.identity_provider),
            correlation_id: clean(fields.correlation_id).filter(|id| !id.is_empty()),
        }
    }
}

/// The documented response shapes, for the mock to serve either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ResponseShape {
    /// `{"value": {"accountId", "action", "provider", "correlationId"}}` as in the docs' example.
    #[default]
    Docs,
    /// `{"accountId", "action", "identityProvider", "correlationId"}` as in the schema.
    Schema,
}

/// Graph's OData error, reduced to what a responder needs: the most detailed code and the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
}

impl GraphErrorBody {
    /// Reads `{"error": {"code", "message", "innerError": {...}}}`. Nested inner errors may carry a
    /// more specific code (Graph's guidance: use the most detailed one); the key is spelled
    /// `innerError` in responses and `innererror` in the spec, so both are read. A purely numeric
    /// inner code (the 429 sample's `"429"`) adds nothing and is ignored.
    pub fn parse(body: &[u8]) -> GraphErrorBody {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return GraphErrorBody::default();
        };
        let Some(error) = value.get("error") else {
            return GraphErrorBody::default();
        };
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .map(printable_owned);
        let mut code = error
            .get("code")
            .and_then(|c| c.as_str())
            .map(printable_owned);
        let mut inner = inner_error(error);
        // Bounded: a hostile body could nest deeply; 16 levels is far past anything Graph sends.
        for _ in 0..16 {
            let Some(next) = inner else { break };
            if let Some(inner_code) = next.get("code").and_then(|c| c.as_str())
                && !inner_code.is_empty()
                && !inner_code.chars().all(|c| c.is_ascii_digit())
            {
                code = Some(printable_owned(inner_code));
            }
            inner = inner_error(next);
        }
        GraphErrorBody { code, message }
    }
}

fn inner_error(error: &serde_json::Value) -> Option<&serde_json::Value> {
    error.as_object()?.iter().find_map(|(key, value)| {
        key.eq_ignore_ascii_case("innererror")
            .then_some(value)
            .filter(|v| v.is_object())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_fold_case_spaces_and_separators() {
        assert_eq!(Action::parse("DISABLE"), Some(Action::Disable));
        assert_eq!(
            Action::parse(" force_password-reset"),
            Some(Action::ForcePasswordReset)
        );
        assert_eq!(
            Action::parse("Revoke All Sessions"),
            Some(Action::RevokeAllSessions)
        );
        assert_eq!(Action::parse("delete"), None);
        assert_eq!(Action::parse(""), None);
    }

    #[test]
    fn provider_names_fold_and_accept_short_forms() {
        assert_eq!(
            Provider::parse("Active Directory"),
            Some(Provider::ActiveDirectory)
        );
        assert_eq!(Provider::parse("AD"), Some(Provider::ActiveDirectory));
        assert_eq!(Provider::parse("OKTA"), Some(Provider::Okta));
        assert_eq!(Provider::parse("EntraID"), Some(Provider::EntraId));
        assert_eq!(Provider::parse("google"), None);
    }

    #[test]
    fn support_matrix_matches_the_documentation() {
        use Action::*;
        use Provider::*;
        let documented: Vec<(Action, Provider)> = Action::ALL
            .into_iter()
            .flat_map(|a| Provider::ALL.into_iter().map(move |p| (a, p)))
            .filter(|(a, p)| is_documented(*a, *p))
            .collect();
        assert_eq!(
            documented,
            vec![
                (Disable, ActiveDirectory),
                (Disable, Okta),
                (Enable, ActiveDirectory),
                (Enable, Okta),
                (ForcePasswordReset, ActiveDirectory),
                (RevokeAllSessions, Okta),
            ]
        );
    }

    #[test]
    fn request_body_uses_graph_spelling() {
        let body = InvokeActionRequest {
            account_id: "S-1-5-21",
            action: Action::ForcePasswordReset,
            identity_provider: Provider::ActiveDirectory,
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"accountId":"S-1-5-21","action":"forcePasswordReset","identityProvider":"activeDirectory"}"#
        );
    }

    #[test]
    fn parses_the_docs_wrapped_shape() {
        let body = br#"{"value":{"accountId":"a","action":"disable","provider":"okta","correlationId":"c-1"}}"#;
        let result = InvokeActionResult::parse(body);
        assert_eq!(result.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(result.identity_provider.as_deref(), Some("okta"));
    }

    #[test]
    fn parses_the_schema_bare_shape_with_null_correlation_id() {
        let body = br#"{"accountId":"a","action":"disable","identityProvider":"okta","correlationId":null}"#;
        let result = InvokeActionResult::parse(body);
        assert_eq!(result.correlation_id, None);
        assert_eq!(result.account_id.as_deref(), Some("a"));
    }

    #[test]
    fn unreadable_success_body_is_an_empty_result() {
        assert_eq!(
            InvokeActionResult::parse(b""),
            InvokeActionResult::default()
        );
        assert_eq!(
            InvokeActionResult::parse(b"<html>"),
            InvokeActionResult::default()
        );
    }

    #[test]
    fn error_body_prefers_the_most_detailed_code_in_either_spelling() {
        let body = br#"{"error":{"code":"BadRequest","message":"Invalid action","innererror":{"code":"invalidActionForProvider","innerError":{"code":"deeper"}}}}"#;
        let parsed = GraphErrorBody::parse(body);
        assert_eq!(parsed.code.as_deref(), Some("deeper"));
        assert_eq!(parsed.message.as_deref(), Some("Invalid action"));
    }

    #[test]
    fn issue_10_control_characters_in_graph_bodies_are_escaped() {
        let body =
            r#"{"error":{"code":"bad\u001b[2Jcode","message":"line\r\nfake log line \u009b31m"}}"#;
        let parsed = GraphErrorBody::parse(body.as_bytes());
        let code = parsed.code.unwrap();
        let message = parsed.message.unwrap();
        assert!(
            !code.contains('\u{1b}') && code.contains("\\u{1b}"),
            "{code}"
        );
        assert!(!message.chars().any(char::is_control), "{message}");
        let success = r#"{"value":{"correlationId":"c\u001b]0;owned\u0007"}}"#;
        let result = InvokeActionResult::parse(success.as_bytes());
        assert!(!result.correlation_id.unwrap().chars().any(char::is_control));
    }

    #[test]
    fn numeric_inner_codes_do_not_hide_the_named_code() {
        let body = br#"{"error":{"code":"TooManyRequests","message":"Please retry again later.","innerError":{"code":"429","status":"429"}}}"#;
        assert_eq!(
            GraphErrorBody::parse(body).code.as_deref(),
            Some("TooManyRequests")
        );
    }
}
