//! Responders who sign in as themselves, and what the token may do (issue 18), through the
//! binary against an in-process mock: `--auth device-code` and `--auth browser` (with `$BROWSER`
//! a script, and the test acting as the browser), `auth` with and without the permissions a plan
//! needs, a run stopped before its first request for a missing permission, who acted in the lock
//! file and the report, and no code or token in any output.
//!
//! Environment variables go to a child process (`Command::env`), never `std::env::set_var`.

use super::common;

use std::path::Path;
use std::process::{Command as Child, Output};
use std::time::Duration;

use common::*;
use graph_remediate::mock::{
    AuthorizeScript, DeviceCodeScript, MockConfig, MockServer, Poll, SignInMock,
};

const CLIENT_ID: &str = "22222222-3333-4444-5555-666666666666";
const TENANT_ID: &str = "contoso.onmicrosoft.com";
const SECRET: &str = "s3cret-VALUE-never-printed-5e2a";
const USER: &str = "ann.responder@contoso.com";
/// What the mock's codes and tokens start with: none may be printed.
const SECRET_PREFIXES: [&str; 4] = ["mock-at-", "mock-rt-", "mock-dc-", "mock-code-"];

/// Every variable that could pick a credential or open a browser, removed from the child's
/// environment so that the developer's own shell cannot change a test.
const CLEARED_VARS: [&str; 10] = [
    "GRAPH_ACCESS_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_AUTHORITY_HOST",
    "BROWSER",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "RUST_LOG",
];

const ACTIONS: &str = "SecurityIdentitiesActions.ReadWrite.All";
const READS: &str = "SecurityIdentitiesAccount.Read.All";

async fn mock_with(sign_in: SignInMock) -> MockServer {
    MockServer::start(MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SECRET.to_owned()),
        sign_in: SignInMock {
            user: USER.to_owned(),
            ..sign_in
        },
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn device_code(polls: Vec<Poll>) -> DeviceCodeScript {
    DeviceCodeScript {
        polls,
        end: Poll::Approve,
        interval: 1,
        expires_in: 60,
    }
}

/// `graph-remediate ARGS --graph-url MOCK --authority-url MOCK --tenant-id --client-id` as a
/// child process with only `envs` set; the mock keeps serving while it runs.
async fn child(mock: &MockServer, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .args(args)
        .args(["--graph-url", &mock.base_url()])
        .args(["--authority-url", &mock.base_url()])
        .args(["--tenant-id", TENANT_ID, "--client-id", CLIENT_ID])
        .stdin(std::process::Stdio::null());
    for var in CLEARED_VARS {
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

fn assert_no_secret(texts: &[&str]) {
    for text in texts {
        for prefix in SECRET_PREFIXES {
            assert!(!text.contains(prefix), "{prefix} leaked: {text}");
        }
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// Rows that name people by UPN: the run reads identities, and users.
fn upn_input(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("upn.csv");
    std::fs::write(&path, "upn,action\nann@contoso.com,disable\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_auth_with_the_permissions_a_plan_needs_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_with(SignInMock {
        app_roles: Some(vec![
            ACTIONS.to_owned(),
            READS.to_owned(),
            "User.Read.All".to_owned(),
        ]),
        ..SignInMock::default()
    })
    .await;
    let input = upn_input(dir.path());
    let input = input.to_str().unwrap();
    let output = child(
        &mock,
        &["auth", input, "--format", "json"],
        &[("AZURE_CLIENT_SECRET", SECRET)],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let found: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(found["app"], CLIENT_ID);
    assert_eq!(found["tenant"], TENANT_ID);
    assert_eq!(
        found["needs"],
        serde_json::json!([ACTIONS, READS, "User.Read.All"])
    );
    assert_eq!(found["missing"], serde_json::json!([]));
    assert_eq!(
        mock.stats().graph_requests,
        0,
        "auth sends nothing to Graph"
    );
    assert_no_secret(&[&stdout, &stderr]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_auth_without_a_permission_the_plan_needs_names_it_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_with(SignInMock {
        app_roles: Some(vec![ACTIONS.to_owned(), READS.to_owned()]),
        ..SignInMock::default()
    })
    .await;
    let input = upn_input(dir.path());
    let input = input.to_str().unwrap();
    let output = child(&mock, &["auth", input], &[("AZURE_CLIENT_SECRET", SECRET)]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(4), "{stdout}{stderr}");
    assert!(stdout.contains("missing      User.Read.All"), "{stdout}");
    assert!(
        stdout.contains("admin consent"),
        "says how to grant it: {stdout}"
    );
    // Without an input nothing is compared: the same token is fine for `auth` alone.
    let output = child(&mock, &["auth"], &[("AZURE_CLIENT_SECRET", SECRET)]).await;
    assert_eq!(output.status.code(), Some(0), "{:?}", text(&output));
    assert_eq!(mock.stats().graph_requests, 0);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_auth_with_device_code_names_the_signed_in_user() {
    let mock = mock_with(SignInMock {
        device_code: device_code(vec![Poll::Pending]),
        ..SignInMock::default()
    })
    .await;
    let output = child(&mock, &["auth", "--auth", "device-code"], &[]).await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("microsoft.com/devicelogin") && stderr.contains("to authenticate.\n"),
        "the sign-in message, on a line of its own: {stderr}"
    );
    assert!(stdout.contains(&format!("user         {USER}")), "{stdout}");
    assert!(stdout.contains("(--auth device-code)"), "{stdout}");
    assert!(stdout.contains(ACTIONS), "{stdout}");
    assert_eq!(mock.sign_in_stats().device_polls, 2);
    assert_no_secret(&[&stdout, &stderr]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_run_without_the_action_permission_stops_before_the_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_with(SignInMock {
        device_code: device_code(vec![]),
        // The user consented to reads only.
        delegated_permissions: Some(vec![READS.to_owned()]),
        ..SignInMock::default()
    })
    .await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(3));
    let results = dir.path().join("out.jsonl");
    let output = child(
        &mock,
        &[
            "run",
            input.to_str().unwrap(),
            "-o",
            results.to_str().unwrap(),
            "--yes",
            "--auth",
            "device-code",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(4), "{stdout}{stderr}");
    assert!(
        stderr.contains(ACTIONS) && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    assert!(
        stderr.contains("delegated Microsoft Graph permission"),
        "{stderr}"
    );
    assert_eq!(mock.stats().graph_requests, 0);
    assert_no_secret(&[&stdout, &stderr]);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_the_lock_file_and_the_report_name_the_signed_in_user() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_with(SignInMock {
        device_code: device_code(vec![]),
        ..SignInMock::default()
    })
    .await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(3));
    let results = dir.path().join("out.jsonl");
    let output = child(
        &mock,
        &[
            "run",
            input.to_str().unwrap(),
            "-o",
            results.to_str().unwrap(),
            "--yes",
            "--rate",
            "50/s",
            "--auth",
            "device-code",
        ],
        &[],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let lock = std::fs::read_to_string(dir.path().join("out.jsonl.lock")).unwrap();
    let lock: serde_json::Value = serde_json::from_str(&lock).unwrap();
    assert_eq!(lock["actedAs"], USER, "{lock}");
    assert!(
        lock["credential"]
            .as_str()
            .unwrap()
            .contains("--auth device-code")
    );
    let report = Child::new(env!("CARGO_BIN_EXE_graph-remediate"))
        .arg("report")
        .arg(&results)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    assert!(
        report.contains("Acted as") && report.contains(USER),
        "{report}"
    );
    assert_no_secret(&[&stdout, &stderr, &report, &lock.to_string()]);
    for record in read_jsonl(&results) {
        assert_eq!(record["status"], "succeeded");
        assert_no_secret(&[&record.to_string()]);
    }
    mock.shutdown().await;
}

/// A `$BROWSER` that writes the URL it is given to `file`; the test then acts as the browser.
fn browser_script(dir: &Path, file: &Path) -> std::path::PathBuf {
    let script = dir.join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > '{}.tmp'\nmv '{0}.tmp' '{0}'\n",
            file.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    script
}

/// Waits for the URL the `$BROWSER` script wrote, follows the mock's `/authorize` redirect to
/// the tool's loopback listener, and returns the listener's status.
async fn act_as_browser(url_file: &Path) -> u16 {
    let started = std::time::Instant::now();
    let url = loop {
        if let Ok(url) = std::fs::read_to_string(url_file) {
            break url;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "$BROWSER was never run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorized = http.get(&url).send().await.unwrap();
    assert_eq!(authorized.status(), 302);
    let location = authorized.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.starts_with("http://localhost:"), "{location}");
    http.get(&location).send().await.unwrap().status().as_u16()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_browser_sign_in_honours_browser_and_refuses_a_wrong_state() {
    let dir = tempfile::tempdir().unwrap();
    for (script, expected_status, expected_exit) in [
        (AuthorizeScript::Approve, 200, 0),
        (AuthorizeScript::WrongState, 400, 4),
    ] {
        let mock = mock_with(SignInMock {
            authorize: script,
            ..SignInMock::default()
        })
        .await;
        let url_file = dir.path().join(format!("url-{expected_exit}.txt"));
        let browser = browser_script(dir.path(), &url_file);
        let envs = [("BROWSER", browser.to_str().unwrap())];
        let args = ["auth", "--auth", "browser"];
        let (output, landed) = tokio::join!(child(&mock, &args, &envs), act_as_browser(&url_file));
        let (stdout, stderr) = text(&output);
        assert_eq!(landed, expected_status, "{script:?}");
        assert_eq!(
            output.status.code(),
            Some(expected_exit),
            "{stdout}{stderr}"
        );
        assert!(
            stderr.contains("/oauth2/v2.0/authorize?"),
            "the URL is printed: {stderr}"
        );
        if script == AuthorizeScript::Approve {
            assert!(stdout.contains(USER), "{stdout}");
        } else {
            assert!(
                stderr.contains("--auth browser") && stderr.contains("state"),
                "{stderr}"
            );
            assert_eq!(
                mock.stats().token_requests,
                0,
                "the code was never redeemed"
            );
        }
        assert_no_secret(&[&stdout, &stderr]);
        mock.shutdown().await;
    }
}

#[tokio::test]
async fn issue_18_the_mock_answers_403_to_a_token_without_the_action_permission() {
    let mock = mock_with(SignInMock {
        app_roles: Some(vec![READS.to_owned()]),
        ..SignInMock::default()
    })
    .await;
    let http = reqwest::Client::new();
    let issued: serde_json::Value = http
        .post(format!("{}/{TENANT_ID}/oauth2/v2.0/token", mock.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["access_token"].as_str().unwrap();
    let action = |token: String| {
        http.post(format!(
            "{}/v1.0/security/identities/identityAccounts/id-1/microsoft.graph.security.invokeAction",
            mock.base_url()
        ))
        .bearer_auth(token)
        .json(&serde_json::json!({"accountId": "a", "action": "disable", "identityProvider": "okta"}))
        .send()
    };
    assert_eq!(action(token.to_owned()).await.unwrap().status(), 403);
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_delegated_sign_in_without_a_client_id_names_the_kind_and_what_is_missing() {
    let mock = mock_with(SignInMock::default()).await;
    let mut command = Child::new(env!("CARGO_BIN_EXE_graph-remediate"));
    command
        .args(["auth", "--auth", "device-code", "--tenant-id", TENANT_ID])
        .args([
            "--graph-url",
            &mock.base_url(),
            "--authority-url",
            &mock.base_url(),
        ]);
    for var in CLEARED_VARS {
        command.env_remove(var);
    }
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("--auth device-code") && stderr.contains("--client-id"),
        "{stderr}"
    );
    assert_eq!(mock.sign_in_stats().device_codes, 0, "nothing was sent");
    mock.shutdown().await;
}

/// The mock's `/authorize` and `/token` as a client sees them: the PKCE verifier is checked, a
/// code works once, and a refresh token works once (the newest must be sent).
#[tokio::test]
async fn issue_18_the_mock_checks_the_pkce_verifier_and_refuses_an_old_refresh_token() {
    use base64::Engine as _;
    let mock = mock_with(SignInMock::default()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let verifier = "a-verifier-of-forty-three-characters-000000";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()),
    );
    let redirect_uri = "http://localhost:1";
    let authorize = |challenge: &str| {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/{TENANT_ID}/oauth2/v2.0/authorize", mock.base_url()),
            [
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("redirect_uri", redirect_uri),
                ("scope", "https://graph.microsoft.com/SecurityIdentitiesActions.ReadWrite.All offline_access"),
                ("state", "s"),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .unwrap();
        http.get(url).send()
    };
    let code_of = |response: reqwest::Response| {
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        reqwest::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    };
    let token = |form: Vec<(&'static str, String)>| {
        http.post(format!("{}/{TENANT_ID}/oauth2/v2.0/token", mock.base_url()))
            .form(&form)
            .send()
    };
    let redeem = |code: String, verifier: &str| {
        token(vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", CLIENT_ID.to_owned()),
            ("code", code),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ])
    };
    let code = code_of(authorize(&challenge).await.unwrap());
    let wrong = redeem(code, "another-verifier").await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().await.unwrap().contains("AADSTS501481"));
    let code = code_of(authorize(&challenge).await.unwrap());
    let issued: serde_json::Value = redeem(code.clone(), verifier)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(issued["access_token"].is_string() && issued["id_token"].is_string());
    assert_eq!(
        redeem(code, verifier).await.unwrap().status(),
        400,
        "a code works once"
    );
    let refresh = |refresh_token: &str| {
        token(vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", CLIENT_ID.to_owned()),
            ("refresh_token", refresh_token.to_owned()),
        ])
    };
    let first = issued["refresh_token"].as_str().unwrap().to_owned();
    let renewed: serde_json::Value = refresh(&first).await.unwrap().json().await.unwrap();
    let newest = renewed["refresh_token"].as_str().unwrap();
    assert_ne!(newest, first, "rotated");
    assert_eq!(
        refresh(&first).await.unwrap().status(),
        400,
        "the old one is refused"
    );
    assert_eq!(refresh(newest).await.unwrap().status(), 200);
    assert_eq!(mock.sign_in_stats().stale_refresh_tokens, 1);
    // Without PKCE, /authorize refuses.
    let url = format!(
        "{}/{TENANT_ID}/oauth2/v2.0/authorize?client_id={CLIENT_ID}&response_type=code&redirect_uri=http%3A%2F%2Flocalhost&state=s",
        mock.base_url()
    );
    assert_eq!(http.get(url).send().await.unwrap().status(), 400);
    mock.shutdown().await;
}

/// A responder who gives up on a pending device code: the first Ctrl-C (the shutdown future)
/// ends the sign-in at once, exit 130, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_signal_ends_a_sign_in_that_is_still_waiting() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_with(SignInMock {
        device_code: DeviceCodeScript {
            polls: Vec::new(),
            end: Poll::Pending,
            interval: 1,
            expires_in: 900,
        },
        ..SignInMock::default()
    })
    .await;
    let input = write_csv(dir.path(), "in.csv", &plain_rows(2));
    let results = dir.path().join("out.jsonl");
    // `confirm` reads results before it signs in: an empty file is results with no row.
    let to_confirm = dir.path().join("to-confirm.jsonl");
    std::fs::write(&to_confirm, "").unwrap();
    let base = mock.base_url();
    for command in ["run", "auth", "confirm"] {
        let first = if command == "confirm" {
            &to_confirm
        } else {
            &input
        };
        let mut argv = vec!["graph-remediate", command, first.to_str().unwrap()];
        if command == "run" {
            argv.extend(["-o", results.to_str().unwrap(), "--yes"]);
        }
        argv.extend([
            "--auth",
            "device-code",
            "--tenant-id",
            TENANT_ID,
            "--client-id",
            CLIENT_ID,
            "--graph-url",
            &base,
            "--authority-url",
            &base,
        ]);
        let cli = graph_remediate::cli::Cli::try_parse_from(argv).unwrap();
        let started = std::time::Instant::now();
        let signalled =
            graph_remediate::execute(cli.command, tokio::time::sleep(Duration::from_millis(1500)));
        let error = tokio::time::timeout(Duration::from_secs(10), signalled)
            .await
            .unwrap_or_else(|_| panic!("{command}: the signal did not end the sign-in"))
            .unwrap_err();
        assert_eq!(
            graph_remediate::status_of(&error),
            graph_remediate::ExitStatus::Interrupted,
            "{command}: {error:#}"
        );
        assert!(
            format!("{error:#}").contains("nothing was sent"),
            "{error:#}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{command}");
        assert!(
            mock.sign_in_stats().device_polls >= 1,
            "{command}: it was waiting"
        );
    }
    assert_eq!(mock.stats().graph_requests, 0);
    mock.shutdown().await;
}

/// A token that does not say what it may do (an opaque ready token) is warned about and used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_a_token_whose_permissions_cannot_be_read_is_warned_about_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(MockConfig {
        accept_any_token: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let input = write_csv(dir.path(), "in.csv", &plain_rows(2));
    let results = dir.path().join("out.jsonl");
    let input = input.to_str().unwrap();
    let results = results.to_str().unwrap();
    let output = child(
        &mock,
        &["run", input, "-o", results, "--yes", "--rate", "50/s"],
        &[("GRAPH_ACCESS_TOKEN", "opaque-ready-token-value")],
    )
    .await;
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot tell what the access token may do"),
        "{stderr}"
    );
    assert_eq!(mock.stats().status(200), 2);
    let output = child(
        &mock,
        &["auth", input],
        &[("GRAPH_ACCESS_TOKEN", "opaque-ready-token-value")],
    )
    .await;
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("permissions  cannot tell"), "{stdout}");
    assert!(!stdout.contains("opaque-ready-token-value"));
    mock.shutdown().await;
}
