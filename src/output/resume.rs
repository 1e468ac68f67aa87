//! Reading an earlier run's results for `--resume`: which rows already succeeded (by identity
//! account, account, action and provider), which were in flight when the run died, and where the
//! last complete record ends (a torn last line from `kill -9` is cut off there).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::journal::InflightLog;
use super::record::{Counting, ReadError, RecordReader};
use crate::graph::model::is_mock_request_id;
use crate::input::plan::{KeyMap, RowKey};
use crate::input::{Job, Row};
use crate::outcome::{InflightNote, Outcome, RowStatus};

/// Why an earlier results file cannot be resumed: the results reader's errors.
pub type ResumeError = ReadError;

/// What an earlier run left.
#[derive(Debug, Default)]
pub struct Prior {
    /// Rows that succeeded, and where their latest succeeded record starts.
    pub succeeded: KeyMap<RowKey, u64>,
    /// Looked-up rows that succeeded, by input line, and where the record starts: with the same
    /// input, line N is the same row, and it is carried over without being looked up again (a
    /// disabled account no longer offers `disable`, so a second lookup could refuse it).
    pub succeeded_lines: KeyMap<u64, u64>,
    /// The key of each of those rows, so that a later repeat of it is a duplicate again, as it
    /// was in the earlier run (issue 16: it came back `succeeded`).
    pub succeeded_line_keys: KeyMap<u64, RowKey>,
    /// Requests that left but whose answer was never recorded, by row.
    pub unknown_attempts: KeyMap<RowKey, u32>,
    /// Complete records read.
    pub records: u64,
    /// The byte length up to the end of the last complete record.
    pub complete_len: u64,
    /// The file ended in a partial record (now to be cut off).
    pub torn: bool,
    /// Records whose answer came from this tool's mock (its request ids say so), and from
    /// anything else: a rehearsal's results never count for a real run, even without the lock
    /// file that names their endpoint (issue 10).
    pub answered_by_mock: u64,
    pub answered_by_other: u64,
    /// Records an earlier run's guard refused (`protectedIdentity`, `privilegedIdentity`): those
    /// rows run again, so a resume without a guard stops even when no lock file says which
    /// guards there were (issue 16).
    pub refused_protected: u64,
    pub refused_privileged: u64,
}

/// Reads the results file at `path` (and its in-flight log, if a run died). Which record of a
/// row counts is [`Counting`]'s rule, as for `report`, the undo file and `confirm`.
pub fn scan(path: &Path) -> Result<Prior, ResumeError> {
    let io_error = |cause| ResumeError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut reader = RecordReader::open(path)?;
    let mut prior = Prior::default();
    let mut finished_requests: HashMap<String, ()> = HashMap::new();
    let mut counting = Counting::default();
    while let Some((offset, record)) = reader.next_record()? {
        if record.status == RowStatus::Failed {
            match record.error_code.as_deref() {
                Some("protectedIdentity") => prior.refused_protected += 1,
                Some("privilegedIdentity") => prior.refused_privileged += 1,
                _ => {}
            }
        }
        match record.request_id.as_deref() {
            Some(id) if is_mock_request_id(id) => prior.answered_by_mock += 1,
            Some(_) => prior.answered_by_other += 1,
            None => {}
        }
        counting.offer(&record, |record| (offset, record.resolved_by.is_some()));
        if let Some(id) = record.client_request_id {
            finished_requests.insert(id, ());
        }
        prior.records += 1;
    }
    prior.torn = reader.torn();
    prior.complete_len = reader.complete_len();
    for (name, status, (offset, looked_up)) in counting.into_counted() {
        if status != RowStatus::Succeeded {
            continue;
        }
        prior.succeeded.insert(name.key, offset);
        if looked_up {
            prior.succeeded_lines.insert(name.line, offset);
            prior.succeeded_line_keys.insert(name.line, name.key);
        }
    }

    // Requests noted as leaving whose answer never made it into a record: for each such
    // logical request, its highest attempt number is how many of its requests left.
    if let Ok(inflight) = File::open(InflightLog::path_for(path)) {
        let mut unanswered: HashMap<String, (RowKey, u32)> = HashMap::new();
        for line in BufReader::new(inflight).lines() {
            let line = line.map_err(io_error)?;
            // A note cut short by the crash, or one from an older version: nothing to count.
            let Ok(note) = serde_json::from_str::<InflightNote>(&line) else {
                continue;
            };
            if finished_requests.contains_key(&note.client_request_id) {
                continue;
            }
            let entry = unanswered
                .entry(note.client_request_id.clone())
                .or_insert((note.key(), 0));
            entry.1 = entry.1.max(note.attempt);
        }
        for (key, attempts) in unanswered.into_values() {
            *prior.unknown_attempts.entry(key).or_default() += attempts;
        }
    }
    Ok(prior)
}

/// Re-reads the succeeded record at `offset`, to carry it over to this run's results for the row
/// `template` (its line, action and carried columns, which may differ from the earlier run's if
/// the input changed and the user accepted that). The ids, and the column a lookup found them
/// by, are the record's; so is what an earlier `--confirm` or `confirm` saw of its action.
pub fn carried_over(path: &Path, offset: u64, template: Job) -> Result<Outcome, ResumeError> {
    Ok(RecordReader::record_at(path, offset)?.into_outcome(template))
}

/// What `--resume` knows of the earlier run, as the input checks use it.
pub(crate) struct Earlier<'p> {
    pub(crate) prior: &'p Prior,
    /// The input is the file the earlier run read (its fingerprint is unchanged).
    pub(crate) same_input: bool,
}

impl Earlier<'_> {
    /// The earlier record of a looked-up row on this line, when it succeeded and the input is
    /// the same file.
    pub(crate) fn record_of_line(&self, row: &Row) -> Option<u64> {
        if !self.same_input {
            return None;
        }
        self.prior.succeeded_lines.get(&row.line).copied()
    }

    /// The key of the looked-up row on this line that succeeded, when [`Earlier::record_of_line`]
    /// has its record.
    pub(crate) fn key_of_line(&self, row: &Row) -> Option<RowKey> {
        self.record_of_line(row)?;
        self.prior.succeeded_line_keys.get(&row.line).copied()
    }
}
