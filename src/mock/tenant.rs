//! A seeded tenant for the mock (SPEC section 8): the identities it serves at
//! `/security/identities/identityAccounts`, the users behind them at `/users`, and the privileged
//! directory role assignments at `/roleManagement/directory/roleAssignments`.
//!
//! [`Tenant`] is plain data, built in code ([`Tenant::synthetic`], [`Tenant::from_identities`],
//! [`Tenant::push`], [`Tenant::assign_role`]) or read from a file ([`Tenant::load`]). The server
//! keeps its own copy, which successful actions change; [`MockServer::identity`] reads it back.
//!
//! # The synthetic layout
//!
//! `Tenant::synthetic(n)` holds identities `i = 0, 1, ..., n - 1`, in that order (the order the
//! list pages them in). Every value below is a pure function of `i`, so tests can name identity
//! `i` with the `synthetic_*` helpers instead of reading the tenant:
//!
//! | field | value |
//! |---|---|
//! | `id` | [`Tenant::synthetic_id`]`(i)`: a GUID |
//! | `displayName` | `Synthetic User {i}` |
//! | `domain` | `contoso.local` |
//! | `userPrincipalName` | [`Tenant::synthetic_upn`]`(i)`: `user{i:06}@contoso.com` (`user000042@contoso.com`) |
//! | `isEnabled` | `true` |
//! | `onPremisesSecurityIdentifier` | [`Tenant::synthetic_sid`]`(i)`: `S-1-5-21-1004336348-1177238915-682003330-{1000 + i}`, or `null` when `i % 5 == 0` |
//! | `cloudSecurityIdentifier` | `S-1-12-1-a-b-c-d`, the Entra object id as four little-endian `u32`s |
//!
//! and these linked accounts, in this order:
//!
//! | provider | who has one | identifier | actions |
//! |---|---|---|---|
//! | `activeDirectory` | hybrid identities: `i % 5 != 0` (80%) | [`Tenant::synthetic_ad_account`]`(i)`: a GUID (the AD objectGUID) | `disable`, `forcePasswordReset` |
//! | `entraID` | every identity | [`Tenant::synthetic_object_id`]`(i)`: the user's Entra object id, a GUID other than `id` | `disable`, `revokeAllSessions`, `requireUserToSignInAgain`, `markUserAsCompromised` |
//! | `okta` | every 4th: `i % 4 == 0` | [`Tenant::synthetic_okta_account`]`(i)`: `00u` and 17 letters or digits | `disable`, `revokeAllSessions` |
//!
//! So `i % 5 == 0` are cloud-only (no SID, no AD account): 0, 5, 10, ...; and 0, 4, 8, ... have an
//! Okta account (0 and 20 are cloud-only with Okta). Every identity is an Entra user: `GET
//! /users/{upn}` and `GET /users/{object id}` find it.
//!
//! Role assignments (principal: the identity's Entra object id), for those of 1 to 4 below `n`:
//! identities 1 and 2 hold Global Administrator, 3 Privileged Role Administrator, 4 Security
//! Administrator. Nobody else holds a role. [`Tenant::assign_role_to_sid`] adds a holder no
//! identity holds the Entra ID account of, known to Entra by an on-premises SID.
//! [`Tenant::with_privileged_access`] adds PIM eligibility, role-assignable groups, custom roles
//! and administrative units (issue 20; its layout is in [`privileged`]).
//!
//! The GUIDs come from a fixed hash of `i` (no randomness): the same on every run and machine.
//!
//! # Files
//!
//! [`Tenant::load`] reads identities in Graph's camelCase shape (`provider` or `identityProvider`,
//! names in any case, each object bare or wrapped in `value`): one per line (JSONL), a JSON array
//! of them, or a saved list page `{"value": [...]}`. A file names no role assignments.
//!
//! [`MockServer::identity`]: super::MockServer::identity

pub(crate) mod privileged;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::graph::identity::{Identity, LinkedAccount};
use crate::graph::model::{Action, Provider};
use privileged::PrivilegedAccess;

/// The SID prefix of the synthetic on-premises domain.
const SYNTHETIC_SID_PREFIX: &str = "S-1-5-21-1004336348-1177238915-682003330-";

/// Seeds of the GUID kinds, so that identity, AD and Entra ids never coincide.
const KIND_IDENTITY: u64 = 1;
const KIND_AD: u64 = 2;
const KIND_ENTRA: u64 = 3;
const KIND_OKTA: u64 = 4;

const AD_ACTIONS: [Action; 2] = [Action::Disable, Action::ForcePasswordReset];
const ENTRA_ACTIONS: [Action; 4] = [
    Action::Disable,
    Action::RevokeAllSessions,
    Action::RequireUserToSignInAgain,
    Action::MarkUserAsCompromised,
];
const OKTA_ACTIONS: [Action; 2] = [Action::Disable, Action::RevokeAllSessions];

/// One directory role assignment (`unifiedRoleAssignment`), tenant-wide (`directoryScopeId` "/").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    /// Opaque; shaped like Entra's (base64url of the role's and the principal's GUIDs, then `-1`).
    pub id: String,
    /// For a built-in role, its template id.
    pub role_definition_id: String,
    /// The user's Entra object id.
    pub principal_id: String,
    /// The user's `onPremisesSecurityIdentifier` when no identity holds its Entra ID account: a
    /// holder Defender for Identity knows only by an Active Directory account (issue 16). `None`:
    /// as the identity that holds the account has it.
    pub principal_sid: Option<String>,
}

/// Identities and role assignments for the mock to serve. See the module documentation for the
/// synthetic layout and the file format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    identities: Vec<Identity>,
    /// Position of each identity id in `identities`.
    positions: HashMap<String, usize>,
    role_assignments: Vec<RoleAssignment>,
    /// Eligibility, role-assignable groups, custom roles and administrative units (issue 20).
    privileged: PrivilegedAccess,
}

/// A tenant file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("cannot read the identities file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{source_name}:{line}: {reason}; write one identityAccounts object per line (JSONL), a \
         JSON array of them, or a saved {{\"value\": [...]}} page"
    )]
    Parse {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error(
        "{source_name}:{line}: the identity id {id:?} was already given on line {first_line}; \
         ids must be unique"
    )]
    DuplicateId {
        source_name: String,
        line: usize,
        first_line: usize,
        id: String,
    },
}

impl Tenant {
    /// Global Administrator's role template id.
    pub const GLOBAL_ADMINISTRATOR: &'static str = "62e90394-69f5-4237-9190-012177145e10";
    /// Privileged Role Administrator's role template id.
    pub const PRIVILEGED_ROLE_ADMINISTRATOR: &'static str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
    /// Security Administrator's role template id.
    pub const SECURITY_ADMINISTRATOR: &'static str = "194ae4cb-b126-40b2-bd5b-6091b380977d";

    /// An empty tenant.
    pub fn new() -> Tenant {
        Tenant::default()
    }

    /// `n` identities in the synthetic layout, with its role assignments (see the module docs).
    pub fn synthetic(n: usize) -> Tenant {
        let mut tenant = Tenant {
            identities: Vec::with_capacity(n),
            positions: HashMap::with_capacity(n),
            role_assignments: Vec::new(),
            privileged: PrivilegedAccess::default(),
        };
        for i in 0..n {
            tenant.push(Tenant::synthetic_identity(i));
        }
        let roles = [
            (1, Tenant::GLOBAL_ADMINISTRATOR),
            (2, Tenant::GLOBAL_ADMINISTRATOR),
            (3, Tenant::PRIVILEGED_ROLE_ADMINISTRATOR),
            (4, Tenant::SECURITY_ADMINISTRATOR),
        ];
        for (i, role) in roles {
            if i < n {
                tenant.assign_role(role, &Tenant::synthetic_object_id(i));
            }
        }
        tenant
    }

    /// Identity `i` of the synthetic layout, as [`Tenant::synthetic`] holds it.
    pub fn synthetic_identity(i: usize) -> Identity {
        let object_id = Tenant::synthetic_object_id(i);
        let mut accounts = Vec::with_capacity(3);
        if let Some(ad) = Tenant::synthetic_ad_account(i) {
            accounts.push(linked(ad, Provider::ActiveDirectory, &AD_ACTIONS));
        }
        accounts.push(linked(object_id.clone(), Provider::EntraId, &ENTRA_ACTIONS));
        if let Some(okta) = Tenant::synthetic_okta_account(i) {
            accounts.push(linked(okta, Provider::Okta, &OKTA_ACTIONS));
        }
        Identity {
            id: Tenant::synthetic_id(i),
            display_name: Some(format!("Synthetic User {i}")),
            domain: Some("contoso.local".to_owned()),
            is_enabled: Some(true),
            on_premises_security_identifier: Tenant::synthetic_sid(i),
            cloud_security_identifier: cloud_sid(&object_id),
            user_principal_name: Some(Tenant::synthetic_upn(i)),
            email_address: None,
            accounts,
        }
    }

    /// The `id` of synthetic identity `i`.
    pub fn synthetic_id(i: usize) -> String {
        guid(KIND_IDENTITY, i).to_string()
    }

    /// The userPrincipalName of synthetic identity `i`: `user{i:06}@contoso.com`.
    pub fn synthetic_upn(i: usize) -> String {
        format!("user{i:06}@contoso.com")
    }

    /// The Entra object id of synthetic identity `i`: its user's id and its entraID account.
    pub fn synthetic_object_id(i: usize) -> String {
        guid(KIND_ENTRA, i).to_string()
    }

    /// Whether synthetic identity `i` is hybrid (`i % 5 != 0`): an on-premises SID and an AD
    /// account. The others are cloud-only.
    pub fn synthetic_is_hybrid(i: usize) -> bool {
        !i.is_multiple_of(5)
    }

    /// The on-premises SID of synthetic identity `i`; `None` for a cloud-only one (`i % 5 == 0`).
    pub fn synthetic_sid(i: usize) -> Option<String> {
        Tenant::synthetic_is_hybrid(i).then(|| format!("{SYNTHETIC_SID_PREFIX}{}", 1000 + i))
    }

    /// The identifier of synthetic identity `i`'s activeDirectory account, if it is hybrid.
    pub fn synthetic_ad_account(i: usize) -> Option<String> {
        Tenant::synthetic_is_hybrid(i).then(|| guid(KIND_AD, i).to_string())
    }

    /// The identifier of synthetic identity `i`'s okta account (`00u` and 17 letters or digits),
    /// if it has one (`i % 4 == 0`).
    pub fn synthetic_okta_account(i: usize) -> Option<String> {
        i.is_multiple_of(4).then(|| okta_id(i))
    }

    /// A tenant of these identities, in this order, with no role assignments. A later identity
    /// with the id of an earlier one replaces it, as with [`Tenant::push`].
    pub fn from_identities(identities: Vec<Identity>) -> Tenant {
        let mut tenant = Tenant::new();
        for identity in identities {
            tenant.push(identity);
        }
        tenant
    }

    /// Reads identities from `path` (see the module docs for the format). Ids must be unique.
    pub fn load(path: impl AsRef<Path>) -> Result<Tenant, TenantError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TenantError::Read {
            path: path.display().to_string(),
            source,
        })?;
        parse(&text, &path.display().to_string())
    }

    /// [`Tenant::load`] from text rather than a file.
    pub fn from_json(text: &str) -> Result<Tenant, TenantError> {
        parse(text, "<identities>")
    }

    /// Adds an identity at the end, or replaces the one with its id where that one stands.
    pub fn push(&mut self, identity: Identity) {
        match self.positions.get(&identity.id) {
            Some(&at) => self.identities[at] = identity,
            None => {
                self.positions
                    .insert(identity.id.clone(), self.identities.len());
                self.identities.push(identity);
            }
        }
    }

    /// Adds `other`'s identities (as [`Tenant::push`] does) and role assignments.
    pub fn extend(&mut self, other: Tenant) {
        for identity in other.identities {
            self.push(identity);
        }
        for assignment in other.role_assignments {
            if !self.role_assignments.iter().any(|a| {
                a.role_definition_id
                    .eq_ignore_ascii_case(&assignment.role_definition_id)
                    && a.principal_id
                        .eq_ignore_ascii_case(&assignment.principal_id)
            }) {
                self.role_assignments.push(assignment);
            }
        }
        self.privileged.extend(other.privileged);
    }

    pub(crate) fn privileged_mut(&mut self) -> &mut PrivilegedAccess {
        &mut self.privileged
    }

    /// Assigns the role with `role_template_id` to the user with Entra object id
    /// `principal_object_id`, tenant-wide. Assigning it twice changes nothing.
    pub fn assign_role(&mut self, role_template_id: &str, principal_object_id: &str) {
        self.assign_role_with_sid(role_template_id, principal_object_id, None);
    }

    /// As [`Tenant::assign_role`], to a user no identity holds the Entra ID account of, whom
    /// Entra knows by the on-premises SID `sid` (`$expand=principal` returns it): so a holder
    /// whose identity has only an Active Directory account and no UPN can be served.
    pub fn assign_role_to_sid(
        &mut self,
        role_template_id: &str,
        principal_object_id: &str,
        sid: &str,
    ) {
        self.assign_role_with_sid(role_template_id, principal_object_id, Some(sid));
    }

    fn assign_role_with_sid(
        &mut self,
        role_template_id: &str,
        principal_object_id: &str,
        sid: Option<&str>,
    ) {
        let exists = self.role_assignments.iter().any(|a| {
            a.role_definition_id.eq_ignore_ascii_case(role_template_id)
                && a.principal_id.eq_ignore_ascii_case(principal_object_id)
        });
        if !exists {
            self.role_assignments.push(RoleAssignment {
                id: assignment_id(role_template_id, principal_object_id),
                role_definition_id: role_template_id.to_owned(),
                principal_id: principal_object_id.to_owned(),
                principal_sid: sid.map(str::to_owned),
            });
        }
    }

    /// Every identity, in the order the list pages them.
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// The identity with this id (exactly).
    pub fn identity(&self, id: &str) -> Option<&Identity> {
        self.positions.get(id).map(|&at| &self.identities[at])
    }

    pub fn role_assignments(&self) -> &[RoleAssignment] {
        &self.role_assignments
    }

    /// How many identities.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }
}

fn linked(identifier: String, provider: Provider, actions: &[Action]) -> LinkedAccount {
    LinkedAccount {
        identifier,
        identity_provider: provider.as_str().to_owned(),
        actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
    }
}

/// A GUID-shaped (version 4) id, a fixed function of `kind` and `i`.
pub(crate) fn guid(kind: u64, i: usize) -> Uuid {
    let (hi, lo) = hash128(kind, i);
    uuid::Builder::from_random_bytes((u128::from(hi) << 64 | u128::from(lo)).to_be_bytes())
        .into_uuid()
}

fn okta_id(i: usize) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let (hi, lo) = hash128(KIND_OKTA, i);
    let mut n = u128::from(hi) << 64 | u128::from(lo);
    let mut id = String::with_capacity(20);
    id.push_str("00u");
    for _ in 0..17 {
        id.push(char::from(ALPHABET[(n % 62) as usize]));
        n /= 62;
    }
    id
}

/// Two 64-bit words from `(kind, i)`: splitmix64 is a bijection, so distinct inputs below 2^56
/// give distinct first words.
fn hash128(kind: u64, i: usize) -> (u64, u64) {
    let seed = (kind << 56) ^ (i as u64);
    let hi = splitmix64(seed);
    (hi, splitmix64(hi ^ 0x5851_F42D_4C95_7F2D))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `S-1-12-1-a-b-c-d`: the object id's bytes in Microsoft's GUID order, as four little-endian
/// `u32`s (how Entra derives a user's cloud SID; documented by third parties, not Microsoft).
fn cloud_sid(object_id: &str) -> Option<String> {
    let bytes = Uuid::parse_str(object_id).ok()?.to_bytes_le();
    let word = |k: usize| u32::from_le_bytes([bytes[k], bytes[k + 1], bytes[k + 2], bytes[k + 3]]);
    Some(format!(
        "S-1-12-1-{}-{}-{}-{}",
        word(0),
        word(4),
        word(8),
        word(12)
    ))
}

/// An id shaped like Entra's role assignment ids: base64url of the role's GUID bytes and then the
/// principal's (Microsoft's byte order), then `-1`. Undocumented: the docs' example id
/// `lAPpYvVpN0KRkAEhdxReEJC2sEqbR_9Hr48lds9SGHI-1` decodes that way to Global Administrator and a
/// GUID, though other examples do not. Clients must treat it as opaque. Ids that are not GUIDs
/// are joined as they are.
fn assignment_id(role: &str, principal: &str) -> String {
    match (Uuid::parse_str(role), Uuid::parse_str(principal)) {
        (Ok(role), Ok(principal)) => {
            let mut bytes = [0u8; 32];
            bytes[..16].copy_from_slice(&role.to_bytes_le());
            bytes[16..].copy_from_slice(&principal.to_bytes_le());
            format!("{}-1", URL_SAFE_NO_PAD.encode(bytes))
        }
        _ => format!("{role}_{principal}-1"),
    }
}

/// Identities from a file's text: a stream of JSON values (so JSONL and pretty-printed objects
/// both work), each an identity, an array of them, or `{"value": ...}` around either.
fn parse(text: &str, source_name: &str) -> Result<Tenant, TenantError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line_at = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut tenant = Tenant::new();
    let mut first_lines: HashMap<String, usize> = HashMap::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    loop {
        let start = stream.byte_offset();
        let value = match stream.next() {
            None => break,
            Some(Ok(value)) => value,
            Some(Err(e)) => {
                return Err(TenantError::Parse {
                    source_name: source_name.to_owned(),
                    line: e.line(),
                    reason: format!("not JSON: {e}"),
                });
            }
        };
        // The value starts after any whitespace that preceded it.
        let skipped = text[start..].len() - text[start..].trim_start().len();
        let line = line_at(start + skipped);
        let bad = |reason: String| TenantError::Parse {
            source_name: source_name.to_owned(),
            line,
            reason,
        };
        let items = match unwrap_value(value) {
            serde_json::Value::Array(items) => items,
            object @ serde_json::Value::Object(_) => vec![object],
            other => return Err(bad(format!("{other} is not an identity"))),
        };
        for item in items {
            let identity: Identity = serde_json::from_value(unwrap_value(item))
                .map_err(|e| bad(format!("not an identity: {e}")))?;
            if identity.id.is_empty() {
                return Err(bad("an identity with an empty id".to_owned()));
            }
            if let Some(&first_line) = first_lines.get(&identity.id) {
                return Err(TenantError::DuplicateId {
                    source_name: source_name.to_owned(),
                    line,
                    first_line,
                    id: identity.id,
                });
            }
            first_lines.insert(identity.id.clone(), line);
            tenant.push(identity);
        }
    }
    Ok(tenant)
}

fn unwrap_value(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut object)
            if object.len() == 1 && object.get("value").is_some_and(|v| !v.is_null()) =>
        {
            object.remove("value").unwrap_or_default()
        }
        serde_json::Value::Object(mut object)
            if object.contains_key("value") && !object.contains_key("id") =>
        {
            // A saved page: `@odata.context` and `@odata.nextLink` beside `value`.
            object.remove("value").unwrap_or_default()
        }
        other => other,
    }
}

// --- the server's copy ----------------------------------------------------------------------------

/// Why the tenant refuses an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No identity has this id.
    UnknownIdentity,
    /// The identity has no linked account with this identifier and provider.
    NoSuchAccount,
    /// The account does not offer the action; what it offers, in Graph's spelling.
    NotOffered(Vec<String>),
    /// An Entra ID account whose user is in a restricted-management administrative unit
    /// (issue 20): Entra refuses every tenant-wide app and administrator.
    RestrictedManagement,
}

/// The tenant as the server holds it: the identities, which successful actions change, and
/// indexes by SID, UPN and Entra object id. Actions never change those keys, so the indexes
/// are built once.
#[derive(Debug)]
pub(crate) struct Directory {
    tenant: Tenant,
    /// Lowercased SID to identities (a file may give two identities one SID).
    by_sid: HashMap<String, Vec<usize>>,
    /// Lowercased UPN to the first identity with it that is an Entra user.
    by_upn: HashMap<String, usize>,
    /// Lowercased Entra object id to the first identity with it.
    by_object_id: HashMap<String, usize>,
    /// Entra users whose state an action changed, by lowercased object id (issue 19); a user not
    /// here is as its identity says.
    users: HashMap<String, UserState>,
}

/// What `GET /users/{id}` shows of a user beyond its identity: `accountEnabled` and
/// `signInSessionsValidFromDateTime` (SPEC section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserState {
    pub(crate) account_enabled: bool,
    /// Wall-clock time since the epoch, in whole seconds as Graph gives it; `None`: the time
    /// before any revoke this mock saw ([`SESSIONS_VALID_FROM_AT_START`]).
    pub(crate) sessions_valid_from: Option<Duration>,
}

/// `signInSessionsValidFromDateTime` of a user whose sessions were never revoked here.
pub(crate) const SESSIONS_VALID_FROM_AT_START: &str = "2024-01-01T00:00:00Z";

/// An Entra user: the identity, and its object id (the user's `id`).
pub(crate) struct UserView<'a> {
    pub(crate) object_id: &'a str,
    pub(crate) identity: &'a Identity,
}

impl Directory {
    pub(crate) fn new(tenant: Tenant) -> Directory {
        let mut by_sid: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_upn = HashMap::new();
        let mut by_object_id = HashMap::new();
        for (at, identity) in tenant.identities.iter().enumerate() {
            if let Some(sid) = &identity.on_premises_security_identifier {
                by_sid.entry(sid.to_ascii_lowercase()).or_default().push(at);
            }
            let mut is_user = false;
            for object_id in identity.entra_object_ids() {
                is_user = true;
                by_object_id
                    .entry(object_id.to_ascii_lowercase())
                    .or_insert(at);
            }
            if let (true, Some(upn)) = (is_user, &identity.user_principal_name) {
                by_upn.entry(upn.to_lowercase()).or_insert(at);
            }
        }
        Directory {
            tenant,
            by_sid,
            by_upn,
            by_object_id,
            users: HashMap::new(),
        }
    }

    pub(crate) fn identity(&self, id: &str) -> Option<&Identity> {
        self.tenant.identity(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.tenant.identities.len()
    }

    /// Up to `size` identities from position `skip`.
    pub(crate) fn page(&self, skip: usize, size: usize) -> &[Identity] {
        let all = &self.tenant.identities;
        let start = skip.min(all.len());
        &all[start..start.saturating_add(size).min(all.len())]
    }

    /// The identities with this on-premises SID (compared ignoring case).
    pub(crate) fn with_sid(&self, sid: &str) -> impl Iterator<Item = &Identity> {
        self.by_sid
            .get(&sid.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .map(|&at| &self.tenant.identities[at])
    }

    /// The user with this object id or userPrincipalName (both compared ignoring case).
    pub(crate) fn user(&self, key: &str) -> Option<UserView<'_>> {
        if let Some(&at) = self.by_object_id.get(&key.to_ascii_lowercase()) {
            let identity = &self.tenant.identities[at];
            let object_id = identity
                .entra_object_ids()
                .find(|id| id.eq_ignore_ascii_case(key))?;
            return Some(UserView {
                object_id,
                identity,
            });
        }
        let &at = self.by_upn.get(&key.to_lowercase())?;
        let identity = &self.tenant.identities[at];
        Some(UserView {
            object_id: identity.entra_object_ids().next()?,
            identity,
        })
    }

    pub(crate) fn role_assignments(&self) -> &[RoleAssignment] {
        &self.tenant.role_assignments
    }

    pub(crate) fn privileged(&self) -> &PrivilegedAccess {
        &self.tenant.privileged
    }

    /// Checks an action against the identity's linked accounts: whether the account exists and
    /// offers it. Nothing changes ([`Directory::apply`] carries it out, now or later).
    pub(crate) fn check(
        &self,
        identity_id: &str,
        account_id: &str,
        provider: Provider,
        action: Action,
    ) -> Result<(), Refusal> {
        let &at = self
            .tenant
            .positions
            .get(identity_id)
            .ok_or(Refusal::UnknownIdentity)?;
        let account = self.tenant.identities[at]
            .accounts
            .iter()
            .find(|a| a.identifier == account_id && a.provider() == Some(provider))
            .ok_or(Refusal::NoSuchAccount)?;
        if !account.offers(action) {
            return Err(Refusal::NotOffered(account.offered()));
        }
        if provider == Provider::EntraId && self.tenant.privileged.is_restricted(account_id) {
            return Err(Refusal::RestrictedManagement);
        }
        Ok(())
    }

    /// Checks an action ([`Directory::check`]) and applies its effect at once.
    #[cfg(test)]
    pub(crate) fn invoke(
        &mut self,
        identity_id: &str,
        account_id: &str,
        provider: Provider,
        action: Action,
    ) -> Result<(), Refusal> {
        self.check(identity_id, account_id, provider, action)?;
        self.apply(identity_id, account_id, provider, action, None);
        Ok(())
    }

    /// The user state `GET /users/{object id}` shows.
    pub(crate) fn user_state(&self, object_id: &str, identity: &Identity) -> UserState {
        self.users
            .get(&object_id.to_ascii_lowercase())
            .copied()
            .unwrap_or(UserState {
                account_enabled: identity.is_enabled.unwrap_or(true),
                sessions_valid_from: None,
            })
    }

    /// Carries an accepted action out: `disable` swaps the account's `disable` for `enable` and
    /// sets `isEnabled` false (and an Entra ID account's user `accountEnabled` false); `enable`
    /// swaps back and sets them true; `revokeAllSessions` on Entra ID moves the user's
    /// `signInSessionsValidFromDateTime` to `wall_now` (whole seconds); other actions change
    /// nothing. An identity or account gone since the check is left alone.
    pub(crate) fn apply(
        &mut self,
        identity_id: &str,
        account_id: &str,
        provider: Provider,
        action: Action,
        wall_now: Option<Duration>,
    ) {
        let Some(&at) = self.tenant.positions.get(identity_id) else {
            return;
        };
        let identity = &mut self.tenant.identities[at];
        let Some(account) = identity
            .accounts
            .iter_mut()
            .find(|a| a.identifier == account_id && a.provider() == Some(provider))
        else {
            return;
        };
        if provider == Provider::EntraId {
            let before = identity.is_enabled.unwrap_or(true);
            let user = self
                .users
                .entry(account_id.to_ascii_lowercase())
                .or_insert(UserState {
                    account_enabled: before,
                    sessions_valid_from: None,
                });
            match action {
                Action::Disable => user.account_enabled = false,
                Action::Enable => user.account_enabled = true,
                Action::RevokeAllSessions => {
                    let now = wall_now.unwrap_or_else(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                    });
                    user.sessions_valid_from = Some(Duration::from_secs(now.as_secs()));
                }
                _ => {}
            }
        }
        match action {
            Action::Disable => {
                swap(&mut account.actions, Action::Disable, Action::Enable);
                identity.is_enabled = Some(false);
            }
            Action::Enable => {
                swap(&mut account.actions, Action::Enable, Action::Disable);
                identity.is_enabled = Some(true);
            }
            _ => {}
        }
    }
}

/// Offers `to` instead of `from`, in `from`'s place; if `to` is offered already, drops `from`.
fn swap(actions: &mut Vec<String>, from: Action, to: Action) {
    let is = |wanted: Action| move |offered: &String| Action::parse(offered) == Some(wanted);
    if actions.iter().any(is(to)) {
        actions.retain(|offered| !is(from)(offered));
    } else if let Some(slot) = actions.iter_mut().find(|offered| is(from)(offered)) {
        *slot = to.as_str().to_owned();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_synthetic_layout_is_as_documented() {
        let tenant = Tenant::synthetic(21);
        assert_eq!(tenant.len(), 21);
        for (i, identity) in tenant.identities().iter().enumerate() {
            assert_eq!(identity.id, Tenant::synthetic_id(i));
            assert_eq!(
                identity.display_name.as_deref(),
                Some(format!("Synthetic User {i}").as_str())
            );
            assert_eq!(identity.domain.as_deref(), Some("contoso.local"));
            assert_eq!(identity.is_enabled, Some(true));
            let providers: Vec<_> = identity
                .accounts
                .iter()
                .map(|a| a.provider().unwrap())
                .collect();
            let mut expected = Vec::new();
            if i % 5 != 0 {
                expected.push(Provider::ActiveDirectory);
            }
            expected.push(Provider::EntraId);
            if i % 4 == 0 {
                expected.push(Provider::Okta);
            }
            assert_eq!(providers, expected, "identity {i}");
            assert_eq!(
                identity.on_premises_security_identifier.is_some(),
                i % 5 != 0
            );
            assert!(identity.has_object_id(&Tenant::synthetic_object_id(i)));
            assert_ne!(Tenant::synthetic_object_id(i), identity.id);
        }
        assert_eq!(Tenant::synthetic_upn(42), "user000042@contoso.com");
        assert_eq!(
            Tenant::synthetic_sid(7).as_deref(),
            Some("S-1-5-21-1004336348-1177238915-682003330-1007")
        );
        assert_eq!(Tenant::synthetic_sid(10), None);
        let okta = Tenant::synthetic_okta_account(8).unwrap();
        assert_eq!(okta.len(), 20);
        assert!(okta.starts_with("00u") && okta.chars().all(|c| c.is_ascii_alphanumeric()));
        let ad = &tenant.identities()[1].accounts[0];
        assert_eq!(ad.actions, ["disable", "forcePasswordReset"]);
        assert_eq!(
            tenant.identities()[1].accounts[1].actions,
            [
                "disable",
                "revokeAllSessions",
                "requireUserToSignInAgain",
                "markUserAsCompromised"
            ]
        );
        assert_eq!(
            tenant.identities()[0].accounts[1].actions,
            ["disable", "revokeAllSessions"]
        );
    }

    #[test]
    fn synthetic_tenants_are_the_same_every_time_and_their_ids_distinct() {
        assert_eq!(Tenant::synthetic(50), Tenant::synthetic(50));
        let tenant = Tenant::synthetic(10_000);
        let mut seen = HashSet::new();
        for identity in tenant.identities() {
            assert!(seen.insert(identity.id.clone()));
            for account in &identity.accounts {
                assert!(seen.insert(account.identifier.clone()), "{account:?}");
            }
        }
        let id = Uuid::parse_str(&Tenant::synthetic_id(3)).unwrap();
        assert_eq!(id.get_version_num(), 4);
    }

    #[test]
    fn synthetic_role_holders_are_identities_one_to_four() {
        let tenant = Tenant::synthetic(10);
        let holders: Vec<(&str, String)> = tenant
            .role_assignments()
            .iter()
            .map(|a| (a.role_definition_id.as_str(), a.principal_id.clone()))
            .collect();
        assert_eq!(
            holders,
            [
                (Tenant::GLOBAL_ADMINISTRATOR, Tenant::synthetic_object_id(1)),
                (Tenant::GLOBAL_ADMINISTRATOR, Tenant::synthetic_object_id(2)),
                (
                    Tenant::PRIVILEGED_ROLE_ADMINISTRATOR,
                    Tenant::synthetic_object_id(3)
                ),
                (
                    Tenant::SECURITY_ADMINISTRATOR,
                    Tenant::synthetic_object_id(4)
                ),
            ]
        );
        assert_eq!(Tenant::synthetic(3).role_assignments().len(), 2);
        assert!(Tenant::synthetic(0).is_empty());
    }

    #[test]
    fn role_assignment_ids_are_shaped_like_entras_and_not_repeated() {
        // The docs' example id decodes to exactly this role and principal.
        let mut tenant = Tenant::new();
        tenant.assign_role(
            Tenant::GLOBAL_ADMINISTRATOR,
            "4ab0b690-479b-47ff-af8f-2576cf521872",
        );
        tenant.assign_role(
            &Tenant::GLOBAL_ADMINISTRATOR.to_uppercase(),
            "4AB0B690-479b-47ff-af8f-2576cf521872",
        );
        assert_eq!(tenant.role_assignments().len(), 1);
        assert_eq!(
            tenant.role_assignments()[0].id,
            "lAPpYvVpN0KRkAEhdxReEJC2sEqbR_9Hr48lds9SGHI-1"
        );
    }

    #[test]
    fn the_cloud_sid_encodes_the_object_id() {
        // Worked out apart: Python's uuid.bytes_le unpacked as struct '<IIII'.
        assert_eq!(
            cloud_sid("73d664e4-0886-4a73-b745-c694da45ddb4").as_deref(),
            Some("S-1-12-1-1943430372-1249052806-2496021943-3034400218")
        );
        assert_eq!(cloud_sid("not a guid"), None);
    }

    #[test]
    fn push_replaces_an_identity_with_the_same_id_in_place() {
        let identity = |id: &str, name: &str| Identity {
            id: id.to_owned(),
            display_name: Some(name.to_owned()),
            ..Identity::default()
        };
        let mut tenant = Tenant::from_identities(vec![
            identity("a", "1"),
            identity("b", "2"),
            identity("a", "3"),
        ]);
        assert_eq!(tenant.len(), 2);
        assert_eq!(tenant.identities()[0].display_name.as_deref(), Some("3"));
        tenant.extend(Tenant::synthetic(3));
        assert_eq!(tenant.len(), 5);
        assert_eq!(tenant.role_assignments().len(), 2);
        assert_eq!(
            tenant.identity(&Tenant::synthetic_id(2)).unwrap().id,
            Tenant::synthetic_id(2)
        );
    }

    const DOCS_ITEM: &str = r#"{"id":"00104216-0539-4838-88b1-55baafdc296b","displayName":"accoundJon","onPremisesSecurityIdentifier":"S-1-5-21-1","accounts":[{"provider":"ActiveDirectory","identifier":"256db173","actions":["Enable"]}]}"#;

    #[test]
    fn files_may_be_jsonl_an_array_or_a_saved_page() {
        let jsonl = format!(
            "\u{feff}{DOCS_ITEM}\n\n{{\"value\":{{\"id\":\"b\",\"accounts\":[{{\"identityProvider\":\"okta\",\"identifier\":\"00u1\",\"actions\":[]}}]}}}}\n"
        );
        let tenant = Tenant::from_json(&jsonl).unwrap();
        assert_eq!(tenant.len(), 2);
        let ad = &tenant.identities()[0].accounts[0];
        assert_eq!(ad.provider(), Some(Provider::ActiveDirectory));
        assert!(ad.offers(Action::Enable));
        assert_eq!(
            tenant.identities()[1].accounts[0].provider(),
            Some(Provider::Okta)
        );

        let array = format!("[\n  {DOCS_ITEM},\n  {{\"id\": \"c\"}}\n]");
        assert_eq!(Tenant::from_json(&array).unwrap().len(), 2);
        let page = format!(
            "{{\"@odata.context\":\"x\",\"value\":[{DOCS_ITEM}],\"@odata.nextLink\":\"y\"}}"
        );
        assert_eq!(Tenant::from_json(&page).unwrap().len(), 1);
        assert!(Tenant::from_json("").unwrap().is_empty());
    }

    #[test]
    fn bad_files_name_the_line() {
        let error = Tenant::from_json(&format!("{DOCS_ITEM}\n{{\"displayName\":\"no id\"}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("<identities>:2: not an identity: missing field `id`"),
            "{error}"
        );
        let error = Tenant::from_json(&format!("{DOCS_ITEM}\n\n{DOCS_ITEM}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(":3: the identity id"), "{error}");
        assert!(error.contains("already given on line 1"), "{error}");
        let error = Tenant::from_json("{\"id\":\"a\"}\n{oops\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("<identities>:2: not JSON"), "{error}");
        let error = Tenant::from_json("{\"id\":\"\"}").unwrap_err().to_string();
        assert!(error.contains("empty id"), "{error}");
        let error = Tenant::from_json("42").unwrap_err().to_string();
        assert!(error.contains("42 is not an identity"), "{error}");
        let missing = Tenant::load("/nonexistent/identities.jsonl").unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("cannot read the identities file")
        );
    }

    #[test]
    fn the_directory_finds_users_by_upn_or_object_id_ignoring_case() {
        let directory = Directory::new(Tenant::synthetic(6));
        let user = directory.user("USER000003@Contoso.com").unwrap();
        assert_eq!(user.object_id, Tenant::synthetic_object_id(3));
        let by_id = directory
            .user(&Tenant::synthetic_object_id(5).to_uppercase())
            .unwrap();
        assert_eq!(by_id.identity.id, Tenant::synthetic_id(5));
        assert!(directory.user("user000006@contoso.com").is_none());
        assert!(directory.user(&Tenant::synthetic_id(1)).is_none());
        let sid = Tenant::synthetic_sid(4).unwrap().to_lowercase();
        let found: Vec<_> = directory.with_sid(&sid).map(|i| i.id.clone()).collect();
        assert_eq!(found, [Tenant::synthetic_id(4)]);
        assert_eq!(directory.page(4, 100).len(), 2);
        assert!(directory.page(9, 3).is_empty());
    }

    #[test]
    fn actions_are_checked_against_the_account_and_change_what_it_offers() {
        let mut directory = Directory::new(Tenant::synthetic(2));
        let id = Tenant::synthetic_id(1);
        let ad = Tenant::synthetic_ad_account(1).unwrap();
        assert_eq!(
            directory.invoke("nope", &ad, Provider::ActiveDirectory, Action::Disable),
            Err(Refusal::UnknownIdentity)
        );
        assert_eq!(
            directory.invoke(&id, &ad, Provider::Okta, Action::Disable),
            Err(Refusal::NoSuchAccount)
        );
        assert_eq!(
            directory.invoke(&id, &ad, Provider::ActiveDirectory, Action::Enable),
            Err(Refusal::NotOffered(vec![
                "disable".to_owned(),
                "forcePasswordReset".to_owned()
            ]))
        );
        directory
            .invoke(&id, &ad, Provider::ActiveDirectory, Action::Disable)
            .unwrap();
        let identity = directory.identity(&id).unwrap();
        assert_eq!(identity.is_enabled, Some(false));
        assert_eq!(
            identity.accounts[0].actions,
            ["enable", "forcePasswordReset"]
        );
        directory
            .invoke(
                &id,
                &ad,
                Provider::ActiveDirectory,
                Action::ForcePasswordReset,
            )
            .unwrap();
        directory
            .invoke(&id, &ad, Provider::ActiveDirectory, Action::Enable)
            .unwrap();
        let identity = directory.identity(&id).unwrap();
        assert_eq!(identity.is_enabled, Some(true));
        assert_eq!(
            identity.accounts[0].actions,
            ["disable", "forcePasswordReset"]
        );
    }

    #[test]
    fn swapping_never_offers_an_action_twice() {
        let mut both = vec!["Disable".to_owned(), "enable".to_owned()];
        swap(&mut both, Action::Disable, Action::Enable);
        assert_eq!(both, ["enable"]);
        let mut neither = vec!["revokeAllSessions".to_owned()];
        swap(&mut neither, Action::Disable, Action::Enable);
        assert_eq!(neither, ["revokeAllSessions"]);
    }
}
