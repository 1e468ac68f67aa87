//! Privileged access beyond active role assignments (issue 20), end to end against a mock whose
//! synthetic tenant has the seeded privileged access ([`PrivilegedSeed`]): PIM eligibility,
//! role-assignable groups, a custom role labelled privileged, and a restricted-management
//! administrative unit.

use super::common;

use common::{Harness, by_row, read_jsonl};
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, PrivilegedSeed, Tenant};
use serde_json::Value;

fn seeded(n: usize, seed: PrivilegedSeed) -> MockConfig {
    MockConfig {
        tenant: Some(Tenant::synthetic(n).with_privileged_access(seed)),
        page_size: 5,
        ..MockConfig::default()
    }
}

fn code(record: &Value) -> &str {
    record["errorCode"].as_str().unwrap_or_default()
}

fn message(record: &Value) -> &str {
    record["errorMessage"].as_str().unwrap_or_default()
}

/// One row a person, named by UPN: `(identity, action, provider)`.
fn rows(people: &[(usize, &str, &str)]) -> Vec<String> {
    let mut rows = vec!["upn,action,identityProvider".to_owned()];
    rows.extend(
        people.iter().map(|(i, action, provider)| {
            format!("{},{action},{provider}", Tenant::synthetic_upn(*i))
        }),
    );
    rows
}

async fn run_privileged(
    h: &Harness,
    people: &[(usize, &str, &str)],
    extra: &[&str],
) -> std::collections::BTreeMap<u64, Value> {
    let rows = rows(people);
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let input = h.write("in.csv", &rows);
    let mut args = vec!["--protect-privileged"];
    args.extend(extra);
    let status = h.run(&input, &args).await.expect("a status");
    assert_eq!(status, ExitStatus::RowsFailed);
    by_row(&read_jsonl(&h.results()))
}

/// The identity ids invokeAction was sent for.
fn acted_on(h: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = h.actions_sent().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids
}

fn ids(people: &[usize]) -> Vec<String> {
    let mut ids: Vec<String> = people.iter().map(|&i| Tenant::synthetic_id(i)).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn issue_20_an_eligible_not_active_global_administrator_is_refused() {
    let h = Harness::start(seeded(30, PrivilegedSeed::default())).await;
    let records = run_privileged(
        &h,
        &[
            (
                PrivilegedSeed::ELIGIBLE_GLOBAL_ADMINISTRATOR,
                "disable",
                "activeDirectory",
            ),
            (6, "disable", "activeDirectory"),
        ],
        &[],
    )
    .await;
    assert_eq!(code(&records[&2]), "privilegedIdentity");
    assert!(
        message(&records[&2]).contains("Global Administrator (eligible through PIM)"),
        "{}",
        message(&records[&2])
    );
    assert_eq!(records[&3]["status"], "succeeded");
    assert_eq!(acted_on(&h), ids(&[6]));
}

#[tokio::test]
async fn issue_20_members_of_a_role_assignable_group_holding_security_administrator_are_refused() {
    let h = Harness::start(seeded(30, PrivilegedSeed::default())).await;
    let records = run_privileged(
        &h,
        &[
            (PrivilegedSeed::GROUP_MEMBER, "disable", "activeDirectory"),
            (
                PrivilegedSeed::GROUP_ELIGIBLE_MEMBER,
                "disable",
                "activeDirectory",
            ),
            (
                PrivilegedSeed::ELIGIBLE_GROUP_MEMBER,
                "revokeAllSessions",
                "entraID",
            ),
            (6, "disable", "activeDirectory"),
        ],
        &[],
    )
    .await;
    // A member of "SecOps Admins", which holds Security Administrator actively.
    assert_eq!(code(&records[&2]), "privilegedIdentity");
    assert!(
        message(&records[&2]).contains("Security Administrator through the group SecOps Admins"),
        "{}",
        message(&records[&2])
    );
    // Eligible for that group's membership through PIM for Groups.
    assert_eq!(code(&records[&3]), "privilegedIdentity");
    assert!(
        message(&records[&3]).contains(
            "Security Administrator as an eligible member of the group SecOps Admins (PIM for Groups)"
        ),
        "{}",
        message(&records[&3])
    );
    // A member of a group that is only eligible for Privileged Role Administrator.
    assert_eq!(code(&records[&4]), "privilegedIdentity");
    assert!(
        message(&records[&4]).contains(
            "Privileged Role Administrator (eligible through PIM) through the group Tier0 Standby"
        ),
        "{}",
        message(&records[&4])
    );
    assert_eq!(records[&5]["status"], "succeeded");
    assert_eq!(acted_on(&h), ids(&[6]));
}

#[tokio::test]
async fn issue_20_a_custom_privileged_role_holder_is_refused_on_beta() {
    let h = Harness::start(seeded(30, PrivilegedSeed::default())).await;
    let records = run_privileged(
        &h,
        &[
            (PrivilegedSeed::CUSTOM_ROLE_HOLDER, "disable", "okta"),
            (17, "disable", "activeDirectory"),
            (
                PrivilegedSeed::CUSTOM_ROLE_UNPRIVILEGED,
                "disable",
                "activeDirectory",
            ),
        ],
        &["--api-version", "beta"],
    )
    .await;
    for row in [2, 3] {
        assert_eq!(code(&records[&row]), "privilegedIdentity");
        assert!(
            message(&records[&row])
                .contains("Contoso Identity Lead (a custom role Microsoft labels privileged)"),
            "{}",
            message(&records[&row])
        );
    }
    // A custom role Microsoft does not label privileged is no reason to refuse.
    assert_eq!(records[&4]["status"], "succeeded");
    assert_eq!(
        acted_on(&h),
        ids(&[PrivilegedSeed::CUSTOM_ROLE_UNPRIVILEGED])
    );
    let definitions = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .ends_with("/beta/roleManagement/directory/roleDefinitions")
        })
        .count();
    assert_eq!(definitions, 1);
}

#[test]
fn issue_20_custom_privileged_roles_are_warned_about_on_v1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h = runtime.block_on(Harness::start(seeded(30, PrivilegedSeed::default())));
    let rows = rows(&[(PrivilegedSeed::CUSTOM_ROLE_HOLDER, "disable", "okta")]);
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let input = h.write("in.csv", &rows);
    let out = h
        .binary(&input, &["--protect-privileged", "--api-version", "v1.0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("custom roles that Microsoft labels privileged were not checked"),
        "{stderr}"
    );
    // v1.0 has no isPrivileged: the role definitions are not asked for there.
    assert!(
        !h.mock
            .requests()
            .iter()
            .any(|r| r.path.contains("roleDefinitions"))
    );
}

#[tokio::test]
async fn issue_20_each_new_read_refused_403_stops_before_any_action_naming_its_permission() {
    for (permission, version) in [
        ("RoleEligibilitySchedule.Read.Directory", "v1.0"),
        ("GroupMember.Read.All", "v1.0"),
        ("PrivilegedEligibilitySchedule.Read.AzureADGroup", "v1.0"),
        ("AdministrativeUnit.Read.All", "v1.0"),
        ("RoleManagement.Read.Directory", "beta"),
    ] {
        let h = Harness::start(MockConfig {
            denied_permissions: vec![permission.to_owned()],
            ..seeded(30, PrivilegedSeed::default())
        })
        .await;
        let rows = rows(&[(6, "disable", "activeDirectory")]);
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let input = h.write("in.csv", &rows);
        let result = h
            .run(&input, &["--protect-privileged", "--api-version", version])
            .await;
        assert_eq!(
            common::status(&result),
            ExitStatus::StoppedEarly,
            "{permission}"
        );
        let error = format!("{:#}", result.unwrap_err());
        assert!(error.contains(permission), "{permission}: {error}");
        assert!(error.contains("No action was sent"), "{error}");
        assert!(h.actions_sent().is_empty(), "{permission}");
        assert!(h.mock.stats().status(403) >= 1, "{permission}");
    }
}

#[tokio::test]
async fn issue_20_a_paged_eligibility_list_is_read_to_its_last_page() {
    // Nine eligible for Global Administrator (11, then 100, 104, ..., 128) at five a page.
    let h = Harness::start(seeded(
        200,
        PrivilegedSeed {
            eligible: 30,
            groups: 0,
        },
    ))
    .await;
    let records = run_privileged(
        &h,
        &[
            (128, "disable", "activeDirectory"),
            (6, "disable", "activeDirectory"),
        ],
        &[],
    )
    .await;
    assert_eq!(code(&records[&2]), "privilegedIdentity");
    assert!(message(&records[&2]).contains("Global Administrator (eligible through PIM)"));
    assert_eq!(acted_on(&h), ids(&[6]));
    let global_administrator = h
        .mock
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.ends_with("roleEligibilityScheduleInstances")
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains(Tenant::GLOBAL_ADMINISTRATOR))
        })
        .map(|r| r.query.unwrap_or_default())
        .collect::<Vec<_>>();
    assert_eq!(global_administrator.len(), 2, "{global_administrator:?}");
    assert!(
        global_administrator[1].contains("skiptoken=5"),
        "{global_administrator:?}"
    );
}

#[test]
fn issue_20_a_restricted_management_user_is_flagged_and_its_refusal_explained() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let h = runtime.block_on(Harness::start(seeded(30, PrivilegedSeed::default())));
    let rows = rows(&[
        (
            PrivilegedSeed::RESTRICTED_MEMBER,
            "revokeAllSessions",
            "entraID",
        ),
        (6, "revokeAllSessions", "entraID"),
        // In "Sales", which is not restricted.
        (21, "revokeAllSessions", "entraID"),
    ]);
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let input = h.write("in.csv", &rows);
    let out = h
        .binary(&input, &["--protect-privileged"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The row fails; the run goes on to the others.
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("is in the restricted-management administrative unit")
            && stderr.contains("Executives"),
        "flagged before the first action: {stderr}"
    );
    let records = by_row(&read_jsonl(&h.results()));
    assert_eq!(records[&2]["status"], "failed");
    assert_eq!(records[&2]["httpStatus"], 403);
    assert!(
        message(&records[&2])
            .starts_with("the user is in a restricted-management administrative unit"),
        "{}",
        message(&records[&2])
    );
    assert_eq!(records[&3]["status"], "succeeded");
    assert_eq!(records[&4]["status"], "succeeded");
}

#[test]
fn issue_20_auth_lists_each_permission_the_guard_reads_need() {
    const SECRET: &str = "s3cret-issue-20";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime
        .block_on(graph_remediate::mock::MockServer::start(MockConfig {
            client_id: Some("app".to_owned()),
            client_secret: Some(SECRET.to_owned()),
            sign_in: graph_remediate::mock::SignInMock {
                app_roles: Some(
                    [
                        "SecurityIdentitiesActions.ReadWrite.All",
                        "SecurityIdentitiesAccount.Read.All",
                        "RoleManagement.Read.Directory",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ),
                ..graph_remediate::mock::SignInMock::default()
            },
            ..MockConfig::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "sid,action\nS-1-5-21-1-2-3-1001,disable\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("auth")
        .arg(&input)
        .args(["--protect-privileged", "--format", "json"])
        .args(["--graph-url", &mock.base_url()])
        .args(["--authority-url", &mock.base_url()])
        .args([
            "--tenant-id",
            "contoso.onmicrosoft.com",
            "--client-id",
            "app",
        ])
        .env_remove("GRAPH_ACCESS_TOKEN")
        .env_remove("AZURE_CLIENT_CERTIFICATE_PATH")
        .env("AZURE_CLIENT_SECRET", SECRET)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Value = serde_json::from_str(&stdout).unwrap();
    for needed in [
        "RoleManagement.Read.Directory",
        "RoleEligibilitySchedule.Read.Directory",
        "GroupMember.Read.All",
        "PrivilegedEligibilitySchedule.Read.AzureADGroup",
        "AdministrativeUnit.Read.All",
    ] {
        assert!(
            found["needs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == needed),
            "{needed}: {found}"
        );
    }
    // RoleManagement.Read.Directory covers the eligibility read; the other three are missing.
    assert_eq!(
        found["missing"],
        serde_json::json!([
            "GroupMember.Read.All",
            "PrivilegedEligibilitySchedule.Read.AzureADGroup",
            "AdministrativeUnit.Read.All"
        ])
    );
    assert_eq!(mock.stats().graph_requests, 0);
}

#[tokio::test]
async fn issue_20_the_mocks_guard_reads_answer_as_microsoft_documents() {
    let h = Harness::start(seeded(30, PrivilegedSeed::default())).await;
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client
            .get(format!("{}{path}", h.mock.base_url()))
            .bearer_auth(common::HARNESS_TOKEN);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // PIM for Groups requires its filter; isPrivileged exists on beta only.
    let (status, _) =
        get("/v1.0/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances").await;
    assert_eq!(status, 400);
    let (status, _) =
        get("/v1.0/roleManagement/directory/roleDefinitions?$filter=isPrivileged eq true").await;
    assert_eq!(status, 400);
    let (status, body) =
        get("/beta/roleManagement/directory/roleDefinitions?$filter=isPrivileged eq true").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["isBuiltIn"] == false)
        .filter_map(|d| d["displayName"].as_str())
        .collect();
    assert_eq!(names, [PrivilegedSeed::CUSTOM_ROLE]);
    // The group that holds Security Administrator is expanded as a group.
    let (_, body) = get(&format!(
        "/v1.0/roleManagement/directory/roleAssignments?$filter=roleDefinitionId eq '{}'&$expand=principal",
        Tenant::SECURITY_ADMINISTRATOR
    ))
    .await;
    let group = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["principal"]["@odata.type"] == "#microsoft.graph.group")
        .expect("a group holds the role");
    assert_eq!(
        group["principal"]["displayName"],
        PrivilegedSeed::ACTIVE_GROUP
    );
    let id = group["principalId"].as_str().unwrap();
    let (status, body) = get(&format!("/v1.0/groups/{id}/transitiveMembers")).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    let (status, _) = get("/v1.0/groups/no-such-group/transitiveMembers").await;
    assert_eq!(status, 404);
    let (status, body) = get(
        "/v1.0/directory/administrativeUnits?$select=id,displayName,isMemberManagementRestricted",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["displayName"] == PrivilegedSeed::RESTRICTED_UNIT
                && u["isMemberManagementRestricted"] == true)
    );
}
