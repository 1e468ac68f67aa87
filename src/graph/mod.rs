//! Microsoft Graph: the wire model of invokeAction and of the identities a lookup reads, one HTTP
//! attempt at a call, and access tokens (with the certificate's client assertion). No retries, sleeps or rate limits here (see
//! `runner`); the token endpoint's own few retries live in `auth`.

pub mod assertion;
pub mod auth;
pub mod client;
// Read by the identity lookup (SPEC section 8), which lands in the commits that follow.
#[allow(dead_code)]
pub mod identity;
pub mod model;

#[cfg(test)]
mod hostile_tests;
