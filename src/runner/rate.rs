//! Pacing: the shared governor limiter every request waits for, and the throttle gate that holds
//! every worker back while Graph's `Retry-After` window is open.
//!
//! The gate lives outside governor because governor has no "pause until" (research/rust-deps.md
//! section 1.2). It only ever extends: a later 429 can lengthen the pause, a success never ends
//! it early. When the pause ends, workers queue on the limiter again, so they resume paced.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::time::Instant;
use tracing::info;

use crate::units::Rate;

/// How the adaptive rate moves (SPEC section 4, issue 6). When Graph allows less than `--rate`,
/// each throttle event (a 429 for a request sent at the current rate) cuts the rate to
/// [`DECREASE`] of itself; each second without one raises it, quickly ([`FAST_RISE`]) while it is
/// well under the rate that was last throttled and gently ([`PROBE_RISE`]) near it, never past
/// `--rate`. A batch against an unknown limit so settles just under it instead of hitting it
/// every second.
pub const DECREASE: f64 = 0.7;
pub const FAST_RISE: f64 = 0.10;
pub const PROBE_RISE: f64 = 0.02;
/// The slowest the adaptive rate goes: one request every ten seconds, or a tenth of `--rate`
/// when that is slower still, so the floor never lies above `--rate` (issue 10).
const FLOOR_PER_SECOND: f64 = 0.1;
/// The longest pause the next rise waits out: a `Retry-After` of years must not freeze the
/// adaptive rate for good (issue 10).
const MAX_RISE_DELAY: Duration = Duration::from_secs(3600);
/// How often the rate may rise.
const RISE_EVERY: Duration = Duration::from_secs(1);

/// One governor limiter at a fixed rate; replaced whole when the rate changes (governor cannot
/// change a quota in place: boinkor-net/governor#273).
struct Pace {
    limiter: DefaultDirectRateLimiter,
    per_second: f64,
    jitter: Duration,
    /// Bumped on every change, so a 429 can be traced to the rate its request was sent at.
    epoch: u64,
}

impl Pace {
    fn new(per_second: f64, burst: NonZeroU32, epoch: u64) -> Pace {
        let interval = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("a non-zero interval makes a quota")
            .allow_burst(burst);
        Pace {
            limiter: RateLimiter::direct(quota),
            per_second,
            // A little jitter so waiters that governor wakes together don't all retry `check()`
            // at the same instant (governor's own advice). Kept to a tenth of the interval: with
            // burst 1 every late wake-up loses its slot for good, and 2 ms of jitter at 200/s
            // cost 4% of the rate in the accuracy bench.
            jitter: (interval / 10).min(Duration::from_millis(2)),
            epoch,
        }
    }
}

/// Which rate a request was admitted at: pass it back with [`Limiter::throttled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    epoch: u64,
}

/// The shared, adaptive limiter: at most `ceiling` (`--rate`) with bursts of at most `burst`.
pub struct Limiter {
    pace: RwLock<Arc<Pace>>,
    ceiling: f64,
    burst: NonZeroU32,
    origin: Instant,
    /// When the rate may next rise (µs since `origin`); `u64::MAX` while at the ceiling.
    next_rise_us: AtomicU64,
    /// The rate at the last throttle event, per second (`f64` bits); 0 before any.
    throttled_at: AtomicU64,
    changes: Mutex<()>,
}

impl Limiter {
    pub fn new(rate: Rate, burst: NonZeroU32) -> Limiter {
        let ceiling = rate.per_second_f64();
        Limiter {
            pace: RwLock::new(Arc::new(Pace::new(ceiling, burst, 0))),
            ceiling,
            burst,
            origin: Instant::now(),
            next_rise_us: AtomicU64::new(u64::MAX),
            throttled_at: AtomicU64::new(0),
            changes: Mutex::new(()),
        }
    }

    fn current(&self) -> Arc<Pace> {
        self.pace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The rate now, per second.
    pub fn per_second(&self) -> f64 {
        self.current().per_second
    }

    /// Spends every cell that is ready now, so that what follows is paced rather than a burst.
    /// Called when a throttle pause ends: during the pause the bucket refilled to `burst`, and
    /// letting that burst out at once is what re-provokes the 429.
    pub fn drain(&self) {
        let pace = self.current();
        while pace.limiter.check().is_ok() {}
    }

    /// Waits for a cell at the current rate. A worker that was already waiting when the rate
    /// changed waits again at the new one, so a change takes effect at once rather than after
    /// every queued worker has gone through at the old rate.
    pub async fn until_ready(&self) -> Admission {
        loop {
            let pace = self.current();
            pace.limiter
                .until_ready_with_jitter(Jitter::up_to(pace.jitter))
                .await;
            if self.current().epoch == pace.epoch {
                return Admission { epoch: pace.epoch };
            }
        }
    }

    /// Graph throttled a request admitted at `admission` and asked for a pause of `pause`. Lowers
    /// the rate once per throttle event (requests that were already in flight at the old rate do
    /// not lower it again); the next rise comes a second after the pause ends.
    pub fn throttled(&self, admission: Admission, pause: Duration) {
        let _change = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        let pace = self.current();
        if pace.epoch != admission.epoch {
            return;
        }
        let floor = FLOOR_PER_SECOND.min(self.ceiling / 10.0);
        let lowered = (pace.per_second * DECREASE).max(floor);
        self.throttled_at
            .store(pace.per_second.to_bits(), Ordering::Relaxed);
        self.replace(&pace, lowered, "lowered after a 429");
        let pause_us = u64::try_from(pause.min(MAX_RISE_DELAY).as_micros()).unwrap_or(u64::MAX);
        self.next_rise_us.fetch_max(
            self.now_us()
                .saturating_add(pause_us)
                .saturating_add(RISE_EVERY.as_micros() as u64),
            Ordering::Relaxed,
        );
    }

    /// A request succeeded: once a second, let the rate rise towards the ceiling. Cheap when
    /// nothing is due (one atomic load), as it runs for every row.
    pub fn succeeded(&self) {
        let now = self.now_us();
        if now < self.next_rise_us.load(Ordering::Relaxed) {
            return;
        }
        let _change = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if now < self.next_rise_us.load(Ordering::Relaxed) {
            return;
        }
        let pace = self.current();
        let throttled_at = f64::from_bits(self.throttled_at.load(Ordering::Relaxed));
        let step = if pace.per_second < 0.9 * throttled_at {
            FAST_RISE
        } else {
            PROBE_RISE
        };
        let raised = (pace.per_second * (1.0 + step))
            .max(pace.per_second + 0.1)
            .min(self.ceiling);
        self.replace(&pace, raised, "raised: no 429 for a second");
    }

    fn replace(&self, old: &Pace, per_second: f64, why: &'static str) {
        let pace = Arc::new(Pace::new(per_second, self.burst, old.epoch + 1));
        // A new limiter starts with a full bucket; spend it, so a change never releases a burst.
        while pace.limiter.check().is_ok() {}
        *self.pace.write().unwrap_or_else(PoisonError::into_inner) = pace;
        let next = if per_second >= self.ceiling {
            u64::MAX
        } else {
            self.now_us().saturating_add(RISE_EVERY.as_micros() as u64)
        };
        self.next_rise_us.store(next, Ordering::Relaxed);
        info!(
            rate_per_second = (per_second * 100.0).round() / 100.0,
            ceiling_per_second = self.ceiling,
            "adaptive rate {why}"
        );
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Holds every worker while a 429's `Retry-After` window is open.
pub struct ThrottleGate {
    origin: Instant,
    /// End of the current pause, in microseconds since `origin`.
    paused_until_us: AtomicU64,
    /// Total time spent paused, in microseconds (overlapping windows counted once).
    paused_total_us: AtomicU64,
    pauses: AtomicU64,
    /// The pause count when the limiter was last drained; see [`ThrottleGate::take_resume`].
    resumed: AtomicU64,
}

impl Default for ThrottleGate {
    fn default() -> Self {
        ThrottleGate::new()
    }
}

impl ThrottleGate {
    pub fn new() -> ThrottleGate {
        ThrottleGate {
            origin: Instant::now(),
            paused_until_us: AtomicU64::new(0),
            paused_total_us: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Closes the gate for `wait` from now, unless it is already closed for longer.
    /// Returns true when this call extended the pause.
    pub fn pause_for(&self, wait: Duration) -> bool {
        let now = self.now_us();
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        let until = now.saturating_add(wait_us);
        let previous = self.paused_until_us.fetch_max(until, Ordering::AcqRel);
        if until <= previous {
            return false;
        }
        self.pauses.fetch_add(1, Ordering::Relaxed);
        self.paused_total_us
            .fetch_add(until - previous.max(now), Ordering::Relaxed);
        true
    }

    /// How long the gate stays closed, if it is closed.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.paused_until_us.load(Ordering::Acquire);
        let now = self.now_us();
        (until > now).then(|| Duration::from_micros(until - now))
    }

    /// Returns once the gate is open (at once if it is).
    pub async fn wait_open(&self) {
        loop {
            let until = self.paused_until_us.load(Ordering::Acquire);
            if until <= self.now_us() {
                return;
            }
            tokio::time::sleep_until(self.origin + Duration::from_micros(until)).await;
        }
    }

    /// True for exactly one caller after each pause: the one that should drain the limiter so
    /// that requests resume paced.
    pub fn take_resume(&self) -> bool {
        let pauses = self.pauses.load(Ordering::Acquire);
        self.resumed.fetch_max(pauses, Ordering::AcqRel) < pauses
    }

    /// Total time the gate has been closed so far.
    pub fn paused_total(&self) -> Duration {
        let total = Duration::from_micros(self.paused_total_us.load(Ordering::Relaxed));
        // A pause still running has not all been spent yet.
        total.saturating_sub(self.remaining().unwrap_or_default())
    }

    /// How many times a 429 opened or extended a pause.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_rate;

    #[tokio::test(start_paused = true)]
    async fn a_later_429_only_extends_the_pause() {
        let gate = ThrottleGate::new();
        assert!(gate.pause_for(Duration::from_secs(5)));
        assert!(
            !gate.pause_for(Duration::from_secs(2)),
            "a shorter wait must not shorten it"
        );
        assert_eq!(gate.remaining(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(gate.pause_for(Duration::from_secs(6)));
        assert_eq!(gate.remaining(), Some(Duration::from_secs(6)));
        assert_eq!(gate.pauses(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_released_only_when_the_window_ends() {
        let gate = std::sync::Arc::new(ThrottleGate::new());
        gate.pause_for(Duration::from_millis(1500));
        let start = Instant::now();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.wait_open().await })
        };
        // Extended while someone is already waiting: the waiter must notice.
        tokio::time::advance(Duration::from_millis(1000)).await;
        gate.pause_for(Duration::from_millis(2000));
        waiter.await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(3000),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(gate.paused_total(), Duration::from_millis(3000));
    }

    #[tokio::test(start_paused = true)]
    async fn one_caller_resumes_after_each_pause() {
        let gate = ThrottleGate::new();
        assert!(!gate.take_resume(), "no pause yet");
        gate.pause_for(Duration::from_secs(1));
        assert!(gate.take_resume());
        assert!(!gate.take_resume(), "only once per pause");
        gate.pause_for(Duration::from_secs(2));
        assert!(gate.take_resume());
    }

    #[test]
    fn draining_spends_the_burst() {
        let limiter = Limiter::new(
            Rate::per_second(NonZeroU32::new(1).unwrap()),
            NonZeroU32::new(5).unwrap(),
        );
        assert!(
            limiter.current().limiter.check().is_ok(),
            "a fresh limiter has its burst"
        );
        limiter.drain();
        assert!(
            limiter.current().limiter.check().is_err(),
            "nothing left right after draining"
        );
    }

    fn assert_rate(limiter: &Limiter, expected: f64, why: &str) {
        let actual = limiter.per_second();
        assert!(
            (actual - expected).abs() < 1e-6,
            "{actual} != {expected}: {why}"
        );
    }

    #[tokio::test]
    async fn a_429_lowers_the_rate_once_per_event() {
        let limiter = Limiter::new(parse_rate("200/s").unwrap(), NonZeroU32::MIN);
        let admitted = limiter.until_ready().await;
        let also_in_flight = limiter.until_ready().await;
        limiter.throttled(admitted, Duration::ZERO);
        assert_rate(&limiter, 140.0, "cut by DECREASE");
        limiter.throttled(also_in_flight, Duration::ZERO);
        assert_rate(&limiter, 140.0, "same event: sent at the old rate");
        let next = limiter.until_ready().await;
        limiter.throttled(next, Duration::ZERO);
        assert_rate(&limiter, 98.0, "a new event at the new rate");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_climbs_back_to_the_ceiling_and_no_further() {
        let limiter = Limiter::new(parse_rate("100/s").unwrap(), NonZeroU32::MIN);
        limiter.succeeded();
        assert_rate(&limiter, 100.0, "at the ceiling nothing changes");
        limiter.throttled(limiter.until_ready().await, Duration::ZERO); // 70/s, last throttled at 100
        limiter.throttled(limiter.until_ready().await, Duration::ZERO); // 49/s, last throttled at 70
        limiter.succeeded();
        assert_rate(&limiter, 49.0, "not within a second of the change");
        // Fast while well under the last throttled rate (0.9 x 70 = 63), then gently.
        for expected in [53.9, 59.29, 65.219, 66.52338] {
            tokio::time::advance(RISE_EVERY).await;
            limiter.succeeded();
            assert_rate(&limiter, expected, "rising");
        }
        for _ in 0..200 {
            tokio::time::advance(RISE_EVERY).await;
            limiter.succeeded();
        }
        assert_rate(&limiter, 100.0, "--rate stays the ceiling");
    }

    #[tokio::test]
    async fn issue_10_the_floor_never_lies_above_the_rate() {
        let limiter = Limiter::new(parse_rate("1/min").unwrap(), NonZeroU32::MIN);
        limiter.throttled(Admission { epoch: 0 }, Duration::ZERO);
        let per_minute = limiter.per_second() * 60.0;
        assert!(per_minute < 1.0, "{per_minute}/min after a 429 at 1/min");
        for _ in 0..50 {
            let epoch = limiter.current().epoch;
            limiter.throttled(Admission { epoch }, Duration::ZERO);
        }
        assert!(
            (limiter.per_second() - 1.0 / 600.0).abs() < 1e-9,
            "a tenth of the rate"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn issue_10_a_huge_retry_after_does_not_freeze_the_rise() {
        let limiter = Limiter::new(parse_rate("100/s").unwrap(), NonZeroU32::MIN);
        limiter.throttled(Admission { epoch: 0 }, Duration::from_secs(u64::MAX / 4));
        tokio::time::advance(MAX_RISE_DELAY + RISE_EVERY * 2).await;
        limiter.succeeded();
        assert!(limiter.per_second() > 70.0, "{}", limiter.per_second());
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_does_not_wait() {
        let gate = ThrottleGate::new();
        let start = Instant::now();
        gate.wait_open().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(gate.remaining(), None);
    }
}
