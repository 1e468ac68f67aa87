//! The mock's seeded tenant (SPEC section 8), driven over HTTP as a lookup would: the
//! identityAccounts list followed page by page, the SID filter, identities by id in both response
//! shapes, users by UPN and object id, role assignments, the 400s for what Microsoft does not
//! document, and actions checked against (and changing) the tenant.
//!
//! Timing tests run under tokio's paused clock, as in `mock_server.rs`: the mock keeps its time
//! there, and [`client`] keeps no idle pool whose timer would move that clock.

use std::time::Duration;

use graph_remediate::ResponseShape;
use graph_remediate::mock::{Identity, LinkedAccount, MockArgs, MockConfig, MockServer, Tenant};
use graph_remediate::units::parse_rate;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const TOKEN: &str = "tenant-test-token";

fn config(tenant: Tenant) -> MockConfig {
    MockConfig {
        static_tokens: vec![TOKEN.to_owned()],
        record: true,
        tenant: Some(tenant),
        ..MockConfig::default()
    }
}

async fn start(tenant: Tenant) -> MockServer {
    MockServer::start(config(tenant)).await.unwrap()
}

/// A client with no idle connection pool, hence no timer of its own.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a plain HTTP client")
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

    /// The identities of a list body, parsed by the shared model.
    fn identities(&self) -> Vec<Identity> {
        serde_json::from_value(self.body["value"].clone()).expect("a list of identities")
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

/// `GET {base}{path}` with the token; `path` is sent as written (already encoded).
async fn get(server: &MockServer, path: &str) -> Reply {
    send(
        client()
            .get(format!("{}{path}", server.base_url()))
            .bearer_auth(TOKEN),
    )
    .await
}

/// `GET` of the identityAccounts list with these query pairs, values percent-encoded as a
/// client would (spaces as `%20`, quotes as `%27`).
async fn list(server: &MockServer, query: &[(&str, &str)]) -> Reply {
    let query: Vec<String> = query
        .iter()
        .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, NON_ALPHANUMERIC)))
        .collect();
    let mut path = "/v1.0/security/identities/identityAccounts".to_owned();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    get(server, &path).await
}

async fn invoke(
    server: &MockServer,
    id: &str,
    account: &str,
    action: &str,
    provider: &str,
) -> Reply {
    send(
        client()
            .post(format!(
                "{}/v1.0/security/identities/identityAccounts/{id}/microsoft.graph.security.invokeAction",
                server.base_url()
            ))
            .bearer_auth(TOKEN)
            .json(&json!({"accountId": account, "action": action, "identityProvider": provider})),
    )
    .await
}

fn sid_filter(sid: &str) -> String {
    format!("onPremisesSecurityIdentifier eq '{sid}'")
}

/// An identity with an Entra account, for tests that need a UPN of their own.
fn entra_user(id: &str, upn: &str, object_id: &str) -> Identity {
    Identity {
        id: id.to_owned(),
        display_name: Some(upn.to_owned()),
        is_enabled: Some(true),
        user_principal_name: Some(upn.to_owned()),
        accounts: vec![LinkedAccount {
            identifier: object_id.to_owned(),
            identity_provider: "entraID".to_owned(),
            actions: vec!["disable".to_owned(), "revokeAllSessions".to_owned()],
        }],
        ..Identity::default()
    }
}

// --- the list -----------------------------------------------------------------------------------

#[tokio::test]
async fn the_list_pages_in_order_and_is_followed_whole_by_its_next_links() {
    let server = MockServer::start(MockConfig {
        page_size: 100,
        ..config(Tenant::synthetic(250))
    })
    .await
    .unwrap();
    let mut url = format!(
        "{}/v1.0/security/identities/identityAccounts",
        server.base_url()
    );
    let mut pages = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = send(client().get(&url).bearer_auth(TOKEN)).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages.push(page.body["value"].as_array().unwrap().len());
        seen.extend(page.identities().into_iter().map(|i| i.id));
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
        assert!(pages.len() < 10, "the links end");
    }
    assert_eq!(pages, [100, 100, 50]);
    let expected: Vec<String> = (0..250).map(Tenant::synthetic_id).collect();
    assert_eq!(seen, expected);

    let first = list(&server, &[]).await;
    assert_eq!(
        first.body["@odata.nextLink"],
        format!(
            "{}/v1.0/security/identities/identityAccounts?$skiptoken=100",
            server.base_url()
        )
    );
    // The docs' shape, as configured by default: `provider`, PascalCase.
    let second = &first.body["value"][1]["accounts"];
    assert_eq!(second[0]["provider"], "ActiveDirectory");
    assert_eq!(second[1]["provider"], "EntraID");
    assert_eq!(
        first.body["value"][0]["onPremisesSecurityIdentifier"],
        Value::Null
    );
    // beta links stay on beta; a token past the end is an empty last page.
    let beta = get(&server, "/beta/security/identities/identityAccounts").await;
    assert!(
        beta.body["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("/beta/security/identities/identityAccounts?$skiptoken=100")
    );
    // Links name the host the client used, so a client that follows them only to its own
    // origin accepts them whether it was given localhost or 127.0.0.1.
    let by_name = send(
        client()
            .get(format!(
                "{}/v1.0/security/identities/identityAccounts",
                server.base_url()
            ))
            .header("host", format!("localhost:{}", server.addr().port()))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(
        by_name.body["@odata.nextLink"],
        format!(
            "http://localhost:{}/v1.0/security/identities/identityAccounts?$skiptoken=100",
            server.addr().port()
        )
    );
    let past = list(&server, &[("$skiptoken", "900")]).await;
    assert_eq!(past.status, 200);
    assert_eq!(past.body, json!({"value": []}));
    assert_eq!(server.stats().identity_list_pages, 7);
    server.shutdown().await;
}

#[tokio::test]
async fn the_sid_filter_finds_an_identity_ignoring_case_or_none() {
    let server = start(Tenant::synthetic(30)).await;
    let sid = Tenant::synthetic_sid(7).unwrap();
    let found = list(&server, &[("$filter", &sid_filter(&sid.to_lowercase()))]).await;
    assert_eq!(found.status, 200, "{:?}", found.body);
    let identities = found.identities();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0].id, Tenant::synthetic_id(7));
    assert_eq!(
        identities[0].on_premises_security_identifier,
        Some(sid.clone())
    );
    assert!(found.body.get("@odata.nextLink").is_none());

    // Spaces around the parts are tolerated.
    let spaced = list(
        &server,
        &[(
            "$filter",
            &format!("  onPremisesSecurityIdentifier   eq   '{sid}' "),
        )],
    )
    .await;
    assert_eq!(spaced.identities().len(), 1);

    for nobody in [
        "S-1-5-21-1004336348-1177238915-682003330-999999".to_owned(),
        // A cloud-only identity has no SID to find it by, nor does its cloud SID count.
        Tenant::synthetic_identity(10)
            .cloud_security_identifier
            .unwrap(),
        String::new(),
    ] {
        let none = list(&server, &[("$filter", &sid_filter(&nobody))]).await;
        assert_eq!(none.status, 200);
        assert_eq!(none.body, json!({"value": []}), "{nobody}");
    }
    assert_eq!(server.stats().sid_filter_queries, 5);
    assert_eq!(server.stats().identity_list_pages, 0);
    // The request log keeps the query, where the SID is.
    let logged = server.requests();
    assert!(
        logged[0]
            .query
            .as_deref()
            .unwrap()
            .contains("onPremisesSecurityIdentifier")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn undocumented_filters_and_query_options_are_answered_400() {
    let server = start(Tenant::synthetic(3)).await;
    let upn = Tenant::synthetic_upn(1);
    let by_upn = format!("userPrincipalName eq '{upn}'");
    let by_account = format!(
        "accounts/any(a:a/identifier eq '{}')",
        Tenant::synthetic_object_id(1)
    );
    for query in [
        vec![("$filter", by_upn.as_str())],
        vec![("$filter", by_account.as_str())],
        vec![("$top", "999")],
        vec![("$count", "true")],
        vec![("$orderby", "displayName")],
        vec![("$expand", "accounts")],
        vec![("$skip", "10")],
    ] {
        let refused = list(&server, &query).await;
        assert_eq!(refused.status, 400, "{query:?}");
        assert_eq!(refused.error_code(), "BadRequest", "{query:?}");
        assert!(
            refused.error_message().contains("not supported"),
            "{query:?}: {}",
            refused.error_message()
        );
        assert!(refused.body["error"]["innerError"]["request-id"].is_string());
    }
    let message = list(&server, &[("$filter", by_upn.as_str())]).await;
    assert!(
        message.error_message().contains("filter"),
        "{:?}",
        message.body
    );
    // $select is accepted (and whole identities still come back).
    let selected = list(&server, &[("$select", "id,accounts")]).await;
    assert_eq!(selected.status, 200);
    assert_eq!(selected.identities().len(), 3);
    // Refused queries are not counted as pages or filters.
    let stats = server.stats();
    assert_eq!(
        (stats.identity_list_pages, stats.sid_filter_queries),
        (1, 0)
    );
    assert_eq!(stats.status(400), 8);
    server.shutdown().await;
}

// --- one identity -------------------------------------------------------------------------------

#[tokio::test]
async fn an_identity_by_id_comes_in_the_docs_shape_or_the_schema_shape() {
    let tenant = Tenant::synthetic(9);
    let id = Tenant::synthetic_id(8);
    let path = format!("/v1.0/security/identities/identityAccounts/{id}");

    let docs = start(tenant.clone()).await;
    let reply = get(&docs, &path).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let value = &reply.body["value"];
    assert_eq!(value["id"], id.as_str());
    assert_eq!(value["displayName"], "Synthetic User 8");
    assert_eq!(value["domain"], "contoso.local");
    assert_eq!(value["isEnabled"], true);
    assert_eq!(value["userPrincipalName"], Tenant::synthetic_upn(8));
    let providers: Vec<&str> = value["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["ActiveDirectory", "EntraID", "Okta"]);
    assert_eq!(
        value["accounts"][2]["identifier"],
        Tenant::synthetic_okta_account(8).unwrap()
    );
    assert_eq!(
        value["accounts"][0]["actions"],
        json!(["disable", "forcePasswordReset"])
    );
    let parsed: Identity = serde_json::from_value(value.clone()).unwrap();
    assert!(parsed.has_object_id(&Tenant::synthetic_object_id(8)));
    assert!(parsed.has_sid(&Tenant::synthetic_sid(8).unwrap()));
    // $select is taken and ignored.
    let selected = get(&docs, &format!("{path}?$select=accounts")).await;
    assert_eq!(selected.body["value"]["id"], id.as_str());

    let unknown = get(
        &docs,
        "/v1.0/security/identities/identityAccounts/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "itemNotFound");
    let filtered = get(&docs, &format!("{path}?$filter=id eq 'x'")).await;
    assert_eq!(filtered.status, 400);
    assert_eq!(docs.stats().identity_gets, 3);
    docs.shutdown().await;

    let schema = MockServer::start(MockConfig {
        response_shape: ResponseShape::Schema,
        ..config(tenant)
    })
    .await
    .unwrap();
    let reply = get(&schema, &path).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.get("value").is_none());
    assert_eq!(reply.body["id"], id.as_str());
    let providers: Vec<&str> = reply.body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identityProvider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["activeDirectory", "entraID", "okta"]);
    let list = get(&schema, "/v1.0/security/identities/identityAccounts").await;
    assert_eq!(
        list.body["value"][0]["accounts"][0]["identityProvider"],
        "entraID"
    );
    schema.shutdown().await;
}

// --- users --------------------------------------------------------------------------------------

#[tokio::test]
async fn users_are_found_by_upn_or_object_id_with_the_sid_only_when_selected() {
    let server = start(Tenant::synthetic(12)).await;
    let select = "$select=id,userPrincipalName,onPremisesSecurityIdentifier";

    let hybrid = get(
        &server,
        &format!(
            "/v1.0/users/{}?{select}",
            Tenant::synthetic_upn(3).to_uppercase()
        ),
    )
    .await;
    assert_eq!(hybrid.status, 200, "{:?}", hybrid.body);
    assert_eq!(hybrid.body["id"], Tenant::synthetic_object_id(3));
    assert_eq!(hybrid.body["userPrincipalName"], Tenant::synthetic_upn(3));
    assert_eq!(hybrid.body["displayName"], "Synthetic User 3");
    assert_eq!(
        hybrid.body["onPremisesSecurityIdentifier"],
        Tenant::synthetic_sid(3).unwrap()
    );

    let unselected = get(
        &server,
        &format!("/v1.0/users/{}", Tenant::synthetic_upn(3)),
    )
    .await;
    assert_eq!(unselected.status, 200);
    assert!(
        unselected
            .body
            .get("onPremisesSecurityIdentifier")
            .is_none()
    );
    assert_eq!(unselected.body["id"], Tenant::synthetic_object_id(3));

    // By object id, in any case; a cloud-only user's SID is null when selected.
    let cloud = get(
        &server,
        &format!(
            "/beta/users/{}?{select}",
            Tenant::synthetic_object_id(10).to_uppercase()
        ),
    )
    .await;
    assert_eq!(cloud.status, 200);
    assert_eq!(cloud.body["userPrincipalName"], Tenant::synthetic_upn(10));
    assert_eq!(cloud.body["onPremisesSecurityIdentifier"], Value::Null);
    assert!(
        cloud
            .body
            .as_object()
            .unwrap()
            .contains_key("onPremisesSecurityIdentifier")
    );

    // `%40` for `@` is the same path segment.
    let encoded = get(&server, "/v1.0/users/user000004%40contoso.com").await;
    assert_eq!(encoded.body["id"], Tenant::synthetic_object_id(4));

    for (path, key) in [
        (
            "/v1.0/users/nobody@contoso.com",
            "nobody@contoso.com".to_owned(),
        ),
        // The identity id is not a user id.
        (
            &*format!("/v1.0/users/{}", Tenant::synthetic_id(3)),
            Tenant::synthetic_id(3),
        ),
    ] {
        let missing = get(&server, path).await;
        assert_eq!(missing.status, 404, "{path}");
        assert_eq!(missing.error_code(), "Request_ResourceNotFound");
        assert_eq!(
            missing.error_message(),
            format!(
                "Resource '{key}' does not exist or one of its queried reference-property objects \
                 are not present."
            )
        );
        assert!(missing.body["error"]["innerError"]["date"].is_string());
    }
    assert_eq!(server.stats().user_reads, 6);
    server.shutdown().await;
}

#[tokio::test]
async fn a_upn_starting_with_dollar_is_read_in_the_quoted_form_and_hashes_must_be_encoded() {
    let mut tenant = Tenant::synthetic(2);
    let dollar = "$O'Neil@contoso.com";
    let guest = "alice_fabrikam.com#EXT#@contoso.com";
    tenant.push(entra_user(
        "ia-dollar",
        dollar,
        "5b1a7f0e-0000-4000-8000-000000000001",
    ));
    tenant.push(entra_user(
        "ia-guest",
        guest,
        "5b1a7f0e-0000-4000-8000-000000000002",
    ));
    let server = start(tenant).await;

    let quoted = get(
        &server,
        "/v1.0/users('$O''Neil@contoso.com')?$select=id,onPremisesSecurityIdentifier",
    )
    .await;
    assert_eq!(quoted.status, 200, "{:?}", quoted.body);
    assert_eq!(quoted.body["userPrincipalName"], dollar);
    assert_eq!(quoted.body["onPremisesSecurityIdentifier"], Value::Null);
    // The same with the quote and the dollar percent-encoded.
    let encoded = get(&server, "/v1.0/users('%24O%27%27Neil%40contoso.com')").await;
    assert_eq!(encoded.body["id"], "5b1a7f0e-0000-4000-8000-000000000001");
    // As Graph does, the plain segment form refuses a leading `$`.
    let plain = get(&server, "/v1.0/users/$O'Neil@contoso.com").await;
    assert_eq!(plain.status, 400);
    assert_eq!(plain.error_code(), "Request_BadRequest");
    // A lone quote inside the key is malformed.
    let lone = get(&server, "/v1.0/users('$O'Neil@contoso.com')").await;
    assert_eq!(lone.status, 400);
    // Any UPN works in the quoted form.
    let ordinary = get(&server, "/v1.0/users('USER000001@contoso.com')").await;
    assert_eq!(ordinary.body["id"], Tenant::synthetic_object_id(1));

    let guest_read = get(
        &server,
        "/v1.0/users/alice_fabrikam.com%23EXT%23@contoso.com",
    )
    .await;
    assert_eq!(guest_read.status, 200, "{:?}", guest_read.body);
    assert_eq!(guest_read.body["userPrincipalName"], guest);
    // Unencoded, everything from `#` on is a fragment the server never sees.
    let cut = get(&server, "/v1.0/users/alice_fabrikam.com#EXT#@contoso.com").await;
    assert_eq!(cut.status, 404);
    assert_eq!(cut.error_code(), "Request_ResourceNotFound");
    assert!(cut.error_message().contains("'alice_fabrikam.com'"));
    // Other single segments after the version are still unknown paths.
    let other = get(&server, "/v1.0/me").await;
    assert_eq!(other.status, 404);
    assert_eq!(other.error_code(), "itemNotFound");
    server.shutdown().await;
}

// --- role assignments ---------------------------------------------------------------------------

#[tokio::test]
async fn role_assignments_are_listed_by_role_with_the_principal_when_expanded() {
    let server = start(Tenant::synthetic(10)).await;
    let by_role = |role: &str, expand: bool| {
        let mut path = format!(
            "/v1.0/roleManagement/directory/roleAssignments?$filter=roleDefinitionId%20eq%20'{role}'"
        );
        if expand {
            path.push_str("&$expand=principal");
        }
        path
    };

    let admins = get(&server, &by_role(Tenant::GLOBAL_ADMINISTRATOR, true)).await;
    assert_eq!(admins.status, 200, "{:?}", admins.body);
    let value = admins.body["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    for (item, i) in value.iter().zip([1, 2]) {
        assert_eq!(item["principalId"], Tenant::synthetic_object_id(i));
        assert_eq!(item["roleDefinitionId"], Tenant::GLOBAL_ADMINISTRATOR);
        assert_eq!(item["directoryScopeId"], "/");
        assert!(item["id"].as_str().unwrap().ends_with("-1"));
        let principal = &item["principal"];
        assert_eq!(principal["@odata.type"], "#microsoft.graph.user");
        assert_eq!(principal["id"], Tenant::synthetic_object_id(i));
        assert_eq!(principal["userPrincipalName"], Tenant::synthetic_upn(i));
    }

    let plain = get(
        &server,
        &by_role(Tenant::PRIVILEGED_ROLE_ADMINISTRATOR, false),
    )
    .await;
    let value = plain.body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["principalId"], Tenant::synthetic_object_id(3));
    assert!(value[0].get("principal").is_none());

    let security = get(
        &server,
        &by_role(&Tenant::SECURITY_ADMINISTRATOR.to_uppercase(), false),
    )
    .await;
    assert_eq!(
        security.body["value"][0]["principalId"],
        Tenant::synthetic_object_id(4)
    );
    let nobody = get(
        &server,
        &by_role("fe930be7-5e62-47db-91af-98c3a49a38b1", true),
    )
    .await;
    assert_eq!(nobody.body["value"], json!([]));

    // Microsoft's other example: one principal's assignments.
    let one = get(
        &server,
        &format!(
            "/v1.0/roleManagement/directory/roleAssignments?$filter=principalId eq '{}'",
            Tenant::synthetic_object_id(2)
        ),
    )
    .await;
    assert_eq!(
        one.body["value"][0]["roleDefinitionId"],
        Tenant::GLOBAL_ADMINISTRATOR
    );

    for refused in [
        "/v1.0/roleManagement/directory/roleAssignments?$filter=directoryScopeId eq '/'",
        "/v1.0/roleManagement/directory/roleAssignments?$expand=roleDefinition",
        "/v1.0/roleManagement/directory/roleAssignments?$top=5",
    ] {
        let reply = get(&server, refused).await;
        assert_eq!(reply.status, 400, "{refused}");
        assert_eq!(reply.error_code(), "BadRequest");
    }
    assert_eq!(server.stats().role_reads, 5);
    server.shutdown().await;
}

// --- actions against the tenant -----------------------------------------------------------------

#[tokio::test]
async fn actions_are_refused_unless_the_identity_has_the_account_and_it_offers_the_action() {
    let server = start(Tenant::synthetic(6)).await;
    let id = Tenant::synthetic_id(1);
    let ad = Tenant::synthetic_ad_account(1).unwrap();

    let unknown = invoke(
        &server,
        "no-such-identity",
        &ad,
        "disable",
        "activeDirectory",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error_code(), "itemNotFound");

    // Another identity's account, and the right identifier under the wrong provider.
    let other = Tenant::synthetic_ad_account(2).unwrap();
    for (account, provider) in [(other.as_str(), "activeDirectory"), (ad.as_str(), "okta")] {
        let refused = invoke(&server, &id, account, "disable", provider).await;
        assert_eq!(refused.status, 400, "{account} {provider}");
        assert_eq!(refused.error_code(), "BadRequest");
        assert!(
            refused.error_message().contains(account) && refused.error_message().contains(provider),
            "{}",
            refused.error_message()
        );
    }
    // The identifier is matched exactly.
    let shouting = invoke(
        &server,
        &id,
        &ad.to_uppercase(),
        "disable",
        "activeDirectory",
    )
    .await;
    assert_eq!(shouting.status, 400);

    // Enabling an enabled account, and an action the provider's account does not list.
    for (action, account, provider) in [
        ("enable", ad.as_str(), "activeDirectory"),
        ("revokeAllSessions", ad.as_str(), "activeDirectory"),
    ] {
        let refused = invoke(&server, &id, account, action, provider).await;
        assert_eq!(refused.status, 400, "{action}");
        assert!(
            refused
                .error_message()
                .contains("is not offered for this account"),
            "{}",
            refused.error_message()
        );
    }
    // The cloud-only identity 5 has no AD account at all.
    let cloud_only = invoke(
        &server,
        &Tenant::synthetic_id(5),
        &ad,
        "disable",
        "activeDirectory",
    )
    .await;
    assert_eq!(cloud_only.status, 400);
    assert_eq!(server.identity(&id).unwrap(), Tenant::synthetic_identity(1));
    server.shutdown().await;
}

#[tokio::test]
async fn a_successful_disable_changes_what_the_account_offers_and_enable_undoes_it() {
    let server = start(Tenant::synthetic(6)).await;
    let id = Tenant::synthetic_id(4);
    let okta = Tenant::synthetic_okta_account(4).unwrap();
    let path = format!("/v1.0/security/identities/identityAccounts/{id}");

    let disabled = invoke(&server, &id, &okta, "disable", "okta").await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    assert_eq!(disabled.body["value"]["accountId"], okta.as_str());
    let after = get(&server, &path).await;
    assert_eq!(after.body["value"]["isEnabled"], false);
    assert_eq!(
        after.body["value"]["accounts"][2]["actions"],
        json!(["enable", "revokeAllSessions"])
    );
    let held = server.identity(&id).unwrap();
    assert_eq!(held.is_enabled, Some(false));
    // The other accounts are untouched.
    assert_eq!(held.accounts[0], Tenant::synthetic_identity(4).accounts[0]);

    let again = invoke(&server, &id, &okta, "disable", "okta").await;
    assert_eq!(again.status, 400);
    assert!(
        again
            .error_message()
            .contains("offered: enable, revokeAllSessions")
    );

    // An Entra ID action: the account offers it, so the documented matrix does not refuse it.
    let object_id = Tenant::synthetic_object_id(4);
    let revoked = invoke(&server, &id, &object_id, "revokeAllSessions", "entraID").await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);

    let enabled = invoke(&server, &id, &okta, "enable", "okta").await;
    assert_eq!(enabled.status, 200);
    assert_eq!(server.identity(&id).unwrap(), {
        let mut expected = Tenant::synthetic_identity(4);
        expected.is_enabled = Some(true);
        expected
    });
    assert_eq!(server.identity("nobody"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn a_tenant_file_in_microsofts_example_spelling_is_served_and_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenant.jsonl");
    // The docs' list example: `provider`, PascalCase, "Enable", and two identities sharing one
    // Okta identifier.
    let lines = [
        json!({"id": "00104216-0539-4838-88b1-55baafdc296b", "displayName": "accoundJon",
               "onPremisesSecurityIdentifier": "S-1-5-21-989687458-3461180213-172365591-281652",
               "isEnabled": false,
               "accounts": [
                   {"provider": "ActiveDirectory", "identifier": "256db173-930a-4991-9061-0d51a9a93ba5", "actions": ["Enable"]},
                   {"provider": "Okta", "identifier": "878a6911-f3da-41eb-a895-1d46fa054d3e", "actions": ["revokeAllSessions"]}]}),
        json!({"value": {"id": "00054217-0539-4838-88b1-55baafdc296b", "displayName": "account",
               "accounts": [{"identityProvider": "okta", "identifier": "878a6911-f3da-41eb-a895-1d46fa054d3e", "actions": []}]}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let tenant = Tenant::load(&file).unwrap();
    assert_eq!(tenant.len(), 2);
    let server = MockServer::start(MockConfig {
        response_shape: ResponseShape::Schema,
        ..config(tenant)
    })
    .await
    .unwrap();

    let page = get(&server, "/v1.0/security/identities/identityAccounts").await;
    let shared: Vec<&str> = page.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["accounts"].as_array().unwrap().last().unwrap()["identifier"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(shared, ["878a6911-f3da-41eb-a895-1d46fa054d3e"; 2]);
    assert_eq!(
        page.body["value"][0]["accounts"][0]["identityProvider"],
        "activeDirectory"
    );

    let id = "00104216-0539-4838-88b1-55baafdc296b";
    let ad = "256db173-930a-4991-9061-0d51a9a93ba5";
    assert_eq!(
        invoke(&server, id, ad, "disable", "activeDirectory")
            .await
            .status,
        400
    );
    let enabled = invoke(&server, id, ad, "enable", "activeDirectory").await;
    assert_eq!(enabled.status, 200, "{:?}", enabled.body);
    let after = server.identity(id).unwrap();
    assert_eq!(after.accounts[0].actions, ["disable"]);
    assert_eq!(after.is_enabled, Some(true));
    // No Entra ID account: not a user.
    let user = get(&server, &format!("/v1.0/users/{ad}")).await;
    assert_eq!(user.status, 404);
    server.shutdown().await;
}

// --- what every Graph request goes through ------------------------------------------------------

#[tokio::test]
async fn reads_demand_a_token_a_known_version_and_get() {
    let server = start(Tenant::synthetic(2)).await;
    let base = server.base_url();
    let anonymous =
        send(client().get(format!("{base}/v1.0/security/identities/identityAccounts"))).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.error_code(), "InvalidAuthenticationToken");
    let anonymous_user =
        send(client().get(format!("{base}/v1.0/users/user000001@contoso.com"))).await;
    assert_eq!(anonymous_user.status, 401);
    let posted = send(
        client()
            .post(format!("{base}/v1.0/users/user000001@contoso.com"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(posted.status, 405);
    let version = get(&server, "/v2.0/security/identities/identityAccounts").await;
    assert_eq!(version.status, 404);
    assert!(version.header("request-id").is_some());
    server.shutdown().await;
}

#[tokio::test]
async fn without_a_tenant_the_read_paths_stay_unknown_and_actions_meet_the_matrix() {
    let server = MockServer::start(MockConfig {
        static_tokens: vec![TOKEN.to_owned()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for path in [
        "/v1.0/security/identities/identityAccounts",
        "/v1.0/security/identities/identityAccounts/ia-1",
        "/v1.0/users/user000001@contoso.com",
        "/v1.0/users('user000001@contoso.com')",
        "/v1.0/roleManagement/directory/roleAssignments",
    ] {
        let reply = get(&server, path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error_code(), "itemNotFound");
    }
    let entra = invoke(&server, "ia-1", "u", "revokeAllSessions", "entraID").await;
    assert_eq!(entra.status, 400);
    assert_eq!(
        entra.error_message(),
        "EntraID actions are not yet supported"
    );
    assert_eq!(
        invoke(&server, "anything", "a", "disable", "okta")
            .await
            .status,
        200
    );
    assert_eq!(server.identity("anything"), None);
    let stats = server.stats();
    assert_eq!(
        (
            stats.identity_gets,
            stats.identity_list_pages,
            stats.user_reads,
            stats.role_reads
        ),
        (0, 0, 0, 0)
    );
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_scripted_429_on_one_users_read_tells_a_window_for_the_directory_only() {
    let mut tenant = Tenant::synthetic(3);
    let upn = "http429x1-alice@contoso.com";
    tenant.push(entra_user(
        "ia-alice",
        upn,
        "a11ce000-0000-4000-8000-000000000001",
    ));
    let server = start(tenant).await;
    let path = format!("/v1.0/users/{upn}?$select=id,onPremisesSecurityIdentifier");

    let first = get(&server, &path).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("1"));
    assert_eq!(first.error_code(), "TooManyRequests");
    // /security is throttled apart: a read there now is not inside the told window.
    let elsewhere = list(&server, &[]).await;
    assert_eq!(elsewhere.status, 200);
    // Another user's read at once is, and the scripted read itself succeeds once the window
    // is over.
    let other = get(
        &server,
        &format!("/v1.0/users/{}", Tenant::synthetic_upn(1)),
    )
    .await;
    assert_eq!(other.status, 200);
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = get(&server, &path).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["id"], "a11ce000-0000-4000-8000-000000000001");
    let flags: Vec<(u16, bool)> = server
        .requests()
        .iter()
        .map(|r| (r.status, r.inside_told_window))
        .collect();
    assert_eq!(
        flags,
        [(429, false), (200, false), (200, true), (200, false)]
    );
    assert_eq!(server.stats().user_reads, 3);

    // Other statuses script the directory's own error bodies.
    let mut tenant = Tenant::synthetic(1);
    tenant.push(entra_user(
        "ia-gone",
        "http404-gone@contoso.com",
        "a11ce000-0000-4000-8000-000000000002",
    ));
    tenant.push(entra_user(
        "http403-ia",
        "http403-bob@contoso.com",
        "a11ce000-0000-4000-8000-000000000003",
    ));
    let scripted = start(tenant).await;
    let gone = get(&scripted, "/v1.0/users/http404-gone@contoso.com").await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error_code(), "Request_ResourceNotFound");
    let denied = get(&scripted, "/v1.0/users('http403-bob@contoso.com')").await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.error_code(), "Authorization_RequestDenied");
    // An identity id scripts its GET, with /security's bodies.
    let get_denied = get(
        &scripted,
        "/v1.0/security/identities/identityAccounts/http403-ia",
    )
    .await;
    assert_eq!(get_denied.status, 403);
    assert_eq!(get_denied.error_code(), "accessDenied");
    scripted.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn each_service_has_its_own_rate_limit_per_token() {
    let server = MockServer::start(MockConfig {
        rate: Some(parse_rate("1/min").unwrap()),
        ..config(Tenant::synthetic(3))
    })
    .await
    .unwrap();
    let user = format!("/v1.0/users/{}", Tenant::synthetic_upn(1));
    assert_eq!(get(&server, &user).await.status, 200);
    let throttled = get(&server, &user).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("60"));
    // Role reads share the directory's bucket.
    let roles = get(&server, "/v1.0/roleManagement/directory/roleAssignments").await;
    assert_eq!(roles.status, 429);
    // /security has its own: one read, then the action is over the limit.
    assert_eq!(list(&server, &[]).await.status, 200);
    let id = Tenant::synthetic_id(1);
    let ad = Tenant::synthetic_ad_account(1).unwrap();
    assert_eq!(
        invoke(&server, &id, &ad, "disable", "activeDirectory")
            .await
            .status,
        429
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(get(&server, &user).await.status, 200);
    assert_eq!(
        invoke(&server, &id, &ad, "disable", "activeDirectory")
            .await
            .status,
        200
    );
    assert_eq!(server.stats().inside_told_window, 1);
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_before_reads_too() {
    let server = MockServer::start(MockConfig {
        latency: Duration::from_millis(150),
        ..config(Tenant::synthetic(1))
    })
    .await
    .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(
        get(
            &server,
            &format!("/v1.0/users/{}", Tenant::synthetic_upn(0))
        )
        .await
        .status,
        200
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(300),
        "added once: {took:?}"
    );
    server.shutdown().await;
}

// --- the `mock` command ---------------------------------------------------------------------

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
async fn the_mock_command_serves_a_synthetic_tenant_in_pages_of_the_size_asked() {
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
        "--accept-any-token",
        "--identities",
        "7",
        "--page-size",
        "3",
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
    // Ends as soon as the line is printed; the timeout only turns a hang into a failure.
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
        .unwrap()
        .to_owned();

    let mut url = format!("{base}/v1.0/security/identities/identityAccounts");
    let mut sizes = Vec::new();
    loop {
        let page = send(client().get(&url).bearer_auth("any")).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        sizes.push(page.identities().len());
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    let user = send(
        client()
            .get(format!(
                "{base}/v1.0/users/{}",
                Tenant::synthetic_object_id(6)
            ))
            .bearer_auth("any"),
    )
    .await;
    assert_eq!(user.body["userPrincipalName"], Tenant::synthetic_upn(6));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shuts down promptly")
        .unwrap()
        .unwrap();
}
