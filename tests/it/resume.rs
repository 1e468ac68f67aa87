//! Crash safety and the responder's safeguards: kill -9 and --resume, the lock, a torn last line,
//! a changed input, confirmation, --max-failures, --undo-file, --dry-run, private files.

#![cfg(unix)]

use super::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::mock::{AccountState, MockConfig};

/// How many distinct input rows have a record: the run's progress, whatever a resume carried over.
fn rows_done(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|record| record["row"].as_u64())
        .collect::<std::collections::HashSet<u64>>()
        .len()
}

/// Successful applications of the action, by identity account id, in the mock's view.
fn applied(h: &Harness) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in h.mock.requests().iter().filter(|r| r.status == 200) {
        let id = request
            .path
            .split('/')
            .nth(5)
            .unwrap_or_default()
            .to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_and_resumed_every_row_succeeds_exactly_once_in_the_results() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await;
    let input = h.input(&plain_rows(2000));
    let output = h.results();
    let flags = [
        "--rate",
        "800/s",
        "--burst",
        "8",
        "--concurrency",
        "16",
        "--yes",
    ];

    for (round, kill_after) in [300usize, 900, 1500].into_iter().enumerate() {
        let resume: &[&str] = if round == 0 { &[] } else { &["--resume"] };
        let mut child = h
            .binary(&input, &[&flags[..], resume].concat())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Kill points far apart in progress, so no row is in flight at two kills.
        while rows_done(&output) < kill_after {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: finished before the kill"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(rows_done(&output) < 2000, "round {round}: killed mid-run");
    }

    let finished = h
        .binary(&input, &[&flags[..], &["--resume"]].concat())
        .output()
        .unwrap();
    assert_eq!(
        finished.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );

    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2000, "exactly one record per input row");
    let rows: std::collections::BTreeSet<u64> =
        records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(rows.len(), 2000);
    assert_eq!((*rows.first().unwrap(), *rows.last().unwrap()), (2, 2001));
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    assert!(
        !output.with_extension("jsonl.inflight").exists(),
        "nothing left in flight"
    );

    let applied = applied(&h);
    assert_eq!(applied.len(), 2000, "every account was acted on");
    let twice: Vec<&String> = applied
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    assert!(
        applied.values().all(|n| *n <= 2),
        "no row applied more than twice"
    );
    eprintln!(
        "{} row(s) were applied twice (in flight at a kill)",
        twice.len()
    );
    // A row sent again after a crash says so: its attempts count the unrecorded one.
    let by_id: HashMap<&str, &serde_json::Value> = records
        .iter()
        .map(|r| (r["identityAccountId"].as_str().unwrap(), r))
        .collect();
    for id in &twice {
        assert!(
            by_id[id.as_str()]["attempts"].as_u64().unwrap() >= 2,
            "{id}: {}",
            by_id[id.as_str()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_results_file_is_refused_naming_the_lock() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(3));
    let output = h.results();
    // Another run's lock, held as that run would hold it.
    let held = std::fs::File::create(format!("{}.lock", output.display())).unwrap();
    held.lock().unwrap();
    let started = Instant::now();
    let out = h.binary(&input, &["--yes"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("results.jsonl.lock"), "{stderr}");
    assert!(stderr.contains("another graph-remediate run"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    assert_eq!(h.mock.stats().graph_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_names_the_process_that_holds_it() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_secs(3),
        ..MockConfig::default()
    })
    .await;
    let input = h.input(&plain_rows(2));
    let output = h.results();
    let mut first = h
        .binary(&input, &["--yes", "--rate", "100/s"])
        .spawn()
        .unwrap();
    let lock = PathBuf::from(format!("{}.lock", output.display()));
    while !std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .contains("pid")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = h.binary(&input, &["--yes", "--resume"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_repairs_a_torn_last_line_and_reruns_only_what_did_not_succeed() {
    let h = Harness::new().await;
    let mut rows = plain_rows(6);
    rows.push("http503x1-flaky,00u9,disable,okta,INC-9".to_owned());
    let input = h.input(&rows);
    let output = h.results();
    let base = ["--yes", "--rate", "100/s", "--max-retries", "0"];
    let first = h.binary(&input, &base).output().unwrap();
    assert_eq!(first.status.code(), Some(3), "the flaky row failed once");

    // A crash in the middle of writing a record.
    let mut text = std::fs::read_to_string(&output).unwrap();
    text.push_str("{\"correlationId\":\"torn\",\"row\":");
    std::fs::write(&output, text).unwrap();

    let second = h
        .binary(&input, &[&base[..], &["--resume"]].concat())
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let records = read_jsonl(&output); // every line parses: the torn one is gone
    assert_eq!(records.len(), 7);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    let applied = applied(&h);
    assert!(
        applied.values().all(|n| *n == 1),
        "succeeded rows were not sent again: {applied:?}"
    );
    assert_eq!(
        h.mock.stats().graph_requests,
        6 + 2,
        "six rows once, the flaky one twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_input_is_caught_unless_accepted() {
    let h = Harness::new().await;
    let output = h.results();
    let input = h.input(&plain_rows(4));
    let flags = ["--yes", "--rate", "100/s"];
    let first = h.binary(&input, &flags).output().unwrap();
    assert_eq!(first.status.code(), Some(0));

    h.input(&plain_rows(6));
    let refused = h
        .binary(&input, &[&flags[..], &["--resume"]].concat())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the input changed"), "{stderr}");
    assert!(stderr.contains("--accept-changed-input"), "{stderr}");
    assert_eq!(h.mock.stats().graph_requests, 4, "nothing sent");

    let accepted = h
        .binary(
            &input,
            &[&flags[..], &["--resume", "--accept-changed-input"]].concat(),
        )
        .output()
        .unwrap();
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert_eq!(read_jsonl(&output).len(), 6);
    assert_eq!(
        h.mock.stats().graph_requests,
        6,
        "only the two new rows were sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_results_file_needs_resume() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    let output = h.results();
    let earlier = "{\"row\":2,\"status\":\"failed\"}\n";
    std::fs::write(&output, earlier).unwrap();
    let out = h.binary(&input, &["--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Pass --resume"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), earlier);
    assert_eq!(h.mock.stats().graph_requests, 0);

    // An empty file holds nothing to lose (a start that failed may leave one): it is taken over.
    std::fs::write(&output, "").unwrap();
    let out = h.binary(&input, &["--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read_jsonl(&output).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_and_without_yes_nothing_is_sent() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(5));
    let output = h.results();
    let out = h.binary(&input, &["--no-yes"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("add --yes"), "{stderr}");
    assert_eq!(h.mock.stats().graph_requests, 0);
    assert!(
        !output.exists(),
        "no results file for a run that never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_failures_stops_the_run_early() {
    let h = Harness::new().await;
    let rows: Vec<String> = (0..20)
        .map(|i| format!("http404-{i},00u{i},disable,okta,INC-{i}"))
        .collect();
    let input = h.input(&rows);
    let output = h.results();
    let status = h
        .run(
            &input,
            &[
                "--rate",
                "100/s",
                "--concurrency",
                "1",
                "--max-failures",
                "3",
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::StoppedEarly);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 20);
    assert_eq!(
        records.iter().filter(|r| r["status"] == "failed").count(),
        3
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["status"] == "not_attempted")
            .count(),
        17
    );
    assert_eq!(h.mock.stats().graph_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undo_file_rolls_the_batch_back() {
    let h = Harness::new().await;
    let rows = vec![
        "acct-1,S-1-5-21-1,disable,activeDirectory,INC-1".to_owned(),
        "acct-2,00u2,disable,okta,INC-2".to_owned(),
        "acct-3,S-1-5-21-3,forcePasswordReset,activeDirectory,INC-3".to_owned(),
        "acct-4,00u4,enable,okta,INC-4".to_owned(),
        "http404-5,00u5,disable,okta,INC-5".to_owned(),
    ];
    let input = h.input(&rows);
    let undo = h.path("undo.csv");
    let first = h
        .run(
            &input,
            &[
                "-o",
                h.path("first.jsonl").to_str().unwrap(),
                "--undo-file",
                undo.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(first, ExitStatus::RowsFailed, "the 404 row fails");
    assert_eq!(
        h.mock.account_state("acct-1", "S-1-5-21-1"),
        Some(AccountState::Disabled)
    );
    assert_eq!(
        h.mock.account_state("acct-4", "00u4"),
        Some(AccountState::Enabled)
    );

    let text = std::fs::read_to_string(&undo).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.remove(0),
        "identityAccountId,accountId,action,identityProvider,ticket"
    );
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "acct-1,S-1-5-21-1,enable,activeDirectory,INC-1",
            "acct-2,00u2,enable,okta,INC-2",
            "acct-4,00u4,disable,okta,INC-4",
        ],
        "only succeeded disable/enable rows, reversed"
    );

    let second = h
        .run(&undo, &["-o", h.path("second.jsonl").to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(second, ExitStatus::Success);
    assert_eq!(
        h.mock.account_state("acct-1", "S-1-5-21-1"),
        Some(AccountState::Enabled)
    );
    assert_eq!(
        h.mock.account_state("acct-2", "00u2"),
        Some(AccountState::Enabled)
    );
    assert_eq!(
        h.mock.account_state("acct-4", "00u4"),
        Some(AccountState::Disabled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_the_plan_and_settings_and_sends_nothing() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(120));
    let output = h.results();
    let out = h
        .binary(&input, &["--no-yes", "--dry-run", "--rate", "2/s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Dry run: nothing was sent"), "{stdout}");
    assert!(stdout.contains("120 actions on 120 accounts"), "{stdout}");
    assert!(
        stdout.contains("a ready access token (--access-token-file)"),
        "{stdout}"
    );
    assert!(stdout.contains("rate          2/s"), "{stdout}");
    assert!(stdout.contains("take at least 1m"), "{stdout}");
    assert!(!stdout.contains(HARNESS_TOKEN), "never the secret");
    assert_eq!(h.mock.stats().graph_requests, 0);
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_undo_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    let output = h.path("results.csv");
    let undo = h.path("undo.jsonl");
    let out = h
        .binary(
            &input,
            &[
                "-o",
                output.to_str().unwrap(),
                "--undo-file",
                undo.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    for path in [&output, &undo] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let undo_rows = read_jsonl(&undo);
    assert_eq!(undo_rows.len(), 2);
    assert_eq!(undo_rows[0]["action"], "enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_results_resume_too() {
    let h = Harness::new().await;
    let mut rows = plain_rows(3);
    rows.push("http503x1-flaky,00u9,disable,okta,=cmd|' /C calc'!A0".to_owned());
    let input = h.input(&rows);
    let output = h.path("results.csv");
    let base = [
        "-o",
        output.to_str().unwrap(),
        "--rate",
        "100/s",
        "--max-retries",
        "0",
    ];
    let first = h.binary(&input, &base).output().unwrap();
    assert_eq!(first.status.code(), Some(3));
    let second = h
        .binary(&input, &[&base[..], &["--resume"]].concat())
        .output()
        .unwrap();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 4, "one header, one record per row");
    assert!(records.iter().all(|r| &r[6] == "succeeded"));
    let flaky = records.iter().find(|r| &r[2] == "http503x1-flaky").unwrap();
    assert_eq!(
        &flaky[8], "1",
        "this run's attempts: the failed one was recorded, not unknown"
    );
    assert_eq!(
        &flaky[column("ticket")],
        "'=cmd|' /C calc'!A0",
        "still neutralised after the rewrite"
    );
    assert_eq!(h.mock.stats().graph_requests, 3 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_skipped_repeat_stays_skipped_after_resume() {
    use graph_remediate::mock::Tenant;
    let h = Harness::start(MockConfig {
        tenant: Some(Tenant::synthetic(20)),
        page_size: 10,
        ..MockConfig::default()
    })
    .await;
    // One person named twice: by UPN on line 2, by SID on line 3; and another on line 4.
    let input = h.write(
        "people.csv",
        &[
            "upn,sid,action",
            &format!("{},,forcePasswordReset", Tenant::synthetic_upn(4)),
            &format!(",{},forcePasswordReset", Tenant::synthetic_sid(4).unwrap()),
            &format!("{},,forcePasswordReset", Tenant::synthetic_upn(6)),
        ],
    );
    let extra = ["--provider", "activeDirectory"];
    let status = h.run(&input, &extra).await.unwrap();
    assert_eq!(status, ExitStatus::Success);
    let statuses = |records: &[serde_json::Value]| -> Vec<(u64, String)> {
        by_row(records)
            .into_iter()
            .map(|(line, r)| (line, r["status"].as_str().unwrap().to_owned()))
            .collect()
    };
    let first = statuses(&read_jsonl(&h.results()));
    assert_eq!(
        first,
        [
            (2, "succeeded".into()),
            (3, "skipped".into()),
            (4, "succeeded".into())
        ]
    );
    let sent = h.actions_sent().len();
    let status = h
        .run(&input, &["--provider", "activeDirectory", "--resume"])
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(
        statuses(&read_jsonl(&h.results())),
        first,
        "as the first run left them"
    );
    assert_eq!(h.actions_sent().len(), sent, "nothing sent again");
}
