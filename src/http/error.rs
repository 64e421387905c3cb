//! The one place where errors become HTTP statuses and JSON bodies.
//!
//! Every error has two audiences: the client gets the status and a safe
//! sentence (`{"status": 400, "message": "…"}`); the journal additionally
//! gets the cause. Neither ever holds a token, a key or state content: the
//! layers below only produce fixed sentences and claim or header names.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use super::auth::key_header;
use crate::metrics::Failure;
use crate::service::ServiceError;
use crate::store::StoreError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The sentence the client sees.
    pub message: String,
    /// Extra detail for the journal only.
    pub cause: Option<String>,
    /// What the metrics count for it (a refused credential, a storage
    /// failure), if anything.
    pub failure: Option<Failure>,
    allow: Option<&'static str>,
    basic_challenge: bool,
}

impl ApiError {
    /// An error with `status` and a client-safe `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            cause: None,
            failure: None,
            allow: None,
            basic_challenge: false,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for a path that is no endpoint.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such endpoint")
    }

    /// 404 for a state that does not exist (or expired).
    pub fn no_state() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such state")
    }

    /// 405, with the methods the path does allow.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed here; allowed: {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    /// 413.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than server.max_body_bytes ({limit} bytes)"),
        )
    }

    /// 401 for missing or wrong HTTP Basic credentials.
    pub fn basic_auth_required() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "this store requires HTTP Basic credentials; the Authorization header is missing or wrong",
        );
        e.basic_challenge = true;
        e.failure = Some(Failure::BASIC);
        e
    }

    /// The JSON response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "status": self.status.as_u16(),
            "message": self.message,
        });
        let mut response = json_response(self.status, &body);
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.basic_challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"flow-store\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let failure = Failure::of(&error);
        let mut api = Self::classify(error);
        api.failure = failure;
        api
    }
}

impl ApiError {
    /// The status and message of `error`.
    fn classify(error: ServiceError) -> Self {
        let message = error.to_string();
        match error {
            ServiceError::Signature(_) => Self::new(StatusCode::UNAUTHORIZED, message),
            ServiceError::Token { error, .. } if error.is_authentication_failure() => {
                Self::new(StatusCode::UNAUTHORIZED, message)
            }
            ServiceError::Token { .. } => Self::bad_request(message),
            // The client knows the key by the header it sent.
            ServiceError::UnknownKey(role) => Self::bad_request(format!(
                "{} names a key this store does not hold",
                key_header(role)
            )),
            ServiceError::Store(store) => store_error(store),
            ServiceError::Seal(_) => {
                let mut e = Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the store's log",
                );
                e.cause = Some(message);
                e
            }
        }
    }
}

fn store_error(error: StoreError) -> ApiError {
    let (status, message) = match &error {
        StoreError::DiskFull => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the store's disk is full; nothing was saved, retry once space is freed",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "storage is unavailable; nothing was changed, retry later",
        ),
    };
    let mut e = ApiError::new(status, message);
    e.cause = Some(error.to_string());
    e
}

/// A JSON response with the headers every response of ours carries.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    json_bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// [`json_response`] for a body already serialized.
pub fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An empty 204.
pub fn no_content() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SignatureError, TokenError};

    fn status(e: ServiceError) -> u16 {
        ApiError::from(e).status.as_u16()
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(status(SignatureError::BadSignature.into()), 401);
        let token = |error| ServiceError::Token { index: 0, error };
        assert_eq!(status(token(TokenError::BadSignature)), 401);
        assert_eq!(status(token(TokenError::UnknownPlatformKey)), 401);
        assert_eq!(status(token(TokenError::UnknownReceiverKey)), 400);
        assert_eq!(status(token(TokenError::Undecryptable)), 400);
        assert_eq!(status(token(TokenError::TooLarge(1))), 400);
        let unknown = ApiError::from(ServiceError::UnknownKey(crate::keys::KeyRole::Receiver));
        assert_eq!(unknown.status.as_u16(), 400);
        assert_eq!(
            unknown.message,
            "X-ManyWho-Receiver-Key-ID names a key this store does not hold"
        );
        assert_eq!(status(StoreError::DiskFull.into()), 507);
        assert_eq!(status(StoreError::Unavailable("x".into()).into()), 503);
    }

    #[test]
    fn refusals_and_storage_failures_are_counted() {
        let failure = |e: ServiceError| ApiError::from(e).failure;
        assert_eq!(
            failure(SignatureError::Missing.into()),
            Some(Failure::Rejected {
                credential: "signature",
                reason: "missing"
            })
        );
        assert_eq!(
            failure(StoreError::DiskFull.into()),
            Some(Failure::Storage("disk_full"))
        );
        assert_eq!(failure(ServiceError::Seal(TokenError::Seal)), None);
        assert_eq!(
            ApiError::basic_auth_required().failure,
            Some(Failure::BASIC)
        );
        assert_eq!(ApiError::no_route().failure, None);
    }

    #[test]
    fn store_causes_stay_out_of_the_body() {
        let e = ApiError::from(ServiceError::from(StoreError::Unavailable(
            "/secret/path".into(),
        )));
        assert!(!e.message.contains("/secret/path"));
        assert!(e.cause.unwrap().contains("/secret/path"));
    }
}
