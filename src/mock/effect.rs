//! When an accepted action takes effect in the mock's tenant (SPEC section 10). Graph's 200 means
//! Defender for Identity accepted the action; its sensor carries it out later, or, with no rights
//! in AD or unhealthy, never. The mock plays both: an accepted action is held here for
//! [`MockConfig::effect_delay`] before the tenant changes, and for an identity (or account) id
//! matching [`MockConfig::effect_never`] it is accepted and dropped.
//!
//! The queue is applied lazily, by the reads (see `reads.rs`): a read first applies every effect
//! that is due, so what it answers is the tenant as it stands at that instant. Effects come due
//! in the order they were accepted (one delay for all), so the queue is a FIFO.
//!
//! [`MockConfig::effect_delay`]: super::MockConfig::effect_delay
//! [`MockConfig::effect_never`]: super::MockConfig::effect_never

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::graph::model::{Action, Provider};

use super::throttle;

/// An accepted action waiting for its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Nanoseconds since the server started when the effect shows.
    pub(crate) due_ns: u64,
    pub(crate) identity_id: String,
    pub(crate) account_id: String,
    pub(crate) provider: Provider,
    pub(crate) action: Action,
}

/// What becomes of an accepted action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It takes effect now.
    Now,
    /// It was queued; it takes effect later.
    Later,
    /// `--effect-never` matched: accepted, and never carried out.
    Never,
}

/// The effects accepted but not yet applied.
pub(crate) struct Effects {
    delay: Duration,
    never: Option<regex::Regex>,
    queue: Mutex<VecDeque<Pending>>,
    /// The first queued effect's due time, `u64::MAX` when none: reads check it without the lock.
    next_due_ns: AtomicU64,
}

impl Effects {
    pub(crate) fn new(delay: Duration, never: Option<regex::Regex>) -> Effects {
        Effects {
            delay,
            never,
            queue: Mutex::new(VecDeque::new()),
            next_due_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Decides an accepted action's fate, queueing it when it is to take effect later.
    pub(crate) fn accept(
        &self,
        identity_id: &str,
        account_id: &str,
        provider: Provider,
        action: Action,
        now_ns: u64,
    ) -> Fate {
        if self
            .never
            .as_ref()
            .is_some_and(|never| never.is_match(identity_id) || never.is_match(account_id))
        {
            return Fate::Never;
        }
        if self.delay.is_zero() {
            return Fate::Now;
        }
        let due_ns = now_ns.saturating_add(throttle::duration_ns(self.delay));
        let mut queue = self.lock();
        queue.push_back(Pending {
            due_ns,
            identity_id: identity_id.to_owned(),
            account_id: account_id.to_owned(),
            provider,
            action,
        });
        if queue.len() == 1 {
            self.next_due_ns.store(due_ns, Ordering::Release);
        }
        Fate::Later
    }

    /// Takes every effect due by `now_ns`, in the order they were accepted.
    pub(crate) fn take_due(&self, now_ns: u64) -> Vec<Pending> {
        if self.next_due_ns.load(Ordering::Acquire) > now_ns {
            return Vec::new();
        }
        let mut queue = self.lock();
        let mut due = Vec::new();
        while queue.front().is_some_and(|first| first.due_ns <= now_ns) {
            due.extend(queue.pop_front());
        }
        let next = queue.front().map_or(u64::MAX, |first| first.due_ns);
        self.next_due_ns.store(next, Ordering::Release);
        due
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_19_effects_come_due_after_the_delay_in_order_and_never_for_the_pattern() {
        let effects = Effects::new(
            Duration::from_millis(5),
            Some(regex::Regex::new("^broken-").unwrap()),
        );
        let accept =
            |id: &str, at: u64| effects.accept(id, "acc", Provider::EntraId, Action::Disable, at);
        assert_eq!(accept("broken-1", 0), Fate::Never);
        assert_eq!(accept("a", 0), Fate::Later);
        assert_eq!(accept("b", 1_000_000), Fate::Later);
        assert!(effects.take_due(4_999_999).is_empty());
        let due: Vec<String> = effects
            .take_due(5_000_000)
            .into_iter()
            .map(|p| p.identity_id)
            .collect();
        assert_eq!(due, vec!["a"]);
        assert_eq!(effects.take_due(u64::MAX - 1).len(), 1);
        assert!(effects.take_due(u64::MAX - 1).is_empty());
        let now = Effects::new(Duration::ZERO, None);
        assert_eq!(
            now.accept("a", "b", Provider::Okta, Action::Enable, 0),
            Fate::Now
        );
    }
}
