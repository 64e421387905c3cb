//! The platform's JOSE side, built from the wire contract with josekit
//! and flate2 directly and never with the crate's own `crypto` or
//! `platform` modules, so that the tests cannot share a bug with the code
//! they check: request signatures, state tokens (and deliberately broken
//! ones), opening the store's load responses with every check of the
//! contract, and the timestamps and compact-serialization helpers they need.

use std::io::Read;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use josekit::jwe::{self, JweCompression, JweContext, JweHeader};
use josekit::jwk::Jwk;
use josekit::jws::{self, JwsHeader, JwsSigner};
use serde_json::{json, Map, Value};

use super::keys::{uuid, StoreKeys};

/// A fixed "now" for in-process servers: 2026-09-21T12:53:20Z.
pub const T0: i64 = 1_790_000_000;

/// Unix seconds from the system clock.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// RFC 3339 in UTC (`Z`) for a Unix second.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("timestamp in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}

/// RFC 3339 for a Unix second, written in the given UTC offset (hours).
pub fn rfc3339_offset(unix: i64, offset_hours: i8) -> String {
    let offset = time::UtcOffset::from_hms(offset_hours, 0, 0).expect("offset");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("timestamp in range")
        .to_offset(offset)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formattable")
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn unb64(data: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(data)
        .unwrap_or_else(|e| panic!("segment is not base64url ({e}): {data:.60}"))
}

/// Decode the protected header (first segment) of a compact JWS/JWE.
pub fn compact_header(compact: &str) -> Map<String, Value> {
    let first = compact.split('.').next().expect("compact serialization");
    serde_json::from_slice(&unb64(first)).expect("header is a JSON object")
}

/// Replace the protected header of a compact serialization (signature and
/// tag are left as they were, so they no longer verify).
pub fn with_header(compact: &str, header: &Value) -> String {
    let mut parts: Vec<String> = compact.split('.').map(str::to_string).collect();
    parts[0] = b64(header.to_string().as_bytes());
    parts.join(".")
}

/// Flip one bit in the last segment (the JWE tag or the JWS signature).
pub fn tamper_last_segment(compact: &str) -> String {
    let mut parts: Vec<String> = compact.split('.').map(str::to_string).collect();
    let last = parts.last_mut().expect("segments");
    let mut raw = unb64(last);
    raw[0] ^= 0x01;
    *last = b64(&raw);
    parts.join(".")
}

/// Flip one bit in the JWE ciphertext (4th segment).
pub fn tamper_ciphertext(compact: &str) -> String {
    let mut parts: Vec<String> = compact.split('.').map(str::to_string).collect();
    let mut raw = unb64(&parts[3]);
    raw[0] ^= 0x01;
    parts[3] = b64(&raw);
    parts.join(".")
}

/// How to build the outer JWE (and inner JWS) of a state token.
#[derive(Clone)]
pub struct TokenOpts {
    /// JWE `alg`.
    pub alg: &'static str,
    /// JWE `enc`.
    pub enc: &'static str,
    /// Set `zip: DEF` (josekit then deflates the plaintext).
    pub zip: bool,
    /// Send this `zip` value, with the plaintext left as it is.
    pub raw_zip: Option<&'static str>,
    /// JWE `cty`; `None` leaves it out.
    pub cty: Option<&'static str>,
    /// JWE `kid`; `None` means the receiver key's kid.
    pub kid: Option<String>,
    /// Encrypt to this public key instead of the receiver's.
    pub encrypt_to: Option<Jwk>,
    /// Sign the inner JWS with this private key instead of the platform's.
    pub sign_with: Option<Jwk>,
    /// Inner JWS `kid`; `None` means the platform key's kid.
    pub inner_kid: Option<String>,
}

impl Default for TokenOpts {
    fn default() -> Self {
        Self {
            alg: "ECDH-ES+A192KW",
            enc: "A192CBC-HS384",
            zip: false,
            raw_zip: None,
            cty: Some("JWT"),
            kid: None,
            encrypt_to: None,
            sign_with: None,
            inner_kid: None,
        }
    }
}

/// A compression that leaves bytes alone, under any `zip` name: lets a test
/// hand josekit an already-deflated plaintext (zip bomb), send an unknown
/// `zip`, or get the raw DEFLATE stream of a response so that the test
/// inflates it itself.
#[derive(Debug, Clone)]
struct IdentityZip(String);

impl JweCompression for IdentityZip {
    fn name(&self) -> &str {
        &self.0
    }
    fn compress(&self, message: &[u8]) -> Result<Vec<u8>, std::io::Error> {
        Ok(message.to_vec())
    }
    fn decompress(&self, message: &[u8]) -> Result<Vec<u8>, std::io::Error> {
        Ok(message.to_vec())
    }
    fn box_clone(&self) -> Box<dyn JweCompression> {
        Box::new(self.clone())
    }
}

fn identity_zip_context(name: &str) -> JweContext {
    let mut ctx = JweContext::new();
    ctx.remove_compression(name);
    ctx.add_compression(Box::new(IdentityZip(name.to_string())));
    ctx
}

/// What opening a load response yielded.
#[derive(Debug)]
pub struct Loaded {
    pub content: String,
    pub jti: String,
    pub outer_header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// The Flow platform for one store: holds both private keys of [`StoreKeys`]
/// but uses the receiver's only as a public key.
#[derive(Clone)]
pub struct Platform {
    pub keys: StoreKeys,
}

impl Platform {
    pub fn new(keys: StoreKeys) -> Self {
        Self { keys }
    }

    /// A compact ES384 JWS of `claims` with the given key and header `kid`.
    pub fn sign_es384(key: &Jwk, kid: &str, claims: &Value) -> String {
        let signer = jws::ES384.signer_from_jwk(key).expect("ES384 signer");
        Self::sign_with(&signer, "ES384", kid, claims)
    }

    /// A compact JWS of `claims` with any signer.
    pub fn sign_with(signer: &dyn JwsSigner, alg: &str, kid: &str, claims: &Value) -> String {
        let mut header = JwsHeader::new();
        header.set_algorithm(alg);
        header.set_key_id(kid);
        jws::serialize_compact(claims.to_string().as_bytes(), &header, signer).expect("sign JWS")
    }

    /// The request claims the platform sends, valid at `now`.
    pub fn request_claims(tenant: &str, path: &str, now: i64) -> Value {
        json!({
            "iss": "manywho",
            "aud": tenant,
            "sub": tenant,
            "exp": now + 240,
            "iat": now,
            "nbf": now - 120,
            "jti": uuid(),
            "path": path,
        })
    }

    /// An `X-ManyWho-Signature` for `path`, valid at `now`.
    pub fn request_signature(&self, tenant: &str, path: &str, now: i64) -> String {
        self.sign_claims(&Self::request_claims(tenant, path, now))
    }

    /// Sign arbitrary claims as the platform (ES384, platform kid).
    pub fn sign_claims(&self, claims: &Value) -> String {
        Self::sign_es384(&self.keys.platform, &self.keys.platform_kid(), claims)
    }

    /// A state token (nested JWT) for `claims`.
    pub fn state_token(&self, claims: &Value, opts: &TokenOpts) -> String {
        let sign_key = opts.sign_with.as_ref().unwrap_or(&self.keys.platform);
        let inner_kid = opts
            .inner_kid
            .clone()
            .or_else(|| sign_key.key_id().map(str::to_string))
            .expect("inner kid");
        let inner = Self::sign_es384(sign_key, &inner_kid, claims);
        self.wrap(&inner, opts)
    }

    /// Encrypt an already-built inner JWS (or anything) as a state token.
    pub fn wrap(&self, inner: &str, opts: &TokenOpts) -> String {
        match opts.raw_zip {
            Some(name) => self.encrypt(inner.as_bytes(), opts, &identity_zip_context(name)),
            None => self.encrypt(inner.as_bytes(), opts, &JweContext::new()),
        }
    }

    /// A state token whose JWE plaintext is `raw_deflate` as given, with
    /// `zip: DEF` in the header (for inflate-limit tests).
    pub fn state_token_predeflated(&self, raw_deflate: &[u8], opts: &TokenOpts) -> String {
        let mut opts = opts.clone();
        opts.raw_zip = Some("DEF");
        self.encrypt(raw_deflate, &opts, &identity_zip_context("DEF"))
    }

    fn encrypt(&self, plaintext: &[u8], opts: &TokenOpts, ctx: &JweContext) -> String {
        let to = opts
            .encrypt_to
            .clone()
            .unwrap_or_else(|| self.keys.receiver_public());
        let kid = opts.kid.clone().unwrap_or_else(|| self.keys.receiver_kid());
        let mut header = JweHeader::new();
        header.set_content_encryption(opts.enc);
        header.set_key_id(kid);
        if let Some(cty) = opts.cty {
            header.set_content_type(cty);
        }
        if let Some(name) = opts.raw_zip {
            header.set_compression(name);
        } else if opts.zip {
            header.set_compression("DEF");
        }
        let encrypter: Box<dyn jwe::JweEncrypter> = match opts.alg {
            "ECDH-ES+A192KW" => Box::new(jwe::ECDH_ES_A192KW.encrypter_from_jwk(&to).unwrap()),
            "ECDH-ES+A256KW" => Box::new(jwe::ECDH_ES_A256KW.encrypter_from_jwk(&to).unwrap()),
            "ECDH-ES+A128KW" => Box::new(jwe::ECDH_ES_A128KW.encrypter_from_jwk(&to).unwrap()),
            "ECDH-ES" => Box::new(jwe::ECDH_ES.encrypter_from_jwk(&to).unwrap()),
            other => panic!("test does not build alg {other}"),
        };
        ctx.serialize_compact(plaintext, &header, &*encrypter)
            .expect("encrypt JWE")
    }

    /// Open a load response token exactly as the contract's load section
    /// says the platform may rely on, and check every header and claim.
    ///
    /// `now` is the store's clock at the load; `slack` how many seconds the
    /// store's `iat` may differ from it (0 with a manual clock).
    pub fn open_response(
        &self,
        token: &str,
        tenant: &str,
        state_id: &str,
        now: i64,
        slack: i64,
    ) -> Loaded {
        assert_eq!(
            token.split('.').count(),
            5,
            "response token is not a compact JWE"
        );
        let outer = compact_header(token);
        let s =
            |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(
            s(&outer, "alg").as_deref(),
            Some("ECDH-ES+A192KW"),
            "outer alg: {outer:?}"
        );
        assert_eq!(
            s(&outer, "enc").as_deref(),
            Some("A192CBC-HS384"),
            "outer enc: {outer:?}"
        );
        assert_eq!(
            s(&outer, "cty").as_deref(),
            Some("JWT"),
            "outer cty: {outer:?}"
        );
        // The contract lets a reply go compressed or not (the store skips
        // DEFLATE where it does not pay); the tests that care check which.
        let zip = s(&outer, "zip");
        assert!(
            matches!(zip.as_deref(), None | Some("DEF")),
            "outer zip: {outer:?}"
        );
        assert_eq!(
            s(&outer, "kid"),
            Some(self.keys.platform_kid()),
            "outer kid must be the platform kid: {outer:?}"
        );
        let epk = outer.get("epk").and_then(Value::as_object).expect("epk");
        assert_eq!(
            epk.get("crv").and_then(Value::as_str),
            Some("P-384"),
            "epk curve"
        );

        // Decrypt with the platform private key, keeping a raw DEFLATE
        // stream so that this test inflates it (RFC 1951, not zlib/gzip).
        let decrypter = jwe::ECDH_ES_A192KW
            .decrypter_from_jwk(&self.keys.platform)
            .expect("decrypter");
        let (plaintext, _) = identity_zip_context("DEF")
            .deserialize_compact(token, &decrypter)
            .expect("response token decrypts with the platform private key");
        let mut inner = String::new();
        if zip.is_some() {
            flate2::read::DeflateDecoder::new(&plaintext[..])
                .read_to_string(&mut inner)
                .expect("plaintext is raw DEFLATE of a UTF-8 JWS");
        } else {
            inner = String::from_utf8(plaintext).expect("plaintext is a UTF-8 JWS");
        }

        // The inner JWS: ES384, kid = receiver kid, signed by the receiver key.
        assert_eq!(inner.split('.').count(), 3, "inner is not a compact JWS");
        let inner_header = compact_header(&inner);
        assert_eq!(
            s(&inner_header, "alg").as_deref(),
            Some("ES384"),
            "inner alg"
        );
        assert_eq!(
            s(&inner_header, "kid"),
            Some(self.keys.receiver_kid()),
            "inner kid must be the receiver kid"
        );
        let verifier = jws::ES384
            .verifier_from_jwk(&self.keys.receiver_public())
            .expect("verifier");
        let (payload, _) = jws::deserialize_compact(&inner, &verifier)
            .expect("inner JWS verifies with the receiver public key");
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).expect("claims are a JSON object");

        assert_eq!(s(&claims, "iss").as_deref(), Some(tenant), "iss = tenant");
        match claims.get("aud") {
            Some(Value::String(a)) => assert_eq!(a, "manywho", "aud"),
            Some(Value::Array(a)) => assert!(a.contains(&json!("manywho")), "aud: {a:?}"),
            other => panic!("aud missing or wrong type: {other:?}"),
        }
        assert_eq!(
            s(&claims, "sub").as_deref(),
            Some(state_id),
            "sub = state id"
        );
        let num = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_i64)
                .unwrap_or_else(|| panic!("claim {k} missing or not an integer: {claims:?}"))
        };
        let iat = num("iat");
        assert!((iat - now).abs() <= slack, "iat {iat} is not now {now}");
        assert_eq!(num("nbf"), iat - 120, "nbf = iat - 2 minutes");
        assert_eq!(num("exp"), iat + 600, "exp = iat + 10 minutes");
        let jti = s(&claims, "jti").expect("jti present");
        assert!(!jti.is_empty(), "jti empty");
        let content = s(&claims, "content").expect("content claim is a string");
        Loaded {
            content,
            jti,
            outer_header: outer,
            claims,
        }
    }
}

/// The claims of a state token, valid at `now`.
pub fn state_claims(tenant: &str, id: &str, content: &str, updated_at: &str, now: i64) -> Value {
    json!({
        "iss": "manywho",
        "aud": tenant,
        "sub": id,
        "exp": now + 3600,
        "iat": now,
        "nbf": now - 120,
        "jti": uuid(),
        "id": id,
        "tenant": tenant,
        "parent": null,
        "flow": uuid(),
        "flowVersion": uuid(),
        "currentMapElement": uuid(),
        "currentUser": null,
        "isDone": false,
        "createdAt": "2018-07-17T11:32:00.7117030+01:00",
        "updatedAt": updated_at,
        "expiresAt": null,
        "content": content,
    })
}

/// A save body for these tokens.
pub fn save_body(tokens: &[String]) -> Vec<u8> {
    let items: Vec<Value> = tokens.iter().map(|t| json!({ "token": t })).collect();
    Value::Array(items).to_string().into_bytes()
}

// Hand-made DEFLATE (for the inflate cap).

/// A raw DEFLATE stream (one fixed-Huffman block) that inflates to `prefix`
/// followed by `repeat_len` copies of the last byte of `prefix`, in about
/// 13 bits per 258 output bytes — a "zip bomb" built without compressing
/// the big output in the test process.
pub fn deflate_bomb(prefix: &[u8], repeat_len: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        // Huffman codes are sent most-significant bit first.
        fn code(&mut self, code: u32, len: u32) {
            let mut rev = 0u64;
            for i in 0..len {
                if code & (1 << i) != 0 {
                    rev |= 1 << (len - 1 - i);
                }
            }
            self.put(rev, len);
        }
        fn literal(&mut self, b: u8) {
            let b = b as u32;
            if b < 144 {
                self.code(0x30 + b, 8);
            } else {
                self.code(0x190 + (b - 144), 9);
            }
        }
    }
    assert!(!prefix.is_empty());
    let mut w = Bits {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    w.put(1, 1); // BFINAL
    w.put(1, 2); // BTYPE = 01, fixed Huffman
    for &b in prefix {
        w.literal(b);
    }
    let mut left = repeat_len;
    while left >= 258 {
        w.code(0xC5, 8); // length code 285 = 258 (codes 280..287 are 8 bits from 0xC0)
        w.put(0, 5); // distance code 0 = 1
        left -= 258;
    }
    let last = *prefix.last().unwrap();
    for _ in 0..left {
        w.literal(last);
    }
    w.code(0, 7); // end of block (256)
    if w.n > 0 {
        w.put(0, 8 - w.n);
    }
    w.out
}
