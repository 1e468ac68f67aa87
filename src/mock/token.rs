//! The Entra side of the mock: `POST /{tenant}/oauth2/v2.0/token` for the client-credentials
//! grant, with a client secret (form field or HTTP Basic) or a certificate's client assertion.
//! Checks the request the way Entra does and answers with Entra's error bodies; the assertion's
//! structure and claims are checked, its signature is not.
//!
//! The form body holds secrets: nothing from it but `grant_type` and `client_id` is ever logged.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::MockConfig;
use super::log::{self, LoggedRequest};
use super::reply::{self, Ids};
use super::state::Shared;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far in the future `nbf` may be: Entra tolerates some clock skew.
const CLOCK_SKEW_SECS: f64 = 60.0;
/// The longest assertion Entra accepts: `exp` at most 10 minutes after `nbf`.
const MAX_ASSERTION_LIFETIME_SECS: f64 = 600.0;

/// Entra answers `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn issue_token(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    params: Result<RawPathParams, RawPathParamsRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.count_token();
    let now_ns = shared.now_ns();
    let ids = Ids::new(&headers);
    let tenant = params
        .as_ref()
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(key, _)| *key == super::ROOT)
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_default();
    let form = Form::parse(&body).with_basic(&headers);
    let request = TokenRequest::read(&form);
    let audiences = audiences(&shared, &headers, &tenant);
    let now_secs = shared.wall(now_ns).as_secs_f64();

    let outcome = if method != Method::POST {
        Err(TokenError::invalid_request(
            900561,
            format!("The endpoint only accepts POST requests. Received a {method} request."),
        ))
    } else {
        let federated = request.assertion.and_then(|assertion| {
            super::unattended::federated_verdict(&shared, assertion, now_secs)
        });
        judge_with(
            &request,
            &shared.config,
            &tenant,
            &audiences,
            now_secs,
            federated,
        )
    };

    let delegated =
        method == Method::POST && super::delegated::is_delegated_grant(request.grant_type);
    let (status, body) = match outcome {
        // Device code, authorization code and refresh token grants (issue 18).
        _ if delegated => {
            let pairs = form
                .pairs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect();
            super::delegated::token(&shared, &pairs, now_ns)
        }
        Ok(()) => {
            let lifetime = shared.config.token_lifetime;
            let access_token = super::delegated::app_token(
                &shared,
                &tenant,
                request.client_id.unwrap_or_default(),
                now_ns,
            )
            .unwrap_or_else(|| format!("mock-at-{}", reply::new_uuid()));
            shared.remember_token(access_token.clone(), now_ns, lifetime);
            let body = json!({
                "token_type": "Bearer",
                "expires_in": lifetime.as_secs(),
                "ext_expires_in": lifetime.as_secs(),
                "access_token": access_token,
            });
            (StatusCode::OK, body)
        }
        Err(error) => {
            let body = json!({
                "error": error.error,
                "error_description": format!("AADSTS{}: {}", error.code, error.description),
                "error_codes": [error.code],
                "timestamp": log::entra_timestamp(shared.wall(now_ns)),
                "trace_id": ids.request_id,
                "correlation_id": ids.client_request_id(),
            });
            (error.status, body)
        }
    };

    if shared.logging() {
        shared.log(LoggedRequest {
            t_ms: now_ns as f64 / 1e6,
            time: log::rfc3339_millis(shared.wall(now_ns)),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: None,
            status: status.as_u16(),
            // Never the form itself: it carries the secret or the assertion.
            body: Some(json!({
                "grantType": request.grant_type,
                "clientId": request.client_id,
            })),
            token: None,
            client_request_id: ids.sent(),
            request_id: ids.request_id.clone(),
            retry_after: None,
            window_end_ms: None,
            inside_told_window: false,
        });
    }
    reply::json(status, &ids, reply::to_bytes(&body), None)
}

/// The URLs a client assertion may name as its audience: this server's token URL, by the Host
/// the client used and by the bound address.
fn audiences(shared: &Shared, headers: &HeaderMap, tenant: &str) -> Vec<String> {
    let mut hosts = Vec::with_capacity(2);
    if let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        hosts.push(host.to_owned());
    }
    hosts.push(shared.local_addr.to_string());
    hosts
        .into_iter()
        .map(|host| format!("http://{host}/{tenant}/oauth2/v2.0/token"))
        .collect()
}

/// An Entra error: HTTP status, `error`, and the AADSTS code with its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl TokenError {
    fn invalid_request(code: u32, description: String) -> TokenError {
        TokenError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            code,
            description,
        }
    }

    fn missing(parameter: &str) -> TokenError {
        TokenError::invalid_request(
            900144,
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    fn invalid_client(code: u32, description: String) -> TokenError {
        TokenError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            code,
            description,
        }
    }
}

/// The fields of a token request that matter, wherever they came from.
#[derive(Debug, Default)]
pub(crate) struct TokenRequest<'f> {
    grant_type: Option<&'f str>,
    scope: Option<&'f str>,
    client_id: Option<&'f str>,
    client_secret: Option<&'f str>,
    assertion_type: Option<&'f str>,
    assertion: Option<&'f str>,
}

impl<'f> TokenRequest<'f> {
    fn read(form: &'f Form) -> TokenRequest<'f> {
        let mut request = TokenRequest {
            grant_type: form.get("grant_type"),
            scope: form.get("scope"),
            client_id: form.get("client_id"),
            client_secret: form.get("client_secret"),
            assertion_type: form.get("client_assertion_type"),
            assertion: form.get("client_assertion"),
        };
        // RFC 6749 section 2.3.1: the secret may come as HTTP Basic instead of form fields.
        if request.client_secret.is_none()
            && let Some((id, secret)) = &form.basic
        {
            request.client_id = request.client_id.or(Some(id.as_str()));
            request.client_secret = Some(secret.as_str());
        }
        request
    }
}

/// Decides a token request: `Ok` issues a token.
#[cfg(test)]
pub(crate) fn judge(
    request: &TokenRequest<'_>,
    config: &MockConfig,
    tenant: &str,
    audiences: &[String],
    now_secs: f64,
) -> Result<(), TokenError> {
    judge_with(request, config, tenant, audiences, now_secs, None)
}

/// As [`judge`], with the verdict on a federated assertion (workload identity's file, a GitHub
/// OIDC token) when the assertion is one: `(AADSTS code, description)` on refusal.
pub(crate) fn judge_with(
    request: &TokenRequest<'_>,
    config: &MockConfig,
    tenant: &str,
    audiences: &[String],
    now_secs: f64,
    federated: Option<Result<(), (u32, String)>>,
) -> Result<(), TokenError> {
    let grant_type = request
        .grant_type
        .ok_or_else(|| TokenError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(TokenError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            code: 70003,
            description: format!(
                "The app requested an unsupported grant type '{grant_type}'. This mock serves client_credentials only."
            ),
        });
    }
    let scope = request.scope.ok_or_else(|| TokenError::missing("scope"))?;
    if !scope.ends_with("/.default") {
        return Err(TokenError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_scope",
            code: 1002012,
            description: format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        });
    }
    let client_id = request
        .client_id
        .ok_or_else(|| TokenError::missing("client_id"))?;
    if let Some(expected) = &config.client_id
        && client_id != expected
    {
        return Err(TokenError {
            status: StatusCode::BAD_REQUEST,
            error: "unauthorized_client",
            code: 700016,
            description: format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        });
    }
    if let Some(secret) = request.client_secret {
        return match &config.client_secret {
            Some(expected) if secret != expected => Err(TokenError::invalid_client(
                7000215,
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
            )),
            _ => Ok(()),
        };
    }
    if let Some(assertion) = request.assertion {
        if request.assertion_type != Some(JWT_BEARER) {
            return Err(TokenError::invalid_client(
                700027,
                format!(
                    "Client assertion failed validation: client_assertion_type must be {JWT_BEARER}."
                ),
            ));
        }
        if let Some(verdict) = federated {
            return verdict
                .map_err(|(code, description)| TokenError::invalid_client(code, description));
        }
        return check_assertion(assertion, audiences, client_id, now_secs).map_err(|reason| {
            TokenError::invalid_client(
                700027,
                format!("Client assertion failed validation: {reason}."),
            )
        });
    }
    Err(TokenError::invalid_client(
        7000216,
        "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".to_owned(),
    ))
}

/// Checks a client assertion's structure and claims as Entra's certificate-credentials page
/// describes them. jsonwebtoken reads the header and the claims; the signature is not verified
/// (the mock holds no certificate), and times are checked here against the mock's clock, not by
/// jsonwebtoken's `Validation`, which reads the system clock.
pub(crate) fn check_assertion(
    jwt: &str,
    audiences: &[String],
    client_id: &str,
    now_secs: f64,
) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header_part, claims_part, signature] = parts.as_slice() else {
        return Err(
            "the assertion is not a JWT: it must be three base64url parts separated by dots"
                .to_owned(),
        );
    };
    // jsonwebtoken reads unpadded base64url only; padded parts have always been accepted here.
    let unpadded = [header_part, claims_part, signature].map(|part| part.trim_end_matches('='));
    let unpadded = unpadded.join(".");
    // A header that is JSON but does not fit jsonwebtoken's `Header` (an unknown or missing alg,
    // most likely) is reported where the alg check stands, after the claims and the signature.
    let header = jsonwebtoken::decode_header(&unpadded);
    if let Err(e) = &header
        && !matches!(e.kind(), ErrorKind::Json(e) if e.is_data())
    {
        return Err(HEADER_NOT_JSON.to_owned());
    }
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(&unpadded)
        .map_err(|_| "the JWT claims are not base64url-encoded JSON")?;
    if signature.is_empty() || decode_base64(&URL_SAFE_NO_PAD, signature).is_none() {
        return Err("the JWT signature part is missing or not base64url".to_owned());
    }
    let header = header.map_err(|e| untyped_header(header_part, &e))?;

    if !matches!(header.alg, Algorithm::PS256 | Algorithm::RS256) {
        // `Algorithm`'s Debug is its JOSE name.
        return Err(format!(
            "header alg must be PS256 (or RS256), not '{:?}'",
            header.alg
        ));
    }
    if !header
        .typ
        .as_deref()
        .is_some_and(|typ| typ.eq_ignore_ascii_case("JWT"))
    {
        return Err("header typ must be JWT".to_owned());
    }
    let has_thumbprint = [&header.x5t_s256, &header.x5t]
        .into_iter()
        .flatten()
        .any(|thumbprint| !thumbprint.is_empty());
    if !has_thumbprint {
        return Err("header must carry x5t#S256 (or x5t), the certificate thumbprint".to_owned());
    }

    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => audiences.contains(aud),
        Some(Value::Array(auds)) => auds.iter().any(|aud| {
            aud.as_str()
                .is_some_and(|a| audiences.iter().any(|x| x == a))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(format!(
            "aud must be this token endpoint, {}, not {}",
            audiences.first().map(String::as_str).unwrap_or_default(),
            claims
                .get("aud")
                .map(Value::to_string)
                .unwrap_or_else(|| "missing".to_owned())
        ));
    }
    for claim in ["iss", "sub"] {
        if claims.get(claim).and_then(Value::as_str) != Some(client_id) {
            return Err(format!("{claim} must be the client id '{client_id}'"));
        }
    }
    if claims
        .get("jti")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("jti is missing".to_owned());
    }
    let nbf = claims
        .get("nbf")
        .and_then(Value::as_f64)
        .ok_or("nbf is missing or not a number")?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or("exp is missing or not a number")?;
    if nbf > now_secs + CLOCK_SKEW_SECS {
        return Err(format!("nbf is {:.0} s in the future", nbf - now_secs));
    }
    if exp <= now_secs {
        return Err(format!(
            "the assertion expired {:.0} s ago (exp)",
            now_secs - exp
        ));
    }
    if exp - nbf > MAX_ASSERTION_LIFETIME_SECS {
        return Err(format!(
            "exp must be at most 10 minutes after nbf, not {:.0} s",
            exp - nbf
        ));
    }
    Ok(())
}

const HEADER_NOT_JSON: &str = "the JWT header is not base64url-encoded JSON";

/// Why a JSON header did not fit jsonwebtoken's `Header`. jsonwebtoken refuses an alg it does not
/// know and a missing one; those get the alg check's words, as before. Otherwise some other
/// registered field has the wrong type, and jsonwebtoken's error names it.
fn untyped_header(part: &str, error: &jsonwebtoken::errors::Error) -> String {
    let Some(header) = decode_base64(&URL_SAFE_NO_PAD, part)
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
    else {
        return HEADER_NOT_JSON.to_owned();
    };
    match header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "PS256" | "RS256" => format!("the JWT header is not a valid JOSE header: {error}"),
        alg => format!("header alg must be PS256 (or RS256), not '{alg}'"),
    }
}

/// Decodes base64 with or without `=` padding, as clients send both: `engine` is one of the
/// unpadded engines (`STANDARD_NO_PAD` for HTTP Basic, `URL_SAFE_NO_PAD` for JWTs).
fn decode_base64(engine: &impl Engine, text: &str) -> Option<Vec<u8>> {
    engine.decode(text.trim_end_matches('=')).ok()
}

/// A decoded `application/x-www-form-urlencoded` body, plus HTTP Basic credentials if sent.
#[derive(Debug, Default)]
pub(crate) struct Form {
    pairs: Vec<(String, String)>,
    basic: Option<(String, String)>,
}

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Form {
        Form {
            pairs: url::form_urlencoded::parse(body).into_owned().collect(),
            basic: None,
        }
    }

    fn with_basic(mut self, headers: &HeaderMap) -> Form {
        self.basic = basic_credentials(headers);
        self
    }

    /// The first non-empty value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// One form-urlencoded component, as RFC 6749 section 2.3.1 encodes each half of HTTP Basic
/// credentials. `form_urlencoded::parse` reads whole bodies only, and would split a raw `=` or
/// `&` that a careless client left in a secret.
fn form_decode(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(decode_base64(&STANDARD_NO_PAD, encoded.trim())?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "11111111-2222-3333-4444-555555555555";
    const NOW: f64 = 1_700_000_000.0;

    fn b64url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn jwt(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes()),
            b64url(b"not really a signature")
        )
    }

    fn aud() -> Vec<String> {
        vec!["http://127.0.0.1:9/tenant/oauth2/v2.0/token".to_owned()]
    }

    fn good_header() -> Value {
        json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "abc"})
    }

    fn good_claims() -> Value {
        json!({
            "aud": aud()[0], "iss": ID, "sub": ID, "jti": "j-1",
            "nbf": NOW, "iat": NOW, "exp": NOW + 600.0,
        })
    }

    #[test]
    fn decodes_both_base64_alphabets() {
        let url = &URL_SAFE_NO_PAD;
        assert_eq!(decode_base64(url, "aGk_").unwrap(), b"hi?");
        assert_eq!(decode_base64(&STANDARD_NO_PAD, "aGk/").unwrap(), b"hi?");
        assert_eq!(decode_base64(url, "aGk/"), None);
        assert_eq!(decode_base64(&STANDARD_NO_PAD, "aA==").unwrap(), b"h");
        assert_eq!(decode_base64(&STANDARD_NO_PAD, "aA").unwrap(), b"h");
        assert_eq!(decode_base64(url, "a"), None);
        for text in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\xff\xfe\x00"] {
            assert_eq!(decode_base64(url, &b64url(text)).unwrap(), text);
        }
    }

    #[test]
    fn reads_forms_as_entra_does() {
        let form = Form::parse(b"a=1&&b=x+y%2Bz&c&scope=&scope=s%2F.default&a=2&d=%FF");
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), Some("x y+z"));
        assert_eq!(
            form.get("c"),
            None,
            "a key without a value counts as absent"
        );
        assert_eq!(
            form.get("scope"),
            Some("s/.default"),
            "the first non-empty value"
        );
        assert_eq!(form.get("d"), Some("\u{FFFD}"));
        assert_eq!(form.get("e"), None);
    }

    #[test]
    fn accepts_a_well_formed_assertion_in_either_header_style() {
        assert_eq!(
            check_assertion(&jwt(good_header(), good_claims()), &aud(), ID, NOW),
            Ok(())
        );
        let old_style = json!({"alg": "RS256", "typ": "JWT", "x5t": "abc"});
        assert_eq!(
            check_assertion(&jwt(old_style, good_claims()), &aud(), ID, NOW),
            Ok(())
        );
        // Padded parts are read as well.
        let padded = [good_header(), good_claims()]
            .map(|part| base64::engine::general_purpose::URL_SAFE.encode(part.to_string()));
        let padded = format!("{}.{}.c2lnbmVk", padded[0], padded[1]);
        assert!(padded.contains('='), "{padded}");
        assert_eq!(check_assertion(&padded, &aud(), ID, NOW), Ok(()));
        // 59 s of clock skew is tolerated.
        let mut claims = good_claims();
        claims["nbf"] = json!(NOW + 59.0);
        assert_eq!(
            check_assertion(&jwt(good_header(), claims), &aud(), ID, NOW),
            Ok(())
        );
    }

    #[test]
    fn names_the_failed_check() {
        let mut cases: Vec<(String, &str)> = vec![
            ("abc.def".to_owned(), "three base64url parts"),
            ("a!.b.c".to_owned(), "header is not base64url"),
            (
                jwt(good_header(), good_claims())
                    .rsplit_once('.')
                    .unwrap()
                    .0
                    .to_owned()
                    + ".",
                "signature part is missing",
            ),
        ];
        let header_cases = [
            (
                json!({"alg": "HS256", "typ": "JWT", "x5t#S256": "a"}),
                "alg must be PS256",
            ),
            (
                json!({"alg": "none", "typ": "JWT", "x5t#S256": "a"}),
                "alg must be PS256 (or RS256), not 'none'",
            ),
            (
                json!({"typ": "JWT", "x5t#S256": "a"}),
                "alg must be PS256 (or RS256), not ''",
            ),
            (json!({"alg": "PS256", "x5t#S256": "a"}), "typ must be JWT"),
            (json!({"alg": "PS256", "typ": "JWT"}), "x5t#S256"),
            (
                json!({"alg": "PS256", "typ": "JWT", "x5t": ""}),
                "x5t#S256 (or x5t)",
            ),
            (json!([1]), "header is not base64url-encoded JSON"),
            // jsonwebtoken types every registered header field.
            (
                json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "a", "kid": 5}),
                "not a valid JOSE header",
            ),
        ];
        for (header, wanted) in header_cases {
            cases.push((jwt(header, good_claims()), wanted));
        }
        let claim_cases: [(&str, Value, &str); 8] = [
            (
                "aud",
                json!("https://login.microsoftonline.com/t/oauth2/v2.0/token"),
                "aud must be this token endpoint",
            ),
            ("iss", json!("someone"), "iss must be the client id"),
            ("sub", json!("someone"), "sub must be the client id"),
            ("jti", json!(""), "jti is missing"),
            ("nbf", json!(NOW + 120.0), "nbf is 120 s in the future"),
            ("exp", json!(NOW - 1.0), "expired"),
            ("exp", json!(NOW + 601.0), "at most 10 minutes after nbf"),
            ("nbf", json!("soon"), "nbf is missing"),
        ];
        for (claim, value, wanted) in claim_cases {
            let mut claims = good_claims();
            claims[claim] = value;
            cases.push((jwt(good_header(), claims), wanted));
        }
        // With more than one fault, the first check in Entra's order names it: claims that are
        // not JSON come before an alg jsonwebtoken does not know.
        let none = json!({"alg": "none", "typ": "JWT", "x5t#S256": "a"});
        let bad_claims = jwt(none, good_claims());
        let (header, rest) = bad_claims.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        cases.push((
            format!("{header}.e30K!.{signature}"),
            "claims are not base64url",
        ));
        for (assertion, wanted) in cases {
            let reason = check_assertion(&assertion, &aud(), ID, NOW).unwrap_err();
            assert!(
                reason.contains(wanted),
                "{reason:?} should contain {wanted:?}"
            );
        }
    }

    fn judged(body: &str, config: &MockConfig) -> Result<(), TokenError> {
        let form = Form::parse(body.as_bytes());
        judge(&TokenRequest::read(&form), config, "tenant", &aud(), NOW)
    }

    #[test]
    fn checks_grant_scope_client_and_secret_in_order() {
        let config = MockConfig {
            client_id: Some(ID.to_owned()),
            client_secret: Some("s3cr+t&x".to_owned()),
            ..MockConfig::default()
        };
        let good = format!(
            "grant_type=client_credentials&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&client_id={ID}&client_secret=s3cr%2Bt%26x"
        );
        assert_eq!(judged(&good, &config), Ok(()));
        let code = |body: &str| judged(body, &config).unwrap_err().code;
        assert_eq!(code(&good.replace("client_credentials", "password")), 70003);
        assert_eq!(
            code(&good.replace("grant_type=client_credentials&", "")),
            900144
        );
        assert_eq!(code(&good.replace("%2F.default", "%2FUser.Read")), 1002012);
        assert_eq!(code(&good.replace(ID, "other")), 700016);
        assert_eq!(code(&good.replace("s3cr%2Bt", "wrong")), 7000215);
        assert_eq!(
            code(&good.replace("&client_secret=s3cr%2Bt%26x", "")),
            7000216
        );
        let wrong = judged(&good.replace("s3cr%2Bt", "wrong"), &config).unwrap_err();
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.error, "invalid_client");
    }

    #[test]
    fn accepts_an_assertion_or_basic_credentials() {
        let config = MockConfig {
            client_id: Some(ID.to_owned()),
            client_secret: Some("pw".to_owned()),
            ..MockConfig::default()
        };
        let assertion = jwt(good_header(), good_claims());
        let body = format!(
            "grant_type=client_credentials&scope=x%2F.default&client_id={ID}&client_assertion_type={}&client_assertion={assertion}",
            JWT_BEARER.replace(':', "%3A")
        );
        assert_eq!(judged(&body, &config), Ok(()));
        let bad = body.replace("client_assertion_type=urn", "client_assertion_type=urx");
        assert_eq!(judged(&bad, &config).unwrap_err().code, 700027);

        let mut headers = HeaderMap::new();
        let basic = format!("{ID}:pw");
        let encoded = base64::engine::general_purpose::STANDARD.encode(basic);
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        let form =
            Form::parse(b"grant_type=client_credentials&scope=x/.default").with_basic(&headers);
        let request = TokenRequest::read(&form);
        assert_eq!(judge(&request, &config, "t", &aud(), NOW), Ok(()));
    }
}
