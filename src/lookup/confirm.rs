//! Confirming the effect (SPEC section 10): after the last action, the identities acted on are
//! read again, in rounds, until each one's state shows its action or the wait has passed. A 200
//! from invokeAction means Defender for Identity accepted the action; its sensor (on a domain
//! controller, or the Entra ID or Okta connector) carries it out later, or never, and Graph does
//! not say which. Owns what each action's effect looks like, which reads a round sends, and when
//! the next round starts; the records are rewritten elsewhere (`output::effects`).
//!
//! What shows an effect, read through documented queries only:
//! - `disable` / `enable`: the identity's `isEnabled` (`GET identityAccounts/{id}`, or a page of
//!   the list), and for an Entra ID account also the user's `accountEnabled`
//!   (`GET /users/{id}?$select=id,accountEnabled,signInSessionsValidFromDateTime`);
//! - `revokeAllSessions` on Entra ID: the user's `signInSessionsValidFromDateTime`, not before
//!   the second the action was sent;
//! - anything else (a password reset, a session revoke in AD or Okta, ...): Graph shows nothing
//!   that would tell, so the row is `notObservable` and never a failure.
//!
//! Which reads: a round reads each identity still unconfirmed once, `GET identityAccounts/{id}`,
//! unless the list's pages are fewer: then it walks the list instead. When the list's length is
//! not known, the walk is tried within a budget of as many pages as there are identities to read,
//! and the identities it found are not read again; so a round costs at most twice the better
//! choice, and the first round that walks the whole list learns its length for the rest. Users
//! have no such list: one user read per Entra ID row still unconfirmed. A part already seen (the
//! identity, or the user) is not read again.
//!
//! When: the first round starts at once; the next no sooner than the last one's reads take at
//! `--rate` and no sooner than a gap that doubles from 1 s to 30 s, and one last round is read at
//! the deadline. Every read goes through [`Reader::read`]: paced, retried, a 429 pausing its own
//! service only, Ctrl-C ending the rounds with what was seen kept.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::read::{LookupStop, ReadError, Reader, Service};
use crate::graph::identity::{Page, parse_identity, parse_user_state};
use crate::graph::model::{Action, Provider};
use crate::outcome::Effect;
use crate::units::Rate;

/// The first gap between two rounds' starts; it doubles up to [`MAX_GAP`].
pub(crate) const FIRST_GAP: Duration = Duration::from_secs(1);
pub(crate) const MAX_GAP: Duration = Duration::from_secs(30);

/// One row acted on, to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acted {
    pub(crate) identity_account_id: String,
    pub(crate) account_id: String,
    pub(crate) provider: Option<Provider>,
    pub(crate) action: Action,
    /// When the action's request left.
    pub(crate) acted_at: Option<SystemTime>,
}

/// What the state must show for an action to have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    /// `isEnabled` (and, for an Entra ID account, the user's `accountEnabled`) is this.
    Enabled { enabled: bool, user_too: bool },
    /// The user's `signInSessionsValidFromDateTime` is at or after this second.
    SessionsSince(SystemTime),
}

impl Acted {
    /// What would show this row's action, or `None` when Graph shows nothing of it.
    pub(crate) fn sign(&self) -> Option<Sign> {
        let entra = self.provider == Some(Provider::EntraId);
        match self.action {
            Action::Disable => Some(Sign::Enabled {
                enabled: false,
                user_too: entra,
            }),
            Action::Enable => Some(Sign::Enabled {
                enabled: true,
                user_too: entra,
            }),
            Action::RevokeAllSessions if entra => {
                // Graph keeps the time in whole seconds: a revoke in the same second counts.
                let sent = self.acted_at.unwrap_or(SystemTime::UNIX_EPOCH);
                let whole = sent
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(Duration::ZERO, |d| Duration::from_secs(d.as_secs()));
                Some(Sign::SessionsSince(SystemTime::UNIX_EPOCH + whole))
            }
            _ => None,
        }
    }
}

/// Counts the progress display reads while the rounds go on.
#[derive(Debug, Default)]
pub(crate) struct ConfirmCounts {
    pub(crate) confirmed: AtomicU64,
    pub(crate) rounds: AtomicU64,
}

/// What the rounds found, row by row (in the order given), and what they cost.
#[derive(Debug, Default)]
pub(crate) struct Confirmation {
    /// `None`: not decided (the rounds were stopped before the deadline).
    pub(crate) effects: Vec<Option<(Effect, Option<SystemTime>)>>,
    pub(crate) rounds: u64,
    pub(crate) identity_reads: u64,
    pub(crate) page_reads: u64,
    pub(crate) user_reads: u64,
    /// Why the rounds stopped before the deadline: Ctrl-C, a 403, no token.
    pub(crate) stopped: Option<LookupStop>,
}

/// How long the identity list is, as far as the rounds know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListLength {
    Unknown,
    /// A walk ended after this many pages.
    Pages(u64),
    /// A walk of this many pages did not end.
    MoreThan(u64),
}

/// One row still to be seen: which parts are still missing.
#[derive(Debug, Clone, Copy)]
struct Open {
    sign: Sign,
    identity_seen: bool,
    user_seen: bool,
}

/// Reads the rows' identities in rounds until each shows its action or `wait` has passed.
pub(crate) async fn confirm_effects(
    rows: &[Acted],
    reader: &Arc<Reader>,
    wait: Duration,
    rate: Rate,
    mut list: ListLength,
    counts: &ConfirmCounts,
    interrupt: &CancellationToken,
) -> Confirmation {
    let mut result = Confirmation {
        effects: vec![None; rows.len()],
        ..Confirmation::default()
    };
    let mut open: BTreeMap<usize, Open> = BTreeMap::new();
    for (at, row) in rows.iter().enumerate() {
        match row.sign() {
            None => result.effects[at] = Some((Effect::NotObservable, None)),
            Some(sign) => {
                let identity_seen = matches!(sign, Sign::SessionsSince(_));
                let user_seen = !matches!(
                    sign,
                    Sign::SessionsSince(_) | Sign::Enabled { user_too: true, .. }
                );
                open.insert(
                    at,
                    Open {
                        sign,
                        identity_seen,
                        user_seen,
                    },
                );
            }
        }
    }
    info!(
        rows = rows.len(),
        observable = open.len(),
        waitSeconds = wait.as_secs_f64(),
        "confirming the effect of each action"
    );
    let deadline = Instant::now() + wait;
    let mut gap = FIRST_GAP;
    while !open.is_empty() {
        let round_start = Instant::now();
        let cost = match round(rows, &mut open, reader, &mut list, &mut result).await {
            Ok(cost) => cost,
            Err(stop) => {
                result.stopped = Some(stop);
                break;
            }
        };
        result.rounds += 1;
        counts.rounds.store(result.rounds, Ordering::Relaxed);
        counts.confirmed.store(
            result
                .effects
                .iter()
                .filter(|e| matches!(e, Some((Effect::Confirmed, _))))
                .count() as u64,
            Ordering::Relaxed,
        );
        if open.is_empty() || Instant::now() >= deadline {
            break;
        }
        // A round never outruns the rate: the next starts no sooner than this one's reads take.
        let paced = Duration::from_secs_f64(
            cost as f64 * rate.per.as_secs_f64() / f64::from(rate.count.get()),
        );
        let next = (round_start + gap.max(paced)).min(deadline);
        gap = (gap * 2).min(MAX_GAP);
        tokio::select! {
            biased;
            () = interrupt.cancelled() => {
                result.stopped = Some(LookupStop::Interrupted);
                break;
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
    if result.stopped.is_none() {
        for at in open.keys() {
            result.effects[*at] = Some((Effect::NotConfirmed, None));
        }
    }
    result
}

/// What one read answered.
enum Answer {
    /// An identity's `isEnabled`, by id.
    Identity(String, Option<bool>),
    /// A user's state, by object id (lowercased).
    User(String, Option<bool>, Option<SystemTime>),
    /// A read that failed for good this round, or found nothing: nothing seen.
    Nothing,
}

/// One round: the reads the open rows need; returns how many requests it sent.
async fn round(
    rows: &[Acted],
    open: &mut BTreeMap<usize, Open>,
    reader: &Arc<Reader>,
    list: &mut ListLength,
    result: &mut Confirmation,
) -> Result<u64, LookupStop> {
    let before = reader.stats().reads();
    let mut identities: HashSet<&str> = open
        .iter()
        .filter(|(_, o)| !o.identity_seen)
        .map(|(at, _)| rows[*at].identity_account_id.as_str())
        .collect();
    let users: HashSet<String> = open
        .iter()
        .filter(|(_, o)| !o.user_seen)
        .map(|(at, _)| rows[*at].account_id.to_ascii_lowercase())
        .collect();
    let wanted = identities.len() as u64;
    let mut seen_enabled: std::collections::HashMap<String, Option<bool>> =
        std::collections::HashMap::new();
    // Users first: they have no list, and their reads go on while the list is walked.
    let mut reads = JoinSet::new();
    for object_id in users {
        let reader = reader.clone();
        reads.spawn(async move { read_user(&reader, object_id).await });
    }
    let walk = match *list {
        ListLength::Pages(pages) => (pages < wanted).then_some(None),
        ListLength::MoreThan(pages) => (pages < wanted).then_some(Some(wanted)),
        ListLength::Unknown => (wanted > 0).then_some(Some(wanted)),
    };
    if let Some(budget) = walk {
        // A stop (Ctrl-C, 403) ends the users' reads too: the JoinSet aborts them when dropped.
        let (pages, ended) = walk_list(reader, budget, &mut seen_enabled).await?;
        result.page_reads += pages;
        *list = if ended {
            ListLength::Pages(pages)
        } else {
            ListLength::MoreThan(pages)
        };
        if ended {
            // The whole list was read: an identity not on it is gone, and reading it alone
            // would say no more.
            identities.clear();
        } else {
            identities.retain(|id| !seen_enabled.contains_key(*id));
        }
    }
    for id in identities {
        let (reader, id) = (reader.clone(), id.to_owned());
        reads.spawn(async move { read_identity(&reader, id).await });
    }
    let mut seen_users: std::collections::HashMap<String, (Option<bool>, Option<SystemTime>)> =
        std::collections::HashMap::new();
    let mut stop = None;
    while let Some(joined) = reads.join_next().await {
        match joined {
            Ok(Ok(Answer::Identity(id, enabled))) => {
                result.identity_reads += 1;
                seen_enabled.insert(id, enabled);
            }
            Ok(Ok(Answer::User(id, enabled, valid_from))) => {
                result.user_reads += 1;
                seen_users.insert(id, (enabled, valid_from));
            }
            Ok(Ok(Answer::Nothing)) => {}
            // The first reason wins; the other reads end on their own.
            Ok(Err(why)) => {
                stop.get_or_insert(why);
            }
            Err(error) => warn!(error = %error, "a read of the confirm phase stopped unexpectedly"),
        }
    }
    // What was seen counts even when the round was cut short: Ctrl-C keeps what was confirmed.
    let now = SystemTime::now();
    open.retain(|at, state| {
        let row = &rows[*at];
        if !state.identity_seen
            && let Some(Some(enabled)) = seen_enabled.get(&row.identity_account_id)
            && let Sign::Enabled {
                enabled: wanted, ..
            } = state.sign
        {
            state.identity_seen = *enabled == wanted;
        }
        if !state.user_seen
            && let Some((enabled, valid_from)) =
                seen_users.get(&row.account_id.to_ascii_lowercase())
        {
            state.user_seen = match state.sign {
                Sign::Enabled {
                    enabled: wanted, ..
                } => *enabled == Some(wanted),
                Sign::SessionsSince(since) => valid_from.is_some_and(|from| from >= since),
            };
        }
        let done = state.identity_seen && state.user_seen;
        if done {
            result.effects[*at] = Some((Effect::Confirmed, Some(now)));
        }
        !done
    });
    match stop {
        Some(why) => Err(why),
        None => Ok(reader.stats().reads() - before),
    }
}

/// Walks the list until it ends or `budget` pages (`None`: no budget) have been read, noting
/// every identity's `isEnabled`. Returns the pages read and whether the list ended.
async fn walk_list(
    reader: &Reader,
    budget: Option<u64>,
    seen: &mut std::collections::HashMap<String, Option<bool>>,
) -> Result<(u64, bool), LookupStop> {
    let mut url = reader.client().identity_list_url(None);
    let mut pages = 0;
    loop {
        if budget.is_some_and(|budget| pages >= budget) {
            return Ok((pages, false));
        }
        let body = match reader.read(Service::Security, url).await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok((pages, false)),
            Err(ReadError::Stop(stop)) => return Err(stop),
            Err(ReadError::Failed(error)) => {
                warn!(error = %error, "a page of the identity list could not be read; its identities are read one by one");
                return Ok((pages, false));
            }
        };
        pages += 1;
        let page = match Page::parse(&body) {
            Ok(page) => page,
            Err(error) => {
                warn!(error = %error, "a page of the identity list is not readable; its identities are read one by one");
                return Ok((pages, false));
            }
        };
        for fetched in page.identities {
            seen.insert(fetched.identity.id, fetched.identity.is_enabled);
        }
        match page.next_link {
            None => return Ok((pages, true)),
            Some(link) => match reader.client().next_link(&link) {
                Ok(next) => url = next,
                Err(error) => {
                    warn!(error = %error, "the list's next page cannot be followed; identities are read one by one");
                    return Ok((pages, false));
                }
            },
        }
    }
}

async fn read_identity(reader: &Reader, id: String) -> Result<Answer, LookupStop> {
    let _slot = reader.slot().await;
    let url = match reader.client().identity_url(&id) {
        Ok(url) => url,
        Err(error) => {
            warn!(identityAccountId = %crate::sanitize::printable(&id), error = %error, "cannot read the identity");
            return Ok(Answer::Nothing);
        }
    };
    match reader.read(Service::Security, url).await {
        Ok(Some(body)) => match parse_identity(&body) {
            Ok(fetched) => Ok(Answer::Identity(id, fetched.identity.is_enabled)),
            Err(error) => {
                warn!(error = %error, "an identity read back is not readable");
                Ok(Answer::Nothing)
            }
        },
        Ok(None) => {
            warn!(identityAccountId = %crate::sanitize::printable(&id), "the identity acted on is not found any more");
            Ok(Answer::Nothing)
        }
        Err(ReadError::Stop(stop)) => Err(stop),
        Err(ReadError::Failed(error)) => {
            warn!(error = %error, "an identity could not be read back this round");
            Ok(Answer::Nothing)
        }
    }
}

/// The fields a user read of the confirm phase selects.
const USER_STATE_SELECT: &str = "id,accountEnabled,signInSessionsValidFromDateTime";

async fn read_user(reader: &Reader, object_id: String) -> Result<Answer, LookupStop> {
    let _slot = reader.slot().await;
    let mut url = match reader.client().user_url(&object_id) {
        Ok(url) => url,
        Err(error) => {
            warn!(error = %error, "cannot read the Entra user");
            return Ok(Answer::Nothing);
        }
    };
    url.query_pairs_mut()
        .clear()
        .append_pair("$select", USER_STATE_SELECT);
    match reader.read(Service::Users, url).await {
        Ok(Some(body)) => match parse_user_state(&body) {
            Ok(state) => {
                let valid_from = state
                    .sign_in_sessions_valid_from_date_time
                    .as_deref()
                    .and_then(|text| {
                        humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
                    });
                Ok(Answer::User(object_id, state.account_enabled, valid_from))
            }
            Err(error) => {
                warn!(error = %error, "an Entra user read back is not readable");
                Ok(Answer::Nothing)
            }
        },
        Ok(None) => {
            warn!("the Entra user acted on is not found any more");
            Ok(Answer::Nothing)
        }
        Err(ReadError::Stop(stop)) => Err(stop),
        Err(ReadError::Failed(error)) => {
            warn!(error = %error, "an Entra user could not be read back this round");
            Ok(Answer::Nothing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acted(action: Action, provider: Provider) -> Acted {
        Acted {
            identity_account_id: "i".into(),
            account_id: "a".into(),
            provider: Some(provider),
            action,
            acted_at: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(10_700)),
        }
    }

    #[test]
    fn issue_19_only_documented_state_shows_an_effect() {
        assert_eq!(
            acted(Action::Disable, Provider::ActiveDirectory).sign(),
            Some(Sign::Enabled {
                enabled: false,
                user_too: false
            })
        );
        assert_eq!(
            acted(Action::Enable, Provider::EntraId).sign(),
            Some(Sign::Enabled {
                enabled: true,
                user_too: true
            })
        );
        // Whole seconds, as Graph keeps them: a revoke in the same second counts.
        assert_eq!(
            acted(Action::RevokeAllSessions, Provider::EntraId).sign(),
            Some(Sign::SessionsSince(
                SystemTime::UNIX_EPOCH + Duration::from_secs(10)
            ))
        );
        for (action, provider) in [
            (Action::ForcePasswordReset, Provider::ActiveDirectory),
            (Action::RevokeAllSessions, Provider::Okta),
            (Action::RequireUserToSignInAgain, Provider::EntraId),
            (Action::MarkUserAsCompromised, Provider::EntraId),
        ] {
            assert_eq!(acted(action, provider).sign(), None, "{action:?}");
        }
    }
}
