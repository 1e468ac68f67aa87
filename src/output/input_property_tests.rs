//! Property test: whatever bytes arrive, the input readers return rows or errors, never a panic,
//! and nothing `validate` and `run` print about them holds a control character. It lives here,
//! beside the plan's rendering, so that `input` depends on nothing in `output`.

use proptest::prelude::*;

use crate::input::plan::{Checker, Unlisted};
use crate::input::{InputFormat, InputOptions, RowReader};

fn read_all(bytes: Vec<u8>, format: InputFormat, delimiter: Option<u8>) {
    let options = InputOptions {
        delimiter,
        ..InputOptions::default()
    };
    let Ok(mut rows) = RowReader::from_reader(
        Box::new(std::io::Cursor::new(bytes)),
        format,
        "fuzz",
        &options,
    ) else {
        return;
    };
    let mut checker = Checker::new("fuzz", Some(format), Unlisted::Allow);
    for row in rows.by_ref() {
        match row {
            Ok(Ok(row)) => match row.as_given() {
                Some(job) => {
                    let _ = checker.check(&job);
                }
                None => checker.defer(row.action, row.accounts),
            },
            Ok(Err(error)) => checker.reject(error),
            Err(_) => break,
        }
    }
    let plan = checker.finish(rows.carry_columns());
    // What validate and run print about the input: no escape sequence from the file reaches
    // the terminal (issue 10).
    let printed = super::plan::render_text(&plan) + &super::plan::render_errors(&plan);
    assert!(
        !printed.chars().any(|c| c.is_control() && c != '\n'),
        "{printed:?}"
    );
}

/// Bytes biased towards the characters that matter to the parsers.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = prop_oneof![
        Just(b','),
        Just(b';'),
        Just(b'\t'),
        Just(b'"'),
        Just(b'\n'),
        Just(b'\r'),
        Just(b'{'),
        Just(b'}'),
        Just(b'['),
        Just(b':'),
        Just(b'/'),
        Just(b'%'),
        Just(0xEF),
        Just(0xBB),
        Just(0xBF),
        Just(0xFF),
        Just(0x00),
        Just(0x1b),
        any::<u8>(),
    ];
    prop::collection::vec(alphabet, 0..512)
}

const HEADER: &[u8] = b"identityAccountId,accountId,action,identityProvider,note\n";
const JSON_START: &[u8] = br#"{"identityAccountId":"a","accountId":"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic_the_csv_reader(bytes in interesting_bytes()) {
        read_all(bytes.clone(), InputFormat::Csv, None);
        read_all(bytes, InputFormat::Csv, Some(b';'));
    }

    #[test]
    fn arbitrary_rows_under_a_good_header_never_panic(body in interesting_bytes()) {
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&body);
        read_all(bytes, InputFormat::Csv, None);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_jsonl_reader(bytes in interesting_bytes()) {
        read_all(bytes.clone(), InputFormat::Jsonl, None);
        let mut prefixed = JSON_START.to_vec();
        prefixed.extend_from_slice(&bytes);
        read_all(prefixed, InputFormat::Jsonl, None);
    }
}
