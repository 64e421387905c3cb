//! The request signature: `X-ManyWho-Signature`, a compact ES384 JWS whose
//! claims bind the request to the platform (`iss`), the URL's tenant
//! (`aud`), a short lifetime (`exp`, at most 5 minutes ahead) and the exact
//! URL path (`path`). It covers neither body nor method; state tokens carry
//! their own signatures.

use josekit::jws::JwsVerifier;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::claims::{check_times, Audience, TimePolicy};
use super::compact::{self, JwsHeader};
use super::error::SignatureError;
use crate::keys::KeyRing;

/// The issuer every platform token names.
pub const PLATFORM_ISSUER: &str = "manywho";

/// Longest `exp` distance for a request signature: 5 minutes.
pub const MAX_LIFETIME_SECONDS: i64 = 5 * 60;

/// Longest signature header accepted (a real one is under 1 KiB).
pub const MAX_SIGNATURE_CHARS: usize = 16 * 1024;

/// The checked claims of a request signature.
#[derive(Debug, Clone, Deserialize)]
pub struct RequestClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: Audience,
    /// Subject.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: f64,
    /// Not before.
    pub nbf: Option<f64>,
    /// Issued at.
    pub iat: Option<f64>,
    /// The signed URL path.
    pub path: String,
}

/// What the request itself says, to compare with the claims.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// The tenant in the URL.
    pub tenant: Uuid,
    /// The URL path, base path included, no query.
    pub path: &'a str,
}

/// Verifies `signature` for `target` as of `now`.
pub fn verify_request_signature(
    signature: &str,
    keys: &KeyRing,
    target: RequestTarget<'_>,
    now: OffsetDateTime,
    skew_seconds: i64,
) -> Result<RequestClaims, SignatureError> {
    let signature = signature.trim();
    if signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    if signature.len() > MAX_SIGNATURE_CHARS {
        return Err(SignatureError::Malformed("it is too long"));
    }
    let segments = compact::split(signature, 3).map_err(SignatureError::Malformed)?;
    let header: JwsHeader = compact::header(segments[0]).map_err(SignatureError::Malformed)?;
    if header.alg != "ES384" {
        return Err(SignatureError::Algorithm);
    }
    let kid = header.kid.as_deref().ok_or(SignatureError::UnknownKey)?;
    let key = keys.platform(kid).ok_or(SignatureError::UnknownKey)?;
    let payload = verify_es384(signature, &segments, key.verifier())
        .map_err(|_| SignatureError::BadSignature)?;
    let claims: RequestClaims = serde_json::from_slice(&payload).map_err(|_| {
        SignatureError::Malformed(
            "the claims are not a JWT claims set with iss, aud, sub, exp and path",
        )
    })?;
    check_request_claims(&claims, target, now, skew_seconds)?;
    Ok(claims)
}

/// Checks an ES384 compact JWS's signature over its first two segments and
/// returns the decoded payload. josekit does the cryptography.
pub(crate) fn verify_es384(
    token: &str,
    segments: &[&str],
    verifier: &dyn JwsVerifier,
) -> Result<Vec<u8>, ()> {
    let signing_input_len = segments[0].len() + 1 + segments[1].len();
    let signature = compact::decode(segments[2]).map_err(|_| ())?;
    // ES384 signatures are r‖s, 48 bytes each.
    if signature.len() != 96 {
        return Err(());
    }
    verifier
        .verify(&token.as_bytes()[..signing_input_len], &signature)
        .map_err(|_| ())?;
    compact::decode(segments[1]).map_err(|_| ())
}

fn check_request_claims(
    claims: &RequestClaims,
    target: RequestTarget<'_>,
    now: OffsetDateTime,
    skew_seconds: i64,
) -> Result<(), SignatureError> {
    let claim = |claim, problem| SignatureError::Claim { claim, problem };
    if claims.iss != PLATFORM_ISSUER {
        return Err(claim("iss", "is not \"manywho\""));
    }
    if !claims.aud.contains_tenant(target.tenant) {
        return Err(claim("aud", "does not name the tenant in the URL"));
    }
    if claims.sub.is_empty() {
        return Err(claim("sub", "is empty"));
    }
    let policy = TimePolicy {
        skew_seconds,
        max_lifetime_seconds: MAX_LIFETIME_SECONDS,
    };
    check_times(claims.exp, claims.nbf, claims.iat, now, policy).map_err(|(c, p)| claim(c, p))?;
    if claims.path != target.path {
        return Err(claim("path", "does not match the request's URL path"));
    }
    Ok(())
}
