//! `--undo-file`: the input that reverses a batch. Built when the run ends from the results file
//! itself (so it covers rows of earlier runs after `--resume`, and no file with account data
//! lingers through the run), written to a temporary file beside the target and renamed into place.
//!
//! For every row whose latest record `succeeded` with `disable` the undo row says `enable`, and
//! the other way round; actions without an opposite are left out, and so are actions the confirm
//! phase saw never take effect (`effect` notConfirmed). Every CSV cell is made spreadsheet-safe
//! like the results (a formula gets a `'`), the four columns Graph needs too: the tool's CSV reader
//! takes the `'` off again, so the undo file replays the ids exactly (issues 10 and 16).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::journal::{FIELDS, ResultsFormat, carry_names, unneutralise};
use super::sheet::write_sheet;
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
    // An action that never took effect (SPEC section 10) needs no undo.
    if text("status") != "succeeded" || text("effect") == "notConfirmed" {
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
    let columns: Vec<String> = FIELDS[2..6]
        .iter()
        .map(|name| (*name).to_owned())
        .chain(carry_columns.iter().cloned())
        .collect();
    let cells = rows.iter().map(|row| {
        [
            row.identity_account_id.as_str(),
            &row.account_id,
            row.action.as_str(),
            row.provider.as_str(),
        ]
        .into_iter()
        .chain(row.carry.iter().map(String::as_str))
        .map(Value::from)
        .collect()
    });
    write_sheet(target, &columns, cells)
}
