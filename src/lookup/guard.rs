//! Guardrails for mass actions (issue 13): the people a run must not act on. Owns the protect
//! file (its format and its errors), the reads that learn who it names and who holds a
//! privileged directory role, and the check every looked-up row passes before it may send.
//!
//! A protect file holds one entry a line: a UPN, an on-premises SID, an Entra object id or an
//! identityAccounts id. `#` starts a comment at the start of a line or after a space (a guest's
//! UPN holds `#EXT#`, which is not a comment). Entries after an `[allow]` line are not
//! protected: they name privileged people a run may act on all the same; `[protect]` switches
//! back. While a list is in force every row is looked up, so a protected person is caught
//! whichever column names them: the list's UPNs and object ids are read from `/users` once, so
//! that their SIDs and object ids count too.
//!
//! Privileged roles: the built-in Entra directory roles Microsoft labels "Privileged" in its
//! permissions reference ([`PRIVILEGED_ROLES`]). Their members are read with the documented
//! `roleAssignments?$filter=roleDefinitionId eq '{id}'&$expand=principal` (permission
//! `RoleManagement.Read.Directory`), one read per role and page.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::directory::{Directory, Guard, key};
use super::read::{LookupStop, Reader, Service};
use super::read_users;
use super::walk::{Parsed, Walk, WalkStop};
use crate::sanitize::printable;

/// Built-in Entra directory roles that Microsoft labels "Privileged" (permissions reference,
/// 2026-01-20): roles that can take over the tenant, its credentials, its apps or its security
/// settings, or read what an attacker would want. A run acting on their holders by accident
/// can lock the responders out or hand over control, so they are guarded as a set. For built-in
/// roles the role definition id is the template id.
pub const PRIVILEGED_ROLES: [(&str, &str); 20] = [
    (
        "Global Administrator",
        "62e90394-69f5-4237-9190-012177145e10",
    ),
    (
        "Privileged Role Administrator",
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
    ),
    (
        "Privileged Authentication Administrator",
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    ),
    (
        "Security Administrator",
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
    ),
    ("Security Operator", "5f2222b1-57c3-48ba-8ad5-d4759f1fde6f"),
    ("Security Reader", "5d6b6bb7-de71-4623-b4af-96380a352509"),
    ("User Administrator", "fe930be7-5e62-47db-91af-98c3a49a38b1"),
    (
        "Authentication Administrator",
        "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    ),
    (
        "Helpdesk Administrator",
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    ),
    (
        "Password Administrator",
        "966707d0-3269-4727-9be2-8c3a10f19b9d",
    ),
    (
        "Application Administrator",
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
    ),
    (
        "Cloud Application Administrator",
        "158c047a-c907-4556-b7ef-446551a6b5f7",
    ),
    (
        "Hybrid Identity Administrator",
        "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2",
    ),
    (
        "Conditional Access Administrator",
        "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
    ),
    (
        "Intune Administrator",
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
    ),
    ("Global Reader", "f2ef992c-3afb-46b9-b7cf-a126ee74c451"),
    (
        "Domain Name Administrator",
        "8329153b-31d0-4727-b945-745eb3bc5f31",
    ),
    (
        "External Identity Provider Administrator",
        "be2f45a1-457d-42af-a067-6ec1fa63bc45",
    ),
    ("Directory Writers", "9360feb5-f418-4baa-8175-e2a00bac4301"),
    (
        "Partner Tier2 Support",
        "e00e864a-17c5-4a4b-9c06-f5b95a8d5bd8",
    ),
];

/// The guardrails a run keeps (typed from `--protect`, the default protect file,
/// `--protect-privileged` and `--max-actions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// The protect files read, merged; `None` when none was given or found.
    pub protect: Option<ProtectList>,
    /// `--protect-privileged`: refuse members of [`PRIVILEGED_ROLES`] unless allowed.
    pub privileged: bool,
    /// `--max-actions N`: refuse to start when the plan holds more actions.
    pub max_actions: Option<u64>,
}

impl Guardrails {
    /// What is in force, for messages: the protect files and `--protect-privileged`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = &self.protect {
            for file in &list.files {
                parts.push(format!("protect file {}", file.display()));
            }
        }
        if self.privileged {
            parts.push("--protect-privileged".to_owned());
        }
        if let Some(max) = self.max_actions {
            parts.push(format!("--max-actions {max}"));
        }
        parts.join(", ")
    }

    /// Whether every row must be looked up, so that the guard sees whom it names.
    pub fn look_up_every_row(&self) -> bool {
        self.privileged
            || self
                .protect
                .as_ref()
                .is_some_and(|list| !list.protected.is_empty())
    }
}

/// What an entry looks like, which says where it can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `name@domain`: read from `/users` to learn its object id and SID.
    Upn,
    /// `S-1-...`: an on-premises SID.
    Sid,
    /// A GUID: an Entra object id (read from `/users` too) or an identityAccounts id.
    Guid,
}

/// One line of a protect file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectEntry {
    pub value: String,
    pub kind: EntryKind,
    /// `FILE:LINE`, for messages.
    pub place: String,
}

/// The entries of one or more protect files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtectList {
    /// People no run may act on.
    pub protected: Vec<ProtectEntry>,
    /// The `[allow]` section: privileged people a run may act on.
    pub allowed: Vec<ProtectEntry>,
    pub files: Vec<PathBuf>,
}

/// A protect file that cannot be used: nothing is sent.
#[derive(Debug, thiserror::Error)]
pub enum ProtectFileError {
    #[error("cannot read the protect file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: {reason}; write one UPN, on-premises SID (S-1-...), Entra object id or identityAccounts id a line, `#` for comments, and `[allow]` before privileged people a run may act on"
    )]
    Entry {
        path: String,
        line: usize,
        reason: String,
    },
}

impl ProtectList {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ProtectList, ProtectFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ProtectFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|error| ProtectFileError::Entry {
            path: shown.clone(),
            line: 1 + count_lines(&error.as_bytes()[..error.utf8_error().valid_up_to()]),
            reason: "not UTF-8".to_owned(),
        })?;
        let mut list = ProtectList::parse(&text, &shown)?;
        list.files.push(path.to_path_buf());
        Ok(list)
    }

    /// Parses a protect file's text; `shown` names it in errors.
    pub fn parse(text: &str, shown: &str) -> Result<ProtectList, ProtectFileError> {
        let mut list = ProtectList::default();
        let mut allowing = false;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |reason: String| ProtectFileError::Entry {
                path: shown.to_owned(),
                line,
                reason,
            };
            let content = strip_comment(raw).trim();
            if content.is_empty() {
                continue;
            }
            if content.starts_with('[') {
                match content.to_ascii_lowercase().as_str() {
                    "[allow]" => allowing = true,
                    "[protect]" => allowing = false,
                    _ => {
                        return Err(bad(format!(
                            "unknown section {:?} (there are [protect] and [allow])",
                            printable(content)
                        )));
                    }
                }
                continue;
            }
            let kind = entry_kind(content).map_err(bad)?;
            let entry = ProtectEntry {
                value: content.to_owned(),
                kind,
                place: format!("{shown}:{line}"),
            };
            if allowing {
                list.allowed.push(entry);
            } else {
                list.protected.push(entry);
            }
        }
        Ok(list)
    }

    /// Adds `other`'s entries and files.
    pub fn merge(&mut self, other: ProtectList) {
        self.protected.extend(other.protected);
        self.allowed.extend(other.allowed);
        self.files.extend(other.files);
    }
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&byte| byte == b'\n').count()
}

/// The line without its comment: `#` at the start or after whitespace (`#EXT#` in a UPN stays).
fn strip_comment(line: &str) -> &str {
    let mut previous_is_space = true;
    for (at, character) in line.char_indices() {
        if character == '#' && previous_is_space {
            return &line[..at];
        }
        previous_is_space = character.is_whitespace();
    }
    line
}

fn entry_kind(value: &str) -> Result<EntryKind, String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{:?} is not one entry (a display name matches nobody)",
            printable(value)
        ));
    }
    if value.len() > 1024 {
        return Err("the entry is longer than 1024 characters".to_owned());
    }
    if value.contains('@') {
        return Ok(EntryKind::Upn);
    }
    if value.len() > 4 && value[..4].eq_ignore_ascii_case("S-1-") {
        return Ok(EntryKind::Sid);
    }
    if uuid::Uuid::try_parse(value).is_ok() {
        return Ok(EntryKind::Guid);
    }
    Err(format!(
        "{:?} is not a UPN, a SID or a GUID",
        printable(value)
    ))
}

/// Sends the reads the guardrails need and returns the guard: the protect list's users (those
/// the lookup has not read already), and the members of every privileged role. A read that
/// cannot be made stops the run: a guard that does not know whom it guards must not let
/// anything through.
pub(crate) async fn read_guard(
    guardrails: &Guardrails,
    reader: &Arc<Reader>,
    directory: &mut Directory,
) -> Result<Guard, LookupStop> {
    let mut guard = Guard::default();
    if let Some(list) = &guardrails.protect {
        read_list_users(list, reader, directory).await?;
        for entry in &list.protected {
            let shown = format!("{} {}", entry.place, printable(&entry.value));
            for name in entry_names(entry, directory) {
                guard.protect(&name, &shown);
            }
        }
        if guardrails.privileged {
            for entry in &list.allowed {
                for name in entry_names(entry, directory) {
                    guard.allow(&name);
                }
            }
        }
    }
    if guardrails.privileged {
        for (name, roles) in read_privileged(reader).await? {
            for role in roles {
                guard.privilege(&name, role);
            }
        }
    }
    let (protected, privileged) = guard.counts();
    info!(
        protectedNames = protected,
        privilegedNames = privileged,
        "guardrails read"
    );
    Ok(guard)
}

/// Reads the users the list's UPNs and object ids name, so that their other names count.
async fn read_list_users(
    list: &ProtectList,
    reader: &Arc<Reader>,
    directory: &mut Directory,
) -> Result<(), LookupStop> {
    let wanted: Vec<String> = list
        .protected
        .iter()
        .chain(&list.allowed)
        .filter(|entry| matches!(entry.kind, EntryKind::Upn | EntryKind::Guid))
        .map(|entry| key(&entry.value))
        .filter(|value| !directory.knows_user(value))
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    read_users(&wanted, reader, directory).await?;
    for entry in list.protected.iter().chain(&list.allowed) {
        if let Some(error) = directory.failure(&entry.value) {
            return Err(LookupStop::Guard(format!(
                "reading the user of the protect list's entry {} {:?} failed ({error})",
                entry.place,
                printable(&entry.value)
            )));
        }
        if entry.kind == EntryKind::Upn && directory.user(&entry.value) == Some(None) {
            warn!(entry = %entry.place, value = %printable(&entry.value), "the protect list names a UPN Graph has no user for; it still guards rows that give this UPN");
        }
    }
    Ok(())
}

/// The entry's value and, when Graph has its user, the user's object id, UPN and SID.
fn entry_names(entry: &ProtectEntry, directory: &Directory) -> Vec<String> {
    let mut names = vec![entry.value.clone()];
    if let Some(Some(user)) = directory.user(&entry.value) {
        names.push(user.id.clone());
        names.extend(user.user_principal_name.clone());
        names.extend(user.on_premises_security_identifier.clone());
    }
    names
}

/// Who holds each privileged role: object ids and UPNs, with the roles they hold.
async fn read_privileged(
    reader: &Arc<Reader>,
) -> Result<HashMap<String, BTreeSet<&'static str>>, LookupStop> {
    let mut reads = JoinSet::new();
    for (role, id) in PRIVILEGED_ROLES {
        let reader = reader.clone();
        reads.spawn(async move { (role, read_role(&reader, id).await) });
    }
    let mut holders: HashMap<String, BTreeSet<&'static str>> = HashMap::new();
    let mut stop = None;
    while let Some(joined) = reads.join_next().await {
        let (role, members) = match joined {
            Ok((role, Ok(members))) => (role, members),
            Ok((role, Err(why))) => {
                stop.get_or_insert(match why {
                    RoleReadError::Stop(stop) => stop,
                    RoleReadError::Failed(error) => {
                        LookupStop::Guard(format!("reading who holds {role} failed ({error})"))
                    }
                });
                continue;
            }
            Err(error) => {
                stop.get_or_insert(LookupStop::Guard(format!(
                    "a role read stopped unexpectedly: {error}"
                )));
                continue;
            }
        };
        for member in members {
            for name in member {
                holders.entry(name).or_default().insert(role);
            }
        }
    }
    match stop {
        Some(stop) => Err(stop),
        None => Ok(holders),
    }
}

enum RoleReadError {
    Stop(LookupStop),
    Failed(String),
}

/// One role's assignments, every page: for each user principal, its names (object id, UPN).
async fn read_role(reader: &Reader, role_id: &str) -> Result<Vec<Vec<String>>, RoleReadError> {
    #[derive(Deserialize)]
    struct Principal {
        #[serde(rename = "@odata.type")]
        odata_type: Option<String>,
        #[serde(rename = "userPrincipalName")]
        user_principal_name: Option<String>,
        #[serde(rename = "displayName")]
        display_name: Option<String>,
    }
    #[derive(Deserialize)]
    struct Assignment {
        #[serde(rename = "principalId")]
        principal_id: String,
        principal: Option<Principal>,
    }
    #[derive(Deserialize)]
    struct RolePage {
        value: Vec<Assignment>,
        #[serde(rename = "@odata.nextLink")]
        next_link: Option<String>,
    }
    let _slot = reader.slot().await;
    let mut members = Vec::new();
    // Every page, within the bounds of a walk (issue 16): a looping or endless nextLink stops
    // the guard's read, and so the run, instead of being followed for ever.
    let mut walk = Walk::new(
        format!("the assignments of the role {role_id}"),
        reader.client().role_assignments_url(role_id),
        reader.walk_limits(),
    );
    let parse = |body: &[u8]| {
        let page: RolePage = serde_json::from_slice(body).map_err(|error| {
            format!("Graph's answer is not a list of role assignments: {error}")
        })?;
        Ok(Parsed {
            entries: page.value.len() as u64,
            items: page.value,
            next_link: page.next_link,
        })
    };
    loop {
        let assignments = match walk.next(reader, Service::Roles, parse).await {
            Ok(Some(assignments)) => assignments,
            Ok(None) => return Ok(members),
            Err(WalkStop::Stop(stop)) => return Err(RoleReadError::Stop(stop)),
            Err(WalkStop::Failed(error)) => return Err(RoleReadError::Failed(error.to_string())),
        };
        for assignment in assignments {
            let principal = assignment.principal;
            let kind = principal
                .as_ref()
                .and_then(|p| p.odata_type.as_deref())
                .unwrap_or("#microsoft.graph.user");
            if kind.eq_ignore_ascii_case("#microsoft.graph.group") {
                let name = principal.as_ref().and_then(|p| p.display_name.as_deref());
                warn!(
                    role = role_id,
                    group = %printable(&assignment.principal_id),
                    name = %printable(name.unwrap_or("")),
                    "a privileged role is assigned to a group; its members are not read, so add them to a protect file"
                );
                continue;
            }
            if !kind.eq_ignore_ascii_case("#microsoft.graph.user") {
                continue;
            }
            let mut names = vec![key(&assignment.principal_id)];
            if let Some(upn) = principal.and_then(|p| p.user_principal_name) {
                names.push(key(&upn));
            }
            members.push(names);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::lookup::directory::Guarded;

    #[test]
    fn a_protect_file_keeps_entries_comments_and_sections_apart() {
        let text = "\u{feff}# break-glass accounts\n\
                    breakglass@contoso.com   # the first one\n\
                    \n\
                    S-1-5-21-1-2-3-500\n\
                    guest_fabrikam.com#EXT#@contoso.onmicrosoft.com\n\
                    [Allow]\n\
                    0f5c5bd0-7b48-4d5a-9b3f-4d2f3e0c1a11\n\
                    [protect]\n\
                    ops@contoso.com\n";
        let list = ProtectList::parse(text, "protect.txt").unwrap();
        let values: Vec<(&str, EntryKind, &str)> = list
            .protected
            .iter()
            .map(|e| (e.value.as_str(), e.kind, e.place.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("breakglass@contoso.com", EntryKind::Upn, "protect.txt:2"),
                ("S-1-5-21-1-2-3-500", EntryKind::Sid, "protect.txt:4"),
                (
                    "guest_fabrikam.com#EXT#@contoso.onmicrosoft.com",
                    EntryKind::Upn,
                    "protect.txt:5"
                ),
                ("ops@contoso.com", EntryKind::Upn, "protect.txt:9"),
            ]
        );
        assert_eq!(list.allowed.len(), 1);
        assert_eq!(list.allowed[0].kind, EntryKind::Guid);
        assert_eq!(list.allowed[0].place, "protect.txt:7");
    }

    #[test]
    fn a_line_that_names_nobody_is_refused_with_its_place() {
        for (text, line, says) in [
            ("ok@contoso.com\nJon Smith\n", 2, "not one entry"),
            ("jon\n", 1, "not a UPN, a SID or a GUID"),
            ("[deny]\n", 1, "unknown section"),
            ("a@b.c\n\n\u{1b}[31m@x\n", 3, "not one entry"),
        ] {
            let error = ProtectList::parse(text, "p.txt").unwrap_err().to_string();
            assert!(error.starts_with(&format!("p.txt:{line}: ")), "{error}");
            assert!(error.contains(says), "{error}");
            assert!(!error.contains('\u{1b}'), "{error}");
        }
    }

    #[test]
    fn a_list_of_only_allowed_people_forces_no_lookup_without_privileged() {
        let list = ProtectList::parse("[allow]\na@b.c\n", "p").unwrap();
        let rails = Guardrails {
            protect: Some(list),
            ..Guardrails::default()
        };
        assert!(!rails.look_up_every_row());
        let rails = Guardrails {
            privileged: true,
            ..rails
        };
        assert!(rails.look_up_every_row());
    }

    #[test]
    fn protection_wins_over_an_allow_entry_which_lifts_only_privilege() {
        let names = |list: &[&str]| list.iter().map(|n| key(n)).collect::<BTreeSet<_>>();
        let mut guard = Guard::default();
        guard.protect("BreakGlass@Contoso.com", "p.txt:1 breakglass@contoso.com");
        guard.privilege("oid-ga", "Global Administrator");
        guard.privilege("oid-ga", "Security Administrator");
        guard.allow("oid-ga");
        guard.allow("breakglass@contoso.com");
        guard.privilege("oid-pra", "Privileged Role Administrator");
        assert_eq!(
            guard.check(&names(&["x", "breakglass@contoso.com"])),
            Some(Guarded::Protected("p.txt:1 breakglass@contoso.com".into()))
        );
        assert_eq!(guard.check(&names(&["OID-GA"])), None);
        assert_eq!(
            guard.check(&names(&["oid-pra", "s-1-5-21-9"])),
            Some(Guarded::Privileged(vec!["Privileged Role Administrator"]))
        );
        assert_eq!(guard.check(&names(&["someone-else"])), None);
    }

    #[test]
    fn the_privileged_roles_are_distinct_guids() {
        let ids: HashSet<&str> = PRIVILEGED_ROLES.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), PRIVILEGED_ROLES.len());
        assert!(ids.iter().all(|id| uuid::Uuid::try_parse(id).is_ok()));
    }
}
