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
use std::io;
use std::path::Path;

use serde_json::Value;

use super::record::{Counting, FIELDS, Record, RecordReader, carry_names};
use super::sheet::write_sheet;
use crate::graph::model::{Action, Provider};
use crate::input::plan::RowKey;
use crate::outcome::{Effect, RowStatus};

/// One undo row: the ids, the opposite action, and the carried cells (by the input's names).
struct UndoRow {
    identity_account_id: String,
    account_id: String,
    action: Action,
    provider: Provider,
    carry: Vec<String>,
}

/// Writes the undo file for the results at `results` to `target`; returns how many rows it holds.
/// `carry_columns` are the input's carried columns (the results may have renamed some). Which
/// record of a row counts is [`Counting`]'s rule; a line that is no record is left out (the
/// results were checked when the run read them).
pub fn write_undo(results: &Path, target: &Path, carry_columns: &[String]) -> io::Result<u64> {
    let results_names = carry_names(carry_columns);
    let mut reader = RecordReader::open(results).map_err(io::Error::other)?;
    let mut counting = Counting::default();
    while let Some(line) = reader.next_line().map_err(io::Error::other)? {
        if let Ok(record) = line.record {
            counting.offer(&record, |record| undo_row(record, &results_names));
        }
    }
    // One undo row for each action, however many rows asked for it.
    let mut seen: HashSet<RowKey> = HashSet::new();
    let rows: Vec<UndoRow> = counting
        .into_counted()
        .filter(|(name, status, _)| *status == RowStatus::Succeeded && seen.insert(name.key))
        .filter_map(|(_, _, row)| row)
        .collect();
    write_rows(target, carry_columns, &rows)?;
    Ok(rows.len() as u64)
}

/// The undo row for one record, if it succeeded with an action that has an opposite.
fn undo_row(record: &Record, results_names: &[String]) -> Option<UndoRow> {
    // An action that never took effect (SPEC section 10) needs no undo.
    if record.status != RowStatus::Succeeded || record.effect == Some(Effect::NotConfirmed) {
        return None;
    }
    Some(UndoRow {
        identity_account_id: record.identity_account_id.clone(),
        account_id: record.account_id.clone(),
        action: record.action.opposite()?,
        provider: record.identity_provider?,
        carry: results_names
            .iter()
            .map(|name| record.carried.get(name).cloned().unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jsonl_undo_file_keeps_the_inputs_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.jsonl");
        let record = |row: u64, status: &str| {
            format!(
                r#"{{"correlationId":null,"row":{row},"identityAccountId":"ia-{row}","accountId":"acc-{row}","action":"disable","identityProvider":"okta","status":"{status}","httpStatus":null,"attempts":1,"errorCode":null,"errorMessage":null,"requestId":null,"clientRequestId":"k{row}","startedAt":null,"finishedAt":null,"zeta":"z{row}","alpha":"a{row}"}}"#
            )
        };
        let lines = [
            record(2, "failed"),
            record(3, "succeeded"),
            record(2, "succeeded"),
            record(3, "failed"),
        ];
        std::fs::write(&results, lines.join("\n") + "\n").unwrap();
        let target = dir.path().join("undo.jsonl");
        let columns = ["zeta".to_owned(), "alpha".to_owned()];
        assert_eq!(write_undo(&results, &target, &columns).unwrap(), 2);
        let text = std::fs::read_to_string(&target).unwrap();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            r#"{"identityAccountId":"ia-2","accountId":"acc-2","action":"enable","identityProvider":"okta","zeta":"z2","alpha":"a2"}"#,
            "the undo rows keep the results' order of rows and the input's order of columns"
        );
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains(r#""identityAccountId":"ia-3""#)
        );
    }
}
