//! `--undo-file`: the input that reverses a batch. Built when the run ends from the results file
//! itself (so it covers rows of earlier runs after `--resume`, and no file with account data
//! lingers through the run), written to a temporary file beside the target and renamed into place.
//!
//! For every row whose latest record `succeeded` with `disable` the undo row says `enable`, and
//! the other way round; actions without an opposite are left out. The four columns Graph needs
//! are written exactly as they are (the undo file is this tool's input: a spreadsheet-safety quote
//! would be sent to Graph, issue 10); carried columns are made spreadsheet-safe like the results.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use super::journal::{FIELDS, ResultsFormat, carry_names, csv_line, sync_parent_dir, unneutralise};
use crate::graph::model::{Action, Provider};
use crate::input::plan::{AccountKey, RowKey};

/// One undo row: the ids, the opposite action, and the carried cells (by the input's names).
struct UndoRow {
    identity_account_id: String,
    account_id: String,
    action: Action,
    provider: Provider,
    carry: Vec<String>,
}

/// Writes the undo file for the results at `results` to `target`; returns how many rows it holds.
/// `carry_columns` are the input's carried columns (the results may have renamed some).
pub fn write_undo(results: &Path, target: &Path, carry_columns: &[String]) -> io::Result<u64> {
    let results_names = carry_names(carry_columns);
    let mut rows = Vec::new();
    let mut seen: HashSet<RowKey> = HashSet::new();
    let mut keep = |row: UndoRow| {
        let key = RowKey::new(
            AccountKey::new(&row.identity_account_id, &row.account_id),
            row.action,
            Some(row.provider),
        );
        if seen.insert(key) {
            rows.push(row);
        }
    };
    match ResultsFormat::from_path(results) {
        ResultsFormat::Jsonl => {
            for line in BufReader::new(File::open(results)?).lines() {
                let line = line?;
                let Ok(record) =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line)
                else {
                    continue;
                };
                let text = |name: &str| record.get(name).and_then(|v| v.as_str()).unwrap_or("");
                if let Some(row) = undo_row(&text, &results_names) {
                    keep(row);
                }
            }
        }
        ResultsFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_path(results)
                .map_err(io::Error::other)?;
            let headers = reader.headers().map_err(io::Error::other)?.clone();
            for record in reader.records() {
                let Ok(record) = record else { continue };
                let text = |name: &str| {
                    headers
                        .iter()
                        .position(|h| h == name)
                        .and_then(|i| record.get(i))
                        .map(unneutralise)
                        .unwrap_or("")
                };
                if let Some(row) = undo_row(&text, &results_names) {
                    keep(row);
                }
            }
        }
    }
    write_rows(target, carry_columns, &rows)?;
    Ok(rows.len() as u64)
}

/// The undo row for one record, if it succeeded with an action that has an opposite.
fn undo_row<'r>(text: &impl Fn(&str) -> &'r str, results_names: &[String]) -> Option<UndoRow> {
    if text("status") != "succeeded" {
        return None;
    }
    let action = Action::parse(text("action"))?.opposite()?;
    Some(UndoRow {
        identity_account_id: text("identityAccountId").to_owned(),
        account_id: text("accountId").to_owned(),
        action,
        provider: Provider::parse(text("identityProvider"))?,
        carry: results_names
            .iter()
            .map(|name| text(name).to_owned())
            .collect(),
    })
}

fn write_rows(target: &Path, carry_columns: &[String], rows: &[UndoRow]) -> io::Result<()> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".graph-remediate-undo-")
        .tempfile_in(dir)?;
    let mut out = BufWriter::new(temp.as_file());
    match ResultsFormat::from_path(target) {
        ResultsFormat::Csv => {
            let header = FIELDS[2..6]
                .iter()
                .copied()
                .chain(carry_columns.iter().map(String::as_str));
            out.write_all(&csv_line(header, &[])?)?;
            for row in rows {
                let cells = [
                    row.identity_account_id.as_str(),
                    &row.account_id,
                    row.action.as_str(),
                    row.provider.as_str(),
                ]
                .into_iter()
                .chain(row.carry.iter().map(String::as_str));
                // The four ids as they are: they are sent to Graph when the file is replayed.
                out.write_all(&csv_line(cells, &[0, 1, 2, 3])?)?;
            }
        }
        ResultsFormat::Jsonl => {
            for row in rows {
                let mut object = serde_json::Map::new();
                object.insert(
                    "identityAccountId".into(),
                    row.identity_account_id.clone().into(),
                );
                object.insert("accountId".into(), row.account_id.clone().into());
                object.insert("action".into(), row.action.as_str().into());
                object.insert("identityProvider".into(), row.provider.as_str().into());
                for (name, value) in carry_columns.iter().zip(&row.carry) {
                    object
                        .entry(name.clone())
                        .or_insert_with(|| value.clone().into());
                }
                serde_json::to_writer(&mut out, &object).map_err(io::Error::other)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    drop(out);
    temp.as_file().sync_all()?;
    // A rename replaces whatever the name was (a link included) and never writes through it.
    temp.persist(target).map_err(|e| e.error)?;
    sync_parent_dir(target);
    Ok(())
}
