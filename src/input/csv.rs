//! CSV rows: delimiter detection from the header line, BOM and CRLF (handled by the csv crate),
//! quoted fields, ragged rows and invalid UTF-8 reported per line.

use std::io::{BufRead, BufReader, Read};

use crate::sanitize::{printable, unquote_formula};

use super::{
    FIELDS, Field, InputError, InputOptions, RawRow, Row, RowError, build_row, missing_columns,
};

pub(crate) struct CsvRows {
    reader: csv::Reader<BufReader<Box<dyn Read + Send>>>,
    record: csv::ByteRecord,
    file: String,
    options: InputOptions,
    /// Where each of the four fields sits in a record.
    positions: [Option<usize>; FIELDS],
    /// (position, name) of every other column, in header order.
    carry: Vec<(usize, String)>,
    carry_names: Vec<String>,
    header_len: usize,
}

impl CsvRows {
    pub(crate) fn new(
        mut input: BufReader<Box<dyn Read + Send>>,
        file: &str,
        options: &InputOptions,
    ) -> Result<CsvRows, InputError> {
        let io_error = |cause| InputError::Io {
            file: file.to_owned(),
            cause,
        };
        let delimiter = match options.delimiter {
            Some(delimiter) => delimiter,
            None => detect_delimiter(input.fill_buf().map_err(io_error)?),
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(input);
        let mut header = csv::ByteRecord::new();
        match reader.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => {
                return Err(InputError::Empty {
                    file: file.to_owned(),
                });
            }
            Err(e) => return Err(csv_error(file, e)),
        }
        let line = header.position().map_or(1, |p| p.line());
        let header_error = |reason: String| InputError::Header {
            file: file.to_owned(),
            line,
            reason,
        };

        let mut positions: [Option<usize>; FIELDS] = [None; FIELDS];
        let mut carry = Vec::new();
        for (index, cell) in header.iter().enumerate() {
            let name = std::str::from_utf8(cell)
                .map_err(|_| {
                    header_error(format!(
                        "column {} of the header is not valid UTF-8; save the file as UTF-8",
                        index + 1
                    ))
                })?
                .trim();
            match Field::from_header(name) {
                Some(field) => {
                    if let Some(first) = positions[field as usize] {
                        // Exports often carry two columns of one kind (AccountSid and
                        // InitiatingProcessAccountSid): which one names the person is the
                        // responder's call, as Defender's own actions ask for one column.
                        let first_name = std::str::from_utf8(header.get(first).unwrap_or_default())
                            .unwrap_or_default()
                            .trim();
                        return Err(header_error(format!(
                            "columns {} ({}) and {} ({}) both name \"{}\"; keep one (rename or remove the other)",
                            first + 1,
                            printable(first_name),
                            index + 1,
                            printable(name),
                            field.name()
                        )));
                    }
                    positions[field as usize] = Some(index);
                    if field.is_carried() {
                        carry.push((index, name.to_owned()));
                    }
                }
                None => {
                    let name = if name.is_empty() {
                        format!("column{}", index + 1)
                    } else {
                        name.to_owned()
                    };
                    carry.push((index, name));
                }
            }
        }
        let found = positions.map(|p| p.is_some());
        let missing = missing_columns(&found, options);
        if !missing.is_empty() {
            let mut reason = missing.join("; ");
            if header.len() == 1 && options.delimiter.is_none() {
                reason.push_str(
                    " (the header has a single column: is the delimiter one of , ; or tab? set it with --delimiter)",
                );
            }
            return Err(header_error(reason));
        }
        let carry_names = carry.iter().map(|(_, name)| name.clone()).collect();
        Ok(CsvRows {
            reader,
            record: csv::ByteRecord::new(),
            file: file.to_owned(),
            options: options.clone(),
            positions,
            header_len: header.len(),
            carry,
            carry_names,
        })
    }

    pub(crate) fn carry_columns(&self) -> &[String] {
        &self.carry_names
    }

    pub(crate) fn next_row(&mut self) -> Option<Result<Result<Row, RowError>, InputError>> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    // Only I/O errors reach here: with `flexible` set, the csv crate reports
                    // no other error kind for byte records.
                    return Some(Err(csv_error(&self.file, e)));
                }
            }
            // Spreadsheets often end in rows of bare delimiters; they hold no account.
            if self.record.iter().all(|cell| cell.trim_ascii().is_empty()) {
                continue;
            }
            return Some(Ok(self.current_row()));
        }
    }

    fn current_row(&self) -> Result<Row, RowError> {
        let line = self.record.position().map_or(0, |p| p.line());
        if self.record.len() != self.header_len {
            return Err(RowError {
                line,
                reason: format!(
                    "has {} fields but the header has {}; check for a stray delimiter or an unclosed quote",
                    self.record.len(),
                    self.header_len
                ),
            });
        }
        // The `'` this tool puts before a formula-like cell in a file for people is taken off:
        // what `resolve` and the undo file write runs as it is (issue 16).
        let cell = |index: usize| -> Result<&str, RowError> {
            let bytes = self.record.get(index).unwrap_or_default();
            std::str::from_utf8(bytes)
                .map(unquote_formula)
                .map_err(|_| RowError {
                    line,
                    reason: format!(
                        "column {} is not valid UTF-8; save the file as UTF-8",
                        index + 1
                    ),
                })
        };
        let mut values: [Option<&str>; FIELDS] = [None; FIELDS];
        for (slot, position) in values.iter_mut().zip(self.positions) {
            if let Some(index) = position {
                *slot = Some(cell(index)?);
            }
        }
        let carry = self
            .carry
            .iter()
            .map(|(index, _)| cell(*index).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        build_row(RawRow { line, values }, carry, &self.options)
    }
}

fn csv_error(file: &str, error: csv::Error) -> InputError {
    let line = error.position().map_or(0, |p| p.line());
    match error.into_kind() {
        csv::ErrorKind::Io(cause) => InputError::Io {
            file: file.to_owned(),
            cause,
        },
        other => InputError::Header {
            file: file.to_owned(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

/// Picks `,`, `;` or tab: whichever occurs most often outside quotes on the first line.
/// Excel in many European locales writes `;`; "Unicode text" exports use tab.
pub(crate) fn detect_delimiter(start: &[u8]) -> u8 {
    let first_line = start.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut counts = [0usize; 3];
    let mut in_quotes = false;
    for byte in first_line {
        match byte {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => counts[0] += 1,
            b';' if !in_quotes => counts[1] += 1,
            b'\t' if !in_quotes => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|i| (counts[*i], 2 - i)).unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_delimiter_from_the_header_line() {
        assert_eq!(detect_delimiter(b"a,b,c\n1;2;3;4;5"), b',');
        assert_eq!(detect_delimiter(b"\xEF\xBB\xBFa;b;c\r\n"), b';');
        assert_eq!(detect_delimiter(b"a\tb\tc"), b'\t');
        assert_eq!(detect_delimiter(b"\"x,y\";b;c"), b';');
        assert_eq!(detect_delimiter(b"single"), b',');
        assert_eq!(detect_delimiter(b""), b',');
    }
}
