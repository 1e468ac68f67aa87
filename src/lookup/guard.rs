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
//! The rule (issue 16): a run acts only when every guard in force was read whole and every entry
//! confirmed. A protect file that cannot be read, a role read answered with anything but a page,
//! or a protected entry Graph knows nobody by (unless `--accept-stale-protect-entries`) stops the
//! run before the first action; [`read_guard`] is where it is kept.
//!
//! Privileged roles: the built-in Entra directory roles Microsoft labels "Privileged" in its
//! permissions reference ([`PRIVILEGED_ROLES`]), and on beta the custom roles it labels so. Their
//! holders are those assigned the role, those PIM-eligible for it, and the members (and PIM for
//! Groups eligible members) of the role-assignable groups that hold it (issue 20); the reads,
//! each with its permission, are in [`privileged`]. Those reads also find the users in
//! restricted-management administrative units, whom the plan flags: Graph refuses the Entra ID
//! part of an action on them, whoever asks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{info, warn};

use super::directory::{Directory, Found, Guard, key};
use super::read::{LookupStop, Reader};
use super::{Ask, collect, read_one, read_users};
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
    /// What a protect entry that names nobody Graph knows does (issue 16).
    pub stale: StaleEntries,
}

/// What becomes of a protect entry Graph knows nobody by: a typo, a trailing dot, a look-alike
/// letter, an invisible character, quotes or `mailto:` pasted with it. Such an entry protects
/// nobody while the person it was meant for is acted on, so by default it stops the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StaleEntries {
    /// Stop before anything is sent, naming each entry.
    #[default]
    Refuse,
    /// `--accept-stale-protect-entries`: warn, and guard rows that name the entry as written.
    Accept,
}

impl Guardrails {
    /// What is in force, for messages: the protect files and `--protect-privileged`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = &self.protect {
            for file in &list.files {
                parts.push(format!("protect file {}", shown_path(file)));
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

    /// Each guard in force, for the plan and the log (issue 16): every protect file with its
    /// entry counts (one that protects nobody says so), `--protect-privileged`, `--max-actions`.
    /// Empty when none is.
    pub fn in_force(&self) -> Vec<String> {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = &self.protect {
            for file in &list.files {
                let name = shown_path(file);
                let count =
                    |entries: &[ProtectEntry]| entries.iter().filter(|e| e.file == name).count();
                let protected = count(&list.protected);
                let nobody = if protected == 0 {
                    ": it protects nobody"
                } else {
                    ""
                };
                parts.push(format!(
                    "protect file {name} ({protected} protected, {} allowed{nobody})",
                    count(&list.allowed)
                ));
            }
        }
        if self.privileged {
            parts.push(format!(
                "--protect-privileged ({} directory roles)",
                PRIVILEGED_ROLES.len()
            ));
        }
        if let Some(max) = self.max_actions {
            parts.push(format!("--max-actions {max}"));
        }
        parts
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
    /// The file, as named in `place`.
    pub file: String,
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
    // `cause` is not a `source`: `{:#}` would print it a second time (issue 16).
    #[error("cannot read the protect file {path}: {cause}; nothing was sent")]
    Read { path: String, cause: std::io::Error },
    #[error("cannot use the protect file {path}: {reason}; nothing was sent")]
    Unusable { path: String, reason: String },
    #[error(
        "{path}:{line}: {reason}; write one UPN, on-premises SID (S-1-...), Entra object id or identityAccounts id a line, `#` for comments, and `[allow]` before privileged people a run may act on"
    )]
    Entry {
        path: String,
        line: usize,
        reason: String,
    },
}

/// The most bytes a protect file may hold: a list of people, not a directory dump.
pub const MAX_PROTECT_FILE_BYTES: u64 = 4 * 1024 * 1024;

impl ProtectList {
    /// Reads and checks `path`: a regular file (a FIFO or a device is refused, never waited on)
    /// of at most `MAX_PROTECT_FILE_BYTES` (4 MiB).
    pub fn load(path: &Path) -> Result<ProtectList, ProtectFileError> {
        let shown = shown_path(path);
        let bytes = read_regular(path)?;
        let text = String::from_utf8(bytes).map_err(|error| ProtectFileError::Entry {
            path: shown.clone(),
            line: 1 + count_lines(&error.as_bytes()[..error.utf8_error().valid_up_to()]),
            reason: "not UTF-8".to_owned(),
        })?;
        let mut list = ProtectList::parse(&text, &shown)?;
        list.files.push(path.to_path_buf());
        Ok(list)
    }

    /// Reads the default protect file at `path` when there is one (issue 16): only "no such
    /// file" means no default list. A dangling symbolic link, a directory, a FIFO, a path that
    /// cannot be searched or a file that cannot be read stops the run with the path and the
    /// reason: a guard that cannot be read must not quietly protect nobody.
    pub fn load_default(path: &Path) -> Result<Option<ProtectList>, ProtectFileError> {
        if is_absent(path)? {
            return Ok(None);
        }
        ProtectList::load(path).map(Some)
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
                file: shown.to_owned(),
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

/// An entry as messages show it: `FILE:LINE "value"`, with every character that is not a
/// printable ASCII one escaped as `\u{..}`, so that a zero-width space, a look-alike letter or an
/// escape sequence pasted into the file is seen for what it is (issue 16).
pub fn shown_entry(entry: &ProtectEntry) -> String {
    use std::fmt::Write as _;
    let mut value = String::with_capacity(entry.value.len() + 2);
    value.push('"');
    for c in entry.value.chars() {
        if c.is_ascii_graphic() && c != '"' && c != '\\' {
            value.push(c);
        } else {
            let _ = write!(value, "\\u{{{:x}}}", u32::from(c));
        }
    }
    value.push('"');
    format!("{} {value}", printable(&entry.place))
}

/// A path as messages show it: a file name may hold an escape sequence too.
fn shown_path(path: &Path) -> String {
    printable(&path.display().to_string()).into_owned()
}

/// Whether nothing at all is at `path`, nor at the first of its parents that exists a dangling
/// link: `Ok(true)` only for "no such file". Any other answer is an error naming the reason.
fn is_absent(path: &Path) -> Result<bool, ProtectFileError> {
    let unusable = |reason: String| ProtectFileError::Unusable {
        path: shown_path(path),
        reason,
    };
    for (depth, at) in path.ancestors().enumerate() {
        if at.as_os_str().is_empty() {
            break;
        }
        match std::fs::symlink_metadata(at) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(cause) => {
                return Err(ProtectFileError::Read {
                    path: shown_path(path),
                    cause,
                });
            }
            Ok(meta) if meta.file_type().is_symlink() && std::fs::metadata(at).is_err() => {
                return Err(unusable(format!(
                    "{} is a symbolic link to something that does not exist",
                    shown_path(at)
                )));
            }
            // The file itself is there: read it. A parent is there without the rest: no file.
            Ok(_) => return Ok(depth > 0),
        }
    }
    Ok(true)
}

/// The bytes of the regular file at `path`. Opened without blocking, so that a FIFO is refused
/// instead of waited on for ever (issue 16), and read up to [`MAX_PROTECT_FILE_BYTES`].
fn read_regular(path: &Path) -> Result<Vec<u8>, ProtectFileError> {
    use std::io::Read as _;
    let shown = || shown_path(path);
    let read_error = |cause| ProtectFileError::Read {
        path: shown(),
        cause,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, a socket or a device)"
        };
        return Err(ProtectFileError::Unusable {
            path: shown(),
            reason: format!("it is {what}; give a text file of entries"),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_PROTECT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PROTECT_FILE_BYTES {
        return Err(ProtectFileError::Unusable {
            path: shown(),
            reason: format!(
                "it is larger than {} bytes, more than a list of people",
                MAX_PROTECT_FILE_BYTES
            ),
        });
    }
    Ok(bytes)
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
    // `get`, not `[..4]`: the fourth byte may fall inside a character (issue 16).
    if value.len() > 4
        && value
            .get(..4)
            .is_some_and(|start| start.eq_ignore_ascii_case("S-1-"))
    {
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
        read_list_users(list, guardrails.stale, reader, directory).await?;
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
        let found = privileged::read_privileged(reader).await?;
        for (name, roles) in found.holders {
            for role in roles {
                guard.privilege(&name, &role);
            }
        }
        for (name, unit) in found.restricted {
            directory.note_restricted(&name, &unit);
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

/// Reads the users the list's UPNs and object ids name, so that their other names count, and
/// confirms every entry: a protected entry Graph knows nobody by stops the run (issue 16) unless
/// `stale_entries` accepts it.
async fn read_list_users(
    list: &ProtectList,
    stale_entries: StaleEntries,
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
    // Ids and SIDs that are no user's: confirmed by an identity of that id or SID.
    let mut reads = JoinSet::new();
    let mut asked = BTreeSet::new();
    for entry in list.protected.iter().chain(&list.allowed) {
        let value = key(&entry.value);
        let ask = match entry.kind {
            EntryKind::Guid if directory.user(&value) == Some(None) => {
                if matches!(directory.by_id(&value), Found::None) && !directory.is_complete() {
                    Ask::Id(value.clone())
                } else {
                    continue;
                }
            }
            EntryKind::Sid if !directory.knows_sid(&value) => Ask::Sid(value.clone()),
            _ => continue,
        };
        if asked.insert(value) {
            reads.spawn(read_one(reader.clone(), ask));
        }
    }
    collect(&mut reads, directory).await?;
    let mut stale = Vec::new();
    for entry in list.protected.iter().chain(&list.allowed) {
        if let Some(error) = directory.failure(&entry.value) {
            return Err(LookupStop::Guard(format!(
                "reading whom the protect list's entry {} names failed ({error})",
                shown_entry(entry)
            )));
        }
        if confirmed(entry, directory) {
            continue;
        }
        let protects = list.protected.contains(entry);
        if protects && stale_entries == StaleEntries::Refuse {
            stale.push(entry);
        } else {
            warn!(entry = %shown_entry(entry), hint = %stale_hint(entry), "the protect list names nobody Graph knows; it guards only rows that give this value as written");
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = stale
        .iter()
        .map(|entry| format!("{} ({})", shown_entry(entry), stale_hint(entry)))
        .collect();
    Err(LookupStop::StaleProtectEntries(named.join("; ")))
}

/// Whether Graph knows whom `entry` names: a user for a UPN; a user or an identity for a GUID;
/// an identity for a SID. Reads answered already (see [`read_list_users`]).
fn confirmed(entry: &ProtectEntry, directory: &Directory) -> bool {
    let value = &entry.value;
    let user = matches!(directory.user(value), Some(Some(_)));
    let identity = |found: Found<'_>| matches!(found, Found::One(_) | Found::Many(_));
    match entry.kind {
        EntryKind::Upn => user || identity(directory.by_upn_in_index(value)),
        EntryKind::Guid => {
            user || identity(directory.by_id(value))
                || identity(directory.by_object_id_in_index(value))
        }
        EntryKind::Sid => identity(directory.by_sid(value)),
    }
}

/// What an entry Graph knows nobody by most likely holds, for the message.
fn stale_hint(entry: &ProtectEntry) -> &'static str {
    let value = entry.value.as_str();
    let quotes = [
        '"', '\'', '<', '>', '\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}',
    ];
    if value.starts_with(quotes) || value.ends_with(quotes) {
        "quotes pasted with it?"
    } else if value
        .get(..7)
        .is_some_and(|start| start.eq_ignore_ascii_case("mailto:"))
    {
        "`mailto:` pasted with it?"
    } else if value.ends_with('.') {
        "a trailing dot?"
    } else if !value.is_ascii() {
        "a look-alike letter or an invisible character, escaped here as \\u{..}?"
    } else {
        "a typo, or someone who has left?"
    }
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

mod files;
pub use files::ProtectFiles;
mod privileged;
#[cfg(test)]
mod property_tests;

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
            // The fourth byte inside a character once panicked the SID test (issue 16).
            ("abc\u{e9}d\n", 1, "not a UPN, a SID or a GUID"),
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
            Some(Guarded::Privileged(vec![
                "Privileged Role Administrator".to_owned()
            ]))
        );
        assert_eq!(guard.check(&names(&["someone-else"])), None);
    }

    #[test]
    fn issue_16_an_unreadable_protect_file_names_its_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.txt");
        let error = anyhow::Error::new(ProtectList::load(&path).unwrap_err());
        let shown = format!("{error:#}");
        assert!(shown.contains("missing.txt"), "{shown}");
        assert_eq!(
            shown.matches("No such file").count(),
            1,
            "the cause is printed once: {shown}"
        );
    }

    #[test]
    fn issue_16_only_no_such_file_means_no_default_protect_list() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        // Nothing there, not even the directory: no default list.
        let path = config.join("graph-remediate").join("protect.txt");
        assert_eq!(ProtectList::load_default(&path).unwrap(), None);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        assert_eq!(ProtectList::load_default(&path).unwrap(), None);
        std::fs::write(&path, "a@b.c\n").unwrap();
        let list = ProtectList::load_default(&path).unwrap().unwrap();
        assert_eq!(list.protected.len(), 1);
        std::fs::remove_file(&path).unwrap();

        // A directory where the file should be.
        std::fs::create_dir(&path).unwrap();
        let error = ProtectList::load_default(&path).unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");
        assert!(error.contains("protect.txt"), "{error}");
        std::fs::remove_dir(&path).unwrap();

        // A path through a regular file cannot be searched.
        let blocked = dir.path().join("a-file");
        std::fs::write(&blocked, "").unwrap();
        let error = ProtectList::load_default(&blocked.join("protect.txt"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot read the protect file"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn issue_16_a_dangling_link_or_a_fifo_as_the_protect_file_stops_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("protect.txt");
        std::os::unix::fs::symlink(dir.path().join("moved-away.txt"), &path).unwrap();
        let error = ProtectList::load_default(&path).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert!(error.contains("protect.txt"), "{error}");
        std::fs::remove_file(&path).unwrap();

        // A dangling link as the directory that holds it.
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &linked).unwrap();
        let error = ProtectList::load_default(&linked.join("protect.txt"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("symbolic link"), "{error}");

        // A FIFO with no writer: refused at once, as the default file and as --protect.
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `name` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = ProtectList::load_default(&path).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
        let error = ProtectList::load(&path).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }

    #[test]
    fn issue_16_the_guards_in_force_name_each_file_and_a_file_that_protects_nobody() {
        let mut list = ProtectList::parse("# only comments\n\n", "empty.txt").unwrap();
        list.files.push(PathBuf::from("empty.txt"));
        let mut other = ProtectList::parse("a@b.c\nS-1-5-21-1\n[allow]\nd@e.f\n", "p.txt").unwrap();
        other.files.push(PathBuf::from("p.txt"));
        list.merge(other);
        let rails = Guardrails {
            protect: Some(list),
            privileged: true,
            ..Guardrails::default()
        };
        assert_eq!(
            rails.in_force(),
            [
                "protect file empty.txt (0 protected, 0 allowed: it protects nobody)",
                "protect file p.txt (2 protected, 1 allowed)",
                "--protect-privileged (20 directory roles)",
            ]
        );
        assert!(Guardrails::default().in_force().is_empty());
    }

    #[test]
    fn the_privileged_roles_are_distinct_guids() {
        let ids: HashSet<&str> = PRIVILEGED_ROLES.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), PRIVILEGED_ROLES.len());
        assert!(ids.iter().all(|id| uuid::Uuid::try_parse(id).is_ok()));
    }
}
