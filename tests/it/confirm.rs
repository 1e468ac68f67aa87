//! Confirming the effect (SPEC section 10, issue 19): `run --confirm` and `confirm` against a mock
//! whose tenant carries accepted actions out late (`effect_delay`) or never (`effect_never`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::common;

use clap::Parser;
use common::{Harness, by_row, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::cli::Cli;
use graph_remediate::mock::{Identity, LinkedAccount, MockConfig, Tenant};
use serde_json::Value;

fn effect_mock(tenant: Tenant, delay: Duration, never: Option<&str>) -> MockConfig {
    MockConfig {
        tenant: Some(tenant),
        effect_delay: delay,
        effect_never: never.map(|pattern| regex::Regex::new(pattern).unwrap()),
        ..MockConfig::default()
    }
}

/// `disable` of identity `i`'s AD account (hybrid identities only: `i % 5 != 0`).
fn ad_row(i: usize, action: &str) -> String {
    format!(
        "{},{},{action},activeDirectory,T-{i}",
        Tenant::synthetic_id(i),
        Tenant::synthetic_ad_account(i).unwrap()
    )
}

fn entra_row(i: usize, action: &str) -> String {
    format!(
        "{},{},{action},entraID,T-{i}",
        Tenant::synthetic_id(i),
        Tenant::synthetic_object_id(i)
    )
}

fn time(record: &Value, field: &str) -> SystemTime {
    humantime::parse_rfc3339(
        record[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {record}")),
    )
    .unwrap()
}

/// `graph-remediate confirm RESULTS --graph-url ... EXTRA` in process.
async fn confirm(h: &Harness, extra: &[&str]) -> anyhow::Result<ExitStatus> {
    let mut argv: Vec<String> = vec![
        "graph-remediate".into(),
        "confirm".into(),
        h.results().to_str().unwrap().into(),
        "--graph-url".into(),
        h.mock.base_url(),
        "--access-token-file".into(),
        h.token.to_str().unwrap().into(),
        "--rate".into(),
        "1000/s".into(),
    ];
    argv.extend(extra.iter().map(|a| (*a).to_owned()));
    let cli = Cli::try_parse_from(argv).expect("arguments parse");
    graph_remediate::execute(cli.command, std::future::pending()).await
}

fn reads_of(h: &Harness, needle: &str) -> Vec<graph_remediate::mock::LoggedRequest> {
    h.mock
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(needle))
        .collect()
}

#[tokio::test]
async fn issue_19_an_effect_that_shows_late_is_confirmed_after_the_delay() {
    let delay = Duration::from_millis(700);
    let h = Harness::start(effect_mock(Tenant::synthetic(20), delay, None)).await;
    let (status, records) = h
        .run_rows(
            &[
                ad_row(1, "disable"),
                ad_row(2, "disable"),
                entra_row(3, "disable"),
            ],
            // Microsoft lists Entra ID's disable as not in scope yet; the mock carries it out.
            &["--confirm", "20s", "--allow-unlisted"],
        )
        .await;
    assert_eq!(status, ExitStatus::Success, "{records:?}");
    for record in &records {
        assert_eq!(record["status"], "succeeded");
        assert_eq!(record["effect"], "confirmed", "{record}");
        let (acted, seen) = (time(record, "startedAt"), time(record, "confirmedAt"));
        assert!(
            seen.duration_since(acted).unwrap() >= delay,
            "confirmed {:?} after the action, before the effect could show",
            seen.duration_since(acted)
        );
    }
    // The Entra ID row was checked on the user too, with the documented $select.
    let users = reads_of(&h, &format!("/users/{}", Tenant::synthetic_object_id(3)));
    assert!(!users.is_empty());
    assert!(
        users.iter().all(|r| r
            .query
            .as_deref()
            .unwrap_or_default()
            .contains("accountEnabled")),
        "{users:?}"
    );
    // The fields sit after resolvedBy, in the journal's order.
    let text = std::fs::read_to_string(h.results()).unwrap();
    assert!(text.contains(r#""resolvedBy":null,"effect":"confirmed","confirmedAt":""#));
}

#[tokio::test]
async fn issue_19_an_effect_that_never_shows_is_not_confirmed_at_the_deadline_and_exits_3() {
    let never = Tenant::synthetic_id(2);
    let h = Harness::start(effect_mock(
        Tenant::synthetic(20),
        Duration::ZERO,
        Some(&format!("^{never}$")),
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, records) = h
        .run_rows(
            &[ad_row(1, "disable"), ad_row(2, "disable")],
            &["--confirm", "2s"],
        )
        .await;
    assert_eq!(status, ExitStatus::RowsFailed);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the whole WAIT"
    );
    let rows = by_row(&records);
    assert_eq!(rows[&2]["effect"], "confirmed");
    assert_eq!(
        rows[&3]["status"], "succeeded",
        "accepted is still succeeded"
    );
    assert_eq!(rows[&3]["effect"], "notConfirmed");
    assert_eq!(rows[&3]["confirmedAt"], Value::Null);
    // Rounds, not a busy loop: the broken identity was read a few times, not hundreds.
    let reads = reads_of(&h, &format!("identityAccounts/{never}")).len();
    assert!(
        (2..=5).contains(&reads),
        "{reads} reads of the broken identity"
    );
}

#[tokio::test]
async fn issue_19_a_later_confirm_flips_a_row_that_showed_after_the_wait() {
    let delay = Duration::from_millis(2500);
    let h = Harness::start(effect_mock(Tenant::synthetic(20), delay, None)).await;
    let (status, records) = h
        .run_rows(&[ad_row(1, "disable")], &["--confirm", "300ms"])
        .await;
    assert_eq!(status, ExitStatus::RowsFailed);
    assert_eq!(records[0]["effect"], "notConfirmed");
    tokio::time::sleep(delay).await;
    let status = confirm(&h, &["--wait", "10s"]).await.unwrap();
    assert_eq!(status, ExitStatus::Success);
    let after = read_jsonl(&h.results());
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["effect"], "confirmed");
    assert!(time(&after[0], "confirmedAt") >= time(&after[0], "startedAt") + delay);
    // Everything else in the record is as the run wrote it.
    let mut before = records[0].clone();
    let mut now = after[0].clone();
    for record in [&mut before, &mut now] {
        record.as_object_mut().unwrap().remove("effect");
        record.as_object_mut().unwrap().remove("confirmedAt");
    }
    assert_eq!(before, now);
    // A second confirm has nothing left to read.
    let gets = reads_of(&h, "identityAccounts/").len();
    assert_eq!(confirm(&h, &[]).await.unwrap(), ExitStatus::Success);
    assert_eq!(reads_of(&h, "identityAccounts/").len(), gets);
}

#[tokio::test]
async fn issue_19_a_password_reset_is_not_observable_and_never_a_failure() {
    let h = Harness::start(effect_mock(Tenant::synthetic(20), Duration::ZERO, None)).await;
    let (status, records) = h
        .run_rows(&[ad_row(1, "forcePasswordReset")], &["--confirm", "5s"])
        .await;
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(records[0]["effect"], "notObservable");
    assert_eq!(records[0]["confirmedAt"], Value::Null);
    assert!(
        reads_of(&h, "/").is_empty(),
        "nothing to read for an action Graph shows nothing of"
    );
}

#[tokio::test]
async fn issue_19_an_entra_revoke_is_checked_by_sign_in_sessions_valid_from() {
    let delay = Duration::from_millis(1200);
    let broken = Tenant::synthetic_id(4);
    let h = Harness::start(effect_mock(
        Tenant::synthetic(20),
        delay,
        Some(&format!("^{broken}$")),
    ))
    .await;
    let (status, records) = h
        .run_rows(
            &[
                entra_row(3, "revokeAllSessions"),
                entra_row(4, "revokeAllSessions"),
            ],
            &["--confirm", "4s", "--allow-unlisted"],
        )
        .await;
    assert_eq!(status, ExitStatus::RowsFailed);
    let rows = by_row(&records);
    assert_eq!(rows[&2]["effect"], "confirmed");
    assert!(time(&rows[&2], "confirmedAt") >= time(&rows[&2], "startedAt") + delay);
    // The broken sensor's user keeps sessions valid from before the action.
    assert_eq!(rows[&3]["effect"], "notConfirmed");
    let users = reads_of(&h, &format!("/users/{}", Tenant::synthetic_object_id(3)));
    assert!(
        users.iter().all(|r| r
            .query
            .as_deref()
            .unwrap_or_default()
            .contains("signInSessionsValidFromDateTime")),
        "{users:?}"
    );
    assert!(
        reads_of(&h, "identityAccounts").is_empty(),
        "a session revoke shows on the user only"
    );
}

#[tokio::test]
async fn issue_19_a_429_in_the_confirm_phase_pauses_only_its_service() {
    // A list of 200 pages: the identities at its end are read one by one, or by a walk of the
    // list's first pages first; either way /security is read while /users is paused.
    let mut tenant = Tenant::synthetic(2000);
    tenant.push(Identity {
        id: "ia-bob".to_owned(),
        is_enabled: Some(true),
        accounts: vec![LinkedAccount {
            identifier: "http429x1-oid-bob".to_owned(),
            identity_provider: "entraID".to_owned(),
            actions: vec!["disable".to_owned()],
        }],
        ..Identity::default()
    });
    let h = Harness::start(MockConfig {
        page_size: 10,
        ..effect_mock(tenant, Duration::ZERO, None)
    })
    .await;
    let mut rows = vec!["ia-bob,http429x1-oid-bob,disable,entraID,T-bob".to_owned()];
    rows.extend(
        (1950..2000)
            .filter(|i| i % 5 != 0)
            .map(|i| ad_row(i, "disable")),
    );
    let (status, records) = h
        .run_rows(
            &rows,
            &["--confirm", "20s", "--rate", "40/s", "--allow-unlisted"],
        )
        .await;
    assert_eq!(status, ExitStatus::Success, "{records:?}");
    assert!(records.iter().all(|r| r["effect"] == "confirmed"));
    let log = h.mock.requests();
    let told = log
        .iter()
        .find(|r| r.status == 429 && r.path.contains("/users"))
        .expect("the scripted 429 on the user read");
    let window = (told.t_ms, told.window_end_ms.unwrap());
    let users_inside = log
        .iter()
        .filter(|r| r.path.contains("/users") && r.t_ms > window.0 && r.t_ms < window.1)
        .count();
    assert_eq!(users_inside, 0, "no user read inside the told window");
    let security_inside = log
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.contains("/security/")
                && r.t_ms > window.0
                && r.t_ms < window.1
        })
        .count();
    assert!(
        security_inside > 5,
        "the identity reads go on through the /users pause ({security_inside})"
    );
    assert_eq!(h.mock.stats().inside_told_window, 0);
}

/// Resolves once the mock's request log holds `count` identity reads.
async fn after_identity_reads(log: std::path::PathBuf, count: usize) {
    loop {
        let reads = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(r#""method":"GET""#) && l.contains("identityAccounts/"))
            .count();
        if reads >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn issue_19_ctrl_c_in_the_confirm_phase_exits_130_and_keeps_what_was_confirmed() {
    let never = Tenant::synthetic_id(4);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let mut config = effect_mock(
        Tenant::synthetic(20),
        Duration::ZERO,
        Some(&format!("^{never}$")),
    );
    config.request_log = Some(log.clone());
    let h = Harness::start(config).await;
    let input = h.input(&[
        ad_row(1, "disable"),
        ad_row(2, "disable"),
        ad_row(3, "disable"),
        ad_row(4, "disable"),
    ]);
    let cli = Cli::try_parse_from(
        ["graph-remediate".to_owned(), "run".to_owned()]
            .into_iter()
            .chain(h.args(&input, &["--confirm", "60s"])),
    )
    .unwrap();
    let started = std::time::Instant::now();
    // Ctrl-C once the first round has read all four identities: the second round waits.
    let status = graph_remediate::execute(cli.command, after_identity_reads(log, 4))
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Interrupted);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "did not wait for WAIT"
    );
    let rows = by_row(&read_jsonl(&h.results()));
    for line in [2, 3, 4] {
        assert_eq!(rows[&line]["effect"], "confirmed", "line {line}");
    }
    assert_eq!(
        rows[&5]["effect"],
        Value::Null,
        "not decided: left for confirm"
    );
}

#[tokio::test]
async fn issue_19_confirm_refuses_a_results_file_another_process_holds() {
    let never = Tenant::synthetic_id(1);
    let h = Harness::start(effect_mock(
        Tenant::synthetic(20),
        Duration::ZERO,
        Some(&format!("^{never}$")),
    ))
    .await;
    let input = h.input(&[ad_row(1, "disable")]);
    let mut child = h
        .binary(&input, &["--confirm", "60s"])
        .spawn()
        .expect("the binary starts");
    // The child is in its confirm phase once the mock has seen it read the identity.
    common::wait_until("the child's confirm phase", Duration::from_secs(30), || {
        !reads_of(&h, "identityAccounts/").is_empty()
    })
    .await;
    let result = confirm(&h, &["--wait", "1s"]).await;
    let _ = child.kill();
    let _ = child.wait();
    let error = result.expect_err("confirm must refuse a held results file");
    assert_eq!(graph_remediate::status_of(&error), ExitStatus::StoppedEarly);
    let message = format!("{error:#}");
    assert!(
        message.contains("nothing was read or rewritten"),
        "{message}"
    );
    assert!(Path::new(&h.results()).exists());
}

#[tokio::test]
async fn issue_19_the_report_shows_each_effect_and_undo_leaves_out_what_never_took_effect() {
    let never = Tenant::synthetic_id(2);
    let h = Harness::start(effect_mock(
        Tenant::synthetic(20),
        Duration::ZERO,
        Some(&format!("^{never}$")),
    ))
    .await;
    let undo = h.path("undo.csv");
    let (status, _) = h
        .run_rows(
            &[
                ad_row(1, "disable"),
                ad_row(2, "disable"),
                ad_row(3, "forcePasswordReset"),
            ],
            &["--confirm", "1s", "--undo-file", undo.to_str().unwrap()],
        )
        .await;
    assert_eq!(status, ExitStatus::RowsFailed);
    let undo_rows = std::fs::read_to_string(&undo).unwrap();
    assert!(undo_rows.contains(&Tenant::synthetic_id(1)), "{undo_rows}");
    assert!(
        !undo_rows.contains(&never),
        "an action that never took effect needs no undo: {undo_rows}"
    );
    let report = h.path("report.md");
    let cli = Cli::try_parse_from([
        "graph-remediate",
        "report",
        h.results().to_str().unwrap(),
        "-o",
        report.to_str().unwrap(),
    ])
    .unwrap();
    let status = graph_remediate::execute(cli.command, std::future::pending())
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    let text = std::fs::read_to_string(&report).unwrap();
    for count in [
        "| confirmed | 1 |",
        "| notConfirmed | 1 |",
        "| notObservable | 1 |",
    ] {
        assert!(text.contains(count), "{count} in {text}");
    }
    assert!(text.contains("| Status | Effect | Error |"), "{text}");
    assert!(text.contains("| succeeded | notConfirmed |"), "{text}");
    assert!(
        text.contains("1 row(s) whose action never showed"),
        "{text}"
    );
}

#[tokio::test]
async fn issue_19_csv_results_get_their_effect_in_its_column() {
    let h = Harness::start(effect_mock(
        Tenant::synthetic(20),
        Duration::from_millis(300),
        None,
    ))
    .await;
    let input = h.input(&[ad_row(1, "disable"), ad_row(2, "forcePasswordReset")]);
    let results = h.path("results.csv");
    let status = h
        .run(
            &input,
            &["-o", results.to_str().unwrap(), "--confirm", "10s"],
        )
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Success);
    let mut reader = csv::Reader::from_path(&results).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(at("effect"), at("resolvedBy") + 1);
    assert_eq!(at("confirmedAt"), at("effect") + 1);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let effects: Vec<&str> = records.iter().map(|r| &r[at("effect")]).collect();
    assert_eq!(effects, vec!["confirmed", "notObservable"]);
    assert!(!records[0][at("confirmedAt")].is_empty());
    assert_eq!(&records[0][at("ticket")], "T-1");
}
