//! The results records' `effect` and `confirmedAt` (SPEC section 10): which rows were acted on
//! (read back from the results, for `run --confirm` and `confirm`), and the rewrite that records
//! what the rounds saw. The rewrite is the compaction's (`Journal::compact`): a temporary file
//! beside the results, synced, then renamed over them, so a crash leaves the old file or the new
//! one, never half of each. A JSONL record that changes is written again as a [`Record`] (a
//! record from before SPEC section 10 gains every field it lacked, in the journal's order); CSV
//! cells are kept as stored, the two columns added to an older header; every other line stays
//! as it was.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::time::SystemTime;

use super::journal::sync_parent_dir;
use super::record::{Counting, Record, RecordReader, ResultsFormat, csv_line, rfc3339};
use super::resume::ResumeError;
use crate::graph::model::{Action, Provider};
use crate::outcome::{Effect, RowStatus};
use crate::sanitize::unquote_formula;

/// A succeeded record: the action that was accepted, and what was seen of it so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActedRecord {
    /// The record's key for the rewrite: unique to the row's request.
    pub client_request_id: String,
    pub row: u64,
    pub identity_account_id: String,
    pub account_id: String,
    pub provider: Option<Provider>,
    pub action: Action,
    pub started_at: Option<SystemTime>,
    pub effect: Option<Effect>,
}

/// What the rounds decided for a record, by `clientRequestId`.
pub type Effects = HashMap<String, (Effect, Option<SystemTime>)>;

/// The succeeded records of the results at `path`: of each row the record that counts
/// ([`Counting`]), when it succeeded and names its request. A line that is not a record stops
/// the read, naming it.
pub fn acted_records(path: &Path) -> Result<Vec<ActedRecord>, ResumeError> {
    let mut reader = RecordReader::open(path)?;
    let mut counting = Counting::default();
    while let Some((_, record)) = reader.next_record()? {
        counting.offer(&record, acted);
    }
    // A row carried over to another line by a resumed run is still one request.
    let mut by_request = indexmap::IndexMap::new();
    for (_, status, acted) in counting.into_counted() {
        if let (RowStatus::Succeeded, Some(acted)) = (status, acted) {
            by_request.insert(acted.client_request_id.clone(), acted);
        }
    }
    Ok(by_request.into_values().collect())
}

fn acted(record: &Record) -> Option<ActedRecord> {
    Some(ActedRecord {
        client_request_id: record.client_request_id.clone()?,
        row: record.row,
        identity_account_id: record.identity_account_id.clone(),
        account_id: record.account_id.clone(),
        provider: record.identity_provider,
        action: record.action,
        started_at: record.started_at,
        effect: record.effect,
    })
}

/// Sets `effect` and `confirmedAt` on every record `effects` names (by `clientRequestId`), in a
/// copy renamed over the results. Returns how many records changed.
pub fn rewrite(path: &Path, effects: &Effects) -> io::Result<u64> {
    if effects.is_empty() {
        return Ok(0);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    let changed = match ResultsFormat::from_path(path) {
        ResultsFormat::Jsonl => rewrite_jsonl(path, effects, temp.as_file_mut())?,
        ResultsFormat::Csv => rewrite_csv(path, effects, temp.as_file_mut())?,
    };
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    sync_parent_dir(path);
    Ok(changed)
}

fn rewrite_jsonl(path: &Path, effects: &Effects, out: &mut File) -> io::Result<u64> {
    let mut out = io::BufWriter::new(out);
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    let mut changed = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // A line that is not a whole record (a torn last line) is kept as it is.
        let parsed = line
            .ends_with(b"\n")
            .then(|| serde_json::from_slice::<Record>(&line).ok())
            .flatten();
        let Some(mut record) = parsed else {
            out.write_all(&line)?;
            continue;
        };
        let decided = record
            .client_request_id
            .as_deref()
            .and_then(|id| effects.get(id));
        let Some((effect, at)) = decided else {
            out.write_all(&line)?;
            continue;
        };
        record.effect = Some(*effect);
        record.confirmed_at = *at;
        serde_json::to_writer(&mut out, &record).map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        changed += 1;
    }
    out.flush()?;
    Ok(changed)
}

fn rewrite_csv(path: &Path, effects: &Effects, out: &mut File) -> io::Result<u64> {
    let mut out = io::BufWriter::new(out);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(io::Error::other)?;
    let mut headers: Vec<String> = reader
        .headers()
        .map_err(io::Error::other)?
        .iter()
        .map(str::to_owned)
        .collect();
    // A file written before the fields existed gains their columns after resolvedBy.
    let mut inserted = Vec::new();
    for name in ["effect", "confirmedAt"] {
        if !headers.iter().any(|h| h == name) {
            let after = ["effect", "resolvedBy", "finishedAt"]
                .iter()
                .find_map(|n| headers.iter().position(|h| h == n))
                .map_or(headers.len(), |at| at + 1);
            headers.insert(after, name.to_owned());
            inserted.push(after);
        }
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (effect_at, confirmed_at, request_at) = (
        column("effect"),
        column("confirmedAt"),
        column("clientRequestId"),
    );
    out.write_all(&csv_line(headers.iter().map(String::as_str))?)?;
    let mut changed = 0;
    for record in reader.records() {
        let record = record.map_err(io::Error::other)?;
        let mut cells: Vec<String> = record.iter().map(str::to_owned).collect();
        for at in &inserted {
            let at = (*at).min(cells.len());
            cells.insert(at, String::new());
        }
        let decided = request_at
            .and_then(|at| cells.get(at))
            .and_then(|id| effects.get(unquote_formula(id)));
        if let (Some((effect, at)), Some(effect_at), Some(confirmed_at)) =
            (decided, effect_at, confirmed_at)
        {
            if let Some(cell) = cells.get_mut(effect_at) {
                *cell = effect.as_str().to_owned();
            }
            if let Some(cell) = cells.get_mut(confirmed_at) {
                *cell = at.map(rfc3339).unwrap_or_default();
            }
            changed += 1;
        }
        // Cells as they were stored: a cell quoted when first written starts with `'` now, which
        // csv_line leaves as it is.
        out.write_all(&csv_line(cells.iter().map(String::as_str))?)?;
    }
    out.flush()?;
    Ok(changed)
}

/// Counts by effect, for the summary and the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectCounts {
    pub confirmed: u64,
    pub not_confirmed: u64,
    pub not_observable: u64,
    /// Succeeded rows with no effect decided (the rounds were stopped before the deadline).
    pub unchecked: u64,
}

impl EffectCounts {
    pub fn push(&mut self, effect: Option<Effect>) {
        match effect {
            Some(Effect::Confirmed) => self.confirmed += 1,
            Some(Effect::NotConfirmed) => self.not_confirmed += 1,
            Some(Effect::NotObservable) => self.not_observable += 1,
            None => self.unchecked += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_19_the_rewrite_sets_the_effect_in_place_and_keeps_every_other_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let lines = [
            r#"{"correlationId":"c1","row":2,"identityAccountId":"i1","accountId":"a1","action":"disable","identityProvider":"okta","status":"succeeded","httpStatus":200,"attempts":1,"errorCode":null,"errorMessage":null,"requestId":"r","clientRequestId":"k1","startedAt":"2026-01-01T00:00:00.000Z","finishedAt":"2026-01-01T00:00:01.000Z","resolvedBy":null,"effect":null,"confirmedAt":null,"ticket":"T-1"}"#,
            // Written before the fields existed.
            r#"{"correlationId":"c2","row":3,"identityAccountId":"i2","accountId":"a2","action":"forcePasswordReset","identityProvider":"activeDirectory","status":"succeeded","clientRequestId":"k2","startedAt":null,"finishedAt":null,"resolvedBy":null,"ticket":"T-2"}"#,
            r#"{"row":4,"identityAccountId":"i3","accountId":"a3","action":"disable","status":"failed","clientRequestId":"k3"}"#,
        ];
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let acted = acted_records(&path).unwrap();
        assert_eq!(acted.len(), 2);
        assert_eq!(acted[0].action, Action::Disable);
        assert_eq!(acted[1].provider, Some(Provider::ActiveDirectory));
        let at = SystemTime::UNIX_EPOCH;
        let effects: Effects = [
            ("k1".to_owned(), (Effect::Confirmed, Some(at))),
            ("k2".to_owned(), (Effect::NotObservable, None)),
        ]
        .into_iter()
        .collect();
        assert_eq!(rewrite(&path, &effects).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let out: Vec<&str> = text.lines().collect();
        assert_eq!(
            out[0],
            lines[0].replace(
                r#""effect":null,"confirmedAt":null"#,
                r#""effect":"confirmed","confirmedAt":"1970-01-01T00:00:00.000Z""#
            )
        );
        assert!(
            out[1].contains(
                r#""resolvedBy":null,"effect":"notObservable","confirmedAt":null,"ticket":"T-2""#
            ),
            "{}",
            out[1]
        );
        assert_eq!(out[2], lines[2]);
    }

    #[test]
    fn issue_19_the_csv_rewrite_keeps_cells_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(
            &path,
            "row,action,status,clientRequestId,resolvedBy,effect,confirmedAt,note\r\n2,disable,succeeded,k1,,,,'=1+1\r\n",
        )
        .unwrap();
        let effects: Effects = [("k1".to_owned(), (Effect::NotConfirmed, None))]
            .into_iter()
            .collect();
        assert_eq!(rewrite(&path, &effects).unwrap(), 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "row,action,status,clientRequestId,resolvedBy,effect,confirmedAt,note\r\n2,disable,succeeded,k1,,notConfirmed,,'=1+1\r\n"
        );
    }
}
