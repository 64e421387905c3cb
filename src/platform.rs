//! The platform's side of the JOSE contract, for the simulator: sign request
//! signatures, build state tokens, open reply tokens. It holds the platform
//! private key and the receiver public key, exactly like Boomi Flow does.
//!
//! The server never uses this module; the integration tests do not either
//! (they build their tokens independently), so a bug here cannot hide a bug
//! in [`crate::crypto`].

use josekit::jwe::{JweContext, JweHeader, ECDH_ES_A192KW, ECDH_ES_A256KW};
use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, ES384};
use josekit::jwt::{self, JwtPayload};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// The platform's keys.
pub struct PlatformKeys {
    /// The platform key pair (with `d`).
    pub platform: Jwk,
    /// The receiver public key (a `d`, if present, is not used).
    pub receiver: Jwk,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformKeys")
            .field("platform_kid", &self.platform.key_id())
            .field("receiver_kid", &self.receiver.key_id())
            .finish()
    }
}

/// How a state token is encrypted.
#[derive(Debug, Clone, Copy)]
pub struct Encryption {
    /// `ECDH-ES+A192KW` or `ECDH-ES+A256KW`.
    pub alg: &'static str,
    /// `A192CBC-HS384` or `A256CBC-HS512`.
    pub enc: &'static str,
    /// Whether to DEFLATE the plaintext.
    pub zip: bool,
}

impl Default for Encryption {
    fn default() -> Self {
        Self {
            alg: "ECDH-ES+A192KW",
            enc: "A192CBC-HS384",
            zip: true,
        }
    }
}

fn fail(what: &str) -> impl Fn(josekit::JoseError) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {e}")
}

impl PlatformKeys {
    /// Reads both keys from JWK text.
    pub fn from_json(platform: &str, receiver: &str) -> anyhow::Result<Self> {
        let mut platform =
            Jwk::from_bytes(platform.trim()).map_err(fail("the platform key is not a JWK"))?;
        let mut receiver =
            Jwk::from_bytes(receiver.trim()).map_err(fail("the receiver key is not a JWK"))?;
        // Each key both signs and agrees keys; usage hints would block one role.
        for jwk in [&mut platform, &mut receiver] {
            for hint in ["alg", "use", "key_ops"] {
                jwk.set_parameter(hint, None)
                    .map_err(fail("the key cannot be cleaned"))?;
            }
        }
        if platform.parameter("d").is_none() {
            anyhow::bail!(
                "the platform key has no private part \"d\": the simulator signs as the platform"
            );
        }
        let receiver = crate::keys::public_jwk(&receiver)
            .map_err(fail("the receiver key is not an EC key"))?;
        Ok(Self { platform, receiver })
    }

    /// The platform key's kid.
    pub fn platform_kid(&self) -> &str {
        self.platform.key_id().unwrap_or_default()
    }

    /// The receiver key's kid.
    pub fn receiver_kid(&self) -> &str {
        self.receiver.key_id().unwrap_or_default()
    }

    /// An `X-ManyWho-Signature` for a request to `path` for `tenant`.
    pub fn request_signature(
        &self,
        tenant: Uuid,
        path: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<String> {
        let now = now.unix_timestamp();
        let claims = json!({
            "iss": "manywho", "aud": tenant.to_string(), "sub": tenant.to_string(),
            "iat": now, "nbf": now - 60, "exp": now + 120,
            "jti": Uuid::new_v4().to_string(), "path": path,
        });
        self.sign(&claims)
    }

    fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        header.set_key_id(self.platform_kid());
        let signer = ES384
            .signer_from_jwk(&self.platform)
            .map_err(fail("cannot sign with the platform key"))?;
        let payload = serde_json::to_vec(claims)?;
        josekit::jws::serialize_compact(&payload, &header, &signer).map_err(fail("signing failed"))
    }

    /// A state token carrying `state` claims (the contract's claim names).
    pub fn state_token(
        &self,
        tenant: Uuid,
        state: &Value,
        now: OffsetDateTime,
        encryption: Encryption,
    ) -> anyhow::Result<String> {
        let now = now.unix_timestamp();
        let mut claims = json!({
            "iss": "manywho", "aud": tenant.to_string(), "sub": tenant.to_string(),
            "iat": now, "nbf": now - 60, "exp": now + 3600, "jti": Uuid::new_v4().to_string(),
        });
        if let (Some(target), Some(extra)) = (claims.as_object_mut(), state.as_object()) {
            target.extend(extra.clone());
        }
        let jws = self.sign(&claims)?;
        let mut header = JweHeader::new();
        header.set_content_encryption(encryption.enc);
        header.set_content_type("JWT");
        header.set_key_id(self.receiver_kid());
        if encryption.zip {
            header.set_compression("DEF");
        }
        let algorithm = if encryption.alg == "ECDH-ES+A256KW" {
            ECDH_ES_A256KW
        } else {
            ECDH_ES_A192KW
        };
        let encrypter = algorithm
            .encrypter_from_jwk(&self.receiver)
            .map_err(fail("cannot encrypt to the receiver key"))?;
        josekit::jwe::serialize_compact(jws.as_bytes(), &header, &encrypter)
            .map_err(fail("encryption failed"))
    }

    /// Opens a reply token and checks it as the platform would; returns the
    /// state content.
    pub fn open_reply(
        &self,
        token: &str,
        tenant: Uuid,
        id: Uuid,
        now: OffsetDateTime,
    ) -> anyhow::Result<String> {
        let decrypter = ECDH_ES_A192KW
            .decrypter_from_jwk(&self.platform)
            .map_err(fail("cannot decrypt with the platform key"))?;
        let (jws, header) = JweContext::new()
            .deserialize_compact(token, &decrypter)
            .map_err(fail("the reply token does not decrypt"))?;
        let expect = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("reply token: {what}"))
            }
        };
        expect(
            header.content_encryption() == Some("A192CBC-HS384"),
            "enc is not A192CBC-HS384",
        )?;
        expect(header.content_type() == Some("JWT"), "cty is not JWT")?;
        expect(
            header.key_id() == Some(self.platform_kid()),
            "kid is not the platform key's",
        )?;
        let verifier = ES384
            .verifier_from_jwk(&self.receiver)
            .map_err(fail("receiver key"))?;
        let (payload, jws_header): (JwtPayload, _) = jwt::decode_with_verifier(&jws, &verifier)
            .map_err(fail("the reply's signature does not verify"))?;
        expect(
            jws_header.key_id() == Some(self.receiver_kid()),
            "inner kid is not the receiver key's",
        )?;
        let claims = payload.claims_set();
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let now = now.unix_timestamp();
        expect(
            text("iss") == Some(&tenant.to_string()),
            "iss is not the tenant",
        )?;
        expect(text("aud") == Some("manywho"), "aud is not manywho")?;
        expect(
            text("sub") == Some(&id.to_string()),
            "sub is not the state id",
        )?;
        expect(number("exp").is_some_and(|e| e > now), "exp has passed")?;
        expect(
            number("nbf").is_some_and(|n| n <= now + 60),
            "nbf is in the future",
        )?;
        expect(text("jti").is_some(), "jti is missing")?;
        text("content")
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("reply token: content is missing"))
    }
}
