//! The Graph side of the mock: `POST /{version}/security/identities/identityAccounts/{id}/{action}`
//! and the 404 for every other path. Checks run in Graph's order: bearer token, per-token throttle,
//! latency, injected faults, scripted scenario ids, the body, then either the tenant's identity
//! and its linked account (when a tenant is served) or the support matrix; then a 200 in the
//! configured response shape. The reads (`reads.rs`) share this file's exchange, admission and
//! scripted answers.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::graph::model::{self, Action, Provider, ResponseShape};

use super::effect::Fate;
use super::log::{self, LoggedRequest};
use super::reply::{self, Ids};
use super::state::{Bearer, Service, Shared, Throttled};
use super::tenant::Refusal;
use super::throttle;

/// Graph answers `POST .../identityAccounts/{id}/{action}`.
pub(crate) async fn invoke_action(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    params: Result<RawPathParams, RawPathParamsRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut exchange = Exchange::new(&shared, &headers);
    let early = preliminary(&mut exchange, &method, params.as_ref().ok());
    wait_latency(&shared).await;
    let answer = match early {
        Some(answer) => answer,
        None => {
            let identity_account_id = params
                .as_ref()
                .ok()
                .and_then(|p| p.iter().find(|(key, _)| *key == "id").map(|(_, v)| v))
                .unwrap_or_default();
            decide(&mut exchange, identity_account_id, &body)
        }
    };
    exchange.finish(answer, &method, &uri, &body)
}

/// Every path the mock does not serve: 404 with a Graph error body.
pub(crate) async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let exchange = Exchange::new(&shared, &headers);
    wait_latency(&shared).await;
    let answer = exchange.error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        &format!(
            "Resource not found for the segment '{}'.",
            last_segment(&uri)
        ),
    );
    exchange.finish(answer, &method, &uri, &body)
}

/// One request in flight and what is known about it so far.
pub(crate) struct Exchange<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) now_ns: u64,
    ids: Ids,
    token: Option<&'a str>,
    inside_told_window: bool,
}

/// What to answer.
pub(crate) struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<String>,
    window_end_ns: Option<u64>,
}

impl Answer {
    /// A 200 with this JSON body.
    pub(crate) fn ok(body: Vec<u8>) -> Answer {
        Answer {
            status: StatusCode::OK,
            body,
            retry_after: None,
            window_end_ns: None,
        }
    }
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(shared: &'a Shared, headers: &'a HeaderMap) -> Exchange<'a> {
        Exchange {
            shared,
            now_ns: shared.now_ns(),
            ids: Ids::new(headers),
            token: bearer(headers),
            inside_told_window: false,
        }
    }

    /// Graph's error body, `{"error": {"code", "message", "innerError"}}`, with this status.
    pub(crate) fn error(&self, status: StatusCode, code: &str, message: &str) -> Answer {
        let date = log::graph_date(self.shared.wall(self.now_ns));
        let mut inner = json!({
            "date": date,
            "request-id": self.ids.request_id,
            "client-request-id": self.ids.client_request_id(),
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            inner["code"] = json!("429");
            inner["status"] = json!("429");
            inner["message"] = json!("Please retry after");
        }
        let body = json!({"error": {"code": code, "message": message, "innerError": inner}});
        Answer {
            status,
            body: reply::to_bytes(&body),
            retry_after: None,
            window_end_ns: None,
        }
    }

    fn throttled(&self, told: throttle::ToldWait, window_end_ns: u64) -> Answer {
        let mut answer = self.error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Please retry again later.",
        );
        answer.retry_after = Some(told.header);
        answer.window_end_ns = Some(window_end_ns);
        answer
    }

    /// Counts and logs the exchange, and turns the answer into a response.
    pub(crate) fn finish(
        self,
        answer: Answer,
        method: &Method,
        uri: &Uri,
        body: &Bytes,
    ) -> Response {
        let shared = self.shared;
        shared.count_graph(answer.status, self.inside_told_window);
        if shared.logging() {
            let body = (!body.is_empty()).then(|| {
                serde_json::from_slice(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                })
            });
            shared.log(LoggedRequest {
                t_ms: ms(self.now_ns),
                time: log::rfc3339_millis(shared.wall(self.now_ns)),
                method: method.to_string(),
                path: uri.path().to_owned(),
                query: uri.query().map(str::to_owned),
                status: answer.status.as_u16(),
                body,
                token: self
                    .token
                    .filter(|t| !t.is_empty())
                    .map(|t| shared.label(t)),
                client_request_id: self.ids.sent(),
                request_id: self.ids.request_id.clone(),
                retry_after: answer.retry_after.clone(),
                window_end_ms: answer.window_end_ns.map(ms),
                inside_told_window: self.inside_told_window,
            });
        }
        reply::json(
            answer.status,
            &self.ids,
            answer.body,
            answer.retry_after.as_deref(),
        )
    }
}

/// Checks made before the latency sleep: method, path, then [`admit`].
fn preliminary(
    exchange: &mut Exchange<'_>,
    method: &Method,
    params: Option<&RawPathParams>,
) -> Option<Answer> {
    if method != Method::POST {
        return Some(exchange.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            &format!("The HTTP method '{method}' is not allowed for invokeAction; use POST."),
        ));
    }
    let Some(params) = params else {
        return Some(exchange.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The path is not valid UTF-8 after percent-decoding.",
        ));
    };
    for (key, value) in params.iter() {
        let known = match key {
            super::ROOT => matches!(value, "beta" | "v1.0"),
            "action" => matches!(
                value,
                "microsoft.graph.security.invokeAction" | "invokeAction"
            ),
            _ => true,
        };
        if !known {
            return Some(exchange.error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("Resource not found for the segment '{value}'."),
            ));
        }
    }
    if let Some(answer) = admit(exchange, Service::Security) {
        return Some(answer);
    }
    // A token whose claims lack the action permission, as Graph answers it (issue 18).
    if exchange
        .token
        .is_some_and(super::delegated::lacks_action_permission)
    {
        return Some(exchange.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation: the token lacks SecurityIdentitiesActions.ReadWrite.All.",
        ));
    }
    None
}

/// The bearer token, then `service`'s per-token throttle and told windows.
pub(crate) fn admit(exchange: &mut Exchange<'_>, service: Service) -> Option<Answer> {
    match exchange
        .shared
        .check_bearer(exchange.token, exchange.now_ns)
    {
        Bearer::Accepted => {}
        Bearer::Missing => return Some(unauthenticated(exchange, "Access token is empty.")),
        Bearer::Unknown => {
            return Some(unauthenticated(
                exchange,
                "Access token validation failure. Invalid audience.",
            ));
        }
        Bearer::Expired => {
            return Some(unauthenticated(
                exchange,
                "Access token has expired or is not yet valid.",
            ));
        }
    }
    let token = exchange.token.unwrap_or_default();
    match exchange.shared.throttle(token, service, exchange.now_ns) {
        Throttled::Admit { inside_told_window } => {
            exchange.inside_told_window = inside_told_window;
            None
        }
        Throttled::Refuse {
            told,
            window_end_ns,
            inside_told_window,
        } => {
            exchange.inside_told_window = inside_told_window;
            Some(exchange.throttled(told, window_end_ns))
        }
    }
}

fn unauthenticated(exchange: &Exchange<'_>, message: &str) -> Answer {
    exchange.error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
    )
}

/// Checks made after the latency sleep: faults, scenarios, body, the tenant or the support
/// matrix; then success.
fn decide(exchange: &mut Exchange<'_>, identity_account_id: &str, body: &[u8]) -> Answer {
    let shared = exchange.shared;
    let scenario = Scenario::parse(identity_account_id);
    if let Some(answer) = fault_or_scenario(
        exchange,
        scenario,
        identity_account_id,
        Vocabulary::Security,
    ) {
        return answer;
    }
    let request = match ValidBody::parse(body) {
        Ok(request) => request,
        Err(message) => return exchange.error(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    // With a tenant, the account's own `actions` are the answer, not the documented matrix.
    // The check sees the tenant as it stands: effects that came due are applied first.
    shared.settle_effects();
    let checked = match shared.directory_mut() {
        Some(mut directory) => directory
            .check(
                identity_account_id,
                &request.account_id,
                request.provider,
                request.action,
            )
            .map(|()| {
                // Accepted: the sensor carries it out now, later, or never (issue 19).
                let fate = shared.accept_effect(
                    identity_account_id,
                    &request.account_id,
                    request.provider,
                    request.action,
                );
                if fate == Fate::Now {
                    let wall = shared.wall(shared.now_ns());
                    directory.apply(
                        identity_account_id,
                        &request.account_id,
                        request.provider,
                        request.action,
                        Some(wall),
                    );
                }
            })
            .map_err(|refusal| refused(exchange, refusal, identity_account_id, &request)),
        None => supported(request.action, request.provider)
            .map_err(|message| exchange.error(StatusCode::BAD_REQUEST, "BadRequest", &message)),
    };
    if let Err(answer) = checked {
        return answer;
    }
    let correlation =
        (scenario != Scenario::NullCorrelation).then(|| reply::new_uuid().to_string());
    shared.apply(identity_account_id, &request.account_id, request.action);
    Answer::ok(success_body(
        shared.config.response_shape,
        &request,
        correlation.as_deref(),
    ))
}

/// The tenant's refusal of an action, as Graph's error.
fn refused(
    exchange: &Exchange<'_>,
    refusal: Refusal,
    identity_account_id: &str,
    request: &ValidBody<'_>,
) -> Answer {
    match refusal {
        Refusal::UnknownIdentity => exchange.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!("The identity account '{identity_account_id}' was not found."),
        ),
        Refusal::NoSuchAccount => exchange.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The identity account '{identity_account_id}' has no {} account with the \
                 identifier '{}'.",
                request.provider, request.account_id
            ),
        ),
        // Graph's words for it (Entra's "Restricted management administrative units").
        Refusal::RestrictedManagement => exchange.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Target object is a member of a restricted management administrative unit and can \
             only be modified by administrators scoped to that administrative unit. Check that \
             you are assigned a role that has permission to perform the operation for this \
             restricted management administrative unit.",
        ),
        Refusal::NotOffered(offered) => exchange.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "The action {} is not offered for this account (offered: {}).",
                request.action,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ),
        ),
    }
}

/// Whose error codes a scripted answer uses: `/security`'s, or the directory's (`/users`,
/// `/roleManagement`), which has its own (`Request_ResourceNotFound`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vocabulary<'k> {
    Security,
    /// The key the request named, for the 404 message.
    Directory {
        key: &'k str,
    },
}

impl Vocabulary<'_> {
    fn service(self) -> Service {
        match self {
            Vocabulary::Security => Service::Security,
            Vocabulary::Directory { .. } => Service::Directory,
        }
    }
}

/// An injected fault, or the answer a scenario scripts for `key` (counted per key); `None`: go on.
pub(crate) fn fault_or_scenario(
    exchange: &mut Exchange<'_>,
    scenario: Scenario,
    key: &str,
    vocabulary: Vocabulary<'_>,
) -> Option<Answer> {
    let shared = exchange.shared;
    if let Some(status) = shared.draw_fault() {
        return Some(scripted(exchange, status, vocabulary));
    }
    if let Scenario::Status { status, first } = scenario {
        let applies = match first {
            None => true,
            Some(k) => shared.scenario_hit(key) <= k,
        };
        if applies {
            return Some(scripted(exchange, status, vocabulary));
        }
    }
    None
}

/// A scripted or injected failure with Graph's error body for that status.
fn scripted(exchange: &mut Exchange<'_>, status: StatusCode, vocabulary: Vocabulary<'_>) -> Answer {
    let shared = exchange.shared;
    if let Vocabulary::Directory { key } = vocabulary {
        match status.as_u16() {
            400 => {
                return exchange.error(status, "Request_BadRequest", "Invalid request.");
            }
            403 => {
                return exchange.error(
                    status,
                    "Authorization_RequestDenied",
                    "Insufficient privileges to complete the operation.",
                );
            }
            404 => {
                return exchange.error(status, "Request_ResourceNotFound", &not_found_message(key));
            }
            _ => {}
        }
    }
    let (code, message) = scripted_error(status);
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let told = throttle::tell(
                shared.config.retry_after_format,
                std::time::Duration::from_secs(1),
                shared.wall(exchange.now_ns),
            );
            let token = exchange.token.unwrap_or_default();
            let window_end_ns =
                shared.watch_window(token, vocabulary.service(), exchange.now_ns, told.told);
            exchange.throttled(told, window_end_ns)
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let mut answer = exchange.error(status, code, message);
            answer.retry_after = shared.config.fault_retry_after.map(|wait| {
                throttle::tell(
                    shared.config.retry_after_format,
                    wait,
                    shared.wall(exchange.now_ns),
                )
                .header
            });
            answer
        }
        _ => exchange.error(status, code, message),
    }
}

fn scripted_error(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("BadRequest", "Invalid request."),
        401 => (
            "InvalidAuthenticationToken",
            "Access token validation failure.",
        ),
        403 => (
            "accessDenied",
            "Insufficient privileges to complete the operation.",
        ),
        404 => ("itemNotFound", "The identity account was not found."),
        409 => ("conflict", "The request conflicts with the current state."),
        429 => ("TooManyRequests", "Please retry again later."),
        500 => ("generalException", "An unspecified error has occurred."),
        502 => (
            "badGateway",
            "The upstream server returned an invalid response.",
        ),
        503 => (
            "serviceNotAvailable",
            "The service is temporarily unavailable. Try the request again after a delay.",
        ),
        504 => (
            "gatewayTimeout",
            "The server, while acting as a proxy, did not receive a timely response from the upstream server.",
        ),
        _ => ("unknownError", "A scripted error."),
    }
}

/// The directory's 404 message for a key that names nothing.
pub(crate) fn not_found_message(key: &str) -> String {
    format!(
        "Resource '{key}' does not exist or one of its queried reference-property objects are not \
         present."
    )
}

pub(crate) async fn wait_latency(shared: &Shared) {
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
}

/// The token from `Authorization: Bearer <token>`; `Some("")` for a header without one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(token.trim())
    } else {
        Some("")
    }
}

fn last_segment(uri: &Uri) -> &str {
    uri.path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Graph refuses what Microsoft does not document (SPEC section 1).
fn supported(action: Action, provider: Provider) -> Result<(), String> {
    if provider == Provider::EntraId {
        return Err("EntraID actions are not yet supported".to_owned());
    }
    if model::is_documented(action, provider) {
        Ok(())
    } else {
        Err(format!(
            "The action {action} is not supported for identity provider {provider}"
        ))
    }
}

fn success_body(
    shape: ResponseShape,
    request: &ValidBody<'_>,
    correlation: Option<&str>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DocsFields<'a> {
        account_id: &'a str,
        action: &'a str,
        provider: &'a str,
        correlation_id: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Docs<'a> {
        value: DocsFields<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Schema<'a> {
        account_id: &'a str,
        action: &'a str,
        identity_provider: &'a str,
        correlation_id: Option<&'a str>,
    }
    match shape {
        ResponseShape::Docs => reply::to_bytes(&Docs {
            value: DocsFields {
                account_id: &request.account_id,
                action: request.action.as_str(),
                provider: request.provider.as_str(),
                correlation_id: correlation,
            },
        }),
        ResponseShape::Schema => reply::to_bytes(&Schema {
            account_id: &request.account_id,
            action: request.action.as_str(),
            identity_provider: request.provider.as_str(),
            correlation_id: correlation,
        }),
    }
}

// --- scenario ids -------------------------------------------------------------------------------

/// What a scripted identity account id asks of the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// `http{NNN}-...`: always answer NNN; `http{NNN}x{K}-...`: answer NNN for the first K requests.
    Status {
        status: StatusCode,
        first: Option<u32>,
    },
    /// `nullcorr-...`: succeed with `"correlationId": null`.
    NullCorrelation,
    Normal,
}

impl Scenario {
    pub(crate) fn parse(id: &str) -> Scenario {
        if id.starts_with("nullcorr-") {
            return Scenario::NullCorrelation;
        }
        let Some(rest) = id.strip_prefix("http") else {
            return Scenario::Normal;
        };
        let Some((digits, rest)) = rest.split_at_checked(3) else {
            return Scenario::Normal;
        };
        let Some(status) = digits
            .parse::<u16>()
            .ok()
            .filter(|n| (400..=599).contains(n) && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| StatusCode::from_u16(n).ok())
        else {
            return Scenario::Normal;
        };
        if rest.starts_with('-') {
            return Scenario::Status {
                status,
                first: None,
            };
        }
        let Some((count, _)) = rest.strip_prefix('x').and_then(|r| r.split_once('-')) else {
            return Scenario::Normal;
        };
        match count.parse::<u32>() {
            Ok(k) if count.bytes().all(|b| b.is_ascii_digit()) => Scenario::Status {
                status,
                first: Some(k),
            },
            _ => Scenario::Normal,
        }
    }
}

// --- body validation ----------------------------------------------------------------------------

/// A request body that passed validation. Borrowed from the request bytes where it can be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ValidBody<'a> {
    pub(crate) account_id: Cow<'a, str>,
    pub(crate) action: Action,
    pub(crate) provider: Provider,
}

impl<'a> ValidBody<'a> {
    /// Parses and checks the body, with a message saying what is wrong.
    pub(crate) fn parse(body: &'a [u8]) -> Result<ValidBody<'a>, String> {
        let fields: BodyFields<'a> = serde_json::from_slice(body).map_err(|e| {
            if e.is_data() {
                "The request body must be a JSON object with accountId, action and identityProvider."
                    .to_owned()
            } else {
                format!("The request body is not valid JSON: {e}.")
            }
        })?;
        let account_id = match fields.account_id {
            Some(JsonField::Text(text)) if !text.is_empty() => text,
            Some(JsonField::Text(_)) => return Err("accountId must not be empty.".to_owned()),
            Some(JsonField::Other(kind)) => {
                return Err(format!("accountId must be a string, not {kind}."));
            }
            None => return Err("The request body is missing accountId.".to_owned()),
        };
        let action = enum_field(fields.action, "action", |text| {
            Action::ALL.into_iter().find(|a| a.as_str() == text)
        })?;
        let provider = enum_field(fields.identity_provider, "identityProvider", |text| {
            Provider::ALL.into_iter().find(|p| p.as_str() == text)
        })?;
        Ok(ValidBody {
            account_id,
            action,
            provider,
        })
    }
}

fn enum_field<T: EnumValues>(
    field: Option<JsonField<'_>>,
    name: &str,
    lookup: impl Fn(&str) -> Option<T>,
) -> Result<T, String> {
    match field {
        Some(JsonField::Text(text)) => lookup(&text).ok_or_else(|| {
            format!(
                "The value '{text}' is not valid for {name}; expected one of {}.",
                T::values()
            )
        }),
        Some(JsonField::Other(kind)) => Err(format!("{name} must be a string, not {kind}.")),
        None => Err(format!("The request body is missing {name}.")),
    }
}

/// The wire spellings of an enum, for error messages.
trait EnumValues {
    fn values() -> String;
}

impl EnumValues for Action {
    fn values() -> String {
        Action::ALL.map(Action::as_str).join(", ")
    }
}

impl EnumValues for Provider {
    fn values() -> String {
        Provider::ALL.map(Provider::as_str).join(", ")
    }
}

/// The three fields of the body, each either a string or a note of what else it was. Unknown
/// fields are skipped. Deserialized without building a `serde_json::Value`, to keep the hot path
/// free of allocations.
struct BodyFields<'a> {
    account_id: Option<JsonField<'a>>,
    action: Option<JsonField<'a>>,
    identity_provider: Option<JsonField<'a>>,
}

enum JsonField<'a> {
    Text(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for BodyFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = BodyFields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = BodyFields {
                    account_id: None,
                    action: None,
                    identity_provider: None,
                };
                while let Some(key) = map.next_key::<JsonField<'de>>()? {
                    let slot = match &key {
                        JsonField::Text(name) => match name.as_ref() {
                            "accountId" => &mut fields.account_id,
                            "action" => &mut fields.action,
                            "identityProvider" => &mut fields.identity_provider,
                            _ => {
                                map.next_value::<IgnoredAny>()?;
                                continue;
                            }
                        },
                        JsonField::Other(_) => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<JsonField<'de>>()?);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = JsonField<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonField::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonField::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonField::Text(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(JsonField::Other("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(JsonField::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(JsonField::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(JsonField::Other("a number"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonField::Other("null"))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonField::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonField::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonField::Other("an object"))
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(n: u16) -> StatusCode {
        StatusCode::from_u16(n).unwrap()
    }

    #[test]
    fn parses_scenario_ids() {
        assert_eq!(
            Scenario::parse("http404-x"),
            Scenario::Status {
                status: status(404),
                first: None
            }
        );
        assert_eq!(
            Scenario::parse("http429x2-abc"),
            Scenario::Status {
                status: status(429),
                first: Some(2)
            }
        );
        assert_eq!(
            Scenario::parse("http503x10-"),
            Scenario::Status {
                status: status(503),
                first: Some(10)
            }
        );
        assert_eq!(Scenario::parse("nullcorr-1"), Scenario::NullCorrelation);
        for normal in [
            "S-1-5-21",
            "http404",
            "http40-x",
            "http200-x",
            "http4044-x",
            "http429x-a",
            "http429x2",
            "http429y2-a",
            "http+40-x",
            "http429x+2-a",
            "HTTP404-x",
            "",
        ] {
            assert_eq!(Scenario::parse(normal), Scenario::Normal, "{normal}");
        }
    }

    #[test]
    fn accepts_a_valid_body_and_borrows_the_account() {
        let body = br#"{"accountId":"S-1","action":"disable","identityProvider":"activeDirectory","extra":[1,{"a":2}]}"#;
        let parsed = ValidBody::parse(body).unwrap();
        assert!(matches!(parsed.account_id, Cow::Borrowed("S-1")));
        assert_eq!(parsed.action, Action::Disable);
        assert_eq!(parsed.provider, Provider::ActiveDirectory);
        let escaped = br#"{"accountId":"a\"b","action":"enable","identityProvider":"okta"}"#;
        assert_eq!(ValidBody::parse(escaped).unwrap().account_id, "a\"b");
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (
                br#"{"action":"disable","identityProvider":"okta"}"#,
                "missing accountId",
            ),
            (
                br#"{"accountId":"","action":"disable","identityProvider":"okta"}"#,
                "must not be empty",
            ),
            (
                br#"{"accountId":5,"action":"disable","identityProvider":"okta"}"#,
                "accountId must be a string, not a number",
            ),
            (
                br#"{"accountId":"a","action":"Disable","identityProvider":"okta"}"#,
                "'Disable' is not valid for action",
            ),
            (
                br#"{"accountId":"a","identityProvider":"okta"}"#,
                "missing action",
            ),
            (
                br#"{"accountId":"a","action":"disable","identityProvider":"AD"}"#,
                "not valid for identityProvider; expected one of entraID, activeDirectory, okta",
            ),
            (
                br#"{"accountId":"a","action":"disable","identityProvider":null}"#,
                "identityProvider must be a string, not null",
            ),
        ];
        for (body, wanted) in cases {
            let message = ValidBody::parse(body).unwrap_err();
            assert!(
                message.contains(wanted),
                "{} gave {message:?}, wanted {wanted:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn applies_the_support_matrix() {
        assert_eq!(
            supported(Action::Disable, Provider::EntraId).unwrap_err(),
            "EntraID actions are not yet supported"
        );
        assert_eq!(
            supported(Action::RevokeAllSessions, Provider::ActiveDirectory).unwrap_err(),
            "The action revokeAllSessions is not supported for identity provider activeDirectory"
        );
        assert!(supported(Action::ForcePasswordReset, Provider::ActiveDirectory).is_ok());
    }

    #[test]
    fn reads_the_bearer_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&headers), Some(""));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some(""));
    }
}
