//! The mock's side of the unattended credential kinds (issue 18, SPEC section 9): GitHub
//! Actions' OIDC token endpoint, and the managed-identity endpoints of each Azure host, each in
//! its own protocol so that a client speaking the wrong one is refused:
//! - `GET /github/idtoken?...&audience=A` with the request token as bearer: `{"value": JWT}`,
//!   a JWT that lives `oidc_lifetime` (the token endpoint refuses it after that, AADSTS700024);
//! - `GET /metadata/identity/oauth2/token` (IMDS, where `AZURE_POD_IDENTITY_AUTHORITY_HOST`
//!   leads): `Metadata: true`, api-version 2018-02-01, `client_id`/`object_id`/`msi_res_id`;
//!   every field of the answer a string;
//! - `GET /msi/token` (App Service protocol): `X-IDENTITY-HEADER`, api-version 2019-08-01,
//!   `client_id`/`principal_id`/`mi_res_id`; `expires_on` only;
//! - `POST /cloudshell/token` (Cloud Shell): `Metadata: true`, form `resource`;
//! - `GET /arc/token` (Arc): 401 with `WWW-Authenticate: Basic realm=<key file>`, then the file's
//!   content as `Authorization: Basic`.
//!
//! Tokens issued here are Graph tokens like the token endpoint's (they expire after
//! `token_lifetime`). The identity header, the Arc key and the request token are never logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::log::{self, LoggedRequest};
use super::reply::{self, Ids};
use super::state::Shared;

/// GitHub's OIDC issuer, which the token endpoint recognises in an assertion.
pub(crate) const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Which managed-identity protocol a request came in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Imds,
    AppService,
    CloudShell,
    Arc,
}

pub(crate) async fn github_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    shared.count_oidc();
    let now_ns = shared.now_ns();
    let ids = Ids::new(&headers);
    let query = query_pairs(&uri);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let (status, body) = if method != Method::GET {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "GET only"}),
        )
    } else if bearer.is_none()
        || shared
            .config
            .oidc_request_token
            .as_deref()
            .is_some_and(|wanted| bearer != Some(wanted))
    {
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials: the request token is missing or wrong"}),
        )
    } else {
        let audience = get(&query, "audience").unwrap_or("https://github.com/mock");
        let now = shared.wall(now_ns).as_secs();
        let claims = json!({
            "iss": GITHUB_ISSUER,
            "aud": audience,
            "sub": "repo:mock/mock:ref:refs/heads/main",
            "jti": reply::new_uuid().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + shared.config.oidc_lifetime.as_secs().max(1),
        });
        let jwt = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT","kid":"mock"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode("mock-signature")
        );
        (StatusCode::OK, json!({"count": 1, "value": jwt}))
    };
    record(&shared, now_ns, &method, &uri, status, &ids);
    reply::json(status, &ids, reply::to_bytes(&body), None)
}

pub(crate) async fn imds_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    managed(&shared, Protocol::Imds, &method, &uri, &headers, &[]).await
}

pub(crate) async fn app_service_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    managed(&shared, Protocol::AppService, &method, &uri, &headers, &[]).await
}

pub(crate) async fn cloud_shell_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    managed(
        &shared,
        Protocol::CloudShell,
        &method,
        &uri,
        &headers,
        &body,
    )
    .await
}

pub(crate) async fn arc_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    managed(&shared, Protocol::Arc, &method, &uri, &headers, &[]).await
}

/// One managed-identity request in `protocol`: checked as that host checks it, then a token.
async fn managed(
    shared: &Shared,
    protocol: Protocol,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let index = shared.count_managed();
    let now_ns = shared.now_ns();
    let ids = Ids::new(headers);
    let query = query_pairs(uri);
    let mut challenge = None;
    let outcome = match shared.config.managed_identity_faults.get(index as usize) {
        Some(&fault) => Err((
            StatusCode::from_u16(fault).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "mock: a scripted fault".to_owned(),
        )),
        None => check(
            shared,
            protocol,
            method,
            &query,
            headers,
            body,
            &mut challenge,
        ),
    };
    let (status, body) = match outcome {
        Ok(()) => {
            let lifetime = shared.config.token_lifetime;
            let token = format!("mock-mi-{}", reply::new_uuid());
            shared.remember_token(token.clone(), now_ns, lifetime);
            let now = shared.wall(now_ns).as_secs();
            let expires_on = now + lifetime.as_secs();
            let resource = get(&query, "resource")
                .map(str::to_owned)
                .or_else(|| form_field(body, "resource"))
                .unwrap_or_default();
            // Each host's own shape: IMDS strings throughout; App Service `expires_on` only;
            // Cloud Shell and Arc numbers.
            let body = match protocol {
                Protocol::Imds => json!({
                    "access_token": token, "refresh_token": "",
                    "expires_in": lifetime.as_secs().to_string(),
                    "expires_on": expires_on.to_string(), "not_before": now.to_string(),
                    "resource": resource, "token_type": "Bearer",
                }),
                Protocol::AppService => json!({
                    "access_token": token, "expires_on": expires_on.to_string(),
                    "resource": resource, "token_type": "Bearer",
                    "client_id": "mock-managed-identity",
                }),
                Protocol::CloudShell | Protocol::Arc => json!({
                    "access_token": token, "expires_in": lifetime.as_secs(),
                    "expires_on": expires_on, "resource": resource, "token_type": "Bearer",
                }),
            };
            (StatusCode::OK, body)
        }
        Err((status, reason)) => (
            status,
            json!({"error": "invalid_request", "error_description": reason}),
        ),
    };
    record(shared, now_ns, method, uri, status, &ids);
    let mut response = reply::json(status, &ids, reply::to_bytes(&body), None);
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

type Refusal = (StatusCode, String);

fn check(
    shared: &Shared,
    protocol: Protocol,
    method: &Method,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
    challenge: &mut Option<String>,
) -> Result<(), Refusal> {
    let bad = |reason: &str| Err((StatusCode::BAD_REQUEST, reason.to_owned()));
    let header_is = |name: &str, value: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(value))
    };
    let wanted_method = if protocol == Protocol::CloudShell {
        Method::POST
    } else {
        Method::GET
    };
    if *method != wanted_method {
        return bad("wrong method for this endpoint");
    }
    // The user-assigned parameters each host takes; another host's spelling is refused.
    let (api_version, own, foreign): (Option<&str>, &[&str], &[&str]) = match protocol {
        Protocol::Imds => (
            Some("2018-02-01"),
            &["client_id", "object_id", "msi_res_id"],
            &["principal_id", "mi_res_id"],
        ),
        Protocol::AppService => (
            Some("2019-08-01"),
            &["client_id", "principal_id", "mi_res_id"],
            &["object_id", "msi_res_id"],
        ),
        Protocol::CloudShell => (None, &[], &["client_id", "object_id", "msi_res_id"]),
        Protocol::Arc => (None, &[], &["client_id", "object_id", "msi_res_id"]),
    };
    if let Some(version) = api_version
        && get(query, "api-version") != Some(version)
    {
        return bad("api-version is missing or not the one this host speaks");
    }
    if foreign.iter().any(|name| get(query, name).is_some()) {
        return bad("a user-assigned identity parameter this host does not take");
    }
    if own.iter().filter(|name| get(query, name).is_some()).count() > 1 {
        return bad("more than one user-assigned identity parameter");
    }
    let resource = match protocol {
        Protocol::CloudShell => form_field(body, "resource"),
        _ => get(query, "resource").map(str::to_owned),
    };
    match resource {
        Some(resource) if !resource.ends_with("/.default") => {}
        _ => {
            return bad("resource is missing (or is a scope: managed identity takes no /.default)");
        }
    }
    match protocol {
        Protocol::AppService => {
            let sent = headers
                .get("x-identity-header")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty());
            let wanted = shared.config.identity_header.as_deref();
            if sent.is_none() || wanted.is_some_and(|w| sent != Some(w)) {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "X-IDENTITY-HEADER is missing or wrong".to_owned(),
                ));
            }
        }
        Protocol::Imds | Protocol::CloudShell | Protocol::Arc => {
            if !header_is("metadata", "true") {
                return bad("Required metadata header not specified");
            }
        }
    }
    if protocol == Protocol::Arc {
        let Some(path) = &shared.config.arc_key_file else {
            return Err((StatusCode::NOT_FOUND, "no Arc agent here".to_owned()));
        };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        let key = std::fs::read_to_string(path).unwrap_or_default();
        match sent {
            None => {
                *challenge = Some(format!("Basic realm={}", path.display()));
                return Err((StatusCode::UNAUTHORIZED, "key required".to_owned()));
            }
            Some(sent) if sent.trim() == key.trim() && !key.trim().is_empty() => {}
            Some(_) => return Err((StatusCode::UNAUTHORIZED, "wrong key".to_owned())),
        }
    }
    Ok(())
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn get<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Logs the request: path, query (no secret travels in these queries), status; never headers.
fn record(shared: &Shared, now_ns: u64, method: &Method, uri: &Uri, status: StatusCode, ids: &Ids) {
    if !shared.logging() {
        return;
    }
    shared.log(LoggedRequest {
        t_ms: now_ns as f64 / 1e6,
        time: log::rfc3339_millis(shared.wall(now_ns)),
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        status: status.as_u16(),
        body: None,
        token: None,
        client_request_id: ids.sent(),
        request_id: ids.request_id.clone(),
        retry_after: None,
        window_end_ms: None,
        inside_told_window: false,
    });
}

/// How the token endpoint judges a `client_assertion` that is not a certificate's: a GitHub
/// token is good until its `exp` with the token-exchange audience; with
/// `federated_token_file` set, anything else must be the file's content now. `None`: a
/// certificate's assertion (or no federation configured), judged as before.
pub(crate) fn federated_verdict(
    shared: &Shared,
    assertion: &str,
    now_secs: f64,
) -> Option<Result<(), (u32, String)>> {
    let part = |i: usize| -> Option<serde_json::Map<String, Value>> {
        let text = assertion.split('.').nth(i)?;
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let claims = part(1);
    if let Some(claims) = &claims
        && claims.get("iss").and_then(Value::as_str) == Some(GITHUB_ISSUER)
    {
        if claims.get("aud").and_then(Value::as_str) != Some("api://AzureADTokenExchange") {
            return Some(Err((
                700212,
                "No matching federated identity record found for presented assertion audience. The audience must be api://AzureADTokenExchange.".to_owned(),
            )));
        }
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
        if exp <= now_secs {
            return Some(Err((
                700024,
                format!(
                    "Client assertion is not within its valid time range. Current time: {now_secs:.0}, assertion valid to: {exp:.0}. (mock: the GitHub OIDC token expired; mint one per token request)"
                ),
            )));
        }
        return Some(Ok(()));
    }
    let file = shared.config.federated_token_file.as_ref()?;
    let certificate = part(0).is_some_and(|h| h.contains_key("x5t") || h.contains_key("x5t#S256"));
    if certificate {
        return None;
    }
    let current = std::fs::read_to_string(file).unwrap_or_default();
    if !current.trim().is_empty() && current.trim() == assertion {
        Some(Ok(()))
    } else {
        Some(Err((
            700024,
            "Client assertion is not within its valid time range. (mock: it is not the federated token file's current content; the file was rotated since it was read)".to_owned(),
        )))
    }
}

/// The first non-empty value of `key` in a form-urlencoded body (Cloud Shell and IMDS posts).
fn form_field(body: &[u8], key: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}
