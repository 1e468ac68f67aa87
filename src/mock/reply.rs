//! Response plumbing both endpoints share: request ids, the `request-id` / `client-request-id`
//! headers, and turning a status plus JSON bytes into an axum response.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use uuid::Uuid;

use crate::graph::model::MOCK_REQUEST_ID_MARK;

/// A version-4 UUID from the thread-local fast RNG: no syscall and no lock per request.
pub(crate) fn new_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// A request id the mock sends: a random version-4 UUID ending in [`MOCK_REQUEST_ID_MARK`].
pub(crate) fn mock_request_id() -> Uuid {
    let mut bytes = new_uuid().into_bytes();
    bytes[12..].copy_from_slice(&MOCK_REQUEST_ID_MARK);
    Uuid::from_bytes(bytes)
}

/// The ids a response carries: a fresh `request-id`, and the caller's `client-request-id` echoed
/// back (or the request id again when none was sent, as Graph does).
pub(crate) struct Ids {
    pub(crate) request_id: String,
    /// The header as sent, if it was.
    pub(crate) sent_client_request_id: Option<HeaderValue>,
}

impl Ids {
    pub(crate) fn new(headers: &HeaderMap) -> Ids {
        Ids {
            request_id: mock_request_id().to_string(),
            sent_client_request_id: headers.get("client-request-id").cloned(),
        }
    }

    /// The client request id as echoed: the caller's, or the request id.
    pub(crate) fn client_request_id(&self) -> String {
        match &self.sent_client_request_id {
            Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            None => self.request_id.clone(),
        }
    }

    /// The caller's client request id for the log, if one was sent.
    pub(crate) fn sent(&self) -> Option<String> {
        self.sent_client_request_id
            .as_ref()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    }
}

/// A JSON response with the correlation headers and, when given, `Retry-After`.
pub(crate) fn json(
    status: StatusCode,
    ids: &Ids,
    body: Vec<u8>,
    retry_after: Option<&str>,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&ids.request_id) {
        headers.insert("request-id", value.clone());
        let echoed = ids.sent_client_request_id.clone().unwrap_or(value);
        headers.insert("client-request-id", echoed);
    }
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// A serialized JSON value; serializing a `serde_json::Value` or a plain struct cannot fail.
pub(crate) fn to_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("mock bodies are plain JSON values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = new_uuid();
        let b = new_uuid();
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a, b);
    }

    #[test]
    fn echoes_the_client_request_id_or_the_request_id() {
        let mut headers = HeaderMap::new();
        let ids = Ids::new(&headers);
        assert_eq!(ids.client_request_id(), ids.request_id);
        let response = json(StatusCode::OK, &ids, b"{}".to_vec(), None);
        assert_eq!(
            response.headers()["client-request-id"],
            response.headers()["request-id"]
        );
        headers.insert("client-request-id", HeaderValue::from_static("abc"));
        let ids = Ids::new(&headers);
        assert_eq!(ids.sent().as_deref(), Some("abc"));
        let response = json(StatusCode::OK, &ids, b"{}".to_vec(), Some("2"));
        assert_eq!(response.headers()["client-request-id"], "abc");
        assert_eq!(response.headers()["retry-after"], "2");
    }
}
