//! Shared fixtures of the fuzz targets: one fixed key ring (the keys of the
//! interop vectors, copied here so the targets are deterministic and read no
//! file), a fixed "now", and helpers that build well-formed JWS/JWE around
//! fuzzer-chosen bytes so the fuzzer reaches the code behind the signature
//! and decryption checks (structure-aware modes).

use std::io;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use flow_store::config::{KeySource, StoreEntry};
use flow_store::crypto::StateTokenOpener;
use flow_store::keys::KeyRing;
use josekit::jwe::{JweCompression, JweContext, JweHeader, ECDH_ES_A192KW, ECDH_ES_A256KW};
use josekit::jwk::Jwk;
use josekit::jws::{JwsSigner, ES384};
use time::OffsetDateTime;
use uuid::Uuid;

/// The instant every interop vector is checked at (Unix seconds).
pub const NOW: i64 = 1_790_000_000;
/// The tenant of the interop vectors.
pub const TENANT: &str = "918f5a24-290e-4659-9cd6-c8d95aee92c6";
/// The state id of the interop vectors.
pub const STATE_ID: &str = "4b8b27d3-e4f3-4a78-8822-12476582af8a";
/// URL path a GET/load request signs.
pub const PATH_ONE: &str = "/api/storage/1/states/918f5a24-290e-4659-9cd6-c8d95aee92c6/4b8b27d3-e4f3-4a78-8822-12476582af8a";
/// URL path a POST/DELETE request signs.
pub const PATH_TENANT: &str = "/api/storage/1/states/918f5a24-290e-4659-9cd6-c8d95aee92c6";
/// Clock skew the store uses by default.
pub const SKEW_SECONDS: i64 = 30;
/// The store's default inflation cap (`server.max_inflated_bytes`).
pub const MAX_INFLATED_BYTES: u64 = 64 * 1024 * 1024;

/// Platform key (public part: what the store holds). From interop.json.
pub const PLATFORM_KEY_PUBLIC: &str = r#"{"crv":"P-384","kid":"0f4e8c2a-7d1b-4c39-9a6e-2b5d8f1c3e70","kty":"EC","x":"wBEllTSkXyxx_dAriEoJALO-xszlRfwy_eQKPe04hDSzNmdPP48a_3wKBW__r7yw","y":"Tzk7byWXT0vZVH8jBYgZpPIDKmgqsjNxtszWBrzb09PUxIn1_W6kyvzw7U9DVlIL"}"#;
/// Platform key with its private part: lets the harness sign like the
/// platform in the structure-aware modes. From interop.json (test key).
pub const PLATFORM_KEY_PRIVATE: &str = r#"{"crv":"P-384","d":"U4iF7ZERXyhj9jR2US6L2EG3caKilU1nqKCHKHAT4eBE5OW0EyivFTZ7Fw-_ZLHm","kid":"0f4e8c2a-7d1b-4c39-9a6e-2b5d8f1c3e70","kty":"EC","x":"wBEllTSkXyxx_dAriEoJALO-xszlRfwy_eQKPe04hDSzNmdPP48a_3wKBW__r7yw","y":"Tzk7byWXT0vZVH8jBYgZpPIDKmgqsjNxtszWBrzb09PUxIn1_W6kyvzw7U9DVlIL"}"#;
/// Receiver key with its private part (what the store holds). From interop.json.
pub const RECEIVER_KEY_PRIVATE: &str = r#"{"crv":"P-384","d":"bGSClIUiNxXQF4trlnqu1dn6lNOkO8mJbjf8yuQuK5ngq1pB5pEe_uL_xqjvxGnp","kid":"a3c7e9b1-5f2d-4e8a-b6c4-9d1e7f3a5b28","kty":"EC","x":"xSaaXtI_STgkleLdP9kz8lU12qdiEy03-k0tSSFzamT-SELBAgT1oIesBlZlg45o","y":"fNClpvQYJkB4nFAw25DAOEQr-1ZHo_gPx5DvdoNV0qc1g-HJFpkD04sGtE7kVCum"}"#;
/// Receiver key, public part: what the platform encrypts to.
pub const RECEIVER_KEY_PUBLIC: &str = r#"{"crv":"P-384","kid":"a3c7e9b1-5f2d-4e8a-b6c4-9d1e7f3a5b28","kty":"EC","x":"xSaaXtI_STgkleLdP9kz8lU12qdiEy03-k0tSSFzamT-SELBAgT1oIesBlZlg45o","y":"fNClpvQYJkB4nFAw25DAOEQr-1ZHo_gPx5DvdoNV0qc1g-HJFpkD04sGtE7kVCum"}"#;

/// Everything the targets share, built once per process.
pub struct Fixture {
    /// The store's key ring (platform public key, receiver private key).
    pub ring: KeyRing,
    /// The state-token opener with the store's default limits.
    pub opener: StateTokenOpener,
    /// The tenant.
    pub tenant: Uuid,
    /// The fixed "now".
    pub now: OffsetDateTime,
    platform_signer: josekit::jws::alg::ecdsa::EcdsaJwsSigner,
    platform_kid: String,
    receiver_public: Jwk,
}

/// The shared fixture.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ring = KeyRing::load(&[StoreEntry {
            name: "fuzz".into(),
            platform_key: KeySource::Inline(PLATFORM_KEY_PUBLIC.into()),
            receiver_key: KeySource::Inline(RECEIVER_KEY_PRIVATE.into()),
        }])
        .expect("the fixed interop keys load");
        let platform = Jwk::from_bytes(PLATFORM_KEY_PRIVATE).expect("platform JWK parses");
        Fixture {
            ring,
            opener: StateTokenOpener::new(MAX_INFLATED_BYTES, SKEW_SECONDS),
            tenant: Uuid::parse_str(TENANT).unwrap(),
            now: OffsetDateTime::from_unix_timestamp(NOW).unwrap(),
            platform_signer: ES384.signer_from_jwk(&platform).expect("platform signer"),
            platform_kid: platform.key_id().unwrap().to_string(),
            receiver_public: Jwk::from_bytes(RECEIVER_KEY_PUBLIC).expect("receiver JWK parses"),
        }
    })
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Splits `data` at the first NUL byte: (before, after). No NUL: (data, "").
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

impl Fixture {
    /// The platform's JWS header, as the platform writes it.
    pub fn platform_jws_header(&self) -> String {
        format!(r#"{{"alg":"ES384","kid":"{}"}}"#, self.platform_kid)
    }

    /// A compact JWS over arbitrary header and payload bytes, correctly
    /// ES384-signed with the platform key, so everything after the
    /// signature check is reachable.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = self
            .platform_signer
            .sign(input.as_bytes())
            .expect("ES384 signing");
        format!("{input}.{}", b64(&signature))
    }

    /// Encrypts `plaintext` to the receiver key as the platform does.
    /// `a256` picks ECDH-ES+A256KW/A256CBC-HS512, else A192KW/A192CBC-HS384.
    /// With `raw_deflate`, the header says `zip: DEF` but `plaintext` is
    /// used as the compressed bytes unchanged, so the fuzzer controls the
    /// DEFLATE stream the store inflates.
    pub fn seal(&self, plaintext: &[u8], a256: bool, raw_deflate: bool) -> String {
        let mut header = JweHeader::new();
        header.set_content_type("JWT");
        header.set_key_id(RECEIVER_KID);
        let (alg, enc) = if a256 {
            (&ECDH_ES_A256KW, "A256CBC-HS512")
        } else {
            (&ECDH_ES_A192KW, "A192CBC-HS384")
        };
        header.set_content_encryption(enc);
        let mut context = JweContext::new();
        if raw_deflate {
            header.set_compression("DEF");
            context.remove_compression("DEF");
            context.add_compression(Box::new(IdentityDeflate));
        }
        let encrypter = alg
            .encrypter_from_jwk(&self.receiver_public)
            .expect("receiver encrypter");
        context
            .serialize_compact(plaintext, &header, &encrypter)
            .expect("JWE encryption")
    }
}

/// The receiver key's kid.
pub const RECEIVER_KID: &str = "a3c7e9b1-5f2d-4e8a-b6c4-9d1e7f3a5b28";

/// A "DEF" that does not compress: the bytes given are the DEFLATE stream.
#[derive(Debug, Clone)]
struct IdentityDeflate;

impl JweCompression for IdentityDeflate {
    fn name(&self) -> &str {
        "DEF"
    }
    fn compress(&self, message: &[u8]) -> Result<Vec<u8>, io::Error> {
        Ok(message.to_vec())
    }
    fn decompress(&self, message: &[u8]) -> Result<Vec<u8>, io::Error> {
        Ok(message.to_vec())
    }
    fn box_clone(&self) -> Box<dyn JweCompression> {
        Box::new(self.clone())
    }
}
