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
#[cfg(test)]
mod property_tests;

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
}

/// One row to act on, normalised: trimmed, with Graph's spelling of action and provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The line the row starts on (a spreadsheet's row number for CSV with a header).
    pub row: u64,
    pub identity_account_id: String,
    pub account_id: String,
    pub action: Action,
    pub provider: Provider,
    /// The carried-through cells, aligned with [`RowReader::carry_columns`].
    pub carry: Vec<String>,
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

/// The four columns Graph needs. Everything else is carried through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    IdentityAccountId,
    AccountId,
    Action,
    Provider,
}

impl Field {
    pub(crate) const ALL: [Field; 4] = [
        Field::IdentityAccountId,
        Field::AccountId,
        Field::Action,
        Field::Provider,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::IdentityAccountId => "identityAccountId",
            Field::AccountId => "accountId",
            Field::Action => "action",
            Field::Provider => "identityProvider",
        }
    }

    /// Matches a header ignoring case, spaces, `_` and `-`, with the aliases SPEC section 3 lists.
    pub(crate) fn from_header(header: &str) -> Option<Field> {
        match fold_name(header.trim()).as_str() {
            "identityaccountid" | "identityaccountsid" => Some(Field::IdentityAccountId),
            "accountid" => Some(Field::AccountId),
            "action" => Some(Field::Action),
            "identityprovider" | "provider" => Some(Field::Provider),
            _ => None,
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
        let buffered = BufReader::with_capacity(64 * 1024, reader);
        let inner = match format {
            InputFormat::Csv => Inner::Csv(csv::CsvRows::new(buffered, file, options)?),
            InputFormat::Jsonl => Inner::Jsonl(jsonl::JsonlRows::new(buffered, file, options)),
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
    pub fn next_row(&mut self) -> Option<Result<Result<Job, RowError>, InputError>> {
        match &mut self.inner {
            Inner::Csv(rows) => rows.next_row(),
            Inner::Jsonl(rows) => rows.next_row(),
        }
    }
}

impl Iterator for RowReader {
    type Item = Result<Result<Job, RowError>, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row()
    }
}

/// A row's four values as found, before normalisation. `None` means the column or key is absent.
pub(crate) struct RawRow<'a> {
    pub(crate) line: u64,
    pub(crate) values: [Option<&'a str>; 4],
}

/// Turns raw cells into a [`Job`], collecting every problem with the row.
pub(crate) fn build_job(
    raw: RawRow<'_>,
    carry: Vec<String>,
    options: &InputOptions,
) -> Result<Job, RowError> {
    let mut reasons: Vec<String> = Vec::new();
    let identity_account_id = required(&raw, Field::IdentityAccountId, &mut reasons);
    let account_id = required(&raw, Field::AccountId, &mut reasons);
    let action = match (raw.values[Field::Action as usize], options.default_action) {
        (None, Some(default)) => Some(default),
        _ => required(&raw, Field::Action, &mut reasons).and_then(|text| {
            let parsed = Action::parse(&text);
            if parsed.is_none() {
                reasons.push(format!(
                    "unknown action {text:?}: expected one of {}",
                    Action::ALL.map(Action::as_str).join(", ")
                ));
            }
            parsed
        }),
    };
    let provider = match (
        raw.values[Field::Provider as usize],
        options.default_provider,
    ) {
        (None, Some(default)) => Some(default),
        _ => required(&raw, Field::Provider, &mut reasons).and_then(|text| {
            let parsed = Provider::parse(&text);
            if parsed.is_none() {
                reasons.push(format!(
                    "unknown identity provider {text:?}: expected one of {}",
                    Provider::ALL.map(Provider::as_str).join(", ")
                ));
            }
            parsed
        }),
    };
    if let Some(id) = &identity_account_id
        && let Err(reason) = check_path_id(id)
    {
        reasons.push(reason);
    }
    if let Some(id) = &account_id
        && let Some(c) = id.chars().find(|c| c.is_control())
    {
        reasons.push(format!(
            "\"accountId\" holds a control character (U+{:04X})",
            u32::from(c)
        ));
    }
    match (identity_account_id, account_id, action, provider) {
        (Some(identity_account_id), Some(account_id), Some(action), Some(provider))
            if reasons.is_empty() =>
        {
            Ok(Job {
                row: raw.line,
                identity_account_id,
                account_id,
                action,
                provider,
                carry,
                earlier_attempts: 0,
            })
        }
        _ => Err(RowError {
            line: raw.line,
            reason: reasons.join("; "),
        }),
    }
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

/// Names the missing columns that no `--action`/`--provider` default covers.
pub(crate) fn missing_columns(found: &[bool; 4], options: &InputOptions) -> Vec<String> {
    Field::ALL
        .into_iter()
        .filter(|field| !found[*field as usize])
        .filter(|field| match field {
            Field::Action => options.default_action.is_none(),
            Field::Provider => options.default_provider.is_none(),
            _ => true,
        })
        .map(|field| match field {
            Field::Action => "missing column \"action\": add it, or give --action".to_owned(),
            Field::Provider => {
                "missing column \"identityProvider\": add it, or give --provider".to_owned()
            }
            other => format!("missing column \"{}\"", other.name()),
        })
        .collect()
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

    fn raw(values: [Option<&str>; 4]) -> RawRow<'_> {
        RawRow { line: 7, values }
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
        assert_eq!(Field::from_header("upn"), None);
        assert_eq!(Field::from_header("account"), None);
    }

    #[test]
    fn values_are_trimmed_and_names_normalised() {
        let job = build_job(
            raw([
                Some(" id-1 "),
                Some("\tS-1-5 "),
                Some("Force Password Reset"),
                Some("AD"),
            ]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap();
        assert_eq!(job.identity_account_id, "id-1");
        assert_eq!(job.account_id, "S-1-5");
        assert_eq!(job.action, Action::ForcePasswordReset);
        assert_eq!(job.provider, Provider::ActiveDirectory);
        assert_eq!(job.row, 7);
    }

    #[test]
    fn defaults_fill_absent_columns_but_not_empty_cells() {
        let options = InputOptions {
            default_action: Some(Action::Disable),
            default_provider: Some(Provider::Okta),
            ..InputOptions::default()
        };
        let job = build_job(raw([Some("i"), Some("a"), None, None]), vec![], &options).unwrap();
        assert_eq!(
            (job.action, job.provider),
            (Action::Disable, Provider::Okta)
        );
        let err = build_job(
            raw([Some("i"), Some("a"), Some(" "), None]),
            vec![],
            &options,
        )
        .unwrap_err();
        assert_eq!(err.reason, "empty \"action\"");
    }

    #[test]
    fn every_problem_in_a_row_is_reported() {
        let err = build_job(
            raw([Some("a/b"), Some(""), Some("delete"), Some("google")]),
            vec![],
            &InputOptions::default(),
        )
        .unwrap_err();
        assert!(err.reason.contains("empty \"accountId\""), "{}", err.reason);
        assert!(
            err.reason.contains("unknown action \"delete\""),
            "{}",
            err.reason
        );
        assert!(
            err.reason.contains("unknown identity provider \"google\""),
            "{}",
            err.reason
        );
        assert!(err.reason.contains("holds '/'"), "{}", err.reason);
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
