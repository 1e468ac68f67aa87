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

/// The commands of a README section, as written: its indented lines that start with
/// `graph-remediate` and name a sample.
fn sample_commands(section: &str) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme
        .find(&format!("## {section}"))
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let body = &readme[start + 3..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter_map(|line| line.strip_prefix("    graph-remediate "))
        .filter(|line| line.contains("samples/"))
        .map(|line| shlex::split(line).expect("a shell command"))
        .collect()
}

/// Issue 12: the README's Defender export command, exactly as written, in a directory holding
/// the sample where the README says it is: every person is looked up and acted on.
#[test]
fn issue_12_the_readme_defender_export_command_runs_as_written() {
    let commands = sample_commands("From a Defender export");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let args = &commands[0];
    assert!(args.contains(&"--mock".to_owned()), "a rehearsal: {args:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("samples")).unwrap();
    std::fs::copy(
        "samples/defender-identityinfo.csv",
        dir.path().join("samples/defender-identityinfo.csv"),
    )
    .unwrap();
    let assert = Command::cargo_bin("graph-remediate")
        .unwrap()
        .current_dir(dir.path())
        .args(args)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains("10 rows: 10 succeeded, 0 failed"),
        "{stderr}"
    );
    let results = std::fs::read_to_string(
        dir.path()
            .join("samples/defender-identityinfo.rehearsal.jsonl"),
    )
    .unwrap();
    let resolved_by: Vec<String> = results
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["resolvedBy"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(resolved_by.len(), 10);
    // Hybrid users are found by their on-premises SID, cloud-only ones by their object id.
    assert_eq!(resolved_by.iter().filter(|by| *by == "sid").count(), 7);
    assert_eq!(resolved_by.iter().filter(|by| *by == "objectId").count(), 3);
    assert!(
        dir.path()
            .join("samples/defender-identityinfo.rehearsal.identities.jsonl")
            .exists()
    );
}
