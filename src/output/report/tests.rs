//! Unit tests of the report: escaping in both formats, hiding tokens, gathering the records
//! (grouping failures by code, the last record of a row counting, the row cap), and the snapshot.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::markdown::{code_block, escape};
use super::*;

/// Writes `records` (JSON values, one a line) as `name` in `dir`.
fn write_jsonl(dir: &Path, name: &str, records: &[serde_json::Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A results record for input line `row`.
fn record(row: u64, status: &str, code: Option<&str>) -> serde_json::Value {
    json!({
        "correlationId": format!("corr-{row}"),
        "row": row,
        "identityAccountId": format!("ia-{row}"),
        "accountId": format!("acc-{row}"),
        "action": "disable",
        "identityProvider": "activeDirectory",
        "status": status,
        "httpStatus": if status == "succeeded" { json!(200) } else { json!(null) },
        "attempts": 1,
        "errorCode": code,
        "errorMessage": code.map(|c| format!("message for {c}")),
        "requestId": format!("req-{row}"),
        "clientRequestId": null,
        "startedAt": format!("2026-01-01T00:00:{:02}.000Z", row % 60),
        "finishedAt": format!("2026-01-01T00:01:{:02}.000Z", row % 60),
        "resolvedBy": null,
        "upn": format!("user{row}@contoso.com"),
    })
}

const HOSTILE: &str = "<script>alert(1)</script> a|b `tick` \u{1b}[31mred\nnext [x](http://e.test) ![i](http://e.test/i.png)";

#[test]
fn markdown_escape_keeps_a_value_inside_its_table_cell() {
    let cell = escape(HOSTILE);
    assert!(!cell.contains('\u{1b}'), "{cell}");
    assert!(!cell.contains('\n'), "{cell}");
    assert!(cell.contains("\\u{1b}"), "the escape shows: {cell}");
    // Every `|` and backtick is escaped, so none ends the cell or opens a code span.
    let bytes = cell.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        if matches!(byte, b'|' | b'`' | b'<' | b'[' | b'!') {
            assert_eq!(
                bytes[at - 1],
                b'\\',
                "{} unescaped at {at}: {cell}",
                *byte as char
            );
        }
    }
    assert_eq!(escape("plain text 1.2"), "plain text 1.2");
}

#[test]
fn a_code_block_fence_outlasts_any_backticks_inside() {
    let block = code_block("graph-remediate run 'a````b.csv'\u{7}");
    let first = block.lines().next().unwrap();
    assert_eq!(first, "`````text");
    assert!(block.ends_with("\n`````\n"), "{block}");
    assert!(!block.contains('\u{7}'), "{block}");
    assert_eq!(block.lines().count(), 3, "one line of text: {block}");
}

#[test]
fn tokens_are_hidden_and_ordinary_words_are_not() {
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2lnbmF0dXJl";
    assert_eq!(
        hide_tokens(&format!("token={jwt} rest")),
        format!("token={TOKEN_SHOWN_AS} rest")
    );
    assert_eq!(
        hide_tokens("Authorization: Bearer abcdefghijklmnop0123, next"),
        format!("Authorization: Bearer {TOKEN_SHOWN_AS}, next")
    );
    for ordinary in [
        "the bearer of bad news",
        "eyJ is short",
        "keyJar.eyJsomething",
        "Bearer short",
        "näme eyJ",
    ] {
        assert_eq!(hide_tokens(ordinary), ordinary);
    }
    // Both formats hide it.
    assert!(!escape(jwt).contains("eyJ"));
    assert!(!shown(&format!("x {jwt}")).contains("eyJhdWQ"));
}

#[test]
fn lines_are_shown_as_ranges_with_the_rest_counted() {
    let lines = Lines::from_unsorted(vec![9, 2, 3, 4, 5, 11, 12]);
    assert_eq!(lines.text(), "2-5, 9, 11-12");
    let many = Lines::from_unsorted((1..=MAX_LISTED_LINES as u64 + 5).map(|l| l * 2).collect());
    assert_eq!(many.listed.len(), MAX_LISTED_LINES);
    assert!(many.text().ends_with(", and 5 more"), "{}", many.text());
}

#[test]
fn failures_are_grouped_by_code_most_frequent_first_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(
        dir.path(),
        "r.jsonl",
        &[
            record(2, "succeeded", None),
            record(3, "failed", Some("identityNotFound")),
            record(4, "failed", Some("accessDenied")),
            record(5, "failed", Some("identityNotFound")),
            record(6, "skipped", None),
            record(7, "not_attempted", None),
            record(8, "failed", Some("somethingNew")),
            {
                // No errorCode: grouped by the HTTP status, as the summary does.
                let mut r = record(9, "failed", None);
                r["httpStatus"] = json!(500);
                r
            },
        ],
    );
    let report = gather(&results).unwrap();
    let counts = &report.counts;
    assert_eq!(
        (
            counts.succeeded,
            counts.failed,
            counts.skipped,
            counts.not_attempted
        ),
        (1, 5, 1, 1)
    );
    let codes: Vec<(&str, u64, String)> = report
        .failures
        .iter()
        .map(|g| (g.code.as_str(), g.count, g.lines.text()))
        .collect();
    assert_eq!(
        codes,
        [
            ("identityNotFound", 2, "3, 5".to_owned()),
            ("HTTP 500", 1, "9".to_owned()),
            ("accessDenied", 1, "4".to_owned()),
            ("somethingNew", 1, "8".to_owned()),
        ]
    );
    let not_found = &report.failures[0];
    assert_eq!(not_found.example, "message for identityNotFound");
    assert_eq!(
        not_found.hint,
        crate::output::summary::code_hint("identityNotFound")
    );
    assert!(not_found.hint.is_some());
    assert!(
        report.failures[3].hint.is_none(),
        "no advice for an unknown code"
    );
    assert_eq!(report.not_attempted.text(), "7");
    assert_eq!(report.undoable, 1);
    // The person comes from the carried upn column.
    assert_eq!(report.rows[0].person(), "user2@contoso.com");

    let md = markdown::render(&report);
    assert!(md.contains("### identityNotFound (2 rows)"), "{md}");
    assert!(md.contains("- Lines: 3, 5"), "{md}");
    let page = html::render(&report);
    assert!(page.contains("identityNotFound"), "{page}");
}

#[test]
fn a_row_counts_by_its_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(
        dir.path(),
        "r.jsonl",
        &[
            record(2, "failed", Some("serviceNotAvailable")),
            record(3, "succeeded", None),
            record(2, "succeeded", None),
        ],
    );
    let report = gather(&results).unwrap();
    assert_eq!((report.counts.succeeded, report.counts.failed), (2, 0));
    assert!(report.failures.is_empty());
    assert_eq!(report.superseded_records, 1);
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.rows[0].status, RowStatus::Succeeded);
}

#[test]
fn a_later_record_that_sent_nothing_does_not_take_back_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(
        dir.path(),
        "r.jsonl",
        &[
            record(2, "succeeded", None),
            // A resumed run whose lookup refused the now-disabled account.
            record(2, "failed", Some("actionNotOffered")),
        ],
    );
    let report = gather(&results).unwrap();
    assert_eq!((report.counts.succeeded, report.counts.failed), (1, 0));
    assert_eq!(report.undoable, 1);
    assert_eq!(report.rows[0].status, RowStatus::Succeeded);
    assert_eq!(report.superseded_records, 1);
}

#[test]
fn bad_lines_are_named_by_file_and_line_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    std::fs::write(
        &path,
        format!(
            "{}\n{{\"row\":3,\"status\":\"perhaps\"}}\n\n{{\"cut short\n",
            record(2, "succeeded", None)
        ),
    )
    .unwrap();
    let report = gather(&path).unwrap();
    assert_eq!(report.counts.rows(), 1);
    let lines: Vec<u64> = report.bad_records.named.iter().map(|b| b.line).collect();
    assert_eq!(lines, [2, 4]);
    let notes = report.missing().join("\n");
    assert!(
        notes.contains("r.jsonl:2 (unknown variant `perhaps`, expected one of `succeeded`"),
        "{notes}"
    );
    assert!(notes.contains("r.jsonl:4 (not JSON"), "{notes}");

    // Nothing but bad lines: no report, and the message names the first line.
    std::fs::write(&path, "\n\nnot json\n").unwrap();
    let error = gather(&path).unwrap_err().to_string();
    assert!(
        error.contains("r.jsonl:3: not a graph-remediate results file"),
        "{error}"
    );
    let csv = dir.path().join("r.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let error = gather(&csv).unwrap_err().to_string();
    assert!(error.contains("r.csv:1:"), "{error}");
}

#[test]
fn csv_results_are_read_with_the_spreadsheet_quote_taken_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    let header = crate::output::record::FIELDS.join(",");
    std::fs::write(
        &path,
        format!(
            "{header},displayName\n\
             c1,2,ia-2,acc-2,disable,okta,failed,404,1,itemNotFound,gone,q1,,,,,,,'=cmd|x\n\
             c2,3,ia-3,acc-3,disable,okta,succeeded,200,1,,,q2,,,,,,,\"two\nlines\"\n\
             c3,4,too,few\n"
        ),
    )
    .unwrap();
    let report = gather(&path).unwrap();
    assert_eq!(report.rows.len(), 2);
    assert_eq!(report.rows[0].display_name, "=cmd|x");
    assert_eq!(report.rows[0].error_code, "itemNotFound");
    assert_eq!(report.rows[1].display_name, "two\nlines");
    assert_eq!(report.bad_records.count, 1);
    assert_eq!(
        report.bad_records.named[0].line, 5,
        "the line the record starts on"
    );
    let md = markdown::render(&report);
    assert!(md.contains("=cmd\\|x"), "{md}");
    // The escape shows as `\u{a}`: its backslash is escaped for Markdown.
    assert!(md.contains("two\\\\u{a}lines"), "{md}");
}

#[test]
fn the_rows_table_lists_the_first_rows_by_line_and_says_how_many_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let total = MAX_LISTED_ROWS as u64 + 7;
    // Written last line first, as a concurrent run may finish them.
    let records: Vec<_> = (2..total + 2)
        .rev()
        .map(|row| record(row, "succeeded", None))
        .collect();
    let results = write_jsonl(dir.path(), "big.jsonl", &records);
    let report = gather(&results).unwrap();
    assert_eq!(report.counts.succeeded, total);
    assert_eq!(report.rows.len(), MAX_LISTED_ROWS);
    assert_eq!(report.rows[0].line, 2);
    assert_eq!(
        report.rows.last().map(|r| r.line),
        Some(MAX_LISTED_ROWS as u64 + 1)
    );
    let note = report.rows_cut().expect("a note");
    assert!(
        note.starts_with(&format!(
            "The first {MAX_LISTED_ROWS} rows of {total} are listed"
        )),
        "{note}"
    );
    assert!(note.contains("big.jsonl"), "{note}");
}

#[test]
fn the_snapshot_gives_the_person_and_the_state_before() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(
        dir.path(),
        "r.jsonl",
        &[record(2, "succeeded", None), record(3, "succeeded", None)],
    );
    let identity = |id: &str, enabled: bool| {
        json!({
            "identityAccountId": id,
            "readAt": "2026-01-01T00:00:00.000Z",
            "identity": {
                "id": id,
                "displayName": format!("Person {id}"),
                "isEnabled": enabled,
                "userPrincipalName": format!("{id}@contoso.com"),
                "accounts": [
                    {"identifier": "other", "identityProvider": "okta", "actions": ["suspend"]},
                    {"identifier": format!("acc-{}", &id[3..]), "identityProvider": "activeDirectory",
                     "actions": ["disable", "forcePasswordReset"]},
                ],
            },
        })
    };
    write_jsonl(
        dir.path(),
        "r.identities.jsonl",
        &[
            identity("ia-2", true),
            json!("not an identity"),
            // A later line for the same identity (a resumed run) does not replace the first.
            identity("ia-2", false),
        ],
    );
    let report = gather(&results).unwrap();
    assert_eq!(report.snapshot, Found::Read(2));
    assert_eq!(report.bad_snapshot_lines.count, 1);
    assert_eq!(report.rows[0].person(), "Person ia-2 (ia-2@contoso.com)");
    assert_eq!(
        report.rows[0].before_text(),
        "enabled; offered disable, forcePasswordReset"
    );
    assert_eq!(
        report.rows[1].person(),
        "user3@contoso.com",
        "from the carried column"
    );
    assert_eq!(report.rows[1].before_text(), "");
}

#[test]
fn what_is_missing_is_said_and_the_report_still_renders() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(dir.path(), "r.jsonl", &[record(2, "succeeded", None)]);
    let report = gather(&results).unwrap();
    assert_eq!(report.lock, Found::Missing);
    assert_eq!(report.snapshot, Found::Missing);
    let notes = report.missing().join("\n");
    assert!(notes.contains("No lock file"), "{notes}");
    assert!(notes.contains("No identity snapshot"), "{notes}");
    std::fs::write(dir.path().join("r.jsonl.lock"), "{not json").unwrap();
    let report = gather(&results).unwrap();
    assert!(matches!(report.lock, Found::Unreadable(_)));
    assert!(markdown::render(&report).contains("could not be read"));
    assert!(html::render(&report).contains("could not be read"));
}

#[test]
fn html_escapes_every_value_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut hostile = record(2, "failed", Some("<img src=x onerror=alert(1)>"));
    hostile["upn"] = json!(HOSTILE);
    let results = write_jsonl(dir.path(), "r.jsonl", &[hostile]);
    let page = html::render(&gather(&results).unwrap());
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains('\u{1b}'), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(page.contains("\\u{1b}[31mred\\u{a}next"), "{page}");
    assert!(
        !page.contains("http://e.test/i.png\""),
        "no attribute holds a value"
    );
}

#[test]
fn the_undo_advice_names_the_undo_file_or_how_to_write_one() {
    let dir = tempfile::tempdir().unwrap();
    let results = write_jsonl(dir.path(), "r.jsonl", &[record(2, "succeeded", None)]);
    let mut report = gather(&results).unwrap();
    let (sentence, command) = report.undo_steps();
    assert!(
        sentence.starts_with("No undo file was written"),
        "{sentence}"
    );
    assert!(
        command.unwrap().ends_with("--undo-file undo.csv"),
        "report writes one"
    );
    report.undo = UndoAdvice::Ready {
        path: PathBuf::from("my undo.csv"),
        rows: Some(1),
        written_now: true,
    };
    let (sentence, command) = report.undo_steps();
    assert!(sentence.contains("this report wrote"), "{sentence}");
    assert_eq!(
        command.as_deref(),
        Some("graph-remediate run 'my undo.csv'")
    );
}

#[test]
fn error_codes_past_the_cap_are_counted_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let extra = 3;
    let records: Vec<_> = (0..MAX_LISTED_GROUPS as u64 + extra)
        .map(|i| {
            let code = format!("code{i:04}");
            record(i + 2, "failed", Some(&code))
        })
        .collect();
    let results = write_jsonl(dir.path(), "r.jsonl", &records);
    let report = gather(&results).unwrap();
    assert_eq!(report.failures.len(), MAX_LISTED_GROUPS);
    assert_eq!(report.more_failures, (extra, extra));
    let note = report.failures_cut().expect("a note");
    assert!(note.starts_with("3 more error code(s), 3 row(s)"), "{note}");
    assert!(markdown::render(&report).contains("3 more error code(s)"));
    assert!(html::render(&report).contains("3 more error code(s)"));
}

#[test]
fn issue_16_failure_groups_past_the_kept_codes_are_counted_and_the_frequent_ones_still_named() {
    let dir = tempfile::tempdir().unwrap();
    let rare = MAX_KEPT_CODES as u64 * 2;
    // Rare codes first (one row each), then a frequent code and a second one seen only late.
    let mut records: Vec<_> = (0..rare)
        .map(|i| record(i + 2, "failed", Some(&format!("rare{i:05}"))))
        .collect();
    for i in 0..5 {
        records.push(record(rare + 2 + i, "failed", Some("lateAndFrequent")));
    }
    for i in 0..3 {
        records.push(record(rare + 10 + i, "failed", Some("lateToo")));
    }
    let results = write_jsonl(dir.path(), "r.jsonl", &records);
    let report = gather(&results).unwrap();
    assert_eq!(report.failures.len(), MAX_LISTED_GROUPS);
    let first = &report.failures[0];
    assert_eq!((first.code.as_str(), first.count), ("lateAndFrequent", 5));
    assert_eq!(first.example, "message for lateAndFrequent");
    assert_eq!(first.lines.listed, (rare + 2..rare + 7).collect::<Vec<_>>());
    assert_eq!(
        (report.failures[1].code.as_str(), report.failures[1].count),
        ("lateToo", 3)
    );
    // Ties in the order first seen, once not every code was kept.
    assert_eq!(report.failures[2].code, "rare00000");
    let listed_rare = MAX_LISTED_GROUPS as u64 - 2;
    assert_eq!(
        report.more_failures,
        (rare - listed_rare, rare - listed_rare)
    );
    assert_eq!(report.counts.failed, rare + 8);
}
