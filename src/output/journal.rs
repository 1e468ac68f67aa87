//! The results file: one record per input row, written by a single task as rows finish and
//! flushed as it goes, so a killed run leaves a valid file. JSONL by default, CSV by extension.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::ser::{SerializeMap, Serializer};

use tokio::sync::mpsc;

use super::summary::Tally;
use crate::input::Job;

/// What became of a row (SPEC section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Succeeded,
    Failed,
    Skipped,
    NotAttempted,
}

impl RowStatus {
    pub const ALL: [RowStatus; 4] = [
        RowStatus::Succeeded,
        RowStatus::Failed,
        RowStatus::Skipped,
        RowStatus::NotAttempted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Succeeded => "succeeded",
            RowStatus::Failed => "failed",
            RowStatus::Skipped => "skipped",
            RowStatus::NotAttempted => "not_attempted",
        }
    }
}

/// One row's outcome: the job and what happened to it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: Job,
    pub status: RowStatus,
    pub correlation_id: Option<String>,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

impl Outcome {
    /// A row that was never sent, with the reason.
    pub fn unsent(job: Job, status: RowStatus, reason: impl Into<String>) -> Outcome {
        Outcome {
            job,
            status,
            correlation_id: None,
            http_status: None,
            attempts: 0,
            error_code: None,
            error_message: Some(reason.into()),
            request_id: None,
            client_request_id: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// The fixed fields, in the order SPEC section 5 gives; carried columns follow.
pub const FIELDS: [&str; 15] = [
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
];

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

/// Writes records to the results file.
pub struct Journal {
    path: PathBuf,
    format: ResultsFormat,
    out: BufWriter<File>,
    /// Names of the carried columns, renamed where they clash with a fixed field.
    carry_names: Vec<String>,
    line: String,
}

impl Journal {
    /// Creates (or truncates) the results file and, for CSV, writes the header.
    pub fn create(path: &Path, carry_columns: &[String]) -> io::Result<Journal> {
        let file = File::create(path)?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            format: ResultsFormat::from_path(path),
            out: BufWriter::with_capacity(64 * 1024, file),
            carry_names: carry_names(carry_columns),
            line: String::with_capacity(512),
        };
        if journal.format == ResultsFormat::Csv {
            let header: Vec<String> = FIELDS
                .iter()
                .map(|field| (*field).to_owned())
                .chain(journal.carry_names.iter().cloned())
                .collect();
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            journal.write_csv_row(&header)?;
            journal.out.flush()?;
        }
        Ok(journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (buffered; call [`Journal::flush`] to push it to the file).
    pub fn append(&mut self, outcome: &Outcome) -> io::Result<()> {
        match self.format {
            ResultsFormat::Jsonl => {
                self.line.clear();
                let record = JsonRecord {
                    outcome,
                    carry_names: &self.carry_names,
                };
                // Writing JSON into a String cannot fail for these types.
                let text = serde_json::to_string(&record).map_err(io::Error::other)?;
                self.out.write_all(text.as_bytes())?;
                self.out.write_all(b"\n")
            }
            ResultsFormat::Csv => {
                let cells = csv_cells(outcome);
                let cells: Vec<&str> = cells
                    .iter()
                    .map(String::as_str)
                    .chain(outcome.job.carry.iter().map(String::as_str))
                    .collect();
                self.write_csv_row(&cells)
            }
        }
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_csv_row(&mut self, cells: &[&str]) -> io::Result<()> {
        self.line.clear();
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                self.line.push(',');
            }
            push_csv_cell(&mut self.line, cell);
        }
        self.line.push_str("\r\n");
        self.out.write_all(self.line.as_bytes())
    }
}

/// The writer loop, on its own thread: append every outcome as it arrives and flush whenever the
/// queue runs dry, so each record reaches the file promptly without a write per record under load.
pub fn write_outcomes(
    mut journal: Journal,
    mut outcomes: mpsc::Receiver<Outcome>,
) -> io::Result<Tally> {
    let mut tally = Tally::default();
    while let Some(outcome) = outcomes.blocking_recv() {
        journal.append(&outcome)?;
        tally.push(&outcome);
        while let Ok(outcome) = outcomes.try_recv() {
            journal.append(&outcome)?;
            tally.push(&outcome);
        }
        journal.flush()?;
    }
    journal.flush()?;
    Ok(tally)
}

/// Carried column names, with a clash against a fixed field renamed `input.<name>`.
fn carry_names(columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .map(|name| {
            if FIELDS.contains(&name.as_str()) {
                format!("input.{name}")
            } else {
                name.clone()
            }
        })
        .collect()
}

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

struct JsonRecord<'a> {
    outcome: &'a Outcome,
    carry_names: &'a [String],
}

impl serde::Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let o = self.outcome;
        let mut map = serializer.serialize_map(Some(FIELDS.len() + self.carry_names.len()))?;
        map.serialize_entry("correlationId", &o.correlation_id)?;
        map.serialize_entry("row", &o.job.row)?;
        map.serialize_entry("identityAccountId", &o.job.identity_account_id)?;
        map.serialize_entry("accountId", &o.job.account_id)?;
        map.serialize_entry("action", o.job.action.as_str())?;
        map.serialize_entry("identityProvider", o.job.provider.as_str())?;
        map.serialize_entry("status", o.status.as_str())?;
        map.serialize_entry("httpStatus", &o.http_status)?;
        map.serialize_entry("attempts", &o.attempts)?;
        map.serialize_entry("errorCode", &o.error_code)?;
        map.serialize_entry("errorMessage", &o.error_message)?;
        map.serialize_entry("requestId", &o.request_id)?;
        map.serialize_entry("clientRequestId", &o.client_request_id)?;
        map.serialize_entry("startedAt", &o.started_at.map(rfc3339))?;
        map.serialize_entry("finishedAt", &o.finished_at.map(rfc3339))?;
        for (name, value) in self.carry_names.iter().zip(&o.job.carry) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

fn csv_cells(o: &Outcome) -> [String; 15] {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    [
        text(&o.correlation_id),
        o.job.row.to_string(),
        o.job.identity_account_id.clone(),
        o.job.account_id.clone(),
        o.job.action.as_str().to_owned(),
        o.job.provider.as_str().to_owned(),
        o.status.as_str().to_owned(),
        o.http_status.map(|s| s.to_string()).unwrap_or_default(),
        o.attempts.to_string(),
        text(&o.error_code),
        text(&o.error_message),
        text(&o.request_id),
        text(&o.client_request_id),
        o.started_at.map(rfc3339).unwrap_or_default(),
        o.finished_at.map(rfc3339).unwrap_or_default(),
    ]
}

/// Appends one CSV cell: quoted when it holds a delimiter, quote or line break, and prefixed with
/// `'` when a spreadsheet would read it as a formula (`=`, `+`, `-`, `@`, tab, CR: OWASP's
/// CSV-injection guidance). Identity fields and notes are attacker-influenced.
fn push_csv_cell(line: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let needs_quotes = formula || cell.contains([',', '"', '\n', '\r']);
    if needs_quotes {
        line.push('"');
    }
    if formula {
        line.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    if needs_quotes {
        line.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> String {
        let mut line = String::new();
        push_csv_cell(&mut line, text);
        line
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_neutralised() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-2"), "\"'-2\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx"), "\"'\tx\"");
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("S-1-5-21"), "S-1-5-21", "a dash inside is harmless");
    }

    #[test]
    fn clashing_carry_columns_are_renamed() {
        assert_eq!(
            carry_names(&["status".into(), "upn".into()]),
            vec!["input.status".to_owned(), "upn".to_owned()]
        );
    }
}
