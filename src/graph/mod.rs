//! Microsoft Graph: the wire model of invokeAction and of the identities a lookup reads, one HTTP
//! attempt at a call, and access tokens (with the certificate's client assertion; `auth::delegated`: a
//! responder's own sign-in by device code or browser; `permissions`: what a token may do). No
//! retries, sleeps or rate limits here (see `runner`); the token endpoint's own few retries live
//! in `auth`, and the device code's polling in `auth::delegated`.

pub mod assertion;
pub mod auth;
pub mod client;
pub mod identity;
pub mod model;
pub mod permissions;

#[cfg(test)]
mod hostile_tests;
