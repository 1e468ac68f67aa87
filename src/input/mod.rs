//! Reading the responder's spreadsheet: CSV or JSONL, row by row, into [`Job`]s or errors that
//! name the line and the reason.
//!
//! This module owns the file format (delimiters, BOM, quoting, JSON objects), column matching
//! (SPEC section 3) and per-row checks (empty cells, unknown names, unsafe ids). Checks that need
//! more than one row (duplicates, the support matrix summary, opposing actions) live in
//! [`plan`]. No HTTP, no tasks: the runner pulls rows from here on a blocking thread.

mod csv;
mod jsonl;
pub mod plan;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::graph::model::{Action, Provider, fold_name};

/// How a file is laid out. Chosen from the extension unless `--input-format` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Csv,
    Jsonl,
}

impl InputFormat {
    /// `.csv`/`.tsv`/`.txt` are CSV, `.jsonl`/`.ndjson`/`.json` are JSONL.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "tsv" | "txt" => Some(InputFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::Jsonl),
            _ => None,
        }
    }
}

/// Where rows come from: a file, or standard input (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    File(PathBuf),
    Stdin,
    /// A copy of standard input in a temporary file, still named `<stdin>` in messages.
    Spooled {
        path: PathBuf,
        name: String,
    },
}

impl InputSource {
    pub fn from_arg(arg: &Path) -> InputSource {
        if arg == Path::new("-") {
            InputSource::Stdin
        } else {
            InputSource::File(arg.to_path_buf())
        }
    }

    /// The name used in `FILE:LINE: reason` messages.
    pub fn display_name(&self) -> String {
        match self {
            InputSource::File(path) => path.display().to_string(),
            InputSource::Stdin => "<stdin>".to_owned(),
            InputSource::Spooled { name, .. } => name.clone(),
        }
    }
}

/// What the user told us about the input beyond the file itself.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    pub format: Option<InputFormat>,
    pub delimiter: Option<u8>,
    /// `--action`: used where the input has no action column.
    pub default_action: Option<Action>,
    /// `--provider`: used where the input has no provider column.
    pub default_provider: Option<Provider>,
    /// `--all-accounts`: used where a row has no `allAccounts` cell (issue 20).
    pub default_accounts: AccountScope,
    /// Whether rows may be looked up (`--no-lookup` forbids it: a row that would need a read
    /// is an input error).
    pub lookup: Lookup,
}

/// Whether a row that lacks one of the three ids Graph needs may be looked up (SPEC section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookup {
    #[default]
    Allowed,
    /// `--no-lookup`: no read is sent; every row must carry all three ids.
    Forbidden,
}

/// Which of a person's linked accounts a row acts on (issue 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum AccountScope {
    /// The one account SPEC section 8 picks (`accountAmbiguous` when several fit).
    #[default]
    One,
    /// Every linked account whose `actions` offer the row's action, one request each, as the
    /// Defender portal's Disable "disables all accounts linked to an identity"
    /// (`--all-accounts`, or the row's `allAccounts` cell). An `accountId` or a provider narrows
    /// the set.
    All,
}

impl AccountScope {
    /// An `allAccounts` cell: `true` or `false`, ignoring case.
    fn parse(text: &str) -> Option<AccountScope> {
        if text.eq_ignore_ascii_case("true") {
            Some(AccountScope::All)
        } else if text.eq_ignore_ascii_case("false") {
            Some(AccountScope::One)
        } else {
            None
        }
    }
}

/// One row of the input, normalised: trimmed, with Graph's spelling of action and provider. It
/// names its account by the three ids Graph needs, or by its identity's UPN, SID or Entra
/// object id for the lookup to find them (SPEC section 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The line the row starts on (a spreadsheet's row number for CSV with a header).
    pub line: u64,
    pub identity_account_id: Option<String>,
    pub account_id: Option<String>,
    pub action: Action,
    pub provider: Option<Provider>,
    pub sid: Option<String>,
    pub object_id: Option<String>,
    pub upn: Option<String>,
    /// Which of the person's accounts the row acts on.
    pub accounts: AccountScope,
    /// The carried-through cells, aligned with [`RowReader::carry_columns`].
    pub carry: Vec<String>,
}

/// The column that named a row's identity, in the order SPEC section 8 tries them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum IdentityColumn {
    IdentityAccountId,
    Sid,
    ObjectId,
    Upn,
}

impl IdentityColumn {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityColumn::IdentityAccountId => "identityAccountId",
            IdentityColumn::Sid => "sid",
            IdentityColumn::ObjectId => "objectId",
            IdentityColumn::Upn => "upn",
        }
    }
}

impl Row {
    /// The job exactly as the row gives it, when it carries all three ids.
    pub fn as_given(&self) -> Option<Job> {
        Some(Job {
            row: self.line,
            identity_account_id: self.identity_account_id.clone()?,
            account_id: self.account_id.clone()?,
            action: self.action,
            provider: Some(self.provider?),
            carry: self.carry.clone(),
            resolved_by: None,
            earlier_attempts: 0,
        })
    }

    /// The column that names the identity: the first of `identityAccountId`, `sid`, `objectId`,
    /// `upn` that the row fills, with its value.
    pub fn names_identity_by(&self) -> Option<(IdentityColumn, &str)> {
        [
            (IdentityColumn::IdentityAccountId, &self.identity_account_id),
            (IdentityColumn::Sid, &self.sid),
            (IdentityColumn::ObjectId, &self.object_id),
            (IdentityColumn::Upn, &self.upn),
        ]
        .into_iter()
        .find_map(|(column, value)| value.as_deref().map(|value| (column, value)))
    }

    /// The row as a results record before (or without) a lookup: what it gave, unresolved.
    pub fn unresolved(&self) -> Job {
        Job {
            row: self.line,
            identity_account_id: self.identity_account_id.clone().unwrap_or_default(),
            account_id: self.account_id.clone().unwrap_or_default(),
            action: self.action,
            provider: self.provider,
            carry: self.carry.clone(),
            resolved_by: None,
            earlier_attempts: 0,
        }
    }
}

/// One row to act on: the three ids Graph needs, as given or as the lookup found them. A row the
/// lookup refused keeps what it gave (`provider` may then be unknown); only a row with all three
/// is ever sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The line the row starts on (a spreadsheet's row number for CSV with a header).
    pub row: u64,
    pub identity_account_id: String,
    pub account_id: String,
    pub action: Action,
    pub provider: Option<Provider>,
    /// The carried-through cells, aligned with [`RowReader::carry_columns`].
    pub carry: Vec<String>,
    /// The column whose lookup found the ids; `None` when the row gave them.
    pub resolved_by: Option<IdentityColumn>,
    /// Attempts an earlier, interrupted run made whose outcome is unknown (set by `--resume`).
    pub earlier_attempts: u32,
}

/// A row that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

/// Errors that stop reading altogether: the file as a whole is unusable.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // The cause is in the message, not the error chain: `{:#}` would print it twice (issue 10).
    #[error("{file}: cannot read: {cause}")]
    Io { file: String, cause: io::Error },
    #[error(
        "{file}: cannot tell the format from the name; pass --input-format csv or --input-format jsonl"
    )]
    UnknownFormat { file: String },
    #[error("{file}:{line}: {reason}")]
    Header {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("{file}: the input is empty: expected a header row naming the columns")]
    Empty { file: String },
}

/// The columns the tool reads: the three ids Graph needs and the action, and the three ways a
/// responder's export names a person (SPEC section 8). Everything else is carried through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    IdentityAccountId,
    AccountId,
    Action,
    Provider,
    Sid,
    ObjectId,
    Upn,
    AllAccounts,
}

/// How many [`Field`]s there are: the length of a row's value array.
pub(crate) const FIELDS: usize = 8;

impl Field {
    pub(crate) const ALL: [Field; FIELDS] = [
        Field::IdentityAccountId,
        Field::AccountId,
        Field::Action,
        Field::Provider,
        Field::Sid,
        Field::ObjectId,
        Field::Upn,
        Field::AllAccounts,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::IdentityAccountId => "identityAccountId",
            Field::AccountId => "accountId",
            Field::Action => "action",
            Field::Provider => "identityProvider",
            Field::Sid => "sid",
            Field::ObjectId => "objectId",
            Field::Upn => "upn",
            Field::AllAccounts => "allAccounts",
        }
    }

    /// Whether the column also goes to the results under its own name: the identity columns a
    /// responder named people by stay beside the outcome, so the next shift reads who, not ids.
    pub(crate) fn is_carried(self) -> bool {
        matches!(self, Field::Sid | Field::ObjectId | Field::Upn)
    }

    /// Matches a header ignoring case, spaces, `_` and `-`, with the aliases SPEC sections 3 and
    /// 8 list. The identity columns also take the spellings of the exports responders hold:
    /// Defender XDR advanced hunting (IdentityInfo `OnPremSid`, `AccountUpn`, `AccountObjectId`;
    /// the event tables' `AccountSid` and `InitiatingProcessAccount*`; `RequestAccountSid`,
    /// `RecipientObjectId`), Sentinel (`AccountSID`, `AccountUPN`, `AadUserId`), Entra's user
    /// export (`objectId`, `userPrincipalName`) and Graph PowerShell (`UserPrincipalName`,
    /// `OnPremisesSecurityIdentifier`). Cloud SIDs, AD object GUIDs, `TargetAccountUpn` and mail
    /// addresses name something else, and are carried through.
    pub(crate) fn from_header(header: &str) -> Option<Field> {
        match fold_name(header.trim()).as_str() {
            "identityaccountid" | "identityaccountsid" => Some(Field::IdentityAccountId),
            "accountid" => Some(Field::AccountId),
            "action" => Some(Field::Action),
            "identityprovider" | "provider" => Some(Field::Provider),
            "sid"
            | "onpremsid"
            | "accountsid"
            | "onpremisessecurityidentifier"
            | "usersid"
            | "initiatingprocessaccountsid"
            | "requestaccountsid" => Some(Field::Sid),
            "objectid"
            | "accountobjectid"
            | "aaduserid"
            | "azureaduserid"
            | "initiatingprocessaccountobjectid"
            | "recipientobjectid" => Some(Field::ObjectId),
            "upn" | "userprincipalname" | "accountupn" | "initiatingprocessaccountupn" => {
                Some(Field::Upn)
            }
            "allaccounts" => Some(Field::AllAccounts),
            _ => None,
        }
    }
}

/// A reader that turns `\r\n` and a lone `\r` into `\n`, so that line numbers count the lines a
/// spreadsheet shows whichever line ending the file uses (Windows' CRLF, old Macs' CR).
struct UnixNewlines<R> {
    inner: R,
    /// The last byte read was a `\r`: a `\n` right after it is the same line end.
    after_cr: bool,
}

impl<R> UnixNewlines<R> {
    fn new(inner: R) -> UnixNewlines<R> {
        UnixNewlines {
            inner,
            after_cr: false,
        }
    }
}

impl<R: Read> Read for UnixNewlines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let read = self.inner.read(buf)?;
            if read == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for at in 0..read {
                let byte = buf[at];
                if byte == b'\n' && self.after_cr {
                    self.after_cr = false;
                    continue;
                }
                self.after_cr = byte == b'\r';
                buf[kept] = if self.after_cr { b'\n' } else { byte };
                kept += 1;
            }
            // A read that held only the `\n` of a CRLF is not the end of the file.
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// The most distinct carry-through columns a JSONL file may introduce. Keeps a hostile file from
/// growing the column list without bound.
pub(crate) const MAX_CARRY_COLUMNS: usize = 1000;

/// Row-by-row reader over either format.
pub struct RowReader {
    inner: Inner,
    file: String,
}

enum Inner {
    Csv(csv::CsvRows),
    Jsonl(jsonl::JsonlRows),
}

impl RowReader {
    /// Opens `source`, reads the CSV header (if any) and checks that the needed columns exist.
    pub fn open(source: &InputSource, options: &InputOptions) -> Result<RowReader, InputError> {
        let file = source.display_name();
        let format = match (options.format, source) {
            (Some(format), _) => format,
            (None, InputSource::File(path) | InputSource::Spooled { path, .. }) => {
                InputFormat::from_path(path)
                    .ok_or_else(|| InputError::UnknownFormat { file: file.clone() })?
            }
            (None, InputSource::Stdin) => return Err(InputError::UnknownFormat { file }),
        };
        let reader: Box<dyn Read + Send> = match source {
            InputSource::File(path) | InputSource::Spooled { path, .. } => {
                Box::new(File::open(path).map_err(|cause| InputError::Io {
                    file: file.clone(),
                    cause,
                })?)
            }
            InputSource::Stdin => Box::new(io::stdin()),
        };
        Self::from_reader(reader, format, &file, options)
    }

    /// Reads from any byte stream; `file` names it in messages.
    pub fn from_reader(
        reader: Box<dyn Read + Send>,
        format: InputFormat,
        file: &str,
        options: &InputOptions,
    ) -> Result<RowReader, InputError> {
        let inner = match format {
            // The csv crate counts lines by `\n` and, with CRLF, puts each record on the line
            // before its own (rust-csv issue 395): Excel's files would name the wrong rows. CR
            // and CRLF become LF before it parses.
            InputFormat::Csv => Inner::Csv(csv::CsvRows::new(
                BufReader::with_capacity(
                    64 * 1024,
                    Box::new(UnixNewlines::new(reader)) as Box<dyn Read + Send>,
                ),
                file,
                options,
            )?),
            InputFormat::Jsonl => Inner::Jsonl(jsonl::JsonlRows::new(
                BufReader::with_capacity(64 * 1024, reader),
                file,
                options,
            )),
        };
        Ok(RowReader {
            inner,
            file: file.to_owned(),
        })
    }

    /// For JSONL, fixes the carry-through columns up front (from a first pass), so every
    /// [`Job::carry`] lines up with them. CSV takes them from its header.
    pub fn with_carry_columns(mut self, columns: Vec<String>) -> RowReader {
        if let Inner::Jsonl(rows) = &mut self.inner {
            rows.set_carry_columns(columns);
        }
        self
    }

    pub fn format(&self) -> InputFormat {
        match self.inner {
            Inner::Csv(_) => InputFormat::Csv,
            Inner::Jsonl(_) => InputFormat::Jsonl,
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The carry-through column names seen so far: CSV's are fixed by the header, JSONL's grow
    /// as new keys appear (in first-seen order).
    pub fn carry_columns(&self) -> &[String] {
        match &self.inner {
            Inner::Csv(rows) => rows.carry_columns(),
            Inner::Jsonl(rows) => rows.carry_columns(),
        }
    }

    /// The next row, or `None` at the end. A hard I/O error ends the stream with an `Err`.
    pub fn next_row(&mut self) -> Option<Result<Result<Row, RowError>, InputError>> {
        match &mut self.inner {
            Inner::Csv(rows) => rows.next_row(),
            Inner::Jsonl(rows) => rows.next_row(),
        }
    }
}

impl Iterator for RowReader {
    type Item = Result<Result<Row, RowError>, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row()
    }
}

/// A row's values as found, before normalisation, by [`Field`]. `None` means the column or key
/// is absent.
pub(crate) struct RawRow<'a> {
    pub(crate) line: u64,
    pub(crate) values: [Option<&'a str>; FIELDS],
}

impl RawRow<'_> {
    /// The trimmed value of `field`, `None` when absent or empty: an empty cell names nothing.
    fn filled(&self, field: Field) -> Option<String> {
        self.values[field as usize]
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    }
}

/// Turns raw cells into a [`Row`], collecting every problem with the row.
pub(crate) fn build_row(
    raw: RawRow<'_>,
    carry: Vec<String>,
    options: &InputOptions,
) -> Result<Row, RowError> {
    let mut reasons: Vec<String> = Vec::new();
    let action = match (raw.values[Field::Action as usize], options.default_action) {
        (None, Some(default)) => Some(default),
        (_, default) => required(&raw, Field::Action, &mut reasons).and_then(|text| {
            let parsed = Action::parse(&text);
            match (parsed, default) {
                (None, _) => reasons.push(format!(
                    "unknown action {text:?}: expected one of {}",
                    Action::ALL.map(Action::as_str).join(", ")
                )),
                // The column would silently win over the flag (issue 16): which one the
                // responder meant is theirs to say.
                (Some(column), Some(flag)) if column != flag => reasons.push(format!(
                    "the action column says {column} but --action says {flag}; fix the cell, or leave --action out"
                )),
                _ => {}
            }
            parsed
        }),
    };
    let provider = match (raw.filled(Field::Provider), options.default_provider) {
        (None, default) => default,
        (Some(text), default) => {
            let parsed = Provider::parse(&text);
            match (parsed, default) {
                (None, _) => reasons.push(format!(
                    "unknown identity provider {text:?}: expected one of {}",
                    Provider::ALL.map(Provider::as_str).join(", ")
                )),
                (Some(column), Some(flag)) if column != flag => reasons.push(format!(
                    "the identityProvider column says {column} but --provider says {flag}; fix the cell, or leave --provider out"
                )),
                _ => {}
            }
            parsed
        }
    };
    let accounts = match raw.filled(Field::AllAccounts) {
        None => options.default_accounts,
        Some(text) => AccountScope::parse(&text).unwrap_or_else(|| {
            reasons.push(format!(
                "\"allAccounts\" {:?} is neither true nor false",
                crate::sanitize::printable(&text)
            ));
            options.default_accounts
        }),
    };
    let row = Row {
        line: raw.line,
        identity_account_id: raw.filled(Field::IdentityAccountId),
        account_id: raw.filled(Field::AccountId),
        action: action.unwrap_or(Action::Disable),
        provider,
        sid: raw.filled(Field::Sid),
        object_id: raw.filled(Field::ObjectId),
        upn: raw.filled(Field::Upn),
        accounts,
        carry,
    };
    if let Some(id) = &row.identity_account_id
        && let Err(reason) = check_path_id(id)
    {
        reasons.push(reason);
    }
    for (field, value) in [
        (Field::AccountId, &row.account_id),
        (Field::Sid, &row.sid),
        (Field::ObjectId, &row.object_id),
        (Field::Upn, &row.upn),
    ] {
        if let Some(c) = value
            .as_deref()
            .and_then(|v| v.chars().find(|c| c.is_control()))
        {
            reasons.push(format!(
                "\"{}\" holds a control character (U+{:04X})",
                field.name(),
                u32::from(c)
            ));
        }
    }
    if let Some(sid) = &row.sid
        && sid.to_ascii_uppercase().starts_with("S-1-12-")
    {
        reasons.push(format!(
            "\"sid\" {sid:?} is a cloud SID (S-1-12-...), not an on-premises SID; name the person by objectId or upn instead"
        ));
    }
    // A cell in the wrong column would be read as the other kind of name (issue 16).
    if let Some(upn) = &row.upn
        && uuid::Uuid::try_parse(upn.trim()).is_ok()
    {
        reasons.push(format!(
            "\"upn\" {:?} is an object id, not a userPrincipalName; put it in the objectId column",
            crate::sanitize::printable(upn)
        ));
    }
    if let Some(object_id) = &row.object_id
        && object_id.contains('@')
    {
        reasons.push(format!(
            "\"objectId\" {:?} is a userPrincipalName, not an object id; put it in the upn column",
            crate::sanitize::printable(object_id)
        ));
    }
    if row.as_given().is_none() && reasons.is_empty() {
        match (row.names_identity_by(), options.lookup) {
            (None, _) => reasons.push(
                "names no account: give identityAccountId, accountId and identityProvider, or a sid, upn or objectId to look the identity up"
                    .to_owned(),
            ),
            (Some(_), Lookup::Forbidden) => reasons.push(format!(
                "needs a lookup ({}), and --no-lookup sends no read: give identityAccountId, accountId and identityProvider",
                missing_ids(&row)
            )),
            (Some(_), Lookup::Allowed) => {}
        }
    }
    match action {
        Some(_) if reasons.is_empty() => Ok(row),
        _ => Err(RowError {
            line: raw.line,
            reason: reasons.join("; "),
        }),
    }
}

/// Which of the three ids a row lacks, for messages.
fn missing_ids(row: &Row) -> String {
    let missing: Vec<&str> = [
        ("identityAccountId", row.identity_account_id.is_none()),
        ("accountId", row.account_id.is_none()),
        ("identityProvider", row.provider.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect();
    format!("no {}", missing.join(", no "))
}

/// The trimmed value of a field that must be present and non-empty.
fn required(raw: &RawRow<'_>, field: Field, reasons: &mut Vec<String>) -> Option<String> {
    match raw.values[field as usize].map(str::trim) {
        None => {
            reasons.push(format!("missing \"{}\"", field.name()));
            None
        }
        Some("") => {
            reasons.push(format!("empty \"{}\"", field.name()));
            None
        }
        Some(value) => Some(value.to_owned()),
    }
}

/// The identity account id becomes a URL path segment. It is percent-encoded when sent, but a
/// `/`, `?`, `#` or `%` in an id almost always means a pasted URL or a wrong column, so such ids
/// are refused rather than guessed at (SPEC section 3).
pub(crate) fn check_path_id(id: &str) -> Result<(), String> {
    // `.` and `..` are dot segments: a URL parser collapses them, and the request would go to
    // another resource (issue 10).
    if id == "." || id == ".." {
        return Err(format!(
            "\"identityAccountId\" {id:?} is not an id (a URL would read it as a path step); check the column"
        ));
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '?' | '#' | '%')) {
        return Err(format!(
            "\"identityAccountId\" {id:?} holds {c:?}, which cannot be part of an id; check the column"
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "\"identityAccountId\" holds a control character (U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(())
}

/// What a header lacks: the action (unless `--action` gives it), and a way to name the account:
/// the three ids (where `--provider` may stand in for the provider column), or, when lookups
/// are allowed, any of identityAccountId, sid, objectId or upn.
pub(crate) fn missing_columns(found: &[bool; FIELDS], options: &InputOptions) -> Vec<String> {
    let has = |field: Field| found[field as usize];
    let mut missing = Vec::new();
    if !has(Field::Action) && options.default_action.is_none() {
        missing.push("missing column \"action\": add it, or give --action".to_owned());
    }
    let provider = has(Field::Provider) || options.default_provider.is_some();
    let all_three = has(Field::IdentityAccountId) && has(Field::AccountId) && provider;
    let names_someone = [
        Field::IdentityAccountId,
        Field::Sid,
        Field::ObjectId,
        Field::Upn,
    ]
    .into_iter()
    .any(has);
    match options.lookup {
        Lookup::Allowed if !all_three && !names_someone => missing.push(
            "no column names the account: give identityAccountId, accountId and identityProvider, or a column of UPNs, SIDs or Entra object ids (upn, sid, objectId, or an export's AccountUpn, OnPremSid, AccountObjectId ...) to look them up".to_owned(),
        ),
        Lookup::Forbidden if !all_three => {
            for field in [Field::IdentityAccountId, Field::AccountId] {
                if !has(field) {
                    missing.push(format!(
                        "missing column \"{}\" (--no-lookup: every row must carry it)",
                        field.name()
                    ));
                }
            }
            if !provider {
                missing.push(
                    "missing column \"identityProvider\": add it, or give --provider".to_owned(),
                );
            }
        }
        _ => {}
    }
    missing
}

/// The longest JSONL line read; a longer one is a row error, and reading goes on after it. Keeps
/// a file without line breaks from being read into memory whole (issue 10).
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// How a bounded line read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line (through `\n`, or the last one without it) is in the buffer.
    Read,
    /// The line was longer than the limit: skipped up to its end, the buffer left empty.
    TooLong,
    /// No more input.
    End,
}

/// Reads one line (through `\n`) into `buf`, keeping at most `max` bytes of it.
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(match (read_any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Read,
            });
        }
        read_any = true;
        let (used, ends) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if buf.len() + used > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..used]);
            }
        }
        reader.consume(used);
        if ends {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw row holding `cells` by field; every other field absent.
    fn raw<'a>(cells: &[(Field, &'a str)]) -> RawRow<'a> {
        let mut values = [None; FIELDS];
        for (field, value) in cells {
            values[*field as usize] = Some(*value);
        }
        RawRow { line: 7, values }
    }

    fn all_three<'a>(action: &'a str, provider: &'a str) -> RawRow<'a> {
        raw(&[
            (Field::IdentityAccountId, " id-1 "),
            (Field::AccountId, "\tS-1-5 "),
            (Field::Action, action),
            (Field::Provider, provider),
        ])
    }

    #[test]
    fn headers_match_ignoring_case_spaces_and_separators() {
        assert_eq!(
            Field::from_header("Identity Account ID"),
            Some(Field::IdentityAccountId)
        );
        assert_eq!(
            Field::from_header("identity_accounts-id"),
            Some(Field::IdentityAccountId)
        );
        assert_eq!(Field::from_header("ACCOUNTID"), Some(Field::AccountId));
        assert_eq!(Field::from_header(" Provider "), Some(Field::Provider));
        assert_eq!(
            Field::from_header("identity-provider"),
            Some(Field::Provider)
        );
        assert_eq!(Field::from_header("account"), None);
    }

    #[test]
    fn issue_12_export_spellings_name_the_identity_columns() {
        for (header, field) in [
            ("OnPremSid", Field::Sid),
            ("AccountSid", Field::Sid),
            ("OnPremisesSecurityIdentifier", Field::Sid),
            ("AccountObjectId", Field::ObjectId),
            ("AadUserId", Field::ObjectId),
            ("objectId", Field::ObjectId),
            ("AccountUpn", Field::Upn),
            ("UserPrincipalName", Field::Upn),
            ("upn", Field::Upn),
        ] {
            assert_eq!(Field::from_header(header), Some(field), "{header}");
        }
        // Names for something else are carried, not guessed at.
        for header in ["TargetAccountUpn", "CloudSid", "AccountName", "mail"] {
            assert_eq!(Field::from_header(header), None, "{header}");
        }
    }

    #[test]
    fn values_are_trimmed_and_names_normalised() {
        let row = build_row(
            all_three("Force Password Reset", "AD"),
            vec![],
            &InputOptions::default(),
        )
        .unwrap();
        let job = row.as_given().unwrap();
        assert_eq!(job.identity_account_id, "id-1");
        assert_eq!(job.account_id, "S-1-5");
        assert_eq!(job.action, Action::ForcePasswordReset);
        assert_eq!(job.provider, Some(Provider::ActiveDirectory));
        assert_eq!(job.row, 7);
        assert_eq!(job.resolved_by, None);
    }

    #[test]
    fn defaults_fill_absent_columns_but_not_empty_cells() {
        let options = InputOptions {
            default_action: Some(Action::Disable),
            default_provider: Some(Provider::Okta),
            ..InputOptions::default()
        };
        let ids = [(Field::IdentityAccountId, "i"), (Field::AccountId, "a")];
        let row = build_row(raw(&ids), vec![], &options).unwrap();
        assert_eq!(
            (row.action, row.provider),
            (Action::Disable, Some(Provider::Okta))
        );
        let err = build_row(
            raw(&[ids[0], ids[1], (Field::Action, " ")]),
            vec![],
            &options,
        )
        .unwrap_err();
        assert_eq!(err.reason, "empty \"action\"");
    }

    #[test]
    fn every_problem_in_a_row_is_reported() {
        let err = build_row(
            raw(&[
                (Field::IdentityAccountId, "a/b"),
                (Field::Action, "delete"),
                (Field::Provider, "google"),
                (Field::Upn, "ann\u{1b}@contoso.com"),
            ]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap_err();
        for part in [
            "unknown action \"delete\"",
            "unknown identity provider \"google\"",
            "holds '/'",
            "\"upn\" holds a control character (U+001B)",
        ] {
            assert!(err.reason.contains(part), "{part}: {}", err.reason);
        }
    }

    #[test]
    fn issue_16_a_upn_cell_holding_an_object_id_or_the_reverse_is_a_row_error() {
        for (field, value, says) in [
            (
                Field::Upn,
                "0b9f4c7e-1111-4a2b-9c3d-0123456789ab",
                "\"upn\" \"0b9f4c7e-1111-4a2b-9c3d-0123456789ab\" is an object id",
            ),
            (
                Field::ObjectId,
                "ann@contoso.com",
                "\"objectId\" \"ann@contoso.com\" is a userPrincipalName",
            ),
        ] {
            let err = build_row(
                raw(&[(field, value), (Field::Action, "disable")]),
                vec![],
                &InputOptions::default(),
            )
            .unwrap_err();
            assert!(err.reason.contains(says), "{}", err.reason);
        }
    }

    #[test]
    fn issue_20_the_all_accounts_cell_overrides_the_flag_and_refuses_other_values() {
        let with = |cell: Option<&str>, flag: AccountScope| {
            let mut cells = vec![(Field::Upn, "ann@contoso.com"), (Field::Action, "disable")];
            cells.extend(cell.map(|cell| (Field::AllAccounts, cell)));
            let options = InputOptions {
                default_accounts: flag,
                ..InputOptions::default()
            };
            build_row(raw(&cells), vec![], &options)
        };
        assert_eq!(
            with(None, AccountScope::One).unwrap().accounts,
            AccountScope::One
        );
        assert_eq!(
            with(None, AccountScope::All).unwrap().accounts,
            AccountScope::All
        );
        assert_eq!(
            with(Some(" "), AccountScope::All).unwrap().accounts,
            AccountScope::All
        );
        assert_eq!(
            with(Some("TRUE"), AccountScope::One).unwrap().accounts,
            AccountScope::All
        );
        assert_eq!(
            with(Some("false"), AccountScope::All).unwrap().accounts,
            AccountScope::One
        );
        let error = with(Some("yes"), AccountScope::One).unwrap_err();
        assert_eq!(error.line, 7);
        assert!(
            error.reason.contains("neither true nor false"),
            "{}",
            error.reason
        );
        assert_eq!(Field::from_header("All Accounts"), Some(Field::AllAccounts));
    }

    #[test]
    fn issue_20_a_jsonl_row_says_all_accounts_as_a_boolean() {
        let text = "{\"upn\": \"ann@contoso.com\", \"action\": \"disable\", \"allAccounts\": true}\n\
                    {\"upn\": \"bob@contoso.com\", \"action\": \"disable\", \"allAccounts\": false}\n";
        let rows = RowReader::from_reader(
            Box::new(io::Cursor::new(text.as_bytes().to_vec())),
            InputFormat::Jsonl,
            "in.jsonl",
            &InputOptions::default(),
        )
        .unwrap();
        let scopes: Vec<AccountScope> = rows.map(|row| row.unwrap().unwrap().accounts).collect();
        assert_eq!(scopes, [AccountScope::All, AccountScope::One]);
    }

    #[test]
    fn issue_12_a_row_may_name_its_identity_by_any_identity_column() {
        for (field, value, column) in [
            (
                Field::IdentityAccountId,
                "id-1",
                IdentityColumn::IdentityAccountId,
            ),
            (Field::Sid, "S-1-5-21-1-2-3-1104", IdentityColumn::Sid),
            (
                Field::ObjectId,
                "0b9f4c7e-1111-4a2b-9c3d-0123456789ab",
                IdentityColumn::ObjectId,
            ),
            (Field::Upn, "ann@contoso.com", IdentityColumn::Upn),
        ] {
            let row = build_row(
                raw(&[(field, value), (Field::Action, "disable")]),
                vec![],
                &InputOptions::default(),
            )
            .unwrap();
            assert_eq!(row.names_identity_by(), Some((column, value)));
            assert_eq!(row.as_given(), None, "needs a lookup");
        }
    }

    #[test]
    fn issue_12_the_first_filled_identity_column_names_the_identity() {
        let row = build_row(
            raw(&[
                (Field::IdentityAccountId, " "),
                (Field::Sid, ""),
                (Field::ObjectId, "oid-1"),
                (Field::Upn, "ann@contoso.com"),
                (Field::Action, "disable"),
            ]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap();
        assert_eq!(
            row.names_identity_by(),
            Some((IdentityColumn::ObjectId, "oid-1"))
        );
    }

    #[test]
    fn issue_12_a_row_that_names_no_one_is_an_input_error() {
        let err = build_row(
            raw(&[(Field::AccountId, "a"), (Field::Action, "disable")]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap_err();
        assert!(err.reason.starts_with("names no account"), "{}", err.reason);
    }

    #[test]
    fn issue_12_no_lookup_makes_a_row_that_needs_one_an_input_error() {
        let options = InputOptions {
            lookup: Lookup::Forbidden,
            ..InputOptions::default()
        };
        let err = build_row(
            raw(&[(Field::Upn, "ann@contoso.com"), (Field::Action, "disable")]),
            vec![],
            &options,
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "needs a lookup (no identityAccountId, no accountId, no identityProvider), and --no-lookup sends no read: give identityAccountId, accountId and identityProvider"
        );
        // A row carrying all three is fine without a read.
        assert!(build_row(all_three("disable", "okta"), vec![], &options).is_ok());
    }

    #[test]
    fn issue_12_a_cloud_sid_is_refused_in_the_sid_column() {
        let err = build_row(
            raw(&[(Field::Sid, "S-1-12-1-1-2-3-4"), (Field::Action, "disable")]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap_err();
        assert!(err.reason.contains("cloud SID"), "{}", err.reason);
    }

    #[test]
    fn path_ids_refuse_url_syntax_and_control_characters() {
        for id in ["a/b", "a?b", "a#b", "a%2Fb"] {
            assert!(check_path_id(id).is_err(), "{id}");
        }
        assert!(check_path_id("a\u{7}b").unwrap_err().contains("U+0007"));
        assert!(check_path_id("7e1b5b2c-1111-4a2b-9c3d-0123456789ab").is_ok());
        assert!(check_path_id("user name").is_ok());
    }

    #[test]
    fn issue_10_dot_segment_ids_are_refused() {
        for id in [".", ".."] {
            let reason = check_path_id(id).unwrap_err();
            assert!(reason.contains("path step"), "{reason}");
        }
        assert!(check_path_id("...").is_ok(), "not a dot segment");
        assert!(check_path_id(".hidden").is_ok());
    }

    #[test]
    fn issue_10_lines_are_read_up_to_a_limit_and_reading_goes_on() {
        let text = format!("short\n{}\nafter\nlast", "x".repeat(100));
        let mut reader = BufReader::with_capacity(8, text.as_bytes());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match read_line(&mut reader, &mut buf, 20).unwrap() {
                Line::End => break,
                other => lines.push((other, String::from_utf8(buf.clone()).unwrap())),
            }
        }
        assert_eq!(
            lines,
            vec![
                (Line::Read, "short\n".to_owned()),
                (Line::TooLong, String::new()),
                (Line::Read, "after\n".to_owned()),
                (Line::Read, "last".to_owned()),
            ]
        );
    }

    #[test]
    fn crlf_and_cr_become_lf_even_across_reads() {
        struct OneByteAtATime<'a>(&'a [u8]);
        impl Read for OneByteAtATime<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.split_first() {
                    Some((first, rest)) if !buf.is_empty() => {
                        buf[0] = *first;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let mut out = String::new();
        UnixNewlines::new(OneByteAtATime(b"a\r\nb\rc\n\r\n\nd"))
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "a\nb\nc\n\n\nd");
    }

    #[test]
    fn issue_12_rows_of_a_crlf_file_are_named_by_the_lines_a_spreadsheet_shows() {
        for text in [
            "identityAccountId,accountId,action,identityProvider\r\na,b,disable,okta\r\nc,d,\"lo\r\nck\",okta\r\ne,f,disable,okta\r\n",
            "identityAccountId,accountId,action,identityProvider\ra,b,disable,okta\rc,d,\"lo\rck\",okta\re,f,disable,okta\r",
        ] {
            let rows = RowReader::from_reader(
                Box::new(io::Cursor::new(text.as_bytes().to_vec())),
                InputFormat::Csv,
                "x.csv",
                &InputOptions::default(),
            )
            .unwrap();
            let lines: Vec<u64> = rows
                .map(|row| match row.unwrap() {
                    Ok(row) => row.line,
                    Err(error) => error.line,
                })
                .collect();
            assert_eq!(lines, [2, 3, 5], "{text:?}");
        }
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            InputFormat::from_path(Path::new("a.CSV")),
            Some(InputFormat::Csv)
        );
        assert_eq!(
            InputFormat::from_path(Path::new("a.ndjson")),
            Some(InputFormat::Jsonl)
        );
        assert_eq!(InputFormat::from_path(Path::new("a.xlsx")), None);
    }
}
