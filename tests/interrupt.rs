//! Ctrl-C and SIGTERM on the real binary: the first drains (nothing new starts, in-flight requests
//! finish, every row is recorded) and exits 130; the second aborts at once.

#![cfg(unix)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use graph_remediate::mock::{MockConfig, MockServer};

fn spawn_run(
    dir: &std::path::Path,
    url: &str,
    rows: usize,
    rate: &str,
) -> (Child, std::path::PathBuf) {
    let input = write_csv(dir, "input.csv", &plain_rows(rows));
    let output = dir.join("results.jsonl");
    let token = token_file(dir, "t");
    let child = Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .args([
            "run",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .args([
            "--graph-url",
            url,
            "--access-token-file",
            token.to_str().unwrap(),
        ])
        .args(["--rate", rate, "--concurrency", "4", "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, output)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait(mut child: Child) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status.code().unwrap_or(-1), stderr)
    })
    .await
    .unwrap()
}

async fn drains_on(signal_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        accept_any_token: true,
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (child, output) = spawn_run(dir.path(), &mock.base_url(), 200, "10/s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&child, signal_name);
    let (code, stderr) = wait(child).await;
    let stats = mock.stats();
    mock.shutdown().await;
    assert_eq!(code, 130, "{stderr}");
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 200, "a record for every row");
    let succeeded = records
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    let not_attempted = records
        .iter()
        .filter(|r| r["status"] == "not_attempted")
        .count();
    assert!(succeeded > 0, "{stderr}");
    assert_eq!(
        succeeded + not_attempted,
        200,
        "in-flight requests finished: {stderr}"
    );
    assert_eq!(
        succeeded as u64, stats.graph_requests,
        "every request sent was recorded"
    );
}

#[tokio::test]
async fn ctrl_c_drains_and_exits_130_with_a_record_for_every_row() {
    drains_on("INT").await;
}

#[tokio::test]
async fn sigterm_drains_like_ctrl_c() {
    drains_on("TERM").await;
}

#[tokio::test]
async fn a_second_ctrl_c_aborts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        accept_any_token: true,
        latency: Duration::from_secs(20),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (child, _output) = spawn_run(dir.path(), &mock.base_url(), 10, "100/s");
    tokio::time::sleep(Duration::from_millis(800)).await;
    signal(&child, "INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = Instant::now();
    signal(&child, "INT");
    let (code, stderr) = wait(child).await;
    assert_eq!(code, 130, "{stderr}");
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "it waited for the 20 s requests"
    );
    assert!(stderr.contains("aborted"), "{stderr}");
    drop(mock);
}
