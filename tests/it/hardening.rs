//! Issue 10: a rehearsal never passes for the real run, a full disk never hangs a run, and every
//! file and byte from outside is distrusted. Each test here failed before its fix.

#![cfg(unix)]

use super::common;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::mock::MockConfig;

/// Successful applications by identity account id, in the mock's view.
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

/// An endpoint off this machine that can never resolve (RFC 2606): a real run's target, for a
/// test that must stop before sending anything.
const OFF_MACHINE: &str = "https://graph-remediate-test.invalid";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_rehearsal_records_never_count_for_a_real_run_even_without_their_lock() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(3));
    let rehearsal = h.path("input.rehearsal.jsonl");
    let rehearse = [input.to_str().unwrap(), "--mock", "--rate", "200/s"].map(String::from);
    assert_eq!(run_args(&rehearse).await.unwrap(), ExitStatus::Success);
    // The results name a real run's file now, and the lock file that said "mock" is gone.
    let copied = h.path("input.results.jsonl");
    std::fs::copy(&rehearsal, &copied).unwrap();
    let real_resume = [
        input.to_str().unwrap(),
        "-o",
        copied.to_str().unwrap(),
        "--resume",
        "--graph-url",
        OFF_MACHINE,
        "--access-token-file",
        h.token.to_str().unwrap(),
        "--yes",
    ]
    .map(String::from);
    let refused = run_args(&real_resume).await;
    assert_eq!(status(&refused), ExitStatus::InputError, "{refused:?}");
    let message = format!("{:#}", refused.unwrap_err());
    assert!(
        message.contains("3 record(s) answered by this tool's mock"),
        "{message}"
    );
    // Against a mock on this machine (the tests' own), the same file may be continued.
    let local = with_flag(
        h.args(&input, &["--resume"]),
        "-o",
        copied.to_str().unwrap(),
    );
    assert_eq!(run_args(&local).await.unwrap(), ExitStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_rehearsal_never_continues_records_microsoft_answered() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(1));
    // A real run's record (its request id is Microsoft's), beside a rehearsal's lock file.
    let results = h.path("input.rehearsal.jsonl");
    let rehearse = [input.to_str().unwrap(), "--mock", "--rate", "200/s"].map(String::from);
    assert_eq!(run_args(&rehearse).await.unwrap(), ExitStatus::Success);
    let record = std::fs::read_to_string(&results).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(record.trim()).unwrap();
    value["requestId"] = "0b9f4c7e-1111-4a2b-9c3d-0123456789ab".into();
    std::fs::write(&results, format!("{value}\n")).unwrap();
    let refused = run_args(&[&rehearse[..], &["--resume".to_owned()]].concat()).await;
    assert_eq!(status(&refused), ExitStatus::InputError, "{refused:?}");
    assert!(format!("{:#}", refused.unwrap_err()).contains("not answered by this tool's mock"),);
    assert_eq!(
        std::fs::read_to_string(&results).unwrap(),
        format!("{value}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_rehearsal_never_overwrites_or_stands_in_for_a_real_run() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(4));

    // The real run's results...
    assert_eq!(h.run(&input, &[]).await.unwrap(), ExitStatus::Success);
    let real = std::fs::read_to_string(h.results()).unwrap();
    let sent = h.graph_requests();

    // ...are never overwritten by a rehearsal.
    let rehearsal: Vec<String> = vec![
        input.to_str().unwrap().into(),
        "--mock".into(),
        "--rate".into(),
        "200/s".into(),
    ];
    let over = run_args(
        &[
            &rehearsal[..],
            &["-o".into(), h.results().to_str().unwrap().into()],
        ]
        .concat(),
    )
    .await;
    assert_eq!(status(&over), ExitStatus::InputError, "{over:?}");
    assert!(format!("{:#}", over.unwrap_err()).contains("never writes over"));
    assert_eq!(std::fs::read_to_string(h.results()).unwrap(), real);

    // A rehearsal writes a file of its own, and may be repeated.
    let default_rehearsal = h.path("input.rehearsal.jsonl");
    for _ in 0..2 {
        assert_eq!(run_args(&rehearsal).await.unwrap(), ExitStatus::Success);
        assert_eq!(read_jsonl(&default_rehearsal).len(), 4);
    }

    // A real run never resumes a rehearsal's results: nothing is sent, nothing counted as done.
    let onto_rehearsal = with_flag(
        h.args(&input, &["--resume"]),
        "-o",
        default_rehearsal.to_str().unwrap(),
    );
    let refused = run_args(&onto_rehearsal).await;
    assert_eq!(status(&refused), ExitStatus::InputError);
    assert!(
        format!("{:#}", refused.unwrap_err()).contains("rehearsal"),
        "the message says why"
    );
    assert_eq!(h.graph_requests(), sent, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_resume_refuses_results_from_another_endpoint() {
    let h = Harness::new().await;
    let other = Harness::new().await;
    let input = h.input(&plain_rows(3));
    assert_eq!(h.run(&input, &[]).await.unwrap(), ExitStatus::Success);
    let args = with_flag(
        h.args(&input, &["--resume"]),
        "--graph-url",
        &other.mock.base_url(),
    );
    let refused = run_args(&args).await;
    assert_eq!(status(&refused), ExitStatus::InputError);
    assert!(format!("{:#}", refused.unwrap_err()).contains(&h.mock.base_url()));
    assert_eq!(other.graph_requests(), 0);
}

/// `run` under `ulimit -f` (SIGXFSZ ignored): writes past a few KiB fail as on a full disk.
fn with_file_size_limit(h: &Harness, input: &Path, kib: u32, extra: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$@\""))
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("run")
        .args(h.args(input, extra))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_full_disk_stops_the_run_and_leaves_resumable_results() {
    let h = Harness::new().await;
    let rows = 400;
    let input = h.input(&plain_rows(rows));
    let started = Instant::now();
    let full = with_file_size_limit(&h, &input, 24, &["--concurrency", "4"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(4), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it did not hang"
    );
    assert!(stderr.contains("could not be written"), "{stderr}");
    let sent_first = applied(&h);
    assert!(
        sent_first.len() < rows,
        "the run stopped starting rows once it could not record them"
    );

    // Room again: the same command with --resume finishes, one record per row, and a row sent
    // without its record is sent again with both attempts counted.
    let resumed = h.binary(&input, &["--resume"]).output().unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let records = read_jsonl(&h.results());
    assert_eq!(records.len(), rows);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    let applied = applied(&h);
    assert_eq!(applied.len(), rows);
    for record in &records {
        let id = record["identityAccountId"].as_str().unwrap();
        assert!(
            record["attempts"].as_u64().unwrap() >= applied[id] as u64,
            "every request that left is counted: {record}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_resume_cut_short_by_a_changed_input_keeps_every_earlier_record() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await;
    // Rows 2..=3001 fail once (first run, no retries) and succeed when resumed; the rest
    // succeed in the first run and are only carried over by the second.
    let total = 8000;
    let rows: Vec<String> = (0..total)
        .map(|i| {
            let id = if i < 3000 {
                format!("http503x1-{i:05}")
            } else {
                format!("id-{i:05}")
            };
            format!("{id},00u{i:05},disable,okta,INC-{i}")
        })
        .collect();
    let input = h.input(&rows);
    let first = h.run(&input, &["--max-retries", "0"]).await.unwrap();
    assert_eq!(first, ExitStatus::RowsFailed);
    let requests_after_first = h.graph_requests();

    let second = h
        .binary(
            &input,
            &["--resume", "--rate", "1500/s", "--concurrency", "2"],
        )
        .spawn()
        .unwrap();
    // Once the second read has begun (its first request arrived), make a line far beyond what
    // it has read invalid, in place.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.graph_requests() == requests_after_first {
        if Instant::now() > deadline {
            let mut second = second;
            let _ = second.kill();
            let out = second.wait_with_output().unwrap();
            panic!(
                "the resumed run sent nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changed_line = 6000u64;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&input)
        .unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let offset: usize = text
        .split_inclusive('\n')
        .take(changed_line as usize - 1)
        .map(str::len)
        .sum();
    let at = offset + text[offset..].find("disable").unwrap();
    file.seek(SeekFrom::Start(at as u64)).unwrap();
    file.write_all(b"deleted").unwrap();
    drop(file);

    let second = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("the input changed"), "{stderr}");

    // Every row that succeeded in the first run still has its succeeded record, including
    // those past the changed line, which the second read never reached.
    let records = read_jsonl(&h.results());
    let succeeded: std::collections::HashSet<u64> = records
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    for row in 3002..=(total as u64 + 1) {
        if row != changed_line {
            assert!(succeeded.contains(&row), "row {row} lost its record");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_output_paths_that_name_one_file_are_refused_before_anything_is_touched() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    let before = std::fs::read(&input).unwrap();
    let results = h.results().to_str().unwrap().to_owned();
    let hard_link = h.path("input-alias.jsonl");
    std::fs::hard_link(&input, &hard_link).unwrap();
    let spelled_otherwise = format!("{}/./results.jsonl", h.dir.path().display());
    let cases: Vec<Vec<String>> = vec![
        vec!["--undo-file".into(), results.clone()],
        vec!["--summary-json".into(), spelled_otherwise.clone()],
        vec!["--undo-file".into(), input.to_str().unwrap().into()],
        vec!["-o".into(), input.to_str().unwrap().into()],
        vec!["-o".into(), hard_link.to_str().unwrap().into()],
        vec![
            "--undo-file".into(),
            h.path("same.csv").to_str().unwrap().into(),
            "--summary-json".into(),
            h.path("same.csv").to_str().unwrap().into(),
        ],
    ];
    for extra in cases {
        let mut args = h.args(&input, &[]);
        for pair in extra.chunks(2) {
            args = with_flag(args, &pair[0], &pair[1]);
        }
        let result = run_args(&args).await;
        assert_eq!(status(&result), ExitStatus::InputError, "{extra:?}");
        assert!(
            format!("{:#}", result.unwrap_err()).contains("are the same file"),
            "{extra:?}"
        );
        assert_eq!(std::fs::read(&input).unwrap(), before, "{extra:?}");
        assert!(!h.results().exists(), "{extra:?}");
    }
    assert_eq!(h.graph_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_429_longer_than_max_retry_wait_still_holds_every_worker() {
    use wiremock::{Mock, MockServer as Wire, Request, Respond, ResponseTemplate, matchers};
    /// Answers the first request with 429 Retry-After: 3 and the others with 200, noting when
    /// each arrived.
    struct Throttle(Arc<Mutex<Vec<Instant>>>);
    impl Respond for Throttle {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let mut seen = self.0.lock().unwrap();
            seen.push(Instant::now());
            if seen.len() == 1 {
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", "3")
                    .set_body_json(serde_json::json!({"error": {"code": "TooManyRequests", "message": "Please retry again later."}}))
            } else {
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"value": {"correlationId": "c"}}))
            }
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Wire::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(Throttle(seen.clone()))
        .mount(&server)
        .await;
    let h = Harness::new().await;
    let input = h.input(&plain_rows(4));
    let args = with_flag(
        h.args(&input, &["--max-retry-wait", "1s", "--concurrency", "1"]),
        "--graph-url",
        &server.uri(),
    );
    let result = run_args(&args).await;
    assert_eq!(status(&result), ExitStatus::StoppedEarly, "{result:?}");
    let seen = seen.lock().unwrap().clone();
    let told_at = seen[0];
    assert!(
        seen[1..]
            .iter()
            .all(|t| t.duration_since(told_at) >= Duration::from_secs(3)),
        "a request left inside the told window: {:?}",
        seen.iter()
            .map(|t| t.duration_since(told_at))
            .collect::<Vec<_>>()
    );
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(records[&2]["status"], "failed");
    assert!(
        records[&2]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("--max-retry-wait")
    );
    assert_eq!(records.len(), 4, "every row has its record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_exit_2_only_when_nothing_was_sent() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    // --summary-json into a missing directory: refused before anything is sent.
    let missing = h.path("no-such-dir/summary.json");
    let result = h
        .run(&input, &["--summary-json", missing.to_str().unwrap()])
        .await;
    assert_eq!(status(&result), ExitStatus::InputError);
    assert_eq!(h.graph_requests(), 0);
    // A lock that cannot be taken (its path is a directory): nothing was sent, so exit 2.
    std::fs::create_dir(h.path("results.jsonl.lock")).unwrap();
    let result = h.run(&input, &[]).await;
    assert_eq!(status(&result), ExitStatus::InputError, "{result:?}");
    assert_eq!(h.graph_requests(), 0);
    std::fs::remove_dir(h.path("results.jsonl.lock")).unwrap();

    // A directory or a link where the summary goes is refused up front too.
    let blocked = h.path("summary-is-a-dir");
    std::fs::create_dir(&blocked).unwrap();
    let result = h
        .run(&input, &["--summary-json", blocked.to_str().unwrap()])
        .await;
    assert_eq!(status(&result), ExitStatus::InputError, "{result:?}");
    assert_eq!(h.graph_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_results_are_never_written_through_a_link() {
    let h = Harness::new().await;
    let input = h.input(&plain_rows(1));
    let target = h.path("elsewhere.txt");
    std::fs::write(&target, "precious").unwrap();
    std::os::unix::fs::symlink(&target, h.results()).unwrap();
    let result = h.run(&input, &[]).await;
    assert_eq!(status(&result), ExitStatus::InputError, "{result:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
    assert_eq!(h.graph_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_named_pipe_is_read_once_and_a_signal_still_stops_the_wait() {
    let h = Harness::new().await;
    let pipe = h.path("pipe.csv");
    assert!(
        Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    // Nobody writes to the pipe: the run waits in open(2), and SIGTERM must still end it.
    let child = h.binary(&pipe, &[]).spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A process substitution is read once and both passes see the same rows.
    let input = h.input(&plain_rows(5));
    let script = format!(
        "exec \"$0\" run <(cat '{}') --input-format csv {}",
        input.display(),
        h.args(&input, &[])[1..]
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_graph-remediate"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_jsonl(&h.results()).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_csv_undo_file_replays_ids_exactly() {
    let h = Harness::new().await;
    let input = h.input(&[
        "-id5,-00u5,disable,okta,=cmd".to_owned(),
        "id6,00u6,disable,okta,INC-6".to_owned(),
    ]);
    let undo = h.path("undo.csv");
    let first = h
        .run(&input, &["--undo-file", undo.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(first, ExitStatus::Success);
    let text = std::fs::read_to_string(&undo).unwrap();
    // Ids a spreadsheet would run get the `'` too (issue 16); the reader takes it off again.
    assert!(text.contains("\r\n'-id5,'-00u5,enable,okta,"), "{text}");
    assert!(
        text.contains("'=cmd"),
        "carried cells stay spreadsheet-safe: {text}"
    );
    // Replayed, it sends the ids as they were.
    let replay = h.path("replay.jsonl");
    let args = with_flag(h.args(&undo, &[]), "-o", replay.to_str().unwrap());
    assert_eq!(run_args(&args).await.unwrap(), ExitStatus::Success);
    let last = h
        .mock
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.contains("-id5"))
        .unwrap();
    assert!(
        last.path.contains("/identityAccounts/-id5/"),
        "{}",
        last.path
    );
    assert_eq!(last.body.unwrap()["accountId"], "-00u5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_no_undo_data_lingers_and_a_bad_undo_path_leaves_no_results() {
    // A bad undo path is refused before the results file exists, so nothing blocks a rerun.
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    let bad = h.path("missing/undo.csv");
    let result = h.run(&input, &["--undo-file", bad.to_str().unwrap()]).await;
    assert_eq!(status(&result), ExitStatus::InputError);
    assert!(!h.results().exists());

    // While a run is under way there is no undo data on disk to leak when it is killed.
    let slow = Harness::start(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let input = slow.input(&plain_rows(3));
    let undo_dir = slow.path("undo");
    std::fs::create_dir(&undo_dir).unwrap();
    let undo = undo_dir.join("undo.csv");
    let mut child = slow
        .binary(
            &input,
            &["--undo-file", undo.to_str().unwrap(), "--concurrency", "1"],
        )
        .spawn()
        .unwrap();
    wait_until("the first request", Duration::from_secs(20), || {
        slow.graph_requests() > 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(std::fs::read_dir(&undo_dir).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_escape_sequences_and_echoed_tokens_from_graph_are_never_printed() {
    use wiremock::{Mock, MockServer as Wire, ResponseTemplate, matchers};
    let server = Wire::start().await;
    let body = serde_json::json!({"error": {
        "code": "\u{1b}[31mEVIL\u{1b}[0m",
        "message": format!("bad token {HARNESS_TOKEN}\r\nFAKE LOG LINE \u{9b}2J"),
    }});
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(body))
        .mount(&server)
        .await;
    let h = Harness::new().await;
    let input = h.input(&plain_rows(1));
    let args = with_flag(h.args(&input, &["-v"]), "--graph-url", &server.uri());
    let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("run")
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let results = std::fs::read_to_string(h.results()).unwrap();
    for written in [stderr.as_ref(), results.as_str()] {
        assert!(
            !written.contains('\u{1b}') && !written.contains('\u{9b}'),
            "{written}"
        );
        assert!(!written.contains("\r\nFAKE"), "{written}");
        assert!(!written.contains(HARNESS_TOKEN), "{written}");
    }
    assert!(results.contains("[redacted]"), "{results}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_resumed_results_file_becomes_private() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new().await;
    let input = h.input(&plain_rows(2));
    assert_eq!(h.run(&input, &[]).await.unwrap(), ExitStatus::Success);
    std::fs::set_permissions(h.results(), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        h.run(&input, &["--resume"]).await.unwrap(),
        ExitStatus::Success
    );
    let mode = std::fs::metadata(h.results()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn issue_10_io_errors_name_their_cause_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .args(["validate", "/no/such/input.csv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn issue_10_a_jsonl_line_past_the_limit_is_a_row_error_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    let good =
        r#"{"identityAccountId":"a","accountId":"b","action":"disable","identityProvider":"okta"}"#;
    let huge = format!(r#"{{"note":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    std::fs::write(&path, format!("{good}\n{huge}\n{good}x\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("huge.jsonl:2: the line is longer than 1024 KiB"),
        "{stderr}"
    );
    assert!(
        stderr.contains("huge.jsonl:3:"),
        "the line after it was read: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_token_with_a_line_break_stops_before_anything_is_sent() {
    let h = Harness::new().await;
    std::fs::write(&h.token, format!("{HARNESS_TOKEN}\r\nX-Injected: 1")).unwrap();
    let input = h.input(&plain_rows(2));
    let started = Instant::now();
    let result = h.run(&input, &[]).await;
    assert_eq!(status(&result), ExitStatus::StoppedEarly, "{result:?}");
    assert!(format!("{:#}", result.unwrap_err()).contains("line break"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.graph_requests(), 0);
}
