//! Request authentication, before any handler runs: optional HTTP Basic
//! credentials, the two key-ID headers, then the request signature (checked
//! by the service through [`crate::crypto::request`]). The contract's
//! header names live here and nowhere else in the server.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::error::ApiError;
use crate::keys::KeyRole;
use crate::service::{Authenticated, KeyIds, Service};

/// The header naming the platform key the response must be encrypted to.
pub const PLATFORM_KEY_HEADER: &str = "X-ManyWho-Platform-Key-ID";
/// The header naming the receiver key the response must be signed with.
pub const RECEIVER_KEY_HEADER: &str = "X-ManyWho-Receiver-Key-ID";
/// The request-signature header.
pub const SIGNATURE_HEADER: &str = "X-ManyWho-Signature";

/// The key-ID header that names a key of `role`.
pub fn key_header(role: KeyRole) -> &'static str {
    match role {
        KeyRole::Platform => PLATFORM_KEY_HEADER,
        KeyRole::Receiver => RECEIVER_KEY_HEADER,
    }
}

/// HTTP Basic credentials the platform must present.
pub struct BasicCredentials {
    // "user:password", compared in constant time.
    expected: Vec<u8>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BasicCredentials(<redacted>)")
    }
}

impl BasicCredentials {
    /// Credentials for `user` and `password`.
    pub fn new(user: &str, password: &str) -> Self {
        Self {
            expected: format!("{user}:{password}").into_bytes(),
        }
    }

    /// Whether `headers` carry exactly these credentials.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            })
            .and_then(|b64| STANDARD.decode(b64).ok());
        match presented {
            Some(bytes) => bool::from(bytes.ct_eq(&self.expected)),
            None => false,
        }
    }
}

/// Authenticates a request for `tenant` at `path`.
pub fn authenticate(
    service: &Service,
    basic: Option<&BasicCredentials>,
    headers: &HeaderMap,
    tenant: Uuid,
    path: &str,
) -> Result<Authenticated, ApiError> {
    if let Some(basic) = basic {
        if !basic.accepts(headers) {
            return Err(ApiError::basic_auth_required());
        }
    }
    let key_ids = KeyIds {
        platform: key_id(headers, PLATFORM_KEY_HEADER)?,
        receiver: key_id(headers, RECEIVER_KEY_HEADER)?,
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    Ok(service.authenticate(signature, key_ids, tenant, path)?)
}

fn key_id(headers: &HeaderMap, name: &'static str) -> Result<String, ApiError> {
    let value = headers
        .get(name)
        .map(|v| v.to_str().map(str::trim))
        .transpose()
        .map_err(|_| ApiError::bad_request(format!("{name} header is not valid text")))?
        .unwrap_or("");
    if value.is_empty() {
        return Err(ApiError::bad_request(format!("{name} header is missing")));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let creds = BasicCredentials::new("flow", "s3cret");
        let mut headers = HeaderMap::new();
        assert!(!creds.accepts(&headers));
        let good = format!("Basic {}", STANDARD.encode("flow:s3cret"));
        headers.insert(AUTHORIZATION, good.parse().unwrap());
        assert!(creds.accepts(&headers));
        let bad = format!("Basic {}", STANDARD.encode("flow:s3cre"));
        headers.insert(AUTHORIZATION, bad.parse().unwrap());
        assert!(!creds.accepts(&headers));
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(!creds.accepts(&headers));
        assert!(!format!("{creds:?}").contains("s3cret"));
    }
}
