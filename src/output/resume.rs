//! Reading an earlier run's results for `--resume`: which rows already succeeded (by identity
//! account, account, action and provider), which were in flight when the run died, and where the
//! last complete record ends (a torn last line from `kill -9` is cut off there).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::journal::{FIELDS, InflightLog, REQUIRED_FIELDS, ResultsFormat, unneutralise};
use crate::graph::model::{Action, Provider};
use crate::input::plan::{AccountKey, KeyMap, RowKey};
use crate::input::{IdentityColumn, Job, Row};
use crate::outcome::{Effect, InflightNote, Outcome, RowStatus};

/// Why an earlier results file cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
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

/// The fields a resume needs from a record.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFields {
    #[serde(default)]
    row: Option<u64>,
    identity_account_id: String,
    account_id: String,
    action: String,
    /// Empty for a row the lookup refused before its provider was known.
    #[serde(default)]
    identity_provider: Option<String>,
    status: RowStatus,
    client_request_id: Option<String>,
    #[serde(default)]
    resolved_by: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
}

/// What a carried-over succeeded record keeps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeptFields {
    identity_account_id: String,
    account_id: String,
    #[serde(default)]
    identity_provider: Option<String>,
    #[serde(default)]
    resolved_by: Option<String>,
    correlation_id: Option<String>,
    http_status: Option<u16>,
    attempts: u32,
    request_id: Option<String>,
    client_request_id: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Absent in results written before SPEC section 10.
    #[serde(default)]
    effect: Option<String>,
    #[serde(default)]
    confirmed_at: Option<String>,
}

/// Reads the results file at `path` (and its in-flight log, if a run died).
pub fn scan(path: &Path) -> Result<Prior, ResumeError> {
    let io_error = |cause| ResumeError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let file = File::open(path).map_err(io_error)?;
    let mut prior = Prior::default();
    let mut finished_requests: HashMap<String, ()> = HashMap::new();
    let mut on_record = |offset: u64, fields: KeyFields, prior: &mut Prior| -> Result<(), String> {
        let key = key_of(&fields)?;
        if fields.status == RowStatus::Succeeded {
            prior.succeeded.insert(key, offset);
            if let (Some(row), Some(_)) = (fields.row, &fields.resolved_by) {
                prior.succeeded_lines.insert(row, offset);
                prior.succeeded_line_keys.insert(row, key);
            }
        }
        if fields.status == RowStatus::Failed {
            match fields.error_code.as_deref() {
                Some("protectedIdentity") => prior.refused_protected += 1,
                Some("privilegedIdentity") => prior.refused_privileged += 1,
                _ => {}
            }
        }
        if let Some(id) = fields.client_request_id {
            finished_requests.insert(id, ());
        }
        match fields.request_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) if crate::mock::is_mock_request_id(id) => prior.answered_by_mock += 1,
            Some(_) => prior.answered_by_other += 1,
            None => {}
        }
        prior.records += 1;
        Ok(())
    };
    match ResultsFormat::from_path(path) {
        ResultsFormat::Jsonl => scan_jsonl(path, file, &mut prior, &mut on_record)?,
        ResultsFormat::Csv => scan_csv(path, file, &mut prior, &mut on_record)?,
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

fn key_of(fields: &KeyFields) -> Result<RowKey, String> {
    let action = Action::parse(&fields.action).ok_or("unknown action")?;
    let provider = match fields
        .identity_provider
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(text) => Some(Provider::parse(text).ok_or("unknown identity provider")?),
    };
    let account = AccountKey::new(&fields.identity_account_id, &fields.account_id);
    Ok(RowKey::new(account, action, provider))
}

fn scan_jsonl(
    path: &Path,
    file: File,
    prior: &mut Prior,
    on_record: &mut impl FnMut(u64, KeyFields, &mut Prior) -> Result<(), String>,
) -> Result<(), ResumeError> {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|cause| ResumeError::Io {
                path: path.to_path_buf(),
                cause,
            })?;
        if read == 0 {
            break;
        }
        number += 1;
        if !line.ends_with(b"\n") {
            // Written up to the moment the process died: cut off.
            prior.torn = true;
            break;
        }
        let parsed = serde_json::from_slice::<KeyFields>(&line)
            .map_err(|e| e.to_string())
            .and_then(|fields| on_record(offset, fields, prior));
        if let Err(reason) = parsed {
            return Err(ResumeError::NotARecord {
                path: path.to_path_buf(),
                line: number,
                reason,
            });
        }
        offset += read as u64;
        prior.complete_len = offset;
    }
    Ok(())
}

fn scan_csv(
    path: &Path,
    file: File,
    prior: &mut Prior,
    on_record: &mut impl FnMut(u64, KeyFields, &mut Prior) -> Result<(), String>,
) -> Result<(), ResumeError> {
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let not_a_record = |line: u64, reason: String| ResumeError::NotARecord {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let headers = reader
        .headers()
        .map_err(|e| not_a_record(1, e.to_string()))?
        .clone();
    let index = |name: &str| headers.iter().position(|h| h == name);
    let columns: Vec<Option<usize>> = FIELDS.iter().map(|f| index(f)).collect();
    // `resolvedBy`, `effect` and `confirmedAt` came later: results written before lack them.
    if columns[..REQUIRED_FIELDS].iter().any(Option::is_none) {
        return Err(not_a_record(
            1,
            "the header lacks the results fields".to_owned(),
        ));
    }
    prior.complete_len = reader.position().byte();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().clone();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(not_a_record(start.line(), e.to_string())),
        }
        let end = reader.position().byte();
        // A record cut short by a crash: no line end yet, or fewer fields than the header.
        let complete =
            record.len() == headers.len() && (end < file_len || ends_with_newline(path, end));
        if !complete {
            prior.torn = true;
            break;
        }
        let cell = |field: &str| {
            let i = FIELDS
                .iter()
                .position(|f| *f == field)
                .and_then(|i| columns[i]);
            unneutralise(i.and_then(|i| record.get(i)).unwrap_or_default()).to_owned()
        };
        let status = match cell("status").as_str() {
            "succeeded" => RowStatus::Succeeded,
            "failed" => RowStatus::Failed,
            "skipped" => RowStatus::Skipped,
            "not_attempted" => RowStatus::NotAttempted,
            other => {
                return Err(not_a_record(
                    start.line(),
                    format!("unknown status {other:?}"),
                ));
            }
        };
        let filled = |field: &str| Some(cell(field)).filter(|s| !s.is_empty());
        let fields = KeyFields {
            row: cell("row").parse().ok(),
            identity_account_id: cell("identityAccountId"),
            account_id: cell("accountId"),
            action: cell("action"),
            identity_provider: filled("identityProvider"),
            status,
            client_request_id: filled("clientRequestId"),
            resolved_by: filled("resolvedBy"),
            request_id: filled("requestId"),
            error_code: filled("errorCode"),
        };
        on_record(start.byte(), fields, prior)
            .map_err(|reason| not_a_record(start.line(), reason))?;
        prior.complete_len = end;
    }
    Ok(())
}

fn ends_with_newline(path: &Path, end: u64) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut last = [0u8; 1];
    end > 0
        && file.seek(SeekFrom::Start(end - 1)).is_ok()
        && file.read_exact(&mut last).is_ok()
        && last[0] == b'\n'
}

/// Re-reads the succeeded record at `offset`, to carry it over to this run's results for the row
/// `template` (its line, action and carried columns, which may differ from the earlier run's if
/// the input changed and the user accepted that). The ids, and the column a lookup found them
/// by, are the record's.
pub fn carried_over(path: &Path, offset: u64, template: Job) -> Result<Outcome, ResumeError> {
    let io_error = |cause| ResumeError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let not_a_record = |reason: String| ResumeError::NotARecord {
        path: path.to_path_buf(),
        line: 0,
        reason,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let header = match ResultsFormat::from_path(path) {
        ResultsFormat::Csv => Some(
            csv::ReaderBuilder::new()
                .from_reader(&mut file)
                .headers()
                .map_err(|e| not_a_record(e.to_string()))?
                .clone(),
        ),
        ResultsFormat::Jsonl => None,
    };
    file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    let kept: KeptFields = match header {
        None => {
            let mut line = Vec::new();
            BufReader::new(file)
                .read_until(b'\n', &mut line)
                .map_err(io_error)?;
            serde_json::from_slice(&line).map_err(|e| not_a_record(e.to_string()))?
        }
        Some(header) => {
            let mut record = csv::StringRecord::new();
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(file);
            reader
                .read_record(&mut record)
                .map_err(|e| not_a_record(e.to_string()))?;
            let text = |name: &str| {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| record.get(i))
                    .map(|cell| unneutralise(cell).to_owned())
                    .filter(|s| !s.is_empty())
            };
            KeptFields {
                identity_account_id: text("identityAccountId").unwrap_or_default(),
                account_id: text("accountId").unwrap_or_default(),
                identity_provider: text("identityProvider"),
                resolved_by: text("resolvedBy"),
                correlation_id: text("correlationId"),
                http_status: text("httpStatus").and_then(|s| s.parse().ok()),
                attempts: text("attempts").and_then(|s| s.parse().ok()).unwrap_or(1),
                request_id: text("requestId"),
                client_request_id: text("clientRequestId"),
                started_at: text("startedAt"),
                finished_at: text("finishedAt"),
                effect: text("effect"),
                confirmed_at: text("confirmedAt"),
            }
        }
    };
    let time = |text: Option<String>| -> Option<SystemTime> {
        humantime::parse_rfc3339(text.as_deref()?).ok()
    };
    let job = Job {
        identity_account_id: kept.identity_account_id,
        account_id: kept.account_id,
        provider: kept.identity_provider.as_deref().and_then(Provider::parse),
        resolved_by: kept.resolved_by.as_deref().and_then(IdentityColumn::parse),
        ..template
    };
    Ok(Outcome {
        correlation_id: kept.correlation_id,
        http_status: kept.http_status,
        attempts: kept.attempts,
        error_code: None,
        error_message: None,
        request_id: kept.request_id,
        client_request_id: kept.client_request_id,
        started_at: time(kept.started_at),
        finished_at: time(kept.finished_at),
        // What an earlier `--confirm` or `confirm` saw of this row's action stays with it.
        effect: kept.effect.as_deref().and_then(Effect::parse),
        confirmed_at: time(kept.confirmed_at),
        status: RowStatus::Succeeded,
        job,
    })
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
