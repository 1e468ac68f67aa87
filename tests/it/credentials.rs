//! Credentials against the mock's token endpoint (issue 4): a client secret, a client certificate
//! and a ready token each sign in; short-lived tokens are renewed about once per lifetime, not
//! once per worker; a wrong secret stops the run in seconds with Entra's reason and sends nothing;
//! no secret or token ever reaches stdout, stderr or the results.
//!
//! Environment variables go to a child process (`Command::env`), never `std::env::set_var`.

use super::common;

use std::path::{Path, PathBuf};
use std::process::{Command as Child, Output};

use std::time::{Duration, Instant};

use common::*;
use graph_remediate::ExitStatus;
use graph_remediate::mock::{MockConfig, MockServer};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const TENANT_ID: &str = "contoso.onmicrosoft.com";
const SECRET: &str = "s3cret-VALUE-never-printed-8d1f";
const READY_TOKEN: &str = "ready-TOKEN-never-printed-77ab";
/// The mock issues tokens named `mock-at-<uuid>`: none may be printed either.
const ISSUED_TOKEN_PREFIX: &str = "mock-at-";

/// Every variable that could pick a credential, removed from the child's environment so that the
/// developer's own shell cannot change a test.
const CREDENTIAL_VARS: [&str; 7] = [
    "GRAPH_ACCESS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_AUTHORITY_HOST",
    "RUST_LOG",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A mock whose token endpoint wants `CLIENT_ID` and `SECRET`.
async fn app_mock(lifetime: Duration) -> MockServer {
    MockServer::start(MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SECRET.to_owned()),
        token_lifetime: lifetime,
        record: true,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// Writes `text` to `name` in `dir` with Unix `mode`.
fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
    path
}

/// The key and certificate in one PEM, readable by the owner only.
fn combined_pem(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture("test-only-client-key.pem")).unwrap()
        + &std::fs::read_to_string(fixture("test-only-client-cert.pem")).unwrap();
    private_file(dir, "client.pem", &text, 0o600)
}

/// `graph-remediate run INPUT -o OUTPUT --graph-url MOCK --authority-url MOCK ARGS` as a child
/// process with only `envs` for credentials; the mock keeps serving while it runs.
async fn run_child(
    input: &Path,
    output: &Path,
    mock: &MockServer,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--graph-url", &mock.base_url()])
        .args(["--authority-url", &mock.base_url()])
        .args(["--rate", "50/s", "--yes"])
        .args(args)
        .stdin(std::process::Stdio::null());
    for var in CREDENTIAL_VARS {
        command.env_remove(var);
    }
    command.envs(envs.iter().copied());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn all_succeeded(output: &Path, rows: usize) {
    let records = read_jsonl(output);
    assert_eq!(records.len(), rows);
    for record in &records {
        assert_eq!(record["status"], "succeeded", "{record}");
    }
}

fn token_request_times(mock: &MockServer) -> Vec<f64> {
    mock.requests()
        .iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .map(|r| r.t_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_from_the_environment_signs_in_and_every_row_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(3599)).await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(20));
    let output = dir.path().join("out.jsonl");
    let result = run_child(
        &input,
        &output,
        &mock,
        &[],
        &[
            ("AZURE_TENANT_ID", TENANT_ID),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
        ],
    )
    .await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    all_succeeded(&output, 20);
    assert!(
        stderr.contains("a client secret (AZURE_CLIENT_SECRET)"),
        "the start log names the source: {stderr}"
    );
    let stats = mock.stats();
    assert_eq!(stats.token_requests, 1);
    assert_eq!(stats.graph_requests, 20);
    let token_paths: Vec<String> = mock
        .requests()
        .iter()
        .filter(|r| r.path.contains("oauth2"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(token_paths, vec![format!("/{TENANT_ID}/oauth2/v2.0/token")]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_secret_file_signs_in_and_a_readable_file_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(3599)).await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(5));

    let private = private_file(dir.path(), "secret-600.txt", &format!("{SECRET}\n"), 0o600);
    let output = dir.path().join("private.jsonl");
    let args = [
        "--client-secret-file",
        private.to_str().unwrap(),
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
    ];
    let result = run_child(&input, &output, &mock, &args, &[]).await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    all_succeeded(&output, 5);
    assert!(!stderr.contains("chmod 600"), "{stderr}");

    let shared = private_file(dir.path(), "secret-644.txt", SECRET, 0o644);
    let output = dir.path().join("shared.jsonl");
    let args = [
        "--client-secret-file",
        shared.to_str().unwrap(),
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
    ];
    let result = run_child(&input, &output, &mock, &args, &[]).await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    if cfg!(unix) {
        assert!(
            stderr.contains(&format!("chmod 600 {}", shared.display())),
            "names the file and the fix: {stderr}"
        );
    }
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_signs_in_with_a_ps256_client_assertion() {
    let dir = tempfile::tempdir().unwrap();
    // No client secret configured: only an assertion the mock accepts (structure, aud, iss, sub,
    // jti, nbf, exp) gets a token.
    let mock = MockServer::start(MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        record: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(10));

    // Key and certificate in one PEM, from the environment.
    let pem = combined_pem(dir.path());
    let output = dir.path().join("env.jsonl");
    let result = run_child(
        &input,
        &output,
        &mock,
        &[],
        &[
            ("AZURE_CLIENT_CERTIFICATE_PATH", pem.to_str().unwrap()),
            ("AZURE_TENANT_ID", TENANT_ID),
            ("AZURE_CLIENT_ID", CLIENT_ID),
        ],
    )
    .await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    all_succeeded(&output, 10);
    assert!(stderr.contains("a client certificate"), "{stderr}");

    // Certificate and key in two files, from flags, in process.
    let output = dir.path().join("flags.jsonl");
    let url = mock.base_url();
    let key = private_file(
        dir.path(),
        "key.pem",
        &std::fs::read_to_string(fixture("test-only-client-key.pem")).unwrap(),
        0o600,
    );
    let status = run(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--graph-url",
        &url,
        "--authority-url",
        &url,
        "--certificate",
        fixture("test-only-client-cert.pem").to_str().unwrap(),
        "--certificate-key",
        key.to_str().unwrap(),
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
        "--rate",
        "50/s",
    ])
    .await;
    assert_eq!(status, ExitStatus::Success);
    all_succeeded(&output, 10);
    assert_eq!(mock.stats().token_requests, 2);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_token_is_used_as_given_and_wins_over_app_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        static_tokens: vec![READY_TOKEN.to_owned()],
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SECRET.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(10));
    let output = dir.path().join("out.jsonl");
    // A wrong secret is given too: the ready token comes first, so it is never tried.
    let result = run_child(
        &input,
        &output,
        &mock,
        &[],
        &[
            ("GRAPH_ACCESS_TOKEN", READY_TOKEN),
            ("AZURE_CLIENT_SECRET", "not-the-secret"),
            ("AZURE_TENANT_ID", TENANT_ID),
            ("AZURE_CLIENT_ID", CLIENT_ID),
        ],
    )
    .await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    all_succeeded(&output, 10);
    assert!(
        stderr.contains("a ready access token (GRAPH_ACCESS_TOKEN)"),
        "{stderr}"
    );
    assert!(stderr.contains("more than one credential"), "{stderr}");
    assert_eq!(mock.stats().token_requests, 0);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_second_tokens_over_a_ten_second_run_are_renewed_about_once_per_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(2)).await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(1000));
    let output = dir.path().join("out.jsonl");
    let secret = private_file(dir.path(), "secret.txt", SECRET, 0o600);
    let url = mock.base_url();
    let started = Instant::now();
    let status = run(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--graph-url",
        &url,
        "--authority-url",
        &url,
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
        "--rate",
        "100/s",
        "--concurrency",
        "16",
    ])
    .await;
    let elapsed = started.elapsed();
    assert_eq!(status, ExitStatus::Success);
    all_succeeded(&output, 1000);
    assert!(elapsed >= Duration::from_secs(9), "{elapsed:?}");

    let stats = mock.stats();
    let times = token_request_times(&mock);
    mock.shutdown().await;
    assert_eq!(stats.token_requests as usize, times.len());
    // Renewed ahead of expiry (at 1.5 s of 2): about once per lifetime, never once per worker.
    assert!(
        (3..=10).contains(&stats.token_requests),
        "{} token requests in {elapsed:?}",
        stats.token_requests
    );
    let closest = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    assert!(closest >= 1000.0, "two token requests {closest} ms apart");
    // Renewal comes before Graph would refuse the token.
    assert_eq!(stats.status(401), 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_gets_one_fresh_token_and_one_more_try() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(3599)).await;
    let rows = vec!["http401x1-a,00u1,disable,okta,INC-1".to_owned()];
    let input = write_csv(dir.path(), "in.csv", &rows);
    let output = dir.path().join("out.jsonl");
    let secret = private_file(dir.path(), "secret.txt", SECRET, 0o600);
    let url = mock.base_url();
    let status = run(&[
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--graph-url",
        &url,
        "--authority-url",
        &url,
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--tenant-id",
        TENANT_ID,
        "--client-id",
        CLIENT_ID,
    ])
    .await;
    assert_eq!(status, ExitStatus::Success);
    let records = read_jsonl(&output);
    assert_eq!(records[0]["status"], "succeeded");
    assert_eq!(records[0]["attempts"], 2);
    assert_eq!(mock.stats().token_requests, 2);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_stops_in_seconds_with_entras_reason_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(3599)).await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(50));
    let output = dir.path().join("out.jsonl");
    let started = Instant::now();
    let result = run_child(
        &input,
        &output,
        &mock,
        &[],
        &[
            ("AZURE_TENANT_ID", TENANT_ID),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", "wrong-secret-value-3c9a"),
        ],
    )
    .await;
    let elapsed = started.elapsed();
    let (stdout, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(4), "{stderr}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert!(
        stderr.contains("AADSTS7000215: Invalid client secret provided."),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains("wrong-secret-value-3c9a"));
    }
    let stats = mock.stats();
    assert_eq!(stats.graph_requests, 0);
    assert_eq!(stats.token_requests, 1, "a refusal is not retried");
    assert!(
        !output.exists(),
        "no results file for a run that never started"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_credentials_without_a_tenant_say_which_flag_or_variable_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let mock = app_mock(Duration::from_secs(3599)).await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(3));
    let output = dir.path().join("out.jsonl");
    let result = run_child(
        &input,
        &output,
        &mock,
        &[],
        &[
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
        ],
    )
    .await;
    let (_, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("--tenant-id") && stderr.contains("AZURE_TENANT_ID"),
        "{stderr}"
    );
    assert_eq!(mock.stats().graph_requests + mock.stats().token_requests, 0);
    mock.shutdown().await;
}

/// A variable for the child's environment: name, value.
type EnvVar<'a> = (&'a str, &'a str);

/// Runs a whole batch (with rows that fail, are retried after a 401, and succeed) and returns
/// everything the tool wrote: stdout, stderr and the results file.
async fn everything_written(
    dir: &Path,
    name: &str,
    mock: &MockServer,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut rows = plain_rows(30);
    rows.push("http400-bad,00u9,disable,okta,INC-400".to_owned());
    rows.push("http401x1-again,00u8,disable,okta,INC-401".to_owned());
    let input = write_csv(dir, &format!("{name}.csv"), &rows);
    let output = dir.join(format!("{name}.results.jsonl"));
    let result = run_child(&input, &output, mock, args, envs).await;
    let (stdout, stderr) = text(&result);
    let results = std::fs::read_to_string(&output).unwrap_or_default();
    assert_eq!(results.lines().count(), 32, "{stderr}");
    (
        result.status.code(),
        format!("{stdout}\n{stderr}\n{results}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_output_logs_or_results() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        static_tokens: vec![READY_TOKEN.to_owned()],
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SECRET.to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let app = [
        ("AZURE_TENANT_ID", TENANT_ID),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ];
    let secret_file = private_file(dir.path(), "secret.txt", SECRET, 0o644);
    let token_file = private_file(dir.path(), "token.txt", READY_TOKEN, 0o644);
    let cases: Vec<(&str, Vec<&str>, Vec<EnvVar>)> = vec![
        ("secret-text", vec!["-v"], app.to_vec()),
        (
            "secret-json",
            vec!["-v", "--log-format", "json"],
            app.to_vec(),
        ),
        (
            "secret-file",
            vec![
                "-vv",
                "--client-secret-file",
                secret_file.to_str().unwrap(),
                "--tenant-id",
                TENANT_ID,
                "--client-id",
                CLIENT_ID,
            ],
            vec![],
        ),
        (
            "token-env",
            vec!["-v", "--log-format", "json"],
            vec![("GRAPH_ACCESS_TOKEN", READY_TOKEN)],
        ),
        (
            "token-file",
            vec!["-v", "--access-token-file", token_file.to_str().unwrap()],
            vec![],
        ),
    ];
    for (name, args, envs) in cases {
        let (code, written) = everything_written(dir.path(), name, &mock, &args, &envs).await;
        // 400 fails a row; with a ready token the 401 row fails too (it cannot be renewed).
        assert_eq!(code, Some(3), "{name}: {written}");
        for secret in [SECRET, READY_TOKEN, ISSUED_TOKEN_PREFIX] {
            assert!(
                !written.contains(secret),
                "{name}: {secret:?} was written:\n{written}"
            );
        }
        assert!(written.contains("starting the run"), "{name}: logs were on");
    }
    mock.shutdown().await;
}

#[test]
fn help_shows_no_environment_values() {
    let output = Child::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .args(["run", "--help"])
        .env("AZURE_CLIENT_ID", "client-id-from-env-5e2b")
        .env("AZURE_TENANT_ID", "tenant-from-env-5e2b")
        .env("AZURE_CLIENT_CERTIFICATE_PATH", "/secret/path-5e2b.pem")
        .env("AZURE_AUTHORITY_HOST", "authority-5e2b.example")
        .env("AZURE_CLIENT_SECRET", SECRET)
        .env("GRAPH_ACCESS_TOKEN", READY_TOKEN)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(help.contains("--client-secret-file"), "{help}");
    assert!(help.contains("AZURE_CLIENT_CERTIFICATE_PATH"), "{help}");
    assert!(!help.contains("5e2b"), "{help}");
    assert!(!help.contains(SECRET) && !help.contains(READY_TOKEN));
}

#[test]
fn the_china_cloud_is_refused_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(1));
    let output = Child::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("run")
        .arg(&input)
        .args(["--cloud", "china"])
        .env("AZURE_TENANT_ID", TENANT_ID)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_CLIENT_SECRET", SECRET)
        .env_remove("GRAPH_ACCESS_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("China"), "{stderr}");
    assert!(!dir.path().join("in.results.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_token_endpoint_echoing_the_secret_in_base64_hex_upper_case_or_in_part_never_prints_it()
 {
    use base64::Engine as _;
    use wiremock::{Mock, MockServer as Wire, ResponseTemplate, matchers};
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    let echoes = [
        base64::engine::general_purpose::STANDARD.encode(SECRET),
        hex,
        SECRET.to_ascii_uppercase(),
        SECRET[..14].to_owned(),
    ];
    let authority = Wire::start().await;
    let description = format!(
        "AADSTS7000215: Invalid client secret provided. Got {} / {} / {} / {}",
        echoes[0], echoes[1], echoes[2], echoes[3]
    );
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": "invalid_client",
            "error_description": description,
        })))
        .mount(&authority)
        .await;
    let graph = app_mock(Duration::from_secs(3599)).await;
    let dir = tempfile::tempdir().unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(2));
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("out.jsonl"))
        .args(["--graph-url", &graph.base_url()])
        .args(["--authority-url", &authority.uri()])
        .args(["--yes", "-v"])
        .stdin(std::process::Stdio::null());
    for var in CREDENTIAL_VARS {
        command.env_remove(var);
    }
    command.envs([
        ("AZURE_TENANT_ID", TENANT_ID),
        ("AZURE_CLIENT_ID", CLIENT_ID),
        ("AZURE_CLIENT_SECRET", SECRET),
    ]);
    let result = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = text(&result);
    assert_eq!(result.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("Invalid client secret provided"),
        "{stderr}"
    );
    for echoed in &echoes {
        for shown in [&stdout, &stderr] {
            assert!(!shown.contains(echoed.as_str()), "{echoed} in {shown}");
        }
    }
    assert!(stderr.contains("[redacted]"), "{stderr}");
    graph.shutdown().await;
}
