//! What the operator sees (issue 7): JSON logs that parse line by line and carry each row's
//! fields, no escape codes on a stderr that is not a terminal, `--summary-json`, `--no-progress`
//! and shell completions. The binary runs against `MockServer` in this process.

use super::common;

use std::process::{Command, Output};

use common::*;
use graph_remediate::ExitStatus;
use serde_json::Value;

/// A retry (503 once), a throttle (429 once), a final failure (404), two plain successes and a
/// duplicate: every kind of row event.
fn mixed_rows() -> Vec<String> {
    vec![
        "ok-1,00u1,disable,okta,INC-1".to_owned(),
        "http503x1-a,00u2,disable,okta,INC-2".to_owned(),
        "http404-b,00u3,disable,okta,INC-3".to_owned(),
        "http429x1-c,00u4,disable,okta,INC-4".to_owned(),
        "ok-5,00u5,disable,okta,INC-5".to_owned(),
        "ok-5,00u5,disable,okta,INC-5".to_owned(),
    ]
}

/// Runs the real binary (`run` against the harness's mock with the mixed rows, plus `extra`)
/// with stderr piped, so it is not a terminal. Blocking, so on the blocking pool: the mock serves
/// on this process's runtime.
async fn run_binary(h: &Harness, extra: &[&str]) -> Output {
    let input = h.input(&mixed_rows());
    let mut command = h.binary(&input, extra);
    command
        // A colour terminal type, so that only the missing terminal keeps escape codes out.
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("RUST_LOG");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

const ROW_FIELDS: [&str; 8] = [
    "row",
    "accountId",
    "action",
    "status",
    "attempt",
    "httpStatus",
    "clientRequestId",
    "requestId",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_log_line_parses_and_row_events_carry_the_row_fields() {
    let h = Harness::new().await;
    let out = run_binary(&h, &["-v", "--log-format", "json"]).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{stderr}");

    let events: Vec<Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    for event in &events {
        assert!(event.is_object(), "one object a line: {event}");
        for key in ["timestamp", "level", "message"] {
            assert!(event.get(key).is_some(), "{key} missing: {event}");
        }
    }
    let row_events: Vec<&Value> = events.iter().filter(|e| e.get("row").is_some()).collect();
    for event in &row_events {
        for field in ROW_FIELDS {
            assert!(event.get(field).is_some(), "{field} missing: {event}");
        }
        assert!(
            event["row"].is_u64() && event["attempt"].is_u64(),
            "{event}"
        );
        assert!(event["httpStatus"].is_u64(), "{event}");
    }
    let find = |level: &str, message: &str, row: u64| {
        row_events
            .iter()
            .find(|e| e["level"] == level && e["message"] == message && e["row"] == row)
            .unwrap_or_else(|| panic!("no {level} {message:?} for row {row} in {stderr}"))
    };
    // The 503 is retried with a warning, and the 429 pauses every worker with one.
    let retry = find("WARN", "retrying", 3);
    assert_eq!(
        (retry["httpStatus"].as_u64(), retry["status"].as_str()),
        (Some(503), Some("retrying"))
    );
    let pause = find("WARN", "throttled by Graph (429): every worker pauses", 5);
    assert_eq!(pause["httpStatus"], 429);
    assert!(pause["waitMs"].is_u64());
    // The 404 fails its row with an error naming Graph's code.
    let failed = find("ERROR", "row failed", 4);
    assert_eq!(
        (failed["status"].as_str(), failed["httpStatus"].as_u64()),
        (Some("failed"), Some(404))
    );
    assert_eq!(failed["errorCode"], "itemNotFound");
    // -v: one debug event per success; the retried rows succeed on their second attempt.
    for row in [2, 3, 5, 6] {
        let ok = find("DEBUG", "row succeeded", row);
        assert_eq!(ok["status"], "succeeded");
    }
    assert_eq!(find("DEBUG", "row succeeded", 3)["attempt"], 2);
    // The same clientRequestId across a row's attempts.
    assert_eq!(
        retry["clientRequestId"],
        find("DEBUG", "row succeeded", 3)["clientRequestId"]
    );

    let start = events.iter().find(|e| e["message"] == "starting the run");
    assert_eq!(
        start.map(|e| &e["level"]),
        Some(&Value::from("INFO")),
        "{stderr}"
    );
    let end = events
        .iter()
        .find(|e| e["message"] == "run finished")
        .expect("an end event");
    assert_eq!(
        (end["level"].as_str(), end["exitCode"].as_u64()),
        (Some("INFO"), Some(3))
    );
    // The summary is a JSON line too, the same object as --summary-json.
    let summary = events
        .iter()
        .find(|e| e["message"] == "run summary")
        .expect("a summary line");
    assert_eq!(
        (summary["succeeded"].as_u64(), summary["failed"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(summary["responses429"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_escape_codes_reach_a_stderr_that_is_not_a_terminal() {
    let h = Harness::new().await;
    let out = run_binary(&h, &["-v"]).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    // Text logs, a retry, a throttle pause and the summary were all written...
    for expected in [
        "retrying",
        "throttled by Graph (429)",
        "row failed",
        "Summary:",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
    // ...with neither colours nor a progress bar's cursor movements.
    assert!(
        !stderr.contains('\x1b'),
        "escape codes on stderr: {stderr:?}"
    );
    assert!(
        !stderr.contains('\r'),
        "carriage returns on stderr: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_names_the_exact_resume_command_from_the_command_line() {
    let h = Harness::new().await;
    let summary_path = h.path("summary.json");
    let summary_arg = summary_path.to_str().unwrap().to_owned();
    let out = run_binary(&h, &["--no-progress", "--summary-json", &summary_arg]).await;
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let resume = summary["resumeCommand"].as_str().unwrap();
    assert!(
        resume.starts_with(env!("CARGO_BIN_EXE_graph-remediate")),
        "{resume}"
    );
    assert!(resume.ends_with(" --resume"), "{resume}");
    assert!(resume.contains(" --no-progress "), "{resume}");
    assert!(resume.contains(h.results().to_str().unwrap()), "{resume}");
    assert!(
        stderr.contains(resume),
        "the text summary shows it too: {stderr}"
    );
    assert!(stderr.contains("itemNotFound x1"), "{stderr}");
}

#[tokio::test]
async fn summary_json_holds_the_counts_errors_timings_and_next_steps() {
    let h = Harness::new().await;
    let input = h.input(&mixed_rows());
    let output = h.results();
    let summary_path = h.path("summary.json");
    let status = h
        .run(
            &input,
            &[
                "--no-progress",
                "--summary-json",
                summary_path.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::RowsFailed);
    let text = std::fs::read_to_string(&summary_path).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON object, one line");
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["outcome"], "rowsFailed");
    assert_eq!(summary["exitCode"], 3);
    assert_eq!(
        [
            &summary["rows"],
            &summary["succeeded"],
            &summary["failed"],
            &summary["skipped"],
            &summary["notAttempted"]
        ],
        [6, 4, 1, 1, 0].map(Value::from).each_ref()
    );
    assert_eq!(
        summary["topErrors"],
        serde_json::json!([{"code": "itemNotFound", "count": 1}])
    );
    assert_eq!(summary["requests"], 7, "5 rows sent, 2 of them twice");
    assert_eq!(summary["responses429"], 1);
    assert_eq!(summary["throttlePauses"], 1);
    assert!(summary["pausedSeconds"].as_f64().unwrap() > 0.0);
    assert!(summary["elapsedSeconds"].as_f64().unwrap() > 0.0);
    assert!(summary["rowsPerSecond"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["results"], output.to_str().unwrap());
    // In process there is no command line: the shortest command naming the same files.
    assert_eq!(
        summary["resumeCommand"],
        format!(
            "graph-remediate run {} -o {} --resume",
            input.display(),
            output.display()
        )
    );
    let next: Vec<&str> = summary["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        next.iter().any(|s| s.starts_with("itemNotFound:")),
        "{next:?}"
    );
    assert!(
        next.iter()
            .any(|s| s.contains("requestId and clientRequestId")),
        "{next:?}"
    );
    for time in ["startedAt", "finishedAt"] {
        assert!(
            summary[time].as_str().unwrap().ends_with('Z'),
            "{time}: RFC 3339, UTC"
        );
    }
}

#[test]
fn completions_are_printed_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef graph-remediate"),
        ("fish", "complete -c graph-remediate"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for word in ["run", "validate", "mock", "resume", "summary-json"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("powershell"), "lists the shells: {stderr}");
}

#[test]
fn bad_input_is_reported_as_json_lines_with_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .args([
            "run",
            "samples/bad.csv",
            "--yes",
            "--log-format",
            "json",
            "-o",
        ])
        .arg(dir.path().join("results.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let rows: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "bad input row")
        .collect();
    assert!(!rows.is_empty(), "{stderr}");
    assert!(
        rows.iter()
            .all(|e| e["line"].is_u64() && e["error"].is_string())
    );
}
