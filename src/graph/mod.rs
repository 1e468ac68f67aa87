//! Microsoft Graph: the wire model of invokeAction and of the identities a lookup reads, one HTTP
//! attempt at a call, and access tokens (with the certificate's client assertion). No retries, sleeps or rate limits here (see
//! `runner`); the token endpoint's own few retries live in `auth`.

pub mod assertion;
pub mod auth;
pub mod client;
pub mod delegated;
pub mod identity;
pub mod model;
pub mod permissions;

#[cfg(test)]
mod hostile_tests;
