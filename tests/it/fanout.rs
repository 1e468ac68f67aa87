//! Acting on every linked account of a person (issue 20): `--all-accounts` on `run` and
//! `resolve`, and the `allAccounts` column, end to end against a mock serving a seeded tenant.
//!
//! The synthetic tenant's identities 8 and 12 have an Active Directory, an Entra ID and an Okta
//! account, each offering `disable`, and hold no role. [`hand_linked`] adds a person whose
//! personal and admin Entra ID accounts an analyst linked to one identity by hand.

use super::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Harness, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, Tenant};
use serde_json::Value;

const HAND_LINKED_ID: &str = "7f1c2d3e-0000-4000-8000-00000000a001";
const PERSONAL_OBJECT_ID: &str = "7f1c2d3e-0000-4000-8000-00000000b001";
const ADMIN_OBJECT_ID: &str = "7f1c2d3e-0000-4000-8000-00000000c001";
const HAND_LINKED_OKTA: &str = "00uHandLinked0000001";
const HAND_LINKED_UPN: &str = "dana@contoso.com";

/// The synthetic tenant and a cloud-only person whose identity links a personal Entra ID
/// account, an Okta account and an admin Entra ID account holding Security Administrator.
fn hand_linked() -> Tenant {
    let mut tenant = Tenant::synthetic(30);
    let person = serde_json::json!({
        "id": HAND_LINKED_ID,
        "displayName": "Dana",
        "userPrincipalName": HAND_LINKED_UPN,
        "isEnabled": true,
        "accounts": [
            {"identifier": PERSONAL_OBJECT_ID, "identityProvider": "entraID", "actions": ["disable", "revokeAllSessions"]},
            {"identifier": HAND_LINKED_OKTA, "identityProvider": "okta", "actions": ["disable", "revokeAllSessions"]},
            {"identifier": ADMIN_OBJECT_ID, "identityProvider": "entraID", "actions": ["disable", "revokeAllSessions"]},
        ],
    });
    tenant.extend(Tenant::from_json(&person.to_string()).expect("an identity"));
    tenant.assign_role(Tenant::SECURITY_ADMINISTRATOR, ADMIN_OBJECT_ID);
    tenant
}

async fn harness(tenant: Tenant) -> Harness {
    Harness::start(MockConfig {
        tenant: Some(tenant),
        page_size: 10,
        ..MockConfig::default()
    })
    .await
}

/// Each record's (row, identityProvider, accountId, status, errorCode).
fn outcomes(records: &[Value]) -> BTreeSet<(u64, String, String, String, String)> {
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    records
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                text(&r["identityProvider"]),
                text(&r["accountId"]),
                text(&r["status"]),
                text(&r["errorCode"]),
            )
        })
        .collect()
}

/// How many invokeAction requests the mock received for each account id.
fn sent_per_account(h: &Harness) -> BTreeMap<String, usize> {
    let mut sent = BTreeMap::new();
    for (_, body) in h.actions_sent() {
        let account = body["accountId"].as_str().unwrap_or_default().to_owned();
        *sent.entry(account).or_default() += 1;
    }
    sent
}

/// Identity `i`'s three accounts, as (provider, identifier).
fn three_accounts(i: usize) -> [(String, String); 3] {
    [
        (
            "activeDirectory".to_owned(),
            Tenant::synthetic_ad_account(i).unwrap(),
        ),
        ("entraID".to_owned(), Tenant::synthetic_object_id(i)),
        (
            "okta".to_owned(),
            Tenant::synthetic_okta_account(i).unwrap(),
        ),
    ]
}

fn succeeded_on_each(row: u64, i: usize) -> BTreeSet<(u64, String, String, String, String)> {
    three_accounts(i)
        .into_iter()
        .map(|(provider, account)| (row, provider, account, "succeeded".into(), String::new()))
        .collect()
}

#[tokio::test]
async fn issue_20_a_person_with_three_accounts_is_disabled_on_each_in_one_row() {
    let h = harness(Tenant::synthetic(30)).await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action,ticket",
            &format!("{},disable,INC-8", Tenant::synthetic_upn(8)),
        ],
    );
    let status = h.run(&input, &["--all-accounts"]).await.expect("a status");
    assert_eq!(status, ExitStatus::Success);
    let records = read_jsonl(&h.results());
    assert_eq!(outcomes(&records), succeeded_on_each(2, 8));
    for record in &records {
        assert_eq!(record["identityAccountId"], Tenant::synthetic_id(8));
        assert_eq!(
            record["ticket"], "INC-8",
            "the row's columns on each record"
        );
        assert_eq!(record["resolvedBy"], "upn");
    }
    let sent = sent_per_account(&h);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.values().all(|&n| n == 1), "{sent:?}");
    // The mock carried each out: every account now offers enable instead.
    let identity = h.mock.identity(&Tenant::synthetic_id(8)).unwrap();
    assert!(
        identity
            .accounts
            .iter()
            .all(|a| !a.offered().iter().any(|offered| offered == "disable"))
    );
}

#[tokio::test]
async fn issue_20_the_same_person_named_by_sid_and_by_upn_acts_once_per_account() {
    let h = harness(Tenant::synthetic(30)).await;
    let input = h.write(
        "in.csv",
        &[
            "sid,upn,action",
            &format!("{},,disable", Tenant::synthetic_sid(12).unwrap()),
            &format!(",{},disable", Tenant::synthetic_upn(12)),
        ],
    );
    let status = h.run(&input, &["--all-accounts"]).await.expect("a status");
    assert_eq!(status, ExitStatus::Success);
    let records = read_jsonl(&h.results());
    let mut expected = succeeded_on_each(2, 12);
    expected.extend(
        three_accounts(12)
            .into_iter()
            .map(|(provider, account)| (3, provider, account, "skipped".into(), String::new())),
    );
    assert_eq!(outcomes(&records), expected);
    let sent = sent_per_account(&h);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.values().all(|&n| n == 1), "sent once each: {sent:?}");
}

#[tokio::test]
async fn issue_20_a_fan_out_reaching_a_privileged_linked_account_refuses_that_account_only() {
    let h = harness(hand_linked()).await;
    let input = h.write(
        "in.csv",
        &["upn,action", &format!("{HAND_LINKED_UPN},disable")],
    );
    let summary = h.path("summary.json");
    let status = h
        .run(
            &input,
            &[
                "--all-accounts",
                "--protect-privileged",
                "--summary-json",
                summary.to_str().unwrap(),
            ],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = read_jsonl(&h.results());
    let expected: BTreeSet<_> = [
        ("entraID", PERSONAL_OBJECT_ID, "succeeded", ""),
        ("okta", HAND_LINKED_OKTA, "succeeded", ""),
        ("entraID", ADMIN_OBJECT_ID, "failed", "privilegedIdentity"),
    ]
    .into_iter()
    .map(|(p, a, s, c)| (2, p.to_owned(), a.to_owned(), s.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(outcomes(&records), expected);
    let refused = records
        .iter()
        .find(|r| r["accountId"] == ADMIN_OBJECT_ID)
        .unwrap();
    let message = refused["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("Security Administrator") && message.contains("other accounts"),
        "{message}"
    );
    let sent = sent_per_account(&h);
    assert_eq!(
        sent.keys().cloned().collect::<Vec<_>>(),
        [HAND_LINKED_OKTA, PERSONAL_OBJECT_ID].map(str::to_owned),
        "nothing is sent to the admin account"
    );

    // The summary and the report group the person's records: acted on partly.
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["people"]["withSeveralAccounts"], 1, "{summary}");
    assert_eq!(summary["people"]["partly"], 1, "{summary}");
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("report")
        .arg(h.results())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let markdown = String::from_utf8_lossy(&report.stdout);
    assert!(
        markdown.contains("People: 1 with several accounts: 0 done on every account, 1 partly"),
        "{markdown}"
    );
    assert!(markdown.contains("| succeeded | 2 |"), "{markdown}");
    assert!(markdown.contains("| failed | 1 |"), "{markdown}");
}

#[tokio::test]
async fn issue_20_provider_narrows_the_fan_out() {
    let h = harness(hand_linked()).await;
    let input = h.write(
        "in.csv",
        &["upn,action", &format!("{HAND_LINKED_UPN},disable")],
    );
    // Without --all-accounts, two Entra ID accounts are one too many.
    let status = h
        .run(
            &input,
            &[
                "--provider",
                "entraID",
                "-o",
                h.path("one.jsonl").to_str().unwrap(),
            ],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = read_jsonl(&h.path("one.jsonl"));
    assert_eq!(records[0]["errorCode"], "accountAmbiguous");
    assert!(h.actions_sent().is_empty());

    let status = h
        .run(&input, &["--all-accounts", "--provider", "entraID"])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::Success);
    let records = read_jsonl(&h.results());
    let expected: BTreeSet<_> = [PERSONAL_OBJECT_ID, ADMIN_OBJECT_ID]
        .into_iter()
        .map(|a| {
            (
                2,
                "entraID".to_owned(),
                a.to_owned(),
                "succeeded".to_owned(),
                String::new(),
            )
        })
        .collect();
    assert_eq!(
        outcomes(&records),
        expected,
        "the Okta account is left alone"
    );
}

#[tokio::test]
async fn issue_20_without_the_flag_a_person_is_account_ambiguous_and_the_column_decides_per_row() {
    let h = harness(Tenant::synthetic(30)).await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action,allAccounts",
            &format!("{},disable,", Tenant::synthetic_upn(8)),
            &format!("{},disable,FALSE", Tenant::synthetic_upn(12)),
            &format!("{},disable,true", Tenant::synthetic_upn(16)),
        ],
    );
    let status = h.run(&input, &[]).await.expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = read_jsonl(&h.results());
    let mut expected = succeeded_on_each(4, 16);
    for row in [2, 3] {
        expected.insert((
            row,
            String::new(),
            String::new(),
            "failed".into(),
            "accountAmbiguous".into(),
        ));
    }
    assert_eq!(outcomes(&records), expected);
    assert_eq!(sent_per_account(&h).len(), 3);

    // A cell that is neither true nor false is an input error naming its line: nothing is sent.
    let bad = h.write(
        "bad.csv",
        &[
            "upn,action,allAccounts",
            &format!("{},disable,yes", Tenant::synthetic_upn(20)),
        ],
    );
    let output = h
        .binary(&bad, &["-o", h.path("bad.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2: \"allAccounts\" \"yes\" is neither true nor false",
            bad.display()
        )),
        "{stderr}"
    );
    assert_eq!(sent_per_account(&h).len(), 3, "nothing more was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_resolve_with_all_accounts_writes_one_line_per_account() {
    let h = harness(Tenant::synthetic(30)).await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action,ticket",
            &format!("{},disable,INC-8", Tenant::synthetic_upn(8)),
            &format!("{},disable,INC-1", Tenant::synthetic_upn(1)),
        ],
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("resolve")
        .arg(&input)
        .args(["-o", h.path("resolved.csv").to_str().unwrap()])
        .args(["--graph-url", &h.mock.base_url()])
        .args(["--access-token-file", h.token.to_str().unwrap()])
        .args(["--rate", "1000/s", "--all-accounts"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let text = std::fs::read_to_string(h.path("resolved.csv")).unwrap();
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("identityAccountId,accountId,action,identityProvider,"),
        "{text}"
    );
    let written: Vec<(String, String, String)> = lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            (
                cells[0].to_owned(),
                cells[1].to_owned(),
                cells[3].to_owned(),
            )
        })
        .collect();
    // Identity 8: three accounts; identity 1 (hybrid, no Okta account): two, in input order.
    let mut expected: Vec<(String, String, String)> = three_accounts(8)
        .into_iter()
        .map(|(provider, account)| (Tenant::synthetic_id(8), account, provider))
        .collect();
    expected.push((
        Tenant::synthetic_id(1),
        Tenant::synthetic_ad_account(1).unwrap(),
        "activeDirectory".to_owned(),
    ));
    expected.push((
        Tenant::synthetic_id(1),
        Tenant::synthetic_object_id(1),
        "entraID".to_owned(),
    ));
    assert_eq!(written, expected, "{text}");
    assert!(h.actions_sent().is_empty(), "resolve sends no action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_resume_after_a_crash_mid_fan_out_sends_nothing_twice() {
    let h = harness(Tenant::synthetic(30)).await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action",
            &format!("{},disable", Tenant::synthetic_upn(8)),
            &format!("{},disable", Tenant::synthetic_upn(12)),
        ],
    );
    // One request a second, one at a time: the kill lands between the accounts' requests.
    let mut child = h
        .binary(
            &input,
            &["--all-accounts", "--rate", "1/s", "--concurrency", "1"],
        )
        .spawn()
        .unwrap();
    let results = h.results();
    common::wait_until(
        "the first account's record",
        std::time::Duration::from_secs(60),
        || std::fs::read_to_string(&results).is_ok_and(|text| text.contains('\n')),
    )
    .await;
    child.kill().unwrap(); // SIGKILL, mid-fan-out
    child.wait().unwrap();
    // Complete records only: a kill can cut the last one short (the resume drops it).
    let text = std::fs::read_to_string(h.results()).unwrap();
    let before: Vec<Value> = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(
        before.len() < 6,
        "killed before the last account: {before:?}"
    );
    let done_before = before.iter().filter(|r| r["status"] == "succeeded").count();

    let summary = h.path("summary.json");
    let status = h
        .run(
            &input,
            &[
                "--all-accounts",
                "--resume",
                "--summary-json",
                summary.to_str().unwrap(),
            ],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::Success);
    // The accounts done before the crash no longer offer disable: their records are carried
    // over by their own keys, not looked up as new.
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["alreadySucceeded"], done_before, "{summary}");
    let sent = sent_per_account(&h);
    assert!(
        sent.values().all(|&n| n == 1),
        "an account acted on twice: {sent:?}"
    );
    let mut every: Vec<String> = three_accounts(8)
        .into_iter()
        .chain(three_accounts(12))
        .map(|(_, account)| account)
        .collect();
    every.sort();
    assert_eq!(sent.keys().cloned().collect::<Vec<_>>(), every);
    for i in [8, 12] {
        let identity = h.mock.identity(&Tenant::synthetic_id(i)).unwrap();
        assert!(
            identity
                .accounts
                .iter()
                .all(|a| !a.offered().iter().any(|offered| offered == "disable"))
        );
    }
    let records = read_jsonl(&h.results());
    assert!(
        records.iter().all(|r| r["status"] == "succeeded"),
        "{records:?}"
    );
}

#[test]
fn issue_20_validate_says_how_many_looked_up_rows_act_on_every_account() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "upn,action,allAccounts\nann@contoso.com,disable,true\nbob@contoso.com,disable,\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("validate")
        .arg(&input)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "0 actions would be sent, and more once 2 row(s) are looked up: 1 of them act on every account"
        ),
        "{stdout}"
    );
}

/// A dry run cannot know how many accounts a person has before the lookup: it gives the count as
/// a floor, not "up to", when rows act on every account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_20_the_dry_run_counts_fan_out_rows_as_a_floor() {
    let h = Harness::new().await;
    let input = h.write(
        "people.csv",
        &[
            "upn,action,allAccounts",
            "ann@contoso.com,disable,true",
            "bob@contoso.com,disable,",
        ],
    );
    let out = h.binary(&input, &["--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("expected      2 actions or more take at least")
            && stdout.contains("(1 row(s) act on every linked account of the person they name"),
        "{stdout}"
    );
    let plain = h.write("plain.csv", &["upn,action", "ann@contoso.com,disable"]);
    let out = h.binary(&plain, &["--dry-run"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("expected      up to 1 actions take"),
        "{stdout}"
    );
    assert_eq!(h.graph_requests(), 0);
}
