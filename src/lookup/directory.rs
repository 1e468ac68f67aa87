//! What the lookup found, held for the run: every identity read (by id, by the SID filter, or
//! from pages of the list), indexed by what rows name them by, and the users read by UPN or
//! object id. The directory answers "which identities does this name?" only where its answer is
//! complete: a SID the filter was asked about, an id that was read, or anything once the whole
//! list was walked. The lookup makes sure every question the rows will ask is answerable.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::graph::identity::{Fetched, Identity, Spoiled, User};
use crate::graph::model::Provider;
use crate::input::{Job, Row};
use crate::sanitize::printable;

/// Which identities a key names, as far as the directory knows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Found<'d> {
    One(&'d Fetched),
    None,
    /// More than one identity: the count.
    Many(usize),
    /// The read that would tell failed: why.
    Failed(&'d str),
}

/// Who the guardrails protect (issue 13), as the guard's reads found them: every name of a
/// protected or privileged person, as keys. Filled by [`super::guard::read_guard`]; empty when
/// no guardrail is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Guard {
    /// Name -> the protect entry (`FILE:LINE value`).
    protected: HashMap<String, String>,
    /// Name -> the privileged access held: each role, and how (eligible, through a group).
    privileged: HashMap<String, BTreeSet<String>>,
    /// Privileged people a protect file's `[allow]` section lets a run act on.
    allowed: HashSet<String>,
}

/// Why the guard refuses a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// On the protect list: the entry that names them.
    Protected(String),
    /// Holds these privileged roles, and is not allowed.
    Privileged(Vec<String>),
}

impl Guard {
    pub(crate) fn protect(&mut self, name: &str, entry: &str) {
        self.protected
            .entry(key(name))
            .or_insert_with(|| entry.to_owned());
    }

    pub(crate) fn privilege(&mut self, name: &str, role: &str) {
        self.privileged
            .entry(key(name))
            .or_default()
            .insert(role.to_owned());
    }

    pub(crate) fn allow(&mut self, name: &str) {
        self.allowed.insert(key(name));
    }

    /// People named, for the log: (protected names, privileged names).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.protected.len(), self.privileged.len())
    }

    /// Whether the guard refuses someone who goes by `names` (see [`Directory::names_of`]).
    /// Protection wins over an `[allow]` entry.
    pub(crate) fn check(&self, names: &BTreeSet<String>) -> Option<Guarded> {
        if let Some(entry) = names.iter().find_map(|name| self.protected.get(name)) {
            return Some(Guarded::Protected(entry.clone()));
        }
        if names.iter().any(|name| self.allowed.contains(name)) {
            return None;
        }
        let roles: BTreeSet<&String> = names
            .iter()
            .filter_map(|name| self.privileged.get(name))
            .flatten()
            .collect();
        (!roles.is_empty()).then(|| Guarded::Privileged(roles.into_iter().cloned().collect()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.protected.is_empty() && self.privileged.is_empty()
    }
}

/// Keys are compared as Graph compares them: SIDs, GUIDs and UPNs ignoring case.
pub(crate) fn key(text: &str) -> String {
    text.trim().to_ascii_lowercase()
}

#[derive(Debug, Default)]
pub(crate) struct Directory {
    identities: Vec<Fetched>,
    by_id: HashMap<String, usize>,
    by_sid: HashMap<String, Vec<usize>>,
    by_object_id: HashMap<String, Vec<usize>>,
    by_upn: HashMap<String, Vec<usize>>,
    /// SIDs the filter was asked about: the index's answer for them is complete.
    queried_sids: HashSet<String>,
    /// Ids read one by one and not found (404).
    missing_ids: HashSet<String>,
    /// Users read by UPN or object id; `None`: no such user (404).
    users: HashMap<String, Option<User>>,
    /// Reads that failed for good, by the key they were for: the error to record.
    failures: HashMap<String, String>,
    /// The whole list was walked: absence from the index means there is no such identity.
    complete: bool,
    /// Why the list could not be walked whole, when a row needed it (issue 16): the rows it
    /// would have answered are refused `lookupFailed`, not told there is no such identity.
    list_failure: Option<String>,
    /// Why an entry of the list was not an identity (the first such reason): the list cannot
    /// tell that nobody has a name, since that entry might (issue 16). Its names, where they
    /// could be read, are in `failures`.
    list_spoiled: Option<String>,
    /// Who the guardrails protect (issue 13); empty when none is in force.
    guard: Guard,
    /// Users in restricted-management administrative units (issue 20), by object id, UPN and
    /// SID as keys: the unit's display name. Read with `--protect-privileged`.
    restricted: HashMap<String, String>,
}

impl Directory {
    /// Adds an identity (once, whichever read found it) to every index.
    pub(crate) fn add(&mut self, fetched: Fetched) -> usize {
        if let Some(&at) = self.by_id.get(&key(&fetched.identity.id)) {
            return at;
        }
        let at = self.identities.len();
        let identity = &fetched.identity;
        self.by_id.insert(key(&identity.id), at);
        if let Some(sid) = &identity.on_premises_security_identifier {
            self.by_sid.entry(key(sid)).or_default().push(at);
        }
        for object_id in identity.entra_object_ids() {
            let slot = self.by_object_id.entry(key(object_id)).or_default();
            if !slot.contains(&at) {
                slot.push(at);
            }
        }
        if let Some(upn) = &identity.user_principal_name {
            self.by_upn.entry(key(upn)).or_default().push(at);
        }
        self.identities.push(fetched);
        at
    }

    pub(crate) fn note_sid_queried(&mut self, sid: &str) {
        self.queried_sids.insert(key(sid));
    }

    pub(crate) fn note_missing_id(&mut self, id: &str) {
        self.missing_ids.insert(key(id));
    }

    pub(crate) fn note_user(&mut self, looked_up_by: &str, user: Option<User>) {
        self.users.insert(key(looked_up_by), user);
    }

    /// `error` is recorded and printed: whatever Graph put in it is escaped first.
    pub(crate) fn note_failure(&mut self, looked_up_by: &str, error: String) {
        self.failures
            .insert(key(looked_up_by), printable(&error).into_owned());
    }

    pub(crate) fn set_guard(&mut self, guard: Guard) {
        self.guard = guard;
    }

    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Notes a member of the restricted-management administrative unit `unit` by one name.
    pub(crate) fn note_restricted(&mut self, name: &str, unit: &str) {
        if !name.trim().is_empty() {
            self.restricted
                .entry(key(name))
                .or_insert_with(|| unit.to_owned());
        }
    }

    /// Why Graph will refuse `job` (issue 20): its Entra ID account is a user in a
    /// restricted-management administrative unit, which no tenant-wide app or administrator may
    /// change. The other providers' accounts are changed by their own systems and are not held.
    pub(crate) fn restricted_note(&self, job: &Job) -> Option<String> {
        if job.provider != Some(Provider::EntraId) {
            return None;
        }
        let unit = self.restricted.get(&key(&job.account_id))?;
        Some(format!(
            "the Entra ID user {} is in the restricted-management administrative unit {:?}: Graph refuses {} on it to this app and to every tenant-wide administrator, so expect this row to fail (act with a role scoped to that unit, or take the user out of it)",
            printable(&job.account_id),
            printable(unit),
            job.action
        ))
    }

    pub(crate) fn note_complete(&mut self) {
        self.complete = true;
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    pub(crate) fn note_list_failure(&mut self, error: String) {
        self.list_failure = Some(printable(&error).into_owned());
    }

    /// An entry of the list that is not an identity: the rows naming it are refused
    /// `lookupFailed`, and so are those the list would answer with "nobody".
    /// `keep`: the only names worth a failure of their own (a walk's filter), else all.
    pub(crate) fn note_spoiled(&mut self, spoiled: Spoiled, keep: Option<&HashSet<String>>) {
        let names = match spoiled.names.is_empty() {
            true => "no readable name".to_owned(),
            false => spoiled
                .names
                .iter()
                .take(4)
                .map(|name| printable(name).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let reason = format!(
            "the identity list holds an entry that is not an identity ({names}: {})",
            printable(&spoiled.reason)
        );
        for name in &spoiled.names {
            if keep.is_some_and(|keys| !keys.contains(&key(name))) {
                continue;
            }
            self.failures
                .entry(key(name))
                .or_insert_with(|| reason.clone());
        }
        self.list_spoiled.get_or_insert(reason);
    }

    /// The answer "nobody" from the list, unless the list could not tell.
    fn none_from_list(&self) -> Found<'_> {
        match (&self.list_spoiled, &self.list_failure, self.complete) {
            (Some(spoiled), _, _) => Found::Failed(spoiled),
            (None, Some(failure), false) => Found::Failed(failure),
            _ => Found::None,
        }
    }

    /// Every identity read, in the order first read: for the snapshot file.
    pub(crate) fn identities(&self) -> &[Fetched] {
        &self.identities
    }

    pub(crate) fn failure(&self, looked_up_by: &str) -> Option<&str> {
        self.failures.get(&key(looked_up_by)).map(String::as_str)
    }

    /// The user read by this UPN or object id: `Some(None)` when Graph has none.
    pub(crate) fn user(&self, looked_up_by: &str) -> Option<Option<&User>> {
        self.users.get(&key(looked_up_by)).map(Option::as_ref)
    }

    pub(crate) fn knows_sid(&self, sid: &str) -> bool {
        self.complete || self.queried_sids.contains(&key(sid))
    }

    pub(crate) fn knows_user(&self, looked_up_by: &str) -> bool {
        self.users.contains_key(&key(looked_up_by))
    }

    pub(crate) fn knows_upn_in_index(&self, upn: &str) -> bool {
        self.complete && self.by_upn.contains_key(&key(upn))
    }

    pub(crate) fn by_id(&self, id: &str) -> Found<'_> {
        if let Some(failure) = self.failure(id) {
            return Found::Failed(failure);
        }
        match self.by_id.get(&key(id)) {
            Some(&at) => Found::One(&self.identities[at]),
            None if self.missing_ids.contains(&key(id)) => Found::None,
            None => self.none_from_list(),
        }
    }

    pub(crate) fn by_sid(&self, sid: &str) -> Found<'_> {
        if let Some(failure) = self.failure(sid) {
            return Found::Failed(failure);
        }
        match self.found(self.by_sid.get(&key(sid))) {
            Found::None if !self.queried_sids.contains(&key(sid)) => self.none_from_list(),
            found => found,
        }
    }

    /// Identities with an Entra ID account of this object id (from the walked list).
    pub(crate) fn by_object_id_in_index(&self, object_id: &str) -> Found<'_> {
        if let Some(failure) = self.failure(object_id) {
            return Found::Failed(failure);
        }
        match self.found(self.by_object_id.get(&key(object_id))) {
            Found::None => self.none_from_list(),
            found => found,
        }
    }

    /// Identities whose `userPrincipalName` is this UPN (from the walked list).
    pub(crate) fn by_upn_in_index(&self, upn: &str) -> Found<'_> {
        if let Some(failure) = self.failure(upn) {
            return Found::Failed(failure);
        }
        match self.found(self.by_upn.get(&key(upn))) {
            Found::None => self.none_from_list(),
            found => found,
        }
    }

    /// Every name a row and the identity it reached go by, as keys: the identity's id, SID, UPN
    /// and linked accounts, what the row itself gives, and the users read for the row.
    pub(crate) fn names_of(&self, row: &Row, identity: &Identity) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut add = |name: &str| {
            if !name.trim().is_empty() {
                names.insert(key(name));
            }
        };
        add(&identity.id);
        let own = [
            &identity.on_premises_security_identifier,
            &identity.user_principal_name,
        ];
        let given = [&row.identity_account_id, &row.account_id, &row.sid];
        for name in own.into_iter().chain(given).flatten() {
            add(name);
        }
        for account in &identity.accounts {
            add(&account.identifier);
        }
        for looked_up_by in [&row.upn, &row.object_id].into_iter().flatten() {
            add(looked_up_by);
            if let Some(Some(user)) = self.user(looked_up_by) {
                add(&user.id);
                let more = [
                    &user.user_principal_name,
                    &user.on_premises_security_identifier,
                ];
                for name in more.into_iter().flatten() {
                    add(name);
                }
            }
        }
        names
    }

    fn found(&self, hits: Option<&Vec<usize>>) -> Found<'_> {
        match hits.map(Vec::as_slice) {
            None | Some([]) => Found::None,
            Some([one]) => Found::One(&self.identities[*one]),
            Some(many) => Found::Many(many.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::Action;

    #[test]
    fn issue_20_only_an_entra_id_account_in_a_restricted_unit_is_flagged() {
        let mut directory = Directory::default();
        directory.note_restricted("OID-19", "Executives");
        let job = |account: &str, provider| Job {
            row: 2,
            identity_account_id: "ia-19".into(),
            account_id: account.into(),
            action: Action::Disable,
            provider: Some(provider),
            carry: Vec::new(),
            resolved_by: None,
            earlier_attempts: 0,
        };
        let note = directory
            .restricted_note(&job("oid-19", Provider::EntraId))
            .expect("flagged");
        assert!(note.contains("\"Executives\""), "{note}");
        // Active Directory and Okta carry their own actions out.
        assert_eq!(
            directory.restricted_note(&job("oid-19", Provider::Okta)),
            None
        );
        assert_eq!(
            directory.restricted_note(&job("oid-6", Provider::EntraId)),
            None
        );
    }
}
