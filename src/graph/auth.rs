//! Access tokens for Graph. For now a ready token (env `GRAPH_ACCESS_TOKEN` or
//! `--access-token-file`); the token is held in a `secrecy` type so it never reaches a log.

use std::sync::Arc;

use secrecy::SecretString;

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
    pub async fn current(&self) -> Arc<SecretString> {
        match self {
            Tokens::Ready(token) => token.clone(),
        }
    }

    /// Names the source, never the secret: for `--dry-run` and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Tokens::Ready(_) => "a ready access token",
        }
    }
}
