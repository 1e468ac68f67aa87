//! Property tests (issue 10): whatever a server sends (arbitrary bytes, hostile headers, huge
//! numbers), parsing never panics, and nothing that reaches a message, a log or the results holds
//! a control character or the secret that was sent.

use std::io::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use secrecy::SecretString;

use super::auth::{parse_issued, refusal};
use super::client::{ApiVersion, GraphClient};
use super::model::{Action, GraphErrorBody, InvokeActionResult, Provider};
use crate::retry::parse_retry_after;

const SECRET: &str = "Sup3r-S3cret/Value+=";

fn printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control())
}

/// Bytes biased towards what breaks printers and parsers: escapes, quotes, braces, the secret.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\x1b[31m".to_vec()),
        Just(b"\xc2\x9b2J".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\\u001b".to_vec()),
        Just(br#"{"error":{"code":""#.to_vec()),
        Just(br#"","message":""#.to_vec()),
        Just(br#""innerError":{"code":""#.to_vec()),
        Just(br#"{"value":{"correlationId":""#.to_vec()),
        Just(br#""}}"#.to_vec()),
        Just(SECRET.as_bytes().to_vec()),
        Just(b"Sup3r-S3cret%2FValue%2B%3D".to_vec()),
        Just(b"99999999999999999999999".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn retry_after_values() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,30}",
        "[0-9]{1,20}\\.[0-9]{1,20}",
        Just("1e400".to_owned()),
        Just("-5".to_owned()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
        ".{0,40}",
    ]
}

/// A raw HTTP/1.1 response: any status, a hostile Retry-After and request-id, any body.
fn responses() -> impl Strategy<Value = Vec<u8>> {
    (100u16..600, retry_after_values(), "[ -~]{0,40}", hostile_bytes()).prop_map(
        |(status, retry_after, request_id, body)| {
            let mut response = Vec::new();
            let _ = write!(
                response,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nRetry-After: {retry_after}\r\nrequest-id: {request_id}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            response.extend_from_slice(&body);
            response
        },
    )
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
});

/// Serves `response` once on a loopback port, then sends one invokeAction to it.
fn exchange(response: Vec<u8>) -> Result<String, String> {
    RUNTIME.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&response).await;
                let _ = socket.shutdown().await;
            }
        });
        let client =
            GraphClient::new(&url, ApiVersion::V1, Duration::from_secs(5), 1).expect("a client");
        let result = client
            .invoke(
                "id",
                "acct",
                Action::Disable,
                Provider::Okta,
                &SecretString::from(SECRET),
                "crid",
            )
            .await;
        let _ = server.await;
        match result {
            Ok(accepted) => Ok(format!("{:?}", accepted.result.correlation_id)),
            Err(error) => Err(format!(
                "{error} {:?} {:?}",
                error.request_id(),
                error.attempt_kind()
            )),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn graph_bodies_parse_to_printable_text(body in hostile_bytes()) {
        let error = GraphErrorBody::parse(&body);
        for text in error.code.iter().chain(&error.message) {
            prop_assert!(printable(text), "{text:?}");
        }
        let result = InvokeActionResult::parse(&body);
        for text in [&result.account_id, &result.action, &result.identity_provider, &result.correlation_id].into_iter().flatten() {
            prop_assert!(printable(text), "{text:?}");
        }
    }

    #[test]
    fn retry_after_never_panics_and_stays_bounded(value in retry_after_values()) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        if let Some(wait) = parse_retry_after(&value, now) {
            prop_assert!(wait <= crate::retry::MAX_RETRY_AFTER, "{value:?}: {wait:?}");
        }
    }

    #[test]
    fn token_endpoint_answers_never_print_the_secret_or_an_escape(body in hostile_bytes(), status in 100u16..600) {
        let _ = parse_issued(&body);
        let text = refusal("https://login.example/t/oauth2/v2.0/token", status, &body, SECRET).to_string();
        prop_assert!(printable(&text), "{text:?}");
        prop_assert!(!text.contains(SECRET), "{text}");
        prop_assert!(!text.contains("Sup3r-S3cret%2FValue%2B%3D"), "{text}");
    }
}

proptest! {
    // Each case is a real exchange over loopback; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_hostile_server_never_panics_the_client_or_reaches_the_terminal(response in responses()) {
        let text = match exchange(response) {
            Ok(text) | Err(text) => text,
        };
        prop_assert!(printable(&text), "{text:?}");
        prop_assert!(!text.contains(SECRET), "{text}");
    }
}
