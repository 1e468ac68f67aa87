//! The results record (SPEC section 5): the one serde type the journal writes ([`Record`]), the
//! one reader of a results file, JSONL or CSV ([`RecordReader`]), and the one rule for which of
//! a row's records counts ([`Counting`]). `--resume`, `report`, the undo file and `confirm` all
//! read through them, so they agree by construction on what a file says.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::graph::model::{Action, Provider};
use crate::input::plan::{AccountKey, RowKey};
use crate::input::{IdentityColumn, Job};
use crate::outcome::{Effect, Outcome, RowStatus};
use crate::sanitize::{quote_formula, unquote_formula};

/// The fixed fields, in the order SPEC section 5 gives (and [`Record`] serializes them);
/// carried columns follow.
pub const FIELDS: [&str; 18] = [
    "correlationId",
    "row",
    "identityAccountId",
    "accountId",
    "action",
    "identityProvider",
    "status",
    "httpStatus",
    "attempts",
    "errorCode",
    "errorMessage",
    "requestId",
    "clientRequestId",
    "startedAt",
    "finishedAt",
    "resolvedBy",
    "effect",
    "confirmedAt",
];

/// The fields every results file holds: those after them came later (`resolvedBy` with the
/// lookup, `effect` and `confirmedAt` with SPEC section 10), and older files lack them.
pub const REQUIRED_FIELDS: usize = 15;

/// The results file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFormat {
    Jsonl,
    Csv,
}

impl ResultsFormat {
    pub fn from_path(path: &Path) -> ResultsFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => ResultsFormat::Csv,
            _ => ResultsFormat::Jsonl,
        }
    }
}

/// Formats CSV lines with the csv crate (quoting, CRLF). A cell that a spreadsheet would run as a
/// formula (it starts with `=`, `+`, `-`, `@`, tab or CR: OWASP's CSV-injection guidance) gets a
/// `'` first, since identity fields and notes are attacker-influenced; the csv crate only quotes.
/// The tool's CSV input reader takes the `'` off again ([`unquote_formula`]), so a file it wrote
/// runs as it is (issue 16).
pub(crate) fn csv_line<'c>(cells: impl Iterator<Item = &'c str>) -> io::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .buffer_capacity(512)
        .from_writer(Vec::with_capacity(512));
    for cell in cells {
        writer.write_field(quote_formula(cell).as_ref())?;
    }
    writer.write_record(None::<&[u8]>)?;
    writer.into_inner().map_err(|e| e.into_error())
}

/// Carried column names as the results write them: a name that clashes with a fixed field, or
/// with an earlier column, is renamed `input.<name>` (then `input.<name>.2`, ...), so that no
/// JSON record holds a key twice (issue 10).
pub(crate) fn carry_names(columns: &[String]) -> Vec<String> {
    carry_names_besides(columns, &FIELDS)
}

/// [`carry_names`] beside other fixed columns than the results' (`resolve`'s output).
pub(crate) fn carry_names_besides(columns: &[String], fixed: &[&str]) -> Vec<String> {
    let mut taken: std::collections::HashSet<String> =
        fixed.iter().map(|field| (*field).to_owned()).collect();
    columns
        .iter()
        .map(|name| {
            let mut candidate = if taken.contains(name) {
                format!("input.{name}")
            } else {
                name.clone()
            };
            let mut n = 2;
            while taken.contains(&candidate) {
                candidate = format!("input.{name}.{n}");
                n += 1;
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

/// Times as the results write them: RFC 3339 in UTC, with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// One row's record, as the results file holds it: the fields of [`FIELDS`] in that order, then
/// the carried columns by the names the results give them. Reading is lenient where older files
/// differ (fields written later may be absent; in CSV every cell is text and an empty cell is
/// no value), and strict where a value could mislead: a status, action or effect that is none of
/// SPEC's spellings makes the line no record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default, deserialize_with = "cell::optional")]
    pub correlation_id: Option<String>,
    #[serde(deserialize_with = "cell::number")]
    pub row: u64,
    #[serde(default)]
    pub identity_account_id: String,
    #[serde(default)]
    pub account_id: String,
    pub action: Action,
    /// Empty for a row the lookup refused before its provider was known.
    #[serde(default, deserialize_with = "cell::optional")]
    pub identity_provider: Option<Provider>,
    pub status: RowStatus,
    #[serde(default, deserialize_with = "cell::optional_number")]
    pub http_status: Option<u16>,
    #[serde(default, deserialize_with = "cell::number")]
    pub attempts: u32,
    #[serde(default, deserialize_with = "cell::optional")]
    pub error_code: Option<String>,
    #[serde(default, deserialize_with = "cell::optional")]
    pub error_message: Option<String>,
    #[serde(default, deserialize_with = "cell::optional")]
    pub request_id: Option<String>,
    #[serde(default, deserialize_with = "cell::optional")]
    pub client_request_id: Option<String>,
    #[serde(default, with = "cell::time")]
    pub started_at: Option<SystemTime>,
    #[serde(default, with = "cell::time")]
    pub finished_at: Option<SystemTime>,
    #[serde(default, deserialize_with = "cell::optional")]
    pub resolved_by: Option<IdentityColumn>,
    #[serde(default, deserialize_with = "cell::optional")]
    pub effect: Option<Effect>,
    #[serde(default, with = "cell::time")]
    pub confirmed_at: Option<SystemTime>,
    /// The input's own columns, in the input's order.
    #[serde(flatten)]
    pub carried: IndexMap<String, String>,
}

impl Record {
    /// The record of `outcome`, its carried cells named `carry_names` (the journal's names).
    pub fn of(outcome: &Outcome, carry_names: &[String]) -> Record {
        let job = &outcome.job;
        Record {
            correlation_id: outcome.correlation_id.clone(),
            row: job.row,
            identity_account_id: job.identity_account_id.clone(),
            account_id: job.account_id.clone(),
            action: job.action,
            identity_provider: job.provider,
            status: outcome.status,
            http_status: outcome.http_status,
            attempts: outcome.attempts,
            error_code: outcome.error_code.clone(),
            error_message: outcome.error_message.clone(),
            request_id: outcome.request_id.clone(),
            client_request_id: outcome.client_request_id.clone(),
            started_at: outcome.started_at,
            finished_at: outcome.finished_at,
            resolved_by: job.resolved_by,
            effect: outcome.effect,
            confirmed_at: outcome.confirmed_at,
            carried: carry_names.iter().cloned().zip(job.carry.clone()).collect(),
        }
    }

    /// The record's row again, as `template` (this run's line, action and carried columns) with
    /// the record's ids, the column a lookup found them by, and what became of it. The error
    /// fields are left empty: only a succeeded record is carried over.
    pub fn into_outcome(self, template: Job) -> Outcome {
        let job = Job {
            identity_account_id: self.identity_account_id,
            account_id: self.account_id,
            provider: self.identity_provider,
            resolved_by: self.resolved_by,
            ..template
        };
        Outcome {
            correlation_id: self.correlation_id,
            http_status: self.http_status,
            attempts: self.attempts,
            error_code: None,
            error_message: None,
            request_id: self.request_id,
            client_request_id: self.client_request_id,
            started_at: self.started_at,
            finished_at: self.finished_at,
            effect: self.effect,
            confirmed_at: self.confirmed_at,
            status: self.status,
            job,
        }
    }

    /// The key duplicates and `--resume` match on.
    pub fn key(&self) -> RowKey {
        RowKey::new(
            AccountKey::new(&self.identity_account_id, &self.account_id),
            self.action,
            self.identity_provider,
        )
    }

    /// The record's cells as CSV text, in column order (the fixed fields, then the carried ones):
    /// no value is an empty cell.
    pub fn csv_cells(&self) -> io::Result<Vec<String>> {
        let serde_json::Value::Object(map) =
            serde_json::to_value(self).map_err(io::Error::other)?
        else {
            return Err(io::Error::other("a record is a JSON object"));
        };
        Ok(map
            .into_iter()
            .map(|(_, value)| match value {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            })
            .collect())
    }
}

/// How a record's values are read from either format: JSON gives numbers and `null`, CSV gives
/// text only, with an empty cell for no value.
mod cell {
    use std::fmt;
    use std::marker::PhantomData;
    use std::str::FromStr;
    use std::time::SystemTime;

    use serde::de::value::StrDeserializer;
    use serde::de::{self, Deserialize, Deserializer, Visitor};
    use serde::{Serialize, Serializer};

    /// A value named by text (a string, an enum spelled as SPEC spells it), or none: JSON `null`,
    /// an absent field or an empty cell.
    pub(super) fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        struct Text<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Text<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text or null")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
                if text.is_empty() {
                    return Ok(None);
                }
                T::deserialize(StrDeserializer::<E>::new(text)).map(Some)
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Option<T>, D::Error> {
                inner.deserialize_any(self)
            }
        }
        deserializer.deserialize_any(Text(PhantomData))
    }

    /// A number, written as one (JSON) or as its digits (CSV).
    pub(super) fn number<'de, D: Deserializer<'de>, T: TryFrom<u64> + FromStr>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        optional_number(deserializer)?.ok_or_else(|| de::Error::custom("a number is missing"))
    }

    /// A number or none.
    pub(super) fn optional_number<'de, D: Deserializer<'de>, T: TryFrom<u64> + FromStr>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        struct Number<T>(PhantomData<T>);
        impl<'de, T: TryFrom<u64> + FromStr> Visitor<'de> for Number<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or null")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<T>, E> {
                T::try_from(n)
                    .map(Some)
                    .map_err(|_| E::custom(format!("{n} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<T>, E> {
                let n = u64::try_from(n).map_err(|_| E::custom(format!("{n} is negative")))?;
                self.visit_u64(n)
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
                if text.is_empty() {
                    return Ok(None);
                }
                text.parse()
                    .map(Some)
                    .map_err(|_| E::custom(format!("{text:?} is not a whole number")))
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Option<T>, D::Error> {
                inner.deserialize_any(self)
            }
        }
        deserializer.deserialize_any(Number(PhantomData))
    }

    /// Times as RFC 3339 in UTC with milliseconds, or none.
    pub(super) mod time {
        use super::*;

        /// RFC 3339 as the results write it, read back through [`FromStr`].
        struct Rfc3339(SystemTime);

        impl FromStr for Rfc3339 {
            type Err = humantime::TimestampError;
            fn from_str(text: &str) -> Result<Rfc3339, Self::Err> {
                humantime::parse_rfc3339(text).map(Rfc3339)
            }
        }

        impl<'de> Deserialize<'de> for Rfc3339 {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rfc3339, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse()
                    .map_err(|_| de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
            }
        }

        pub(crate) fn serialize<S: Serializer>(
            time: &Option<SystemTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            time.map(super::super::rfc3339).serialize(serializer)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Ok(super::optional::<D, Rfc3339>(deserializer)?.map(|time| time.0))
        }
    }
}

/// Why a results file cannot be read at all (a line that is no record is the caller's to judge:
/// [`Line::record`]).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the results file {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "{path}:{line}: not a results record ({reason}); is this a graph-remediate results file? Move it away or choose another with -o"
    )]
    NotARecord {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// One record of the file, where it lies, and what it says (or why it says nothing).
#[derive(Debug)]
pub struct Line {
    /// The line it starts on, from 1 (a CSV record may span several).
    pub number: u64,
    /// The byte offset where it starts: [`RecordReader::record_at`] reads it again.
    pub offset: u64,
    pub record: Result<Record, String>,
}

/// Reads a results file record by record, in file order. A last line that the writer never
/// finished (no line end: `kill -9` mid-write) is not a record: reading stops before it and
/// [`RecordReader::torn`] says so. Any other line that is no record (a CSV line short of the
/// header's fields, a status none of SPEC's) is handed on as such, for the caller to judge. Blank lines are
/// skipped. CSV cells have the formula quote the journal added taken off
/// ([`unquote_formula`]).
pub struct RecordReader {
    path: PathBuf,
    source: Source,
    torn: bool,
    /// The byte length up to the end of the last complete record read.
    complete_len: u64,
}

enum Source {
    Jsonl {
        input: BufReader<File>,
        line: Vec<u8>,
        offset: u64,
        number: u64,
    },
    Csv {
        reader: csv::Reader<File>,
        headers: csv::StringRecord,
        record: csv::StringRecord,
        file_len: u64,
        ends_with_newline: bool,
    },
}

impl RecordReader {
    /// Opens the results at `path`; a CSV file's header must hold the results fields.
    pub fn open(path: &Path) -> Result<RecordReader, ReadError> {
        let io_error = |cause| ReadError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(io_error)?;
        let (source, complete_len) = match ResultsFormat::from_path(path) {
            ResultsFormat::Jsonl => (
                Source::Jsonl {
                    input: BufReader::with_capacity(64 * 1024, file),
                    line: Vec::new(),
                    offset: 0,
                    number: 0,
                },
                0,
            ),
            ResultsFormat::Csv => {
                let file_len = file.metadata().map_err(io_error)?.len();
                let ends_with_newline = last_byte(path, file_len).map_err(io_error)? == Some(b'\n');
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
                let not_results = |reason: String| ReadError::NotARecord {
                    path: path.to_path_buf(),
                    line: 1,
                    reason,
                };
                let headers = reader
                    .headers()
                    .map_err(|e| not_results(csv_reason(&e)))?
                    .clone();
                if FIELDS[..REQUIRED_FIELDS]
                    .iter()
                    .any(|field| !headers.iter().any(|h| h == *field))
                {
                    return Err(not_results(
                        "the header lacks the results fields".to_owned(),
                    ));
                }
                let complete_len = reader.position().byte();
                (
                    Source::Csv {
                        reader,
                        headers,
                        record: csv::StringRecord::new(),
                        file_len,
                        ends_with_newline,
                    },
                    complete_len,
                )
            }
        };
        Ok(RecordReader {
            path: path.to_path_buf(),
            source,
            torn: false,
            complete_len,
        })
    }

    /// The next record, `None` at the end (or before a torn last line).
    pub fn next_line(&mut self) -> Result<Option<Line>, ReadError> {
        let io_error = |cause| ReadError::Io {
            path: self.path.clone(),
            cause,
        };
        match &mut self.source {
            Source::Jsonl {
                input,
                line,
                offset,
                number,
            } => loop {
                line.clear();
                let read = input.read_until(b'\n', line).map_err(io_error)?;
                if read == 0 {
                    return Ok(None);
                }
                *number += 1;
                let start = *offset;
                if !line.ends_with(b"\n") {
                    self.torn = true;
                    return Ok(None);
                }
                *offset += read as u64;
                self.complete_len = *offset;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let record = serde_json::from_slice::<Record>(line).map_err(|e| {
                    if e.is_syntax() || e.is_eof() {
                        format!("not JSON: {e}")
                    } else {
                        e.to_string()
                    }
                });
                return Ok(Some(Line {
                    number: *number,
                    offset: start,
                    record,
                }));
            },
            Source::Csv {
                reader,
                headers,
                record,
                file_len,
                ends_with_newline,
            } => {
                let start = reader.position().clone();
                match reader.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {}
                    Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => {
                        return Err(io_error(error.into()));
                    }
                    Err(error) => {
                        let number = error.position().map_or(start.line(), csv::Position::line);
                        self.complete_len = reader.position().byte();
                        return Ok(Some(Line {
                            number,
                            offset: start.byte(),
                            record: Err(csv_reason(&error)),
                        }));
                    }
                }
                let end = reader.position().byte();
                if end >= *file_len && !*ends_with_newline {
                    self.torn = true;
                    return Ok(None);
                }
                // After a CR the csv reader stops short of the LF: the last line's ends there.
                self.complete_len = if end + 1 == *file_len && *ends_with_newline {
                    *file_len
                } else {
                    end
                };
                let number = record.position().map_or(start.line(), csv::Position::line);
                let parsed = if record.len() != headers.len() {
                    Err(format!(
                        "{} fields where the header has {}",
                        record.len(),
                        headers.len()
                    ))
                } else {
                    csv_record(headers, record)
                };
                Ok(Some(Line {
                    number,
                    offset: start.byte(),
                    record: parsed,
                }))
            }
        }
    }

    /// The next record and its offset, where a line that is no record stops the read, naming
    /// it (`--resume` and `confirm`: nothing is decided on a file half understood).
    pub fn next_record(&mut self) -> Result<Option<(u64, Record)>, ReadError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        match line.record {
            Ok(record) => Ok(Some((line.offset, record))),
            Err(reason) => Err(ReadError::NotARecord {
                path: self.path.clone(),
                line: line.number,
                reason,
            }),
        }
    }

    /// Whether the file ended in a record cut short (now or when it was read to its end).
    pub fn torn(&self) -> bool {
        self.torn
    }

    /// The byte length up to the end of the last complete record read.
    pub fn complete_len(&self) -> u64 {
        self.complete_len
    }

    /// Reads the record at `offset` (from a [`Line`] of an earlier read of the same file).
    pub fn record_at(path: &Path, offset: u64) -> Result<Record, ReadError> {
        use std::io::{Seek, SeekFrom};
        let mut reader = RecordReader::open(path)?;
        let at = |cause| ReadError::Io {
            path: path.to_path_buf(),
            cause,
        };
        match &mut reader.source {
            Source::Jsonl {
                input, offset: o, ..
            } => {
                input.seek(SeekFrom::Start(offset)).map_err(at)?;
                *o = offset;
            }
            Source::Csv { reader, .. } => {
                let mut position = csv::Position::new();
                position.set_byte(offset);
                reader.seek(position).map_err(|e| at(e.into()))?;
            }
        }
        let not_a_record = |reason: String| ReadError::NotARecord {
            path: path.to_path_buf(),
            line: 0,
            reason,
        };
        match reader.next_line()? {
            Some(line) => line.record.map_err(not_a_record),
            None => Err(not_a_record(format!("no record at byte {offset}"))),
        }
    }
}

/// A CSV record as a [`Record`]: every cell is text, the formula quote taken off.
fn csv_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Record, String> {
    let cells = headers.iter().zip(record.iter().map(unquote_formula));
    let deserializer = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(cells);
    Record::deserialize(deserializer).map_err(|e| e.to_string())
}

/// Why a CSV line is not a record, without the position (the callers name the line).
fn csv_reason(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_owned(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header has {expected_len}"),
        _ => error.to_string(),
    }
}

fn last_byte(path: &Path, len: u64) -> io::Result<Option<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if len == 0 {
        return Ok(None);
    }
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(Some(last[0]))
}

/// A row as the results name it: its input line, and its key (ids, action, provider). The line
/// alone would not do: after `--resume` with an input that changed, line N may be another row,
/// and one row's records must never speak for another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowName {
    pub line: u64,
    pub key: RowKey,
}

impl RowName {
    pub fn of(record: &Record) -> RowName {
        RowName {
            line: record.row,
            key: record.key(),
        }
    }
}

/// Which record of a row counts, the one rule every reader uses: of a row's records
/// ([`RowName`]) in file order, the last counts, except that a `succeeded` record gives way only
/// to a later `succeeded` one. An accepted action stays accepted: a resumed run records such a
/// row again as `succeeded` (carried over), so a later record saying anything else sent nothing
/// and cannot take the action back (a repeat lookup refusing an account that is now disabled).
/// Each row keeps its place of first appearance.
pub struct Counting<T> {
    rows: IndexMap<RowName, (RowStatus, T)>,
    not_counted: u64,
}

impl<T> Default for Counting<T> {
    fn default() -> Counting<T> {
        Counting {
            rows: IndexMap::new(),
            not_counted: 0,
        }
    }
}

impl<T> Counting<T> {
    /// Offers `record` (with what the caller keeps of it, made only when it counts); returns
    /// whether it counts now.
    pub fn offer(&mut self, record: &Record, keep: impl FnOnce(&Record) -> T) -> bool {
        use indexmap::map::Entry;
        match self.rows.entry(RowName::of(record)) {
            Entry::Vacant(entry) => {
                entry.insert((record.status, keep(record)));
                true
            }
            Entry::Occupied(mut entry) => {
                self.not_counted += 1;
                let (status, _) = entry.get();
                if *status == RowStatus::Succeeded && record.status != RowStatus::Succeeded {
                    return false;
                }
                entry.insert((record.status, keep(record)));
                true
            }
        }
    }

    /// Records that do not count: a later one replaced them, or they came after a success.
    pub fn not_counted(&self) -> u64 {
        self.not_counted
    }

    /// The counting record of every row, in order of first appearance.
    pub fn into_counted(self) -> impl Iterator<Item = (RowName, RowStatus, T)> {
        self.rows
            .into_iter()
            .map(|(name, (status, kept))| (name, status, kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(row: u64, status: RowStatus) -> Outcome {
        let job = Job {
            row,
            identity_account_id: format!("ia-{row}"),
            account_id: format!("acc-{row}"),
            action: Action::Disable,
            provider: Some(Provider::Okta),
            carry: vec!["=1+1".to_owned(), "T-1".to_owned()],
            resolved_by: Some(IdentityColumn::Upn),
            earlier_attempts: 0,
        };
        let mut outcome = Outcome::unsent(job, status, "why");
        outcome.started_at = Some(SystemTime::UNIX_EPOCH);
        outcome.effect = Some(Effect::NotConfirmed);
        outcome
    }

    #[test]
    fn a_record_serializes_its_fields_in_spec_order_then_the_carried_columns() {
        let names = ["note".to_owned(), "ticket".to_owned()];
        let record = Record::of(&outcome(2, RowStatus::NotAttempted), &names);
        let value = serde_json::to_value(&record).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let expected: Vec<&str> = FIELDS.iter().copied().chain(["note", "ticket"]).collect();
        assert_eq!(keys, expected);
        assert_eq!(value["status"], "not_attempted");
        assert_eq!(value["effect"], "notConfirmed");
        assert_eq!(value["startedAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["httpStatus"], serde_json::Value::Null);
        let back: Record = serde_json::from_value(value).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_csv_record_reads_back_as_the_json_one() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["note".to_owned(), "ticket".to_owned()];
        let mut written = Record::of(&outcome(3, RowStatus::Succeeded), &names);
        written.http_status = Some(200);
        written.attempts = 2;
        let path = dir.path().join("r.csv");
        let header = FIELDS.iter().copied().chain(["note", "ticket"]);
        let mut bytes = csv_line(header).unwrap();
        let cells = written.csv_cells().unwrap();
        bytes.extend(csv_line(cells.iter().map(String::as_str)).unwrap());
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = RecordReader::open(&path).unwrap();
        let line = reader.next_line().unwrap().unwrap();
        assert_eq!(
            line.record.unwrap(),
            written,
            "the formula quote is taken off"
        );
        assert!(reader.next_line().unwrap().is_none());
        assert!(!reader.torn());
        assert_eq!(reader.complete_len(), bytes.len() as u64);
    }

    #[test]
    fn an_unknown_status_is_no_record_and_a_torn_last_line_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let good = serde_json::to_string(&Record::of(&outcome(2, RowStatus::Failed), &[])).unwrap();
        std::fs::write(
            &path,
            format!("{good}\n\n{}\n{good}", good.replace("failed", "fine")),
        )
        .unwrap();
        let mut reader = RecordReader::open(&path).unwrap();
        assert!(reader.next_line().unwrap().unwrap().record.is_ok());
        let bad = reader.next_line().unwrap().unwrap();
        assert_eq!(bad.number, 3, "the blank line is skipped but counted");
        assert!(bad.record.unwrap_err().contains("unknown variant `fine`"));
        assert!(reader.next_line().unwrap().is_none());
        assert!(reader.torn(), "a complete JSON object without its line end");
        assert_eq!(reader.complete_len(), (good.len() * 2 + 1) as u64);
    }

    #[test]
    fn the_last_record_of_a_row_counts_but_never_takes_back_a_success() {
        let names: [String; 0] = [];
        let record = |row, status| Record::of(&outcome(row, status), &names);
        let mut counting = Counting::default();
        assert!(counting.offer(&record(2, RowStatus::Failed), |r| r.status));
        assert!(counting.offer(&record(3, RowStatus::Succeeded), |r| r.status));
        assert!(counting.offer(&record(2, RowStatus::Succeeded), |r| r.status));
        assert!(!counting.offer(&record(2, RowStatus::Failed), |r| r.status));
        assert!(counting.offer(&record(3, RowStatus::Succeeded), |r| r.status));
        // Line 2 with other ids is another row (a resumed run's changed input).
        let mut other = record(2, RowStatus::Skipped);
        other.identity_account_id = "ia-other".to_owned();
        assert!(counting.offer(&other, |r| r.status));
        assert_eq!(counting.not_counted(), 3);
        let counted: Vec<(u64, RowStatus)> = counting
            .into_counted()
            .map(|(name, status, _)| (name.line, status))
            .collect();
        assert_eq!(
            counted,
            [
                (2, RowStatus::Succeeded),
                (3, RowStatus::Succeeded),
                (2, RowStatus::Skipped)
            ]
        );
    }

    fn cell(text: &str) -> String {
        let line = csv_line([text].into_iter()).unwrap();
        String::from_utf8(line)
            .unwrap()
            .trim_end_matches("\r\n")
            .to_owned()
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_neutralised() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("S-1-5-21"), "S-1-5-21", "a dash inside is harmless");
        for text in ["=1", "-id5", "a\"b", "x\r\ny"] {
            assert_eq!(unquote_formula(&read_back(&cell(text))), text, "{text:?}");
        }
    }

    /// The one cell of a CSV line, as a reader sees it.
    fn read_back(line: &str) -> String {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        reader.records().next().unwrap().unwrap()[0].to_owned()
    }

    #[test]
    fn clashing_carry_columns_are_renamed() {
        assert_eq!(
            carry_names(&["status".into(), "upn".into()]),
            vec!["input.status".to_owned(), "upn".to_owned()]
        );
    }

    #[test]
    fn issue_10_no_two_carried_columns_share_a_name() {
        let names = carry_names(&[
            "ticket".into(),
            "ticket".into(),
            "status".into(),
            "input.status".into(),
            "input.ticket".into(),
        ]);
        assert_eq!(
            names,
            vec![
                "ticket",
                "input.ticket",
                "input.status",
                "input.input.status",
                "input.input.ticket"
            ]
        );
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn the_enums_are_written_as_their_spec_spellings() {
        for status in RowStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for effect in [
            Effect::Confirmed,
            Effect::NotConfirmed,
            Effect::NotObservable,
        ] {
            assert_eq!(serde_json::to_value(effect).unwrap(), effect.as_str());
        }
        for column in [
            IdentityColumn::IdentityAccountId,
            IdentityColumn::Sid,
            IdentityColumn::ObjectId,
            IdentityColumn::Upn,
        ] {
            assert_eq!(serde_json::to_value(column).unwrap(), column.as_str());
        }
    }
}
