//! The results file: one record per input row, written by a single task as rows finish and
//! flushed as it goes, so a killed run leaves a valid file. JSONL by default, CSV by extension.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::ser::{SerializeMap, Serializer};

use tokio::sync::mpsc;

use super::progress::RowCounts;
use super::summary::Tally;
use crate::input::Job;
use crate::input::plan::RowKey;

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

/// Where a run's records go in the results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalStart {
    /// A new file (an existing one is replaced).
    New,
    /// Continue an earlier run's file (`--resume`): keep its first `keep` bytes (everything up to
    /// the last complete record, so a torn last line is dropped) and append after them.
    Append { keep: u64 },
}

/// Writes records to the results file.
pub struct Journal {
    path: PathBuf,
    format: ResultsFormat,
    out: BufWriter<File>,
    /// Names of the carried columns, renamed where they clash with a fixed field.
    carry_names: Vec<String>,
    line: String,
    /// Byte offset where this run's records begin (after the CSV header for a new file).
    segment_start: u64,
}

impl Journal {
    /// Opens the results file for this run, readable by the owner only. A new CSV file gets its
    /// header.
    pub fn open(path: &Path, carry_columns: &[String], start: JournalStart) -> io::Result<Journal> {
        let file = match start {
            JournalStart::New => {
                let file = private_options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)?;
                sync_parent_dir(path);
                file
            }
            JournalStart::Append { keep } => {
                let file = private_options().write(true).open(path)?;
                // Drops a torn last record left by a killed run.
                file.set_len(keep)?;
                file
            }
        };
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let segment_start = match start {
            JournalStart::New => 0,
            JournalStart::Append { keep } => out.seek(SeekFrom::Start(keep))?,
        };
        let mut journal = Journal {
            path: path.to_path_buf(),
            format: ResultsFormat::from_path(path),
            out,
            carry_names: carry_names(carry_columns),
            line: String::with_capacity(512),
            segment_start,
        };
        if journal.format == ResultsFormat::Csv && start == JournalStart::New {
            let header = journal.csv_header();
            journal.out.write_all(header.as_bytes())?;
            journal.out.flush()?;
            journal.segment_start = header.len() as u64;
        }
        Ok(journal)
    }

    /// The CSV header line for these carried columns.
    fn csv_header(&mut self) -> String {
        let header: Vec<String> = FIELDS
            .iter()
            .map(|field| (*field).to_owned())
            .chain(self.carry_names.iter().cloned())
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        self.line.clear();
        csv_line(&mut self.line, &header);
        self.line.clone()
    }

    /// Where this run's records begin.
    pub fn segment_start(&self) -> u64 {
        self.segment_start
    }

    /// Pushes buffered records to the file and asks the OS to put them on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// After a resumed run: rewrite the file as exactly this run's records (one per input row),
    /// through a temporary file and a rename, so a crash leaves either the old or the new file.
    pub fn compact(mut self) -> io::Result<()> {
        self.sync()?;
        let header_len = match self.format {
            ResultsFormat::Csv => self.csv_header().len() as u64,
            ResultsFormat::Jsonl => 0,
        };
        if self.segment_start == header_len {
            // A new file already holds only this run's records.
            return Ok(());
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        if self.format == ResultsFormat::Csv {
            let header = self.csv_header();
            temp.write_all(header.as_bytes())?;
        }
        let mut source = File::open(&self.path)?;
        source.seek(SeekFrom::Start(self.segment_start))?;
        io::copy(&mut source, &mut temp)?;
        temp.as_file().sync_all()?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        sync_parent_dir(&self.path);
        Ok(())
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
        csv_line(&mut self.line, cells);
        self.out.write_all(self.line.as_bytes())
    }
}

/// What the writer thread is sent.
pub enum Entry {
    /// A row's final record.
    Outcome(Box<Outcome>),
    /// A row's first request is about to leave: noted in the in-flight log, so that a run killed
    /// before the answer is recorded can tell, on `--resume`, that the row was tried.
    Started {
        key: RowKey,
        client_request_id: String,
    },
    /// Time passes: lets the writer sync a quiet group within [`SYNC_INTERVAL`].
    Tick,
}

/// How long the writer lets records gather between writes.
const GATHER: Duration = Duration::from_millis(1);

/// Sync after this many records...
pub const SYNC_EVERY: u64 = 256;
/// ...or when the oldest unsynced record is this old.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Everything the writer thread writes to.
pub struct Sinks {
    pub journal: Journal,
    pub inflight: Option<InflightLog>,
    pub undo: Option<UndoFile>,
}

/// The writer loop, on its own thread: append every record as it arrives, flush whenever the
/// queue runs dry, and sync in groups (every [`SYNC_EVERY`] records or [`SYNC_INTERVAL`]), so
/// after `kill -9` the file holds every finished row but at most the last group. Returns the sinks
/// for the finishing steps, and the tally. Every finished row is also counted in `counts`, which
/// the progress bar reads while the run goes on.
pub fn write_entries(
    mut sinks: Sinks,
    mut entries: mpsc::Receiver<Entry>,
    counts: &RowCounts,
) -> io::Result<(Sinks, Tally)> {
    let mut tally = Tally::default();
    let mut unsynced: u64 = 0;
    let mut oldest_unsynced: Option<Instant> = None;
    while let Some(entry) = entries.blocking_recv() {
        let mut next = Some(entry);
        while let Some(entry) = next {
            match entry {
                Entry::Outcome(outcome) => {
                    sinks.journal.append(&outcome)?;
                    if let Some(undo) = &mut sinks.undo {
                        undo.append(&outcome)?;
                    }
                    tally.push(&outcome);
                    counts.record(outcome.status);
                    unsynced += 1;
                    oldest_unsynced.get_or_insert_with(Instant::now);
                }
                Entry::Started {
                    key,
                    client_request_id,
                } => {
                    if let Some(inflight) = &mut sinks.inflight {
                        inflight.append(key, &client_request_id)?;
                        oldest_unsynced.get_or_insert_with(Instant::now);
                    }
                }
                Entry::Tick => {}
            }
            next = entries.try_recv().ok();
        }
        sinks.journal.flush()?;
        if let Some(inflight) = &mut sinks.inflight {
            inflight.flush()?;
        }
        let due = oldest_unsynced.is_some_and(|t| t.elapsed() >= SYNC_INTERVAL);
        if unsynced >= SYNC_EVERY || due {
            sinks.sync()?;
            unsynced = 0;
            oldest_unsynced = None;
        }
        // Let a millisecond's records gather before waking again: under load that turns a
        // wake-up and a write per record into one per batch (the profile showed both), and a
        // record reaches the file at most a millisecond later. This is the writer's own thread.
        std::thread::sleep(GATHER);
    }
    sinks.sync()?;
    Ok((sinks, tally))
}

impl Sinks {
    fn sync(&mut self) -> io::Result<()> {
        // The in-flight log first: a record must never be durable while the note that its
        // request left is not.
        if let Some(inflight) = &mut self.inflight {
            inflight.sync()?;
        }
        self.journal.sync()
    }
}

/// `<results>.inflight`: one line per row whose first request left, `ROWKEY CLIENT-REQUEST-ID`.
/// Removed when a run ends in order; read by `--resume` after a crash.
pub struct InflightLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl InflightLog {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".inflight");
        PathBuf::from(name)
    }

    /// Opens for appending (a resumed run adds to what an interrupted one left).
    pub fn open(results: &Path) -> io::Result<InflightLog> {
        let path = InflightLog::path_for(results);
        let file = private_options().append(true).create(true).open(&path)?;
        Ok(InflightLog {
            path,
            out: BufWriter::new(file),
        })
    }

    fn append(&mut self, key: RowKey, client_request_id: &str) -> io::Result<()> {
        writeln!(self.out, "{:016x} {client_request_id}", key.0)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// Called once every row has its record: nothing is in flight any more.
    pub fn remove(self) -> io::Result<()> {
        drop(self.out);
        std::fs::remove_file(&self.path)
    }
}

/// `--undo-file`: for every row that succeeded with disable or enable, the opposite action as a
/// ready input row (with the carried columns), written to a temporary file and renamed into place
/// when the run ends.
pub struct UndoFile {
    target: PathBuf,
    temp: tempfile::NamedTempFile,
    out: Option<BufWriter<File>>,
    format: ResultsFormat,
    carry_names: Vec<String>,
    rows: u64,
}

impl UndoFile {
    pub fn create(target: &Path, carry_columns: &[String]) -> io::Result<UndoFile> {
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let temp = tempfile::NamedTempFile::new_in(dir)?;
        let out = BufWriter::new(temp.as_file().try_clone()?);
        let mut undo = UndoFile {
            target: target.to_path_buf(),
            temp,
            out: Some(out),
            format: ResultsFormat::from_path(target),
            carry_names: carry_columns.to_vec(),
            rows: 0,
        };
        if undo.format == ResultsFormat::Csv {
            let mut header: Vec<&str> = vec![
                "identityAccountId",
                "accountId",
                "action",
                "identityProvider",
            ];
            header.extend(undo.carry_names.iter().map(String::as_str));
            let mut line = String::new();
            csv_line(&mut line, &header);
            undo.write(line.as_bytes())?;
        }
        Ok(undo)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.out {
            Some(out) => out.write_all(bytes),
            None => Ok(()),
        }
    }

    fn append(&mut self, outcome: &Outcome) -> io::Result<()> {
        if outcome.status != RowStatus::Succeeded {
            return Ok(());
        }
        let Some(opposite) = outcome.job.action.opposite() else {
            return Ok(());
        };
        let job = &outcome.job;
        let mut line = String::new();
        match self.format {
            ResultsFormat::Csv => {
                let mut cells: Vec<&str> = vec![
                    &job.identity_account_id,
                    &job.account_id,
                    opposite.as_str(),
                    job.provider.as_str(),
                ];
                cells.extend(job.carry.iter().map(String::as_str));
                csv_line(&mut line, &cells);
            }
            ResultsFormat::Jsonl => {
                let mut object = serde_json::Map::new();
                object.insert(
                    "identityAccountId".into(),
                    job.identity_account_id.clone().into(),
                );
                object.insert("accountId".into(), job.account_id.clone().into());
                object.insert("action".into(), opposite.as_str().into());
                object.insert("identityProvider".into(), job.provider.as_str().into());
                for (name, value) in self.carry_names.iter().zip(&job.carry) {
                    object
                        .entry(name.clone())
                        .or_insert_with(|| value.clone().into());
                }
                line = serde_json::Value::Object(object).to_string();
                line.push('\n');
            }
        }
        self.rows += 1;
        self.write(line.as_bytes())
    }

    /// Puts the undo file in place; returns how many rows it holds.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        self.temp.as_file().sync_all()?;
        self.temp.persist(&self.target).map_err(|e| e.error)?;
        sync_parent_dir(&self.target);
        Ok(self.rows)
    }
}

/// Files the tool creates hold account data: readable by the owner only (0600 on Unix).
pub fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// After creating or renaming a file, makes its directory entry durable too (Linux needs the
/// directory itself synced). Best effort: not every platform or filesystem allows it.
pub fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn csv_line(line: &mut String, cells: &[&str]) {
    for (index, cell) in cells.iter().enumerate() {
        if index > 0 {
            line.push(',');
        }
        push_csv_cell(line, cell);
    }
    line.push_str("\r\n");
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
