//! Ctrl-C and SIGTERM on the real binary: the first drains (nothing new starts, in-flight requests
//! finish, every row is recorded) and exits 130; the second aborts at once. The tests wait on
//! what the run and the mock say, not on the clock.

#![cfg(unix)]

use super::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use graph_remediate::mock::MockConfig;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The run's stderr, line by line, as it comes.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    line_rx
}

/// Reads lines until one contains `wanted`; returns everything read.
fn read_until(lines: &mpsc::Receiver<String>, wanted: &str) -> String {
    let mut seen = String::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(wanted) {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {wanted:?}: {seen}"),
        }
    }
}

async fn drains_on(signal_name: &str) {
    let h = Harness::start(MockConfig {
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    let input = h.input(&plain_rows(200));
    let child = h
        .binary(&input, &["--rate", "10/s", "--concurrency", "4"])
        .spawn()
        .unwrap();
    // Some rows are done and others in flight when the signal comes.
    wait_until("the first answers", Duration::from_secs(30), || {
        h.graph_requests() >= 2
    })
    .await;
    signal(&child, signal_name);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let records = read_jsonl(&h.results());
    assert_eq!(records.len(), 200, "a record for every row");
    let count = |status: &str| records.iter().filter(|r| r["status"] == status).count();
    let succeeded = count("succeeded");
    assert!(succeeded >= 2, "{stderr}");
    assert_eq!(
        succeeded + count("not_attempted"),
        200,
        "in-flight requests finished: {stderr}"
    );
    assert_eq!(
        succeeded as u64,
        h.graph_requests(),
        "every request sent was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_and_exits_130_with_a_record_for_every_row() {
    drains_on("INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_like_ctrl_c() {
    drains_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_aborts_at_once() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_secs(20),
        ..MockConfig::default()
    })
    .await;
    let input = h.input(&plain_rows(10));
    let mut child = h.binary(&input, &["--rate", "100/s"]).spawn().unwrap();
    let lines = stderr_lines(&mut child);
    // A request is on its 20 s way once its in-flight note is written: it leaves right after.
    let inflight = h.path("results.jsonl.inflight");
    wait_until(
        "a request's in-flight note",
        Duration::from_secs(30),
        || std::fs::metadata(&inflight).is_ok_and(|m| m.len() > 0),
    )
    .await;
    signal(&child, "INT");
    read_until(&lines, "stopping: no new rows start");
    let before = Instant::now();
    signal(&child, "INT");
    let seen = read_until(&lines, "aborted");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "it waited for the 20 s requests"
    );
}
