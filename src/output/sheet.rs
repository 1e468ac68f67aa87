//! Writing a file this tool reads as input (the undo file, `resolve`'s output): CSV or JSONL by
//! the target's extension, written to a temporary file beside the target and renamed into place,
//! so a reader never sees half a file and a link at the target is replaced, not written through.
//!
//! Cells are JSON values: JSONL writes them as they are (a boolean stays a boolean, a list a
//! list); CSV writes text, a list joined with `;`. Both files are for people as well as for
//! `run`, so every text cell has its control characters and bidirectional overrides escaped (a
//! `displayName` from Graph may hold ESC, BEL, CR/LF or U+202E, issue 16), and in CSV every
//! formula-like cell gets a `'` (ids too), which the tool's CSV reader takes off again: the file
//! opens safely in a spreadsheet and runs as it is.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::Value;

use super::journal::sync_parent_dir;
use super::record::{ResultsFormat, csv_line};
use crate::sanitize::escape_controls;

/// Writes `rows` (cells aligned with `columns`) to `target`.
pub(crate) fn write_sheet(
    target: &Path,
    columns: &[String],
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> io::Result<()> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".graph-remediate-")
        .tempfile_in(dir)?;
    let mut out = BufWriter::new(temp.as_file());
    match ResultsFormat::from_path(target) {
        ResultsFormat::Csv => {
            let names: Vec<String> = columns.iter().map(|c| escape_controls(c).into()).collect();
            out.write_all(&csv_line(names.iter().map(String::as_str))?)?;
            for row in rows {
                let cells: Vec<String> = row.iter().map(cell_text).collect();
                out.write_all(&csv_line(cells.iter().map(String::as_str))?)?;
            }
        }
        ResultsFormat::Jsonl => {
            for row in rows {
                let mut object = serde_json::Map::new();
                for (name, value) in columns.iter().zip(row) {
                    object
                        .entry(escape_controls(name).into_owned())
                        .or_insert(escaped(value));
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

/// A JSON cell with its text escaped.
fn escaped(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(escape_controls(&text).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(escaped).collect()),
        other => other,
    }
}

/// A cell as CSV text, escaped.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => escape_controls(text).into_owned(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_are_text_and_jsonl_keeps_types() {
        let dir = tempfile::tempdir().unwrap();
        let columns = ["id", "isEnabled", "offeredActions", "note"].map(String::from);
        let row = vec![
            json!("=id"),
            json!(true),
            json!(["disable", "forcePasswordReset"]),
            json!("=HYPERLINK(1)"),
        ];
        let csv = dir.path().join("out.csv");
        write_sheet(&csv, &columns, [row.clone()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "id,isEnabled,offeredActions,note\r\n'=id,true,disable;forcePasswordReset,'=HYPERLINK(1)\r\n"
        );
        let jsonl = dir.path().join("out.jsonl");
        write_sheet(&jsonl, &columns, [row]).unwrap();
        let written: Value =
            serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().trim()).unwrap();
        assert_eq!(written["isEnabled"], true);
        assert_eq!(written["offeredActions"][1], "forcePasswordReset");
        assert_eq!(written["note"], "=HYPERLINK(1)");
    }

    #[test]
    fn issue_16_control_characters_are_escaped_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let columns = ["displayName", "offeredActions"].map(String::from);
        let hostile = "Eve\u{1b}[2J\u{7}\r\nFAKE\u{202e}txt.exe";
        let shown = r"Eve\u{1b}[2J\u{7}\u{d}\u{a}FAKE\u{202e}txt.exe";
        let row = vec![json!(hostile), json!(["disable\u{1b}[31m"])];
        let csv = dir.path().join("out.csv");
        write_sheet(&csv, &columns, [row.clone()]).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(!text.contains(['\u{1b}', '\u{7}', '\u{202e}']), "{text:?}");
        assert!(text.contains(shown), "{text}");
        assert_eq!(text.lines().count(), 2, "no line of its own: {text:?}");
        let jsonl = dir.path().join("out.jsonl");
        write_sheet(&jsonl, &columns, [row]).unwrap();
        let text = std::fs::read_to_string(&jsonl).unwrap();
        assert!(
            !text.contains('\u{202e}'),
            "JSON leaves U+202E raw: {text:?}"
        );
        let written: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(written["displayName"], shown);
        assert_eq!(written["offeredActions"][0], r"disable\u{1b}[31m");
    }
}
