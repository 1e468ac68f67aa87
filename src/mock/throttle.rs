//! The per-token rate limit of the mock: a GCRA (generic cell rate algorithm, the token bucket
//! written as one timestamp), the throttle windows told to each token with a 429, and the
//! `Retry-After` formatting that decides how long a told window lasts.
//!
//! Pure arithmetic on nanoseconds since the server started, so the decisions can be tested with
//! made-up instants; the locking lives in `state.rs`.

use std::time::{Duration, SystemTime};

use crate::units::Rate;

use super::RetryAfterFormat;

const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u128 = 1_000_000;

/// The bucket parameters: one request every `interval`, up to `burst` back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    interval_ns: u64,
    /// How far ahead of the schedule a token may run: `interval * (burst - 1)`.
    tolerance_ns: u64,
}

impl Gcra {
    pub(crate) fn new(rate: Rate, burst: u32) -> Gcra {
        let interval_ns = duration_ns(rate.interval()).max(1);
        Gcra {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }
}

/// What one token has been through: its place in the bucket schedule and the throttle window it
/// was last told about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TokenClock {
    /// Theoretical arrival time of the next request, in ns since server start.
    tat_ns: u64,
    /// End of the latest window told to this token with a 429 (0: never told).
    window_end_ns: u64,
    /// Whether the open window was told by the rate limit (and is enforced with more 429s) rather
    /// than by a scripted `http429-` scenario (which is only watched).
    window_enforced: bool,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it through. `inside_told_window`: it came while a watched (scenario) window was open.
    Admit { inside_told_window: bool },
    /// Over the limit: the bucket admits the next request after `wait`.
    Limit { wait: Duration },
    /// Sent while an enforced window was still open: answer 429 again with what remains.
    InsideWindow { remaining: Duration },
}

impl TokenClock {
    /// Judges a request arriving at `now_ns`. Admitting it uses up one place in the bucket;
    /// refusing it does not (a refused request does no work).
    pub(crate) fn judge(&mut self, gcra: Option<&Gcra>, now_ns: u64) -> Verdict {
        let window_open = now_ns < self.window_end_ns;
        if window_open && self.window_enforced {
            return Verdict::InsideWindow {
                remaining: Duration::from_nanos(self.window_end_ns - now_ns),
            };
        }
        if let Some(gcra) = gcra {
            let tat = self.tat_ns.max(now_ns);
            let earliest = tat.saturating_sub(gcra.tolerance_ns);
            if now_ns < earliest {
                return Verdict::Limit {
                    wait: Duration::from_nanos(earliest - now_ns),
                };
            }
            self.tat_ns = tat.saturating_add(gcra.interval_ns);
        }
        Verdict::Admit {
            inside_told_window: window_open,
        }
    }

    /// Remembers that the token was told to stay away until `end_ns`. Windows only grow: a second
    /// 429 inside an open window may round to a later end, never to an earlier one.
    pub(crate) fn tell_window(&mut self, now_ns: u64, end_ns: u64, enforced: bool) {
        if now_ns >= self.window_end_ns {
            self.window_enforced = enforced;
        } else {
            self.window_enforced |= enforced;
        }
        self.window_end_ns = self.window_end_ns.max(end_ns);
    }
}

/// A wait as sent in `Retry-After`, and the wait it actually tells the client after rounding up
/// (the told window is `[now, now + told]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ToldWait {
    pub(crate) header: String,
    pub(crate) told: Duration,
}

/// Formats `wait` for `Retry-After`, always rounding up so a client that obeys the header is
/// never early: whole seconds (at least 1), seconds with three decimals (at least 0.001), or an
/// HTTP-date at the next whole second after `wall_now + wait` (strictly after `wall_now`).
/// `wall_now` is the time since the Unix epoch.
pub(crate) fn tell(format: RetryAfterFormat, wait: Duration, wall_now: Duration) -> ToldWait {
    let wait_ns = wait.as_nanos();
    match format {
        RetryAfterFormat::Seconds => {
            let secs = wait_ns.div_ceil(NANOS_PER_SEC).max(1);
            ToldWait {
                header: secs.to_string(),
                told: nanos(secs * NANOS_PER_SEC),
            }
        }
        RetryAfterFormat::Decimal => {
            let millis = wait_ns.div_ceil(NANOS_PER_MILLI).max(1);
            ToldWait {
                header: format!("{}.{:03}", millis / 1000, millis % 1000),
                told: nanos(millis * NANOS_PER_MILLI),
            }
        }
        RetryAfterFormat::HttpDate => {
            let now_ns = wall_now.as_nanos();
            let mut secs = (now_ns + wait_ns).div_ceil(NANOS_PER_SEC);
            if secs * NANOS_PER_SEC <= now_ns {
                secs += 1;
            }
            let at = SystemTime::UNIX_EPOCH + nanos(secs * NANOS_PER_SEC);
            ToldWait {
                header: httpdate::fmt_http_date(at),
                told: nanos(secs * NANOS_PER_SEC - now_ns),
            }
        }
    }
}

/// Nanoseconds of `duration`, saturating (584 years is plenty for a test server).
pub(crate) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    const MS: u64 = 1_000_000;

    fn gcra(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(
            Rate::per_second(NonZeroU32::new(per_second).unwrap()),
            burst,
        )
    }

    #[test]
    fn seconds_round_up_and_are_at_least_one() {
        let now = Duration::from_secs(1_700_000_000);
        let told = tell(RetryAfterFormat::Seconds, Duration::from_millis(1), now);
        assert_eq!(told.header, "1");
        assert_eq!(told.told, Duration::from_secs(1));
        let told = tell(RetryAfterFormat::Seconds, Duration::from_millis(2001), now);
        assert_eq!(told.header, "3");
        assert_eq!(told.told, Duration::from_secs(3));
        assert_eq!(
            tell(RetryAfterFormat::Seconds, Duration::from_secs(2), now).header,
            "2"
        );
        assert_eq!(
            tell(RetryAfterFormat::Seconds, Duration::ZERO, now).header,
            "1"
        );
    }

    #[test]
    fn decimal_has_three_places_rounded_up() {
        let now = Duration::from_secs(1_700_000_000);
        let told = tell(
            RetryAfterFormat::Decimal,
            Duration::from_micros(249_001),
            now,
        );
        assert_eq!(told.header, "0.250");
        assert_eq!(told.told, Duration::from_millis(250));
        assert_eq!(
            tell(RetryAfterFormat::Decimal, Duration::from_nanos(1), now).header,
            "0.001"
        );
        assert_eq!(
            tell(RetryAfterFormat::Decimal, Duration::ZERO, now).header,
            "0.001"
        );
        assert_eq!(
            tell(
                RetryAfterFormat::Decimal,
                Duration::from_millis(12_345),
                now
            )
            .header,
            "12.345"
        );
    }

    #[test]
    fn http_date_rounds_up_to_the_next_whole_second() {
        // 2023-11-14T22:13:20.400Z
        let now = Duration::from_millis(1_700_000_000_400);
        let told = tell(RetryAfterFormat::HttpDate, Duration::from_millis(300), now);
        assert_eq!(told.header, "Tue, 14 Nov 2023 22:13:21 GMT");
        assert_eq!(told.told, Duration::from_millis(600));
        let parsed = httpdate::parse_http_date(&told.header).unwrap();
        assert_eq!(
            parsed,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_001)
        );
        // Exactly on a second boundary the date is that second.
        let told = tell(RetryAfterFormat::HttpDate, Duration::from_millis(600), now);
        assert_eq!(told.told, Duration::from_millis(600));
        // A zero wait on a whole second still points strictly into the future.
        let whole = Duration::from_secs(1_700_000_000);
        let told = tell(RetryAfterFormat::HttpDate, Duration::ZERO, whole);
        assert_eq!(told.told, Duration::from_secs(1));
    }

    #[test]
    fn admits_a_burst_then_limits_with_the_time_to_the_next_place() {
        let g = gcra(10, 3); // one every 100 ms, three back to back
        let mut clock = TokenClock::default();
        for _ in 0..3 {
            assert_eq!(
                clock.judge(Some(&g), 0),
                Verdict::Admit {
                    inside_told_window: false
                }
            );
        }
        assert_eq!(
            clock.judge(Some(&g), 0),
            Verdict::Limit {
                wait: Duration::from_millis(100)
            }
        );
        assert_eq!(
            clock.judge(Some(&g), 40 * MS),
            Verdict::Limit {
                wait: Duration::from_millis(60)
            }
        );
        assert!(matches!(
            clock.judge(Some(&g), 100 * MS),
            Verdict::Admit { .. }
        ));
    }

    #[test]
    fn burst_of_one_spaces_requests_by_the_interval() {
        let g = gcra(2, 1); // 500 ms apart
        let mut clock = TokenClock::default();
        assert!(matches!(clock.judge(Some(&g), 0), Verdict::Admit { .. }));
        assert_eq!(
            clock.judge(Some(&g), 499 * MS),
            Verdict::Limit {
                wait: Duration::from_millis(1)
            }
        );
        assert!(matches!(
            clock.judge(Some(&g), 500 * MS),
            Verdict::Admit { .. }
        ));
        // An idle token does not bank more than its burst.
        assert!(matches!(
            clock.judge(Some(&g), 10_000 * MS),
            Verdict::Admit { .. }
        ));
        assert!(matches!(
            clock.judge(Some(&g), 10_000 * MS),
            Verdict::Limit { .. }
        ));
    }

    #[test]
    fn an_enforced_window_refuses_until_it_ends_then_the_bucket_decides() {
        let g = gcra(1, 1);
        let mut clock = TokenClock::default();
        assert!(matches!(clock.judge(Some(&g), 0), Verdict::Admit { .. }));
        let Verdict::Limit { wait } = clock.judge(Some(&g), 200 * MS) else {
            panic!("second request within the interval must be limited");
        };
        assert_eq!(wait, Duration::from_millis(800));
        // Told "1" second: the window is [200 ms, 1200 ms], longer than the bucket's wait.
        clock.tell_window(200 * MS, 1200 * MS, true);
        assert_eq!(
            clock.judge(Some(&g), 1000 * MS),
            Verdict::InsideWindow {
                remaining: Duration::from_millis(200)
            }
        );
        assert_eq!(
            clock.judge(Some(&g), 1200 * MS),
            Verdict::Admit {
                inside_told_window: false
            }
        );
    }

    #[test]
    fn windows_never_shrink_and_watched_windows_only_mark() {
        let mut clock = TokenClock::default();
        clock.tell_window(0, 1000 * MS, false);
        assert_eq!(
            clock.judge(None, 500 * MS),
            Verdict::Admit {
                inside_told_window: true
            }
        );
        clock.tell_window(500 * MS, 800 * MS, true);
        // Still ends at 1000 ms, and is now enforced.
        assert_eq!(
            clock.judge(None, 900 * MS),
            Verdict::InsideWindow {
                remaining: Duration::from_millis(100)
            }
        );
        assert_eq!(
            clock.judge(None, 1000 * MS),
            Verdict::Admit {
                inside_told_window: false
            }
        );
        // A fresh watched window after an enforced one has closed is only watched.
        clock.tell_window(2000 * MS, 3000 * MS, false);
        assert_eq!(
            clock.judge(None, 2500 * MS),
            Verdict::Admit {
                inside_told_window: true
            }
        );
    }
}
