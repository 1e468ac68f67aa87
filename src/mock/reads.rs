//! The reads a lookup makes (SPEC section 8), served from the tenant, and only when there is one:
//!
//! - `GET /{v}/security/identities/identityAccounts`: pages of `page_size` in the tenant's order,
//!   each but the last with an absolute `@odata.nextLink` (`http://{the Host the client
//!   used}/{v}/security/identities/identityAccounts?$skiptoken=N`); or, with
//!   `$filter=onPremisesSecurityIdentifier eq '{sid}'`, the matches in one `value` array.
//! - `GET /{v}/security/identities/identityAccounts/{id}`: one identity.
//! - `GET /{v}/users/{object id | upn}` and `GET /{v}/users('{upn}')`: `id`, `userPrincipalName`,
//!   `displayName`, and `onPremisesSecurityIdentifier` when `$select` names it.
//! - `GET /{v}/roleManagement/directory/roleAssignments?$filter=roleDefinitionId eq '{id}'` (or
//!   `principalId eq '{id}'`, Microsoft's other example), optionally `&$expand=principal` (a
//!   role-assignable group comes back as a group).
//! - Issue 20's guard reads, paged by `page_size` with `$skiptoken` links:
//!   `roleEligibilityScheduleInstances` (its `roleDefinitionId` filter required,
//!   `$expand=principal`), `roleDefinitions` (beta's `isPrivileged eq true`; 400 on v1.0, which
//!   has no such property), `groups/{id}/transitiveMembers`, PIM for Groups
//!   `eligibilityScheduleInstances` (its `groupId` filter required), `directory/administrativeUnits`
//!   and `.../{id}/members`; each answered 403 when its permission is in `denied_permissions`.
//!
//! Only what Microsoft documents is accepted: any other `$filter`, and query options the resource
//! does not document (`$top`, `$count`, `$orderby`, ...), are answered 400, so a client that leans
//! on undocumented behaviour fails here rather than against the real service. `$select` is
//! accepted; on identityAccounts it is ignored (whole objects come back).
//!
//! A read goes through what an action does: method and version, bearer token, the per-token
//! throttle of its service (identityAccounts with invokeAction; `/users` and `/roleManagement`
//! together, apart), latency, injected faults and scenario keys (`http429x1-...` as an identity
//! id or a user key; each kind of read counts its own hits), then the answer. Identities come in
//! the configured response shape: the docs' (`value` around a single object, `provider` with
//! PascalCase values) or the schema's (bare, `identityProvider`, camelCase). Users and role
//! assignments are always bare, as Graph's directory answers are.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{MethodRouter, any};
use serde::Serialize;

use crate::graph::identity::{Identity, LinkedAccount};
use crate::graph::model::{Provider, ResponseShape};

use super::graph::{
    self, Answer, Exchange, Scenario, Vocabulary, admit, fault_or_scenario, not_found_message,
    wait_latency,
};
use super::reply;
use super::state::{ReadKind, Service, Shared};
use super::tenant::privileged::{List, ListPage, principal};
use super::tenant::{Directory, SESSIONS_VALID_FROM_AT_START};

/// The message Graph gives for `/users/$x@y.com` (microsoftgraph/msgraph-sdk-dotnet#2635).
const DOLLAR_SEGMENT: &str = "The request URI is not valid. Since the segment 'users' refers to a \
     collection, this must be the last segment in the request URI or it must be followed by an \
     function or action that can be bound to it otherwise all intermediate segments must refer \
     to a single resource.";

/// OData's system query options: an unsupported one is refused, while other names are custom
/// options, which Graph ignores.
const SYSTEM_OPTIONS: [&str; 17] = [
    "filter",
    "select",
    "expand",
    "orderby",
    "top",
    "skip",
    "skiptoken",
    "count",
    "search",
    "format",
    "compute",
    "apply",
    "levels",
    "index",
    "schemaversion",
    "deltatoken",
    "id",
];

/// The handler of a read `route`: `GET .../security/identities/identityAccounts`,
/// `.../identityAccounts/{id}`, `.../users/{key}` or `.../roleManagement/directory/roleAssignments`.
pub(crate) fn read_route(route: Route) -> MethodRouter<Arc<Shared>> {
    any(
        move |State(shared): State<Arc<Shared>>,
              method: Method,
              uri: Uri,
              params: Result<RawPathParams, RawPathParamsRejection>,
              headers: HeaderMap,
              body: Bytes| async move {
            serve(&shared, route, method, uri, params, headers, body).await
        },
    )
}

/// `GET .../users('{upn}')`; any other single segment after the version is not found.
pub(crate) async fn get_user_by_key(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    params: Result<RawPathParams, RawPathParamsRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_users = params
        .as_ref()
        .ok()
        .and_then(|p| param(p, "resource"))
        .is_some_and(|resource| paren_key(resource).is_some());
    if !is_users {
        return graph::not_found(State(shared), method, uri, headers, body).await;
    }
    serve(
        &shared,
        Route::UserByKey,
        method,
        uri,
        params,
        headers,
        body,
    )
    .await
}

/// Which read a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    IdentityList,
    IdentityGet,
    /// `users/{key}`
    User,
    /// `users('{key}')`
    UserByKey,
    RoleAssignments,
    /// Issue 20: `roleEligibilityScheduleInstances`, `roleDefinitions`,
    /// `groups/{id}/transitiveMembers`, PIM for Groups `eligibilityScheduleInstances`,
    /// `directory/administrativeUnits` and `.../{id}/members`.
    RoleEligibility,
    RoleDefinitions,
    GroupMembers,
    GroupEligibility,
    Units,
    UnitMembers,
}

impl Route {
    fn service(self) -> Service {
        match self {
            Route::IdentityList | Route::IdentityGet => Service::Security,
            _ => Service::Directory,
        }
    }
}

/// A read, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    ListPage {
        skip: usize,
    },
    SidFilter {
        sid: String,
    },
    Identity {
        id: String,
    },
    User {
        key: String,
        select_sid: bool,
    },
    /// A user with `$select` naming `accountEnabled` or `signInSessionsValidFromDateTime`: the
    /// state an action changes (SPEC section 10).
    UserState {
        key: String,
    },
    RoleAssignments {
        filter: Option<RoleFilter>,
        expand: bool,
    },
    /// One of issue 20's lists, from entry `skip`.
    Privileged {
        list: List,
        skip: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RoleFilter {
    Role(String),
    Principal(String),
}

/// A read refused with 400, once the request has been admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invalid {
    code: &'static str,
    message: String,
}

impl Invalid {
    fn bad_request(message: String) -> Invalid {
        Invalid {
            code: "BadRequest",
            message,
        }
    }
}

impl Read {
    fn kind(&self) -> ReadKind {
        match self {
            Read::ListPage { .. } => ReadKind::ListPage,
            Read::SidFilter { .. } => ReadKind::SidFilter,
            Read::Identity { .. } => ReadKind::IdentityGet,
            Read::User { .. } | Read::UserState { .. } => ReadKind::User,
            Read::RoleAssignments { .. } => ReadKind::RoleAssignments,
            Read::Privileged { .. } => ReadKind::Privileged,
        }
    }

    /// What a path and query ask for. `key` is the route's percent-decoded `{id}`, `{key}` or
    /// `{resource}` segment.
    fn parse(route: Route, key: Option<&str>, query: Option<&str>) -> Result<Read, Invalid> {
        let key = key.unwrap_or_default();
        match route {
            Route::IdentityList => {
                let options = QueryOptions::parse(
                    query,
                    &["filter", "select", "skiptoken"],
                    "identityAccounts",
                    "Microsoft documents only $filter (on onPremisesSecurityIdentifier) and \
                     $select for it",
                )?;
                if let Some(filter) = options.filter {
                    return match eq_filter(&filter) {
                        Some((name, sid))
                            if name.eq_ignore_ascii_case("onPremisesSecurityIdentifier") =>
                        {
                            Ok(Read::SidFilter { sid })
                        }
                        _ => Err(Invalid::bad_request(format!(
                            "The filter '{filter}' is not supported on identityAccounts: the only \
                             documented filter is onPremisesSecurityIdentifier eq '{{sid}}'."
                        ))),
                    };
                }
                let skip = match options.skiptoken {
                    None => 0,
                    Some(token) => token.trim().parse().map_err(|_| {
                        Invalid::bad_request(format!(
                            "The $skiptoken '{token}' is not valid: follow @odata.nextLink as \
                             given."
                        ))
                    })?,
                };
                Ok(Read::ListPage { skip })
            }
            Route::IdentityGet => {
                QueryOptions::parse(
                    query,
                    &["select"],
                    "an identity account",
                    "Microsoft documents only $select for it",
                )?;
                Ok(Read::Identity { id: key.to_owned() })
            }
            Route::User | Route::UserByKey => {
                let options =
                    QueryOptions::parse(query, &["select", "expand"], "a user", "use $select")?;
                let key = if route == Route::User {
                    if key.starts_with('$') {
                        return Err(Invalid {
                            code: "Request_BadRequest",
                            message: DOLLAR_SEGMENT.to_owned(),
                        });
                    }
                    key.to_owned()
                } else {
                    match paren_key(key) {
                        Some(Ok(key)) => key,
                        _ => {
                            return Err(Invalid {
                                code: "Request_BadRequest",
                                message: format!(
                                    "The key in '{key}' is not valid: write users('{{upn}}') with \
                                     every ' in the UPN doubled."
                                ),
                            });
                        }
                    }
                };
                let select_sid = options.select.as_deref().is_some_and(|select| {
                    select.split(',').any(|field| {
                        field
                            .trim()
                            .eq_ignore_ascii_case("onPremisesSecurityIdentifier")
                    })
                });
                let select_state = options.select.as_deref().is_some_and(|select| {
                    select.split(',').any(|field| {
                        let field = field.trim();
                        field.eq_ignore_ascii_case("accountEnabled")
                            || field.eq_ignore_ascii_case("signInSessionsValidFromDateTime")
                    })
                });
                if select_state {
                    return Ok(Read::UserState { key });
                }
                Ok(Read::User { key, select_sid })
            }
            Route::RoleAssignments => {
                let options = QueryOptions::parse(
                    query,
                    &["filter", "expand", "select"],
                    "roleAssignments",
                    "use $filter, $expand=principal or $select",
                )?;
                let filter = match options.filter {
                    None => None,
                    Some(filter) => match eq_filter(&filter) {
                        Some((name, id)) if name.eq_ignore_ascii_case("roleDefinitionId") => {
                            Some(RoleFilter::Role(id))
                        }
                        Some((name, id)) if name.eq_ignore_ascii_case("principalId") => {
                            Some(RoleFilter::Principal(id))
                        }
                        _ => {
                            return Err(Invalid::bad_request(format!(
                                "The filter '{filter}' is not supported here: filter by \
                                 roleDefinitionId eq '{{id}}' or principalId eq '{{id}}'."
                            )));
                        }
                    },
                };
                let expand = match options.expand {
                    None => false,
                    Some(expand) if expand.trim().eq_ignore_ascii_case("principal") => true,
                    Some(expand) => {
                        return Err(Invalid::bad_request(format!(
                            "Expanding '{expand}' is not supported here: use $expand=principal."
                        )));
                    }
                };
                Ok(Read::RoleAssignments { filter, expand })
            }
            _ => privileged_read(route, key, query),
        }
    }
}

/// Issue 20's reads, with what Microsoft documents for each: the filter each requires, the
/// expansion of `principal` on eligibility, `$select` where the list takes it, and `$skiptoken`
/// from the mock's own links.
fn privileged_read(route: Route, key: &str, query: Option<&str>) -> Result<Read, Invalid> {
    let (allowed, resource): (&[&str], &str) = match route {
        Route::RoleEligibility => (
            &["filter", "expand", "select", "skiptoken"],
            "roleEligibilityScheduleInstances",
        ),
        Route::RoleDefinitions => (&["filter", "select", "skiptoken"], "roleDefinitions"),
        Route::GroupEligibility => (
            &["filter", "select", "skiptoken"],
            "eligibilityScheduleInstances",
        ),
        _ => (&["select", "skiptoken"], "this list"),
    };
    let options = QueryOptions::parse(query, allowed, resource, "see Microsoft's page for it")?;
    let skip = match options.skiptoken {
        None => 0,
        Some(token) => token.trim().parse().map_err(|_| {
            Invalid::bad_request(format!(
                "The $skiptoken '{token}' is not valid: follow @odata.nextLink as given."
            ))
        })?,
    };
    let filtered = |property: &str| -> Result<String, Invalid> {
        let filter = options.filter.clone().unwrap_or_default();
        match eq_filter(&filter) {
            Some((name, value)) if name.eq_ignore_ascii_case(property) => Ok(value),
            _ => Err(Invalid::bad_request(format!(
                "The filter '{filter}' is not supported on {resource}: filter by {property} eq                  '{{id}}'."
            ))),
        }
    };
    let list = match route {
        Route::RoleEligibility => {
            let expand = match options.expand.as_deref() {
                None => false,
                Some(expand) if expand.trim().eq_ignore_ascii_case("principal") => true,
                Some(expand) => {
                    return Err(Invalid::bad_request(format!(
                        "Expanding '{expand}' is not supported here: use $expand=principal."
                    )));
                }
            };
            List::Eligibility {
                role: filtered("roleDefinitionId")?,
                expand,
            }
        }
        Route::RoleDefinitions => {
            let privileged_only = match options.filter.as_deref().map(str::trim) {
                None => false,
                Some(filter) if filter.eq_ignore_ascii_case("isPrivileged eq true") => true,
                Some(filter) => {
                    return Err(Invalid::bad_request(format!(
                        "The filter '{filter}' is not supported here: use isPrivileged eq true."
                    )));
                }
            };
            List::RoleDefinitions { privileged_only }
        }
        Route::GroupMembers => List::GroupMembers {
            group: key.to_owned(),
        },
        // The filter on groupId (or principalId) is required (Microsoft's page).
        Route::GroupEligibility => List::GroupEligibility {
            group: filtered("groupId")?,
        },
        Route::Units => List::Units,
        _ => List::UnitMembers {
            unit: key.to_owned(),
        },
    };
    Ok(Read::Privileged { list, skip })
}

/// The query options a resource takes, each at most once.
#[derive(Debug, Default)]
struct QueryOptions {
    filter: Option<String>,
    select: Option<String>,
    skiptoken: Option<String>,
    expand: Option<String>,
}

impl QueryOptions {
    /// Reads `query`, refusing system options not in `allowed` (names without `$`, which is
    /// optional as in Graph); `hint` says what the resource does take.
    fn parse(
        query: Option<&str>,
        allowed: &[&str],
        resource: &str,
        hint: &str,
    ) -> Result<QueryOptions, Invalid> {
        let mut options = QueryOptions::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let bare = name.strip_prefix('$').unwrap_or(&name).to_ascii_lowercase();
            let slot = match bare.as_str() {
                _ if !allowed.contains(&bare.as_str()) => None,
                "filter" => Some(&mut options.filter),
                "select" => Some(&mut options.select),
                "skiptoken" => Some(&mut options.skiptoken),
                "expand" => Some(&mut options.expand),
                _ => None,
            };
            match slot {
                Some(slot) if slot.is_some() => {
                    return Err(Invalid::bad_request(format!(
                        "Query option '{name}' was specified more than once, but it must be \
                         specified at most once."
                    )));
                }
                Some(slot) => *slot = Some(value.into_owned()),
                None if name.starts_with('$') || SYSTEM_OPTIONS.contains(&bare.as_str()) => {
                    return Err(Invalid::bad_request(format!(
                        "The query option '{name}' is not supported on {resource}: {hint}."
                    )));
                }
                // A custom query option: Graph ignores those.
                None => {}
            }
        }
        Ok(options)
    }
}

/// `{property} eq '{literal}'`, with any whitespace around the parts and `''` for a quote inside
/// the literal; the property and the unescaped literal.
fn eq_filter(text: &str) -> Option<(&str, String)> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_end);
    if name.is_empty() || !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    if !rest.get(..2)?.eq_ignore_ascii_case("eq") {
        return None;
    }
    let literal = &rest[2..];
    if !literal.starts_with(char::is_whitespace) {
        return None;
    }
    let quoted = literal.trim_start();
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    unquote(inner).map(|value| (name, value))
}

/// The inside of an OData string literal with each `''` made `'`; `None` for a lone `'`.
fn unquote(inner: &str) -> Option<String> {
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' && chars.next() != Some('\'') {
            return None;
        }
        value.push(c);
    }
    Some(value)
}

/// The key of `users('{key}')` (`users` in any case): `None` if the segment is not of that form
/// at all, `Some(Err)` if its key is malformed or empty.
fn paren_key(resource: &str) -> Option<Result<String, ()>> {
    if !resource.get(..6)?.eq_ignore_ascii_case("users(") {
        return None;
    }
    let key = resource[6..]
        .strip_suffix(')')
        .and_then(|quoted| quoted.strip_prefix('\''))
        .and_then(|quoted| quoted.strip_suffix('\''))
        .and_then(unquote)
        .filter(|key| !key.is_empty());
    Some(key.ok_or(()))
}

fn param<'p>(params: &'p RawPathParams, name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// One read: the route checks, admission, latency, faults and scenarios, then the answer.
async fn serve(
    shared: &Shared,
    route: Route,
    method: Method,
    uri: Uri,
    params: Result<RawPathParams, RawPathParamsRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut exchange = Exchange::new(shared, &headers);
    let params = params.ok();
    // `Err`: answered before the latency (wrong method or version, no token, throttled).
    let admitted = match route_error(&exchange, &method, params.as_ref()) {
        Some(answer) => Err(answer),
        None => {
            let key = params
                .as_ref()
                .and_then(|p| param(p, "id").or(param(p, "key")).or(param(p, "resource")));
            let read = Read::parse(route, key, uri.query());
            if let Ok(read) = &read {
                shared.count_read(read.kind());
            }
            match admit(&mut exchange, route.service()) {
                Some(answer) => Err(answer),
                None => Ok(read),
            }
        }
    };
    wait_latency(shared).await;
    let answer = match admitted {
        Err(answer) => answer,
        Ok(read) => {
            let version = params
                .as_ref()
                .and_then(|p| param(p, super::ROOT))
                .unwrap_or("v1.0");
            let origin = format!("http://{}", host(shared, &headers));
            let base = format!("{origin}/{version}");
            decide(&mut exchange, route, read, &base, &(origin, uri.clone()))
        }
    };
    exchange.finish(answer, &method, &uri, &body)
}

/// The host the client addressed (its `Host` header), else the bound address: links point
/// where the client already sends its token, and a client that follows them only to its own
/// origin (as the tool does) accepts them whether it was given `localhost` or `127.0.0.1`.
fn host(shared: &Shared, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']))
        .map_or_else(|| shared.local_addr.to_string(), str::to_owned)
}

/// Checks made before the bearer token, as for an action: the method and the version.
fn route_error(
    exchange: &Exchange<'_>,
    method: &Method,
    params: Option<&RawPathParams>,
) -> Option<Answer> {
    if method != Method::GET {
        return Some(exchange.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            &format!("The HTTP method '{method}' is not allowed for this resource; use GET."),
        ));
    }
    let Some(params) = params else {
        return Some(exchange.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The path is not valid UTF-8 after percent-decoding.",
        ));
    };
    match param(params, super::ROOT) {
        Some("beta" | "v1.0") => None,
        other => Some(exchange.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            &format!(
                "Resource not found for the segment '{}'.",
                other.unwrap_or_default()
            ),
        )),
    }
}

/// Checks made after the latency sleep: faults, scenarios, the query; then the tenant's answer.
fn decide(
    exchange: &mut Exchange<'_>,
    route: Route,
    read: Result<Read, Invalid>,
    base: &str,
    (origin, uri): &(String, Uri),
) -> Answer {
    let (scenario_key, vocabulary) = match &read {
        Ok(Read::Identity { id }) => (Some(format!("identity:{id}")), Vocabulary::Security),
        Ok(Read::User { key, .. } | Read::UserState { key }) => {
            (Some(format!("user:{key}")), Vocabulary::Directory { key })
        }
        _ if route.service() == Service::Directory => (None, Vocabulary::Directory { key: "" }),
        _ => (None, Vocabulary::Security),
    };
    let scenario = match &read {
        Ok(Read::Identity { id: key } | Read::User { key, .. } | Read::UserState { key }) => {
            Scenario::parse(key)
        }
        _ => Scenario::Normal,
    };
    let scripted = fault_or_scenario(
        exchange,
        scenario,
        scenario_key.as_deref().unwrap_or_default(),
        vocabulary,
    );
    if let Some(answer) = scripted {
        return answer;
    }
    if exchange.shared.config.deny_role_reads && matches!(read, Ok(Read::RoleAssignments { .. })) {
        return exchange.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    if let Ok(Read::Privileged { list, .. }) = &read {
        let denied = &exchange.shared.config.denied_permissions;
        if denied
            .iter()
            .any(|p| p.eq_ignore_ascii_case(list.permission()))
        {
            return exchange.error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            );
        }
    }
    let read = match read {
        Ok(read) => read,
        Err(invalid) => {
            return exchange.error(StatusCode::BAD_REQUEST, invalid.code, &invalid.message);
        }
    };
    let shared = exchange.shared;
    // Effects that came due show in this answer (issue 19).
    shared.settle_effects();
    let Some(directory) = shared.directory() else {
        // The routes exist only with a tenant.
        return exchange.error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "This mock serves no tenant.",
        );
    };
    let shape = shared.config.response_shape;
    match read {
        Read::ListPage { skip } => {
            let page_size = shared.config.page_size.max(1);
            let page = directory.page(skip, page_size);
            let next = skip.saturating_add(page.len());
            let next_link = (!page.is_empty() && next < directory.len())
                .then(|| format!("{base}/security/identities/identityAccounts?$skiptoken={next}"));
            Answer::ok(reply::to_bytes(&IdentityList {
                value: page.iter().map(|i| WireIdentity::new(i, shape)).collect(),
                next_link,
            }))
        }
        Read::SidFilter { sid } => Answer::ok(reply::to_bytes(&IdentityList {
            value: directory
                .with_sid(&sid)
                .map(|i| WireIdentity::new(i, shape))
                .collect(),
            next_link: None,
        })),
        Read::Identity { id } => match directory.identity(&id) {
            Some(identity) => Answer::ok(identity_body(identity, shape)),
            None => exchange.error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                &format!("The identity account '{id}' was not found."),
            ),
        },
        Read::UserState { key } => match user_state_body(&directory, &key, base) {
            Some(body) => Answer::ok(body),
            None => exchange.error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &not_found_message(&key),
            ),
        },
        Read::User { key, select_sid } => match user_body(&directory, &key, select_sid, base) {
            Some(body) => Answer::ok(body),
            None => exchange.error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &not_found_message(&key),
            ),
        },
        Read::RoleAssignments { filter, expand } => Answer::ok(role_assignments_body(
            &directory,
            filter.as_ref(),
            expand,
            base,
        )),
        Read::Privileged { list, skip } => {
            // `isPrivileged` is on beta's unifiedRoleDefinition only.
            if matches!(
                list,
                List::RoleDefinitions {
                    privileged_only: true
                }
            ) && base.ends_with("/v1.0")
            {
                return exchange.error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "Could not find a property named 'isPrivileged' on type \
                     'microsoft.graph.unifiedRoleDefinition'.",
                );
            }
            let Some(entries) = list.entries(&directory) else {
                return exchange.error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &not_found_message(uri.path()),
                );
            };
            let link = |next: usize| {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for (name, value) in
                    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                {
                    if !name.eq_ignore_ascii_case("$skiptoken") {
                        query.append_pair(&name, &value);
                    }
                }
                query.append_pair("$skiptoken", &next.to_string());
                format!("{origin}{}?{}", uri.path(), query.finish())
            };
            let page = ListPage::new(
                format!(
                    "{base}/$metadata#{}",
                    uri.path().rsplit('/').next().unwrap_or_default()
                ),
                entries,
                skip,
                shared.config.page_size,
                link,
            );
            Answer::ok(reply::to_bytes(&page))
        }
    }
}

// --- bodies -------------------------------------------------------------------------------------

/// An identity on the wire: every property of `identityAccounts` (null when unknown), and the
/// derived user's `userPrincipalName`/`emailAddress` when it has them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentity<'a> {
    id: &'a str,
    display_name: Option<&'a str>,
    domain: Option<&'a str>,
    is_enabled: Option<bool>,
    on_premises_security_identifier: Option<&'a str>,
    cloud_security_identifier: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_principal_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_address: Option<&'a str>,
    accounts: Vec<WireAccount<'a>>,
}

/// A linked account as the docs' examples write it, or as the schema does.
#[derive(Serialize)]
#[serde(untagged)]
enum WireAccount<'a> {
    Docs {
        provider: &'a str,
        identifier: &'a str,
        actions: &'a [String],
    },
    Schema {
        identifier: &'a str,
        #[serde(rename = "identityProvider")]
        identity_provider: &'a str,
        actions: &'a [String],
    },
}

impl<'a> WireIdentity<'a> {
    fn new(identity: &'a Identity, shape: ResponseShape) -> WireIdentity<'a> {
        WireIdentity {
            id: &identity.id,
            display_name: identity.display_name.as_deref(),
            domain: identity.domain.as_deref(),
            is_enabled: identity.is_enabled,
            on_premises_security_identifier: identity.on_premises_security_identifier.as_deref(),
            cloud_security_identifier: identity.cloud_security_identifier.as_deref(),
            user_principal_name: identity.user_principal_name.as_deref(),
            email_address: identity.email_address.as_deref(),
            accounts: identity
                .accounts
                .iter()
                .map(|account| WireAccount::new(account, shape))
                .collect(),
        }
    }
}

impl<'a> WireAccount<'a> {
    fn new(account: &'a LinkedAccount, shape: ResponseShape) -> WireAccount<'a> {
        let provider = account.provider();
        match shape {
            ResponseShape::Docs => WireAccount::Docs {
                provider: provider
                    .map(docs_provider)
                    .unwrap_or(&account.identity_provider),
                identifier: &account.identifier,
                actions: &account.actions,
            },
            ResponseShape::Schema => WireAccount::Schema {
                identifier: &account.identifier,
                identity_provider: provider
                    .map(Provider::as_str)
                    .unwrap_or(&account.identity_provider),
                actions: &account.actions,
            },
        }
    }
}

/// The provider as Microsoft's response examples spell it.
fn docs_provider(provider: Provider) -> &'static str {
    match provider {
        Provider::ActiveDirectory => "ActiveDirectory",
        Provider::EntraId => "EntraID",
        Provider::Okta => "Okta",
    }
}

#[derive(Serialize)]
struct IdentityList<'a> {
    value: Vec<WireIdentity<'a>>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

fn identity_body(identity: &Identity, shape: ResponseShape) -> Vec<u8> {
    #[derive(Serialize)]
    struct Wrapped<'a> {
        value: WireIdentity<'a>,
    }
    let wire = WireIdentity::new(identity, shape);
    match shape {
        ResponseShape::Docs => reply::to_bytes(&Wrapped { value: wire }),
        ResponseShape::Schema => reply::to_bytes(&wire),
    }
}

fn user_body(directory: &Directory, key: &str, select_sid: bool, base: &str) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireUser<'a> {
        #[serde(rename = "@odata.context")]
        context: String,
        id: &'a str,
        user_principal_name: Option<&'a str>,
        display_name: Option<&'a str>,
        /// Outer `None`: not selected; `Some(None)`: a cloud-only user's `null`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_premises_security_identifier: Option<Option<&'a str>>,
    }
    let user = directory.user(key)?;
    let identity = user.identity;
    let context = if select_sid {
        format!(
            "{base}/$metadata#users(id,userPrincipalName,displayName,onPremisesSecurityIdentifier)/$entity"
        )
    } else {
        format!("{base}/$metadata#users/$entity")
    };
    Some(reply::to_bytes(&WireUser {
        context,
        id: user.object_id,
        user_principal_name: identity.user_principal_name.as_deref(),
        display_name: identity.display_name.as_deref(),
        on_premises_security_identifier: select_sid
            .then_some(identity.on_premises_security_identifier.as_deref()),
    }))
}

/// `GET /users/{key}?$select=id,accountEnabled,signInSessionsValidFromDateTime`: what a
/// disable, an enable or a session revoke on Entra ID changes (issue 19).
fn user_state_body(directory: &Directory, key: &str, base: &str) -> Option<Vec<u8>> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireUserState<'a> {
        #[serde(rename = "@odata.context")]
        context: String,
        id: &'a str,
        account_enabled: bool,
        sign_in_sessions_valid_from_date_time: String,
    }
    let user = directory.user(key)?;
    let state = directory.user_state(user.object_id, user.identity);
    let valid_from = match state.sessions_valid_from {
        Some(at) => whole_seconds_rfc3339(at),
        None => SESSIONS_VALID_FROM_AT_START.to_owned(),
    };
    Some(reply::to_bytes(&WireUserState {
        context: format!(
            "{base}/$metadata#users(id,accountEnabled,signInSessionsValidFromDateTime)/$entity"
        ),
        id: user.object_id,
        account_enabled: state.account_enabled,
        sign_in_sessions_valid_from_date_time: valid_from,
    }))
}

/// Whole seconds since the epoch as Graph writes a DateTimeOffset: `2026-12-03T18:00:00Z`.
fn whole_seconds_rfc3339(since_epoch: Duration) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn role_assignments_body(
    directory: &Directory,
    filter: Option<&RoleFilter>,
    expand: bool,
    base: &str,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct WireAssignment<'a> {
        id: &'a str,
        principal_id: &'a str,
        resource_scope: &'static str,
        directory_scope_id: &'static str,
        role_definition_id: &'a str,
        /// A user, or a role-assignable group (issue 20).
        #[serde(skip_serializing_if = "Option::is_none")]
        principal: Option<serde_json::Value>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "@odata.context")]
        context: String,
        value: Vec<WireAssignment<'a>>,
    }
    let value = directory
        .role_assignments()
        .iter()
        .filter(|assignment| match filter {
            None => true,
            Some(RoleFilter::Role(id)) => assignment.role_definition_id.eq_ignore_ascii_case(id),
            Some(RoleFilter::Principal(id)) => assignment.principal_id.eq_ignore_ascii_case(id),
        })
        .map(|assignment| {
            let principal = expand.then(|| {
                principal(
                    directory,
                    &assignment.principal_id,
                    assignment.principal_sid.as_deref(),
                )
            });
            WireAssignment {
                id: &assignment.id,
                principal_id: &assignment.principal_id,
                resource_scope: "/",
                directory_scope_id: "/",
                role_definition_id: &assignment.role_definition_id,
                principal,
            }
        })
        .collect();
    reply::to_bytes(&Body {
        context: format!("{base}/$metadata#roleManagement/directory/roleAssignments"),
        value,
    })
}

#[cfg(test)]
mod tests {
    use crate::graph::identity::{Page, parse_identity, parse_user};
    use crate::mock::Tenant;

    use super::*;

    fn parse(route: Route, key: Option<&str>, query: &str) -> Result<Read, Invalid> {
        Read::parse(route, key, Some(query))
    }

    #[test]
    fn the_sid_filter_is_read_with_any_spacing_and_doubled_quotes() {
        for query in [
            "$filter=onPremisesSecurityIdentifier%20eq%20'S-1-5-21-1'",
            "$filter=+onpremisessecurityidentifier++EQ++'S-1-5-21-1'+",
            "filter=onPremisesSecurityIdentifier eq 'S-1-5-21-1'",
        ] {
            assert_eq!(
                parse(Route::IdentityList, None, query),
                Ok(Read::SidFilter {
                    sid: "S-1-5-21-1".to_owned()
                }),
                "{query}"
            );
        }
        assert_eq!(
            eq_filter("x eq 'O''Brien'"),
            Some(("x", "O'Brien".to_owned()))
        );
        assert_eq!(eq_filter("x eq ''"), Some(("x", String::new())));
        for bad in [
            "x eq 'a'b'",
            "x eq 'a",
            "x eq a",
            "xeq 'a'",
            "x eq'a'",
            "x ne 'a'",
            "x eq 'a' and y eq 'b'",
            "eq 'a'",
            "",
        ] {
            assert_eq!(eq_filter(bad), None, "{bad}");
        }
    }

    #[test]
    fn undocumented_filters_and_options_are_refused() {
        for query in [
            "$filter=displayName eq 'x'",
            "$filter=accounts/any(a:a/identifier eq 'x')",
            "$top=999",
            "top=5",
            "$count=true",
            "$orderby=displayName",
            "$expand=accounts",
            "$search=\"x\"",
            "$skiptoken=abc",
            "$filter=onPremisesSecurityIdentifier eq 'a'&$filter=onPremisesSecurityIdentifier eq 'b'",
            "$unknown=1",
        ] {
            let invalid = parse(Route::IdentityList, None, query).unwrap_err();
            assert_eq!(invalid.code, "BadRequest", "{query}");
        }
        let message = parse(Route::IdentityList, None, "$filter=displayName eq 'x'")
            .unwrap_err()
            .message;
        assert!(message.contains("is not supported"), "{message}");
        assert_eq!(
            parse(
                Route::IdentityList,
                None,
                "$select=id&$skiptoken=200&custom=1"
            ),
            Ok(Read::ListPage { skip: 200 })
        );
        assert!(parse(Route::IdentityGet, Some("x"), "$filter=a eq 'b'").is_err());
        assert_eq!(
            parse(Route::IdentityGet, Some("x"), "$select=accounts"),
            Ok(Read::Identity { id: "x".into() })
        );
    }

    #[test]
    fn user_keys_come_from_the_segment_or_the_quoted_form() {
        assert_eq!(
            parse(
                Route::User,
                Some("a#b@c.d"),
                "$select=id,%20onPremisesSecurityIdentifier"
            ),
            Ok(Read::User {
                key: "a#b@c.d".into(),
                select_sid: true
            })
        );
        assert_eq!(
            parse(Route::UserByKey, Some("Users('$O''Neil@c.d')"), ""),
            Ok(Read::User {
                key: "$O'Neil@c.d".into(),
                select_sid: false
            })
        );
        assert_eq!(
            parse(Route::User, Some("$x@c.d"), "").unwrap_err().code,
            "Request_BadRequest"
        );
        for bad in ["users('a'b')", "users('')", "users(a)", "users('a'"] {
            assert_eq!(paren_key(bad), Some(Err(())), "{bad}");
        }
        assert_eq!(paren_key("me"), None);
        assert_eq!(paren_key("groups('a')"), None);
    }

    #[test]
    fn role_filters_are_the_documented_two() {
        assert_eq!(
            parse(
                Route::RoleAssignments,
                None,
                "$filter=roleDefinitionId eq 'R'&$expand=principal"
            ),
            Ok(Read::RoleAssignments {
                filter: Some(RoleFilter::Role("R".into())),
                expand: true
            })
        );
        assert_eq!(
            parse(Route::RoleAssignments, None, "$filter=principalId eq 'P'"),
            Ok(Read::RoleAssignments {
                filter: Some(RoleFilter::Principal("P".into())),
                expand: false
            })
        );
        assert!(
            parse(
                Route::RoleAssignments,
                None,
                "$filter=directoryScopeId eq '/'"
            )
            .is_err()
        );
        assert!(parse(Route::RoleAssignments, None, "$expand=roleDefinition").is_err());
        assert!(parse(Route::RoleAssignments, None, "$top=1").is_err());
    }

    /// What the mock serves is what the shared model parses, in both shapes.
    #[test]
    fn identities_round_trip_through_the_shared_parsers() {
        let tenant = Tenant::synthetic(5);
        for shape in [ResponseShape::Docs, ResponseShape::Schema] {
            for identity in tenant.identities() {
                let mut parsed = parse_identity(&identity_body(identity, shape))
                    .unwrap()
                    .identity;
                // The docs' shape spells providers its own way; the provider is the same.
                for account in &mut parsed.accounts {
                    account.identity_provider = account.provider().unwrap().as_str().to_owned();
                }
                assert_eq!(&parsed, identity, "{shape:?}");
            }
            let page = Page::parse(&reply::to_bytes(&IdentityList {
                value: tenant
                    .identities()
                    .iter()
                    .map(|i| WireIdentity::new(i, shape))
                    .collect(),
                next_link: Some(
                    "http://x/v1.0/security/identities/identityAccounts?$skiptoken=5".into(),
                ),
            }))
            .unwrap();
            assert_eq!(page.identities.len(), 5);
            assert!(page.next_link.is_some());
        }
        let docs =
            String::from_utf8(identity_body(&tenant.identities()[4], ResponseShape::Docs)).unwrap();
        assert!(docs.starts_with(r#"{"value":{"id":"#), "{docs}");
        assert!(docs.contains(r#""provider":"ActiveDirectory""#), "{docs}");
        assert!(docs.contains(r#""provider":"EntraID""#), "{docs}");
        assert!(docs.contains(r#""provider":"Okta""#), "{docs}");
        let schema = String::from_utf8(identity_body(
            &tenant.identities()[0],
            ResponseShape::Schema,
        ))
        .unwrap();
        assert!(
            schema.contains(r#""identityProvider":"entraID""#),
            "{schema}"
        );
        assert!(
            schema.contains(r#""onPremisesSecurityIdentifier":null"#),
            "{schema}"
        );
        assert!(!schema.contains("\"value\""), "{schema}");
    }

    #[test]
    fn users_round_trip_through_the_shared_parser() {
        let directory = Directory::new(Tenant::synthetic(3));
        let hybrid =
            user_body(&directory, "USER000001@contoso.com", true, "http://x/v1.0").unwrap();
        let user = parse_user(&hybrid).unwrap();
        assert_eq!(user.id, Tenant::synthetic_object_id(1));
        assert_eq!(user.user_principal_name, Some(Tenant::synthetic_upn(1)));
        assert_eq!(
            user.on_premises_security_identifier,
            Tenant::synthetic_sid(1)
        );
        let cloud = user_body(&directory, &Tenant::synthetic_object_id(0), true, "b").unwrap();
        assert!(String::from_utf8_lossy(&cloud).contains(r#""onPremisesSecurityIdentifier":null"#));
        assert_eq!(
            parse_user(&cloud).unwrap().on_premises_security_identifier,
            None
        );
        let unselected = user_body(&directory, &Tenant::synthetic_upn(1), false, "b").unwrap();
        assert!(!String::from_utf8_lossy(&unselected).contains("onPremises"));
        assert!(user_body(&directory, "nobody@contoso.com", false, "b").is_none());
    }
}
