//! Adaptive rate: against a server that allows less than `--rate`, the tool slows itself after a
//! 429 instead of hitting the limit every second, and never sends inside a told window.

use super::common;

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::mock::MockConfig;
use graph_remediate::units::parse_rate;

#[tokio::test]
async fn a_lower_server_limit_is_found_and_kept_under() {
    let h = Harness::start(MockConfig {
        rate: Some(parse_rate("50/s").unwrap()),
        burst: 10,
        ..MockConfig::default()
    })
    .await;
    let (status, records) = h
        .run_rows(
            &plain_rows(400),
            &["--rate", "200/s", "--concurrency", "32"],
        )
        .await;
    let stats = h.mock.stats();
    assert_eq!(status, ExitStatus::Success);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    // A fixed 200/s against 50/s with a burst of 10 is throttled every second or so (about 30
    // 429s for 400 rows); adapting, the tool converges after a few.
    let throttled = stats.status(429);
    assert!(throttled <= 12, "{throttled} 429s for 400 rows: {stats:?}");
    let log = h.mock.requests();
    let late = sent_inside_told_windows(&log, 100.0);
    assert!(
        late.is_empty(),
        "{} requests inside a told window",
        late.len()
    );
}
