//! The README's first command, `run samples/accounts.csv --mock`, works on a fresh checkout:
//! every row gets a record, and the repeated row is skipped.

use assert_cmd::Command;

#[test]
fn the_readme_mock_run_acts_on_every_sample_row() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("accounts.results.jsonl");
    let assert = Command::cargo_bin("graph-remediate")
        .unwrap()
        .args([
            "run",
            "samples/accounts.csv",
            "--mock",
            "--rate",
            "20/s",
            "-o",
        ])
        .arg(&output)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("20 rows: 19 succeeded, 0 failed, 1 skipped, 0 not attempted"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 20);
}
