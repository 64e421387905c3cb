//! One function per endpoint: decode the request, call the service, encode
//! the reply. No rule of the contract lives here beyond body shapes.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use uuid::Uuid;

use super::error::{json_bytes_response, json_response, no_content, ApiError};
use crate::metrics::Metrics;
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
    service.health().await.map_err(|e| {
        // The contract knows one unhealthy status; the message says why
        // (a full disk included).
        let mut error = ApiError::from(e);
        error.status = StatusCode::SERVICE_UNAVAILABLE;
        error
    })?;
    // The engine's name tells an operator behind a load balancer which
    // storage a node runs on; it discloses nothing of the states.
    let body = serde_json::json!({
        "status": "ok",
        "database": "ok",
        "engine": service.store().engine(),
    });
    Ok(Reply::new(json_response(StatusCode::OK, &body), ""))
}

/// `{"token": "<JWE>"}`: an item of a save body, and a load's reply.
#[derive(Deserialize, serde::Serialize)]
struct TokenItem {
    token: String,
}

/// Parses a save body: a non-empty JSON array of `{"token": "<JWE>"}`.
pub fn parse_save_body(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let items: Vec<TokenItem> = parse_json(body, "a JSON array of {\"token\": \"<JWE>\"} objects")?;
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "request body is an empty array; send at least one {\"token\": \"<JWE>\"}",
        ));
    }
    Ok(items.into_iter().map(|i| i.token).collect())
}

/// Parses a delete body: a JSON array of canonical UUID strings.
pub fn parse_delete_body(body: &[u8]) -> Result<Vec<Uuid>, ApiError> {
    let raw: Vec<String> = parse_json(body, "a JSON array of state id strings")?;
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_canonical_uuid(s).ok_or_else(|| {
                ApiError::bad_request(format!("state id {i} in the body is not a UUID"))
            })
        })
        .collect()
}

/// `POST {base}/states/{tenant}`.
pub async fn save(
    service: &Service,
    metrics: &Metrics,
    auth: &Authenticated,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let tokens = parse_save_body(body)?;
    let report = service.save(auth, tokens).await?;
    metrics.saved(report.outcome);
    let ids: Vec<String> = report.ids.iter().map(Uuid::to_string).collect();
    let note = format!(
        "tenant={} states={} applied={} ignored={}",
        auth.tenant,
        ids.join(","),
        report.outcome.applied,
        report.outcome.ignored
    );
    Ok(Reply::new(no_content(), note))
}

/// `GET {base}/states/{tenant}/{id}`.
pub async fn load(
    service: &Service,
    metrics: &Metrics,
    auth: &Authenticated,
    id: Uuid,
) -> Result<Reply, ApiError> {
    let token = service
        .load(auth, id)
        .await?
        .ok_or_else(ApiError::no_state)?;
    metrics.loaded();
    let note = format!("tenant={} state={id}", auth.tenant);
    Ok(Reply::new(
        json_bytes_response(StatusCode::OK, token_body(token)),
        note,
    ))
}

/// `{"token":"<token>"}`, a load's reply body. A compact JWE (base64url
/// and dots) needs no JSON escape, so it is copied in as it is: serde's
/// escaping goes byte by byte, and on a 256 KiB state's token took ~6% of
/// the load's CPU, five to ten times this check (docs/performance.md). A string
/// that does need escaping is serialized by serde.
fn token_body(token: String) -> Vec<u8> {
    if needs_json_escape(&token) {
        return serde_json::to_vec(&TokenItem { token }).unwrap_or_default();
    }
    const OPEN: &[u8] = b"{\"token\":\"";
    const CLOSE: &[u8] = b"\"}";
    let mut body = Vec::with_capacity(OPEN.len() + token.len() + CLOSE.len());
    body.extend_from_slice(OPEN);
    body.extend_from_slice(token.as_bytes());
    body.extend_from_slice(CLOSE);
    body
}

/// Whether `s` holds a byte a JSON string must escape: `"`, `\` or a
/// control character (RFC 8259, section 7). Branch-free over each 64-byte
/// chunk, which the compiler turns into vector compares.
fn needs_json_escape(s: &str) -> bool {
    s.as_bytes().chunks(64).any(|chunk| {
        chunk.iter().fold(0u8, |found, &b| {
            found | u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\')
        }) != 0
    })
}

/// `DELETE {base}/states/{tenant}`.
pub async fn delete(
    service: &Service,
    metrics: &Metrics,
    auth: &Authenticated,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let ids = parse_delete_body(body)?;
    let requested = ids.len();
    let removed = service.delete(auth, ids).await?;
    metrics.deleted(removed);
    Ok(Reply::new(
        no_content(),
        format!("requested={requested} removed={removed}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_bodies() {
        assert_eq!(
            parse_save_body(br#"[{"token":"a.b.c.d.e"}]"#).unwrap(),
            vec!["a.b.c.d.e"]
        );
        for bad in [
            &b"[]"[..],
            b"{}",
            b"[{\"tok\":1}]",
            b"[{\"token\":5}]",
            b"\xff",
            b"",
        ] {
            assert_eq!(parse_save_body(bad).unwrap_err().status.as_u16(), 400);
        }
    }

    #[test]
    fn delete_bodies_and_messages_do_not_echo_input() {
        assert!(parse_delete_body(b"[]").unwrap().is_empty());
        let one = parse_delete_body(br#"["918f5a24-290e-4659-9cd6-c8d95aee92c6"]"#).unwrap();
        assert_eq!(one.len(), 1);
        let err = parse_delete_body(br#"["secret-looking-value"]"#).unwrap_err();
        assert!(
            !err.message.contains("secret-looking-value"),
            "{}",
            err.message
        );
        let err = parse_delete_body(br#"[12345678]"#).unwrap_err();
        assert!(!err.message.contains("12345678"), "{}", err.message);
    }

    /// The reply body is what serde writes for `{"token": ...}`, whether the
    /// string is copied in as it is or needs escaping, with the byte to
    /// escape at either end of a 64-byte chunk (the check's unit), of the
    /// string, and in between.
    #[test]
    fn token_bodies_are_the_json_serde_writes() {
        let expected =
            |token: &str| serde_json::to_vec(&serde_json::json!({ "token": token })).unwrap();
        let compact = "eyJhbGciOiJFQ0RILUVTK0ExOTJLVyJ9.AbC-_09.xyz".repeat(7);
        assert!(!needs_json_escape(&compact));
        assert_eq!(token_body(compact.clone()), expected(&compact));
        assert_eq!(token_body(String::new()), expected(""));
        assert!(!needs_json_escape("naïve \u{7f} ok"));
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in [0, 1, 63, 64, 65, 127, compact.len() - 1] {
                let mut token = compact.clone();
                token.insert(at, special);
                assert!(needs_json_escape(&token), "{special:?} at {at}");
                let body = token_body(token.clone());
                assert_eq!(body, expected(&token), "{special:?} at {at}");
                let parsed: TokenItem = serde_json::from_slice(&body).unwrap();
                assert_eq!(parsed.token, token);
            }
        }
    }
}
