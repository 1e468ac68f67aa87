//! Access tokens for Graph. For now a ready token (env `GRAPH_ACCESS_TOKEN` or
//! `--access-token-file`); the token is held in a `secrecy` type so it never reaches a log.
//!
//! The runner asks for [`Tokens::current`] before each attempt and calls [`Tokens::refresh`] once
//! when Graph answers 401 with the token it used.

use std::sync::Arc;

use secrecy::SecretString;

/// Why no token could be had. Messages never hold a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// A ready token cannot be renewed by this tool.
    #[error(
        "Graph refused the access token and a ready token cannot be renewed here; get a fresh one (or give app credentials)"
    )]
    CannotRefresh,
}

/// Where the run's tokens come from.
#[derive(Clone)]
pub enum Tokens {
    /// A token obtained elsewhere; used as it is until Graph refuses it.
    Ready(Arc<SecretString>),
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl Tokens {
    /// The token to send now.
    pub async fn current(&self) -> Result<Arc<SecretString>, AuthError> {
        match self {
            Tokens::Ready(token) => Ok(token.clone()),
        }
    }

    /// A fresh token after Graph refused `stale` with a 401. Many workers may report the same
    /// stale token at once; only one renewal may follow.
    pub async fn refresh(
        &self,
        _stale: &Arc<SecretString>,
    ) -> Result<Arc<SecretString>, AuthError> {
        match self {
            Tokens::Ready(_) => Err(AuthError::CannotRefresh),
        }
    }

    /// Names the source, never the secret: for `--dry-run` and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Tokens::Ready(_) => "a ready access token",
        }
    }
}
