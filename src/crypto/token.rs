//! State tokens: the nested JWTs (a JWE around an ES384 JWS) that carry a
//! state from the platform on save, and back to it on load.
//!
//! Opening runs in a fixed order so that each failure has one meaning:
//! shape and header allow-list → receiver key by `kid` → decryption (and
//! capped inflation) → inner JWS shape → platform key by `kid` → signature →
//! claims. Failures of form are 400s; failures of authenticity are 401s
//! ([`TokenError::is_authentication_failure`]).

use std::io;
use std::sync::LazyLock;

use josekit::jwe::{JweContext, JweDecrypter};
use josekit::jws::{JwsContext, JwsHeader as JosekitJwsHeader};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::claims::{check_times, Audience, TimePolicy};
use super::compact::{self, JweHeader, JwsHeader};
use super::deflate::{self, CappedDeflate, InflationCapExceeded};
use super::error::TokenError;
use super::primitives::contract_jwe_context;
use super::request::{verify_es384, PLATFORM_ISSUER};
use crate::keys::{KeyRing, PlatformKey, ReceiverKey};
use crate::model::{parse_canonical_uuid, State, StateMeta, Timestamp};

/// Longest `exp` distance for a state token: 300 minutes.
pub const MAX_LIFETIME_SECONDS: i64 = 300 * 60;

/// Reply tokens are valid from 2 minutes before to 10 minutes after now.
const REPLY_NOT_BEFORE_SECONDS: i64 = 2 * 60;
const REPLY_LIFETIME_SECONDS: i64 = 10 * 60;

const ENCRYPTED_KEY_OVERHEAD: usize = 8; // AES key wrap adds one 64-bit block
const IV_LEN: usize = 16;
const P384_COORDINATE_LEN: usize = 48;

/// The content encryptions the contract allows, with their key and tag sizes.
fn content_encryption(enc: &str) -> Option<(usize, usize)> {
    match enc {
        "A192CBC-HS384" => Some((48, 24)),
        "A256CBC-HS512" => Some((64, 32)),
        _ => None,
    }
}

/// The framing of reply tokens, built once (a context is a few registries;
/// no key lives in it). It only compresses: inflating is refused.
static REPLY_JWE: LazyLock<JweContext> = LazyLock::new(|| {
    let mut jwe = contract_jwe_context();
    jwe.remove_compression("DEF");
    jwe.add_compression(Box::new(CappedDeflate::new(0)));
    jwe
});
static REPLY_JWS: LazyLock<JwsContext> = LazyLock::new(JwsContext::new);

/// Opens state tokens; built once, shared by all requests.
#[derive(Debug)]
pub struct StateTokenOpener {
    jwe: JweContext,
    max_inflated_bytes: u64,
    skew_seconds: i64,
}

/// The claims of a state token's inner JWS.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateClaims {
    iss: String,
    aud: Audience,
    sub: String,
    exp: f64,
    nbf: Option<f64>,
    iat: Option<f64>,
    id: String,
    tenant: String,
    parent: Option<String>,
    flow: Option<String>,
    flow_version: Option<String>,
    current_map_element: Option<String>,
    current_user: Option<String>,
    #[serde(default)]
    is_done: bool,
    created_at: Option<String>,
    updated_at: String,
    expires_at: Option<String>,
    content: String,
}

impl StateTokenOpener {
    /// An opener that inflates at most `max_inflated_bytes` and tolerates
    /// `skew_seconds` of platform clock lead.
    pub fn new(max_inflated_bytes: u64, skew_seconds: i64) -> Self {
        let mut jwe = contract_jwe_context();
        jwe.remove_compression("DEF");
        jwe.add_compression(Box::new(CappedDeflate::new(max_inflated_bytes)));
        Self {
            jwe,
            max_inflated_bytes,
            skew_seconds,
        }
    }

    /// Opens `token` for the URL's `tenant` as of `now`.
    pub fn open(
        &self,
        token: &str,
        keys: &KeyRing,
        tenant: Uuid,
        now: OffsetDateTime,
    ) -> Result<State, TokenError> {
        let jws = self.decrypt(token, keys)?;
        let payload = verify_inner_jws(&jws, keys)?;
        let claims: StateClaims = serde_json::from_slice(&payload).map_err(|_| {
            TokenError::Malformed(
                "the claims are missing a required claim or have a claim of the wrong type",
            )
        })?;
        self.check_claims(claims, tenant, now)
    }

    fn decrypt(&self, token: &str, keys: &KeyRing) -> Result<String, TokenError> {
        let segments = compact::split(token, 5).map_err(TokenError::Malformed)?;
        let header: JweHeader = compact::header(segments[0]).map_err(TokenError::Malformed)?;
        check_jwe_shape(&header, &segments)?;
        let kid = header
            .kid
            .as_deref()
            .ok_or(TokenError::UnknownReceiverKey)?;
        let key = keys.receiver(kid).ok_or(TokenError::UnknownReceiverKey)?;
        let decrypter: &dyn JweDecrypter = if header.alg == "ECDH-ES+A256KW" {
            key.decrypter_a256kw()
        } else {
            key.decrypter_a192kw()
        };
        let (plaintext, _) = self
            .jwe
            .deserialize_compact(token, decrypter)
            .map_err(|e| self.classify_decrypt_error(e))?;
        String::from_utf8(plaintext)
            .map_err(|_| TokenError::Malformed("the plaintext is not UTF-8"))
    }

    fn classify_decrypt_error(&self, error: josekit::JoseError) -> TokenError {
        let inflation_capped = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<io::Error>())
            .and_then(|e| e.get_ref())
            .is_some_and(|inner| inner.is::<InflationCapExceeded>());
        if inflation_capped {
            TokenError::TooLarge(self.max_inflated_bytes)
        } else {
            TokenError::Undecryptable
        }
    }

    fn check_claims(
        &self,
        c: StateClaims,
        tenant: Uuid,
        now: OffsetDateTime,
    ) -> Result<State, TokenError> {
        let claim = |claim, problem| TokenError::Claim { claim, problem };
        if c.iss != PLATFORM_ISSUER {
            return Err(claim("iss", "is not \"manywho\""));
        }
        if !c.aud.contains_tenant(tenant) {
            return Err(claim("aud", "does not name the tenant in the URL"));
        }
        if c.sub.is_empty() {
            return Err(claim("sub", "is empty"));
        }
        let policy = TimePolicy {
            skew_seconds: self.skew_seconds,
            max_lifetime_seconds: MAX_LIFETIME_SECONDS,
        };
        check_times(c.exp, c.nbf, c.iat, now, policy).map_err(|(n, p)| claim(n, p))?;
        let id = parse_canonical_uuid(&c.id).ok_or(claim("id", "is not a UUID"))?;
        let claimed_tenant =
            parse_canonical_uuid(&c.tenant).ok_or(claim("tenant", "is not a UUID"))?;
        if claimed_tenant != tenant {
            return Err(claim("tenant", "differs from the tenant in the URL"));
        }
        let optional_uuid = |name: &'static str, v: Option<String>| match v {
            None => Ok(None),
            Some(s) => parse_canonical_uuid(&s)
                .map(Some)
                .ok_or(claim(name, "is not a UUID or null")),
        };
        let timestamp = |name: &'static str, v: &str| {
            Timestamp::parse(v).map_err(|_| claim(name, "is not an RFC 3339 timestamp"))
        };
        let meta = StateMeta {
            parent: optional_uuid("parent", c.parent)?,
            flow: optional_uuid("flow", c.flow)?,
            flow_version: optional_uuid("flowVersion", c.flow_version)?,
            current_map_element: optional_uuid("currentMapElement", c.current_map_element)?,
            current_user: optional_uuid("currentUser", c.current_user)?,
            is_done: c.is_done,
            created_at: match c.created_at.as_deref() {
                None | Some("") => None,
                Some(t) => Some(timestamp("createdAt", t)?),
            },
            updated_at: timestamp("updatedAt", &c.updated_at)?,
            expires_at: match c.expires_at.as_deref() {
                None | Some("") => None,
                Some(t) => Some(timestamp("expiresAt", t)?),
            },
        };
        Ok(State {
            tenant,
            id,
            meta,
            content: c.content,
        })
    }
}

/// Checks the JWE header values and segment sizes against the contract.
fn check_jwe_shape(header: &JweHeader, segments: &[&str]) -> Result<(), TokenError> {
    if header.alg != "ECDH-ES+A192KW" && header.alg != "ECDH-ES+A256KW" {
        return Err(TokenError::Algorithm(
            "alg must be ECDH-ES+A192KW or ECDH-ES+A256KW",
        ));
    }
    let (key_len, tag_len) = content_encryption(&header.enc).ok_or(TokenError::Algorithm(
        "enc must be A192CBC-HS384 or A256CBC-HS512",
    ))?;
    if header.zip.as_deref().is_some_and(|z| z != "DEF") {
        return Err(TokenError::Algorithm("zip must be absent or DEF"));
    }
    if header
        .cty
        .as_deref()
        .is_some_and(|c| !c.eq_ignore_ascii_case("JWT"))
    {
        return Err(TokenError::Malformed("cty must be JWT"));
    }
    let epk = &header.epk;
    if epk.kty != "EC" || epk.crv != "P-384" {
        return Err(TokenError::Malformed("epk must be an EC key on P-384"));
    }
    let coordinate_ok = |c: &str| compact::decode(c).is_ok_and(|b| b.len() == P384_COORDINATE_LEN);
    if !coordinate_ok(&epk.x) || !coordinate_ok(&epk.y) {
        return Err(TokenError::Malformed(
            "epk coordinates must be 48 bytes each",
        ));
    }
    let sized = |segment: &str, ok: &dyn Fn(usize) -> bool| {
        compact::decode(segment).is_ok_and(|b| ok(b.len()))
    };
    if !sized(segments[1], &|n| n == key_len + ENCRYPTED_KEY_OVERHEAD) {
        return Err(TokenError::Malformed(
            "the encrypted key has the wrong length",
        ));
    }
    if !sized(segments[2], &|n| n == IV_LEN) {
        return Err(TokenError::Malformed(
            "the initialization vector has the wrong length",
        ));
    }
    // Sized without decoding: josekit decodes the ciphertext, the largest
    // segment by far, and refuses one that is not base64url (undecryptable,
    // 400 too); decoding it here as well cost a 256 KiB save ~2% of its CPU.
    if !compact::decoded_len(segments[3]).is_some_and(|n| n > 0 && n % 16 == 0) {
        return Err(TokenError::Malformed("the ciphertext has the wrong length"));
    }
    if !sized(segments[4], &|n| n == tag_len) {
        return Err(TokenError::Malformed(
            "the authentication tag has the wrong length",
        ));
    }
    Ok(())
}

/// Verifies the inner ES384 JWS with the platform key its `kid` names.
fn verify_inner_jws(jws: &str, keys: &KeyRing) -> Result<Vec<u8>, TokenError> {
    let segments = compact::split(jws, 3)
        .map_err(|_| TokenError::Malformed("the plaintext is not a compact JWS"))?;
    let header: JwsHeader = compact::header(segments[0]).map_err(TokenError::Malformed)?;
    if header.alg != "ES384" {
        return Err(TokenError::BadSignature);
    }
    let kid = header
        .kid
        .as_deref()
        .ok_or(TokenError::UnknownPlatformKey)?;
    let key = keys.platform(kid).ok_or(TokenError::UnknownPlatformKey)?;
    verify_es384(jws, &segments, key.verifier()).map_err(|_| TokenError::BadSignature)
}

/// The claims of a reply token's inner JWS, as the contract lists them.
#[derive(Serialize)]
struct ReplyClaims<'a> {
    iss: String,
    aud: &'static str,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    content: &'a str,
}

/// Builds the token a load returns: `content` signed (ES384) with the
/// receiver key, then encrypted (ECDH-ES+A192KW, A192CBC-HS384) to the
/// platform key, compressed (`zip: DEF`) where that pays
/// ([`deflate::worth_compressing`]).
pub fn seal_state_token(
    content: &str,
    tenant: Uuid,
    id: Uuid,
    receiver: &ReceiverKey,
    platform: &PlatformKey,
    now: OffsetDateTime,
) -> Result<String, TokenError> {
    let now = now.unix_timestamp();
    let claims = ReplyClaims {
        iss: tenant.to_string(),
        aud: PLATFORM_ISSUER,
        sub: id.to_string(),
        iat: now,
        nbf: now - REPLY_NOT_BEFORE_SECONDS,
        exp: now + REPLY_LIFETIME_SECONDS,
        jti: Uuid::new_v4().to_string(),
        content,
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Seal)?;
    let mut jws_header = JosekitJwsHeader::new();
    jws_header.set_token_type("JWT");
    jws_header.set_key_id(receiver.kid());
    let jws = REPLY_JWS
        .serialize_compact(&payload, &jws_header, receiver.signer())
        .map_err(|_| TokenError::Seal)?;
    let mut jwe_header = josekit::jwe::JweHeader::new();
    jwe_header.set_content_encryption("A192CBC-HS384");
    jwe_header.set_content_type("JWT");
    jwe_header.set_key_id(platform.kid());
    if deflate::worth_compressing(jws.as_bytes()) {
        jwe_header.set_compression("DEF");
    }
    REPLY_JWE
        .serialize_compact(jws.as_bytes(), &jwe_header, platform.encrypter())
        .map_err(|_| TokenError::Seal)
}

/// Hostile-input regression tests: each token must be refused with the
/// right class (400 vs 401), without panicking, quickly.
#[cfg(test)]
mod hostile_tests {
    use super::*;
    use crate::config::{KeySource, StoreEntry};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use josekit::jwk::Jwk;
    use serde_json::{json, Value};
    use std::time::Instant;

    const TENANT: &str = "918f5a24-290e-4659-9cd6-c8d95aee92c6";
    const NOW: i64 = 1_790_000_000;

    struct Fixture {
        platform: Jwk,
        receiver: Jwk,
        ring: KeyRing,
        opener: StateTokenOpener,
    }

    fn public(jwk: &Jwk) -> Jwk {
        crate::keys::public_jwk(jwk).unwrap()
    }

    fn fixture() -> Fixture {
        let platform = crate::keys::generate_p384_jwk().unwrap();
        let receiver = crate::keys::generate_p384_jwk().unwrap();
        let ring = KeyRing::load(&[StoreEntry {
            name: "t".into(),
            platform_key: KeySource::Inline(public(&platform).to_string()),
            receiver_key: KeySource::Inline(receiver.to_string()),
        }])
        .unwrap();
        Fixture {
            platform,
            receiver,
            ring,
            opener: StateTokenOpener::new(1024 * 1024, 30),
        }
    }

    fn claims() -> Value {
        json!({
            "iss": "manywho", "aud": TENANT, "sub": TENANT, "exp": NOW + 600,
            "id": "4b8b27d3-e4f3-4a78-8822-12476582af8a", "tenant": TENANT,
            "isDone": false, "updatedAt": "2026-09-21T14:10:00.1234567+01:00",
            "expiresAt": null, "content": "{}",
        })
    }

    impl Fixture {
        fn sign(&self, payload: &[u8]) -> String {
            let mut header = josekit::jws::JwsHeader::new();
            header.set_key_id(self.platform.key_id().unwrap());
            let signer = josekit::jws::ES384.signer_from_jwk(&self.platform).unwrap();
            josekit::jws::serialize_compact(payload, &header, &signer).unwrap()
        }

        fn seal(&self, plaintext: &[u8], zip: bool) -> String {
            let mut header = josekit::jwe::JweHeader::new();
            header.set_content_encryption("A192CBC-HS384");
            header.set_key_id(self.receiver.key_id().unwrap());
            if zip {
                header.set_compression("DEF");
            }
            let encrypter = josekit::jwe::ECDH_ES_A192KW
                .encrypter_from_jwk(&public(&self.receiver))
                .unwrap();
            josekit::jwe::serialize_compact(plaintext, &header, &encrypter).unwrap()
        }

        fn token(&self, claims: &Value) -> String {
            self.seal(self.sign(claims.to_string().as_bytes()).as_bytes(), false)
        }

        fn open(&self, token: &str) -> Result<State, TokenError> {
            let started = Instant::now();
            let result = self.opener.open(
                token,
                &self.ring,
                Uuid::parse_str(TENANT).unwrap(),
                OffsetDateTime::from_unix_timestamp(NOW).unwrap(),
            );
            assert!(
                started.elapsed().as_secs() < 5,
                "took {:?}",
                started.elapsed()
            );
            result
        }
    }

    fn with_header(token: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
        edit(header.as_object_mut().unwrap());
        parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
        parts.join(".")
    }

    fn assert_400(result: Result<State, TokenError>) {
        let error = result.expect_err("hostile token was accepted");
        assert!(
            !error.is_authentication_failure(),
            "expected a 400 class error, got {error:?}"
        );
    }

    #[test]
    fn a_valid_token_opens() {
        let f = fixture();
        let state = f.open(&f.token(&claims())).unwrap();
        assert_eq!(state.content, "{}");
    }

    #[test]
    fn epk_off_the_curve_is_refused() {
        let f = fixture();
        let token = with_header(&f.token(&claims()), |h| {
            let x = h["epk"]["x"].clone();
            h["epk"]["y"] = x;
        });
        assert_400(f.open(&token));
    }

    #[test]
    fn epk_on_another_curve_is_refused() {
        let f = fixture();
        let p256 = josekit::jws::ES256
            .generate_key_pair()
            .unwrap()
            .to_jwk_public_key();
        let token = with_header(&f.token(&claims()), |h| {
            h["epk"]["crv"] = json!("P-256");
            h["epk"]["x"] = p256.parameter("x").unwrap().clone();
            h["epk"]["y"] = p256.parameter("y").unwrap().clone();
        });
        assert_400(f.open(&token));
    }

    #[test]
    fn zip_bomb_stops_at_the_inflation_cap() {
        let f = fixture();
        // 32 MiB of zeros deflates to ~32 KiB; the cap here is 1 MiB.
        let bomb = vec![0u8; 32 * 1024 * 1024];
        let token = f.seal(&bomb, true);
        assert!(token.len() < 200 * 1024);
        assert_eq!(
            f.open(&token).unwrap_err(),
            TokenError::TooLarge(1024 * 1024)
        );
    }

    #[test]
    fn wrong_segment_counts_are_refused() {
        let f = fixture();
        let token = f.token(&claims());
        assert_400(f.open(&format!("{token}.x")));
        let four: Vec<&str> = token.split('.').take(4).collect();
        assert_400(f.open(&four.join(".")));
    }

    #[test]
    fn json_serialization_is_refused() {
        let f = fixture();
        let token = f.token(&claims());
        let p: Vec<&str> = token.split('.').collect();
        let json = json!({"protected": p[0], "encrypted_key": p[1], "iv": p[2], "ciphertext": p[3], "tag": p[4]});
        assert_400(f.open(&json.to_string()));
    }

    #[test]
    fn crit_and_key_url_headers_are_refused() {
        let f = fixture();
        let token = f.token(&claims());
        for (name, value) in [
            ("crit", json!(["exp"])),
            ("jku", json!("https://attacker.example/jwks")),
            ("jwk", json!({"kty": "EC"})),
            ("x5u", json!("https://attacker.example/cert")),
            ("x5c", json!(["MIIB"])),
        ] {
            let hostile = with_header(&token, |h| {
                h.insert(name.into(), value);
            });
            assert_400(f.open(&hostile));
        }
    }

    #[test]
    fn duplicate_header_members_are_refused() {
        let f = fixture();
        let token = f.token(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
        let duplicated = header.replacen('{', "{\"enc\":\"A128GCM\",", 1);
        parts[0] = URL_SAFE_NO_PAD.encode(duplicated);
        assert_400(f.open(&parts.join(".")));
    }

    #[test]
    fn duplicate_claims_are_refused() {
        let f = fixture();
        let text = claims().to_string();
        let duplicated = text.replacen(
            '{',
            "{\"tenant\":\"00000000-0000-0000-0000-000000000000\",",
            1,
        );
        let token = f.seal(f.sign(duplicated.as_bytes()).as_bytes(), false);
        assert_400(f.open(&token));
    }

    #[test]
    fn megabyte_header_is_refused_quickly() {
        let f = fixture();
        let token = with_header(&f.token(&claims()), |h| {
            h.insert("apu".into(), json!("A".repeat(1 << 20)));
        });
        assert_eq!(
            f.open(&token).unwrap_err(),
            TokenError::Malformed("the protected header is too long")
        );
    }

    #[test]
    fn non_utf8_header_and_plaintext_are_refused() {
        let f = fixture();
        let token = f.token(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[0] = URL_SAFE_NO_PAD.encode([0xff, 0xfe, b'{', b'}']);
        assert_400(f.open(&parts.join(".")));
        assert_400(f.open(&f.seal(&[0xff, 0xfe, 0xfd], false)));
    }

    #[test]
    fn wrong_claim_types_are_refused() {
        let f = fixture();
        for (name, value) in [
            ("id", json!(123)),
            ("exp", json!("1790000600")),
            ("isDone", json!("false")),
            ("content", json!({"a": 1})),
            ("updatedAt", json!(1790000000)),
            ("tenant", json!(null)),
        ] {
            let mut c = claims();
            c[name] = value;
            assert_400(f.open(&f.token(&c)));
        }
    }

    #[test]
    fn truncated_encrypted_key_is_refused_not_a_panic() {
        let f = fixture();
        let token = f.token(&claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = "AAAA";
        assert_400(f.open(&parts.join(".")));
        parts[1] = "";
        assert_400(f.open(&parts.join(".")));
    }

    #[test]
    fn inner_signature_problems_are_401() {
        let f = fixture();
        let mut signed = f.sign(claims().to_string().as_bytes());
        // Another last character (one in 64 signatures already ends in 'A').
        let last = signed.pop();
        signed.push(if last == Some('A') { 'B' } else { 'A' });
        let error = f.open(&f.seal(signed.as_bytes(), false)).unwrap_err();
        assert!(error.is_authentication_failure(), "{error:?}");
        let other = crate::keys::generate_p384_jwk().unwrap();
        let g = Fixture {
            platform: other,
            ..fixture()
        };
        let foreign = g.sign(claims().to_string().as_bytes());
        let error = f.open(&f.seal(foreign.as_bytes(), false)).unwrap_err();
        assert_eq!(error, TokenError::UnknownPlatformKey);
    }

    #[test]
    fn other_algorithms_are_refused() {
        let f = fixture();
        let token = f.token(&claims());
        for (name, value) in [
            ("alg", "ECDH-ES"),
            ("alg", "RSA-OAEP"),
            ("enc", "A256GCM"),
            ("enc", "A128CBC-HS256"),
            ("zip", "GZIP"),
        ] {
            let hostile = with_header(&token, |h| {
                h.insert(name.into(), json!(value));
            });
            assert_400(f.open(&hostile));
        }
    }
}
