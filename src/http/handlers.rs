//! One function per endpoint: decode the request, call the service, encode
//! the reply. No rule of the contract lives here beyond body shapes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use super::error::{json_response, no_content, ApiError};
use crate::model::parse_canonical_uuid;
use crate::service::{Authenticated, Service};

/// A handler's reply, with a note for the request log (ids and counts, never
/// content).
pub struct Reply {
    /// The response.
    pub response: Response<Full<Bytes>>,
    /// What the access log line should add.
    pub note: String,
}

impl Reply {
    fn new(response: Response<Full<Bytes>>, note: impl Into<String>) -> Self {
        Self {
            response,
            note: note.into(),
        }
    }
}

/// `GET {base}/health`.
pub async fn health(service: &Service) -> Result<Reply, ApiError> {
    service.health().await?;
    let body = serde_json::json!({"status": "ok", "database": "ok"});
    Ok(Reply::new(json_response(StatusCode::OK, &body), ""))
}

#[derive(Deserialize)]
struct TokenItem {
    token: String,
}

/// `POST {base}/states/{tenant}`.
pub async fn save(service: &Service, auth: &Authenticated, body: &[u8]) -> Result<Reply, ApiError> {
    let items: Vec<TokenItem> = parse_json(body, "a JSON array of {\"token\": \"<JWE>\"} objects")?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "request body is an empty array; send at least one {\"token\": \"<JWE>\"}",
        ));
    }
    let tokens = items.into_iter().map(|i| i.token).collect();
    let outcome = service.save(auth, tokens).await?;
    let note = format!("applied={} ignored={}", outcome.applied, outcome.ignored);
    Ok(Reply::new(no_content(), note))
}

/// `GET {base}/states/{tenant}/{id}`.
pub async fn load(service: &Service, auth: &Authenticated, id: Uuid) -> Result<Reply, ApiError> {
    let token = service
        .load(auth, id)
        .await?
        .ok_or_else(ApiError::no_state)?;
    let body = serde_json::json!({ "token": token });
    Ok(Reply::new(json_response(StatusCode::OK, &body), ""))
}

/// `DELETE {base}/states/{tenant}`.
pub async fn delete(
    service: &Service,
    auth: &Authenticated,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let raw: Vec<String> = parse_json(body, "a JSON array of state id strings")?;
    let ids = raw
        .iter()
        .enumerate()
        .map(|(i, s)| {
            parse_canonical_uuid(s).ok_or_else(|| {
                ApiError::bad_request(format!("state id {i} in the body is not a UUID"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let removed = service.delete(auth, ids).await?;
    Ok(Reply::new(
        no_content(),
        format!("requested={} removed={removed}", raw.len()),
    ))
}

/// Parses a JSON body; the message says what was expected and where parsing
/// stopped, never what the body contained.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body must be {expected} (parsing stopped at line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
