//! The lookup against hostile servers on loopback (issue 16): looping and endless links, broken
//! pages, throttles past `--max-retry-wait`, users that answer for someone else. Each server is
//! a closure from the request's path and query to an answer, so a test says only what differs.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::walk::Limits;
use super::*;
use crate::graph::auth::{CredentialSources, TokenEndpoint, Tokens};
use crate::graph::client::{ApiVersion, GraphClient};
use crate::graph::model::Action;
use crate::retry::RetryPolicy;
use crate::runner::rate::{Limiter, ThrottleGate};

/// What a hostile server answers: status, `Retry-After`, body.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) retry_after: Option<String>,
    pub(super) body: Vec<u8>,
}

impl Reply {
    pub(super) fn json(body: &Value) -> Reply {
        Reply {
            status: 200,
            retry_after: None,
            body: body.to_string().into_bytes(),
        }
    }

    pub(super) fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            body: br#"{"error":{"code":"x","message":"y"}}"#.to_vec(),
        }
    }
}

type Answer = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

/// A server on 127.0.0.1 answering every request with `answer(root, path?query)`; its root URL,
/// and the requests it has had.
pub(super) struct Hostile {
    pub(super) root: String,
    pub(super) requests: Arc<AtomicU64>,
    pub(super) seen: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    pub(super) async fn start(
        answer: impl Fn(&str, &str) -> Reply + Send + Sync + 'static,
    ) -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let root = format!("http://{}", listener.local_addr().expect("an address"));
        let answer: Answer = Arc::new(answer);
        let requests = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log, own) = (requests.clone(), seen.clone(), root.clone());
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let (answer, own) = (answer.clone(), own.clone());
            count.fetch_add(1, Ordering::Relaxed);
            let target = uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            log.lock().expect("not poisoned").push(target.clone());
            async move {
                let reply = answer(&own, &target);
                let mut response: Response = (
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    reply.body,
                )
                    .into_response();
                if let Some(wait) = reply.retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", wait.parse().expect("a header value"));
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hostile {
            root,
            requests,
            seen,
        }
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(super) fn count(&self, containing: &str) -> usize {
        let seen = self.seen.lock().expect("not poisoned");
        seen.iter().filter(|s| s.contains(containing)).count()
    }
}

pub(super) fn policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 1,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        max_wait: Duration::from_secs(2),
    }
}

pub(super) fn reader_for(
    root: &str,
    policy: RetryPolicy,
    limits: Limits,
    interrupt: CancellationToken,
) -> Arc<Reader> {
    let rate = crate::units::parse_rate("10000/s").expect("a rate");
    let limiter = Limiter::new(rate, NonZeroU32::new(50).expect("not zero"));
    paced_reader_for(root, policy, limits, interrupt, limiter)
}

/// [`reader_for`], with the limiter given.
pub(super) fn paced_reader_for(
    root: &str,
    policy: RetryPolicy,
    limits: Limits,
    interrupt: CancellationToken,
    limiter: Limiter,
) -> Arc<Reader> {
    let endpoint = TokenEndpoint::new(root, root).expect("an endpoint");
    let tokens = Tokens::from_sources(
        CredentialSources {
            access_token: Some(secrecy::SecretString::from("t")),
            ..CredentialSources::default()
        },
        &endpoint,
        Duration::from_secs(5),
    )
    .expect("a token");
    let client =
        GraphClient::new(root, ApiVersion::V1, Duration::from_secs(5), 4).expect("a client");
    Arc::new(
        Reader::new(
            client,
            tokens,
            limiter,
            Arc::new(ThrottleGate::new()),
            policy,
            4,
            interrupt,
        )
        .with_walk_limits(limits),
    )
}

pub(super) fn reader(root: &str) -> Arc<Reader> {
    reader_for(root, policy(), Limits::default(), CancellationToken::new())
}

pub(super) fn row(line: u64) -> Row {
    Row {
        line,
        identity_account_id: None,
        account_id: None,
        action: Action::Disable,
        provider: None,
        sid: None,
        object_id: None,
        upn: None,
        accounts: crate::input::AccountScope::One,
        carry: vec![],
    }
}

pub(super) fn wanted(rows: &[Row]) -> Wanted {
    let mut wanted = Wanted::default();
    for row in rows {
        wanted.add(row, false);
    }
    wanted
}

pub(super) const LIST: &str = "/v1.0/security/identities/identityAccounts";

/// An identity with an Entra ID account `oid-{n}` offering disable.
pub(super) fn identity(n: u64) -> Value {
    json!({
        "id": format!("id-{n}"),
        "displayName": format!("person {n}"),
        "accounts": [{"identifier": format!("oid-{n}"), "identityProvider": "entraID", "actions": ["disable"]}],
    })
}

/// A list page holding `identities`, linking to `?$skiptoken={next}` on `root` when given.
pub(super) fn page(root: &str, identities: Vec<Value>, next: Option<&str>) -> Value {
    let mut page = json!({ "value": identities });
    if let Some(next) = next {
        page["@odata.nextLink"] = json!(format!("{root}{LIST}?$skiptoken={next}"));
    }
    page
}

/// The `$skiptoken` a list request asks for (`""` for the first page).
pub(super) fn skiptoken(target: &str) -> Option<&str> {
    if !target.starts_with(LIST) || target.contains("filter") {
        return None;
    }
    Some(
        target
            .split_once("skiptoken=")
            .map_or("", |(_, token)| token),
    )
}

/// A cloud-only user (no SID): only the list's Entra ID accounts can tell whose identity it is.
pub(super) fn cloud_user(target: &str, n: u64) -> Option<Reply> {
    target.starts_with("/v1.0/users/").then(|| {
        Reply::json(&json!({
            "id": format!("oid-{n}"),
            "userPrincipalName": format!("user{n}@contoso.com"),
        }))
    })
}

/// What `rows` come to against what `look_up` found: (line, code or "send").
pub(super) fn settled(rows: Vec<Row>, directory: &Directory) -> Vec<(u64, String, String)> {
    rows.into_iter()
        .flat_map(|row| {
            settle(&row, directory, &|_| false)
                .into_iter()
                .map(move |settled| (row.line, settled))
        })
        .map(|(line, settled)| match settled {
            Settled::Send(job) => (line, "send".to_owned(), job.identity_account_id),
            Settled::Refused(_, refusal) => (line, refusal.code.to_owned(), refusal.message),
        })
        .collect()
}

/// Runs `look_up`, failing the test (rather than hanging it) if it does not end in time.
pub(super) async fn bounded_look_up(
    wanted: &Wanted,
    reader: &Arc<Reader>,
) -> Result<(Directory, Strategy), LookupStop> {
    tokio::time::timeout(Duration::from_secs(20), look_up(wanted, reader))
        .await
        .expect("the lookup ends")
}

#[tokio::test]
async fn issue_16_a_list_linking_to_itself_or_round_two_pages_ends_and_refuses_lookup_failed() {
    for shape in ["self", "pair"] {
        let server = Hostile::start(move |root, target| {
            if let Some(reply) = cloud_user(target, 7) {
                return reply;
            }
            match (shape, skiptoken(target)) {
                ("self", Some(_)) => Reply::json(&page(root, vec![identity(1)], Some("a"))),
                ("pair", Some("" | "b")) => Reply::json(&page(root, vec![identity(1)], Some("a"))),
                ("pair", Some(_)) => Reply::json(&page(root, vec![identity(2)], Some("b"))),
                _ => Reply::status(404),
            }
        })
        .await;
        let rows = vec![Row {
            upn: Some("user7@contoso.com".into()),
            ..row(2)
        }];
        let reader = reader(&server.root);
        let (directory, _) = bounded_look_up(&wanted(&rows), &reader)
            .await
            .expect("the lookup goes on");
        let settled = settled(rows, &directory);
        assert_eq!(settled[0].1, "lookupFailed", "{shape}: {settled:?}");
        assert!(settled[0].2.contains("loops"), "{shape}: {settled:?}");
        assert!(server.requests() < 10, "{shape}: {}", server.requests());
    }
}

#[tokio::test]
async fn issue_16_a_run_of_empty_pages_with_fresh_links_is_not_followed_for_one_row() {
    // Before issue 16, 10,000 such pages were followed for one row.
    let server = Hostile::start(|root, target| {
        if let Some(reply) = cloud_user(target, 7) {
            return reply;
        }
        match skiptoken(target) {
            Some(token) => {
                let next = token.parse::<u64>().unwrap_or(0) + 1;
                Reply::json(&page(root, vec![], Some(&next.to_string())))
            }
            None => Reply::status(404),
        }
    })
    .await;
    let rows = vec![Row {
        upn: Some("user7@contoso.com".into()),
        ..row(2)
    }];
    let (directory, _) = bounded_look_up(&wanted(&rows), &reader(&server.root))
        .await
        .expect("the lookup goes on");
    let settled = settled(rows, &directory);
    assert_eq!(settled[0].1, "lookupFailed", "{settled:?}");
    assert!(settled[0].2.contains("list nobody"), "{settled:?}");
    let pages = server.count(LIST);
    assert!(pages <= walk::MAX_EMPTY_PAGES as usize, "{pages} pages");
}

#[tokio::test]
async fn issue_16_endless_pages_of_new_identities_end_at_the_bound_holding_only_what_rows_name() {
    // Every page a hundred identities never seen before, and a link to the next.
    let server = Hostile::start(|root, target| {
        if let Some(reply) = cloud_user(target, 7) {
            return reply;
        }
        match skiptoken(target) {
            Some(token) => {
                let at = token.parse::<u64>().unwrap_or(0);
                let identities = (0..100).map(|i| identity(1_000 + at * 100 + i)).collect();
                Reply::json(&page(root, identities, Some(&(at + 1).to_string())))
            }
            None => Reply::status(404),
        }
    })
    .await;
    let limits = Limits {
        entries: 3_000,
        ..Limits::default()
    };
    let reader = reader_for(&server.root, policy(), limits, CancellationToken::new());
    let rows = vec![Row {
        upn: Some("user7@contoso.com".into()),
        ..row(2)
    }];
    let (directory, _) = bounded_look_up(&wanted(&rows), &reader)
        .await
        .expect("the lookup goes on");
    let settled = settled(rows, &directory);
    assert_eq!(settled[0].1, "lookupFailed", "{settled:?}");
    assert!(
        settled[0].2.contains("more than 3000 entries"),
        "{settled:?}"
    );
    // The first leg (the row's budget of two pages) holds what it read; the rest is not kept.
    assert!(
        directory.identities().len() <= 200,
        "{} identities held",
        directory.identities().len()
    );
    assert!(server.count(LIST) <= 31, "{} pages", server.count(LIST));
}

#[tokio::test]
async fn issue_16_a_looping_role_assignments_walk_stops_the_guard() {
    let server = Hostile::start(|root, target| {
        if target.contains("roleAssignments") {
            // Linking to itself, with one holder a page.
            return Reply::json(&json!({
                "value": [{"principalId": "oid-9", "principal": {"@odata.type": "#microsoft.graph.user", "userPrincipalName": "ga@contoso.com"}}],
                "@odata.nextLink": format!("{root}{target}"),
            }));
        }
        Reply::status(404)
    })
    .await;
    let reader = reader(&server.root);
    let guardrails = guard::Guardrails {
        privileged: true,
        ..guard::Guardrails::default()
    };
    let mut directory = Directory::default();
    let stop = tokio::time::timeout(
        Duration::from_secs(20),
        guard::read_guard(&guardrails, &reader, &mut directory),
    )
    .await
    .expect("the guard's reads end")
    .expect_err("a guard that cannot be read whole stops the run");
    let message = stop.to_string();
    assert!(matches!(stop, LookupStop::Guard(_)), "{message}");
    assert!(message.contains("loops"), "{message}");
    assert!(message.contains("no action was sent"), "{message}");
    // Each of the twenty roles: its first page, then its link back to it.
    assert!(server.requests() <= 2 * 20, "{}", server.requests());
}

#[tokio::test]
async fn issue_16_an_interrupt_during_a_stopping_lookup_is_an_interrupt() {
    // A read told to wait past --max-retry-wait stopped the lookup; the operator's Ctrl-C came
    // while the others were still ending: it is the operator's stop that counts (exit 130).
    let mut reads = JoinSet::new();
    reads.spawn(async {
        Err(LookupStop::Throttled {
            wait: Duration::from_secs(3600),
        })
    });
    reads.spawn(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(LookupStop::Interrupted)
    });
    let mut directory = Directory::default();
    let stop = collect(&mut reads, &mut directory).await.unwrap_err();
    assert_eq!(stop, LookupStop::Interrupted);
}

#[tokio::test]
async fn issue_16_a_throttle_past_max_retry_wait_releases_the_reads_parked_on_the_gate() {
    // The first SID read is told to wait an hour; the other rows' reads must not wait it out.
    let server = Hostile::start(|_, target| {
        if target.contains("filter") && target.contains("S-1-5-21-1-0") {
            return Reply {
                retry_after: Some("3600".into()),
                ..Reply::status(429)
            };
        }
        if target.contains("filter") {
            return Reply {
                retry_after: Some("1".into()),
                ..Reply::status(429)
            };
        }
        Reply::status(503)
    })
    .await;
    let policy = RetryPolicy {
        max_wait: Duration::from_secs(60),
        ..policy()
    };
    let reader = reader_for(
        &server.root,
        policy,
        Limits::default(),
        CancellationToken::new(),
    );
    let rows: Vec<Row> = (0..40)
        .map(|i| Row {
            sid: Some(format!("S-1-5-21-1-{i}")),
            ..row(i + 2)
        })
        .collect();
    let started = std::time::Instant::now();
    let stop = bounded_look_up(&wanted(&rows), &reader).await.unwrap_err();
    assert!(matches!(stop, LookupStop::Throttled { .. }), "{stop}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn issue_16_a_user_read_answering_with_another_user_is_not_acted_on() {
    const BOB: &str = "22222222-2222-4222-8222-222222222222";
    let server = Hostile::start(|root, target| {
        if target.starts_with("/v1.0/users/") {
            // Whoever is asked for, Bob answers.
            return Reply::json(&json!({
                "id": BOB,
                "userPrincipalName": "bob@contoso.com",
                "onPremisesSecurityIdentifier": "S-1-5-21-1-5",
            }));
        }
        if target.contains("filter") {
            return Reply::json(&json!({"value": [{
                "id": "id-bob",
                "onPremisesSecurityIdentifier": "S-1-5-21-1-5",
                "accounts": [{"identifier": "ad-bob", "identityProvider": "activeDirectory", "actions": ["disable"]}],
            }]}));
        }
        // A list longer than the rows' budget: the users are read one by one.
        match skiptoken(target) {
            Some(token) => {
                let at = token.parse::<u64>().unwrap_or(0);
                Reply::json(&page(root, vec![identity(at + 100)], Some(&(at + 1).to_string())))
            }
            None => Reply::status(404),
        }
    })
    .await;
    let rows = vec![
        Row {
            upn: Some("Ann@Contoso.com".into()),
            ..row(2)
        },
        Row {
            object_id: Some("0b9f4c7e-1111-4a2b-9c3d-0123456789ab".into()),
            ..row(3)
        },
        // Bob asked for by his own names, in another case: he is himself.
        Row {
            upn: Some("BOB@contoso.com".into()),
            ..row(4)
        },
        Row {
            object_id: Some(BOB.to_uppercase()),
            ..row(5)
        },
    ];
    let (directory, _) = bounded_look_up(&wanted(&rows), &reader(&server.root))
        .await
        .expect("the lookup goes on");
    let settled = settled(rows, &directory);
    for refused in &settled[..2] {
        assert_eq!(refused.1, "lookupFailed", "{settled:?}");
        assert!(refused.2.contains("another user"), "{settled:?}");
        assert!(refused.2.contains("the read of /users/"), "{settled:?}");
    }
    for sent in &settled[2..] {
        assert_eq!(
            (sent.1.as_str(), sent.2.as_str()),
            ("send", "id-bob"),
            "{settled:?}"
        );
    }
}

/// A server whose list has good identity 1 on page 1, then `second` as page 2; the user of
/// the rows, user 7, is cloud-only; SID reads are answered 404.
async fn broken_list(second: fn(&str) -> Reply) -> Hostile {
    Hostile::start(move |root, target| {
        if let Some(reply) = cloud_user(target, 7) {
            return reply;
        }
        match skiptoken(target) {
            Some("") => Reply::json(&page(root, vec![identity(1)], Some("2"))),
            Some(_) => second(root),
            None => Reply::status(404),
        }
    })
    .await
}

#[tokio::test]
async fn issue_16_a_broken_list_page_refuses_cloud_only_rows_lookup_failed_naming_the_page() {
    type Second = fn(&str) -> Reply;
    let cases: [(Second, &str); 3] = [
        (
            |_| Reply::json(&json!("<html>")),
            "page 2 of the identity list is not readable",
        ),
        (
            |_| Reply {
                body: vec![b' '; crate::graph::client::MAX_BODY + 10],
                ..Reply::status(200)
            },
            "larger than the 4 MiB",
        ),
        // An identity whose accounts are not a list: it might be user 7's.
        (
            |_| Reply::json(&json!({"value": [identity(8), {"id": "id-x", "accounts": "oid-7"}]})),
            "an entry that is not an identity (id-x",
        ),
    ];
    for (second, says) in cases {
        let server = broken_list(second).await;
        let rows = vec![Row {
            upn: Some("user7@contoso.com".into()),
            ..row(2)
        }];
        let (directory, _) = bounded_look_up(&wanted(&rows), &reader(&server.root))
            .await
            .expect("the lookup goes on");
        let settled = settled(rows, &directory);
        assert_eq!(settled[0].1, "lookupFailed", "{says}: {settled:?}");
        assert!(settled[0].2.contains(says), "{says}: {settled:?}");
    }
}

#[tokio::test]
async fn issue_16_a_malformed_identity_spoils_itself_not_its_page() {
    // User 7's identity shares its page with one whose accounts are null (no accounts) and
    // one that is not an identity at all.
    let server = broken_list(|_| {
        Reply::json(&json!({"value": [
            {"id": "id-null", "accounts": null},
            {"id": 42},
            identity(7),
        ]}))
    })
    .await;
    let rows = vec![
        Row {
            upn: Some("user7@contoso.com".into()),
            ..row(2)
        },
        Row {
            identity_account_id: Some("id-null".into()),
            ..row(3)
        },
    ];
    let (directory, _) = bounded_look_up(&wanted(&rows), &reader(&server.root))
        .await
        .expect("the lookup goes on");
    let settled = settled(rows, &directory);
    assert_eq!(settled[0].1, "send", "{settled:?}");
    assert_eq!(settled[0].2, "id-7", "{settled:?}");
    // Read whole, with no accounts: the row is told so, not that the read failed.
    assert_eq!(settled[1].1, "actionNotOffered", "{settled:?}");
}

#[tokio::test]
async fn issue_16_a_404_on_the_sid_filter_is_lookup_failed_naming_the_read() {
    // A list too long for the rows' budget, so the SIDs are read one by one.
    let server = Hostile::start(|root, target| match skiptoken(target) {
        Some(token) => {
            let at = token.parse::<u64>().unwrap_or(0);
            Reply::json(&page(
                root,
                vec![identity(at + 100)],
                Some(&(at + 1).to_string()),
            ))
        }
        None => Reply::status(404),
    })
    .await;
    let rows: Vec<Row> = (0..3)
        .map(|i| Row {
            sid: Some(format!("S-1-5-21-1-{i}")),
            ..row(i + 2)
        })
        .collect();
    let (directory, _) = bounded_look_up(&wanted(&rows), &reader(&server.root))
        .await
        .expect("the lookup goes on");
    for (line, code, message) in settled(rows, &directory) {
        assert_eq!(code, "lookupFailed", "{line}: {message}");
        assert!(
            message.contains(
                "the identity list filtered by onPremisesSecurityIdentifier eq 's-1-5-21-1-"
            ) && message.contains("404"),
            "{line}: {message}"
        );
    }
}
