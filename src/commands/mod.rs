//! The subcommands, one module each, on top of the library's parts: `validate` (check and print
//! the plan), `run` (the batch, with `prepare` for what happens before the first request:
//! results path, resume checks, confirmation, dry run, credentials), `resolve`, `report` (the
//! report for the ticket, from what a run wrote), `auth` (sign in, say who and what the token may
//! do), `confirm` (whether each action took effect, also the last phase of `run --confirm`) and
//! `completions`. `mock` lives in
//! [`crate::mock`].

pub mod auth;
pub mod completions;
pub mod confirm;
mod connect;
pub mod finish;
pub mod look_up;
pub mod prepare;
pub mod report;
pub mod resolve;
pub mod run;
pub mod validate;
