//! JSONL rows: one JSON object a line. Keys are matched like CSV headers; other keys are carried
//! through, in first-seen order across the file.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufReader, Read};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::sanitize::printable;

use super::{
    FIELDS, Field, InputError, InputOptions, Line, MAX_CARRY_COLUMNS, MAX_LINE, RawRow, Row,
    RowError, build_row, read_line,
};

pub(crate) struct JsonlRows {
    input: BufReader<Box<dyn Read + Send>>,
    buf: Vec<u8>,
    line: u64,
    file: String,
    options: InputOptions,
    carry_names: Vec<String>,
    carry_index: HashMap<String, usize>,
    /// Once fixed (second pass of a run), a key outside the list is an error rather than a new column.
    carry_fixed: bool,
    field_cache: HashMap<String, Option<Field>>,
}

impl JsonlRows {
    pub(crate) fn new(
        input: BufReader<Box<dyn Read + Send>>,
        file: &str,
        options: &InputOptions,
    ) -> JsonlRows {
        JsonlRows {
            input,
            buf: Vec::with_capacity(1024),
            line: 0,
            file: file.to_owned(),
            options: options.clone(),
            carry_names: Vec::new(),
            carry_index: HashMap::new(),
            carry_fixed: false,
            field_cache: HashMap::new(),
        }
    }

    pub(crate) fn set_carry_columns(&mut self, columns: Vec<String>) {
        self.carry_index = columns
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        self.carry_names = columns;
        self.carry_fixed = true;
    }

    pub(crate) fn carry_columns(&self) -> &[String] {
        &self.carry_names
    }

    pub(crate) fn next_row(&mut self) -> Option<Result<Result<Row, RowError>, InputError>> {
        loop {
            match read_line(&mut self.input, &mut self.buf, MAX_LINE) {
                Ok(Line::End) => return None,
                Ok(Line::Read) => {}
                Ok(Line::TooLong) => {
                    self.line += 1;
                    return Some(Ok(Err(RowError {
                        line: self.line,
                        reason: format!(
                            "the line is longer than {} KiB; is this the right file?",
                            MAX_LINE / 1024
                        ),
                    })));
                }
                Err(source) => {
                    return Some(Err(InputError::Io {
                        file: self.file.clone(),
                        cause: source,
                    }));
                }
            }
            self.line += 1;
            let buf = std::mem::take(&mut self.buf);
            let mut text = buf.as_slice();
            if self.line == 1 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            let row = (!text.trim_ascii().is_empty()).then(|| self.parse_line(text));
            self.buf = buf;
            if let Some(row) = row {
                return Some(Ok(row));
            }
        }
    }

    fn parse_line(&mut self, text: &[u8]) -> Result<Row, RowError> {
        let line = self.line;
        let error = |reason: String| RowError { line, reason };
        let text = std::str::from_utf8(text)
            .map_err(|_| error("not valid UTF-8; save the file as UTF-8".to_owned()))?;
        if !text.trim_start().starts_with('{') {
            return Err(error(
                "not a JSON object: write one {...} object per line".to_owned(),
            ));
        }
        let object = match serde_json::from_str::<OrderedObject>(text) {
            Ok(object) => object.0,
            Err(e) => {
                // serde_json appends "at line L column C"; within one line only the column helps.
                let message = e.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(head, _)| head);
                return Err(error(format!(
                    "not valid JSON at column {}: {message}",
                    e.column()
                )));
            }
        };

        let mut values: [Option<&str>; FIELDS] = [None; FIELDS];
        // Fields already reported as malformed, so "missing" is not said of them as well.
        let mut malformed = [false; FIELDS];
        let mut carry = vec![String::new(); self.carry_names.len()];
        let mut problems = Vec::new();
        for (key, value) in &object {
            match self.field_of(key) {
                Some(field) => match value {
                    _ if values[field as usize].is_some() || malformed[field as usize] => {
                        problems.push(format!("\"{}\" is given twice", field.name()));
                    }
                    Value::String(text) => {
                        values[field as usize] = Some(text.as_str());
                        if field.is_carried() {
                            match self.carry_slot(key) {
                                Ok(index) => {
                                    if carry.len() <= index {
                                        carry.resize(index + 1, String::new());
                                    }
                                    carry[index] = text.clone();
                                }
                                Err(reason) => problems.push(reason),
                            }
                        }
                    }
                    // A JSON file says yes or no as a boolean.
                    Value::Bool(flag) if field == Field::AllAccounts => {
                        values[field as usize] = Some(if *flag { "true" } else { "false" });
                    }
                    other => {
                        malformed[field as usize] = true;
                        problems.push(format!(
                            "\"{}\" must be a string, found {}",
                            printable(key),
                            json_kind(other)
                        ));
                    }
                },
                None => match carry_text(value) {
                    Some(text) => match self.carry_slot(key) {
                        Ok(index) => {
                            if carry.len() <= index {
                                carry.resize(index + 1, String::new());
                            }
                            carry[index] = text;
                        }
                        Err(reason) => problems.push(reason),
                    },
                    None => problems.push(format!(
                        "\"{}\" must be a string, number or boolean, found {}",
                        printable(key),
                        json_kind(value)
                    )),
                },
            }
        }
        let row = build_row(RawRow { line, values }, carry, &self.options);
        if problems.is_empty() {
            return row;
        }
        if let Err(row) = row {
            let already_said = |reason: &str| {
                Field::ALL.into_iter().any(|field| {
                    malformed[field as usize] && reason == format!("missing \"{}\"", field.name())
                })
            };
            problems.extend(
                row.reason
                    .split("; ")
                    .filter(|reason| !already_said(reason))
                    .map(str::to_owned),
            );
        }
        Err(error(problems.join("; ")))
    }

    /// [`Field::from_header`], remembered per key: folding a name allocates, and the same few
    /// keys come on every line (the profile put this at a third of JSONL parsing).
    fn field_of(&mut self, key: &str) -> Option<Field> {
        if let Some(field) = self.field_cache.get(key) {
            return *field;
        }
        let field = Field::from_header(key);
        if self.field_cache.len() < MAX_CARRY_COLUMNS + 16 {
            self.field_cache.insert(key.to_owned(), field);
        }
        field
    }

    fn carry_slot(&mut self, key: &str) -> Result<usize, String> {
        if let Some(index) = self.carry_index.get(key) {
            return Ok(*index);
        }
        if self.carry_fixed {
            return Err(format!(
                "key \"{}\" was not in the file when it was checked; was the input changed?",
                printable(key)
            ));
        }
        if self.carry_names.len() >= MAX_CARRY_COLUMNS {
            return Err(format!(
                "more than {MAX_CARRY_COLUMNS} distinct keys in the file; is this the right input?"
            ));
        }
        let index = self.carry_names.len();
        self.carry_names.push(key.to_owned());
        self.carry_index.insert(key.to_owned(), index);
        Ok(index)
    }
}

/// Carry-through values are kept as text: strings as they are, numbers and booleans as written,
/// null as empty. Nested objects and arrays have no cell to go in.
fn carry_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON object's entries in file order, a key given twice included: `serde_json::Map` would
/// keep only the last, and the row check reports the repeat.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl fmt::Debug for OrderedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}
