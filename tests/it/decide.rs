//! Issue 17 item 4: the plan the operator confirms and the rows sent come from one decider, so a
//! row that is decided otherwise when the feed reads it (the file changed after the plan was
//! confirmed) is never sent.

use super::common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use common::*;
use graph_remediate::mock::MockConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_row_changed_after_the_plan_was_confirmed_is_not_sent() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await;
    let total = 8000;
    let rows: Vec<String> = (0..total)
        .map(|i| format!("id-{i:05},00u{i:05},disable,okta,INC-{i}"))
        .collect();
    let input = h.input(&rows);
    let run = h
        .binary(&input, &["--rate", "1500/s", "--concurrency", "2"])
        .spawn()
        .unwrap();
    // Once the feed has begun (the first request arrived), give a line far beyond what it has
    // read another account, in place: the line still parses, and names an account that the
    // confirmed plan does not hold.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.graph_requests() == 0 {
        if Instant::now() > deadline {
            let mut run = run;
            let _ = run.kill();
            let out = run.wait_with_output().unwrap();
            panic!(
                "the run sent nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changed_line = 6000usize;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&input)
        .unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    let offset: usize = text
        .split_inclusive('\n')
        .take(changed_line - 1)
        .map(str::len)
        .sum();
    let account = format!("00u{:05}", changed_line - 2);
    let at = offset + text[offset..].find(&account).unwrap();
    file.seek(SeekFrom::Start(at as u64)).unwrap();
    file.write_all(b"00u9").unwrap();
    drop(file);

    let out = tokio::task::spawn_blocking(move || run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line {changed_line} is no longer what the confirmed plan holds"
        )),
        "{stderr}"
    );
    let unconfirmed = format!("00u9{}", &account[4..]);
    let sent = h.actions_sent();
    assert!(!sent.is_empty());
    assert!(
        sent.iter()
            .all(|(_, body)| body["accountId"] != unconfirmed.as_str()),
        "the account the confirmed plan does not hold was sent to"
    );
    // Every row before the changed line has its record (sent, or not started once the run
    // stopped); none from it on.
    let records = read_jsonl(&h.results());
    assert_eq!(records.len(), changed_line - 2);
    for record in &records {
        assert!(
            record["row"].as_u64().unwrap() < changed_line as u64,
            "{record}"
        );
        assert!(
            record["status"] == "succeeded" || record["status"] == "not_attempted",
            "{record}"
        );
    }
}
