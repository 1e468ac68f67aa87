//! Guardrails for mass actions (issue 13), end to end against a mock serving a seeded tenant:
//! protected identities, privileged role members, `--max-actions`, and the typed confirmation on
//! a terminal.
//!
//! The synthetic tenant's identities 1 and 2 hold Global Administrator, 3 Privileged Role
//! Administrator and 4 Security Administrator; `i % 5 == 0` are cloud-only (no SID).

use super::common;

use common::{Harness, by_row, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, Tenant};
use serde_json::Value;

fn tenant_mock(n: usize) -> MockConfig {
    MockConfig {
        tenant: Some(Tenant::synthetic(n)),
        page_size: 5,
        ..MockConfig::default()
    }
}

fn sid(i: usize) -> String {
    Tenant::synthetic_sid(i).expect("a hybrid identity")
}

fn code(record: &Value) -> &str {
    record["errorCode"].as_str().unwrap_or_default()
}

fn message(record: &Value) -> &str {
    record["errorMessage"].as_str().unwrap_or_default()
}

/// The identity ids invokeAction was sent for.
fn acted_on(h: &Harness) -> Vec<String> {
    h.actions_sent().into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn issue_13_a_person_protected_by_upn_is_refused_when_the_spreadsheet_names_them_by_sid() {
    let h = Harness::start(tenant_mock(30)).await;
    let protect = h.write(
        "protect.txt",
        &[
            "# break-glass and the CISO",
            &Tenant::synthetic_upn(7),
            &Tenant::synthetic_object_id(9),
        ],
    );
    let input = h.write(
        "in.csv",
        &[
            "sid,action,identityProvider",
            &format!("{},disable,activeDirectory", sid(7)),
            &format!("{},disable,activeDirectory", sid(8)),
            &format!("{},disable,activeDirectory", sid(9)),
        ],
    );
    let protect_arg = protect.to_str().unwrap();
    let status = h
        .run(&input, &["--protect", protect_arg])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = by_row(&read_jsonl(&h.results()));
    // Row 2 names 7 by SID; the list names 7 by UPN (line 2 of the file).
    assert_eq!(records[&2]["status"], "failed");
    assert_eq!(code(&records[&2]), "protectedIdentity");
    assert!(
        message(&records[&2]).contains("protect.txt:2"),
        "{}",
        message(&records[&2])
    );
    assert_eq!(records[&2]["identityAccountId"], Tenant::synthetic_id(7));
    // Row 4 names 9 by SID; the list names 9 by its Entra object id.
    assert_eq!(code(&records[&4]), "protectedIdentity");
    assert_eq!(records[&3]["status"], "succeeded");
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(8)]);
}

#[tokio::test]
async fn issue_13_rows_that_carry_every_id_are_looked_up_while_a_list_is_in_force() {
    let h = Harness::start(tenant_mock(10)).await;
    let protect = h.write("protect.txt", &[&sid(3)]);
    let ad = |i| Tenant::synthetic_ad_account(i).unwrap();
    let input = h.write(
        "in.csv",
        &[
            "identityAccountId,accountId,action,identityProvider",
            &format!(
                "{},{},disable,activeDirectory",
                Tenant::synthetic_id(3),
                ad(3)
            ),
            &format!(
                "{},{},disable,activeDirectory",
                Tenant::synthetic_id(4),
                ad(4)
            ),
        ],
    );
    let status = h
        .run(&input, &["--protect", protect.to_str().unwrap()])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(code(&records[&2]), "protectedIdentity");
    assert_eq!(records[&3]["status"], "succeeded");
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(4)]);
    assert!(h.mock.stats().identity_gets + h.mock.stats().identity_list_pages > 0);
}

#[tokio::test]
async fn issue_13_members_of_privileged_roles_are_refused_unless_the_allow_section_names_them() {
    let rows = [
        "upn,action,identityProvider".to_owned(),
        format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(1)),
        format!("{},disable,activeDirectory", Tenant::synthetic_upn(3)),
        format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(6)),
    ];
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();

    let h = Harness::start(tenant_mock(20)).await;
    let input = h.write("in.csv", &rows);
    let status = h
        .run(&input, &["--protect-privileged"])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(code(&records[&2]), "privilegedIdentity");
    assert!(
        message(&records[&2]).contains("Global Administrator"),
        "{}",
        message(&records[&2])
    );
    assert_eq!(code(&records[&3]), "privilegedIdentity");
    assert!(message(&records[&3]).contains("Privileged Role Administrator"));
    assert_eq!(records[&4]["status"], "succeeded");
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(6)]);
    // One read per privileged role (a page each here).
    assert_eq!(h.mock.stats().role_reads, 20);

    // The allow section lets the one named person through; the other stays refused.
    let h = Harness::start(tenant_mock(20)).await;
    let input = h.write("in.csv", &rows);
    let allow = h.write(
        "protect.txt",
        &[
            "[allow]",
            &format!("{}  # offboarding", Tenant::synthetic_upn(1)),
        ],
    );
    let status = h
        .run(
            &input,
            &["--protect-privileged", "--protect", allow.to_str().unwrap()],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(records[&2]["status"], "succeeded");
    assert_eq!(code(&records[&3]), "privilegedIdentity");
    let mut sent = acted_on(&h);
    sent.sort();
    let mut expected = vec![Tenant::synthetic_id(1), Tenant::synthetic_id(6)];
    expected.sort();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn issue_13_without_the_role_permission_protect_privileged_stops_before_any_action() {
    let h = Harness::start(MockConfig {
        deny_role_reads: true,
        ..tenant_mock(20)
    })
    .await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(6)),
        ],
    );
    let result = h.run(&input, &["--protect-privileged"]).await;
    assert_eq!(common::status(&result), ExitStatus::StoppedEarly);
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("RoleManagement.Read.Directory"), "{error}");
    assert!(error.contains("No action was sent"), "{error}");
    assert!(acted_on(&h).is_empty());
}

#[tokio::test]
async fn issue_13_max_actions_refuses_a_larger_plan_and_sends_nothing() {
    let h = Harness::new().await;
    let input = h.input(&common::plain_rows(3));
    let result = h.run(&input, &["--max-actions", "2"]).await;
    assert_eq!(common::status(&result), ExitStatus::InputError);
    let error = format!("{:#}", result.unwrap_err());
    assert!(
        error.contains("3 actions, more than --max-actions 2"),
        "{error}"
    );
    assert_eq!(h.graph_requests(), 0);
    assert!(!h.results().exists(), "no results file is left behind");

    let status = h
        .run(&input, &["--max-actions", "3"])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(h.graph_requests(), 3);
}

#[tokio::test]
async fn issue_13_a_protect_file_line_that_names_nobody_stops_the_run_with_its_place() {
    let h = Harness::start(tenant_mock(10)).await;
    let protect = h.write("protect.txt", &["ok@contoso.com", "Jon Smith"]);
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(6)),
        ],
    );
    let result = h
        .run(&input, &["--protect", protect.to_str().unwrap()])
        .await;
    assert_eq!(common::status(&result), ExitStatus::InputError);
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("protect.txt:2:"), "{error}");
    assert_eq!(h.graph_requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_the_default_protect_file_in_the_config_directory_is_in_force() {
    let h = Harness::start(tenant_mock(10)).await;
    let config_dir = h.path("config");
    std::fs::create_dir_all(config_dir.join("graph-remediate")).unwrap();
    std::fs::write(
        config_dir.join("graph-remediate").join("protect.txt"),
        format!("{}\n", Tenant::synthetic_upn(2)),
    )
    .unwrap();
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(2)),
        ],
    );
    let output = h
        .binary(&input, &[])
        .env("XDG_CONFIG_HOME", &config_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let records = read_jsonl(&h.results());
    assert_eq!(code(&records[0]), "protectedIdentity");
    assert!(message(&records[0]).contains("protect.txt:1"));
    assert!(acted_on(&h).is_empty());

    // --no-lookup cannot keep that promise, so it is refused rather than silently ignored.
    let output = h
        .binary(
            &input,
            &["--no-lookup", "-o", h.path("r2.jsonl").to_str().unwrap()],
        )
        .env("XDG_CONFIG_HOME", &config_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-lookup"));
}

/// Runs `run` without `--yes` in a pseudo-terminal, answers `answer` to the question, and returns
/// the exit code and what the terminal showed.
fn answer_on_a_terminal(args: Vec<String>, answer: &str) -> (Option<i32>, String) {
    use rexpect::process::WaitStatus;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command.arg("run").args(args).arg("--no-progress");
    let mut session = rexpect::session::spawn_command(command, Some(30_000)).unwrap();
    let asked = session.exp_string("To proceed, type the number of accounts: ");
    let asked = asked.unwrap_or_else(|error| panic!("no typed question: {error}"));
    session.send_line(answer).unwrap();
    let rest = session.exp_eof().unwrap_or_default();
    let code = match session.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => Some(code),
        _ => None,
    };
    (code, asked + &rest)
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_13_a_plan_above_twenty_actions_takes_the_typed_number_of_accounts_on_a_terminal() {
    let h = Harness::new().await;
    let input = h.input(&common::plain_rows(25));
    let args = |results: &str| {
        h.args(
            &input,
            &["--no-yes", "-o", h.path(results).to_str().unwrap()],
        )
    };

    // `y` out of habit does not start it.
    let typed_y = args("y.jsonl");
    let (code, shown) = tokio::task::spawn_blocking(move || answer_on_a_terminal(typed_y, "y"))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{shown}");
    // The plan says it; the question no longer echoes it (issue 16).
    assert!(shown.contains("25 actions on 25 accounts"), "{shown}");
    assert!(shown.contains("not confirmed"), "{shown}");
    assert_eq!(h.graph_requests(), 0);

    // The number of accounts does.
    let typed_count = args("n.jsonl");
    let (code, shown) =
        tokio::task::spawn_blocking(move || answer_on_a_terminal(typed_count, "25"))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(h.graph_requests(), 25);
}

/// The default protect file's path under `config_dir` (as `XDG_CONFIG_HOME`).
fn default_protect_path(config_dir: &std::path::Path) -> std::path::PathBuf {
    let dir = config_dir.join("graph-remediate");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("protect.txt")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn issue_16_a_default_protect_file_that_cannot_be_read_stops_the_run_before_anything_is_sent()
{
    let h = Harness::start(tenant_mock(10)).await;
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(2)),
        ],
    );
    let config_dir = h.path("config");
    let path = default_protect_path(&config_dir);
    let fifo = std::ffi::CString::new(h.path("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    for reason in ["symbolic link", "a directory", "not a regular file"] {
        match reason {
            "symbolic link" => {
                std::os::unix::fs::symlink(h.path("moved-away.txt"), &path).unwrap();
            }
            "a directory" => std::fs::create_dir(&path).unwrap(),
            _ => std::os::unix::fs::symlink(h.path("fifo"), &path).unwrap(),
        }
        let started = std::time::Instant::now();
        let output = h
            .binary(&input, &[])
            .env("XDG_CONFIG_HOME", &config_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{reason}: {stderr}");
        assert!(stderr.contains(reason), "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains("nothing was sent"), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(h.graph_requests(), 0, "{reason}");
        let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir(&path));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_16_a_role_read_answered_with_anything_but_a_page_stops_protect_privileged() {
    use wiremock::{Mock, MockServer as Wire, ResponseTemplate, matchers};
    let h = Harness::start(tenant_mock(10)).await;
    // The identity as the mock serves it, for a Graph whose role reads go wrong.
    let id = Tenant::synthetic_id(6);
    let identity = reqwest::Client::new()
        .get(format!(
            "{}/v1.0/security/identities/identityAccounts/{id}",
            h.mock.base_url()
        ))
        .bearer_auth(common::HARNESS_TOKEN)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let input = h.write(
        "in.csv",
        &[
            "identityAccountId,accountId,action,identityProvider",
            &format!(
                "{id},{},disable,activeDirectory",
                Tenant::synthetic_ad_account(6).unwrap()
            ),
        ],
    );
    let not_found = serde_json::json!({"error": {
        "code": "Request_ResourceNotFound",
        "message": "Resource not found for the segment 'roleAssignments'.",
    }});
    let answers = [
        ResponseTemplate::new(404).set_body_json(not_found),
        ResponseTemplate::new(200).set_body_string("<html>sign in</html>"),
        ResponseTemplate::new(200).set_body_string("{}"),
        ResponseTemplate::new(204),
    ];
    for (case, answer) in answers.into_iter().enumerate() {
        let graph = Wire::start().await;
        Mock::given(matchers::path_regex("/roleManagement/"))
            .respond_with(answer)
            .mount(&graph)
            .await;
        Mock::given(matchers::method("GET"))
            .and(matchers::path_regex("/identityAccounts/[^/]+$"))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(identity.to_vec(), "application/json"),
            )
            .mount(&graph)
            .await;
        let results = h.path(&format!("r{case}.jsonl"));
        let args = common::with_flag(
            common::with_flag(
                h.args(&input, &["--protect-privileged"]),
                "--graph-url",
                &graph.uri(),
            ),
            "-o",
            results.to_str().unwrap(),
        );
        let result = common::run_args(&args).await;
        assert_eq!(
            common::status(&result),
            ExitStatus::StoppedEarly,
            "case {case}: {result:?}"
        );
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains("no action was sent"), "case {case}: {error}");
        let requests = graph.received_requests().await.unwrap_or_default();
        assert!(
            requests
                .iter()
                .all(|request| request.method.as_str() != "POST"),
            "case {case}: an action was sent"
        );
        assert!(
            requests
                .iter()
                .any(|r| r.url.path().contains("roleAssignments"))
        );
    }
}

#[tokio::test]
async fn issue_16_a_privileged_holder_named_by_sid_is_refused_when_their_identity_has_no_entra_account_or_upn()
 {
    // Identity 12 as Defender knows it on-premises only: its Active Directory account, its SID,
    // no Entra ID account and no UPN. Entra knows the Global Administrator behind it by that SID.
    let mut tenant = Tenant::synthetic(10);
    let mut on_premises = Tenant::synthetic_identity(12);
    on_premises
        .accounts
        .retain(|account| account.identity_provider == "activeDirectory");
    on_premises.user_principal_name = None;
    on_premises.email_address = None;
    assert_eq!(on_premises.accounts.len(), 1);
    tenant.push(on_premises);
    tenant.assign_role_to_sid(
        Tenant::GLOBAL_ADMINISTRATOR,
        &Tenant::synthetic_object_id(12),
        &sid(12),
    );
    let h = Harness::start(MockConfig {
        tenant: Some(tenant),
        page_size: 5,
        ..MockConfig::default()
    })
    .await;
    let input = h.write(
        "in.csv",
        &[
            "sid,action,identityProvider",
            &format!("{},disable,activeDirectory", sid(12)),
            &format!("{},disable,activeDirectory", sid(8)),
        ],
    );
    let status = h
        .run(&input, &["--protect-privileged"])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(code(&records[&2]), "privilegedIdentity", "{}", records[&2]);
    assert!(message(&records[&2]).contains("Global Administrator"));
    assert_eq!(records[&3]["status"], "succeeded");
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(8)]);
}

#[tokio::test]
async fn issue_16_a_protect_entry_graph_knows_nobody_by_stops_the_run_unless_accepted() {
    let h = Harness::start(tenant_mock(10)).await;
    let upn = Tenant::synthetic_upn(2);
    let look_alike = upn.replacen('u', "\u{0443}", 1); // Cyrillic у
    let zero_width = upn.replacen('@', "\u{200b}@", 1);
    let protect = h.write(
        "protect.txt",
        &[
            &format!("{upn}."),
            &look_alike,
            &zero_width,
            &format!("\"{upn}\""),
            &format!("mailto:{upn}"),
            "S-1-5-21-1004336348-1177238915-682003330-99999",
            "0f5c5bd0-7b48-4d5a-9b3f-4d2f3e0c1a11",
            &Tenant::synthetic_id(4),
        ],
    );
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{upn},revokeAllSessions,entraID"),
        ],
    );
    let protect_arg = protect.to_str().unwrap();
    let result = h.run(&input, &["--protect", protect_arg]).await;
    assert_eq!(
        common::status(&result),
        ExitStatus::InputError,
        "{result:?}"
    );
    let error = format!("{:#}", result.unwrap_err());
    for line in 1..=7 {
        assert!(
            error.contains(&format!("protect.txt:{line} ")),
            "line {line}: {error}"
        );
    }
    // Line 8 names an identity by its identityAccounts id: Graph knows it.
    assert!(!error.contains("protect.txt:8"), "{error}");
    assert!(
        error.contains("\\u{443}"),
        "the look-alike is shown escaped: {error}"
    );
    assert!(
        error.contains("\\u{200b}"),
        "the invisible one too: {error}"
    );
    assert!(
        !error.contains('\u{200b}') && !error.contains('\u{443}'),
        "{error}"
    );
    assert!(error.contains("trailing dot"), "{error}");
    assert!(error.contains("mailto:"), "{error}");
    assert!(error.contains("--accept-stale-protect-entries"), "{error}");
    assert!(acted_on(&h).is_empty());

    // Accepted, the stale entries guard only what they say; the person is acted on.
    let status = h
        .run(
            &input,
            &["--protect", protect_arg, "--accept-stale-protect-entries"],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::Success);
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(2)]);
}

#[tokio::test]
async fn issue_16_a_resume_without_the_guards_of_the_earlier_run_stops_and_names_them() {
    let h = Harness::start(tenant_mock(10)).await;
    let protect = h.write("protect.txt", &[&Tenant::synthetic_upn(2)]);
    let input = h.write(
        "in.csv",
        &[
            "upn,action,identityProvider",
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(2)),
            &format!("{},revokeAllSessions,entraID", Tenant::synthetic_upn(6)),
        ],
    );
    let protect_arg = protect.to_str().unwrap();
    let status = h
        .run(&input, &["--protect", protect_arg, "--protect-privileged"])
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    assert_eq!(
        code(&by_row(&read_jsonl(&h.results()))[&2]),
        "protectedIdentity"
    );
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(6)]);

    // The protect file is not in force now (left out, or another HOME's default file).
    let result = h.run(&input, &["--resume"]).await;
    assert_eq!(
        common::status(&result),
        ExitStatus::InputError,
        "{result:?}"
    );
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains(protect_arg), "{error}");
    assert!(error.contains("--protect-privileged"), "{error}");
    assert!(error.contains("nothing was sent"), "{error}");
    let result = h.run(&input, &["--resume", "--protect", protect_arg]).await;
    let error = format!("{:#}", result.unwrap_err());
    assert!(
        error.contains("--protect-privileged") && !error.contains(protect_arg),
        "{error}"
    );
    assert_eq!(
        acted_on(&h),
        [Tenant::synthetic_id(6)],
        "nothing more was sent"
    );

    // The same entries from another file, and the same flags: the resume goes on, still guarded.
    let copy = h.write("copy.txt", &[&Tenant::synthetic_upn(2).to_uppercase()]);
    let status = h
        .run(
            &input,
            &[
                "--resume",
                "--protect",
                copy.to_str().unwrap(),
                "--protect-privileged",
            ],
        )
        .await
        .expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    assert_eq!(acted_on(&h), [Tenant::synthetic_id(6)]);

    // With the lock file gone, the results' own refusals still say a guard was in force.
    std::fs::remove_file(h.path("results.jsonl.lock")).unwrap();
    let result = h.run(&input, &["--resume"]).await;
    assert_eq!(
        common::status(&result),
        ExitStatus::InputError,
        "{result:?}"
    );
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("protectedIdentity refusal"), "{error}");
    assert_eq!(
        acted_on(&h),
        [Tenant::synthetic_id(6)],
        "nothing more was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_16_the_typed_confirmation_asks_for_a_number_the_plan_shows_not_the_question() {
    let h = Harness::new().await;
    // 25 actions on 24 accounts: the accounts number is only in the plan.
    let mut rows = common::plain_rows(24);
    let again = rows[0].replacen(",disable,", ",revokeAllSessions,", 1);
    assert_ne!(again, rows[0]);
    rows.push(again);
    let input = h.input(&rows);
    let args = h.args(&input, &["--no-yes"]);
    let (code, shown) = tokio::task::spawn_blocking(move || answer_on_a_terminal(args, "24"))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("25 actions on 24 accounts"), "{shown}");
    let question = shown
        .lines()
        .find(|line| line.contains("To proceed"))
        .unwrap_or_default();
    assert!(
        !question.contains("24"),
        "the question echoes the answer: {question}"
    );
    assert!(shown.contains("Guards in force: none"), "{shown}");
    assert_eq!(h.graph_requests(), 25);
}

#[tokio::test]
async fn issue_16_a_protect_file_of_comments_only_is_named_as_protecting_nobody() {
    let h = Harness::new().await;
    let protect = h.write("protect.txt", &["# break-glass accounts go here"]);
    let input = h.input(&common::plain_rows(1));
    let output = h
        .binary(
            &input,
            &["--protect", protect.to_str().unwrap(), "--dry-run"],
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let named = format!(
        "protect file {} (0 protected, 0 allowed: it protects nobody)",
        protect.display()
    );
    assert!(
        stdout.contains(&format!("guards        {named}")),
        "{stdout}"
    );
    assert!(stderr.contains("guards nobody"), "{stderr}");
    assert_eq!(h.graph_requests(), 0);
}
