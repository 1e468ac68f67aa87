//! `run` against the mock on port 0 (and wiremock where a scripted sequence is clearer): retries,
//! the shared throttle pause, final errors, the 403 stop, both response shapes, the results file.

use super::common;

use std::time::{Duration, Instant};

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::ResponseShape;
use graph_remediate::mock::{MockConfig, RetryAfterFormat};
use graph_remediate::units::parse_rate;

async fn throttled_twice_then_ok(format: RetryAfterFormat) {
    let h = Harness::start(MockConfig {
        retry_after_format: format,
        ..MockConfig::default()
    })
    .await;
    let rows = vec!["http429x2-a,00u1,disable,okta,INC-1".to_owned()];
    let started = Instant::now();
    let (status, records) = h.run_rows(&rows, &["--rate", "100/s"]).await;
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["status"], "succeeded");
    assert_eq!(records[0]["attempts"], 3);
    assert_eq!(records[0]["httpStatus"], 200);

    // Each retry left only after the window the previous 429 announced.
    let log = h.mock.requests();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 429, 200]
    );
    for pair in log.windows(2) {
        let end = pair[0].window_end_ms.expect("a 429 tells a window");
        assert!(
            pair[1].t_ms >= end,
            "retried at {} before the window ended at {end}",
            pair[1].t_ms
        );
        assert!(!pair[1].inside_told_window);
    }
    // The same client-request-id on every attempt of the row.
    let ids: Vec<_> = log
        .iter()
        .map(|r| r.client_request_id.clone().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(
        records[0]["clientRequestId"].as_str(),
        Some(ids[0].as_str())
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
}

#[tokio::test]
async fn throttled_twice_then_succeeds_with_integer_retry_after() {
    throttled_twice_then_ok(RetryAfterFormat::Seconds).await;
}

#[tokio::test]
async fn throttled_twice_then_succeeds_with_decimal_retry_after() {
    throttled_twice_then_ok(RetryAfterFormat::Decimal).await;
}

#[tokio::test]
async fn throttled_twice_then_succeeds_with_http_date_retry_after() {
    throttled_twice_then_ok(RetryAfterFormat::HttpDate).await;
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_retries() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer as Wire, ResponseTemplate};
    let server = Wire::start().await;
    Mock::given(method("POST"))
        .and(path_regex("/v1.0/security/identities/identityAccounts/.*/microsoft.graph.security.invokeAction"))
        .respond_with(ResponseTemplate::new(429).set_body_json(serde_json::json!({"error": {"code": "TooManyRequests", "message": "Please retry again later."}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": {"accountId": "00u1", "action": "disable", "provider": "okta", "correlationId": "c-1"}})))
        .mount(&server)
        .await;
    let h = Harness::new().await;
    let input = h.input(&["wire-1,00u1,disable,okta,INC-1".to_owned()]);
    let args = with_flag(
        h.args(&input, &["--backoff-base", "300ms"]),
        "--graph-url",
        &server.uri(),
    );
    let status = run_args(&args).await.unwrap();
    let output = h.results();
    assert_eq!(status, ExitStatus::Success);
    let records = read_jsonl(&output);
    assert_eq!(records[0]["attempts"], 2);
    assert_eq!(records[0]["correlationId"], "c-1");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    // The body survives the retry intact (msgraph-sdk-go#341 re-sent an empty body).
    assert_eq!(requests[0].body, requests[1].body);
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"accountId": "00u1", "action": "disable", "identityProvider": "okta"})
    );
    assert_eq!(
        requests[1].headers["authorization"],
        format!("Bearer {HARNESS_TOKEN}").as_str()
    );
    assert!(
        requests[1].headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("graph-remediate/")
    );
}

#[tokio::test]
async fn sixteen_workers_send_nothing_inside_a_told_window() {
    let h = Harness::start(MockConfig {
        rate: Some(parse_rate("20/s").unwrap()),
        burst: 5,
        latency: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let (status, records) = h
        .run_rows(
            &plain_rows(120),
            &["--rate", "30/s", "--burst", "16", "--concurrency", "16"],
        )
        .await;
    let stats = h.mock.stats();
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r["status"] != "succeeded")
        .collect();
    assert_eq!(status, ExitStatus::Success, "{failed:?}");
    assert_eq!(records.len(), 120);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    assert!(
        stats.status(429) > 0,
        "the test must provoke throttling: {stats:?}"
    );
    let log = h.mock.requests();
    let late = sent_inside_told_windows(&log, 100.0);
    assert!(
        late.is_empty(),
        "{} requests left inside a told window: {late:?}",
        late.len()
    );
}

#[tokio::test]
async fn a_thousand_rows_against_a_50_per_second_limit_all_succeed_without_entering_told_windows() {
    let h = Harness::start(MockConfig {
        rate: Some(parse_rate("50/s").unwrap()),
        burst: 50,
        ..MockConfig::default()
    })
    .await;
    let (status, records) = h
        .run_rows(
            &plain_rows(1000),
            &["--rate", "100/s", "--concurrency", "32"],
        )
        .await;
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r["status"] == "succeeded"));
    let log = h.mock.requests();
    let late = sent_inside_told_windows(&log, 100.0);
    assert!(
        late.is_empty(),
        "{} requests left inside a told window",
        late.len()
    );
}

#[tokio::test]
async fn transient_503_and_504_are_retried() {
    let h = Harness::new().await;
    let rows = vec![
        "http503x2-a,00u1,disable,okta,INC-1".to_owned(),
        "http504x1-b,00u2,disable,okta,INC-2".to_owned(),
    ];
    let (status, records) = h.run_rows(&rows, &["--rate", "100/s"]).await;
    assert_eq!(status, ExitStatus::Success);
    let rows = by_row(&records);
    assert_eq!(rows[&2]["attempts"], 3);
    assert_eq!(rows[&3]["attempts"], 2);
}

#[tokio::test]
async fn retries_stop_at_max_retries_and_the_row_fails() {
    let h = Harness::new().await;
    let rows = vec!["http503-a,00u1,disable,okta,INC-1".to_owned()];
    let (status, records) = h
        .run_rows(&rows, &["--rate", "100/s", "--max-retries", "2"])
        .await;
    assert_eq!(status, ExitStatus::RowsFailed);
    assert_eq!(records[0]["status"], "failed");
    assert_eq!(records[0]["attempts"], 3);
    assert_eq!(records[0]["httpStatus"], 503);
    let message = records[0]["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("gave up after 3 attempts"), "{message}");
}

#[tokio::test]
async fn a_retry_after_beyond_max_retry_wait_fails_the_row_and_stops_the_run() {
    let h = Harness::new().await;
    let rows = vec!["http429-a,00u1,disable,okta,INC-1".to_owned()];
    let (status, records) = h
        .run_rows(&rows, &["--rate", "100/s", "--max-retry-wait", "500ms"])
        .await;
    // Every other row would have to wait past the bound too: the run stops (exit 4).
    assert_eq!(status, ExitStatus::StoppedEarly);
    assert_eq!(records[0]["status"], "failed");
    assert_eq!(records[0]["attempts"], 1);
    assert!(
        records[0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("--max-retry-wait")
    );
}

#[tokio::test]
async fn client_errors_are_final_with_graphs_error_code() {
    let h = Harness::new().await;
    let rows = vec![
        "http400-a,00u1,disable,okta,INC-1".to_owned(),
        "http404-b,00u2,disable,okta,INC-2".to_owned(),
        "http401-c,00u3,disable,okta,INC-3".to_owned(),
        "fine-d,00u4,disable,okta,INC-4".to_owned(),
    ];
    let (status, records) = h.run_rows(&rows, &["--rate", "100/s"]).await;
    assert_eq!(status, ExitStatus::RowsFailed);
    let rows = by_row(&records);
    assert_eq!(rows[&2]["status"], "failed");
    assert_eq!(rows[&2]["httpStatus"], 400);
    assert_eq!(rows[&2]["errorCode"], "BadRequest");
    assert_eq!(rows[&2]["attempts"], 1);
    assert_eq!(rows[&3]["errorCode"], "itemNotFound");
    assert_eq!(rows[&3]["attempts"], 1);
    assert!(rows[&3]["requestId"].is_string());
    assert_eq!(rows[&4]["httpStatus"], 401);
    assert!(
        rows[&4]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("refused the access token")
    );
    assert_eq!(rows[&5]["status"], "succeeded");
}

#[tokio::test]
async fn a_403_stops_the_run_and_the_rest_are_not_attempted() {
    let h = Harness::new().await;
    let mut rows = vec![
        "first-a,00u0,disable,okta,INC-0".to_owned(),
        "http403-b,00u1,disable,okta,INC-1".to_owned(),
    ];
    rows.extend(plain_rows(30));
    let (status, records) = h
        .run_rows(&rows, &["--rate", "100/s", "--concurrency", "1"])
        .await;
    let stats = h.mock.stats();
    assert_eq!(status, ExitStatus::StoppedEarly);
    assert_eq!(records.len(), 32, "one record per input row");
    let rows = by_row(&records);
    assert_eq!(rows[&2]["status"], "succeeded");
    assert_eq!(rows[&3]["status"], "failed");
    assert_eq!(rows[&3]["errorCode"], "accessDenied");
    let not_attempted = records
        .iter()
        .filter(|r| r["status"] == "not_attempted")
        .count();
    assert_eq!(not_attempted, 30);
    assert_eq!(stats.graph_requests, 2, "nothing is sent after the 403");
}

#[tokio::test]
async fn both_response_shapes_and_a_null_correlation_id_are_read() {
    for shape in [ResponseShape::Docs, ResponseShape::Schema] {
        let h = Harness::start(MockConfig {
            response_shape: shape,
            ..MockConfig::default()
        })
        .await;
        let rows = vec![
            "shape-a,00u1,disable,okta,INC-1".to_owned(),
            "nullcorr-b,00u2,disable,okta,INC-2".to_owned(),
        ];
        let (status, records) = h.run_rows(&rows, &["--rate", "100/s"]).await;
        assert_eq!(status, ExitStatus::Success, "{shape:?}");
        let rows = by_row(&records);
        let correlation = rows[&2]["correlationId"].as_str().unwrap();
        assert_eq!(correlation.len(), 36, "{shape:?}: a GUID");
        assert!(rows[&3]["correlationId"].is_null(), "{shape:?}");
        assert_eq!(rows[&3]["status"], "succeeded");
    }
}

#[tokio::test]
async fn results_fields_come_in_spec_order_in_jsonl_and_csv() {
    let h = Harness::new().await;
    let input = h.dir.path().join("in.csv");
    std::fs::write(
        &input,
        "identityAccountId,accountId,action,identityProvider,upn,note\n\
         a-1,00u1,disable,okta,a@contoso.com,\"=HYPERLINK(\"\"http://evil\"\")\"\n\
         a-1,00u1,disable,okta,a@contoso.com,again\n",
    )
    .unwrap();
    let expected = [
        "correlationId",
        "row",
        "identityAccountId",
        "accountId",
        "action",
        "identityProvider",
        "status",
        "httpStatus",
        "attempts",
        "errorCode",
        "errorMessage",
        "requestId",
        "clientRequestId",
        "startedAt",
        "finishedAt",
        "resolvedBy",
        "effect",
        "confirmedAt",
        "upn",
        "note",
    ];
    for name in ["out.jsonl", "out.csv"] {
        let output = h.dir.path().join(name);
        let status = h
            .run(&input, &["-o", output.to_str().unwrap()])
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Success);
        let text = std::fs::read_to_string(&output).unwrap();
        if name.ends_with(".jsonl") {
            let first = text.lines().next().unwrap();
            let value: serde_json::Value = serde_json::from_str(first).unwrap();
            let mut keys: Vec<(usize, &str)> = value
                .as_object()
                .unwrap()
                .keys()
                .map(|k| (first.find(&format!("\"{k}\":")).unwrap(), k.as_str()))
                .collect();
            keys.sort();
            let keys: Vec<&str> = keys.into_iter().map(|(_, k)| k).collect();
            assert_eq!(keys, expected);
            assert!(
                text.contains("\"note\":\"=HYPERLINK(\\\"http://evil\\\")\""),
                "JSONL keeps the cell as it was"
            );
        } else {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let header: Vec<String> = reader
                .headers()
                .unwrap()
                .iter()
                .map(str::to_owned)
                .collect();
            assert_eq!(header, expected);
            let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
            assert_eq!(records.len(), 2);
            let first = records.iter().find(|r| &r[1] == "2").unwrap();
            assert_eq!(&first[6], "succeeded");
            assert_eq!(
                &first[19], "'=HYPERLINK(\"http://evil\")",
                "formula neutralised"
            );
            let duplicate = records.iter().find(|r| &r[1] == "3").unwrap();
            assert_eq!(&duplicate[6], "skipped");
        }
    }
}

#[tokio::test]
async fn rows_for_one_account_run_in_file_order_never_at_once() {
    let h = Harness::start(MockConfig {
        latency: Duration::from_millis(60),
        record: true,
        ..MockConfig::default()
    })
    .await;
    let mut rows = Vec::new();
    // Distinct actions: a repeated (account, action, provider) would be a skipped duplicate.
    let same = ["disable", "forcePasswordReset", "enable"];
    for (i, action) in same.iter().enumerate() {
        rows.push(format!(
            "same-acct,S-1-5-21-9,{action},activeDirectory,INC-{i}"
        ));
        rows.push(format!(
            "other-{i},S-1-5-21-{i},disable,activeDirectory,INC-x{i}"
        ));
    }
    let (status, records) = h
        .run_rows(&rows, &["--rate", "1000/s", "--concurrency", "8"])
        .await;
    let requests = h.mock.requests();
    assert_eq!(status, ExitStatus::Success);
    let actions: Vec<String> = requests
        .iter()
        .filter(|r| r.path.contains("/same-acct/"))
        .map(|r| {
            r.body.as_ref().unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, same);
    // Never two at once: each started after the previous one finished.
    let mut same_rows: Vec<_> = records
        .iter()
        .filter(|r| r["identityAccountId"] == "same-acct")
        .collect();
    same_rows.sort_by_key(|r| r["row"].as_u64());
    for pair in same_rows.windows(2) {
        assert!(
            pair[1]["startedAt"].as_str() >= pair[0]["finishedAt"].as_str(),
            "{pair:?}"
        );
    }
}

#[tokio::test]
async fn the_id_is_percent_encoded_and_the_qualified_segment_is_used() {
    let h = Harness::start(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await;
    let rows = vec!["id with space,00u1,disable,okta,INC-1".to_owned()];
    let (status, _) = h
        .run_rows(&rows, &["--rate", "100/s", "--api-version", "v1.0"])
        .await;
    let requests = h.mock.requests();
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(
        requests[0].path,
        "/v1.0/security/identities/identityAccounts/id%20with%20space/microsoft.graph.security.invokeAction"
    );
}

/// Issue 13: the lock file beside the results records who ran the batch and how (for `report`),
/// from the ready token's own claims, and never the token.
#[tokio::test]
async fn issue_13_the_run_records_its_tenant_app_and_command_line_never_a_secret() {
    use base64::Engine;
    let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let token = format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(r#"{"alg":"RS256","typ":"JWT"}"#),
        encode(
            r#"{"tid":"11111111-2222-3333-4444-555555555555","appid":"66666666-7777-8888-9999-000000000000","exp":4102444800}"#
        )
    );
    let h = Harness::start(MockConfig {
        static_tokens: vec![token.clone()],
        ..MockConfig::default()
    })
    .await;
    std::fs::write(&h.token, &token).unwrap();
    let input = h.input(&common::plain_rows(2));
    assert_eq!(h.run(&input, &[]).await.unwrap(), ExitStatus::Success);
    let lock = std::fs::read_to_string(h.path("results.jsonl.lock")).unwrap();
    let state: serde_json::Value = serde_json::from_str(lock.trim()).unwrap();
    assert_eq!(state["tenant"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(state["clientId"], "66666666-7777-8888-9999-000000000000");
    assert_eq!(
        state["credential"],
        "a ready access token (--access-token-file)"
    );
    assert!(state["startedAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        state["commandLine"]
            .as_str()
            .unwrap()
            .contains("graph-remediate run"),
        "{state}"
    );
    assert!(!lock.contains(&token), "the token never reaches the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_run_undo_file_never_replaces_a_runs_records_and_asks_before_replacing_a_file() {
    let h = Harness::new().await;
    // A first run: its input, results, lock and undo file.
    let first_input = h.write(
        "first.csv",
        &[
            "identityAccountId,accountId,action,identityProvider",
            "acct-1,00u1,disable,okta",
        ],
    );
    let first_results = h.path("first.results.jsonl");
    let undo = h.path("undo.csv");
    let status = h
        .run(
            &first_input,
            &[
                "-o",
                first_results.to_str().unwrap(),
                "--undo-file",
                undo.to_str().unwrap(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    let input = h.input(&plain_rows(2));
    for (target, why) in [
        (&first_input, "the input of the run"),
        (&first_results, "the results file of the run"),
    ] {
        let before = std::fs::read(target).unwrap();
        let sent = h.graph_requests();
        let result = h
            .run(
                &input,
                &["--undo-file", target.to_str().unwrap(), "--replace"],
            )
            .await;
        assert_eq!(status_of(&result), ExitStatus::InputError, "{result:?}");
        let error = format!("{:#}", result.unwrap_err());
        assert!(
            error.contains("no command replaces a run's record"),
            "{error}"
        );
        assert!(error.contains(why), "{why}: {error}");
        assert_eq!(std::fs::read(target).unwrap(), before, "left as it was");
        assert_eq!(h.graph_requests(), sent, "nothing sent");
    }
    // The first run's undo file is an ordinary file to another run: only with --replace.
    let before = std::fs::read(&undo).unwrap();
    let result = h
        .run(&input, &["--undo-file", undo.to_str().unwrap()])
        .await;
    assert_eq!(status_of(&result), ExitStatus::InputError, "{result:?}");
    assert!(format!("{:#}", result.unwrap_err()).contains("pass --replace"));
    assert_eq!(std::fs::read(&undo).unwrap(), before);
    // A resume of the first run rebuilds its own undo file without being told.
    let status = h
        .run(
            &first_input,
            &[
                "-o",
                first_results.to_str().unwrap(),
                "--undo-file",
                undo.to_str().unwrap(),
                "--resume",
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    let status = h
        .run(
            &input,
            &["--undo-file", undo.to_str().unwrap(), "--replace"],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    assert!(std::fs::read_to_string(&undo).unwrap().contains("id-00001"));
}

fn status_of(result: &anyhow::Result<ExitStatus>) -> ExitStatus {
    common::status(result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_an_action_or_provider_column_that_disagrees_with_the_flag_is_refused() {
    let h = Harness::new().await;
    let input = h.write(
        "mixed.csv",
        &[
            "identityAccountId,accountId,action,identityProvider",
            "acct-1,00u1,disable,okta",
            "acct-2,00u2,enable,okta",
            "acct-3,00u3,Disable,activeDirectory",
        ],
    );
    let out = h
        .binary(&input, &["--action", "disable", "--provider", "okta"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = input.display();
    assert!(
        stderr.contains(&format!(
            "{file}:3: the action column says enable but --action says disable"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:4: the identityProvider column says activeDirectory but --provider says okta"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("{file}:2:")),
        "line 2 agrees: {stderr}"
    );
    assert_eq!(h.graph_requests(), 0, "nothing sent");
    // Agreeing flags, or none, are fine.
    let out = h.binary(&input, &[]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_dry_run_shows_the_action_of_rows_to_look_up() {
    let h = Harness::new().await;
    let input = h.write(
        "people.csv",
        &[
            "upn,action",
            "ann@contoso.com,enable",
            "bob@contoso.com,disable",
            "cid@contoso.com,disable",
        ],
    );
    let out = h.binary(&input, &["--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("action (to look up)"), "{stdout}");
    let rows = |action: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(action))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_owned)
    };
    assert_eq!(rows("enable").as_deref(), Some("1"), "{stdout}");
    assert_eq!(rows("disable").as_deref(), Some("2"), "{stdout}");
    assert_eq!(h.graph_requests(), 0);
}
