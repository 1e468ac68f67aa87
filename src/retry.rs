//! The retry policy as pure decisions: what to do after one attempt, how long a `Retry-After`
//! asks us to wait, and exponential backoff with full jitter. No sleeping here: the worker loop
//! does the waiting, so these functions are tested without a clock.

use std::time::{Duration, SystemTime};

/// What one attempt came to, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptKind {
    /// A 2xx.
    Success,
    /// An HTTP error status, with the `Retry-After` header's raw value if any.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// The request timed out (`--timeout`).
    Timeout,
    /// The connection could not be made or broke before a response arrived.
    Connection,
    /// The request could not be sent at all (it would not leave as built): final.
    Unsendable,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Done: record the success.
    Succeeded,
    /// Graph throttled us: every worker pauses for `wait`, then this row is tried again.
    Throttled { wait: Duration },
    /// A transient failure: this row waits `wait` and is tried again.
    Retry { wait: Duration },
    /// Final for this row; the run goes on.
    Fail,
    /// Final for this row, and the run must stop (403: the app lacks the permission or role).
    StopRun,
}

/// The bounds of retrying one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--max-retries`).
    pub max_retries: u32,
    /// First backoff ceiling; each retry doubles it.
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// The most one row may spend waiting between its attempts (`--max-retry-wait`).
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 10,
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(60),
            max_wait: Duration::from_secs(15 * 60),
        }
    }
}

/// Decides after attempt number `attempt` (1 for the first). `jitter` is a number in `[0, 1)`,
/// passed in so the decision stays pure.
pub fn decide(
    kind: &AttemptKind,
    attempt: u32,
    policy: &RetryPolicy,
    now: SystemTime,
    jitter: f64,
) -> RetryAction {
    let retryable_wait = |retry_after: Option<&str>| {
        retry_after
            .and_then(|value| parse_retry_after(value, now))
            .unwrap_or_else(|| backoff(attempt, policy, jitter))
    };
    let action = match kind {
        AttemptKind::Success => return RetryAction::Succeeded,
        AttemptKind::Status { status: 403, .. } => return RetryAction::StopRun,
        AttemptKind::Status {
            status: 429,
            retry_after,
        } => RetryAction::Throttled {
            wait: retryable_wait(retry_after.as_deref()),
        },
        AttemptKind::Status {
            status: 503 | 504,
            retry_after,
        } => RetryAction::Retry {
            wait: retryable_wait(retry_after.as_deref()),
        },
        AttemptKind::Timeout | AttemptKind::Connection => RetryAction::Retry {
            wait: backoff(attempt, policy, jitter),
        },
        AttemptKind::Status { .. } | AttemptKind::Unsendable => return RetryAction::Fail,
    };
    if attempt > policy.max_retries {
        RetryAction::Fail
    } else {
        action
    }
}

/// Full jitter: a uniform wait in `[0, min(cap, base * 2^(attempt-1))]`, so many workers that
/// failed together do not retry together.
pub fn backoff(attempt: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << doublings)
        .min(policy.backoff_cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The longest `Retry-After` believed: hours of waiting are already absurd (the run stops past
/// `--max-retry-wait`); the cap keeps every sum of waits far from overflow.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1_000_000_000);

/// Reads `Retry-After` as Graph sends it: integer seconds, decimal seconds (`0.249`, rounded up
/// to the next millisecond so we never wait less than told), or an HTTP-date (a past date means
/// now). Anything else is `None`, and the caller falls back to backoff.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let seconds: f64 = value.parse().ok()?;
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        let millis = (seconds * 1000.0)
            .ceil()
            .min(MAX_RETRY_AFTER.as_millis() as f64);
        return Some(Duration::from_millis(millis as u64));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<&str>) -> AttemptKind {
        AttemptKind::Status {
            status,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    const NOW: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn retry_after_reads_integers_decimals_and_dates() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 19:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after(" 0.249 ", now),
            Some(Duration::from_millis(249))
        );
        assert_eq!(
            parse_retry_after("2.1281", now),
            Some(Duration::from_millis(2129))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 19:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Thu, 26 Nov 2026 18:59:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "soon", "-1", "NaN", "inf", "1e999", "10s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn throttling_waits_what_graph_says() {
        let policy = RetryPolicy::default();
        assert_eq!(
            decide(&status(429, Some("3")), 1, &policy, NOW, 0.5),
            RetryAction::Throttled {
                wait: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn throttling_without_retry_after_backs_off_with_jitter() {
        let policy = RetryPolicy::default();
        let first = decide(&status(429, None), 1, &policy, NOW, 1.0);
        let third = decide(&status(429, None), 3, &policy, NOW, 1.0);
        assert_eq!(
            first,
            RetryAction::Throttled {
                wait: Duration::from_secs(2)
            }
        );
        assert_eq!(
            third,
            RetryAction::Throttled {
                wait: Duration::from_secs(8)
            }
        );
        assert_eq!(
            decide(&status(429, Some("garbage")), 1, &policy, NOW, 0.25),
            RetryAction::Throttled {
                wait: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn transient_failures_retry_and_honour_retry_after() {
        let policy = RetryPolicy::default();
        assert_eq!(
            decide(&status(503, Some("1.5")), 1, &policy, NOW, 0.0),
            RetryAction::Retry {
                wait: Duration::from_millis(1500)
            }
        );
        assert!(matches!(
            decide(&status(504, None), 2, &policy, NOW, 0.9),
            RetryAction::Retry { .. }
        ));
        assert!(matches!(
            decide(&AttemptKind::Timeout, 1, &policy, NOW, 0.9),
            RetryAction::Retry { .. }
        ));
        assert!(matches!(
            decide(&AttemptKind::Connection, 1, &policy, NOW, 0.9),
            RetryAction::Retry { .. }
        ));
    }

    #[test]
    fn client_errors_are_final_and_403_stops_the_run() {
        let policy = RetryPolicy::default();
        for code in [400, 401, 404, 409, 500] {
            assert_eq!(
                decide(&status(code, Some("1")), 1, &policy, NOW, 0.5),
                RetryAction::Fail,
                "{code}"
            );
        }
        assert_eq!(
            decide(&status(403, None), 1, &policy, NOW, 0.5),
            RetryAction::StopRun
        );
        assert_eq!(
            decide(&AttemptKind::Success, 7, &policy, NOW, 0.5),
            RetryAction::Succeeded
        );
    }

    #[test]
    fn gives_up_after_max_retries() {
        let policy = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            decide(&status(503, None), 2, &policy, NOW, 0.5),
            RetryAction::Retry { .. }
        ));
        assert_eq!(
            decide(&status(503, None), 3, &policy, NOW, 0.5),
            RetryAction::Fail
        );
        assert_eq!(
            decide(&status(429, Some("1")), 3, &policy, NOW, 0.5),
            RetryAction::Fail
        );
    }

    #[test]
    fn backoff_grows_to_max() {
        let policy = RetryPolicy {
            max_retries: 50,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            ..RetryPolicy::default()
        };
        let ceilings: Vec<u64> = (1..=7)
            .map(|n| backoff(n, &policy, 1.0).as_secs())
            .collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(40, &policy, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(3, &policy, 0.0), Duration::ZERO);
    }
}
