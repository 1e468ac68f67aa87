//! `graph-remediate resolve` (SPEC section 8, issue 12): every row looked up, the input written
//! back with the ids filled in, unresolved rows listed as FILE:LINE: reason, no action sent.

use super::common;

use common::{Harness, by_row, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, Tenant};

async fn tenant_harness() -> Harness {
    Harness::start(MockConfig {
        tenant: Some(Tenant::synthetic(40)),
        page_size: 10,
        ..MockConfig::default()
    })
    .await
}

/// `resolve INPUT -o OUTPUT` against the harness's mock, as the binary.
fn resolve(
    h: &Harness,
    input: &std::path::Path,
    output: &str,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("resolve")
        .arg(input)
        .args(["-o", h.path(output).to_str().unwrap()])
        .args(["--graph-url", &h.mock.base_url()])
        .args(["--access-token-file", h.token.to_str().unwrap()])
        .args(["--rate", "1000/s"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn export(h: &Harness, lines: &[String]) -> std::path::PathBuf {
    let path = h.path("export.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_resolve_writes_the_ids_back_and_lists_what_it_cannot_resolve() {
    let h = tenant_harness().await;
    let input = export(
        &h,
        &[
            "AccountUpn,OnPremSid,AccountObjectId,ticket".to_owned(),
            format!("{},,,INC-1", Tenant::synthetic_upn(1)),
            format!(",{},,INC-2", Tenant::synthetic_sid(2).unwrap()),
            format!(",,{},INC-3", Tenant::synthetic_object_id(5)),
            "nobody@contoso.com,,,INC-4".to_owned(),
        ],
    );
    let output = resolve(
        &h,
        &input,
        "resolved.jsonl",
        &["--action", "disable", "--provider", "entraID"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:5: identityNotFound: no identity has upn \"nobody@contoso.com\"",
            input.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 of 4 row(s) resolved"), "{stderr}");

    let rows = read_jsonl(&h.path("resolved.jsonl"));
    assert_eq!(rows.len(), 4, "every row, in input order");
    for (row, i, column) in [(0, 1, "upn"), (1, 2, "sid"), (2, 5, "objectId")] {
        let record = &rows[row];
        assert_eq!(record["identityAccountId"], Tenant::synthetic_id(i));
        assert_eq!(record["accountId"], Tenant::synthetic_object_id(i));
        assert_eq!(record["identityProvider"], "entraID");
        assert_eq!(record["action"], "disable");
        assert_eq!(record["resolvedBy"], column);
        assert_eq!(record["displayName"], format!("Synthetic User {i}"));
        assert_eq!(record["isEnabled"], true);
        assert!(
            record["offeredActions"]
                .as_array()
                .unwrap()
                .contains(&"revokeAllSessions".into()),
            "{record}"
        );
        assert_eq!(record["ticket"], format!("INC-{}", row + 1), "carried");
    }
    assert_eq!(rows[3]["resolvedBy"], "", "unresolved rows say so");
    assert_eq!(rows[3]["AccountUpn"], "nobody@contoso.com");
    // The input's columns keep their order (issue 17: serde_json's map sorted them).
    let text = std::fs::read_to_string(h.path("resolved.jsonl")).unwrap();
    let first = text.lines().next().unwrap();
    let at = |key: &str| first.find(&format!("\"{key}\":")).unwrap();
    assert!(
        at("AccountUpn") < at("OnPremSid")
            && at("OnPremSid") < at("AccountObjectId")
            && at("AccountObjectId") < at("ticket"),
        "{first}"
    );

    let posts = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 0, "resolve sends no action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_resolved_output_runs_as_it_is_with_no_read() {
    let h = tenant_harness().await;
    let input = export(
        &h,
        &[
            "upn,sid,action".to_owned(),
            format!("{},,forcePasswordReset", Tenant::synthetic_upn(3)),
            format!(",{},disable", Tenant::synthetic_sid(4).unwrap()),
        ],
    );
    let output = resolve(
        &h,
        &input,
        "resolved.csv",
        &["--provider", "activeDirectory"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reads_before = h.mock.stats();
    let resolved = h.path("resolved.csv");
    let status = h.run(&resolved, &[]).await.unwrap();
    assert_eq!(status, ExitStatus::Success);
    let after = h.mock.stats();
    assert_eq!(
        after.identity_list_pages
            + after.identity_gets
            + after.sid_filter_queries
            + after.user_reads,
        reads_before.identity_list_pages
            + reads_before.identity_gets
            + reads_before.sid_filter_queries
            + reads_before.user_reads,
        "every row carries its ids: no read"
    );
    let rows = by_row(&read_jsonl(&h.results()));
    assert_eq!(rows[&2]["identityAccountId"], Tenant::synthetic_id(3));
    assert_eq!(
        rows[&3]["accountId"],
        Tenant::synthetic_ad_account(4).unwrap()
    );
    assert!(rows.values().all(|r| r["status"] == "succeeded"));
    // The columns the responder named people by are still there, beside the outcome.
    assert_eq!(rows[&2]["upn"], Tenant::synthetic_upn(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_resolve_refuses_bad_rows_before_any_read() {
    let h = tenant_harness().await;
    let input = export(
        &h,
        &[
            "upn,action".to_owned(),
            format!("{},disable", Tenant::synthetic_upn(3)),
            "ann@contoso.com,lock".to_owned(),
        ],
    );
    let output = resolve(&h, &input, "resolved.csv", &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(":3: unknown action \"lock\""), "{stderr}");
    assert_eq!(h.graph_requests(), 0);
    assert!(!h.path("resolved.csv").exists());

    let output = resolve(&h, &input, "resolved.csv", &["--no-lookup"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("resolve is the lookup"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_resolve_never_replaces_a_runs_records_and_asks_before_replacing_a_file() {
    let h = tenant_harness().await;
    let input = export(
        &h,
        &[
            "upn,action".to_owned(),
            format!("{},disable", Tenant::synthetic_upn(3)),
        ],
    );
    let output = resolve(
        &h,
        &input,
        "resolved.csv",
        &["--provider", "activeDirectory"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // A run of what resolve wrote: its results, lock and snapshot, and resolved.csv its input.
    let resolved = h.path("resolved.csv");
    assert_eq!(
        h.run(&resolved, &["--verify"]).await.unwrap(),
        ExitStatus::Success
    );
    let requests = h.graph_requests();
    for (target, why) in [
        ("resolved.csv", "the input of the run"),
        ("results.jsonl", "the results file of the run"),
        (
            "results.identities.jsonl",
            "the identity snapshot of the run",
        ),
        ("results.jsonl.lock", "lock"),
    ] {
        let before = std::fs::read(h.path(target)).unwrap();
        let output = resolve(
            &h,
            &input,
            target,
            &["--provider", "activeDirectory", "--replace"],
        );
        assert_eq!(output.status.code(), Some(2), "{target}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("no command replaces a run's record"),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{why}: {stderr}");
        assert_eq!(
            std::fs::read(h.path(target)).unwrap(),
            before,
            "{target} as it was"
        );
    }
    assert_eq!(h.graph_requests(), requests, "refused before any read");
    // Any other existing file only with --replace.
    std::fs::write(h.path("review.csv"), "kept").unwrap();
    let output = resolve(&h, &input, "review.csv", &["--provider", "activeDirectory"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("exists already; pass --replace"),
        "{output:?}"
    );
    assert_eq!(
        std::fs::read_to_string(h.path("review.csv")).unwrap(),
        "kept"
    );
    let output = resolve(
        &h,
        &input,
        "review.csv",
        &["--provider", "activeDirectory", "--replace"],
    );
    // (3: the run above disabled the account, which no longer offers disable.)
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        std::fs::read_to_string(h.path("review.csv"))
            .unwrap()
            .contains("resolvedBy")
    );
}

/// A tenant whose identity 3 has a UPN a spreadsheet reads as a formula and a display name
/// holding terminal escapes, CR/LF and a right-to-left override.
async fn hostile_tenant_harness() -> Harness {
    let identities = (0..40)
        .map(|i| {
            let mut identity = Tenant::synthetic_identity(i);
            if i == 3 {
                identity.user_principal_name = Some("-dash@contoso.com".to_owned());
                identity.display_name =
                    Some("Eve\u{1b}[2J\u{7}\r\nFAKE,row\u{202e}txt.exe".to_owned());
            }
            identity
        })
        .collect();
    Harness::start(MockConfig {
        tenant: Some(Tenant::from_identities(identities)),
        page_size: 10,
        ..MockConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_resolved_csv_and_its_undo_file_open_safely_and_run_with_verify() {
    let h = hostile_tenant_harness().await;
    let input = export(
        &h,
        &[
            "upn,action".to_owned(),
            "-dash@contoso.com,disable".to_owned(),
        ],
    );
    let output = resolve(
        &h,
        &input,
        "resolved.csv",
        &["--provider", "activeDirectory"],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let resolved = h.path("resolved.csv");
    let text = std::fs::read_to_string(&resolved).unwrap();
    // Opens safely: no control character, no cell a spreadsheet would run.
    assert!(!text.contains(['\u{1b}', '\u{7}', '\u{202e}']), "{text:?}");
    let mut reader = csv::Reader::from_path(&resolved).unwrap();
    let headers = reader.headers().unwrap().clone();
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1, "{text:?}");
    for cell in records[0].iter() {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{cell:?} in {text:?}"
        );
    }
    let name = headers.iter().position(|h| h == "displayName").unwrap();
    assert_eq!(
        &records[0][name],
        r"Eve\u{1b}[2J\u{7}\u{d}\u{a}FAKE,row\u{202e}txt.exe"
    );
    // Runs as it is, --verify confirming the UPN; and so does its undo file.
    let undo = h.path("undo.csv");
    let status = h
        .run(
            &resolved,
            &["--verify", "--undo-file", undo.to_str().unwrap()],
        )
        .await
        .unwrap();
    let records = read_jsonl(&h.results());
    assert_eq!(status, ExitStatus::Success, "{records:?}");
    assert_eq!(records[0]["status"], "succeeded", "{:?}", records[0]);
    assert_eq!(records[0]["upn"], "-dash@contoso.com");
    let undo_text = std::fs::read_to_string(&undo).unwrap();
    assert!(undo_text.contains("'-dash@contoso.com"), "{undo_text}");
    let again = h.path("again.jsonl");
    let status = h
        .run(&undo, &["--verify", "-o", again.to_str().unwrap()])
        .await
        .unwrap();
    let records = read_jsonl(&again);
    assert_eq!(status, ExitStatus::Success, "{records:?}");
    assert_eq!(records[0]["status"], "succeeded");
    assert_eq!(records[0]["action"], "enable");
}
