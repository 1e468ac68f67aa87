//! Microsoft Graph: the wire model of invokeAction, one HTTP attempt at it, and access tokens.
//! No retries, sleeps or rate limits here (see `runner`).

pub mod auth;
pub mod client;
pub mod model;
