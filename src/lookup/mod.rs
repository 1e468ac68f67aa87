//! Looking identities up (SPEC section 8): the reads `run` and `resolve` send before the first
//! action, for the rows that name a person by UPN, on-premises SID or Entra object id (or, with
//! `--verify`, for every row). Owns which reads to send and in what order; [`directory`] holds
//! what they found, [`resolve`] settles a looked-up row from it, and [`decide`] decides every
//! row, looked up or not, for `validate`, `resolve`, the plan `run` confirms and its feed.
//!
//! Only documented queries are sent: `GET identityAccounts/{id}`, the list filtered by
//! `onPremisesSecurityIdentifier eq '{sid}'`, `GET /users/{id | upn}` with `$select`, and the list
//! itself, paged by following `@odata.nextLink` whole. Reads are paced by `--rate`, retried by
//! the same policy as actions, and a 429 pauses the reads of its own service only (`/security`
//! and `/users` are throttled apart).
//!
//! Which reads: identities named by id or SID cost one read each, and those named by UPN or
//! object id two (the user, then its SID); a cloud-only user (no SID) can be found only among
//! the list's identities. The list is walked first, for at most as many pages as those
//! per-identity reads would number: if it ends within that budget, it answers every row and the
//! per-identity reads are not sent. Otherwise the per-identity reads go out, and the rest of the
//! list is walked only if a cloud-only user needs it. So a spreadsheet naming much of a tenant
//! costs the list's pages, a short one its per-identity reads, and neither more than twice what
//! the better choice would have cost.
//!
//! The walk is a [`walk::Walk`]: bounded, refusing a link already followed (issue 16). Its
//! second leg holds only the identities a row can name (the users are read by then), so a
//! tenant's worth of pages costs no memory beyond them. A walk that cannot finish is quiet until
//! a row needs the rest of the list: those rows are refused `lookupFailed`, with the reason.
//! A stop (a 403, a throttle past `--max-retry-wait`, no token) ends every read at once.

pub(crate) mod confirm;
pub(crate) mod decide;
pub(crate) mod directory;
pub(crate) mod guard;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod property_tests;
mod read;
pub(crate) mod resolve;
pub(crate) mod walk;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub(crate) use directory::Directory;
pub(crate) use read::{LookupStop, ReadCounts, Reader, Service};

use crate::graph::client::MAX_BODY;
use crate::graph::identity::{Identity, Page, parse_identity, parse_user};
use crate::input::{AccountScope, IdentityColumn, Job, Row};
use crate::sanitize::printable;
use directory::key;
use read::ReadError;
use resolve::Refusal;
use walk::{Parsed, Walk, WalkError, WalkStop};

/// The distinct keys the rows ask about, by how they name the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wanted {
    ids: BTreeSet<String>,
    sids: BTreeSet<String>,
    object_ids: BTreeSet<String>,
    upns: BTreeSet<String>,
    /// UPNs a row fills besides the column that names its identity: read only if the identity
    /// found carries no `userPrincipalName` to compare with.
    check_upns: BTreeSet<String>,
    /// Rows that will be looked up.
    pub(crate) rows: u64,
}

impl Wanted {
    /// Notes what `row` will ask. Rows that carry all three ids ask nothing unless `verify`.
    pub(crate) fn add(&mut self, row: &Row, verify: bool) {
        if row.as_given().is_some() && !verify {
            return;
        }
        let Some((column, value)) = row.names_identity_by() else {
            return;
        };
        self.rows += 1;
        let value = key(value);
        match column {
            IdentityColumn::IdentityAccountId => self.ids.insert(value),
            IdentityColumn::Sid => self.sids.insert(value),
            IdentityColumn::ObjectId => self.object_ids.insert(value),
            IdentityColumn::Upn => self.upns.insert(value),
        };
        if column != IdentityColumn::Upn
            && let Some(upn) = &row.upn
        {
            self.check_upns.insert(key(upn));
        }
    }

    /// Whether some rows name people by UPN or object id, which are read from `/users` (and so
    /// need User.Read.All; issue 18).
    pub(crate) fn reads_users(&self) -> bool {
        !self.upns.is_empty() || !self.object_ids.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The reads the per-identity way would send: one for an id or a SID, two for a UPN or an
    /// object id (the user, then the identity by its SID).
    pub(crate) fn per_identity_reads(&self) -> u64 {
        (self.ids.len() + self.sids.len()) as u64
            + 2 * (self.upns.len() + self.object_ids.len()) as u64
    }

    /// Distinct identities asked about, for messages.
    pub(crate) fn identities(&self) -> usize {
        self.ids.len() + self.sids.len() + self.upns.len() + self.object_ids.len()
    }
}

/// What becomes of a looked-up row before anything is sent.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Send it, with the ids the lookup found.
    Send(Job),
    /// Refused (SPEC section 8): the row's record, and why.
    Refused(Job, Refusal),
}

/// Settles a row the lookup answered, account by account: its ids as found, or refused (SPEC
/// section 8). One account, unless the row acts on all of the person's (issue 20), where
/// `sent_earlier` names the accounts an earlier run sent. Whether a row is looked up at all is
/// for [`decide::Decider`].
pub(crate) fn settle(
    row: &Row,
    directory: &Directory,
    sent_earlier: &dyn Fn(&Job) -> bool,
) -> Vec<Settled> {
    let refused = |refusal: Refusal| vec![Settled::Refused(refusal.record(row), refusal)];
    match row.accounts {
        AccountScope::One => match resolve::resolve(row, directory) {
            Ok(resolved) => vec![Settled::Send(resolved.job)],
            Err(refusal) => refused(refusal),
        },
        AccountScope::All => match resolve::resolve_all(row, directory, sent_earlier) {
            Ok(reached) => reached
                .into_iter()
                .map(|reached| match reached {
                    resolve::Reached::Send(job) => Settled::Send(job),
                    resolve::Reached::Refused(job, refusal) => Settled::Refused(job, refusal),
                })
                .collect(),
            Err(refusal) => refused(refusal),
        },
    }
}

/// What the lookup did, for the log and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Strategy {
    /// The per-identity reads the rows needed: the walk's budget.
    pub(crate) per_identity_reads: u64,
    /// Pages of the list walked.
    pub(crate) pages: u64,
    /// Whether the whole list was walked.
    pub(crate) walked_whole_list: bool,
}

/// Sends the reads `wanted` needs and returns what they found.
pub(crate) async fn look_up(
    wanted: &Wanted,
    reader: &Arc<Reader>,
) -> Result<(Directory, Strategy), LookupStop> {
    let mut directory = Directory::default();
    let mut strategy = Strategy {
        per_identity_reads: wanted.per_identity_reads(),
        ..Strategy::default()
    };
    info!(
        rows = wanted.rows,
        identities = wanted.identities(),
        perIdentityReads = strategy.per_identity_reads,
        "looking identities up"
    );
    let mut walk = ListWalk::new(reader);
    // The list first, within the budget of the reads it would save.
    walk.go(
        reader,
        &mut directory,
        Some(strategy.per_identity_reads),
        None,
    )
    .await?;
    strategy.pages = walk.pages();
    if !directory.is_complete() {
        per_identity(wanted, reader, &mut directory).await?;
        // A cloud-only user (a user without an on-premises SID) is found only in the list;
        // this leg holds only the identities a row can name (issue 16).
        if needs_index(wanted, &directory) {
            let keys = index_keys(wanted, &directory);
            walk.go(reader, &mut directory, None, Some(&keys)).await?;
            strategy.pages = walk.pages();
            if let Some(error) = walk.failure() {
                warn!(error = %error, "the identity list could not be read whole; rows naming a user without an on-premises SID are refused (lookupFailed)");
                directory.note_list_failure(error.to_string());
            }
        }
    } else {
        // The whole list is known; a UPN Graph's identities do not carry still needs its user.
        let users: Vec<String> = wanted
            .upns
            .iter()
            .filter(|upn| !directory.knows_upn_in_index(upn))
            .cloned()
            .collect();
        read_users(&users, reader, &mut directory).await?;
    }
    strategy.walked_whole_list = directory.is_complete();
    // UPNs to compare with identities that carry none of their own.
    let checks: Vec<String> = wanted
        .check_upns
        .iter()
        .filter(|upn| !directory.knows_user(upn) && !directory.knows_upn_in_index(upn))
        .cloned()
        .collect();
    read_users(&checks, reader, &mut directory).await?;
    info!(
        identities = directory.identities().len(),
        pages = strategy.pages,
        wholeList = strategy.walked_whole_list,
        reads = reader.stats().reads(),
        "identities looked up"
    );
    Ok((directory, strategy))
}

/// The identities an unfiltered walk may hold: the first walk keeps every identity it reads
/// (the users the rows name are not read yet, so it cannot tell whom they will need), and past
/// this many it stops as if its budget were spent (issue 16: endless pages of new identities
/// reached 10 GB). The per-identity reads, and a filtered walk if a cloud-only user needs one,
/// go on from there.
const MAX_HELD_UNFILTERED: usize = 100_000;

/// The walk of the identity list, kept between its two legs.
struct ListWalk {
    walk: Walk,
}

impl ListWalk {
    fn new(reader: &Reader) -> ListWalk {
        ListWalk {
            walk: Walk::new(
                "the identity list",
                reader.client().identity_list_url(None),
                reader.walk_limits(),
            ),
        }
    }

    fn pages(&self) -> u64 {
        self.walk.pages()
    }

    fn failure(&self) -> Option<&WalkError> {
        self.walk.failure()
    }

    /// Walks on until the list ends or fails, or until `budget` pages have been read in all.
    /// `keep`: the keys of the identities worth holding, or `None` to hold every one (up to
    /// [`MAX_HELD_UNFILTERED`]). A page that cannot be read ends the walk, not the lookup: the
    /// rows that needed the rest of the list are refused (`lookupFailed`).
    async fn go(
        &mut self,
        reader: &Reader,
        directory: &mut Directory,
        budget: Option<u64>,
        keep: Option<&HashSet<String>>,
    ) -> Result<(), LookupStop> {
        loop {
            if directory.is_complete()
                || self.walk.failure().is_some()
                || budget.is_some_and(|budget| self.walk.pages() >= budget)
                || (keep.is_none() && directory.identities().len() >= MAX_HELD_UNFILTERED)
            {
                return Ok(());
            }
            let page = match self.walk.next(reader, Service::Security, parse_page).await {
                Ok(Some(page)) => page,
                Ok(None) => {
                    directory.note_complete();
                    return Ok(());
                }
                Err(WalkStop::Stop(stop)) => return Err(stop),
                Err(WalkStop::Failed(error)) => {
                    // Said only if a row needs the rest of the list (see `look_up`).
                    debug!(error = %error, "the identity list's walk stopped");
                    return Ok(());
                }
            };
            for fetched in page.identities {
                if keep.is_none_or(|keys| wanted_identity(&fetched.identity, keys)) {
                    directory.add(fetched);
                }
            }
            for spoiled in page.spoiled {
                directory.note_spoiled(spoiled, keep);
            }
            if self.walk.ended() {
                directory.note_complete();
            }
        }
    }
}

/// A page of the identity list, for [`Walk::next`].
fn parse_page(body: &[u8]) -> Result<Parsed<Page>, String> {
    let mut page = Page::parse(body).map_err(|error| error.to_string())?;
    Ok(Parsed {
        entries: (page.identities.len() + page.spoiled.len()) as u64,
        next_link: page.next_link.take(),
        items: page,
    })
}

/// Whether any name of `identity` is one of `keys`.
fn wanted_identity(identity: &Identity, keys: &HashSet<String>) -> bool {
    let own = [
        Some(identity.id.as_str()),
        identity.on_premises_security_identifier.as_deref(),
        identity.user_principal_name.as_deref(),
    ];
    own.into_iter()
        .flatten()
        .chain(identity.entra_object_ids())
        .any(|name| keys.contains(&key(name)))
}

/// Every key a row may ask the index about once the users are read: what the rows name, and
/// the object ids, UPNs and SIDs of the users read for them.
fn index_keys(wanted: &Wanted, directory: &Directory) -> HashSet<String> {
    let mut keys: HashSet<String> = wanted
        .ids
        .iter()
        .chain(&wanted.sids)
        .chain(&wanted.object_ids)
        .chain(&wanted.upns)
        .chain(&wanted.check_upns)
        .cloned()
        .collect();
    for looked_up_by in wanted.upns.iter().chain(&wanted.object_ids) {
        if let Some(Some(user)) = directory.user(looked_up_by) {
            let names = [
                Some(&user.id),
                user.user_principal_name.as_ref(),
                user.on_premises_security_identifier.as_ref(),
            ];
            keys.extend(names.into_iter().flatten().map(|name| key(name)));
        }
    }
    keys
}

/// Whether a user the rows name was found without an on-premises SID, so that only the list's
/// Entra ID accounts can tell whose it is.
fn needs_index(wanted: &Wanted, directory: &Directory) -> bool {
    wanted
        .upns
        .iter()
        .chain(&wanted.object_ids)
        .any(|looked_up_by| {
            matches!(directory.user(looked_up_by), Some(Some(user)) if user.on_premises_security_identifier.is_none())
        })
}

/// One read per identity: ids, SIDs and users at once, then the SIDs the users carry.
async fn per_identity(
    wanted: &Wanted,
    reader: &Arc<Reader>,
    directory: &mut Directory,
) -> Result<(), LookupStop> {
    let users: Vec<String> = wanted
        .upns
        .iter()
        .chain(&wanted.object_ids)
        .cloned()
        .collect();
    let mut reads = JoinSet::new();
    // Users first: the SIDs they carry need reads of their own, so they are the longer path.
    for user in users {
        reads.spawn(read_one(reader.clone(), Ask::User(user)));
    }
    for id in &wanted.ids {
        reads.spawn(read_one(reader.clone(), Ask::Id(id.clone())));
    }
    for sid in &wanted.sids {
        reads.spawn(read_one(reader.clone(), Ask::Sid(sid.clone())));
    }
    collect(&mut reads, directory).await?;
    // The identities of hybrid users, by the SID their user carries.
    let learned: BTreeSet<String> = wanted
        .upns
        .iter()
        .chain(&wanted.object_ids)
        .filter_map(|looked_up_by| match directory.user(looked_up_by) {
            Some(Some(user)) => user.on_premises_security_identifier.as_deref().map(key),
            _ => None,
        })
        .filter(|sid| !directory.knows_sid(sid))
        .collect();
    for sid in learned {
        reads.spawn(read_one(reader.clone(), Ask::Sid(sid)));
    }
    collect(&mut reads, directory).await
}

async fn read_users(
    users: &[String],
    reader: &Arc<Reader>,
    directory: &mut Directory,
) -> Result<(), LookupStop> {
    let mut reads = JoinSet::new();
    for user in users {
        reads.spawn(read_one(reader.clone(), Ask::User(user.clone())));
    }
    collect(&mut reads, directory).await
}

/// One question to Graph.
#[derive(Debug, Clone)]
enum Ask {
    Id(String),
    Sid(String),
    User(String),
}

impl Ask {
    /// The read, for messages.
    fn read(&self) -> String {
        match self {
            Ask::Id(id) => format!("the read of identityAccounts/{}", printable(id)),
            Ask::Sid(sid) => format!(
                "the identity list filtered by onPremisesSecurityIdentifier eq '{}'",
                printable(sid)
            ),
            Ask::User(user) => format!("the read of /users/{}", printable(user)),
        }
    }
}

/// What one read answered.
enum Answer {
    Identity(crate::graph::identity::Fetched),
    MissingId(String),
    Sid(String, Vec<crate::graph::identity::Fetched>),
    User(String, Option<crate::graph::identity::User>),
    Failed(String, String),
}

/// Sends one read (with its retries); the reader's semaphore bounds how many run at once.
async fn read_one(reader: Arc<Reader>, ask: Ask) -> Result<Answer, LookupStop> {
    let _slot = reader.slot().await;
    let (service, url, asked) = match &ask {
        Ask::Id(id) => (Service::Security, reader.client().identity_url(id), id),
        Ask::Sid(sid) => (
            Service::Security,
            Ok(reader
                .client()
                .identity_list_url(Some(&sid.to_ascii_uppercase()))),
            sid,
        ),
        Ask::User(user) => (Service::Users, reader.client().user_url(user), user),
    };
    // Every failure says which read it was (issue 16).
    let failed = |error: String| Answer::Failed(asked.clone(), format!("{}: {error}", ask.read()));
    let url = match url {
        Ok(url) => url,
        Err(error) => return Ok(failed(error.to_string())),
    };
    let body = match reader.read(service, url).await {
        Ok(Some(body)) if body.len() >= MAX_BODY => {
            return Ok(failed(format!(
                "the answer is larger than the {} MiB a read may be, so it is not read",
                MAX_BODY >> 20
            )));
        }
        Ok(body) => body,
        Err(ReadError::Stop(stop)) => return Err(stop),
        Err(ReadError::Failed(error)) => return Ok(failed(error.to_string())),
    };
    let shape = |error: crate::graph::identity::ShapeError| failed(error.to_string());
    Ok(match (ask.clone(), body) {
        (Ask::Id(id), None) => Answer::MissingId(id),
        (Ask::Id(_), Some(body)) => match parse_identity(&body) {
            Ok(fetched) => Answer::Identity(fetched),
            Err(error) => shape(error),
        },
        // The list is always there: a 404 says the read went wrong, not that nobody has the SID.
        (Ask::Sid(_), None) => failed("answered 404 (not found)".to_owned()),
        (Ask::Sid(sid), Some(body)) => match Page::parse(&body) {
            // An entry that is not an identity may be the one with this SID.
            Ok(page) if !page.spoiled.is_empty() => failed(format!(
                "an entry of the answer is not an identity ({})",
                printable(&page.spoiled[0].reason)
            )),
            Ok(page) => Answer::Sid(sid, page.identities),
            Err(error) => shape(error),
        },
        (Ask::User(user), None) => Answer::User(user, None),
        (Ask::User(user), Some(body)) => match parse_user(&body) {
            Ok(found) => match another_user(&user, &found) {
                Some(other) => failed(other),
                None => Answer::User(user, Some(found)),
            },
            Err(error) => shape(error),
        },
    })
}

/// How the user Graph answered with is not the one asked for by UPN (compared ignoring case)
/// or object id (the same GUID), if it is not (issue 16: the other user was acted on).
fn another_user(asked: &str, found: &crate::graph::identity::User) -> Option<String> {
    let same = if asked.contains('@') {
        found
            .user_principal_name
            .as_deref()
            .is_some_and(|upn| upn.trim().eq_ignore_ascii_case(asked))
    } else {
        found.id == asked
            || matches!(
                (uuid::Uuid::try_parse(asked), uuid::Uuid::try_parse(&found.id)),
                (Ok(asked), Ok(found)) if asked == found
            )
    };
    (!same).then(|| {
        format!(
            "Graph answered with another user ({} {}); nothing is sent for it",
            printable(&found.id),
            printable(
                found
                    .user_principal_name
                    .as_deref()
                    .unwrap_or("without a UPN")
            )
        )
    })
}

async fn collect(
    reads: &mut JoinSet<Result<Answer, LookupStop>>,
    directory: &mut Directory,
) -> Result<(), LookupStop> {
    let mut stop = None;
    while let Some(joined) = reads.join_next().await {
        let answer = match joined {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => {
                // The first reason wins (the reader stops the other reads with it), but an
                // interrupt is what the operator asked for: it exits 130 (issue 16).
                if stop.is_none() || why == LookupStop::Interrupted {
                    stop = Some(why);
                }
                continue;
            }
            Err(error) => Answer::Failed(
                String::new(),
                format!("a read stopped unexpectedly: {error}"),
            ),
        };
        match answer {
            Answer::Identity(fetched) => {
                directory.add(fetched);
            }
            Answer::MissingId(id) => directory.note_missing_id(&id),
            Answer::Sid(sid, identities) => {
                for fetched in identities {
                    directory.add(fetched);
                }
                directory.note_sid_queried(&sid);
            }
            Answer::User(looked_up_by, user) => directory.note_user(&looked_up_by, user),
            Answer::Failed(asked, error) => directory.note_failure(&asked, error),
        }
    }
    match stop {
        Some(why) => Err(why),
        None => Ok(()),
    }
}
