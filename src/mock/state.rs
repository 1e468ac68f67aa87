//! Everything the mock remembers between requests: the clock, counters, issued tokens, each
//! token's throttle state (per Graph service), scenario hit counts, account states, the tenant's
//! identities, token labels and the request log's sinks.
//!
//! Kept cheap for the benches: counters are atomics, account states are sharded, and the per-token
//! throttle map is only locked when a rate is set or a told window may still be open.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::graph::model::Action;

use super::effect::{Effects, Fate};
use super::log::{self, LogMessage, LoggedRequest};
use super::tenant::Directory;
use super::throttle::{self, Gcra, TokenClock, ToldWait, Verdict};
use super::{AccountState, MockConfig, MockStats};

const ACCOUNT_SHARDS: usize = 16;
const STATUS_SLOTS: usize = 500; // 100..=599

/// The server's memory, shared by every handler through an `Arc`.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    /// The address the server is bound to, for the client assertion's audience.
    pub(crate) local_addr: SocketAddr,
    static_tokens: HashSet<String>,
    gcra: Option<Gcra>,
    /// On tokio's clock, not std's, so that a test under `tokio::time::pause()` drives throttle
    /// windows, token expiry and latency with `advance()` instead of sleeping (issue 11).
    started: Instant,
    /// Wall-clock time at `started`; wall time is derived from it plus the monotonic clock, so
    /// windows told as HTTP-dates and as seconds agree exactly, and dates follow a paused clock.
    started_wall: Duration,
    counters: Counters,
    /// Each token's throttle state, one map per [`Service`]: Graph limits each service apart.
    clocks: Mutex<[HashMap<String, TokenClock>; Service::COUNT]>,
    /// The end (ns since start) of the latest told window of any token: when it has passed, no
    /// window is open and an unlimited server can skip the `clocks` lock.
    latest_window_end_ns: AtomicU64,
    issued: RwLock<HashMap<String, u64>>,
    issued_count: AtomicUsize,
    labels: Mutex<HashMap<String, u32>>,
    scenario_hits: Mutex<HashMap<String, u32>>,
    accounts: [Mutex<HashMap<String, HashMap<String, AccountRecord>>>; ACCOUNT_SHARDS],
    account_hasher: RandomState,
    /// The tenant's identities as actions left them; `None`: no tenant, no reads served.
    directory: Option<RwLock<Directory>>,
    recorded: Mutex<Vec<LoggedRequest>>,
    log_tx: Option<mpsc::UnboundedSender<LogMessage>>,
    fault_seed: u64,
    fault_draws: AtomicU64,
    /// Device codes, authorization codes and refresh tokens issued (issue 18).
    pub(crate) sign_in: super::sessions::SignInState,
    /// Accepted actions whose effect has not shown yet (issue 19).
    effects: Effects,
}

struct Counters {
    graph_requests: AtomicU64,
    token_requests: AtomicU64,
    oidc_requests: AtomicU64,
    managed_requests: AtomicU64,
    inside_told_window: AtomicU64,
    by_status: [AtomicU64; STATUS_SLOTS],
    reads: [AtomicU64; ReadKind::COUNT],
}

/// A Graph service with its own throttle: `/security` (invokeAction and identityAccounts) and
/// identity and access (`/users`, `/roleManagement`), which Graph documents and limits apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Security = 0,
    Directory = 1,
}

impl Service {
    const COUNT: usize = 2;
}

/// The kinds of read counted in [`MockStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    IdentityGet = 0,
    ListPage = 1,
    SidFilter = 2,
    User = 3,
    RoleAssignments = 4,
    Privileged = 5,
}

impl ReadKind {
    const COUNT: usize = 6;
}

#[derive(Debug, Clone, Copy)]
struct AccountRecord {
    state: AccountState,
    last_action: Action,
}

/// How a Graph request's bearer token fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bearer {
    Missing,
    Accepted,
    Unknown,
    Expired,
}

/// The throttle's answer, with the `Retry-After` to send when it refuses.
pub(crate) enum Throttled {
    Admit {
        inside_told_window: bool,
    },
    Refuse {
        told: ToldWait,
        window_end_ns: u64,
        inside_told_window: bool,
    },
}

impl Shared {
    pub(crate) async fn new(
        mut config: MockConfig,
        local_addr: SocketAddr,
    ) -> std::io::Result<Shared> {
        let log_tx = match &config.request_log {
            Some(path) => Some(log::start_writer(path.clone()).await?),
            None => None,
        };
        // Moved out rather than cloned: a large tenant is held once.
        let directory = config
            .tenant
            .take()
            .map(|tenant| RwLock::new(Directory::new(tenant)));
        let started = Instant::now();
        let started_wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let effects = Effects::new(config.effect_delay, config.effect_never.clone());
        Ok(Shared {
            effects,
            static_tokens: config.static_tokens.iter().cloned().collect(),
            gcra: config.rate.map(|rate| Gcra::new(rate, config.burst)),
            fault_seed: config.seed.unwrap_or_else(|| fastrand::u64(..)),
            config,
            local_addr,
            started,
            started_wall,
            counters: Counters {
                graph_requests: AtomicU64::new(0),
                token_requests: AtomicU64::new(0),
                oidc_requests: AtomicU64::new(0),
                managed_requests: AtomicU64::new(0),
                inside_told_window: AtomicU64::new(0),
                by_status: std::array::from_fn(|_| AtomicU64::new(0)),
                reads: std::array::from_fn(|_| AtomicU64::new(0)),
            },
            clocks: Mutex::new(std::array::from_fn(|_| HashMap::new())),
            latest_window_end_ns: AtomicU64::new(0),
            issued: RwLock::new(HashMap::new()),
            issued_count: AtomicUsize::new(0),
            labels: Mutex::new(HashMap::new()),
            scenario_hits: Mutex::new(HashMap::new()),
            accounts: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            account_hasher: RandomState::new(),
            directory,
            sign_in: super::sessions::SignInState::default(),
            recorded: Mutex::new(Vec::new()),
            log_tx,
            fault_draws: AtomicU64::new(0),
        })
    }

    /// Nanoseconds since the server started.
    pub(crate) fn now_ns(&self) -> u64 {
        throttle::duration_ns(self.started.elapsed())
    }

    /// Wall-clock time (since the Unix epoch) at `now_ns`.
    pub(crate) fn wall(&self, now_ns: u64) -> Duration {
        self.started_wall + Duration::from_nanos(now_ns)
    }

    /// Whether requests are being kept in memory or written to a file.
    pub(crate) fn logging(&self) -> bool {
        self.config.record || self.log_tx.is_some()
    }

    // --- tokens -----------------------------------------------------------------------------

    pub(crate) fn check_bearer(&self, token: Option<&str>, now_ns: u64) -> Bearer {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Bearer::Missing;
        };
        if self.static_tokens.contains(token) {
            return Bearer::Accepted;
        }
        if self.issued_count.load(Ordering::Relaxed) > 0 {
            let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(&expiry_ns) = issued.get(token) {
                return if now_ns < expiry_ns {
                    Bearer::Accepted
                } else {
                    Bearer::Expired
                };
            }
        }
        if self.config.accept_any_token {
            Bearer::Accepted
        } else {
            Bearer::Unknown
        }
    }

    /// Remembers a freshly issued token until `lifetime` from `now_ns`.
    pub(crate) fn remember_token(&self, token: String, now_ns: u64, lifetime: Duration) {
        let expiry_ns = now_ns.saturating_add(throttle::duration_ns(lifetime));
        let mut issued = self.issued.write().unwrap_or_else(PoisonError::into_inner);
        // Forget tokens long dead so a long rehearsal does not grow without bound; an expired
        // token is still remembered for an hour so it answers "expired" rather than "unknown".
        if issued.len() >= 100_000 {
            let horizon = now_ns.saturating_sub(3_600_000_000_000);
            issued.retain(|_, expiry| *expiry > horizon);
        }
        issued.insert(token, expiry_ns);
        self.issued_count.store(issued.len(), Ordering::Relaxed);
    }

    /// A short stable label (`t1`, `t2`, ...) for a bearer token, for the log.
    pub(crate) fn label(&self, token: &str) -> String {
        let mut labels = lock(&self.labels);
        let next = labels.len() as u32 + 1;
        let n = match labels.get(token) {
            Some(n) => *n,
            None => {
                labels.insert(token.to_owned(), next);
                next
            }
        };
        format!("t{n}")
    }

    // --- throttle ---------------------------------------------------------------------------

    /// Applies the per-token limit and told windows of `service` to a request from `token` at
    /// `now_ns`.
    pub(crate) fn throttle(&self, token: &str, service: Service, now_ns: u64) -> Throttled {
        if self.gcra.is_none() && self.latest_window_end_ns.load(Ordering::Relaxed) <= now_ns {
            return Throttled::Admit {
                inside_told_window: false,
            };
        }
        let mut all_clocks = lock(&self.clocks);
        let clocks = &mut all_clocks[service as usize];
        if !clocks.contains_key(token) {
            clocks.insert(token.to_owned(), TokenClock::default());
        }
        let clock = clocks
            .get_mut(token)
            .expect("the token's clock was inserted just above");
        let (wait, inside_told_window) = match clock.judge(self.gcra.as_ref(), now_ns) {
            Verdict::Admit { inside_told_window } => {
                return Throttled::Admit { inside_told_window };
            }
            Verdict::Limit { wait } => (wait, false),
            Verdict::InsideWindow { remaining } => (remaining, true),
        };
        let told = throttle::tell(self.config.retry_after_format, wait, self.wall(now_ns));
        let window_end_ns = now_ns.saturating_add(throttle::duration_ns(told.told));
        clock.tell_window(now_ns, window_end_ns, true);
        drop(all_clocks);
        self.latest_window_end_ns
            .fetch_max(window_end_ns, Ordering::Relaxed);
        Throttled::Refuse {
            told,
            window_end_ns,
            inside_told_window,
        }
    }

    /// Remembers a window told by a scripted 429 for `service`: later requests inside it are
    /// marked, not refused.
    pub(crate) fn watch_window(
        &self,
        token: &str,
        service: Service,
        now_ns: u64,
        told: Duration,
    ) -> u64 {
        let window_end_ns = now_ns.saturating_add(throttle::duration_ns(told));
        lock(&self.clocks)[service as usize]
            .entry(token.to_owned())
            .or_default()
            .tell_window(now_ns, window_end_ns, false);
        self.latest_window_end_ns
            .fetch_max(window_end_ns, Ordering::Relaxed);
        window_end_ns
    }

    // --- faults and scenarios ---------------------------------------------------------------

    /// Draws whether to inject a fault: 503 or 504 (half each) for `fail_rate` of requests.
    /// A counter hashed with the seed, so a seeded run is reproducible without a shared RNG lock.
    pub(crate) fn draw_fault(&self) -> Option<StatusCode> {
        let rate = self.config.fail_rate;
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        let n = self.fault_draws.fetch_add(1, Ordering::Relaxed);
        let x = splitmix64(self.fault_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        if unit >= rate {
            return None;
        }
        Some(if x & 1 == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::GATEWAY_TIMEOUT
        })
    }

    /// Counts a request to a scripted key (an identity account id, or a read's key with its
    /// kind in front); returns how many it has had.
    pub(crate) fn scenario_hit(&self, key: &str) -> u32 {
        let mut hits = lock(&self.scenario_hits);
        match hits.get_mut(key) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                hits.insert(key.to_owned(), 1);
                1
            }
        }
    }

    // --- tenant -----------------------------------------------------------------------------

    pub(crate) fn has_tenant(&self) -> bool {
        self.directory.is_some()
    }

    /// The tenant, for reading; `None` without one.
    pub(crate) fn directory(&self) -> Option<RwLockReadGuard<'_, Directory>> {
        self.directory
            .as_ref()
            .map(|d| d.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The tenant, for an action to change; `None` without one.
    pub(crate) fn directory_mut(&self) -> Option<RwLockWriteGuard<'_, Directory>> {
        self.directory
            .as_ref()
            .map(|d| d.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// What becomes of an action the tenant accepted: carried out now, later, or never.
    pub(crate) fn accept_effect(
        &self,
        identity_id: &str,
        account_id: &str,
        provider: crate::graph::model::Provider,
        action: Action,
    ) -> Fate {
        self.effects
            .accept(identity_id, account_id, provider, action, self.now_ns())
    }

    /// Applies every effect that has come due, so that a read answers the tenant as it stands.
    pub(crate) fn settle_effects(&self) {
        let now_ns = self.now_ns();
        let due = self.effects.take_due(now_ns);
        if due.is_empty() {
            return;
        }
        let wall = self.wall(now_ns);
        if let Some(mut directory) = self.directory_mut() {
            for pending in due {
                directory.apply(
                    &pending.identity_id,
                    &pending.account_id,
                    pending.provider,
                    pending.action,
                    Some(wall),
                );
            }
        }
    }

    // --- accounts ---------------------------------------------------------------------------

    pub(crate) fn apply(&self, identity_account_id: &str, account_id: &str, action: Action) {
        let mut shard = lock(self.account_shard(identity_account_id));
        if !shard.contains_key(identity_account_id) {
            shard.insert(identity_account_id.to_owned(), HashMap::new());
        }
        let accounts = shard
            .get_mut(identity_account_id)
            .expect("the identity account's map was inserted just above");
        let effect = |before: AccountState| match action {
            Action::Disable => AccountState::Disabled,
            Action::Enable => AccountState::Enabled,
            _ => before,
        };
        match accounts.get_mut(account_id) {
            Some(record) => {
                record.state = effect(record.state);
                record.last_action = action;
            }
            None => {
                accounts.insert(
                    account_id.to_owned(),
                    AccountRecord {
                        state: effect(AccountState::Unchanged),
                        last_action: action,
                    },
                );
            }
        }
    }

    pub(crate) fn account(
        &self,
        identity_account_id: &str,
        account_id: &str,
    ) -> Option<(AccountState, Action)> {
        let shard = lock(self.account_shard(identity_account_id));
        shard
            .get(identity_account_id)?
            .get(account_id)
            .map(|record| (record.state, record.last_action))
    }

    fn account_shard(
        &self,
        identity_account_id: &str,
    ) -> &Mutex<HashMap<String, HashMap<String, AccountRecord>>> {
        let hash = self.account_hasher.hash_one(identity_account_id);
        &self.accounts[(hash % ACCOUNT_SHARDS as u64) as usize]
    }

    // --- counters and log -------------------------------------------------------------------

    pub(crate) fn count_graph(&self, status: StatusCode, inside_told_window: bool) {
        self.counters.graph_requests.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = usize::from(status.as_u16())
            .checked_sub(100)
            .and_then(|i| self.counters.by_status.get(i))
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        if inside_told_window {
            self.counters
                .inside_told_window
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_read(&self, kind: ReadKind) {
        self.counters.reads[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_token(&self) {
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_oidc(&self) {
        self.counters.oidc_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a managed-identity request and says which one it is (0 for the first).
    pub(crate) fn count_managed(&self) -> u64 {
        self.counters
            .managed_requests
            .fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> MockStats {
        let by_status: BTreeMap<u16, u64> = self
            .counters
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (i as u16 + 100, n))
            })
            .collect();
        MockStats {
            graph_requests: self.counters.graph_requests.load(Ordering::Relaxed),
            token_requests: self.counters.token_requests.load(Ordering::Relaxed),
            inside_told_window: self.counters.inside_told_window.load(Ordering::Relaxed),
            by_status,
            identity_gets: self.read_count(ReadKind::IdentityGet),
            identity_list_pages: self.read_count(ReadKind::ListPage),
            sid_filter_queries: self.read_count(ReadKind::SidFilter),
            user_reads: self.read_count(ReadKind::User),
            role_reads: self.read_count(ReadKind::RoleAssignments),
            privileged_reads: self.read_count(ReadKind::Privileged),
            oidc_requests: self.counters.oidc_requests.load(Ordering::Relaxed),
            managed_identity_requests: self.counters.managed_requests.load(Ordering::Relaxed),
        }
    }

    fn read_count(&self, kind: ReadKind) -> u64 {
        self.counters.reads[kind as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn log(&self, entry: LoggedRequest) {
        if let Some(log_tx) = &self.log_tx {
            if self.config.record {
                lock(&self.recorded).push(entry.clone());
            }
            // The writer only stops at shutdown; a line sent after that has nowhere to go.
            let _ = log_tx.send(LogMessage::Entry(Box::new(entry)));
        } else if self.config.record {
            lock(&self.recorded).push(entry);
        }
    }

    pub(crate) fn recorded(&self) -> Vec<LoggedRequest> {
        lock(&self.recorded).clone()
    }

    /// Flushes the request log and stops its writer.
    pub(crate) async fn close_log(&self) {
        if let Some(log_tx) = &self.log_tx {
            let (done_tx, done_rx) = oneshot::channel();
            if log_tx.send(LogMessage::Close(done_tx)).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

/// Locks, ignoring poisoning: every critical section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn shared(config: MockConfig) -> Shared {
        Shared::new(config, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn seeded_faults_repeat_and_match_the_rate() {
        let config = MockConfig {
            fail_rate: 0.3,
            seed: Some(7),
            ..MockConfig::default()
        };
        let a = shared(config.clone()).await;
        let b = shared(config).await;
        let draws_a: Vec<_> = (0..2000).map(|_| a.draw_fault()).collect();
        let draws_b: Vec<_> = (0..2000).map(|_| b.draw_fault()).collect();
        assert_eq!(draws_a, draws_b);
        let faults = draws_a.iter().filter(|d| d.is_some()).count();
        assert!(
            (450..750).contains(&faults),
            "{faults} faults of 2000 at 0.3"
        );
        let unavailable = draws_a
            .iter()
            .filter(|d| **d == Some(StatusCode::SERVICE_UNAVAILABLE))
            .count();
        assert!(unavailable > faults / 4 && unavailable < faults * 3 / 4);
    }

    #[tokio::test]
    async fn tokens_are_accepted_expired_or_unknown() {
        let s = shared(MockConfig {
            static_tokens: vec!["static".into()],
            ..MockConfig::default()
        })
        .await;
        s.remember_token("issued".into(), 0, Duration::from_secs(1));
        assert_eq!(s.check_bearer(None, 0), Bearer::Missing);
        assert_eq!(s.check_bearer(Some(""), 0), Bearer::Missing);
        assert_eq!(s.check_bearer(Some("static"), u64::MAX), Bearer::Accepted);
        assert_eq!(
            s.check_bearer(Some("issued"), 999_999_999),
            Bearer::Accepted
        );
        assert_eq!(
            s.check_bearer(Some("issued"), 1_000_000_000),
            Bearer::Expired
        );
        assert_eq!(s.check_bearer(Some("other"), 0), Bearer::Unknown);
    }

    #[tokio::test]
    async fn account_state_follows_the_last_enabling_action() {
        let s = shared(MockConfig::default()).await;
        assert_eq!(s.account("ia", "a"), None);
        s.apply("ia", "a", Action::ForcePasswordReset);
        assert_eq!(
            s.account("ia", "a"),
            Some((AccountState::Unchanged, Action::ForcePasswordReset))
        );
        s.apply("ia", "a", Action::Disable);
        s.apply("ia", "a", Action::RevokeAllSessions);
        assert_eq!(
            s.account("ia", "a"),
            Some((AccountState::Disabled, Action::RevokeAllSessions))
        );
        s.apply("ia", "a", Action::Enable);
        assert_eq!(
            s.account("ia", "a").map(|r| r.0),
            Some(AccountState::Enabled)
        );
        assert_eq!(s.account("ia", "b"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_stands_still_until_tokio_time_advances() {
        let s = shared(MockConfig::default()).await;
        let wall_at_start = s.wall(0);
        assert_eq!(s.now_ns(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(s.now_ns(), 1_500_000_000);
        assert_eq!(
            s.wall(s.now_ns()) - wall_at_start,
            Duration::from_millis(1500)
        );
    }

    #[tokio::test]
    async fn labels_are_stable_per_token() {
        let s = shared(MockConfig::default()).await;
        assert_eq!(s.label("x"), "t1");
        assert_eq!(s.label("y"), "t2");
        assert_eq!(s.label("x"), "t1");
    }
}
