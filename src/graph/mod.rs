//! Microsoft Graph: the wire model of invokeAction and of the identities a lookup reads, one HTTP
//! attempt at a call, and access tokens: `auth` owns the token cache (single flight, early
//! renewal, the token requests' own few retries) and the app credentials; `auth::credential` chooses
//! the kind and holds the unattended ones (workload identity, GitHub OIDC, managed identity,
//! Azure CLI); `auth::delegated` a responder's own sign-in by device code or browser;
//! `permissions` what a token may do; `auth::refusal` turns Entra's refusals into messages; `assertion` signs the
//! certificate's client assertion. No retries, sleeps or rate limits for Graph calls here (see
//! `runner`).

pub mod assertion;
pub mod auth;
pub mod client;
pub mod identity;
pub mod model;
pub mod permissions;

#[cfg(test)]
mod hostile_tests;
