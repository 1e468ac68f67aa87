//! The token cache: a token kept and renewed ahead of expiry (when less than min(5 min, a
//! quarter of its lifetime) remains), one request to the token endpoint at a time however many
//! workers wait (the single flight), and other workers sending the old token while it is still
//! good. [`SingleFlight`] is shared by app tokens (a [`Fetcher`] asked through the one attempt
//! driver) and a responder's sign-in ([`super::delegated`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Attempt, AuthError, Fetcher};
use crate::attempt::{Attempts, Ended, Failure, Request, Retrying, Unpaced};
use crate::retry::RetryPolicy;

/// The most ahead of expiry a token is renewed (azure-identity uses the same 5 minutes).
const MAX_RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How a token or sign-in request is retried when the endpoint is busy (429, 503, 504) or
/// unreachable: the same policy, `Retry-After` reading and backoff as Graph's requests, with
/// tighter bounds, since the whole run waits on it. A told wait past `max_wait` is not waited
/// out: the request fails.
pub(crate) const TOKEN_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 2,
    backoff_base: Duration::from_secs(1),
    backoff_cap: Duration::from_secs(10),
    max_wait: Duration::from_secs(20),
};
/// The longest a failed early renewal waits before trying again, while the token still works.
const MAX_TOKEN_RETRY_WAIT: Duration = Duration::from_secs(10);

/// Tokens from a fetcher, cached and renewed.
pub(super) struct AppTokens {
    fetcher: Fetcher,
    flight: SingleFlight<Cached>,
}

/// A token and when it is due: what every cached token carries.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) token: Arc<SecretString>,
    /// From here on, the next caller renews it.
    pub(super) renew_at: Instant,
    /// Until here, workers may keep sending it while another renews it.
    pub(super) usable_until: Instant,
}

impl Cached {
    /// A token valid for `lifetime` from `asked_at` (when the request left: never later than
    /// Entra's own clock started).
    pub(super) fn new(token: SecretString, lifetime: Duration, asked_at: Instant) -> Cached {
        let margin = renewal_margin(lifetime);
        let expires_at = asked_at + lifetime;
        Cached {
            token: Arc::new(token),
            renew_at: expires_at - margin,
            usable_until: expires_at - margin / 2,
        }
    }
}

/// What the single flight keeps: a [`Cached`] token, and whatever else comes with it (a
/// sign-in's refresh token and who signed in).
pub(super) trait Holds: Clone {
    fn held(&self) -> &Cached;
    fn held_mut(&mut self) -> &mut Cached;
}

impl Holds for Cached {
    fn held(&self) -> &Cached {
        self
    }

    fn held_mut(&mut self) -> &mut Cached {
        self
    }
}

/// How long before expiry a token is renewed: min(5 min, a quarter of its lifetime), so a
/// 75-minute token is renewed 5 minutes early and a 2-second one half a second early.
pub(super) fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_RENEWAL_MARGIN)
}

/// The cached token, and the one renewal in flight however many workers want it.
pub(super) struct SingleFlight<T> {
    /// Read by every worker before every attempt; never held across an await.
    cache: std::sync::Mutex<Option<T>>,
    /// Held while a renewal is in flight: the single flight.
    fetching: tokio::sync::Mutex<()>,
}

impl<T: Holds> SingleFlight<T> {
    pub(super) fn new() -> SingleFlight<T> {
        SingleFlight {
            cache: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn cached(&self) -> Option<T> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn store(&self, cached: Option<T>) {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = cached;
    }

    /// The token to send now: the cached one while it is not due, else the one `renew` gives
    /// from what is cached (nothing yet, or the due one).
    pub(super) async fn current<F>(
        &self,
        renew: impl FnOnce(Option<T>) -> F,
    ) -> Result<Arc<SecretString>, AuthError>
    where
        F: Future<Output = Result<T, AuthError>>,
    {
        let cached = self.cached();
        let now = Instant::now();
        if let Some(cached) = &cached
            && now < cached.held().renew_at
        {
            return Ok(cached.held().token.clone());
        }
        // Due for renewal, or none yet. One worker asks; while it does, the others keep sending
        // the old token if it is still good, or wait for the new one.
        let _fetching = match self.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(cached) = &cached
                    && now < cached.held().usable_until
                {
                    return Ok(cached.held().token.clone());
                }
                self.fetching.lock().await
            }
        };
        // Another worker may have renewed it while this one waited for the lock.
        let cached = self.cached();
        if let Some(cached) = &cached
            && Instant::now() < cached.held().renew_at
        {
            return Ok(cached.held().token.clone());
        }
        match renew(cached.clone()).await {
            Ok(fresh) => Ok(self.keep(fresh)),
            Err(error) => {
                let now = Instant::now();
                match cached {
                    // Renewing early failed but the token still works: keep it, try again soon.
                    Some(mut cached) if now < cached.held().usable_until => {
                        warn!(error = %error, "cannot renew the access token yet; using the current one until it is due");
                        let held = cached.held_mut();
                        let retry = ((held.usable_until - now) / 4).min(MAX_TOKEN_RETRY_WAIT);
                        held.renew_at = now + retry;
                        let token = held.token.clone();
                        self.store(Some(cached));
                        Ok(token)
                    }
                    _ => Err(error),
                }
            }
        }
    }

    /// A fresh token after Graph refused `stale` with a 401: one renewal (`renew`, from what
    /// is cached) however many workers report the same stale token; the others get its token.
    pub(super) async fn refresh<F>(
        &self,
        stale: &Arc<SecretString>,
        renew: impl FnOnce(Option<T>) -> F,
    ) -> Result<Arc<SecretString>, AuthError>
    where
        F: Future<Output = Result<T, AuthError>>,
    {
        let _fetching = self.fetching.lock().await;
        let cached = self.cached();
        if let Some(cached) = &cached
            && !Arc::ptr_eq(&cached.held().token, stale)
            && Instant::now() < cached.held().usable_until
        {
            // Another worker already renewed it.
            return Ok(cached.held().token.clone());
        }
        let fresh = renew(cached).await?;
        Ok(self.keep(fresh))
    }

    fn keep(&self, fresh: T) -> Arc<SecretString> {
        let token = fresh.held().token.clone();
        self.store(Some(fresh));
        token
    }
}

impl AppTokens {
    pub(super) fn new(fetcher: Fetcher) -> AppTokens {
        AppTokens {
            fetcher,
            flight: SingleFlight::new(),
        }
    }

    pub(super) async fn current(&self) -> Result<Arc<SecretString>, AuthError> {
        self.flight.current(|_| self.fetch()).await
    }

    pub(super) async fn refresh(
        &self,
        stale: &Arc<SecretString>,
    ) -> Result<Arc<SecretString>, AuthError> {
        self.flight
            .refresh(stale, |_| async {
                // Graph refused the cached token: forget it, so that if no new one can be had
                // the next row stops the run (exit 4) instead of sending the refused token again.
                self.flight.store(None);
                self.fetch().await
            })
            .await
    }

    /// Asks the token endpoint, retrying a busy or unreachable one as the fetcher's policy
    /// ([`TOKEN_RETRY`]) allows, through the one attempt driver.
    async fn fetch(&self) -> Result<Cached, AuthError> {
        let policy = self.fetcher.policy();
        unpaced(
            &mut TokenRequest {
                fetcher: &self.fetcher,
            },
            &policy,
        )
        .await
    }
}

/// Runs a request to a token endpoint (a token or a sign-in request) through the attempt
/// driver: no pacing, no token of its own, and no stop but its caller dropping it.
pub(crate) async fn unpaced<R>(
    request: &mut R,
    policy: &RetryPolicy,
) -> Result<R::Answer, AuthError>
where
    R: Request<Token = (), Error = AuthError, TokenError = Infallible>,
{
    let ended = Attempts {
        policy,
        admission: &Unpaced,
        stop: None,
    }
    .run(request)
    .await;
    match ended {
        Ended::Answered(answer) => Ok(answer),
        Ended::Failed(error, _) => Err(error),
        Ended::NoToken { error, .. } | Ended::RefreshRefused { refusal: error, .. } => {
            match error {}
        }
        // Neither comes without a stop or a `prepare`; were one to, the last error says why.
        Ended::Stopped { last } | Ended::Unprepared { last, .. } => {
            Err(last.unwrap_or_else(|| {
                AuthError::Client("the request to the token endpoint was stopped".to_owned())
            }))
        }
    }
}

/// Logs a token endpoint's failed attempt that is tried again; `what` names the request.
pub(crate) fn warn_retrying(event: Retrying<'_, AuthError>, what: &'static str) {
    let (error, attempt, wait) = match event {
        Retrying::Throttled {
            error,
            attempt,
            pause,
            again: true,
            ..
        } => (error, attempt, pause),
        Retrying::Backoff {
            error,
            attempt,
            wait,
        } => (error, attempt, wait),
        Retrying::Throttled { .. } | Retrying::Refreshed { .. } => return,
    };
    warn!(error = %error, attempt, wait_ms = wait.as_millis() as u64, "{what} failed; retrying");
}

/// One token request, as the attempt driver sends it: no token of its own, and no pacing.
struct TokenRequest<'a> {
    fetcher: &'a Fetcher,
}

impl Request for TokenRequest<'_> {
    type Token = ();
    type Answer = Cached;
    type Error = AuthError;
    type TokenError = Infallible;

    async fn token(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn send(&mut self, (): &(), attempt: u32) -> Result<Cached, Failure<AuthError>> {
        let asked_at = Instant::now();
        debug!(url = %self.fetcher.target(), attempt, "asking for an access token");
        match self.fetcher.request_once().await {
            Attempt::Issued { token, lifetime } => {
                debug!(lifetime_s = lifetime.as_secs(), "got an access token");
                Ok(Cached::new(token, lifetime, asked_at))
            }
            Attempt::Final(error) => Err(Failure::Final(error)),
            Attempt::Transient(error, kind) => Err(Failure::Retryable(error, kind)),
        }
    }

    fn retrying(&mut self, event: Retrying<'_, AuthError>) {
        warn_retrying(event, "token request");
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CredentialSources, TokenEndpoint, Tokens};
    use super::*;
    use crate::mock::{MockConfig, MockServer};

    #[test]
    fn the_renewal_margin_scales_with_the_lifetime() {
        assert_eq!(
            renewal_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(600)),
            Duration::from_secs(150)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(4500)),
            Duration::from_secs(300)
        );
    }

    async fn mock_tokens(lifetime: Duration) -> (MockServer, Tokens) {
        let mock = MockServer::start(MockConfig {
            token_lifetime: lifetime,
            client_id: Some("app".into()),
            client_secret: Some("right".into()),
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url()).unwrap();
        let tokens = Tokens::from_sources(
            CredentialSources {
                client_secret: Some(SecretString::from("right")),
                tenant_id: Some("tenant".into()),
                client_id: Some("app".into()),
                ..CredentialSources::default()
            },
            &endpoint,
            Duration::from_secs(5),
        )
        .unwrap();
        (mock, tokens)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiting_workers_cause_one_token_request() {
        let (mock, tokens) = mock_tokens(Duration::from_secs(3599)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let tokens = tokens.clone();
            tasks.spawn(async move { tokens.current().await.unwrap() });
        }
        let mut seen = Vec::new();
        while let Some(token) = tasks.join_next().await {
            seen.push(token.unwrap());
        }
        assert!(seen.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert_eq!(mock.stats().token_requests, 1);

        // Sixteen workers report the same stale token: one renewal, and all get the new token.
        let stale = seen[0].clone();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (tokens, stale) = (tokens.clone(), stale.clone());
            tasks.spawn(async move { tokens.refresh(&stale).await.unwrap() });
        }
        let mut renewed = Vec::new();
        while let Some(token) = tasks.join_next().await {
            renewed.push(token.unwrap());
        }
        assert!(renewed.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
        assert!(!Arc::ptr_eq(&renewed[0], &stale));
        assert_eq!(mock.stats().token_requests, 2);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn tokens_are_renewed_ahead_of_expiry() {
        let (mock, tokens) = mock_tokens(Duration::from_secs(2)).await;
        let first = tokens.current().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(Arc::ptr_eq(&first, &tokens.current().await.unwrap()));
        // Past 1.5 s (2 s less a quarter): renewed before Graph would refuse it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let second = tokens.current().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(mock.stats().token_requests, 2);
        mock.shutdown().await;
    }
}
