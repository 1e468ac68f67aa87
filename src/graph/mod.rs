//! Microsoft Graph: the wire model of invokeAction, one HTTP attempt at it, and access tokens
//! (with the certificate's client assertion). No retries, sleeps or rate limits here (see
//! `runner`); the token endpoint's own few retries live in `auth`.

pub mod assertion;
pub mod auth;
pub mod client;
pub mod model;

#[cfg(test)]
mod hostile_tests;
