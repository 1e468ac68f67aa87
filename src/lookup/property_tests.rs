//! Property tests of the lookup's page parsing and walks (issue 16): whatever a server sends
//! (arbitrary bodies, link graphs with cycles, huge counts, hostile UPNs), every walk ends, no
//! read panics, and nothing a row's record, a stop or a log line says holds an escape sequence.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::directory::Found;
use super::hostile_tests::{Hostile, Reply, policy, reader_for, row, settled, wanted};
use super::walk::Limits;
use super::{Directory, Row, guard, look_up};
use crate::graph::identity::Page;

/// Text a terminal would act on: control characters (C0, DEL, C1) and bidirectional overrides.
fn printable(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
}

/// Text biased towards what breaks printers and parsers.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\u{1b}[31mred\u{1b}[0m@contoso.com".to_owned()),
        Just("\u{9b}2J@contoso.com".to_owned()),
        Just("ann\r\nFAKE LOG LINE@contoso.com".to_owned()),
        Just("\u{202e}moc.osotnoc@nna".to_owned()),
        Just("guest_x.com#EXT#@contoso.onmicrosoft.com".to_owned()),
        Just("$dollar@contoso.com".to_owned()),
        Just("%2e%2e@contoso.com".to_owned()),
        Just("0b9f4c7e-1111-4a2b-9c3d-0123456789ab".to_owned()),
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
        ".{0,24}",
    ]
}

/// Where a page's `@odata.nextLink` points.
#[derive(Debug, Clone)]
enum Link {
    End,
    /// Another page of the graph (itself, an earlier one: a cycle).
    To(usize),
    /// A fresh page each time: an endless list.
    Fresh,
    Foreign,
    Userinfo,
    Text(String),
}

fn links(pages: usize) -> impl Strategy<Value = Link> {
    prop_oneof![
        Just(Link::End),
        (0..pages).prop_map(Link::To),
        (0..pages).prop_map(Link::To),
        Just(Link::Fresh),
        Just(Link::Foreign),
        Just(Link::Userinfo),
        hostile_text().prop_map(Link::Text),
    ]
}

/// What a page's body is.
#[derive(Debug, Clone)]
enum Body {
    /// A list of these identities (numbered, with hostile UPNs), some broken.
    List(Vec<(u8, String, u8)>),
    /// Raw bytes.
    Raw(Vec<u8>),
    /// An error status with a hostile message.
    Status(u16, String),
    /// A count no tenant holds, and many entries.
    Huge,
}

fn bodies() -> impl Strategy<Value = Body> {
    let identity = (0u8..12, hostile_text(), 0u8..6);
    prop_oneof![
        4 => proptest::collection::vec(identity, 0..6).prop_map(Body::List),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body::Raw),
        1 => (prop_oneof![Just(400u16), Just(404), Just(500), Just(503)], hostile_text())
            .prop_map(|(status, message)| Body::Status(status, message)),
        1 => Just(Body::Huge),
    ]
}

fn graphs() -> impl Strategy<Value = Vec<(Body, Link)>> {
    (1usize..7).prop_flat_map(|pages| proptest::collection::vec((bodies(), links(pages)), pages))
}

/// One identity as a page lists it: `broken` picks a way for it to be wrong (or not).
fn identity(n: u8, upn: &str, broken: u8) -> Value {
    let mut identity = json!({
        "id": format!("id-{n}"),
        "displayName": upn,
        "userPrincipalName": upn,
        "onPremisesSecurityIdentifier": format!("S-1-5-21-1-{n}"),
        "accounts": [{"identifier": format!("oid-{n}"), "identityProvider": "entraID", "actions": ["disable", upn]}],
    });
    match broken {
        0 => identity["accounts"] = Value::Null,
        1 => identity["id"] = json!(n),
        2 => identity["accounts"] = json!(upn),
        _ => {}
    }
    identity
}

fn link(root: &str, path: &str, link: &Link, at: u64) -> Option<String> {
    match link {
        Link::End => None,
        Link::To(page) => Some(format!("{root}{path}?$skiptoken={page}")),
        Link::Fresh => Some(format!("{root}{path}?$skiptoken=f{}", at + 1)),
        Link::Foreign => Some(format!("https://graph.example.net{path}?$skiptoken=0")),
        Link::Userinfo => Some(format!(
            "{}{path}?$skiptoken=0",
            root.replacen("://", "://user:pw@", 1)
        )),
        Link::Text(text) => Some(text.clone()),
    }
}

/// Page `at` of the graph (fresh pages cycle through it) at `path`.
fn serve(graph: &[(Body, Link)], root: &str, path: &str, at: u64, roles: bool) -> Reply {
    let (body, next) = &graph[(at % graph.len() as u64) as usize];
    let next = link(root, path, next, at);
    let value: Vec<Value> = match body {
        Body::Raw(bytes) => {
            return Reply {
                body: bytes.clone(),
                ..Reply::status(200)
            };
        }
        Body::Status(status, message) => {
            return Reply {
                body: json!({"error": {"code": message, "message": message}})
                    .to_string()
                    .into_bytes(),
                ..Reply::status(*status)
            };
        }
        Body::Huge => {
            let mut page = json!({"value": (0..2_000).map(|i| json!({"id": format!("h{at}-{i}")})).collect::<Vec<_>>(), "@odata.count": 1e300});
            if let Some(next) = next {
                page["@odata.nextLink"] = json!(next);
            }
            return Reply::json(&page);
        }
        Body::List(identities) if roles => identities
            .iter()
            .map(|(n, upn, _)| json!({"principalId": format!("oid-{n}"), "principal": {"userPrincipalName": upn}}))
            .collect(),
        Body::List(identities) => identities
            .iter()
            .map(|(n, upn, broken)| identity(*n, upn, *broken))
            .collect(),
    };
    let mut page = json!({ "value": value });
    if let Some(next) = next {
        page["@odata.nextLink"] = json!(next);
    }
    Reply::json(&page)
}

fn page_at(target: &str) -> u64 {
    match target.split_once("skiptoken=") {
        None => 0,
        Some((_, token)) => token.trim_start_matches('f').parse().unwrap_or(0),
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
});

/// Looks `upns` and `sids` up, and reads the privileged roles, against a server serving
/// `graph`: the refusal messages and the stops, as text.
fn walk_graph(graph: Vec<(Body, Link)>, upns: Vec<String>, sids: Vec<u8>) -> Vec<String> {
    RUNTIME.block_on(async move {
        let graph = Arc::new(graph);
        let server = Hostile::start(move |root, target| {
            let list = "/v1.0/security/identities/identityAccounts";
            let roles = "/v1.0/roleManagement/directory/roleAssignments";
            if target.starts_with("/v1.0/users") {
                let asked = target
                    .trim_start_matches("/v1.0/users/")
                    .split('?')
                    .next()
                    .unwrap_or_default();
                let asked = percent_encoding::percent_decode_str(asked).decode_utf8_lossy();
                return Reply::json(&json!({"id": "oid-3", "userPrincipalName": asked}));
            }
            if target.starts_with(roles) {
                return serve(&graph, root, roles, page_at(target), true);
            }
            if target.starts_with(list) {
                return serve(&graph, root, list, page_at(target), false);
            }
            Reply::status(404)
        })
        .await;
        let limits = Limits {
            pages: 200,
            entries: 5_000,
            empty_pages: 8,
        };
        let reader = reader_for(&server.root, policy(), limits, CancellationToken::new());
        let mut rows: Vec<Row> = upns
            .into_iter()
            .map(|upn| Row {
                upn: Some(upn),
                ..row(2)
            })
            .collect();
        rows.extend(sids.into_iter().map(|n| Row {
            sid: Some(format!("S-1-5-21-1-{n}")),
            ..row(3)
        }));
        let mut said = Vec::new();
        let looked_up =
            tokio::time::timeout(Duration::from_secs(30), look_up(&wanted(&rows), &reader))
                .await
                .expect("every walk ends");
        match looked_up {
            Ok((directory, _)) => {
                said.extend(
                    settled(rows, &directory)
                        .into_iter()
                        .map(|(_, _, message)| message),
                );
            }
            Err(stop) => said.push(stop.to_string()),
        }
        let guardrails = guard::Guardrails {
            privileged: true,
            ..guard::Guardrails::default()
        };
        let mut directory = Directory::default();
        let guarded = tokio::time::timeout(
            Duration::from_secs(30),
            guard::read_guard(&guardrails, &reader, &mut directory),
        )
        .await
        .expect("every role walk ends");
        if let Err(stop) = guarded {
            said.push(stop.to_string());
        }
        said
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn issue_16_any_page_body_parses_without_panic_to_printable_reasons(body in proptest::collection::vec(any::<u8>(), 0..256), text in hostile_text()) {
        for body in [body, format!(r#"{{"value":[{{"id":{text:?},"accounts":{text:?}}}],"@odata.nextLink":{text:?}}}"#).into_bytes()] {
            if let Ok(page) = Page::parse(&body) {
                let mut directory = Directory::default();
                for spoiled in page.spoiled {
                    directory.note_spoiled(spoiled, None);
                }
                let found = directory.by_upn_in_index(&text);
                if let Found::Failed(reason) = found {
                    prop_assert!(printable(reason), "{reason:?}");
                }
            }
        }
    }
}

proptest! {
    // Each case is a lookup against a server on loopback; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn issue_16_every_walk_of_any_link_graph_ends_and_says_nothing_unprintable(
        graph in graphs(),
        upns in proptest::collection::vec(hostile_text(), 0..3),
        sids in proptest::collection::vec(0u8..12, 0..3),
    ) {
        for text in walk_graph(graph, upns, sids) {
            prop_assert!(printable(&text), "{text:?}");
        }
    }
}
