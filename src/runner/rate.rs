//! Admission: governor's limiter every request passes, and the throttle gate that holds every
//! worker back while Graph's `Retry-After` window is open (SPEC section 4).
//!
//! governor's GCRA decides every admission and so enforces `--rate` and `--burst`; one keyed
//! limiter holds a cell budget per Graph service ([`Api`]), as Graph throttles `/security` and
//! `/users` apart. What governor does not do is ours and small:
//!
//! - Its clock is tokio's ([`TokioClock`]), so `tokio::time::pause()` tests drive it, and its
//!   waits are `tokio::time::sleep_until` on the instant it names (its own `until_ready` sleeps
//!   on futures-timer, which paused time does not move).
//! - The waiter at the head of the queue (one a service; the others queue behind it in order)
//!   tests its cell at the instant it will leave, before it sleeps: refused now, governor names
//!   the earliest conforming instant, and the cell is tested (and taken) at that instant.
//!   tokio's timer wakes on whole milliseconds and up to about 2 ms late; tested on waking, a
//!   burst-1 GCRA would lose that lateness on every request (300/s became 250/s in
//!   `issue_17_a_late_wake_up_loses_no_cell`). A waiter that wakes later than about one
//!   interval ([`keep_late`]: a busy machine, a stall, a suspended laptop) gives its cell up
//!   and tests again at now, which, with no one queued ahead, conforms at once: it costs the
//!   lateness past the interval, and the slots a stall missed are never caught up in a bunch.
//! - The adaptive rate: governor cannot change a quota in place, so a change swaps in a new
//!   limiter at the new rate, its burst already spent so that the change never releases one.
//!   The rate falls once per throttle event and rises at most once a second.
//! - The drain after a pause: the cells the limiter gathered while the gate was closed are
//!   taken, and only the first is kept for the next request, so requests resume paced. Each
//!   limiter drains once after each pause of the gate it passes, whoever passes first.
//!
//! The gate only ever extends: a later 429 can lengthen the pause, a success never ends it early.
//!
//! [`Door`] is admission for one service, in one copy: gate, limiter, gate again, the drain. The
//! attempt driver ([`crate::attempt`]) lets every action and read out through it (issue 17: the
//! reads had a copy of their own, which did not drain).

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::time::Instant;
use tracing::info;

use crate::attempt::Admit;
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
/// The least a waiter may wake late and still send on the cell it took: tokio's timer (1 ms
/// ticks, rounded up, plus the driver's own slack) wakes up to about 2 ms late, and below this
/// above 500/s almost every cell would be given up. See [`keep_late`].
const KEEP_LATE_MIN: Duration = Duration::from_millis(2);

/// The Graph services with rate limits of their own: each has its own cells in the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `/security`: the actions and the identity reads.
    Security,
    /// `/users` and the directory's other reads.
    Users,
}

impl Api {
    const ALL: [Api; 2] = [Api::Security, Api::Users];

    fn index(self) -> usize {
        match self {
            Api::Security => 0,
            Api::Users => 1,
        }
    }
}

thread_local! {
    /// The instant [`test_at`] is testing a cell at, read by [`TokioClock`] during that call.
    static TESTED_AT: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
}

/// governor's clock: tokio's, so that paused-time tests drive the limiter. During
/// [`test_at`] it reads the instant under test instead: a cell is tested at the instant its
/// request will leave.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        TESTED_AT.get().unwrap_or_else(|| Instant::now().into_std())
    }
}

type Gcra =
    RateLimiter<Api, HashMapStateStore<Api>, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// Tests one cell of `api` at `at` and takes it if it conforms; refused, the earliest instant
/// it would. Synchronous: nothing else runs on this thread between setting the instant and
/// clearing it.
fn test_at(gcra: &Gcra, api: Api, at: Instant) -> Result<(), Instant> {
    TESTED_AT.set(Some(at.into_std()));
    let result = gcra.check_key(&api);
    TESTED_AT.set(None);
    result.map_err(|refused| Instant::from_std(refused.earliest_possible()))
}

/// Takes the first cell of `api` that conforms at or after now, and returns its instant.
fn reserve(gcra: &Gcra, api: Api) -> Instant {
    let mut at = Instant::now();
    loop {
        match test_at(gcra, api, at) {
            Ok(()) => return at,
            // Refused means `at` lies before the earliest conforming instant, so this moves on:
            // another waiter may take that instant first, then the next is tested.
            Err(earliest) => at = earliest.max(at + Duration::from_nanos(1)),
        }
    }
}

/// Which rate a request was admitted at: pass it back with [`Limiter::throttled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    epoch: u64,
}

/// The limiter at the current rate, and how the adaptive rate stands; behind one lock held for
/// a few instructions per request.
struct Current {
    gcra: Arc<Gcra>,
    per_second: f64,
    /// Time between two cells at the current rate.
    interval: Duration,
    /// Bumped on every rate change, so a 429 can be traced to the rate its request was sent at.
    epoch: u64,
    /// The rate at the last throttle event, per second; 0 before any.
    throttled_at: f64,
    /// When the rate may next rise; `None` while at the ceiling.
    next_rise: Option<Instant>,
}

/// The shared, adaptive limiter: at most `ceiling` (`--rate`) a service, with bursts of at most
/// `burst`.
pub struct Limiter {
    current: Mutex<Current>,
    /// A cell a drain took and kept for the next request of that service.
    kept: [AtomicBool; 2],
    /// A service's drains so far: the pause count of its gate at the last one. A gate may be
    /// shared by more than one limiter (the lookup's reads and the actions share `/security`'s),
    /// and each drains its own cells.
    drained_at: [AtomicU64; 2],
    /// One waiter a service sleeps on a cell at a time, the others queue behind it in order.
    /// So the next cell is never taken far ahead, and a waiter that woke too late to keep its
    /// cell finds the next one conforming at once instead of queued behind the others' cells:
    /// a late wake-up costs its lateness past the interval, not a whole cell.
    heads: [tokio::sync::Mutex<()>; 2],
    ceiling: f64,
    burst: NonZeroU32,
}

impl Limiter {
    pub fn new(rate: Rate, burst: NonZeroU32) -> Limiter {
        let ceiling = rate.per_second_f64();
        let interval = rate.interval().max(Duration::from_nanos(1));
        Limiter {
            current: Mutex::new(Current {
                gcra: Arc::new(gcra(interval, burst)),
                per_second: ceiling,
                interval,
                epoch: 0,
                throttled_at: 0.0,
                next_rise: None,
            }),
            kept: [AtomicBool::new(false), AtomicBool::new(false)],
            drained_at: [AtomicU64::new(0), AtomicU64::new(0)],
            heads: [tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())],
            ceiling,
            burst,
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rate now, per second.
    #[cfg(test)]
    pub fn per_second(&self) -> f64 {
        self.current().per_second
    }

    /// Waits for a cell of `/security`, which the actions go to.
    #[cfg(test)]
    pub async fn until_ready(&self) -> Admission {
        self.until_ready_for(Api::Security).await
    }

    /// Waits for a cell of `api`. A worker that was already waiting when the rate changed takes
    /// a new cell at the new rate, so a change takes effect at once.
    ///
    /// Call it as the last step before sending: work after it that can hold many requests and
    /// release them at once (an fsync) would bunch them on the wire past rate + burst.
    pub async fn until_ready_for(&self, api: Api) -> Admission {
        let _head = self.heads[api.index()].lock().await;
        loop {
            let (gcra, epoch, keep_late) = {
                let current = self.current();
                let keep_late = keep_late(current.interval);
                (current.gcra.clone(), current.epoch, keep_late)
            };
            if self.kept[api.index()].swap(false, Ordering::AcqRel) {
                return Admission { epoch };
            }
            let due = reserve(&gcra, api);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
                if self.current().epoch != epoch || Instant::now() > due + keep_late {
                    continue;
                }
            }
            return Admission { epoch };
        }
    }

    /// Restarts `api`'s pacing from now once after each pause (`pauses`: its gate's count so
    /// far), so that the cells gathered during the pause are not spent in a burst that
    /// re-provokes the 429.
    fn drain_after_pause(&self, api: Api, pauses: u64) {
        if self.drained_at[api.index()].fetch_max(pauses, Ordering::AcqRel) < pauses {
            self.drain_for(api);
        }
    }

    /// Takes every cell of `api` that conforms now and keeps the first for the next request:
    /// that one leaves at once, the ones after it paced.
    pub fn drain_for(&self, api: Api) {
        let gcra = self.current().gcra.clone();
        let now = Instant::now();
        if test_at(&gcra, api, now).is_err() {
            return;
        }
        while test_at(&gcra, api, now).is_ok() {}
        self.kept[api.index()].store(true, Ordering::Release);
    }

    /// Graph throttled a request admitted at `admission` and asked for a pause of `pause`. Lowers
    /// the rate once per throttle event (requests that were already in flight at the old rate do
    /// not lower it again); the next rise comes a second after the pause ends.
    pub fn throttled(&self, admission: Admission, pause: Duration) {
        let mut current = self.current();
        if current.epoch != admission.epoch {
            return;
        }
        let floor = FLOOR_PER_SECOND.min(self.ceiling / 10.0);
        let lowered = (current.per_second * DECREASE).max(floor);
        current.throttled_at = current.per_second;
        self.change(&mut current, lowered, "lowered after a 429");
        current.next_rise = Some(Instant::now() + pause.min(MAX_RISE_DELAY) + RISE_EVERY);
    }

    /// A request succeeded: once a second, let the rate rise towards the ceiling. Cheap when
    /// nothing is due, as it runs for every row.
    pub fn succeeded(&self) {
        let mut current = self.current();
        match current.next_rise {
            Some(at) if Instant::now() >= at => {}
            _ => return,
        }
        let step = if current.per_second < 0.9 * current.throttled_at {
            FAST_RISE
        } else {
            PROBE_RISE
        };
        let raised = (current.per_second * (1.0 + step))
            .max(current.per_second + 0.1)
            .min(self.ceiling);
        self.change(&mut current, raised, "raised: no 429 for a second");
    }

    /// Swaps in a limiter at `per_second`: governor cannot change a quota in place.
    fn change(&self, current: &mut Current, per_second: f64, why: &'static str) {
        let now = Instant::now();
        current.per_second = per_second;
        current.interval = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
        current.gcra = Arc::new(gcra(current.interval, self.burst));
        // The new rate starts from now: its burst is spent at once, so the first cell comes one
        // interval from now and a change never releases a burst.
        for api in Api::ALL {
            let _ = current.gcra.check_key_n(&api, self.burst);
            self.kept[api.index()].store(false, Ordering::Release);
        }
        current.epoch += 1;
        current.next_rise = (per_second < self.ceiling).then(|| now + RISE_EVERY);
        info!(
            rate_per_second = (per_second * 100.0).round() / 100.0,
            ceiling_per_second = self.ceiling,
            "adaptive rate {why}"
        );
    }
}

/// How late a waiter may wake at `interval` and still send on the cell it took. The cells obey
/// the GCRA, so any span of `1 s + lateness` holds at most `ceil((1 s + lateness) / interval) -
/// 1 + burst` of them; with lateness up to `interval - (1 s mod interval)` that is rate + burst,
/// so a late cell never shares a second with more than rate + burst requests. Later than that
/// (a stall) the cell is given up. At least [`KEEP_LATE_MIN`]: above 500/s a second may so see
/// up to 2 ms worth of requests more than rate + burst.
fn keep_late(interval: Duration) -> Duration {
    let interval_ns = interval.as_nanos().max(1);
    let remainder_ns = Duration::from_secs(1).as_nanos() % interval_ns;
    let keep_ns = u64::try_from(interval_ns - remainder_ns).unwrap_or(u64::MAX);
    Duration::from_nanos(keep_ns).max(KEEP_LATE_MIN)
}

/// A keyed limiter: one cell every `interval` per service, bursts of at most `burst`.
fn gcra(interval: Duration, burst: NonZeroU32) -> Gcra {
    let quota = Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    RateLimiter::new(quota, HashMapStateStore::default(), TokioClock)
}

/// Holds every worker while a 429's `Retry-After` window is open.
pub struct ThrottleGate {
    origin: Instant,
    /// End of the current pause, in microseconds since `origin`.
    paused_until_us: AtomicU64,
    /// Total time spent paused, in microseconds (overlapping windows counted once).
    paused_total_us: AtomicU64,
    pauses: AtomicU64,
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

    /// Total time the gate has been closed so far.
    pub fn paused_total(&self) -> Duration {
        let total = Duration::from_micros(self.paused_total_us.load(Ordering::Relaxed));
        // A pause still running has not all been spent yet.
        total.saturating_sub(self.remaining().unwrap_or_default())
    }

    /// How many times a 429 opened or extended a pause.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Acquire)
    }
}

/// Admission for one Graph service: its throttle gate, then its cells in the limiter.
pub struct Door<'a> {
    pub gate: &'a ThrottleGate,
    pub limiter: &'a Limiter,
    pub api: Api,
}

impl Admit for Door<'_> {
    type Ticket = Admission;

    async fn admit(&self) -> Admission {
        loop {
            self.gate.wait_open().await;
            self.limiter.drain_after_pause(self.api, self.gate.pauses());
            let admission = self.limiter.until_ready_for(self.api).await;
            // A 429 may have closed the gate while we waited for the limiter.
            if !self.closed() {
                return admission;
            }
        }
    }

    fn closed(&self) -> bool {
        self.gate.remaining().is_some()
    }

    fn throttled(&self, admission: Admission, pause: Duration) -> bool {
        self.limiter.throttled(admission, pause);
        self.gate.pause_for(pause)
    }

    fn succeeded(&self) {
        self.limiter.succeeded();
    }

    fn holds_pauses(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_rate;

    /// The window no more than rate + burst requests may leave in.
    const WINDOW: Duration = Duration::from_secs(1);

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

    /// After each pause, each limiter behind the gate drains once (whoever passes first), and
    /// only then: two limiters share `/security`'s gate (the lookup's reads and the actions).
    #[tokio::test(start_paused = true)]
    async fn each_limiter_drains_once_after_each_pause() {
        let gate = ThrottleGate::new();
        let every_second = || {
            Limiter::new(
                Rate::per_second(NonZeroU32::new(1).unwrap()),
                NonZeroU32::new(5).unwrap(),
            )
        };
        let (reads, actions) = (every_second(), every_second());
        let door = |limiter| Door {
            gate: &gate,
            limiter,
            api: Api::Security,
        };
        // Idle for a minute with no pause: the burst is there to be spent.
        tokio::time::advance(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..3 {
            door(&reads).admit().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "no pause yet: no drain");
        gate.pause_for(Duration::from_secs(10));
        for limiter in [&reads, &actions] {
            door(limiter).admit().await;
            let start = Instant::now();
            door(limiter).admit().await;
            assert_eq!(
                start.elapsed(),
                Duration::from_secs(1),
                "drained after the pause: the second cell is paced"
            );
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..3 {
            door(&reads).admit().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "only once per pause");
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
        limiter.drain_for(Api::Security);
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

    /// 300/s is a cell every 3.33 ms, which tokio's 1 ms timer cannot wake on: each wake-up
    /// comes up to a millisecond late. Tested when its waiter woke, a burst-1 GCRA would lose
    /// that on every cell (a cell every 4 ms, 250/s); tested at the instant it leaves, none is
    /// lost and no second holds more than rate + burst.
    #[tokio::test(start_paused = true)]
    async fn issue_17_a_late_wake_up_loses_no_cell() {
        let limiter =
            std::sync::Arc::new(Limiter::new(parse_rate("300/s").unwrap(), NonZeroU32::MIN));
        let start = Instant::now();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (limiter, sent) = (limiter.clone(), sent.clone());
            workers.spawn(async move {
                for _ in 0..150 {
                    limiter.until_ready().await;
                    sent.lock().unwrap().push(start.elapsed());
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let mut sent = sent.lock().unwrap().clone();
        sent.sort();
        let last = *sent.last().unwrap();
        assert!(
            last <= Duration::from_millis(2001),
            "600 requests at 300/s took {last:?}"
        );
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < *at + WINDOW).count();
            assert!(
                in_window <= 301,
                "{in_window} requests in the second from {at:?}"
            );
        }
    }

    /// A waiter woken 20 ms late at 2/s (a busy machine) still sends on its cell: giving it up
    /// would cost a whole interval, 500 ms, and a second still holds no more than rate + burst.
    #[tokio::test(start_paused = true)]
    async fn issue_17_a_wake_up_late_by_less_than_an_interval_keeps_its_cell() {
        let limiter =
            std::sync::Arc::new(Limiter::new(parse_rate("2/s").unwrap(), NonZeroU32::MIN));
        let start = Instant::now();
        limiter.until_ready().await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                limiter.until_ready().await;
                start.elapsed()
            })
        };
        tokio::task::yield_now().await;
        // The clock jumps past the waiter's due time before it runs again.
        tokio::time::advance(Duration::from_millis(520)).await;
        assert_eq!(waiter.await.unwrap(), Duration::from_millis(520));
        assert_eq!(
            keep_late(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            keep_late(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
        assert_eq!(keep_late(Duration::from_micros(100)), KEEP_LATE_MIN);
    }

    /// `/security` and `/users` are throttled apart by Graph, so each has its own cells.
    #[tokio::test(start_paused = true)]
    async fn issue_17_each_service_has_its_own_cells() {
        let limiter = Limiter::new(parse_rate("10/s").unwrap(), NonZeroU32::MIN);
        let start = Instant::now();
        limiter.until_ready_for(Api::Security).await;
        limiter.until_ready_for(Api::Users).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "one service does not wait for the other"
        );
        limiter.until_ready_for(Api::Users).await;
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        limiter.until_ready_for(Api::Security).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "its cell came meanwhile"
        );
    }

    /// A change of rate swaps governor's limiter for a new one, whose burst is spent at once:
    /// the first cell at the new rate comes one interval after the change, never in a burst.
    #[tokio::test(start_paused = true)]
    async fn issue_17_a_rate_change_releases_no_burst() {
        let limiter = Limiter::new(parse_rate("10/s").unwrap(), NonZeroU32::new(5).unwrap());
        let admitted = limiter.until_ready().await;
        limiter.throttled(admitted, Duration::ZERO);
        assert_rate(&limiter, 7.0, "cut by DECREASE");
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..3 {
            limiter.until_ready().await;
            at.push(start.elapsed());
        }
        // tokio's timer wakes on whole milliseconds.
        let interval = Duration::from_secs_f64(1.0 / 7.0);
        for (n, at) in (1u32..).zip(at) {
            let due = interval * n;
            assert!(
                at >= due && at < due + Duration::from_millis(1),
                "{at:?}, due {due:?}"
            );
        }
    }

    /// A waiter already asleep on its cell when the rate falls takes a new one at the new rate.
    #[tokio::test(start_paused = true)]
    async fn issue_17_a_waiter_takes_the_new_rate() {
        let limiter =
            std::sync::Arc::new(Limiter::new(parse_rate("1/s").unwrap(), NonZeroU32::MIN));
        let first = limiter.until_ready().await;
        let start = Instant::now();
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.until_ready().await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.throttled(first, Duration::ZERO);
        let admitted = waiter.await.unwrap();
        assert_ne!(admitted, first, "admitted at the new rate");
        let due = Duration::from_millis(500) + Duration::from_secs_f64(1.0 / 0.7);
        let took = start.elapsed();
        assert!(
            took >= due && took < due + Duration::from_millis(1),
            "{took:?}, due {due:?}"
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
