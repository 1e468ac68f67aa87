//! Pacing: the shared governor limiter every request waits for, and the throttle gate that holds
//! every worker back while Graph's `Retry-After` window is open.
//!
//! The gate lives outside governor because governor has no "pause until" (research/rust-deps.md
//! section 1.2). It only ever extends: a later 429 can lengthen the pause, a success never ends
//! it early. When the pause ends, workers queue on the limiter again, so they resume paced.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::units::Rate;

/// The shared limiter: `rate` with bursts of at most `burst`.
pub struct Limiter {
    inner: DefaultDirectRateLimiter,
    jitter: Duration,
}

impl Limiter {
    pub fn new(rate: Rate, burst: NonZeroU32) -> Limiter {
        let interval = rate.interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("a non-zero interval makes a quota")
            .allow_burst(burst);
        Limiter {
            inner: RateLimiter::direct(quota),
            // A little jitter so waiters that governor wakes together don't all retry `check()`
            // at the same instant (governor's own advice); never more than one interval.
            jitter: interval.min(Duration::from_millis(2)),
        }
    }

    /// Spends every cell that is ready now, so that what follows is paced rather than a burst.
    /// Called when a throttle pause ends: during the pause the bucket refilled to `burst`, and
    /// letting that burst out at once is what re-provokes the 429.
    pub fn drain(&self) {
        while self.inner.check().is_ok() {}
    }

    /// Waits for a cell.
    pub async fn until_ready(&self) {
        self.inner
            .until_ready_with_jitter(Jitter::up_to(self.jitter))
            .await;
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
            limiter.inner.check().is_ok(),
            "a fresh limiter has its burst"
        );
        limiter.drain();
        assert!(
            limiter.inner.check().is_err(),
            "nothing left right after draining"
        );
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
