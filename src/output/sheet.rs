//! Writing a file this tool reads as input (the undo file, `resolve`'s output): CSV or JSONL by
//! the target's extension, written to a temporary file beside the target and renamed into place,
//! so a reader never sees half a file and a link at the target is replaced, not written through.
//!
//! Cells are JSON values: JSONL writes them as they are (a boolean stays a boolean, a list a
//! list); CSV writes text, a list joined with `;`. The cells Graph will receive (`raw`) are
//! written exactly; others are made spreadsheet-safe like the results (a formula gets a `'`).

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::Value;

use super::journal::{ResultsFormat, csv_line, sync_parent_dir};

/// Writes `rows` (cells aligned with `columns`) to `target`.
pub(crate) fn write_sheet(
    target: &Path,
    columns: &[String],
    raw: &[usize],
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
            out.write_all(&csv_line(columns.iter().map(String::as_str), &[])?)?;
            for row in rows {
                let cells: Vec<String> = row.iter().map(cell_text).collect();
                out.write_all(&csv_line(cells.iter().map(String::as_str), raw)?)?;
            }
        }
        ResultsFormat::Jsonl => {
            for row in rows {
                let mut object = serde_json::Map::new();
                for (name, value) in columns.iter().zip(row) {
                    object.entry(name.clone()).or_insert(value);
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

/// A cell as CSV text.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
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
        write_sheet(&csv, &columns, &[0], [row.clone()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "id,isEnabled,offeredActions,note\r\n=id,true,disable;forcePasswordReset,'=HYPERLINK(1)\r\n"
        );
        let jsonl = dir.path().join("out.jsonl");
        write_sheet(&jsonl, &columns, &[0], [row]).unwrap();
        let written: Value =
            serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().trim()).unwrap();
        assert_eq!(written["isEnabled"], true);
        assert_eq!(written["offeredActions"][1], "forcePasswordReset");
        assert_eq!(written["note"], "=HYPERLINK(1)");
    }
}
