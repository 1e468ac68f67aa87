//! The delegated side of the mock's Entra (issue 18): `POST /{tenant}/oauth2/v2.0/devicecode`
//! with a scripted sequence of poll answers (`authorization_pending`, `slow_down`, then approval,
//! decline, expiry or a bad code), `GET /{tenant}/oauth2/v2.0/authorize` with PKCE (the verifier
//! is checked when the code is redeemed at `/token`), refresh-token rotation (a refresh token
//! works once: the old one is refused), and access tokens that carry `scp` (delegated) or
//! `roles` (client credentials, when configured) so that a client can read what they allow.
//! invokeAction answers 403 to a token whose claims lack SecurityIdentitiesActions.ReadWrite.All.
//!
//! Tokens are unsigned JWTs (`alg: none`): the client reads them, Graph's real ones it may not
//! verify either. Codes and tokens are never logged: only the grant type and client id are.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::reply;
use super::sessions::{Code, Device, Grant};
use super::state::Shared;

/// The action permission whose absence from a token's claims gets a 403 from invokeAction.
pub(crate) const ACTION_PERMISSION: &str = "SecurityIdentitiesActions.ReadWrite.All";

/// How the mock's delegated sign-in behaves. `Default`: every sign-in is approved at once.
#[derive(Debug, Clone)]
pub struct SignInMock {
    /// The UPN delegated tokens are issued to (`preferred_username`, `upn`).
    pub user: String,
    /// The delegated permissions granted (`scope` and `scp`); `None`: what was asked for.
    pub delegated_permissions: Option<Vec<String>>,
    /// The `roles` of client-credentials tokens; `None`: opaque tokens (`mock-at-...`), as before.
    pub app_roles: Option<Vec<String>>,
    pub device_code: DeviceCodeScript,
    pub authorize: AuthorizeScript,
    /// Whether a renewal's answer carries a new refresh token (Entra's always do).
    pub rotate_refresh_tokens: bool,
}

impl Default for SignInMock {
    fn default() -> SignInMock {
        SignInMock {
            user: "responder@contoso.com".to_owned(),
            delegated_permissions: None,
            app_roles: None,
            device_code: DeviceCodeScript::default(),
            authorize: AuthorizeScript::Approve,
            rotate_refresh_tokens: true,
        }
    }
}

/// The answers to a device code's polls, in order, then `end` for every poll after them.
#[derive(Debug, Clone)]
pub struct DeviceCodeScript {
    pub polls: Vec<Poll>,
    pub end: Poll,
    /// `interval` in the `/devicecode` answer, seconds.
    pub interval: u64,
    /// `expires_in` in the `/devicecode` answer, seconds.
    pub expires_in: u64,
}

impl Default for DeviceCodeScript {
    fn default() -> DeviceCodeScript {
        DeviceCodeScript {
            polls: Vec::new(),
            end: Poll::Approve,
            interval: 5,
            expires_in: 900,
        }
    }
}

/// One answer to a device code poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Pending,
    SlowDown,
    Approve,
    Decline,
    Expire,
    BadCode,
}

/// What `/authorize` does with a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizeScript {
    /// Redirects with a code and the state it was given.
    Approve,
    /// Redirects with a code and a state that is not the one given (what a forged redirect is).
    WrongState,
    /// Redirects with `error=access_denied`.
    Deny,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> (StatusCode, Value) {
    (
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
        }),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, reply::to_bytes(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn check_client(shared: &Shared, client_id: Option<&str>) -> Result<String, (StatusCode, Value)> {
    let client_id = client_id.ok_or_else(|| {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    })?;
    if let Some(expected) = &shared.config.client_id
        && client_id != expected
    {
        return Err(entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        ));
    }
    Ok(client_id.to_owned())
}

fn tenant_of(params: &Result<RawPathParams, RawPathParamsRejection>) -> String {
    params
        .as_ref()
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(key, _)| *key == super::ROOT)
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_default()
}

/// Routes `/{tenant}/oauth2/v2.0/devicecode`.
pub(crate) async fn device_code_route(
    State(shared): State<Arc<Shared>>,
    method: Method,
    params: Result<RawPathParams, RawPathParamsRejection>,
    body: Bytes,
) -> Response {
    shared.count_token();
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    device_code(&shared, &tenant_of(&params), &form)
}

/// Routes `/{tenant}/oauth2/v2.0/authorize`.
pub(crate) async fn authorize_route(
    State(shared): State<Arc<Shared>>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    uri: Uri,
) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    authorize(&shared, &tenant_of(&params), &query)
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
fn device_code(shared: &Shared, tenant: &str, form: &HashMap<String, String>) -> Response {
    let script = &shared.config.sign_in.device_code;
    let client_id = match check_client(shared, form.get("client_id").map(String::as_str)) {
        Ok(client_id) => client_id,
        Err((status, body)) => return json_response(status, &body),
    };
    let scope = form.get("scope").cloned().unwrap_or_default();
    shared.sign_in.device_codes.fetch_add(1, Ordering::Relaxed);
    let device_code = format!("mock-dc-{}", reply::new_uuid());
    let user_code = reply::new_uuid().simple().to_string()[..8].to_ascii_uppercase();
    lock(&shared.sign_in.devices).insert(
        device_code.clone(),
        Device {
            polls: 0,
            grant: Grant {
                client_id,
                scope,
                tenant: tenant.to_owned(),
            },
        },
    );
    json_response(
        StatusCode::OK,
        &json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": script.expires_in,
            "interval": script.interval,
            "message": format!("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code {user_code} to authenticate."),
        }),
    )
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: checks the request, then redirects to `redirect_uri`.
fn authorize(shared: &Shared, tenant: &str, query: &HashMap<String, String>) -> Response {
    let bad = |description: &str| {
        json_response(
            StatusCode::BAD_REQUEST,
            &entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                description,
            )
            .1,
        )
    };
    let client_id = match check_client(shared, query.get("client_id").map(String::as_str)) {
        Ok(client_id) => client_id,
        Err((status, body)) => return json_response(status, &body),
    };
    if query.get("response_type").map(String::as_str) != Some("code") {
        return bad("response_type must be code.");
    }
    let Some(redirect_uri) = query.get("redirect_uri") else {
        return bad("The request must contain the parameter 'redirect_uri'.");
    };
    // A public client's loopback redirect: http://localhost (any port), as registered.
    let loopback = ["http://localhost", "http://127.0.0.1"]
        .iter()
        .any(|prefix| {
            redirect_uri.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
            })
        });
    if !loopback {
        return bad(
            "The redirect URI does not match the redirect URIs configured for the application (AADSTS50011).",
        );
    }
    let (Some(challenge), Some("S256")) = (
        query.get("code_challenge"),
        query.get("code_challenge_method").map(String::as_str),
    ) else {
        return bad(
            "Proof Key for Code Exchange is required: code_challenge with code_challenge_method S256 (AADSTS9002325).",
        );
    };
    let Some(state) = query.get("state") else {
        return bad("This client sends a state: it is missing.");
    };
    shared
        .sign_in
        .authorizations
        .fetch_add(1, Ordering::Relaxed);
    let mut target = match reqwest::Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => return bad("The redirect URI is not a URL."),
    };
    match shared.config.sign_in.authorize {
        AuthorizeScript::Deny => {
            target
                .query_pairs_mut()
                .append_pair("error", "access_denied")
                .append_pair(
                    "error_description",
                    "AADSTS65004: User declined to consent to access the app.",
                )
                .append_pair("state", state);
        }
        script => {
            let code = format!("mock-code-{}", reply::new_uuid());
            lock(&shared.sign_in.codes).insert(
                code.clone(),
                Code {
                    challenge: challenge.clone(),
                    redirect_uri: redirect_uri.clone(),
                    grant: Grant {
                        client_id,
                        scope: query.get("scope").cloned().unwrap_or_default(),
                        tenant: tenant.to_owned(),
                    },
                },
            );
            let state = if script == AuthorizeScript::WrongState {
                format!("forged-{state}")
            } else {
                state.clone()
            };
            target
                .query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", &state);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(target.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Whether `grant_type` is one of the delegated grants served here.
pub(crate) fn is_delegated_grant(grant_type: Option<&str>) -> bool {
    matches!(
        grant_type,
        Some(
            "urn:ietf:params:oauth:grant-type:device_code" | "authorization_code" | "refresh_token"
        )
    )
}

/// `POST /token` for the device code, authorization code and refresh token grants.
pub(crate) fn token(
    shared: &Shared,
    form: &HashMap<String, String>,
    now_ns: u64,
) -> (StatusCode, Value) {
    let get = |name: &str| form.get(name).map(String::as_str);
    let client_id = match check_client(shared, get("client_id")) {
        Ok(client_id) => client_id,
        Err(error) => return error,
    };
    let invalid_grant = |code: u32, description: &str| {
        entra_error(StatusCode::BAD_REQUEST, "invalid_grant", code, description)
    };
    let grant = match get("grant_type") {
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            shared.sign_in.device_polls.fetch_add(1, Ordering::Relaxed);
            let script = &shared.config.sign_in.device_code;
            let mut devices = lock(&shared.sign_in.devices);
            let Some(device) = get("device_code").and_then(|code| devices.get_mut(code)) else {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "bad_verification_code",
                    70019,
                    "The device code is not recognised.",
                );
            };
            let answer = script
                .polls
                .get(device.polls)
                .copied()
                .unwrap_or(script.end);
            device.polls += 1;
            match answer {
                Poll::Pending => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "authorization_pending",
                        70016,
                        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    );
                }
                Poll::SlowDown => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "slow_down",
                        70016,
                        "Polling too fast: slow down.",
                    );
                }
                Poll::Decline => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "authorization_declined",
                        70018,
                        "The user declined the sign-in.",
                    );
                }
                Poll::Expire => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "expired_token",
                        70020,
                        "The provided code has expired: the sign-in was not completed in time.",
                    );
                }
                Poll::BadCode => {
                    return entra_error(
                        StatusCode::BAD_REQUEST,
                        "bad_verification_code",
                        70019,
                        "The device code is not recognised.",
                    );
                }
                Poll::Approve => {}
            }
            let Some(device) = get("device_code").and_then(|code| devices.remove(code)) else {
                return invalid_grant(70000, "The device code was already redeemed.");
            };
            device.grant
        }
        Some("authorization_code") => {
            let Some(code) = get("code").and_then(|code| lock(&shared.sign_in.codes).remove(code))
            else {
                return invalid_grant(
                    70000,
                    "The provided authorization code is invalid or was already redeemed.",
                );
            };
            let verifier = get("code_verifier").unwrap_or_default();
            let computed = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                verifier.as_bytes(),
            ));
            if computed != code.challenge {
                return invalid_grant(
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                );
            }
            if get("redirect_uri") != Some(code.redirect_uri.as_str()) {
                return invalid_grant(
                    500112,
                    "The reply address does not match the one used to get the authorization code.",
                );
            }
            code.grant
        }
        Some("refresh_token") => {
            shared
                .sign_in
                .refresh_grants
                .fetch_add(1, Ordering::Relaxed);
            let used = get("refresh_token")
                .and_then(|token| lock(&shared.sign_in.refresh_tokens).remove(token));
            let Some(grant) = used else {
                shared
                    .sign_in
                    .stale_refresh_tokens
                    .fetch_add(1, Ordering::Relaxed);
                return invalid_grant(
                    70000,
                    "The refresh token was already used or was never issued: present the newest one.",
                );
            };
            if !shared.config.sign_in.rotate_refresh_tokens
                && let Some(token) = get("refresh_token")
            {
                lock(&shared.sign_in.refresh_tokens).insert(token.to_owned(), grant.clone());
            }
            grant
        }
        _ => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "Unsupported grant type.",
            );
        }
    };
    if grant.client_id != client_id {
        return invalid_grant(70000, "The grant was issued to another client.");
    }
    issue_delegated(
        shared,
        &grant,
        get("grant_type") == Some("refresh_token"),
        now_ns,
    )
}

/// A delegated token answer: access token (with `scp`), id token, refresh token, `scope`.
fn issue_delegated(
    shared: &Shared,
    grant: &Grant,
    renewal: bool,
    now_ns: u64,
) -> (StatusCode, Value) {
    let config = &shared.config.sign_in;
    let asked: Vec<String> = grant
        .scope
        .split_whitespace()
        .map(|s| s.rsplit('/').next().unwrap_or(s).to_owned())
        .filter(|s| !matches!(s.as_str(), "offline_access" | "openid" | "profile"))
        .collect();
    let granted = config.delegated_permissions.clone().unwrap_or(asked);
    let scope = granted.join(" ");
    let lifetime = shared.config.token_lifetime;
    let now = shared.wall(now_ns).as_secs();
    let user = &config.user;
    let claims = json!({
        "aud": "https://graph.microsoft.com",
        "tid": grant.tenant,
        "appid": grant.client_id,
        "oid": reply::new_uuid().to_string(),
        "upn": user,
        "preferred_username": user,
        "name": user.split('@').next().unwrap_or(user),
        "scp": scope,
        "iat": now,
        "exp": now + lifetime.as_secs(),
    });
    let access_token = unsigned_jwt(&claims);
    shared.remember_token(access_token.clone(), now_ns, lifetime);
    let id_token = unsigned_jwt(&json!({
        "tid": grant.tenant,
        "aud": grant.client_id,
        "preferred_username": user,
        "name": user.split('@').next().unwrap_or(user),
    }));
    let mut body = json!({
        "token_type": "Bearer",
        "scope": format!("{scope} offline_access openid profile"),
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": access_token,
        "id_token": id_token,
    });
    if !renewal || config.rotate_refresh_tokens {
        let refresh_token = format!("mock-rt-{}", reply::new_uuid());
        lock(&shared.sign_in.refresh_tokens).insert(refresh_token.clone(), grant.clone());
        body["refresh_token"] = Value::String(refresh_token);
    }
    (StatusCode::OK, body)
}

/// A client-credentials access token: with `roles` when configured, else `None` (the caller
/// issues its opaque `mock-at-...` token, as before).
pub(crate) fn app_token(
    shared: &Shared,
    tenant: &str,
    client_id: &str,
    now_ns: u64,
) -> Option<String> {
    let roles = shared.config.sign_in.app_roles.as_ref()?;
    let now = shared.wall(now_ns).as_secs();
    Some(unsigned_jwt(&json!({
        "aud": "https://graph.microsoft.com",
        "tid": tenant,
        "appid": client_id,
        "oid": reply::new_uuid().to_string(),
        "roles": roles,
        "iat": now,
        "exp": now + shared.config.token_lifetime.as_secs(),
    })))
}

/// `header.claims.signature` with `alg: none`; the signature part is a fresh `mock-at-` id, so
/// every token is distinct and tests that look for leaked `mock-at-` tokens find these too.
fn unsigned_jwt(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(reply::to_bytes(claims));
    format!("{header}.{claims}.mock-at-{}", reply::new_uuid())
}

/// Graph's answer to an action sent with a token whose claims do not carry the action
/// permission: 403, as Graph gives it. Opaque tokens (no claims) are let through.
pub(crate) fn lacks_action_permission(token: &str) -> bool {
    let Some(claims) = crate::graph::permissions::claims(token) else {
        return false;
    };
    let holds = |list: &str| {
        list.split_whitespace()
            .any(|p| p.eq_ignore_ascii_case(ACTION_PERMISSION))
    };
    match (
        claims.get("roles").and_then(Value::as_array),
        claims.get("scp").and_then(Value::as_str),
    ) {
        (Some(roles), _) => !roles.iter().filter_map(Value::as_str).any(holds),
        (None, Some(scp)) => !holds(scp),
        (None, None) => false,
    }
}
