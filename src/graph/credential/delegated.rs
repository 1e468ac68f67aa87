//! Delegated sign-in (device code, browser): the responder as themselves. Not built on this
//! branch yet: this is the one place that turns `--auth device-code` and `--auth browser` into
//! tokens, and today it says they are not available. Replace [`sign_in`] to plug them in.

use std::time::Duration;

use super::super::auth::{AuthError, CredentialSources, SourceKind, TokenEndpoint, Tokens};

/// Tokens for a delegated kind (`SourceKind::DeviceCode` or `SourceKind::Browser`).
pub(crate) fn sign_in(
    kind: SourceKind,
    _sources: &CredentialSources,
    _endpoint: &TokenEndpoint,
    _timeout: Duration,
) -> Result<Tokens, AuthError> {
    Err(AuthError::Unavailable {
        kind: match kind {
            SourceKind::Browser => "browser",
            _ => "device-code",
        },
    })
}
