//! The retry policy as pure decisions: what to do after a failed attempt, how long a
//! `Retry-After` asks us to wait, and exponential backoff with full jitter. No sleeping here: the
//! attempt driver ([`crate::attempt`]) does the waiting, so these functions are tested without a
//! clock.

use std::time::{Duration, SystemTime};

/// How one attempt failed, as far as retrying is concerned (a success is never asked about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptKind {
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

/// Where a row stands when one of its attempts has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowSoFar {
    /// The attempt that just ended, from 1.
    pub attempt: u32,
    /// Time already spent waiting between this row's attempts.
    pub waited: Duration,
    /// Whether the row already had its one fresh token after a 401.
    pub refreshed: bool,
}

/// What follows an attempt: what this row does next, and whether every worker must pause first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub next: Next,
    /// A 429's window: every request waits it out, whatever this row does next (Graph throttles
    /// per app and tenant; issue 10).
    pub pause_all: Option<Duration>,
}

/// What this row does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A 401 with its refresh left: get a fresh token and try again at once.
    RefreshToken,
    /// Wait this long, then try again.
    Retry { wait: Duration },
    /// Final for this row; the run goes on.
    GiveUp(GiveUp),
    /// Final for this row, and the run starts no more rows.
    StopRun(StopCause),
}

/// Why a row is not tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The answer is final (400, 404, a second 401, ...): trying again cannot help.
    Final,
    /// `--max-retries` retries were made.
    RetriesSpent { attempts: u32 },
    /// Waiting `wait` more would pass `--max-retry-wait`.
    WaitBudgetSpent { wait: Duration },
}

/// Why the whole run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// 403: the app lacks the permission or the user the role; every row would be refused.
    Forbidden,
    /// Graph asked for a wait longer than `--max-retry-wait`: every row would have to wait past
    /// the bound the operator set.
    ThrottledPastBudget { wait: Duration },
}

/// Decides what follows a failed attempt. `jitter` is a number in `[0, 1)`, passed in so the decision
/// stays pure; `now` reads an HTTP-date `Retry-After`.
pub fn decide(
    kind: &AttemptKind,
    row: &RowSoFar,
    policy: &RetryPolicy,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    let told_or_backoff = |retry_after: &Option<String>| {
        retry_after
            .as_deref()
            .and_then(|value| parse_retry_after(value, now))
            .unwrap_or_else(|| backoff(row.attempt, policy, jitter))
    };
    let (wait, pause_all) = match kind {
        AttemptKind::Status { status: 401, .. } if !row.refreshed => {
            return Decision::only(Next::RefreshToken);
        }
        AttemptKind::Status { status: 403, .. } => {
            return Decision::only(Next::StopRun(StopCause::Forbidden));
        }
        AttemptKind::Status {
            status: 429,
            retry_after,
        } => {
            let wait = told_or_backoff(retry_after);
            (wait, Some(wait))
        }
        AttemptKind::Status {
            status: 503 | 504,
            retry_after,
        } => (told_or_backoff(retry_after), None),
        AttemptKind::Timeout | AttemptKind::Connection => {
            (backoff(row.attempt, policy, jitter), None)
        }
        AttemptKind::Status { .. } | AttemptKind::Unsendable => {
            return Decision::only(Next::GiveUp(GiveUp::Final));
        }
    };
    let next = if pause_all.is_some() && wait > policy.max_wait {
        Next::StopRun(StopCause::ThrottledPastBudget { wait })
    } else if row.attempt > policy.max_retries {
        Next::GiveUp(GiveUp::RetriesSpent {
            attempts: row.attempt,
        })
    } else if row.waited.saturating_add(wait) > policy.max_wait {
        Next::GiveUp(GiveUp::WaitBudgetSpent { wait })
    } else {
        Next::Retry { wait }
    };
    Decision { next, pause_all }
}

impl Decision {
    fn only(next: Next) -> Decision {
        Decision {
            next,
            pause_all: None,
        }
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

    /// One row per kind of attempt result: what the row does next and whether every worker
    /// pauses. Jitter 1.0 makes backoff its ceiling: 2 s, then 4 s, ...
    #[test]
    fn the_policy_for_every_attempt_result() {
        let policy = RetryPolicy {
            max_retries: 3,
            max_wait: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let row = |attempt, waited_s, refreshed| RowSoFar {
            attempt,
            waited: Duration::from_secs(waited_s),
            refreshed,
        };
        let secs = Duration::from_secs;
        let retry = |s| Next::Retry { wait: secs(s) };
        let cases: Vec<(&str, AttemptKind, RowSoFar, Next, Option<Duration>)> = vec![
            (
                "429 told 3 s",
                status(429, Some("3")),
                row(1, 0, false),
                retry(3),
                Some(secs(3)),
            ),
            (
                "429 told nothing",
                status(429, None),
                row(1, 0, false),
                retry(2),
                Some(secs(2)),
            ),
            (
                "429 past the wait budget",
                status(429, Some("61")),
                row(1, 0, false),
                Next::StopRun(StopCause::ThrottledPastBudget { wait: secs(61) }),
                Some(secs(61)),
            ),
            (
                "429 with the budget nearly spent",
                status(429, Some("30")),
                row(2, 40, false),
                Next::GiveUp(GiveUp::WaitBudgetSpent { wait: secs(30) }),
                Some(secs(30)),
            ),
            (
                "429 after the last retry",
                status(429, Some("1")),
                row(4, 0, false),
                Next::GiveUp(GiveUp::RetriesSpent { attempts: 4 }),
                Some(secs(1)),
            ),
            (
                "503 told 1.5 s",
                status(503, Some("1.5")),
                row(1, 0, false),
                Next::Retry {
                    wait: Duration::from_millis(1500),
                },
                None,
            ),
            ("504", status(504, None), row(2, 0, false), retry(4), None),
            (
                "timeout",
                AttemptKind::Timeout,
                row(1, 0, false),
                retry(2),
                None,
            ),
            (
                "connection error",
                AttemptKind::Connection,
                row(3, 0, false),
                retry(8),
                None,
            ),
            (
                "5xx after the last retry",
                status(503, None),
                row(4, 0, false),
                Next::GiveUp(GiveUp::RetriesSpent { attempts: 4 }),
                None,
            ),
            (
                "5xx past the wait budget",
                status(503, Some("30")),
                row(2, 31, false),
                Next::GiveUp(GiveUp::WaitBudgetSpent { wait: secs(30) }),
                None,
            ),
            (
                "401 with a refresh left",
                status(401, None),
                row(1, 0, false),
                Next::RefreshToken,
                None,
            ),
            (
                "401 after the refresh",
                status(401, None),
                row(2, 0, true),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
            (
                "403",
                status(403, None),
                row(1, 0, false),
                Next::StopRun(StopCause::Forbidden),
                None,
            ),
            (
                "400",
                status(400, Some("1")),
                row(1, 0, false),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
            (
                "404",
                status(404, None),
                row(1, 0, false),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
            (
                "409",
                status(409, None),
                row(1, 0, false),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
            (
                "500",
                status(500, None),
                row(1, 0, false),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
            (
                "not sendable",
                AttemptKind::Unsendable,
                row(1, 0, false),
                Next::GiveUp(GiveUp::Final),
                None,
            ),
        ];
        for (name, kind, so_far, next, pause_all) in cases {
            let decision = decide(&kind, &so_far, &policy, NOW, 1.0);
            assert_eq!(decision, Decision { next, pause_all }, "{name}");
        }
    }

    #[test]
    fn an_unreadable_retry_after_falls_back_to_backoff_with_jitter() {
        let policy = RetryPolicy::default();
        let first = RowSoFar {
            attempt: 1,
            ..RowSoFar::default()
        };
        assert_eq!(
            decide(&status(429, Some("garbage")), &first, &policy, NOW, 0.25).next,
            Next::Retry {
                wait: Duration::from_millis(500)
            }
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
