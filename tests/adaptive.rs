//! Adaptive rate: against a server that allows less than `--rate`, the tool slows itself after a
//! 429 instead of hitting the limit every second, and never sends inside a told window.

mod common;

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, MockServer};
use graph_remediate::units::parse_rate;

#[tokio::test]
async fn a_lower_server_limit_is_found_and_kept_under() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        rate: Some(parse_rate("50/s").unwrap()),
        burst: 10,
        accept_any_token: true,
        request_log: Some(dir.path().join("requests.jsonl")),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "input.csv", &plain_rows(400));
    let output = dir.path().join("results.jsonl");
    let token = token_file(dir.path(), "t");
    let status = run(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--graph-url",
        &mock.base_url(),
        "--access-token-file",
        token.to_str().unwrap(),
        "--rate",
        "200/s",
        "--concurrency",
        "32",
    ])
    .await;
    let stats = mock.stats();
    mock.shutdown().await;
    assert_eq!(status, ExitStatus::Success);
    assert!(
        read_jsonl(&output)
            .iter()
            .all(|r| r["status"] == "succeeded")
    );
    // A fixed 200/s against 50/s with a burst of 10 is throttled every second or so (about 30
    // 429s for 400 rows); adapting, the tool converges after a few.
    let throttled = stats.status(429);
    assert!(throttled <= 12, "{throttled} 429s for 400 rows: {stats:?}");
    let log = read_request_log(&dir.path().join("requests.jsonl"));
    let late = sent_inside_told_windows(&log, 100.0);
    assert!(
        late.is_empty(),
        "{} requests inside a told window",
        late.len()
    );
}
