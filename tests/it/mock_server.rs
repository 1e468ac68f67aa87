//! The mock Graph server, driven over HTTP as a client would: shapes, validation, tokens,
//! throttling and told windows, scenarios, faults, the request log, and the `mock` command.
//!
//! Tests of the mock's own timing (token expiry, told windows, the bucket, latency, the log's
//! flush) run under tokio's paused clock, which the mock keeps its time on: they `advance()` to
//! the instant that matters instead of sleeping, so a loaded machine cannot make them late.
//! Real HTTP still works there, because no timer but the mock's own runs: under a paused clock
//! tokio jumps to the next timer whenever the runtime idles, so [`client`] keeps no idle pool,
//! whose sweep timer would otherwise jump the mock's clock in the middle of an exchange.

use std::time::{Duration, SystemTime};

use graph_remediate::mock::{
    AccountState, LoggedRequest, MockArgs, MockConfig, MockServer, RetryAfterFormat,
};
use graph_remediate::units::parse_rate;
use graph_remediate::{Action, ResponseShape};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";
const SECOND_TOKEN: &str = "second-test-token";

fn config() -> MockConfig {
    MockConfig {
        static_tokens: vec![TOKEN.to_owned(), SECOND_TOKEN.to_owned()],
        record: true,
        ..MockConfig::default()
    }
}

/// A client with no idle connection pool, hence no timer of its own (see the module comment).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a plain HTTP client")
}

fn url(server: &MockServer, id: &str) -> String {
    format!(
        "{}/beta/security/identities/identityAccounts/{id}/microsoft.graph.security.invokeAction",
        server.base_url()
    )
}

fn action(account: &str, action: &str, provider: &str) -> Value {
    json!({"accountId": account, "action": action, "identityProvider": provider})
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the mock answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn call(server: &MockServer, token: Option<&str>, id: &str, body: &Value) -> Reply {
    let mut request = client().post(url(server, id)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    send(request).await
}

async fn ok_call(server: &MockServer, id: &str) -> Reply {
    call(server, Some(TOKEN), id, &action("a", "disable", "okta")).await
}

#[tokio::test]
async fn succeeds_in_the_docs_shape_with_correlation_headers() {
    let server = MockServer::start(config()).await.unwrap();
    let reply = send(
        client()
            .post(url(&server, "ia-1"))
            .bearer_auth(TOKEN)
            .header("client-request-id", "crid-1")
            .json(&action("S-1-5-21", "disable", "activeDirectory")),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let value = &reply.body["value"];
    assert_eq!(value["accountId"], "S-1-5-21");
    assert_eq!(value["action"], "disable");
    assert_eq!(value["provider"], "activeDirectory");
    let correlation = value["correlationId"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(correlation)
            .unwrap()
            .get_version_num(),
        4
    );
    assert_eq!(reply.header("client-request-id"), Some("crid-1"));
    let request_id = reply.header("request-id").unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok());
    assert_eq!(
        server.account_state("ia-1", "S-1-5-21"),
        Some(AccountState::Disabled)
    );
    assert_eq!(
        server.last_action("ia-1", "S-1-5-21"),
        Some(Action::Disable)
    );

    let again = call(
        &server,
        Some(TOKEN),
        "ia-1",
        &action("S-1-5-21", "enable", "activeDirectory"),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_ne!(again.body["value"]["correlationId"], correlation);
    assert_eq!(
        server.account_state("ia-1", "S-1-5-21"),
        Some(AccountState::Enabled)
    );
    assert_eq!(server.account_state("ia-1", "other"), None);
    assert_eq!(server.stats().status(200), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn succeeds_in_the_schema_shape_on_v1_and_the_plain_action_name() {
    let server = MockServer::start(MockConfig {
        response_shape: ResponseShape::Schema,
        ..config()
    })
    .await
    .unwrap();
    let reply = send(
        client()
            .post(format!(
                "{}/v1.0/security/identities/identityAccounts/ia-2/invokeAction",
                server.base_url()
            ))
            .bearer_auth(TOKEN)
            .json(&action("u1", "forcePasswordReset", "activeDirectory")),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["identityProvider"], "activeDirectory");
    assert_eq!(reply.body["action"], "forcePasswordReset");
    assert!(reply.body.get("value").is_none());
    assert!(reply.body["correlationId"].is_string());
    // No client-request-id sent: it equals the request id.
    assert_eq!(
        reply.header("client-request-id"),
        reply.header("request-id")
    );
    assert_eq!(
        server.account_state("ia-2", "u1"),
        Some(AccountState::Unchanged)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn nullcorr_ids_succeed_with_a_null_correlation_id() {
    let server = MockServer::start(config()).await.unwrap();
    let reply = ok_call(&server, "nullcorr-7").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body["value"].get("correlationId").unwrap().is_null());
    server.shutdown().await;
}

#[tokio::test]
async fn refuses_bad_bodies_entra_and_unlisted_pairs_with_graph_errors() {
    let server = MockServer::start(config()).await.unwrap();
    let cases = [
        (json!([1, 2]), "must be a JSON object"),
        (
            json!({"action": "disable", "identityProvider": "okta"}),
            "missing accountId",
        ),
        (
            action("a", "Disable", "okta"),
            "'Disable' is not valid for action",
        ),
        (
            action("a", "disable", "Okta"),
            "not valid for identityProvider",
        ),
        (
            action("a", "disable", "entraID"),
            "EntraID actions are not yet supported",
        ),
        (
            action("a", "revokeAllSessions", "activeDirectory"),
            "The action revokeAllSessions is not supported for identity provider activeDirectory",
        ),
        (
            action("a", "markUserAsCompromised", "okta"),
            "The action markUserAsCompromised is not supported for identity provider okta",
        ),
    ];
    for (body, wanted) in cases {
        let reply = send(
            client()
                .post(url(&server, "ia"))
                .bearer_auth(TOKEN)
                .header("client-request-id", "c-400")
                .json(&body),
        )
        .await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.error_code(), "BadRequest");
        assert!(
            reply.error_message().contains(wanted),
            "{body}: {:?} should contain {wanted:?}",
            reply.error_message()
        );
        let inner = &reply.body["error"]["innerError"];
        assert_eq!(inner["client-request-id"], "c-400");
        assert_eq!(inner["request-id"].as_str(), reply.header("request-id"));
        assert!(inner["date"].is_string());
    }
    let not_json = send(
        client()
            .post(url(&server, "ia"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{oops"),
    )
    .await;
    assert_eq!(not_json.status, 400);
    assert!(not_json.error_message().contains("not valid JSON"));
    assert_eq!(server.stats().status(400), 8);
    assert_eq!(server.account_state("ia", "a"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_versions_and_methods_are_refused() {
    let server = MockServer::start(config()).await.unwrap();
    let client = client();
    let wrong_version = send(
        client
            .post(format!(
                "{}/v2.0/security/identities/identityAccounts/ia/invokeAction",
                server.base_url()
            ))
            .bearer_auth(TOKEN)
            .json(&action("a", "disable", "okta")),
    )
    .await;
    assert_eq!(wrong_version.status, 404);
    assert_eq!(wrong_version.error_code(), "itemNotFound");
    let wrong_action = send(
        client
            .post(format!(
                "{}/beta/security/identities/identityAccounts/ia/delete",
                server.base_url()
            ))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(wrong_action.status, 404);
    let elsewhere = send(client.get(format!("{}/beta/me", server.base_url()))).await;
    assert_eq!(elsewhere.status, 404);
    assert!(elsewhere.header("request-id").is_some());
    assert!(elsewhere.body["error"]["innerError"]["request-id"].is_string());
    let get = send(client.get(url(&server, "ia")).bearer_auth(TOKEN)).await;
    assert_eq!(get.status, 405);
    assert_eq!(server.stats().graph_requests, 4);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn demands_a_known_unexpired_bearer_token() {
    let server = MockServer::start(MockConfig {
        token_lifetime: Duration::from_secs(1),
        ..config()
    })
    .await
    .unwrap();
    let body = action("a", "disable", "okta");

    let missing = call(&server, None, "ia", &body).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "InvalidAuthenticationToken");
    assert_eq!(missing.error_message(), "Access token is empty.");

    let unknown = call(&server, Some("made-up"), "ia", &body).await;
    assert_eq!(unknown.status, 401);
    assert!(
        unknown
            .error_message()
            .contains("Access token validation failure")
    );

    let issued = fetch_token(&server, &[("client_secret", "anything")]).await;
    assert_eq!(issued.status, 200, "{:?}", issued.body);
    assert_eq!(issued.body["expires_in"], 1);
    let access_token = issued.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&server, Some(&access_token), "ia", &body).await.status,
        200
    );

    // The clock stands still while paused: the token is good until exactly its lifetime.
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(
        call(&server, Some(&access_token), "ia", &body).await.status,
        200
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let expired = call(&server, Some(&access_token), "ia", &body).await;
    assert_eq!(expired.status, 401);
    assert_eq!(
        expired.error_message(),
        "Access token has expired or is not yet valid."
    );
    // The static token never expires.
    assert_eq!(call(&server, Some(TOKEN), "ia", &body).await.status, 200);
    assert_eq!(server.stats().status(401), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn accept_any_token_takes_made_up_tokens_but_not_empty_ones() {
    let server = MockServer::start(MockConfig {
        accept_any_token: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let body = action("a", "disable", "okta");
    assert_eq!(
        call(&server, Some("whatever"), "ia", &body).await.status,
        200
    );
    assert_eq!(call(&server, None, "ia", &body).await.status, 401);
    server.shutdown().await;
}

fn limited(rate: &str, format: RetryAfterFormat) -> MockConfig {
    MockConfig {
        rate: Some(parse_rate(rate).unwrap()),
        retry_after_format: format,
        ..config()
    }
}

// Paused: with a real clock a stall of a second between requests made the told waits 59 s.
#[tokio::test(start_paused = true)]
async fn throttles_with_retry_after_in_whole_seconds_and_re_throttles_inside_the_window() {
    let server = MockServer::start(limited("1/min", RetryAfterFormat::Seconds))
        .await
        .unwrap();
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let throttled = ok_call(&server, "ia").await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.error_code(), "TooManyRequests");
    assert_eq!(throttled.error_message(), "Please retry again later.");
    assert_eq!(throttled.body["error"]["innerError"]["code"], "429");
    assert_eq!(throttled.body["error"]["innerError"]["status"], "429");
    let secs: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert_eq!(
        secs, 60,
        "the bucket's whole interval, no time having passed"
    );

    // Another token has its own bucket; an unknown one is refused before the throttle.
    assert_eq!(ok_call_with(&server, SECOND_TOKEN).await, 200);
    assert_eq!(ok_call_with(&server, "made-up").await, 401);

    let again = ok_call(&server, "ia").await;
    assert_eq!(again.status, 429);
    let requests = server.requests();
    let graph: Vec<&LoggedRequest> = requests.iter().filter(|r| r.status == 429).collect();
    assert_eq!(graph.len(), 2);
    assert!(!graph[0].inside_told_window);
    assert!(graph[1].inside_told_window);
    assert_eq!(
        graph[0].retry_after.as_deref(),
        Some(secs.to_string().as_str())
    );
    let end = graph[0].window_end_ms.unwrap();
    assert!((end - graph[0].t_ms - secs as f64 * 1000.0).abs() < 0.01);
    // Told "60" again (rounded up), so the window now ends 60 s after the second answer.
    let second_end = graph[1].window_end_ms.unwrap();
    assert!(second_end >= end);
    assert!((second_end - graph[1].t_ms - 60_000.0).abs() < 0.01);
    assert_eq!(graph[1].retry_after.as_deref(), Some("60"));
    assert_eq!(graph[0].token.as_deref(), Some("t1"));
    assert_eq!(server.stats().inside_told_window, 1);
    assert_eq!(server.stats().status(429), 2);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_told_window_outlasts_the_bucket_and_then_the_bucket_decides() {
    // 5/s: the bucket admits again after 200 ms, but "Retry-After: 1" told a whole second.
    let server = MockServer::start(limited("5/s", RetryAfterFormat::Seconds))
        .await
        .unwrap();
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let throttled = ok_call(&server, "ia").await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("1"));
    // Past the bucket's 200 ms, inside the told second.
    tokio::time::advance(Duration::from_millis(400)).await;
    let inside = ok_call(&server, "ia").await;
    assert_eq!(inside.status, 429, "still inside the told window");
    // 0.6 s remain, told as "1": the window now ends a second after this answer.
    assert_eq!(inside.header("retry-after"), Some("1"));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let requests = server.requests();
    let flags: Vec<bool> = requests.iter().map(|r| r.inside_told_window).collect();
    assert_eq!(flags, [false, false, true, false]);
    // Admitted at the very end of the second window, not a moment later.
    assert_eq!(requests[2].window_end_ms, Some(1400.0));
    assert_eq!(requests[3].t_ms, 1400.0);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn throttles_with_decimal_retry_after_and_admits_when_it_has_passed() {
    let server = MockServer::start(limited("4/s", RetryAfterFormat::Decimal))
        .await
        .unwrap();
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let throttled = ok_call(&server, "ia").await;
    assert_eq!(throttled.status, 429);
    let text = throttled.header("retry-after").unwrap().to_owned();
    let (whole, decimals) = text.split_once('.').expect("a decimal");
    assert_eq!(whole, "0");
    assert_eq!(decimals.len(), 3);
    let wait: f64 = text.parse().unwrap();
    assert!(wait > 0.15 && wait <= 0.25, "{text}");
    assert_eq!(text, "0.250", "4/s with no time passed: the whole interval");
    // Waiting exactly what was told, not a moment more.
    tokio::time::advance(Duration::from_secs_f64(wait)).await;
    let after = ok_call(&server, "ia").await;
    assert_eq!(after.status, 200, "obeying Retry-After must be enough");
    assert_eq!(server.stats().inside_told_window, 0);
    server.shutdown().await;
}

// Real clock: the date is checked against the system's wall clock. Nothing here waits.
#[tokio::test]
async fn throttles_with_an_http_date_at_a_whole_second() {
    let server = MockServer::start(limited("1/min", RetryAfterFormat::HttpDate))
        .await
        .unwrap();
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let throttled = ok_call(&server, "ia").await;
    assert_eq!(throttled.status, 429);
    let text = throttled.header("retry-after").unwrap();
    assert!(text.ends_with(" GMT"), "{text}");
    let at = httpdate::parse_http_date(text).unwrap();
    let ahead = at.duration_since(SystemTime::now()).unwrap();
    assert!(
        ahead > Duration::from_secs(58) && ahead <= Duration::from_secs(61),
        "{ahead:?}"
    );
    let again = ok_call(&server, "ia").await;
    assert_eq!(again.status, 429);
    assert_eq!(
        again.header("retry-after"),
        Some(text),
        "the same date while inside"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn http404_ids_always_answer_404() {
    let server = MockServer::start(config()).await.unwrap();
    for _ in 0..3 {
        let reply = ok_call(&server, "http404-gone").await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_code(), "itemNotFound");
    }
    let forbidden = ok_call(&server, "http403-x").await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.error_code(), "accessDenied");
    assert_eq!(
        forbidden.error_message(),
        "Insufficient privileges to complete the operation."
    );
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn http429x2_ids_throttle_twice_then_succeed_and_mark_early_retries() {
    let server = MockServer::start(config()).await.unwrap();
    let first = ok_call(&server, "http429x2-acct").await;
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("1"));
    assert_eq!(first.error_code(), "TooManyRequests");
    // Sent at once: inside the window just told, and still scripted to 429.
    let second = ok_call(&server, "http429x2-acct").await;
    assert_eq!(second.status, 429);
    // Exactly when the told second ends: no longer inside it.
    tokio::time::advance(Duration::from_secs(1)).await;
    let third = ok_call(&server, "http429x2-acct").await;
    assert_eq!(third.status, 200, "{:?}", third.body);
    let flags: Vec<bool> = server
        .requests()
        .iter()
        .map(|r| r.inside_told_window)
        .collect();
    assert_eq!(flags, [false, true, false]);
    assert_eq!(server.stats().inside_told_window, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn fault_injection_at_rate_one_answers_only_503_and_504() {
    let server = MockServer::start(MockConfig {
        fail_rate: 1.0,
        fault_retry_after: Some(Duration::from_millis(250)),
        retry_after_format: RetryAfterFormat::Decimal,
        seed: Some(42),
        ..config()
    })
    .await
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let reply = ok_call(&server, &format!("ia-{i}")).await;
        match reply.status {
            503 => {
                assert_eq!(reply.header("retry-after"), Some("0.250"));
                assert_eq!(reply.error_code(), "serviceNotAvailable");
            }
            504 => {
                assert_eq!(reply.header("retry-after"), None);
                assert_eq!(reply.error_code(), "gatewayTimeout");
            }
            other => panic!("fault injection answered {other}"),
        }
        seen.insert(reply.status);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [503, 504]);
    let stats = server.stats();
    assert_eq!(stats.status(503) + stats.status(504), 40);
    assert_eq!(stats.status(200), 0);
    server.shutdown().await;
}

// Paused: the mock's latency sleep is the only timer, so tokio jumps straight to it, and the
// time the answer took is exactly what the mock added.
#[tokio::test(start_paused = true)]
async fn latency_is_added_before_graph_responses() {
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(150),
        ..config()
    })
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(ok_call(&server, "ia").await.status, 200);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(300),
        "added once: {took:?}"
    );
    server.shutdown().await;
}

// --- token endpoint ---------------------------------------------------------------------------

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "s3cr3t+value&more";

async fn fetch_token(server: &MockServer, extra: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_id", CLIENT_ID),
    ];
    form.extend_from_slice(extra);
    send(
        client()
            .post(format!("{}/tenant-1/oauth2/v2.0/token", server.base_url()))
            .form(&form),
    )
    .await
}

fn b64url(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn assertion(aud: &str, now: u64) -> String {
    let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "thumb"});
    let claims = json!({
        "aud": aud, "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "jti-1",
        "nbf": now, "iat": now, "exp": now + 300,
    });
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(b"signature")
    )
}

fn secured() -> MockConfig {
    MockConfig {
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(SECRET.to_owned()),
        ..config()
    }
}

#[tokio::test]
async fn token_endpoint_issues_tokens_for_the_right_secret_only() {
    let server = MockServer::start(secured()).await.unwrap();
    let good = fetch_token(&server, &[("client_secret", SECRET)]).await;
    assert_eq!(good.status, 200, "{:?}", good.body);
    assert_eq!(good.body["token_type"], "Bearer");
    assert_eq!(good.body["expires_in"], 3599);
    let token = good.body["access_token"].as_str().unwrap();
    assert!(token.starts_with("mock-at-"));
    assert!(good.header("request-id").is_some());
    assert_eq!(ok_call_with(&server, token).await, 200);

    let wrong = fetch_token(&server, &[("client_secret", "nope")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "invalid_client");
    assert_eq!(wrong.body["error_codes"], json!([7000215]));
    let description = wrong.body["error_description"].as_str().unwrap();
    assert!(description.starts_with("AADSTS7000215: Invalid client secret provided."));
    for key in ["timestamp", "trace_id", "correlation_id"] {
        assert!(wrong.body[key].is_string(), "{key}");
    }

    let neither = fetch_token(&server, &[]).await;
    assert_eq!(neither.status, 401);
    assert_eq!(neither.body["error_codes"], json!([7000216]));

    let bad_grant = send(
        client()
            .post(format!("{}/t/oauth2/v2.0/token", server.base_url()))
            .form(&[("grant_type", "password"), ("client_id", CLIENT_ID)]),
    )
    .await;
    assert_eq!(bad_grant.status, 400);
    assert_eq!(bad_grant.body["error"], "unsupported_grant_type");

    let bad_scope = send(
        client()
            .post(format!("{}/t/oauth2/v2.0/token", server.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "https://graph.microsoft.com/User.Read"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
            ]),
    )
    .await;
    assert_eq!(bad_scope.status, 400);
    assert_eq!(bad_scope.body["error"], "invalid_scope");
    assert_eq!(bad_scope.body["error_codes"], json!([1002012]));

    let wrong_app = send(
        client()
            .post(format!("{}/t/oauth2/v2.0/token", server.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "https://graph.microsoft.com/.default"),
                ("client_id", "someone-else"),
                ("client_secret", SECRET),
            ]),
    )
    .await;
    assert_eq!(wrong_app.status, 400);
    assert_eq!(wrong_app.body["error"], "unauthorized_client");
    assert!(
        wrong_app.body["error_description"]
            .as_str()
            .unwrap()
            .contains("Application with identifier 'someone-else' was not found in the directory")
    );
    assert_eq!(server.stats().token_requests, 6);
    server.shutdown().await;
}

async fn ok_call_with(server: &MockServer, token: &str) -> u16 {
    call(server, Some(token), "ia", &action("a", "disable", "okta"))
        .await
        .status
}

#[tokio::test]
async fn token_endpoint_checks_client_assertion_claims() {
    let server = MockServer::start(secured()).await.unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let aud = format!("{}/tenant-1/oauth2/v2.0/token", server.base_url());
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

    let good = fetch_token(
        &server,
        &[
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &assertion(&aud, now)),
        ],
    )
    .await;
    assert_eq!(good.status, 200, "{:?}", good.body);
    assert_eq!(
        ok_call_with(&server, good.body["access_token"].as_str().unwrap()).await,
        200
    );

    let wrong_aud = fetch_token(
        &server,
        &[
            ("client_assertion_type", jwt_bearer),
            (
                "client_assertion",
                &assertion(
                    "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token",
                    now,
                ),
            ),
        ],
    )
    .await;
    assert_eq!(wrong_aud.status, 401);
    assert_eq!(wrong_aud.body["error"], "invalid_client");
    assert_eq!(wrong_aud.body["error_codes"], json!([700027]));
    assert!(
        wrong_aud.body["error_description"]
            .as_str()
            .unwrap()
            .contains("aud must be this token endpoint"),
        "{:?}",
        wrong_aud.body
    );

    let expired = fetch_token(
        &server,
        &[
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &assertion(&aud, now - 900)),
        ],
    )
    .await;
    assert_eq!(expired.status, 401);
    assert!(
        expired.body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    server.shutdown().await;
}

// --- request log ------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_request_log_has_one_parsable_line_per_request_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let server = MockServer::start(MockConfig {
        request_log: Some(path.clone()),
        rate: Some(parse_rate("1/min").unwrap()),
        ..secured()
    })
    .await
    .unwrap();
    let issued = fetch_token(&server, &[("client_secret", SECRET)]).await;
    let access_token = issued.body["access_token"].as_str().unwrap().to_owned();
    let _ = fetch_token(&server, &[("client_secret", "wrong-secret")]).await;
    assert_eq!(ok_call_with(&server, &access_token).await, 200);
    assert_eq!(ok_call_with(&server, &access_token).await, 429);
    assert_eq!(ok_call_with(&server, &access_token).await, 429);
    assert_eq!(ok_call_with(&server, TOKEN).await, 200);
    let in_memory = server.requests();
    // The writer flushes on its own at least every 100 ms, not only at shutdown. Paused, each
    // sleep here moves the mock's clock only while no file write is under way (tokio holds a
    // paused clock still while blocking work runs), so the check is in the mock's time.
    let answered = tokio::time::Instant::now();
    while std::fs::read_to_string(&path).unwrap().lines().count() < 6 {
        assert!(
            answered.elapsed() <= Duration::from_millis(101),
            "not flushed within 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.shutdown().await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(SECRET),
        "the client secret leaked into the log"
    );
    assert!(
        !text.contains("s3cr3t"),
        "the client secret leaked into the log"
    );
    assert!(!text.contains("wrong-secret"));
    assert!(
        !text.contains(&access_token),
        "a bearer token leaked into the log"
    );
    assert!(!text.contains(TOKEN), "a bearer token leaked into the log");
    let lines: Vec<LoggedRequest> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one LoggedRequest"))
        .collect();
    assert_eq!(lines, in_memory);
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines.iter().map(|l| l.status).collect::<Vec<_>>(),
        [200, 401, 200, 429, 429, 200]
    );
    let token_line = &lines[0];
    assert_eq!(
        token_line.body,
        Some(json!({"grantType": "client_credentials", "clientId": CLIENT_ID}))
    );
    assert_eq!(token_line.token, None);
    assert_eq!(lines[2].token.as_deref(), Some("t1"));
    assert_eq!(lines[5].token.as_deref(), Some("t2"));
    assert_eq!(lines[2].body, Some(action("a", "disable", "okta")));
    assert!(lines[2].time.ends_with('Z') && lines[2].time.contains('T'));
    assert!(lines.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    assert!(!lines[3].inside_told_window && lines[4].inside_told_window);
    assert!(lines[3].window_end_ms.unwrap() > lines[3].t_ms + 59_000.0);
    assert_eq!(lines[3].retry_after.as_deref(), Some("60"));
    // The raw text carries camelCase keys.
    assert!(text.contains("\"insideToldWindow\":true"));
}

// --- the `mock` command, in process ----------------------------------------------------------

struct LineSink(std::sync::mpsc::Sender<Vec<u8>>);

impl std::io::Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn run_cli_prints_the_bound_address_and_serves_until_shutdown() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let log = dir.path().join("log.jsonl");
    let cli = Cli::try_parse_from([
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--client-id",
        CLIENT_ID,
        "--client-secret-file",
        secret_file.to_str().unwrap(),
        "--request-log",
        log.to_str().unwrap(),
        "--response-shape",
        "schema",
    ])
    .unwrap();

    let (line_tx, line_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(graph_remediate::mock::run_cli_with_output(
        cli.mock,
        LineSink(line_tx),
        async move {
            let _ = stop_rx.await;
        },
    ));
    // Real clock, as the command runs. This wait ends as soon as the line is printed; the
    // timeout only turns a hang into a failure.
    let printed = tokio::task::spawn_blocking(move || {
        line_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the listening line")
    })
    .await
    .unwrap();
    let printed = String::from_utf8(printed).unwrap();
    let base = printed
        .trim_end()
        .strip_prefix("mock Graph listening on ")
        .unwrap_or_else(|| panic!("unexpected line {printed:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"));
    assert!(!base.ends_with(":0"), "the real port is printed");

    let client = client();
    let token = send(client.post(format!("{base}/t/oauth2/v2.0/token")).form(&[
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
    ]))
    .await;
    assert_eq!(token.status, 200, "{:?}", token.body);
    let reply = send(
        client
            .post(format!(
                "{base}/beta/security/identities/identityAccounts/ia/microsoft.graph.security.invokeAction"
            ))
            .bearer_auth(token.body["access_token"].as_str().unwrap())
            .json(&action("a", "enable", "okta")),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["identityProvider"], "okta");
    let wrong = send(client.post(format!("{base}/t/oauth2/v2.0/token")).form(&[
        ("grant_type", "client_credentials"),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_id", CLIENT_ID),
        ("client_secret", "guess"),
    ]))
    .await;
    assert_eq!(wrong.status, 401);

    stop_tx.send(()).unwrap();
    // Ends when the server has stopped; the timeout only turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shuts down promptly")
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(!text.contains(SECRET));
}

#[tokio::test]
async fn run_cli_refuses_an_unreadable_secret_file() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }
    let cli = Cli::try_parse_from([
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--client-secret-file",
        "/nonexistent/secret",
    ])
    .unwrap();
    let error = graph_remediate::mock::run_cli_with_output(cli.mock, std::io::sink(), async {})
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("cannot read the client secret file"));
}

#[tokio::test]
async fn serve_until_stops_when_its_shutdown_future_resolves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(graph_remediate::mock::serve_until(
        listener,
        config(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let reply = send(
        client()
            .post(format!(
                "http://{addr}/beta/security/identities/identityAccounts/ia/invokeAction"
            ))
            .bearer_auth(TOKEN)
            .json(&action("a", "disable", "okta")),
    )
    .await;
    assert_eq!(reply.status, 200);
    stop_tx.send(()).unwrap();
    // Ends when the server has stopped; the timeout only turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shuts down promptly")
        .unwrap()
        .unwrap();
}
