//! `graph-remediate validate` over the samples and over a corpus of common mistakes
//! (tests/bad-inputs, one file per mistake): exit codes and the `FILE:LINE: reason` text.

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

fn validate(args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("graph-remediate")
        .unwrap()
        .arg("validate")
        .args(args)
        .assert()
}

#[test]
fn every_sample_but_the_bad_one_is_valid() {
    for sample in [
        "samples/accounts.csv",
        "samples/accounts.jsonl",
        "samples/excel-export.csv",
    ] {
        validate(&[sample])
            .success()
            .stdout(contains("OK: every row is valid"));
    }
}

#[test]
fn csv_and_jsonl_samples_give_the_same_plan() {
    let plan = |file: &str| {
        let out = validate(&[file, "--format", "json"])
            .success()
            .get_output()
            .stdout
            .clone();
        let mut value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("input");
        object.remove("format");
        value
    };
    let csv = plan("samples/accounts.csv");
    let mut jsonl = plan("samples/accounts.jsonl");
    // JSONL has no header line, so its line numbers are one lower.
    assert_eq!(jsonl["duplicates"]["shown"][0], 20);
    jsonl["duplicates"]["shown"][0] = 21.into();
    assert_eq!(csv, jsonl);
    assert_eq!(csv["rows"], 20);
    assert_eq!(csv["actions"], 19);
    assert_eq!(csv["accounts"], 18);
    assert_eq!(csv["duplicates"]["count"], 1);
    assert_eq!(csv["duplicates"]["shown"][0], 21);
    assert_eq!(
        csv["carryColumns"],
        serde_json::json!(["upn", "ticket", "note"])
    );
    assert_eq!(csv["ok"], true);
}

#[test]
fn excel_export_with_bom_crlf_semicolons_and_quoted_newlines_reads_cleanly() {
    let out = validate(&["samples/excel-export.csv", "--format", "json"])
        .success()
        .get_output()
        .stdout
        .clone();
    let plan: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(plan["rows"], 8);
    assert_eq!(plan["errors"]["count"], 0);
    // The BOM must not leak into the first header name, or identityAccountId would be "missing".
    assert_eq!(
        plan["carryColumns"],
        serde_json::json!(["UPN", "Ticket", "Note"])
    );
}

#[test]
fn bad_sample_lists_each_mistake_and_exits_2() {
    validate(&["samples/bad.csv"])
        .code(2)
        .stderr(contains("samples/bad.csv:3: empty \"action\""))
        .stderr(contains("samples/bad.csv:4: unknown action \"delete\""))
        .stderr(contains(
            "samples/bad.csv:5: unknown identity provider \"google\"",
        ))
        .stderr(contains(
            "samples/bad.csv:6: revokeAllSessions is not documented for activeDirectory",
        ))
        .stderr(contains(
            "samples/bad.csv:7: disable for entraID is not offered",
        ))
        .stderr(contains("samples/bad.csv:8: \"identityAccountId\""))
        .stderr(contains(
            "samples/bad.csv:9: has 5 fields but the header has 6",
        ))
        .stdout(contains("7 row error(s): nothing will be sent"));
}

/// One file per mistake: (file, expected `FILE:LINE: reason` fragment).
const CORPUS: &[(&str, &str)] = &[
    (
        "missing-column.csv",
        ":1: missing column \"action\": add it, or give --action",
    ),
    ("empty-cell.csv", ":3: empty \"action\""),
    ("unknown-action.csv", ":2: unknown action \"lock\""),
    (
        "unknown-provider.csv",
        ":2: unknown identity provider \"ping\"",
    ),
    (
        "unlisted-pair.csv",
        ":2: revokeAllSessions is not documented for activeDirectory",
    ),
    ("entra-id.csv", ":2: disable for entraID is not offered"),
    (
        "id-url-characters.csv",
        ":2: \"identityAccountId\" \"11111111-0000-4000-8000-000000000001/x\" holds '/'",
    ),
    (
        "id-url-characters.csv",
        ":3: \"identityAccountId\" \"11111111-0000-4000-8000-000000000002?x\" holds '?'",
    ),
    (
        "id-url-characters.csv",
        ":4: \"identityAccountId\" \"11111111-0000-4000-8000-000000000003#x\" holds '#'",
    ),
    (
        "id-url-characters.csv",
        ":5: \"identityAccountId\" \"11111111-0000-4000-8000-000000000004%2F\" holds '%'",
    ),
    (
        "control-character.csv",
        ":2: \"identityAccountId\" holds a control character (U+0007)",
    ),
    ("invalid-utf8.csv", ":2: column 5 is not valid UTF-8"),
    ("invalid-utf8.jsonl", ":1: not valid UTF-8"),
    ("ragged-row.csv", ":2: has 6 fields but the header has 5"),
    ("ragged-row.csv", ":3: has 3 fields but the header has 5"),
    ("not-an-object.jsonl", ":2: not a JSON object"),
    (
        "non-string-value.jsonl",
        ":1: \"accountId\" must be a string, found a number",
    ),
    ("invalid-json.jsonl", ":1: not valid JSON at column"),
    ("missing-key.jsonl", ":1: missing \"action\""),
];

#[test]
fn each_mistake_in_the_corpus_is_named_with_file_and_line() {
    for (file, expected) in CORPUS {
        let path = format!("tests/bad-inputs/{file}");
        validate(&[&path])
            .code(2)
            .stderr(contains(format!("{path}{expected}")));
    }
}

#[test]
fn every_corpus_file_is_covered() {
    let mut files: Vec<String> = std::fs::read_dir("tests/bad-inputs")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    files.dedup();
    for file in files {
        assert!(
            CORPUS.iter().any(|(name, _)| *name == file),
            "{file} has no expectation in CORPUS"
        );
    }
}

#[test]
fn a_good_row_beside_bad_ones_is_still_counted_but_nothing_is_ok() {
    validate(&["tests/bad-inputs/empty-cell.csv", "--format", "json"])
        .code(2)
        .stdout(contains("\"ok\":false"))
        .stdout(contains("\"actions\":1"));
}

#[test]
fn allow_unlisted_lets_unlisted_pairs_through_with_a_warning() {
    validate(&["tests/bad-inputs/unlisted-pair.csv", "--allow-unlisted"])
        .success()
        .stdout(contains(
            "which Microsoft does not document; sent anyway because of --allow-unlisted",
        ));
    validate(&["tests/bad-inputs/entra-id.csv", "--allow-unlisted"]).success();
}

#[test]
fn action_and_provider_flags_fill_missing_columns() {
    validate(&["tests/bad-inputs/missing-column.csv", "--action", "disable"])
        .success()
        .stdout(contains("disable"));
}

#[test]
fn stdin_needs_a_format_and_then_reads() {
    let csv = std::fs::read("samples/accounts.csv").unwrap();
    Command::cargo_bin("graph-remediate")
        .unwrap()
        .args(["validate", "-"])
        .write_stdin(csv.clone())
        .assert()
        .code(2)
        .stderr(contains("--input-format"));
    Command::cargo_bin("graph-remediate")
        .unwrap()
        .args(["validate", "-", "--input-format", "csv"])
        .write_stdin(csv)
        .assert()
        .success()
        .stdout(contains("<stdin> (csv): 20 rows"));
}

#[test]
fn opposing_actions_on_one_account_warn_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flip.csv");
    std::fs::write(
        &path,
        "identityAccountId,accountId,action,identityProvider\n\
         a1,S-1,disable,activeDirectory\n\
         b2,S-2,disable,activeDirectory\n\
         a1,S-1,enable,activeDirectory\n",
    )
    .unwrap();
    validate(&[path.to_str().unwrap()])
        .success()
        .stdout(contains(":4: account \"a1\" (S-1) gets enable here and disable on line 2; they will run in file order"));
}

#[test]
fn tab_and_forced_delimiters_work() {
    let dir = tempfile::tempdir().unwrap();
    let tab = dir.path().join("tabs.tsv");
    std::fs::write(
        &tab,
        "identityAccountId\taccountId\taction\tidentityProvider\nx\ty\tdisable\tokta\n",
    )
    .unwrap();
    validate(&[tab.to_str().unwrap()]).success();
    let pipes = dir.path().join("pipes.csv");
    std::fs::write(
        &pipes,
        "identityAccountId|accountId|action|identityProvider\nx|y|disable|okta\n",
    )
    .unwrap();
    validate(&[pipes.to_str().unwrap()])
        .code(2)
        .stderr(contains("single column"));
    validate(&[pipes.to_str().unwrap(), "--delimiter", "|"]).success();
}

#[test]
fn only_the_first_fifty_errors_are_listed_and_the_rest_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.csv");
    let mut text = String::from("identityAccountId,accountId,action,identityProvider\n");
    for i in 0..60 {
        text.push_str(&format!("id{i},acct{i},explode,okta\n"));
    }
    std::fs::write(&path, text).unwrap();
    let output = validate(&[path.to_str().unwrap()])
        .code(2)
        .get_output()
        .stderr
        .clone();
    let stderr = String::from_utf8(output).unwrap();
    assert_eq!(stderr.matches("unknown action").count(), 50);
    assert!(stderr.contains("... and 10 more"), "{stderr}");
}

#[test]
fn unknown_extension_and_missing_file_are_clear() {
    validate(&["accounts.xlsx"])
        .code(2)
        .stderr(contains("pass --input-format"));
    validate(&["no-such-file.csv"])
        .code(2)
        .stderr(contains("no-such-file.csv: cannot read").and(contains("No such file")));
}
