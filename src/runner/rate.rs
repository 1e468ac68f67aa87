//! Pacing: the shared pacer every request waits for, and the throttle gate that holds every
//! worker back while Graph's `Retry-After` window is open.
//!
//! The pacer hands out send times on a schedule: each slot is one interval after the previous
//! slot's due time, not after the moment its waiter happened to wake. A wake-up a fraction of a
//! millisecond late therefore costs nothing, and the mean rate is `--rate` whenever there is
//! demand (issue 11). governor could not do this: its cell is claimed when a waiter wakes and
//! checks, so at burst 1 every late wake-up lost its slot for good (190.5/s at 200/s in the
//! bench); it also has no way to change the rate in place or to pause until an instant. After an
//! idle spell the schedule restarts from now, with at most `burst` slots of catch-up, so no
//! second ever sees more than rate + burst requests.
//!
//! The gate only ever extends: a later 429 can lengthen the pause, a success never ends it early.
//! When the pause ends the schedule restarts from now, so workers resume paced, not in a burst.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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

/// Which rate a request was admitted at: pass it back with [`Limiter::throttled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    epoch: u64,
}

/// The send schedule, behind one lock held for a few instructions per request.
#[derive(Debug)]
struct Schedule {
    /// The next slot's due time.
    next_due: Instant,
    /// Time between two slots at the current rate.
    interval: Duration,
    per_second: f64,
    /// Bumped on every rate change, so a 429 can be traced to the rate its request was sent at.
    epoch: u64,
    /// The rate at the last throttle event, per second; 0 before any.
    throttled_at: f64,
    /// When the rate may next rise; `None` while at the ceiling.
    next_rise: Option<Instant>,
}

/// The shared, adaptive pacer: at most `ceiling` (`--rate`) with bursts of at most `burst`.
pub struct Limiter {
    schedule: Mutex<Schedule>,
    /// When the last requests left, for the window check; `None` at rates too high to keep them.
    departures: Option<Mutex<VecDeque<Instant>>>,
    ceiling: f64,
    burst: NonZeroU32,
}

/// Rates whose window (rate + burst requests) is larger than this keep no departure times: at
/// tens of thousands a second the schedule alone paces, and the window would cost memory.
const MAX_WINDOW: usize = 65_536;
/// The window no more than rate + burst requests may leave in.
const WINDOW: Duration = Duration::from_secs(1);

impl Limiter {
    pub fn new(rate: Rate, burst: NonZeroU32) -> Limiter {
        let ceiling = rate.per_second_f64();
        let window = window_size(ceiling, burst);
        Limiter {
            departures: (window <= MAX_WINDOW).then(|| Mutex::new(VecDeque::with_capacity(window))),
            schedule: Mutex::new(Schedule {
                next_due: Instant::now(),
                interval: interval(ceiling),
                per_second: ceiling,
                epoch: 0,
                throttled_at: 0.0,
                next_rise: None,
            }),
            ceiling,
            burst,
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rate now, per second.
    pub fn per_second(&self) -> f64 {
        self.schedule().per_second
    }

    /// Takes the next slot: its due time and the rate's epoch. A slot is one interval after the
    /// previous one; after an idle spell, no earlier than `burst - 1` intervals before now.
    fn reserve(&self) -> (Instant, u64) {
        let mut schedule = self.schedule();
        let now = Instant::now();
        let catch_up = schedule.interval * (self.burst.get() - 1);
        let earliest = now.checked_sub(catch_up).unwrap_or(now);
        let due = schedule.next_due.max(earliest);
        schedule.next_due = due + schedule.interval;
        (due, schedule.epoch)
    }

    /// Waits for this request's slot. A worker that was already waiting when the rate changed
    /// takes a new slot at the new rate, so a change takes effect at once. Slots missed while the
    /// process stood still (a stall, a suspended laptop) are caught up, but never so that more
    /// than rate + burst requests leave within one second.
    ///
    /// Call it as the last step before sending: work after it that can hold many requests and
    /// release them at once (an fsync) would bunch them on the wire past rate + burst.
    pub async fn until_ready(&self) -> Admission {
        loop {
            let (due, epoch) = self.reserve();
            tokio::time::sleep_until(due).await;
            if self.schedule().epoch != epoch {
                continue;
            }
            self.within_window().await;
            return Admission { epoch };
        }
    }

    /// Waits until one more request may leave without passing rate + burst in the last second,
    /// and counts it.
    async fn within_window(&self) {
        let Some(departures) = &self.departures else {
            return;
        };
        loop {
            let limit = window_size(self.per_second(), self.burst);
            let wait_until = {
                let mut departures = departures.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                while departures.front().is_some_and(|t| *t + WINDOW <= now) {
                    departures.pop_front();
                }
                if departures.len() < limit {
                    departures.push_back(now);
                    return;
                }
                departures[departures.len() - limit] + WINDOW
            };
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Restarts the schedule from now: called when a throttle pause ends, so that the slots
    /// missed during the pause are not caught up in a burst that re-provokes the 429.
    pub fn drain(&self) {
        let mut schedule = self.schedule();
        schedule.next_due = schedule.next_due.max(Instant::now());
    }

    /// Graph throttled a request admitted at `admission` and asked for a pause of `pause`. Lowers
    /// the rate once per throttle event (requests that were already in flight at the old rate do
    /// not lower it again); the next rise comes a second after the pause ends.
    pub fn throttled(&self, admission: Admission, pause: Duration) {
        let mut schedule = self.schedule();
        if schedule.epoch != admission.epoch {
            return;
        }
        let floor = FLOOR_PER_SECOND.min(self.ceiling / 10.0);
        let lowered = (schedule.per_second * DECREASE).max(floor);
        schedule.throttled_at = schedule.per_second;
        self.change(&mut schedule, lowered, "lowered after a 429");
        schedule.next_rise = Some(Instant::now() + pause.min(MAX_RISE_DELAY) + RISE_EVERY);
    }

    /// A request succeeded: once a second, let the rate rise towards the ceiling. Cheap when
    /// nothing is due, as it runs for every row.
    pub fn succeeded(&self) {
        let mut schedule = self.schedule();
        match schedule.next_rise {
            Some(at) if Instant::now() >= at => {}
            _ => return,
        }
        let step = if schedule.per_second < 0.9 * schedule.throttled_at {
            FAST_RISE
        } else {
            PROBE_RISE
        };
        let raised = (schedule.per_second * (1.0 + step))
            .max(schedule.per_second + 0.1)
            .min(self.ceiling);
        self.change(&mut schedule, raised, "raised: no 429 for a second");
    }

    fn change(&self, schedule: &mut Schedule, per_second: f64, why: &'static str) {
        let now = Instant::now();
        schedule.per_second = per_second;
        schedule.interval = interval(per_second);
        schedule.epoch += 1;
        // The new rate starts from now: a change never releases a burst.
        schedule.next_due = now + schedule.interval;
        schedule.next_rise = (per_second < self.ceiling).then(|| now + RISE_EVERY);
        info!(
            rate_per_second = (per_second * 100.0).round() / 100.0,
            ceiling_per_second = self.ceiling,
            "adaptive rate {why}"
        );
    }
}

/// The most requests one second may see at `per_second` with `burst`: rate + burst.
fn window_size(per_second: f64, burst: NonZeroU32) -> usize {
    (per_second.floor() as usize).saturating_add(burst.get() as usize)
}

/// The time between two slots at `per_second`.
fn interval(per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1))
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

    #[tokio::test(start_paused = true)]
    async fn draining_restarts_the_schedule_from_now() {
        let limiter = Limiter::new(
            Rate::per_second(NonZeroU32::new(1).unwrap()),
            NonZeroU32::new(5).unwrap(),
        );
        let start = Instant::now();
        // Idle for a minute: five slots of catch-up (the burst) are due at once...
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..5 {
            limiter.until_ready().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        // ...but after a drain, the next request is paced.
        tokio::time::advance(Duration::from_secs(60)).await;
        limiter.drain();
        let before = Instant::now();
        limiter.until_ready().await;
        limiter.until_ready().await;
        assert_eq!(before.elapsed(), Duration::from_secs(1));
    }

    /// Eight workers at 200/s with burst 1: slots come exactly 5 ms apart however late each
    /// worker's wake-up is, so 400 requests take 2 s (issue 11).
    #[tokio::test(start_paused = true)]
    async fn late_wake_ups_lose_no_slot() {
        let limiter =
            std::sync::Arc::new(Limiter::new(parse_rate("200/s").unwrap(), NonZeroU32::MIN));
        let start = Instant::now();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..8u64 {
            let (limiter, sent) = (limiter.clone(), sent.clone());
            workers.spawn(async move {
                for _ in 0..50 {
                    limiter.until_ready().await;
                    sent.lock().unwrap().push(start.elapsed());
                    // The request itself, and a wake-up up to 3 ms late.
                    tokio::time::sleep(Duration::from_micros(700 + worker * 300)).await;
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent.len(), 400);
        let last = *sent.last().unwrap();
        assert!(
            last <= Duration::from_millis(2000),
            "400 requests at 200/s took {last:?}"
        );
        // No one-second window holds more than rate + burst.
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| **t < *at + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 201,
                "{in_window} requests in the second from {at:?}"
            );
        }
    }

    /// Slots missed while the process stood still are caught up, but no second sees more than
    /// rate + burst requests (without the window check, four workers caught up four slots at
    /// once after a 400 ms stall, and a second saw 104 at 100/s).
    #[tokio::test(start_paused = true)]
    async fn a_stall_is_caught_up_within_rate_plus_burst_a_second() {
        let limiter =
            std::sync::Arc::new(Limiter::new(parse_rate("100/s").unwrap(), NonZeroU32::MIN));
        let start = Instant::now();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (limiter, sent) = (limiter.clone(), sent.clone());
            workers.spawn(async move {
                for _ in 0..75 {
                    limiter.until_ready().await;
                    sent.lock().unwrap().push(start.elapsed());
                }
            });
        }
        // Let it run steadily for a second, then stand still for 400 ms.
        tokio::time::sleep(Duration::from_millis(1005)).await;
        tokio::time::advance(Duration::from_millis(400)).await;
        while workers.join_next().await.is_some() {}
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent.len(), 300);
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < *at + WINDOW).count();
            assert!(
                in_window <= 101,
                "{in_window} requests in the second from {at:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_after_an_idle_spell_is_at_most_burst() {
        let limiter = Limiter::new(parse_rate("10/s").unwrap(), NonZeroU32::new(3).unwrap());
        tokio::time::advance(Duration::from_secs(10)).await;
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..5 {
            limiter.until_ready().await;
            at.push(start.elapsed());
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(at, vec![ms(0), ms(0), ms(0), ms(100), ms(200)]);
    }

    fn assert_rate(limiter: &Limiter, expected: f64, why: &str) {
        let actual = limiter.per_second();
        assert!(
            (actual - expected).abs() < 1e-6,
            "{actual} != {expected}: {why}"
        );
    }

    #[tokio::test(start_paused = true)]
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

    #[tokio::test(start_paused = true)]
    async fn issue_10_the_floor_never_lies_above_the_rate() {
        let limiter = Limiter::new(parse_rate("1/min").unwrap(), NonZeroU32::MIN);
        limiter.throttled(Admission { epoch: 0 }, Duration::ZERO);
        let per_minute = limiter.per_second() * 60.0;
        assert!(per_minute < 1.0, "{per_minute}/min after a 429 at 1/min");
        for _ in 0..50 {
            let epoch = limiter.schedule().epoch;
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
