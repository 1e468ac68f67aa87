//! One HTTP attempt at Graph (an invokeAction, or a lookup's read): build the URL and body, send,
//! and classify what came back; and the service roots a run may send to (https, or http to
//! loopback only). No retries, sleeps, rate limits or progress: the runner owns those.

use std::error::Error as _;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

use super::model::{Action, GraphErrorBody, InvokeActionRequest, InvokeActionResult, Provider};
use crate::retry::AttemptKind;
use crate::sanitize::{printable, printable_owned, redact};

/// `User-Agent` for every request the tool makes (Graph and the token endpoint): the tool and its
/// version, so Microsoft's logs show who called.
pub const USER_AGENT: &str = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"));

/// The namespace-qualified action segment Microsoft's metadata and SDKs use (SPEC section 1).
pub const ACTION_SEGMENT: &str = "microsoft.graph.security.invokeAction";

/// Characters left as they are in a path segment: RFC 3986 unreserved.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters left as they are in an OData key segment `('...')`: the unreserved ones, and the
/// parentheses and quotes of the key syntax itself.
const KEY: &AsciiSet = &SEGMENT.remove(b'(').remove(b')').remove(b'\'');

/// The largest response body we read: an action's answer is a few hundred bytes, but a page of
/// identities runs to hundreds of kilobytes. A longer body is cut, and a cut page fails to parse.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The endpoint a run against the built-in mock records (`run --mock`, a rehearsal) where another
/// run records its Graph service root, so that results are never resumed against another one.
pub const MOCK_ENDPOINT: &str = "the built-in mock";

/// Graph API version (`--api-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ApiVersion {
    #[default]
    #[value(name = "beta")]
    Beta,
    #[value(name = "v1.0")]
    V1,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::Beta => "beta",
            ApiVersion::V1 => "v1.0",
        }
    }
}

/// The request ids Graph gives back, for the results and for Microsoft support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseIds {
    pub request_id: Option<String>,
    pub client_request_id: Option<String>,
}

impl ResponseIds {
    fn from_headers(headers: &HeaderMap) -> ResponseIds {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        ResponseIds {
            request_id: get("request-id"),
            client_request_id: get("client-request-id"),
        }
    }
}

/// Graph accepted the action.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub status: u16,
    pub result: InvokeActionResult,
    pub ids: ResponseIds,
}

/// One attempt that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("HTTP {status}{}: {}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), message.as_deref().unwrap_or("no message"))]
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        retry_after: Option<String>,
        ids: ResponseIds,
    },
    #[error("no response within {0:?} (--timeout)")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connection(String),
    /// The request could not be built or was refused before it left (a token that cannot go in
    /// a header, an id that would change the path): retrying cannot help.
    #[error("not sent: {0}")]
    Unsendable(String),
}

impl GraphError {
    /// The retry policy's view of this failure.
    pub fn attempt_kind(&self) -> AttemptKind {
        match self {
            GraphError::Status {
                status,
                retry_after,
                ..
            } => AttemptKind::Status {
                status: *status,
                retry_after: retry_after.clone(),
            },
            GraphError::Timeout(_) => AttemptKind::Timeout,
            GraphError::Connection(_) => AttemptKind::Connection,
            GraphError::Unsendable(_) => AttemptKind::Unsendable,
        }
    }

    /// The HTTP status Graph answered with, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            GraphError::Status { status, .. } => Some(*status),
            GraphError::Timeout(_) | GraphError::Connection(_) | GraphError::Unsendable(_) => None,
        }
    }

    /// Why Graph refused a user in a restricted-management administrative unit (issue 20), when
    /// this 403 is that refusal: Entra lets only roles scoped to such a unit change its members,
    /// so no permission of the app's and no tenant-wide role (Global Administrator included)
    /// can. It is the row's failure, not a permission the run lacks.
    pub fn restricted_management(&self) -> Option<&'static str> {
        match self {
            GraphError::Status {
                status: 403,
                message: Some(message),
                ..
            } if message
                .to_ascii_lowercase()
                .contains("restricted management administrative unit") =>
            {
                Some(RESTRICTED_MANAGEMENT_NOTE)
            }
            _ => None,
        }
    }

    /// Graph's `request-id` for this answer, when it sent one (quoted to Microsoft support).
    pub fn request_id(&self) -> Option<&str> {
        match self {
            GraphError::Status { ids, .. } => ids.request_id.as_deref(),
            GraphError::Timeout(_) | GraphError::Connection(_) | GraphError::Unsendable(_) => None,
        }
    }
}

/// What a row refused for a restricted-management administrative unit says (issue 20).
pub const RESTRICTED_MANAGEMENT_NOTE: &str = "the user is in a restricted-management administrative unit: Entra ID refuses changes to its members from every app and tenant-wide administrator (Global Administrator included); act with a role assigned at that unit's scope, or take the user out of it first. The other rows go on";

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not a URL")]
    BadUrl(String),
    #[error(
        "{0} uses plain http to a host that is not this machine; use https (http is allowed only to 127.0.0.1, ::1 or localhost, e.g. a mock)"
    )]
    InsecureUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Checks a service root: https anywhere, plain http only to loopback.
pub fn check_service_url(url: &str) -> Result<reqwest::Url, ClientError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(ClientError::InsecureUrl(url.to_owned())),
        _ => Err(ClientError::BadUrl(url.to_owned())),
    }
}

pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Sends invokeAction requests to one Graph root and version.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// The service root, parsed once; each request only sets its path.
    root: reqwest::Url,
    /// `{root path}/{version}/security/identities/identityAccounts/`
    accounts_path: String,
    timeout: Duration,
}

impl GraphClient {
    /// `root` is the service root (`https://graph.microsoft.com`); `connections` sizes the idle
    /// pool to the number of workers so each keeps its connection between rows.
    pub fn new(
        root: &str,
        version: ApiVersion,
        timeout: Duration,
        connections: usize,
    ) -> Result<GraphClient, ClientError> {
        let root = check_service_url(root)?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            // A little slack over the workers, so a connection that is briefly busy returning to
            // the pool is not closed and reopened (the profile counted 106 opens for 64 workers).
            .pool_max_idle_per_host(connections + connections / 4 + 2)
            // Shorter than common server keep-alives, so the pool rarely hands out a connection
            // the server is closing (hyper#2136: an ambiguous failure for a POST).
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let accounts_path = format!(
            "{}/{}/security/identities/identityAccounts/",
            root.path().trim_end_matches('/'),
            version.as_str()
        );
        Ok(GraphClient {
            http,
            root,
            accounts_path,
            timeout,
        })
    }

    /// The full action URL for one identity account, its id percent-encoded. Built from the
    /// parsed root by setting only the path: parsing a whole URL string per request showed in
    /// the profile. The path must come out exactly as built: an id that the URL parser would
    /// rewrite (a dot segment such as `.` or `..`, which it collapses) is refused rather than
    /// sent to another resource (issue 10).
    pub fn url_for(&self, identity_account_id: &str) -> Result<reqwest::Url, GraphError> {
        let mut url = self.root.clone();
        let mut path = String::with_capacity(self.accounts_path.len() + 80);
        path.push_str(&self.accounts_path);
        path.extend(utf8_percent_encode(identity_account_id, SEGMENT));
        path.push('/');
        path.push_str(ACTION_SEGMENT);
        url.set_path(&path);
        if url.path() != path || identity_account_id.is_empty() {
            return Err(GraphError::Unsendable(format!(
                "the identityAccountId {:?} would change the request path",
                printable(identity_account_id)
            )));
        }
        Ok(url)
    }

    /// `{root}/{version}`, for logs.
    pub fn service_root(&self) -> String {
        let mut url = self.root.clone();
        url.set_path(
            self.accounts_path
                .trim_end_matches("/security/identities/identityAccounts/"),
        );
        url.into()
    }

    /// [`GraphClient::url_for`] as text.
    #[cfg(test)]
    pub fn action_url(&self, identity_account_id: &str) -> Result<String, GraphError> {
        self.url_for(identity_account_id).map(Into::into)
    }

    /// Sends one invokeAction. `client_request_id` is the row's GUID, the same on every retry.
    pub async fn invoke(
        &self,
        identity_account_id: &str,
        account_id: &str,
        action: Action,
        provider: Provider,
        token: &SecretString,
        client_request_id: &str,
    ) -> Result<Accepted, GraphError> {
        let body = InvokeActionRequest {
            account_id,
            action,
            identity_provider: provider,
        };
        let request = self
            .http
            .post(self.url_for(identity_account_id)?)
            .json(&body);
        let (status, ids, body) = self.exchange(request, token, client_request_id).await?;
        Ok(Accepted {
            status,
            result: InvokeActionResult::parse(&body),
            ids,
        })
    }

    /// One read: `GET url`, the body of a 2xx answer (the caller parses it), or the error.
    pub async fn get(
        &self,
        url: reqwest::Url,
        token: &SecretString,
        client_request_id: &str,
    ) -> Result<Vec<u8>, GraphError> {
        let (_, _, body) = self
            .exchange(self.http.get(url), token, client_request_id)
            .await?;
        Ok(body)
    }

    /// `.../security/identities/identityAccounts/{id}`.
    pub fn identity_url(&self, identity_account_id: &str) -> Result<reqwest::Url, GraphError> {
        let mut path = self.accounts_path.clone();
        path.extend(utf8_percent_encode(identity_account_id, SEGMENT));
        self.with_path(&path, identity_account_id)
    }

    /// The identityAccounts list: its first page, or with the one filter Microsoft documents on
    /// it, `onPremisesSecurityIdentifier eq '{sid}'` (a quote in the value doubled, as OData
    /// wants).
    pub fn identity_list_url(&self, sid: Option<&str>) -> reqwest::Url {
        let mut url = self.root.clone();
        url.set_path(self.accounts_path.trim_end_matches('/'));
        if let Some(sid) = sid {
            let filter = format!(
                "onPremisesSecurityIdentifier eq '{}'",
                sid.replace('\'', "''")
            );
            url.query_pairs_mut().append_pair("$filter", &filter);
        }
        url
    }

    /// A page's `@odata.nextLink`, followed whole, but only to this Graph's own origin and
    /// without userinfo: the token must never be sent anywhere a server's answer points it.
    pub fn next_link(&self, link: &str) -> Result<reqwest::Url, GraphError> {
        let url = reqwest::Url::parse(link).map_err(|_| {
            GraphError::Unsendable(format!(
                "the next page's link {:?} is not a URL",
                printable(link)
            ))
        })?;
        // The origin leaves userinfo out, and reqwest turns `user:pw@` into Basic credentials
        // that replace the bearer token (issue 16): a link carrying any is not followed.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GraphError::Unsendable(
                "the next page's link carries a user name or password; it is not followed"
                    .to_owned(),
            ));
        }
        if url.origin() != self.root.origin() {
            return Err(GraphError::Unsendable(format!(
                "the next page's link points to {}, not to {}; it is not followed",
                printable(&url.origin().ascii_serialization()),
                self.root.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    /// `.../users/{id | userPrincipalName}?$select=id,userPrincipalName,onPremisesSecurityIdentifier,displayName`.
    /// A UPN starting with `$` takes Graph's key form, `/users('$x@y.com')`, since the plain form
    /// fails with 400; every other character that is not unreserved is percent-encoded (a `#` of
    /// a guest's UPN as `%23`), so a cell can never address another resource.
    pub fn user_url(&self, key: &str) -> Result<reqwest::Url, GraphError> {
        let users = format!("{}/users", self.version_path());
        let path = if key.starts_with('$') {
            let quoted = format!("('{}')", key.replace('\'', "''"));
            format!("{users}{}", utf8_percent_encode(&quoted, KEY))
        } else {
            format!("{users}/{}", utf8_percent_encode(key, SEGMENT))
        };
        let mut url = self.with_path(&path, key)?;
        url.query_pairs_mut().append_pair(
            "$select",
            "id,userPrincipalName,onPremisesSecurityIdentifier,displayName",
        );
        Ok(url)
    }

    /// `.../roleManagement/directory/roleAssignments?$filter=roleDefinitionId eq '{id}'&$expand=principal`:
    /// who holds a directory role (Example 1 of Microsoft's "List unifiedRoleAssignments").
    pub fn role_assignments_url(&self, role_definition_id: &str) -> reqwest::Url {
        self.filtered(
            "roleManagement/directory/roleAssignments",
            "roleDefinitionId",
            role_definition_id,
            Some(("$expand", "principal")),
        )
    }

    /// `.../roleManagement/directory/roleEligibilityScheduleInstances?$filter=roleDefinitionId eq '{id}'&$expand=principal`:
    /// who is PIM-eligible for a directory role (issue 20; Microsoft's "List
    /// roleEligibilityScheduleInstances" documents the filter on `roleDefinitionId` and the
    /// expansion of `principal`).
    pub fn role_eligibility_url(&self, role_definition_id: &str) -> reqwest::Url {
        self.filtered(
            "roleManagement/directory/roleEligibilityScheduleInstances",
            "roleDefinitionId",
            role_definition_id,
            Some(("$expand", "principal")),
        )
    }

    /// `.../groups/{id}/transitiveMembers`: the members of a role-assignable group (issue 20;
    /// "List group transitive members"). Such groups cannot nest, so this is the whole set.
    pub fn group_members_url(&self, group_id: &str) -> Result<reqwest::Url, GraphError> {
        let path = format!(
            "{}/groups/{}/transitiveMembers",
            self.version_path(),
            utf8_percent_encode(group_id, SEGMENT)
        );
        self.with_path(&path, group_id)
    }

    /// `.../identityGovernance/privilegedAccess/group/eligibilityScheduleInstances?$filter=groupId eq '{id}'`:
    /// who is eligible for a group through PIM for Groups (issue 20; the filter on `groupId` is
    /// required by "List eligibilityScheduleInstances").
    pub fn group_eligibility_url(&self, group_id: &str) -> reqwest::Url {
        self.filtered(
            "identityGovernance/privilegedAccess/group/eligibilityScheduleInstances",
            "groupId",
            group_id,
            None,
        )
    }

    /// `.../roleManagement/directory/roleDefinitions?$filter=isPrivileged eq true`: the roles
    /// Microsoft labels privileged, custom ones included (issue 20; beta only, as Entra's
    /// "Privileged roles and permissions" documents it).
    pub fn privileged_role_definitions_url(&self) -> reqwest::Url {
        let mut url = self.root.clone();
        url.set_path(&format!(
            "{}/roleManagement/directory/roleDefinitions",
            self.version_path()
        ));
        url.query_pairs_mut()
            .append_pair("$filter", "isPrivileged eq true");
        url
    }

    /// `.../directory/administrativeUnits?$select=id,displayName,isMemberManagementRestricted`:
    /// every administrative unit, to find the restricted-management ones (issue 20; "List
    /// administrativeUnits" documents `$select`, not a filter on that property).
    pub fn administrative_units_url(&self) -> reqwest::Url {
        let mut url = self.root.clone();
        url.set_path(&format!(
            "{}/directory/administrativeUnits",
            self.version_path()
        ));
        url.query_pairs_mut()
            .append_pair("$select", "id,displayName,isMemberManagementRestricted");
        url
    }

    /// `.../directory/administrativeUnits/{id}/members`: who is in an administrative unit
    /// (issue 20; "List members").
    pub fn administrative_unit_members_url(
        &self,
        unit_id: &str,
    ) -> Result<reqwest::Url, GraphError> {
        let path = format!(
            "{}/directory/administrativeUnits/{}/members",
            self.version_path(),
            utf8_percent_encode(unit_id, SEGMENT)
        );
        self.with_path(&path, unit_id)
    }

    /// Whether the reads go to beta, where some properties (`isPrivileged`) exist only.
    pub fn reads_beta(&self) -> bool {
        self.version_path().ends_with("/beta")
    }

    /// `{version}/{collection}?$filter={property} eq '{value}'` (a quote doubled, as OData
    /// wants), and one more option if given.
    fn filtered(
        &self,
        collection: &str,
        property: &str,
        value: &str,
        more: Option<(&str, &str)>,
    ) -> reqwest::Url {
        let mut url = self.root.clone();
        url.set_path(&format!("{}/{collection}", self.version_path()));
        {
            let mut query = url.query_pairs_mut();
            query.append_pair(
                "$filter",
                &format!("{property} eq '{}'", value.replace('\'', "''")),
            );
            if let Some((name, option)) = more {
                query.append_pair(name, option);
            }
        }
        url
    }

    /// `{root path}/{version}`.
    fn version_path(&self) -> &str {
        self.accounts_path
            .trim_end_matches("/security/identities/identityAccounts/")
    }

    /// The root with `path`, which must come out exactly as built (see [`GraphClient::url_for`]).
    fn with_path(&self, path: &str, key: &str) -> Result<reqwest::Url, GraphError> {
        let mut url = self.root.clone();
        url.set_path(path);
        if url.path() != path || key.is_empty() || key == "." || key == ".." {
            return Err(GraphError::Unsendable(format!(
                "{:?} would change the request path",
                printable(key)
            )));
        }
        Ok(url)
    }

    /// Sends `request` with the token and the client request id; the status, ids and body of a
    /// 2xx answer, or the error.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        token: &SecretString,
        client_request_id: &str,
    ) -> Result<(u16, ResponseIds, Vec<u8>), GraphError> {
        let response = request
            .bearer_auth(token.expose_secret())
            .header("client-request-id", client_request_id)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let ids = ResponseIds::from_headers(response.headers());
        let retry_after = retry_after(&response);
        let body = read_body(response).await;
        if (200..300).contains(&status) {
            return Ok((status, ids, body));
        }
        let error = GraphErrorBody::parse(&body);
        // A server may echo the request back; the token must not reach the results or a log.
        let secret = token.expose_secret();
        Err(GraphError::Status {
            status,
            code: error.code.map(|code| redact(&code, secret)),
            message: error.message.map(|message| redact(&message, secret)),
            retry_after,
            ids,
        })
    }

    fn transport_error(&self, error: &reqwest::Error) -> GraphError {
        if error.is_timeout() {
            return GraphError::Timeout(self.timeout);
        }
        if error.is_builder() {
            // Never reaches the network (a header value that cannot be sent): final, not a
            // connection failure to retry. reqwest's builder errors name no header value.
            return GraphError::Unsendable(printable_owned(&error.without_url_ref()));
        }
        // reqwest's own message is generic ("error sending request"); the cause is in the chain.
        let mut message = error.without_url_ref().to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        GraphError::Connection(printable_owned(&message))
    }
}

/// The body, up to [`MAX_BODY`]; a body that breaks off is as good as empty to us.
async fn read_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    body
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    /// The error without the URL (which holds the account id and adds nothing to the cause).
    fn without_url_ref(&self) -> String {
        let text = self.to_string();
        match self.url() {
            Some(url) => text
                .replace(&format!(" for url ({url})"), "")
                .replace(&format!(" ({url})"), ""),
            None => text,
        }
    }
}

/// The raw `Retry-After` of an answer (Graph's, or a token endpoint's), for the retry policy
/// to read.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_20_only_a_403_saying_restricted_management_is_the_rows_own_refusal() {
        let error = |status: u16, message: &str| GraphError::Status {
            status,
            code: Some("Authorization_RequestDenied".into()),
            message: Some(message.into()),
            retry_after: None,
            ids: ResponseIds::default(),
        };
        let restricted =
            "Target object is a member of a Restricted Management Administrative Unit.";
        assert_eq!(
            error(403, restricted).restricted_management(),
            Some(RESTRICTED_MANAGEMENT_NOTE)
        );
        assert_eq!(
            error(403, "Insufficient privileges to complete the operation.")
                .restricted_management(),
            None
        );
        assert_eq!(error(400, restricted).restricted_management(), None);
    }

    #[test]
    fn issue_20_the_guard_reads_are_built_as_microsoft_documents_them() {
        let graph = client("https://graph.microsoft.com");
        assert_eq!(
            graph.role_eligibility_url("62e90394").as_str(),
            "https://graph.microsoft.com/beta/roleManagement/directory/roleEligibilityScheduleInstances?%24filter=roleDefinitionId+eq+%2762e90394%27&%24expand=principal"
        );
        assert_eq!(
            graph.group_eligibility_url("g'1").as_str(),
            "https://graph.microsoft.com/beta/identityGovernance/privilegedAccess/group/eligibilityScheduleInstances?%24filter=groupId+eq+%27g%27%271%27"
        );
        assert_eq!(
            graph.group_members_url("g/1").unwrap().as_str(),
            "https://graph.microsoft.com/beta/groups/g%2F1/transitiveMembers"
        );
        assert!(graph.group_members_url("..").is_err());
        assert!(graph.reads_beta());
        let v1 = GraphClient::new(
            "https://graph.microsoft.com",
            ApiVersion::V1,
            Duration::from_secs(5),
            4,
        )
        .unwrap();
        assert!(!v1.reads_beta());
    }

    fn client(root: &str) -> GraphClient {
        GraphClient::new(root, ApiVersion::Beta, Duration::from_secs(5), 4).unwrap()
    }

    #[test]
    fn builds_the_qualified_action_url_with_an_encoded_id() {
        let client = client("https://graph.microsoft.com/");
        assert_eq!(
            client.action_url("6f1c7a52-0d4e").unwrap(),
            "https://graph.microsoft.com/beta/security/identities/identityAccounts/6f1c7a52-0d4e/microsoft.graph.security.invokeAction"
        );
        assert!(client.action_url("a b:c").unwrap().contains("/a%20b%3Ac/"));
        let v1 = GraphClient::new(
            "https://graph.microsoft.us",
            ApiVersion::V1,
            Duration::from_secs(1),
            1,
        )
        .unwrap();
        assert!(
            v1.action_url("x")
                .unwrap()
                .starts_with("https://graph.microsoft.us/v1.0/security/")
        );
    }

    #[test]
    fn issue_10_an_id_that_would_change_the_path_is_never_sent() {
        let client = client("https://graph.microsoft.com");
        for id in [".", "..", ""] {
            assert!(
                matches!(client.url_for(id), Err(GraphError::Unsendable(_))),
                "{id:?}"
            );
        }
        // Dots inside an id are not dot segments.
        assert!(client.url_for("...").is_ok());
        assert!(
            client
                .url_for("a.b")
                .unwrap()
                .path()
                .ends_with("/a.b/microsoft.graph.security.invokeAction")
        );
    }

    #[test]
    fn issue_16_a_next_link_with_userinfo_is_not_followed() {
        let client = client("http://127.0.0.1:8080");
        let page = "/beta/security/identities/identityAccounts?$skiptoken=2";
        assert!(
            client
                .next_link(&format!("http://127.0.0.1:8080{page}"))
                .is_ok()
        );
        for userinfo in ["user:pw@", "user@", ":pw@"] {
            let link = format!("http://{userinfo}127.0.0.1:8080{page}");
            let error = client.next_link(&link).unwrap_err().to_string();
            assert!(error.contains("user name or password"), "{link}: {error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_service_url("http://127.0.0.1:8080").is_ok());
        assert!(check_service_url("http://localhost:1").is_ok());
        assert!(check_service_url("http://[::1]:1").is_ok());
        assert!(matches!(
            check_service_url("http://graph.microsoft.com"),
            Err(ClientError::InsecureUrl(_))
        ));
        assert!(matches!(
            check_service_url("http://10.0.0.1"),
            Err(ClientError::InsecureUrl(_))
        ));
        assert!(matches!(
            check_service_url("ftp://x"),
            Err(ClientError::BadUrl(_))
        ));
        assert!(matches!(
            check_service_url("not a url"),
            Err(ClientError::BadUrl(_))
        ));
    }
}
