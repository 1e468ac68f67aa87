//! The unattended credential kinds against the mock (issue 18, SPEC section 9): workload
//! identity's rotating token file, GitHub Actions' five-minute OIDC tokens, managed identity on
//! each host (IMDS through AZURE_POD_IDENTITY_AUTHORITY_HOST, App Service, Cloud Shell, Arc),
//! `az` (a fake script on PATH), `auto`, and the selection's refusals. Every run is a child
//! process with its own environment; nothing leaves loopback: IMDS is always pointed at the mock
//! (and the binary refuses the real address under cargo: `the_real_imds_address_is_refused`).
//!
//! The 1,000-row runs at 100/s with 3-second tokens take about 10 s each: `#[ignore]`d, run by
//! `scripts/unattended-soak.sh`.

use super::common;

use std::path::{Path, PathBuf};
use std::process::{Command as Child, Output};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use graph_remediate::mock::{MockConfig, MockServer};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const TENANT_ID: &str = "contoso.onmicrosoft.com";
const OBJECT_ID: &str = "99999999-8888-7777-6666-555555555555";
/// Secrets the runs are given or that the mock hands out: none may be printed or written.
const GITHUB_REQUEST_TOKEN: &str = "gh-REQUEST-token-never-printed-4c1e";
const IDENTITY_HEADER: &str = "identity-HEADER-never-printed-9a2b";
const ARC_KEY: &str = "arc-KEY-never-printed-51f0";
const FEDERATED: &str = "federated-ASSERTION-never-printed";
const AZ_TOKEN: &str = "az-TOKEN-never-printed";
const ISSUED: [&str; 2] = ["mock-at-", "mock-mi-"];

/// Every variable that could pick a credential, removed from each child's environment.
const CREDENTIAL_VARS: [&str; 19] = [
    "GRAPH_ACCESS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_FEDERATED_TOKEN_FILE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "GRAPH_REMEDIATE_ARC_KEY_DIR",
    "RUST_LOG",
];

/// A child's environment: name, value.
type Envs = Vec<(&'static str, String)>;

fn mock_config(lifetime: Duration) -> MockConfig {
    MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        token_lifetime: lifetime,
        record: true,
        ..MockConfig::default()
    }
}

/// `graph-remediate run INPUT -o OUTPUT --graph-url MOCK --authority-url MOCK ARGS` as a child
/// with only `envs` (and `path`, when given, first on PATH) for credentials.
fn child(
    input: &Path,
    output: &Path,
    mock: &MockServer,
    args: &[&str],
    envs: &[(&str, String)],
    path: Option<&Path>,
) -> Child {
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--graph-url", &mock.base_url()])
        .args(["--authority-url", &mock.base_url()])
        .args(["--yes", "--no-progress"])
        .args(args)
        .stdin(std::process::Stdio::null());
    for var in CREDENTIAL_VARS {
        command.env_remove(var);
    }
    for (name, value) in envs {
        command.env(name, value);
    }
    if let Some(dir) = path {
        let original = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![dir.to_path_buf()];
        paths.extend(std::env::split_paths(&original));
        command.env("PATH", std::env::join_paths(paths).unwrap());
    }
    command
}

async fn output_of(mut command: Child) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// stdout, stderr and the results file, together.
fn everything(output: &Output, results: &Path) -> String {
    format!(
        "{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(results).unwrap_or_default()
    )
}

fn assert_no_secret(written: &str, secrets: &[&str]) {
    for secret in secrets.iter().chain(ISSUED.iter()) {
        assert!(
            !written.contains(secret),
            "{secret:?} was written:\n{written}"
        );
    }
}

fn all_succeeded(output: &Path, rows: usize, written: &str) {
    let records = read_jsonl(output);
    assert_eq!(records.len(), rows, "{written}");
    for record in &records {
        assert_eq!(record["status"], "succeeded", "{record}");
    }
}

fn paths(mock: &MockServer, ends: &str) -> Vec<graph_remediate::mock::LoggedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path.ends_with(ends))
        .collect()
}

fn app_ids() -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_CLIENT_ID", CLIENT_ID.to_owned()),
        ("AZURE_TENANT_ID", TENANT_ID.to_owned()),
    ]
}

/// Posts a client assertion to the mock's token endpoint as a tool would: the status.
async fn post_assertion(mock: &MockServer, assertion: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/{TENANT_ID}/oauth2/v2.0/token", mock.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("scope", "https://graph.microsoft.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn rotate(path: &Path, text: &str) {
    // As the kubelet does: a new file put in place at once.
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_workload_identity_rereads_a_token_file_rotated_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, format!("{FEDERATED}-1\n")).unwrap();
    let mock = MockServer::start(MockConfig {
        federated_token_file: Some(token_file.clone()),
        ..mock_config(Duration::from_secs(1))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(30));
    let output = dir.path().join("out.jsonl");
    let mut envs = app_ids();
    envs.push((
        "AZURE_FEDERATED_TOKEN_FILE",
        token_file.display().to_string(),
    ));
    let run = output_of(child(
        &input,
        &output,
        &mock,
        &["--rate", "10/s"],
        &envs,
        None,
    ));
    let rotation = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        rotate(&token_file, &format!("{FEDERATED}-2"));
    };
    let (result, ()) = tokio::join!(run, rotation);
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 30, &written);
    let tokens = paths(&mock, "/oauth2/v2.0/token");
    // The old content is refused now: a tool that read the file once fails here.
    let (status, body) = post_assertion(&mock, &format!("{FEDERATED}-1")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AADSTS700024"), "{body}");
    assert!(
        tokens.len() >= 3,
        "renewed across the rotation: {}",
        tokens.len()
    );
    assert!(tokens.iter().all(|r| r.status == 200), "{tokens:?}");
    assert_no_secret(&written, &[FEDERATED]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_github_oidc_mints_a_fresh_token_for_every_token_request() {
    let dir = tempfile::tempdir().unwrap();
    // The OIDC token lives 1 s, the Graph token 2 s: each renewal meets an expired OIDC token
    // if one was kept.
    let mock = MockServer::start(MockConfig {
        oidc_request_token: Some(GITHUB_REQUEST_TOKEN.to_owned()),
        oidc_lifetime: Duration::from_secs(1),
        ..mock_config(Duration::from_secs(2))
    })
    .await
    .unwrap();
    // GitHub's tokens expire between two token requests, and the mock refuses them then.
    let minted: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/github/idtoken?api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange",
            mock.base_url()
        ))
        .bearer_auth(GITHUB_REQUEST_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let minted = minted["value"].as_str().unwrap().to_owned();
    assert_eq!(post_assertion(&mock, &minted).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = post_assertion(&mock, &minted).await;
    assert_eq!(status, 401);
    assert!(body.contains("AADSTS700024"), "{body}");
    let before = mock.stats();

    let input = write_csv(dir.path(), "in.csv", &plain_rows(40));
    let output = dir.path().join("out.jsonl");
    let mut envs = app_ids();
    envs.push((
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        format!("{}/github/idtoken?api-version=2.0", mock.base_url()),
    ));
    envs.push((
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        GITHUB_REQUEST_TOKEN.to_owned(),
    ));
    let result = output_of(child(
        &input,
        &output,
        &mock,
        &["--rate", "10/s", "-v"],
        &envs,
        None,
    ))
    .await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 40, &written);
    let stats = mock.stats();
    let token_requests = stats.token_requests - before.token_requests;
    let oidc_requests = stats.oidc_requests - before.oidc_requests;
    assert!(token_requests >= 2, "{token_requests}");
    assert_eq!(
        oidc_requests, token_requests,
        "one OIDC token per token request"
    );
    let asked = paths(&mock, "/github/idtoken");
    assert!(
        asked.iter().all(|r| r
            .query
            .as_deref()
            .is_some_and(|q| q.contains("audience=api%3A%2F%2FAzureADTokenExchange"))),
        "{asked:?}"
    );
    assert_no_secret(&written, &[GITHUB_REQUEST_TOKEN, &minted]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_imds_answering_503_then_a_token_is_retried_with_its_user_assigned_id() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        managed_identity_faults: vec![503, 410],
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(5));
    let output = dir.path().join("out.jsonl");
    let envs = vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", mock.base_url())];
    let id = format!("object-id={OBJECT_ID}");
    let args = ["--auth", "managed-identity", "--managed-identity-id", &id];
    let result = output_of(child(&input, &output, &mock, &args, &envs, None)).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 5, &written);
    let asked = paths(&mock, "/metadata/identity/oauth2/token");
    let statuses: Vec<u16> = asked.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 410, 200]);
    let query = asked[2].query.clone().unwrap_or_default();
    assert!(query.contains("api-version=2018-02-01"), "{query}");
    assert!(query.contains(&format!("object_id={OBJECT_ID}")), "{query}");
    assert!(query.contains("resource=http%3A%2F%2F127.0.0.1"), "{query}");
    assert_no_secret(&written, &[]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_managed_identity_that_is_nowhere_stops_in_seconds_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(mock_config(Duration::from_secs(3599)))
        .await
        .unwrap();
    // Accepts connections (the kernel's backlog) and never answers: a black hole, as
    // 169.254.169.254 is off Azure.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    let input = write_csv(dir.path(), "in.csv", &plain_rows(3));
    for auth in ["managed-identity", "auto"] {
        let output = dir.path().join(format!("{auth}.jsonl"));
        let envs = vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", hole_url.clone())];
        let started = Instant::now();
        let result = output_of(child(
            &input,
            &output,
            &mock,
            &["--auth", auth],
            &envs,
            None,
        ))
        .await;
        let took = started.elapsed();
        let written = everything(&result, &output);
        assert_eq!(result.status.code(), Some(4), "{written}");
        assert!(took < Duration::from_secs(8), "{auth}: took {took:?}");
        assert!(
            written.contains("Instance Metadata Service (IMDS)"),
            "{written}"
        );
        assert!(written.contains(&hole_url), "{written}");
        assert!(written.contains("no managed identity"), "{written}");
    }
    assert_eq!(mock.stats().graph_requests, 0);
    drop(hole);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_the_real_imds_address_is_refused_under_cargo_test() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(mock_config(Duration::from_secs(3599)))
        .await
        .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(1));
    let output = dir.path().join("out.jsonl");
    // No AZURE_POD_IDENTITY_AUTHORITY_HOST: the default address would be used. The child runs
    // under cargo (CARGO_MANIFEST_DIR is inherited), so it refuses before sending anything.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    for auth in ["managed-identity", "auto"] {
        let result = output_of(child(&input, &output, &mock, &["--auth", auth], &[], None)).await;
        let written = everything(&result, &output);
        assert_eq!(result.status.code(), Some(4), "{written}");
        assert!(written.contains("refusing to contact IMDS"), "{written}");
    }
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_app_service_identity_is_found_by_its_variables() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        identity_header: Some(IDENTITY_HEADER.to_owned()),
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(5));
    let output = dir.path().join("out.jsonl");
    let envs = vec![
        (
            "IDENTITY_ENDPOINT",
            format!("{}/msi/token", mock.base_url()),
        ),
        ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
    ];
    // No --auth: IDENTITY_ENDPOINT says managed identity.
    let args = ["--managed-identity-id", CLIENT_ID, "-v"];
    let result = output_of(child(&input, &output, &mock, &args, &envs, None)).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 5, &written);
    let asked = paths(&mock, "/msi/token");
    assert_eq!(asked.len(), 1);
    let query = asked[0].query.clone().unwrap_or_default();
    assert!(query.contains("api-version=2019-08-01"), "{query}");
    assert!(query.contains(&format!("client_id={CLIENT_ID}")), "{query}");
    assert_no_secret(&written, &[IDENTITY_HEADER]);

    // A wrong header is refused by the host, and named without being echoed.
    let envs = vec![
        (
            "IDENTITY_ENDPOINT",
            format!("{}/msi/token", mock.base_url()),
        ),
        ("IDENTITY_HEADER", "stale-HEADER-value".to_owned()),
    ];
    let output = dir.path().join("stale.jsonl");
    let result = output_of(child(&input, &output, &mock, &[], &envs, None)).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(4), "{written}");
    assert!(written.contains("IDENTITY_HEADER was refused"), "{written}");
    assert_no_secret(&written, &["stale-HEADER-value"]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_missing_inputs_name_the_kind_and_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        oidc_request_token: Some(GITHUB_REQUEST_TOKEN.to_owned()),
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(2));
    let output = dir.path().join("out.jsonl");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let endpoint = format!("{}/msi/token", mock.base_url());
    let cases: Vec<(Vec<&str>, Envs, &str)> = vec![
        (
            vec![],
            vec![("IDENTITY_ENDPOINT", endpoint.clone())],
            "IDENTITY_HEADER",
        ),
        (
            vec!["--auth", "workload-identity"],
            app_ids(),
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
        (
            vec!["--auth", "workload-identity"],
            [
                app_ids(),
                vec![("AZURE_FEDERATED_TOKEN_FILE", empty.display().to_string())],
            ]
            .concat(),
            "is empty",
        ),
        (
            vec!["--auth", "workload-identity"],
            vec![("AZURE_FEDERATED_TOKEN_FILE", empty.display().to_string())],
            "--tenant-id",
        ),
        (
            vec!["--auth", "github-oidc"],
            app_ids(),
            "ACTIONS_ID_TOKEN_REQUEST_URL",
        ),
        (vec!["--auth", "secret"], app_ids(), "AZURE_CLIENT_SECRET"),
        (
            vec!["--auth", "auto"],
            [
                app_ids(),
                vec![
                    ("AZURE_FEDERATED_TOKEN_FILE", empty.display().to_string()),
                    ("IDENTITY_ENDPOINT", endpoint.clone()),
                    ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
                ],
            ]
            .concat(),
            "more than one credential",
        ),
        // A kind that is set up and fails stops `auto`: no falling through to another.
        (
            vec!["--auth", "auto"],
            [
                app_ids(),
                vec![("AZURE_FEDERATED_TOKEN_FILE", empty.display().to_string())],
            ]
            .concat(),
            "is empty",
        ),
        // GitHub refuses a wrong request token: named, with the workflow permission to check.
        (
            vec!["--auth", "github-oidc"],
            [
                app_ids(),
                vec![
                    (
                        "ACTIONS_ID_TOKEN_REQUEST_URL",
                        format!("{}/github/idtoken?api-version=2.0", mock.base_url()),
                    ),
                    (
                        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                        "wrong-REQUEST-token".to_owned(),
                    ),
                ],
            ]
            .concat(),
            "id-token: write",
        ),
        (vec![], vec![], "--auth"),
    ];
    for (args, envs, wanted) in cases {
        let result = output_of(child(&input, &output, &mock, &args, &envs, None)).await;
        let written = everything(&result, &output);
        assert_eq!(result.status.code(), Some(4), "{args:?}: {written}");
        assert!(written.contains(wanted), "{args:?}: {written}");
        assert_no_secret(&written, &[IDENTITY_HEADER, "wrong-REQUEST-token"]);
    }
    assert_eq!(mock.stats().graph_requests, 0, "nothing was sent to Graph");
    assert_eq!(mock.stats().token_requests, 0);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_cloud_shell_and_arc_speak_their_own_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("tokens");
    std::fs::create_dir(&key_dir).unwrap();
    let key_file = key_dir.join("agent.key");
    std::fs::write(&key_file, ARC_KEY).unwrap();
    let mock = MockServer::start(MockConfig {
        arc_key_file: Some(key_file.clone()),
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(3));
    let output = dir.path().join("out.jsonl");
    let shell = vec![(
        "MSI_ENDPOINT",
        format!("{}/cloudshell/token", mock.base_url()),
    )];
    let result = output_of(child(&input, &output, &mock, &[], &shell, None)).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    assert_eq!(paths(&mock, "/cloudshell/token").len(), 1);

    let arc = |dir: &Path| {
        vec![
            (
                "IDENTITY_ENDPOINT",
                format!("{}/arc/token", mock.base_url()),
            ),
            ("IMDS_ENDPOINT", "http://127.0.0.1:1".to_owned()),
            ("GRAPH_REMEDIATE_ARC_KEY_DIR", dir.display().to_string()),
        ]
    };
    let output = dir.path().join("arc.jsonl");
    let result = output_of(child(
        &input,
        &output,
        &mock,
        &["-vv"],
        &arc(&key_dir),
        None,
    ))
    .await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 3, &written);
    let statuses: Vec<u16> = paths(&mock, "/arc/token")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![401, 200], "the challenge, then the key");
    assert_no_secret(&written, &[ARC_KEY]);

    // A challenge naming a file outside the agent's directory is not read.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let output = dir.path().join("elsewhere.jsonl");
    let result = output_of(child(&input, &output, &mock, &[], &arc(&elsewhere), None)).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(4), "{written}");
    assert!(written.contains("refusing to read it"), "{written}");
    assert_no_secret(&written, &[ARC_KEY]);
    mock.shutdown().await;
}

/// A fake `az` on PATH: counts its runs in `az.count`, logs its arguments to `az.args`, and
/// prints a token living `AZ_LIFETIME` seconds (a JWT with `scp` when `AZ_USER=1`).
fn fake_az(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let user_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"scp":"User.Read Directory.AccessAsUser.All","idtyp":"user"}"#);
    let script = format!(
        r#"#!/bin/sh
dir="{dir}"
n=$(cat "$dir/az.count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/az.count"
echo "$@" >> "$dir/az.args"
if [ "$AZ_FAIL" = 1 ]; then echo "ERROR: Please run 'az login' to setup account." >&2; exit 1; fi
exp=$(( $(date +%s) + ${{AZ_LIFETIME:-3600}} ))
if [ "$AZ_USER" = 1 ]; then token="eyJhbGciOiJub25lIn0.{user_claims}.{AZ_TOKEN}"; else token="{AZ_TOKEN}-$n"; fi
printf '{{"accessToken":"%s","expiresOn":"2030-01-01 00:00:00.000000","expires_on":%s,"tenant":"t","tokenType":"Bearer"}}\n' "$token" "$exp"
"#,
        dir = dir.display()
    );
    let path = bin.join("az");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_azure_cli_runs_az_again_before_expiry_and_refuses_a_user_login() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_az(dir.path());
    let mock = MockServer::start(MockConfig {
        accept_any_token: true,
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(30));
    let output = dir.path().join("out.jsonl");
    let envs = vec![
        ("AZ_LIFETIME", "3".to_owned()),
        ("AZURE_TENANT_ID", TENANT_ID.to_owned()),
    ];
    let args = ["--auth", "azure-cli", "--rate", "10/s", "-v"];
    let result = output_of(child(&input, &output, &mock, &args, &envs, Some(&bin))).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    all_succeeded(&output, 30, &written);
    let runs: u32 = std::fs::read_to_string(dir.path().join("az.count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(runs >= 2, "re-run before expiry: {runs}");
    let argv = std::fs::read_to_string(dir.path().join("az.args")).unwrap();
    let first = argv.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "account get-access-token --output json --scope {}/.default --tenant {TENANT_ID}",
            mock.base_url()
        )
    );
    assert_no_secret(&written, &[AZ_TOKEN]);

    for (env, wanted) in [("AZ_USER", "AADSTS65002"), ("AZ_FAIL", "az login")] {
        let envs = vec![(env, "1".to_owned())];
        let output = dir.path().join(format!("{env}.jsonl"));
        let before = mock.stats().graph_requests;
        let result = output_of(child(
            &input,
            &output,
            &mock,
            &["--auth", "azure-cli"],
            &envs,
            Some(&bin),
        ))
        .await;
        let written = everything(&result, &output);
        assert_eq!(result.status.code(), Some(4), "{written}");
        assert!(written.contains(wanted), "{written}");
        assert_eq!(mock.stats().graph_requests, before, "nothing sent");
        assert_no_secret(&written, &[AZ_TOKEN]);
    }
    mock.shutdown().await;
}

#[test]
fn issue_18_auth_takes_the_sdk_names_from_azure_token_credentials() {
    use clap::Parser as _;
    for (value, kind) in [
        ("managed-identity", "ManagedIdentity"),
        ("ManagedIdentityCredential", "ManagedIdentity"),
        ("WORKLOAD-IDENTITY", "WorkloadIdentity"),
        ("AzureCliCredential", "AzureCli"),
        ("dev", "AzureCli"),
        ("prod", "Auto"),
    ] {
        let cli = graph_remediate::cli::Cli::try_parse_from([
            "graph-remediate",
            "run",
            "in.csv",
            "--auth",
            value,
        ])
        .unwrap();
        assert!(
            format!("{cli:?}").contains(&format!("auth: Some({kind})")),
            "{value}"
        );
    }
    assert!(
        graph_remediate::cli::Cli::try_parse_from([
            "graph-remediate",
            "run",
            "in.csv",
            "--auth",
            "nope"
        ])
        .is_err()
    );
}

/// One 1,000-row run at 100/s with 3-second tokens for `kind`: every row succeeded, the token
/// requests are counted (printed), and no secret is written.
async fn thousand_rows(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, FEDERATED).unwrap();
    let key_dir = dir.path().join("tokens");
    std::fs::create_dir(&key_dir).unwrap();
    std::fs::write(key_dir.join("agent.key"), ARC_KEY).unwrap();
    let lifetime = Duration::from_secs(3);
    let mock = MockServer::start(MockConfig {
        federated_token_file: Some(token_file.clone()),
        oidc_request_token: Some(GITHUB_REQUEST_TOKEN.to_owned()),
        oidc_lifetime: Duration::from_secs(3),
        identity_header: Some(IDENTITY_HEADER.to_owned()),
        arc_key_file: Some(key_dir.join("agent.key")),
        accept_any_token: kind == "azure-cli",
        ..mock_config(lifetime)
    })
    .await
    .unwrap();
    let bin = fake_az(dir.path());
    let base = mock.base_url();
    let envs: Vec<(&str, String)> = match kind {
        "workload-identity" => [
            app_ids(),
            vec![(
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.display().to_string(),
            )],
        ]
        .concat(),
        "github-oidc" => [
            app_ids(),
            vec![
                (
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                    format!("{base}/github/idtoken?api-version=2.0"),
                ),
                (
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                    GITHUB_REQUEST_TOKEN.to_owned(),
                ),
            ],
        ]
        .concat(),
        "imds" => vec![("AZURE_POD_IDENTITY_AUTHORITY_HOST", base.clone())],
        "app-service" => vec![
            ("IDENTITY_ENDPOINT", format!("{base}/msi/token")),
            ("IDENTITY_HEADER", IDENTITY_HEADER.to_owned()),
        ],
        "cloud-shell" => vec![("MSI_ENDPOINT", format!("{base}/cloudshell/token"))],
        "arc" => vec![
            ("IDENTITY_ENDPOINT", format!("{base}/arc/token")),
            ("IMDS_ENDPOINT", "http://127.0.0.1:1".to_owned()),
            ("GRAPH_REMEDIATE_ARC_KEY_DIR", key_dir.display().to_string()),
        ],
        "azure-cli" => vec![("AZ_LIFETIME", "3".to_owned())],
        _ => unreachable!(),
    };
    let auth = match kind {
        "imds" | "app-service" | "cloud-shell" | "arc" => "managed-identity",
        other => other,
    };
    let input = write_csv(dir.path(), "in.csv", &plain_rows(1000));
    let output = dir.path().join("out.jsonl");
    let args = ["--auth", auth, "--rate", "100/s", "--burst", "1", "-v"];
    let started = Instant::now();
    let result = output_of(child(&input, &output, &mock, &args, &envs, Some(&bin))).await;
    let took = started.elapsed();
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{kind}: {written}");
    all_succeeded(&output, 1000, &written);
    let stats = mock.stats();
    let az_runs = std::fs::read_to_string(dir.path().join("az.count")).unwrap_or_default();
    let token_requests = match kind {
        "imds" | "app-service" | "cloud-shell" | "arc" => stats.managed_identity_requests,
        "azure-cli" => az_runs.trim().parse().unwrap_or(0),
        _ => stats.token_requests,
    };
    println!(
        "{kind}: 1000 rows in {:.1} s, {token_requests} token requests (OIDC {}), graph 401s {}",
        took.as_secs_f64(),
        stats.oidc_requests,
        stats.status(401)
    );
    // About one per 2.25 s (3 s less the quarter renewed early) over ~10 s, never one per row.
    assert!(
        (3..=12).contains(&token_requests),
        "{kind}: {token_requests}"
    );
    assert_no_secret(
        &written,
        &[
            FEDERATED,
            GITHUB_REQUEST_TOKEN,
            IDENTITY_HEADER,
            ARC_KEY,
            AZ_TOKEN,
        ],
    );
    mock.shutdown().await;
}

macro_rules! thousand {
    ($($name:ident => $kind:literal),* $(,)?) => {$(
        #[ignore = "10 s at 100/s: run by scripts/unattended-soak.sh"]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            thousand_rows($kind).await;
        }
    )*};
}

thousand! {
    issue_18_thousand_rows_workload_identity => "workload-identity",
    issue_18_thousand_rows_github_oidc => "github-oidc",
    issue_18_thousand_rows_imds => "imds",
    issue_18_thousand_rows_app_service => "app-service",
    issue_18_thousand_rows_cloud_shell => "cloud-shell",
    issue_18_thousand_rows_arc => "arc",
    issue_18_thousand_rows_azure_cli => "azure-cli",
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_resolve_signs_in_with_a_managed_identity_too() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        tenant: Some(graph_remediate::mock::Tenant::synthetic(5)),
        ..mock_config(Duration::from_secs(3599))
    })
    .await
    .unwrap();
    let input = dir.path().join("export.csv");
    std::fs::write(
        &input,
        format!(
            "AccountUpn,ticket\n{},INC-1\n",
            graph_remediate::mock::Tenant::synthetic_upn(1)
        ),
    )
    .unwrap();
    let output = dir.path().join("resolved.csv");
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .arg("resolve")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--graph-url", &mock.base_url(), "--rate", "100/s"])
        .args(["--auth", "managed-identity", "--action", "disable"])
        .args(["--provider", "activeDirectory"])
        .stdin(std::process::Stdio::null());
    for var in CREDENTIAL_VARS {
        command.env_remove(var);
    }
    command.env("AZURE_POD_IDENTITY_AUTHORITY_HOST", mock.base_url());
    let result = output_of(command).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{written}");
    assert_eq!(paths(&mock, "/metadata/identity/oauth2/token").len(), 1);
    assert!(mock.stats().graph_requests >= 1, "{written}");
    assert_no_secret(&written, &[]);
    mock.shutdown().await;
}

#[test]
fn issue_18_azure_token_credentials_picks_the_kind_as_dry_run_shows() {
    let dry_run = |envs: &[(&str, &str)]| {
        let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
        command
            .args(["run", "samples/accounts.csv", "--dry-run"])
            .args(["--graph-url", "http://127.0.0.1:9"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::null());
        for var in CREDENTIAL_VARS {
            command.env_remove(var);
        }
        command.envs(envs.iter().copied());
        let output = command.output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    };
    let shown = dry_run(&[("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")]);
    assert!(
        shown.contains("credentials   managed identity (IMDS"),
        "{shown}"
    );
    // An unattended kind's variable, no --auth: found, and named.
    let shown = dry_run(&[("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token")]);
    assert!(shown.contains("credentials   workload identity"), "{shown}");
    let shown = dry_run(&[]);
    assert!(shown.contains("none usable"), "{shown}");
    // An explicit secret wins, and the ignored kind is named.
    let shown = dry_run(&[
        ("AZURE_CLIENT_SECRET", "s3cret-never-printed"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/token"),
    ]);
    assert!(shown.contains("credentials   a client secret"), "{shown}");
    assert!(
        shown.contains("explicit credentials win") && shown.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret-never-printed"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_the_readme_managed_identity_rehearsal_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:8080 graph-remediate run")
        .expect("the README's managed-identity rehearsal");
    let mut command = String::new();
    for line in readme[start..].lines() {
        command.push_str(line.trim().trim_end_matches('\\'));
        command.push(' ');
        if !line.trim_end().ends_with('\\') {
            break;
        }
    }
    let words = shlex::split(&command).unwrap();
    // `graph-remediate mock --listen 127.0.0.1:8080`, on a free port instead.
    let mock = MockServer::start(MockConfig {
        record: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("mi-results.jsonl");
    let here = |word: &str| {
        word.replace("http://127.0.0.1:8080", &mock.base_url())
            .replace("/tmp/mi-results.jsonl", output.to_str().unwrap())
    };
    let (variable, value) = words[0].split_once('=').unwrap();
    assert_eq!(words[1], "graph-remediate");
    let mut child = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    child
        .args(words[2..].iter().map(|w| here(w)))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null());
    for var in CREDENTIAL_VARS {
        child.env_remove(var);
    }
    child.env(variable, here(value));
    let result = output_of(child).await;
    let written = everything(&result, &output);
    assert_eq!(result.status.code(), Some(0), "{command}\n{written}");
    assert_eq!(paths(&mock, "/metadata/identity/oauth2/token").len(), 1);
    mock.shutdown().await;
}
