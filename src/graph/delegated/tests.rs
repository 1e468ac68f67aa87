//! The delegated sign-ins against the in-process mock (issue 18). The server's "second" is
//! shortened to a few milliseconds, so a 5-second interval and its `slow_down` steps run in
//! milliseconds while keeping their proportions.

use super::*;
use crate::graph::permissions::Permission;
use crate::mock::{AuthorizeScript, DeviceCodeScript, MockConfig, MockServer, Poll, SignInMock};

const CLIENT_ID: &str = "public-client-app";
const UNIT: Duration = Duration::from_millis(20);

async fn start_mock(sign_in: SignInMock, lifetime: Duration) -> MockServer {
    MockServer::start(MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        token_lifetime: lifetime,
        sign_in,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn device_script(polls: Vec<Poll>, end: Poll) -> SignInMock {
    SignInMock {
        device_code: DeviceCodeScript {
            polls,
            end,
            interval: 1,
            expires_in: 900,
        },
        ..SignInMock::default()
    }
}

fn tokens_for(mock: &MockServer, kind: SignInKind, launcher: Option<Launcher>) -> DelegatedTokens {
    let endpoint = TokenEndpoint::new(&mock.base_url(), &mock.base_url()).unwrap();
    let mut settings = SignInSettings::new(
        kind,
        "contoso.onmicrosoft.com".to_owned(),
        CLIENT_ID.to_owned(),
        &endpoint,
        &Needs::of(true, true, false, false),
        None,
    );
    settings.second = UNIT;
    if let Some(launcher) = launcher {
        settings.launcher = launcher;
    }
    DelegatedTokens::new(settings, &endpoint, Duration::from_secs(5)).unwrap()
}

#[test]
fn issue_18_the_sign_in_asks_for_what_the_run_needs_and_a_refresh_token() {
    let endpoint =
        TokenEndpoint::new("login.microsoftonline.us", "https://graph.microsoft.us").unwrap();
    let settings = SignInSettings::new(
        SignInKind::DeviceCode,
        "t".to_owned(),
        "c".to_owned(),
        &endpoint,
        &Needs::of(true, false, true, false),
        None,
    );
    assert_eq!(
        settings.scope,
        "https://graph.microsoft.us/SecurityIdentitiesActions.ReadWrite.All https://graph.microsoft.us/SecurityIdentitiesAccount.Read.All https://graph.microsoft.us/User.Read.All offline_access openid profile"
    );
}

#[tokio::test]
async fn issue_18_device_code_polls_while_pending_then_signs_in() {
    let mock = start_mock(
        device_script(
            vec![Poll::Pending, Poll::Pending, Poll::Pending],
            Poll::Approve,
        ),
        Duration::from_secs(3599),
    )
    .await;
    let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
    let token = tokens.current().await.unwrap();
    assert!(token.expose_secret().contains("mock-at-"));
    let stats = mock.sign_in_stats();
    assert_eq!((stats.device_codes, stats.device_polls), (1, 4));
    let signed_in = tokens.signed_in().unwrap();
    assert_eq!(signed_in.user.as_deref(), Some("responder@contoso.com"));
    assert!(
        signed_in
            .granted
            .missing(&Needs::of(true, true, false, false))
            .is_empty()
    );
    // Signed in once: later callers get the same token without a poll.
    assert!(Arc::ptr_eq(&token, &tokens.current().await.unwrap()));
    assert_eq!(mock.sign_in_stats().device_polls, 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_device_code_slow_down_adds_five_seconds_to_the_interval() {
    let mock = start_mock(
        device_script(vec![Poll::SlowDown, Poll::Pending], Poll::Approve),
        Duration::from_secs(3599),
    )
    .await;
    let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
    let started = std::time::Instant::now();
    tokens.current().await.unwrap();
    let took = started.elapsed();
    // 1 unit before the first poll, then 6 (1 + 5) before each of the next two: 13 units.
    // Ignoring slow_down would take 3.
    assert!(took >= UNIT * 13, "took {took:?}");
    assert_eq!(mock.sign_in_stats().device_polls, 3);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_a_declined_device_code_sign_in_stops_naming_the_kind_and_sends_nothing() {
    let mock = start_mock(
        device_script(vec![Poll::Pending], Poll::Decline),
        Duration::from_secs(3599),
    )
    .await;
    let error = tokens_for(&mock, SignInKind::DeviceCode, None)
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--auth device-code") && error.contains("declined"),
        "{error}"
    );
    assert!(error.contains("nothing was sent"), "{error}");
    assert!(
        !error.contains("mock-dc-"),
        "the device code is a secret: {error}"
    );
    assert_eq!(mock.stats().graph_requests, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_an_expired_device_code_stops_the_sign_in() {
    let mock = start_mock(
        device_script(vec![], Poll::Expire),
        Duration::from_secs(3599),
    )
    .await;
    let error = tokens_for(&mock, SignInKind::DeviceCode, None)
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--auth device-code") && error.contains("expired"),
        "{error}"
    );
    mock.shutdown().await;

    // Still pending when the code's own lifetime runs out: the tool stops without Entra's word.
    let mut script = device_script(vec![], Poll::Pending);
    script.device_code.expires_in = 4;
    let mock = start_mock(script, Duration::from_secs(3599)).await;
    let error = tokens_for(&mock, SignInKind::DeviceCode, None)
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("expired"), "{error}");
    assert!(mock.sign_in_stats().device_polls <= 4);
    let bad = mock_bad_code().await;
    assert!(bad.contains("bad_verification_code"), "{bad}");
    mock.shutdown().await;
}

async fn mock_bad_code() -> String {
    let mock = start_mock(
        device_script(vec![], Poll::BadCode),
        Duration::from_secs(3599),
    )
    .await;
    let error = tokens_for(&mock, SignInKind::DeviceCode, None)
        .current()
        .await
        .unwrap_err()
        .to_string();
    mock.shutdown().await;
    error
}

/// A browser: follows the mock's `/authorize` redirect to the tool's loopback listener.
fn test_browser() -> (Launcher, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
    let launcher = Launcher::Test(Arc::new(move |url: String| {
        let status_tx = status_tx.clone();
        tokio::spawn(async move {
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
            let landed = http.get(&location).send().await.unwrap();
            let _ = status_tx.send(landed.status().as_u16());
        });
    }));
    (launcher, status_rx)
}

#[tokio::test]
async fn issue_18_browser_sign_in_with_pkce_comes_back_to_the_loopback_listener() {
    let mock = start_mock(SignInMock::default(), Duration::from_secs(3599)).await;
    let (launcher, mut landed) = test_browser();
    let tokens = tokens_for(&mock, SignInKind::Browser, Some(launcher));
    tokens.current().await.unwrap();
    assert_eq!(landed.recv().await, Some(200));
    let signed_in = tokens.signed_in().unwrap();
    assert_eq!(signed_in.user.as_deref(), Some("responder@contoso.com"));
    assert_eq!(mock.sign_in_stats().authorizations, 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_a_browser_redirect_with_the_wrong_state_is_refused() {
    let mock = start_mock(
        SignInMock {
            authorize: AuthorizeScript::WrongState,
            ..SignInMock::default()
        },
        Duration::from_secs(3599),
    )
    .await;
    let (launcher, mut landed) = test_browser();
    let error = tokens_for(&mock, SignInKind::Browser, Some(launcher))
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--auth browser") && error.contains("state"),
        "{error}"
    );
    assert!(
        !error.contains("mock-code-"),
        "the code is a secret: {error}"
    );
    assert_eq!(landed.recv().await, Some(400), "the browser is told too");
    // The code that came with the forged state was never redeemed.
    assert_eq!(mock.stats().token_requests, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_a_declined_browser_sign_in_names_the_kind() {
    let mock = start_mock(
        SignInMock {
            authorize: AuthorizeScript::Deny,
            ..SignInMock::default()
        },
        Duration::from_secs(3599),
    )
    .await;
    let (launcher, _landed) = test_browser();
    let error = tokens_for(&mock, SignInKind::Browser, Some(launcher))
        .current()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--auth browser") && error.contains("access_denied"),
        "{error}"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_18_refresh_rotation_under_64_workers_makes_one_refresh_and_uses_the_newest_token() {
    // One-second tokens: renewed from 0.75 s on.
    let mock = start_mock(device_script(vec![], Poll::Approve), Duration::from_secs(1)).await;
    let tokens = Arc::new(tokens_for(&mock, SignInKind::DeviceCode, None));
    let mut previous = tokens.current().await.unwrap();
    for round in 1..=2u64 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let tokens = tokens.clone();
            workers.spawn(async move { tokens.current().await.unwrap() });
        }
        let mut seen = Vec::new();
        while let Some(token) = workers.join_next().await {
            seen.push(token.unwrap());
        }
        // Workers that came while the renewal was in flight kept the old, still good token;
        // everyone after it has the new one, and there was one renewal.
        let newest = tokens.current().await.unwrap();
        assert!(!Arc::ptr_eq(&newest, &previous), "round {round}");
        assert!(
            seen.iter()
                .all(|t| Arc::ptr_eq(t, &newest) || Arc::ptr_eq(t, &previous))
        );
        let stats = mock.sign_in_stats();
        assert_eq!(stats.refresh_grants, round, "one refresh per round");
        // The mock refuses a refresh token used before: the newest one was sent each time.
        assert_eq!(stats.stale_refresh_tokens, 0);
        previous = newest;
    }
    // Sixty-four workers whose requests Graph refused with a 401: one renewal between them.
    let stale = previous.clone();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (tokens, stale) = (tokens.clone(), stale.clone());
        workers.spawn(async move { tokens.refresh(&stale).await.unwrap() });
    }
    let mut renewed = Vec::new();
    while let Some(token) = workers.join_next().await {
        renewed.push(token.unwrap());
    }
    assert!(renewed.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert!(!Arc::ptr_eq(&renewed[0], &stale));
    assert_eq!(mock.sign_in_stats().refresh_grants, 3);
    assert_eq!(mock.sign_in_stats().stale_refresh_tokens, 0);
    mock.shutdown().await;
}

#[tokio::test]
async fn issue_18_the_delegated_scope_says_what_the_token_may_do() {
    let mock = start_mock(
        SignInMock {
            delegated_permissions: Some(vec!["SecurityIdentitiesAccount.Read.All".to_owned()]),
            ..device_script(vec![], Poll::Approve)
        },
        Duration::from_secs(3599),
    )
    .await;
    let tokens = tokens_for(&mock, SignInKind::DeviceCode, None);
    tokens.current().await.unwrap();
    let granted = tokens.signed_in().unwrap().granted;
    assert!(granted.is_delegated());
    assert_eq!(
        granted.missing(&Needs::of(true, true, false, false)),
        [Permission::SecurityIdentitiesActions]
    );
    mock.shutdown().await;
}
