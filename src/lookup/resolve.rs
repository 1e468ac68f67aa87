//! Which identity and which linked account a row names, and the six refusals (SPEC section 8),
//! as a pure function of the row and the [`Directory`] the lookup filled. No I/O.
//!
//! Which identity: by the first of `identityAccountId`, `sid`, `objectId`, `upn` the row fills.
//! Every other identity column the row fills must agree with the identity found, or the row is
//! refused (`identityMismatch`): a spreadsheet whose columns slipped must not disable the wrong
//! person. Which linked account: the row's `accountId`; else its provider; else the one account
//! whose actions offer the row's action. The chosen account must offer the action. A row that
//! acts on all of a person's accounts (issue 20, [`resolve_all`]) reaches each account that
//! offers it instead, and the privileged guard judges each account on its own.

use std::collections::BTreeSet;

use super::directory::{Directory, Found, Guarded, key};
use crate::graph::identity::{Fetched, Identity, LinkedAccount};
use crate::graph::model::Provider;
use crate::input::{IdentityColumn, Job, Row};
use crate::sanitize::printable;

/// Why a row sends no action: recorded `failed` with [`Refusal::code`] as its errorCode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    /// What to fix, for the errorMessage.
    pub(crate) message: String,
    /// The identity found, when the refusal came after finding it.
    pub(crate) identity_id: Option<String>,
    pub(crate) resolved_by: Option<IdentityColumn>,
}

pub(crate) const IDENTITY_NOT_FOUND: &str = "identityNotFound";
pub(crate) const IDENTITY_AMBIGUOUS: &str = "identityAmbiguous";
pub(crate) const ACCOUNT_NOT_FOUND: &str = "accountNotFound";
pub(crate) const ACCOUNT_AMBIGUOUS: &str = "accountAmbiguous";
pub(crate) const ACTION_NOT_OFFERED: &str = "actionNotOffered";
pub(crate) const IDENTITY_MISMATCH: &str = "identityMismatch";
/// The row reaches a person on a protect list (issue 13).
pub(crate) const PROTECTED_IDENTITY: &str = "protectedIdentity";
/// The row reaches a member of a privileged directory role that no `[allow]` entry names.
pub(crate) const PRIVILEGED_IDENTITY: &str = "privilegedIdentity";
/// A read the lookup needed failed for good (after its retries): the row is not guessed at.
pub(crate) const LOOKUP_FAILED: &str = "lookupFailed";

/// A row resolved: the job to send, and the identity it acts on (for the snapshot and
/// `resolve`'s output).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved<'d> {
    pub(crate) job: Job,
    pub(crate) identity: &'d Fetched,
    pub(crate) account: &'d LinkedAccount,
}

/// Resolves `row` against what the lookup found.
pub(crate) fn resolve<'d>(row: &Row, directory: &'d Directory) -> Result<Resolved<'d>, Refusal> {
    let (fetched, column) = identity_of(row, directory)?;
    let identity = &fetched.identity;
    let found = |code, message| Err(refusal(code, message, Some(&identity.id), Some(column)));
    // The guard first: a protected person is refused whatever else is wrong with the row.
    if let Some(guarded) = person_guarded(row, identity, directory) {
        let (code, message) = guard_refusal(&guarded, identity);
        return found(code, message);
    }
    if let Some(disagreement) = mismatch(row, column, identity, directory) {
        return found(IDENTITY_MISMATCH, disagreement);
    }
    let account = match choose_account(row, identity) {
        Ok(account) => account,
        Err((code, message)) => return found(code, message),
    };
    if !account.offers(row.action) {
        return found(ACTION_NOT_OFFERED, not_offered(row, identity, account));
    }
    Ok(Resolved {
        job: job_for(row, identity, account, column),
        identity: fetched,
        account,
    })
}

/// What one account of a row's fan-out comes to (issue 20).
#[derive(Debug)]
pub(crate) enum Reached {
    Send(Job),
    /// The guard refuses this account only: the person's other accounts go on.
    Refused(Job, Refusal),
}

/// Resolves a row that acts on every account of the person it names (`--all-accounts`, issue
/// 20): each linked account whose `actions` offer the row's action, narrowed by the row's
/// `accountId` and provider, and each account `sent_earlier` says an earlier run sent (it no
/// longer offers a `disable` it carried out: its record is carried over, or, when a crash left
/// its request unanswered, it is sent again, as any unanswered row is, and gets its record). The identity's
/// refusals are the row's, as for [`resolve`]; the privileged guard runs per account, since
/// analysts link a person's personal and admin accounts to one identity by hand.
pub(crate) fn resolve_all(
    row: &Row,
    directory: &Directory,
    sent_earlier: &dyn Fn(&Job) -> bool,
) -> Result<Vec<Reached>, Refusal> {
    let (fetched, column) = identity_of(row, directory)?;
    let identity = &fetched.identity;
    let found = |code, message| Err(refusal(code, message, Some(&identity.id), Some(column)));
    let person = person_guarded(row, identity, directory);
    if let Some(guarded @ Guarded::Protected(_)) = &person {
        let (code, message) = guard_refusal(guarded, identity);
        return found(code, message);
    }
    if let Some(disagreement) = mismatch(row, column, identity, directory) {
        return found(IDENTITY_MISMATCH, disagreement);
    }
    let jobs: Vec<(&LinkedAccount, Job)> = identity
        .accounts
        .iter()
        .filter(|account| {
            row.account_id
                .as_ref()
                .is_none_or(|id| account.identifier == *id)
        })
        .filter(|account| row.provider.is_none_or(|p| account.provider() == Some(p)))
        .filter(|account| account.provider().is_some())
        .map(|account| (account, job_for(row, identity, account, column)))
        .filter(|(account, job)| account.offers(row.action) || sent_earlier(job))
        .collect();
    if jobs.is_empty() {
        return match choose_account(row, identity) {
            Err((code, message)) => found(code, message),
            Ok(account) => found(ACTION_NOT_OFFERED, not_offered(row, identity, account)),
        };
    }
    let Some(Guarded::Privileged(roles)) = person else {
        return Ok(jobs
            .into_iter()
            .map(|(_, job)| Reached::Send(job))
            .collect());
    };
    // Which accounts hold the role: an Entra ID account by its object id, an Active Directory
    // account by the SID its synced user carries. When the guard cannot tell (the role came
    // by a name no account carries), every account is refused.
    let held: Vec<Option<Guarded>> = jobs
        .iter()
        .map(|(account, _)| directory.guard().check(&account_names(identity, account)))
        .collect();
    let none_held = held.iter().all(Option::is_none);
    Ok(jobs
        .into_iter()
        .zip(held)
        .map(|((account, job), held)| match (held, none_held) {
            (Some(Guarded::Privileged(roles)), _) => {
                let refusal = account_refusal(identity, account, &roles.join(", "), column);
                Reached::Refused(job, refusal)
            }
            (_, true) => {
                let message = format!(
                    "{} holds the privileged directory role {}, and which of their accounts holds it cannot be told; nothing is sent to any of them. To act on this person, name them in the [allow] section of a --protect file",
                    shown(identity),
                    roles.join(", ")
                );
                Reached::Refused(
                    job,
                    refusal(PRIVILEGED_IDENTITY, message, Some(&identity.id), Some(column)),
                )
            }
            _ => Reached::Send(job),
        })
        .collect())
}

/// The identity the row names, and the column that named it; or the row's refusal.
fn identity_of<'d>(
    row: &Row,
    directory: &'d Directory,
) -> Result<(&'d Fetched, IdentityColumn), Refusal> {
    let Some((column, value)) = row.names_identity_by() else {
        return Err(refusal(
            IDENTITY_NOT_FOUND,
            "the row names no identity (no identityAccountId, sid, objectId or upn)".to_owned(),
            None,
            None,
        ));
    };
    match find(column, value, directory) {
        Found::One(fetched) => Ok((fetched, column)),
        Found::None => {
            let message = format!(
                "no identity has {} {:?}; check the value (an identity appears in Defender for Identity once its account is known to it)",
                column.as_str(),
                printable(value)
            );
            Err(refusal(IDENTITY_NOT_FOUND, message, None, Some(column)))
        }
        Found::Many(count) => {
            let message = format!(
                "{count} identities have {} {:?}; name the identity by its identityAccountId instead",
                column.as_str(),
                printable(value)
            );
            Err(refusal(IDENTITY_AMBIGUOUS, message, None, Some(column)))
        }
        Found::Failed(error) => {
            let message = format!(
                "looking up {} {:?} failed ({error}); run again later with --resume",
                column.as_str(),
                printable(value)
            );
            Err(refusal(LOOKUP_FAILED, message, None, Some(column)))
        }
    }
}

/// Whether the guard refuses the person: by every name the row and the identity go by.
fn person_guarded(row: &Row, identity: &Identity, directory: &Directory) -> Option<Guarded> {
    if directory.guard().is_empty() {
        return None;
    }
    directory.guard().check(&directory.names_of(row, identity))
}

/// The refusal's code and message for a person the guard refuses.
fn guard_refusal(guarded: &Guarded, identity: &Identity) -> (&'static str, String) {
    let who = shown(identity);
    match guarded {
        Guarded::Protected(entry) => (
            PROTECTED_IDENTITY,
            format!(
                "{who} is on the protect list ({entry}); nothing is sent to it. Remove the entry if this person must be acted on"
            ),
        ),
        Guarded::Privileged(roles) => (
            PRIVILEGED_IDENTITY,
            format!(
                "{who} holds the privileged directory role {}; nothing is sent to it. To act on this person, name them in the [allow] section of a --protect file",
                roles.join(", ")
            ),
        ),
    }
}

/// The names one linked account goes by, as the guard's keys: its identifier (an Entra ID
/// account's is its user's object id, which a role assignment names) and, for an Active
/// Directory account, the identity's on-premises SID (a synced user who holds a role carries it).
fn account_names(identity: &Identity, account: &LinkedAccount) -> BTreeSet<String> {
    let mut names = BTreeSet::from([key(&account.identifier)]);
    if account.provider() == Some(Provider::ActiveDirectory)
        && let Some(sid) = &identity.on_premises_security_identifier
    {
        names.insert(key(sid));
    }
    names
}

/// One account of a fan-out refused for the privileged role it holds.
fn account_refusal(
    identity: &Identity,
    account: &LinkedAccount,
    roles: &str,
    column: IdentityColumn,
) -> Refusal {
    let message = format!(
        "the {} account {:?} of {} holds the privileged directory role {roles}; nothing is sent to it (the person's other accounts are acted on). To act on it, name it in the [allow] section of a --protect file",
        account.provider_name(),
        printable(&account.identifier),
        shown(identity)
    );
    refusal(
        PRIVILEGED_IDENTITY,
        message,
        Some(&identity.id),
        Some(column),
    )
}

/// The job that acts on `account` for `row`.
fn job_for(row: &Row, identity: &Identity, account: &LinkedAccount, column: IdentityColumn) -> Job {
    Job {
        row: row.line,
        identity_account_id: identity.id.clone(),
        account_id: account.identifier.clone(),
        action: row.action,
        provider: account.provider(),
        carry: row.carry.clone(),
        resolved_by: Some(column),
        earlier_attempts: 0,
    }
}

fn not_offered(row: &Row, identity: &Identity, account: &LinkedAccount) -> String {
    format!(
        "the {} account {:?} of {} does not offer {} (it offers: {}); pick another action or account",
        account.provider_name(),
        printable(&account.identifier),
        shown(identity),
        row.action,
        offered_or_none(account)
    )
}

/// The identities `column = value` names.
fn find<'d>(column: IdentityColumn, value: &str, directory: &'d Directory) -> Found<'d> {
    match column {
        IdentityColumn::IdentityAccountId => directory.by_id(value),
        IdentityColumn::Sid => directory.by_sid(value),
        IdentityColumn::ObjectId => {
            if directory.is_complete() {
                return directory.by_object_id_in_index(value);
            }
            through_user(value, directory)
        }
        IdentityColumn::Upn => {
            if directory.knows_upn_in_index(value) {
                return directory.by_upn_in_index(value);
            }
            through_user(value, directory)
        }
    }
}

/// The identity of the user read by this UPN or object id: by its on-premises SID, or, for a
/// cloud-only user, by its object id among the identities' Entra ID accounts.
fn through_user<'d>(looked_up_by: &str, directory: &'d Directory) -> Found<'d> {
    if let Some(failure) = directory.failure(looked_up_by) {
        return Found::Failed(failure);
    }
    match directory.user(looked_up_by) {
        None | Some(None) => Found::None,
        Some(Some(user)) => match &user.on_premises_security_identifier {
            Some(sid) => directory.by_sid(sid),
            None => directory.by_object_id_in_index(&user.id),
        },
    }
}

/// How the row's other identity columns disagree with the identity found, if they do.
fn mismatch(
    row: &Row,
    found_by: IdentityColumn,
    identity: &Identity,
    directory: &Directory,
) -> Option<String> {
    let shown = shown(identity);
    if let (Some(sid), false) = (&row.sid, found_by == IdentityColumn::Sid)
        && !identity.has_sid(sid)
    {
        return Some(format!(
            "the row's sid {:?} is not the on-premises SID of {shown} (found by {}: {}); check that the columns did not slip",
            printable(sid),
            found_by.as_str(),
            identity
                .on_premises_security_identifier
                .as_deref()
                .map_or("it has none".to_owned(), |own| format!("its SID is {own}"))
        ));
    }
    if let (Some(object_id), false) = (&row.object_id, found_by == IdentityColumn::ObjectId)
        && !identity.has_object_id(object_id)
    {
        return Some(format!(
            "the row's objectId {:?} is not an Entra ID account of {shown} (found by {}); check that the columns did not slip",
            printable(object_id),
            found_by.as_str()
        ));
    }
    if let (Some(upn), false) = (&row.upn, found_by == IdentityColumn::Upn)
        && !upn_names(upn, identity, directory)
    {
        return Some(format!(
            "the row's upn {:?} does not name {shown} (found by {}); check that the columns did not slip",
            printable(upn),
            found_by.as_str()
        ));
    }
    None
}

/// Whether `upn` is the identity's: its own `userPrincipalName` when Graph gave one, else the
/// user read by that UPN must be this identity (same SID, or one of its Entra ID accounts).
fn upn_names(upn: &str, identity: &Identity, directory: &Directory) -> bool {
    if let Some(own) = &identity.user_principal_name {
        return own.eq_ignore_ascii_case(upn.trim());
    }
    match directory.user(upn) {
        Some(Some(user)) => {
            user.on_premises_security_identifier
                .as_deref()
                .is_some_and(|sid| identity.has_sid(sid))
                || identity.has_object_id(&user.id)
        }
        _ => false,
    }
}

/// The linked account the row means (SPEC section 8, in order): its `accountId`; else its
/// provider; else the one account whose actions offer the row's action.
fn choose_account<'d>(
    row: &Row,
    identity: &'d Identity,
) -> Result<&'d LinkedAccount, (&'static str, String)> {
    let shown = shown(identity);
    if let Some(account_id) = &row.account_id {
        let matching: Vec<&LinkedAccount> = identity
            .accounts
            .iter()
            .filter(|account| account.identifier == *account_id)
            .filter(|account| row.provider.is_none() || account.provider() == row.provider)
            .collect();
        return match matching.as_slice() {
            [one] => Ok(one),
            [] => Err((
                ACCOUNT_NOT_FOUND,
                format!(
                    "{shown} has no linked account {:?}{} (its accounts: {}); check accountId",
                    printable(account_id),
                    row.provider
                        .map(|p| format!(" for {p}"))
                        .unwrap_or_default(),
                    accounts_listed(identity)
                ),
            )),
            many => Err((
                ACCOUNT_AMBIGUOUS,
                format!(
                    "{shown} has {} linked accounts {:?}; give identityProvider",
                    many.len(),
                    printable(account_id)
                ),
            )),
        };
    }
    if let Some(provider) = row.provider {
        let matching: Vec<&LinkedAccount> = identity
            .accounts
            .iter()
            .filter(|account| account.provider() == Some(provider))
            .collect();
        return match matching.as_slice() {
            [one] => Ok(one),
            [] => Err((
                ACCOUNT_NOT_FOUND,
                format!(
                    "{shown} has no {provider} account (its accounts: {}); check identityProvider (or --provider)",
                    accounts_listed(identity)
                ),
            )),
            many => Err((
                ACCOUNT_AMBIGUOUS,
                format!(
                    "{shown} has {} {provider} accounts; give accountId to pick one",
                    many.len()
                ),
            )),
        };
    }
    let offering: Vec<&LinkedAccount> = identity
        .accounts
        .iter()
        .filter(|account| account.offers(row.action))
        .collect();
    match offering.as_slice() {
        [one] => Ok(one),
        [] => Err((
            ACTION_NOT_OFFERED,
            format!(
                "no linked account of {shown} offers {} (its accounts: {}); pick another action",
                row.action,
                accounts_listed(identity)
            ),
        )),
        many => Err((
            ACCOUNT_AMBIGUOUS,
            format!(
                "{} linked accounts of {shown} offer {} ({}); give identityProvider (or --provider) to pick one",
                many.len(),
                row.action,
                many.iter()
                    .map(|account| account.provider_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The identity as a message names it: its display name and id.
fn shown(identity: &Identity) -> String {
    match &identity.display_name {
        Some(name) => format!("{} ({})", printable(name), printable(&identity.id)),
        None => format!("identity {}", printable(&identity.id)),
    }
}

fn accounts_listed(identity: &Identity) -> String {
    if identity.accounts.is_empty() {
        return "none".to_owned();
    }
    identity
        .accounts
        .iter()
        .map(|account| {
            format!(
                "{} {} offering {}",
                account.provider_name(),
                printable(&account.identifier),
                offered_or_none(account)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn offered_or_none(account: &LinkedAccount) -> String {
    let offered = account.offered();
    if offered.is_empty() {
        "nothing".to_owned()
    } else {
        offered.join(", ")
    }
}

fn refusal(
    code: &'static str,
    message: String,
    identity_id: Option<&str>,
    resolved_by: Option<IdentityColumn>,
) -> Refusal {
    Refusal {
        code,
        message,
        identity_id: identity_id.map(str::to_owned),
        resolved_by,
    }
}

impl Refusal {
    /// The row's record: what it gave, with the identity when one was found.
    pub(crate) fn record(&self, row: &Row) -> Job {
        let mut job = row.unresolved();
        if let Some(id) = &self.identity_id {
            job.identity_account_id = id.clone();
        }
        job.resolved_by = self.resolved_by;
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::identity::User;
    use crate::graph::model::{Action, Provider};

    fn account(provider: &str, identifier: &str, actions: &[&str]) -> LinkedAccount {
        LinkedAccount {
            identifier: identifier.to_owned(),
            identity_provider: provider.to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Jon: hybrid (SID, AD, Entra ID, Okta); Ann: cloud-only (Entra ID only, no SID).
    fn directory() -> Directory {
        let mut directory = Directory::default();
        let jon = Identity {
            id: "id-jon".into(),
            display_name: Some("Jon".into()),
            on_premises_security_identifier: Some("S-1-5-21-1-1001".into()),
            user_principal_name: Some("jon@contoso.com".into()),
            accounts: vec![
                account(
                    "ActiveDirectory",
                    "ad-jon",
                    &["disable", "forcePasswordReset"],
                ),
                account("EntraID", "oid-jon", &["disable", "revokeAllSessions"]),
                account("Okta", "00uJon", &["revokeAllSessions"]),
            ],
            ..Identity::default()
        };
        let ann = Identity {
            id: "id-ann".into(),
            display_name: Some("Ann".into()),
            accounts: vec![account("entraID", "oid-ann", &["Disable"])],
            ..Identity::default()
        };
        for identity in [jon, ann] {
            let raw = serde_json::to_value(&identity).unwrap();
            directory.add(Fetched { identity, raw });
        }
        directory.note_sid_queried("S-1-5-21-1-1001");
        directory.note_sid_queried("S-1-5-21-1-4040");
        directory.note_missing_id("id-gone");
        directory.note_user(
            "jon@contoso.com",
            Some(User {
                id: "oid-jon".into(),
                on_premises_security_identifier: Some("S-1-5-21-1-1001".into()),
                ..User::default()
            }),
        );
        directory.note_user(
            "oid-ann",
            Some(User {
                id: "oid-ann".into(),
                ..User::default()
            }),
        );
        directory.note_user("nobody@contoso.com", None);
        directory.note_complete();
        directory
    }

    fn row(action: Action) -> Row {
        Row {
            line: 2,
            identity_account_id: None,
            account_id: None,
            action,
            provider: None,
            sid: None,
            object_id: None,
            upn: None,
            accounts: crate::input::AccountScope::One,
            carry: vec![],
        }
    }

    #[test]
    fn each_identity_column_finds_its_identity() {
        let directory = directory();
        let cases = [
            (
                Row {
                    identity_account_id: Some("id-jon".into()),
                    ..row(Action::ForcePasswordReset)
                },
                IdentityColumn::IdentityAccountId,
            ),
            (
                Row {
                    sid: Some("s-1-5-21-1-1001".into()),
                    ..row(Action::ForcePasswordReset)
                },
                IdentityColumn::Sid,
            ),
            (
                Row {
                    upn: Some("JON@contoso.com".into()),
                    ..row(Action::ForcePasswordReset)
                },
                IdentityColumn::Upn,
            ),
            (
                Row {
                    object_id: Some("oid-jon".into()),
                    ..row(Action::ForcePasswordReset)
                },
                IdentityColumn::ObjectId,
            ),
        ];
        for (row, column) in cases {
            let resolved = resolve(&row, &directory).unwrap();
            assert_eq!(resolved.job.identity_account_id, "id-jon", "{column:?}");
            assert_eq!(resolved.job.resolved_by, Some(column));
            // Only the AD account offers forcePasswordReset: rule 3 picks it.
            assert_eq!(resolved.job.account_id, "ad-jon");
            assert_eq!(resolved.job.provider, Some(Provider::ActiveDirectory));
        }
    }

    /// The (provider, account) each account a fan-out reaches is sent to.
    fn fanned_out(row: &Row, sent_earlier: &dyn Fn(&Job) -> bool) -> Vec<(Provider, String)> {
        resolve_all(row, &directory(), sent_earlier)
            .unwrap()
            .into_iter()
            .map(|reached| match reached {
                Reached::Send(job) => (job.provider.unwrap(), job.account_id),
                Reached::Refused(_, refusal) => panic!("{refusal:?}"),
            })
            .collect()
    }

    #[test]
    fn issue_20_all_accounts_reaches_each_account_offering_the_action_narrowed_by_provider() {
        let by_upn = Row {
            upn: Some("jon@contoso.com".into()),
            accounts: crate::input::AccountScope::All,
            ..row(Action::Disable)
        };
        // Okta offers only revokeAllSessions: left out.
        assert_eq!(
            fanned_out(&by_upn, &|_| false),
            [
                (Provider::ActiveDirectory, "ad-jon".to_owned()),
                (Provider::EntraId, "oid-jon".to_owned())
            ]
        );
        let entra_only = Row {
            provider: Some(Provider::EntraId),
            ..by_upn.clone()
        };
        assert_eq!(
            fanned_out(&entra_only, &|_| false),
            [(Provider::EntraId, "oid-jon".to_owned())]
        );
        // An account an earlier run disabled no longer offers disable, and is still reached.
        let done = |job: &Job| job.provider == Some(Provider::Okta);
        assert_eq!(fanned_out(&by_upn, &done).len(), 3);
        // No account offering the action: the row's refusal, as for one account.
        let refusal = resolve_all(
            &Row {
                action: Action::MarkUserAsCompromised,
                ..by_upn
            },
            &directory(),
            &|_| false,
        )
        .unwrap_err();
        assert_eq!(refusal.code, ACTION_NOT_OFFERED);
    }

    #[test]
    fn a_cloud_only_user_is_found_by_its_object_id_among_the_entra_accounts() {
        let directory = directory();
        let resolved = resolve(
            &Row {
                object_id: Some("OID-ANN".into()),
                ..row(Action::Disable)
            },
            &directory,
        )
        .unwrap();
        assert_eq!(resolved.job.identity_account_id, "id-ann");
        assert_eq!(resolved.account.provider(), Some(Provider::EntraId));
        assert_eq!(resolved.job.provider, Some(Provider::EntraId));
    }

    fn refused(row: Row) -> Refusal {
        resolve(&row, &directory()).unwrap_err()
    }

    #[test]
    fn identity_not_found() {
        for row in [
            Row {
                identity_account_id: Some("id-gone".into()),
                ..row(Action::Disable)
            },
            Row {
                sid: Some("S-1-5-21-1-4040".into()),
                ..row(Action::Disable)
            },
            Row {
                upn: Some("nobody@contoso.com".into()),
                ..row(Action::Disable)
            },
        ] {
            let refusal = refused(row.clone());
            assert_eq!(refusal.code, IDENTITY_NOT_FOUND, "{row:?}");
            assert!(
                refusal.message.contains("check the value"),
                "{}",
                refusal.message
            );
        }
    }

    #[test]
    fn identity_ambiguous() {
        let mut directory = directory();
        let twin = Identity {
            id: "id-twin".into(),
            on_premises_security_identifier: Some("S-1-5-21-1-1001".into()),
            ..Identity::default()
        };
        directory.add(Fetched {
            raw: serde_json::to_value(&twin).unwrap(),
            identity: twin,
        });
        let refusal = resolve(
            &Row {
                sid: Some("S-1-5-21-1-1001".into()),
                ..row(Action::Disable)
            },
            &directory,
        )
        .unwrap_err();
        assert_eq!(refusal.code, IDENTITY_AMBIGUOUS);
        assert!(
            refusal.message.contains("identityAccountId"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn account_not_found() {
        let by_id = refused(Row {
            sid: Some("S-1-5-21-1-1001".into()),
            account_id: Some("no-such".into()),
            ..row(Action::Disable)
        });
        assert_eq!(by_id.code, ACCOUNT_NOT_FOUND);
        assert!(
            by_id.message.contains("check accountId"),
            "{}",
            by_id.message
        );
        assert_eq!(by_id.identity_id.as_deref(), Some("id-jon"));
        let by_provider = refused(Row {
            object_id: Some("oid-ann".into()),
            provider: Some(Provider::Okta),
            ..row(Action::Disable)
        });
        assert_eq!(by_provider.code, ACCOUNT_NOT_FOUND);
        assert!(
            by_provider.message.contains("no okta account"),
            "{}",
            by_provider.message
        );
    }

    #[test]
    fn account_ambiguous() {
        // Both the AD and the Entra ID account offer disable, and the row says neither.
        let refusal = refused(Row {
            upn: Some("jon@contoso.com".into()),
            ..row(Action::Disable)
        });
        assert_eq!(refusal.code, ACCOUNT_AMBIGUOUS);
        assert!(
            refusal.message.contains("give identityProvider"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn action_not_offered() {
        let by_provider = refused(Row {
            sid: Some("S-1-5-21-1-1001".into()),
            provider: Some(Provider::Okta),
            ..row(Action::Disable)
        });
        assert_eq!(by_provider.code, ACTION_NOT_OFFERED);
        assert!(
            by_provider.message.contains("offers: revokeAllSessions"),
            "{}",
            by_provider.message
        );
        let by_rule_three = refused(Row {
            object_id: Some("oid-ann".into()),
            ..row(Action::ForcePasswordReset)
        });
        assert_eq!(by_rule_three.code, ACTION_NOT_OFFERED);
    }

    #[test]
    fn identity_mismatch() {
        for row in [
            Row {
                sid: Some("S-1-5-21-1-1001".into()),
                upn: Some("someone.else@contoso.com".into()),
                ..row(Action::ForcePasswordReset)
            },
            Row {
                // Found by object id (it comes before upn); the UPN is another person's.
                object_id: Some("oid-jon".into()),
                upn: Some("ann@contoso.com".into()),
                ..row(Action::ForcePasswordReset)
            },
            Row {
                sid: Some("S-1-5-21-1-1001".into()),
                object_id: Some("oid-ann".into()),
                ..row(Action::ForcePasswordReset)
            },
        ] {
            let refusal = refused(row.clone());
            assert_eq!(refusal.code, IDENTITY_MISMATCH, "{row:?}");
            assert!(
                refusal.message.contains("did not slip"),
                "{}",
                refusal.message
            );
        }
        // Every column agreeing: resolved.
        assert!(
            resolve(
                &Row {
                    sid: Some("S-1-5-21-1-1001".into()),
                    object_id: Some("oid-jon".into()),
                    upn: Some("Jon@Contoso.com".into()),
                    ..row(Action::ForcePasswordReset)
                },
                &directory()
            )
            .is_ok()
        );
    }
}
