//! Test harness shared by every integration test: it plays the Boomi Flow
//! platform against the real server.
//!
//! Everything cryptographic here is built with `josekit` (and `flate2`)
//! directly, from the wire contract in
//! `../shared/docs/external-storage-protocol.md`, and never with the crate's
//! own `crypto` or `platform` modules: the tests must not share a bug with
//! the code they check.
//!
//! What lives here:
//! - keys: P-384 JWK pairs with UUID kids ([`StoreKeys`]);
//! - TLS: one self-signed certificate per test process ([`test_cert`]) and a
//!   client that trusts only it;
//! - [`Platform`]: request signatures, state tokens, and opening the store's
//!   load responses with every check of the contract's load section;
//! - [`Client`]: HTTPS requests over HTTP/1.1 (or HTTP/2) and raw byte-level
//!   connections for the body-limit and shutdown tests;
//! - [`Setup`] / [`Server`]: the library server in-process on an ephemeral
//!   port with a temp sled directory and a [`ManualClock`];
//! - [`Deployment`] / [`Running`]: the real `flow-store` binary with a TOML
//!   config written to a temp directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use josekit::jwe::{self, JweCompression, JweContext, JweHeader};
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::Jwk;
use josekit::jws::{self, JwsHeader, JwsSigner};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use flow_store::app::App;
use flow_store::clock::ManualClock;
use flow_store::config::{Config, KeySource, StoreEntry};

/// The default base path of the contract.
pub const BASE: &str = "/api/storage/1";

/// A fixed "now" for in-process servers: 2026-09-21T12:53:20Z.
pub const T0: i64 = 1_790_000_000;

/// How long any single HTTP exchange may take before the test fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A fresh random UUID in canonical form.
pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

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

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// A fresh P-384 private JWK with a UUID `kid`.
pub fn p384_jwk() -> Jwk {
    let pair = josekit::jws::ES384
        .generate_key_pair()
        .expect("generate P-384 key");
    let mut jwk = pair.to_jwk_key_pair();
    assert_eq!(jwk.curve(), Some(EcCurve::P384.name()));
    platform_shape(&mut jwk);
    jwk
}

/// Shape a generated JWK like the platform's: `kty`, `crv`, `kid`, `x`,
/// `y` (and `d`), no `alg` or `use`.
fn platform_shape(jwk: &mut Jwk) {
    jwk.set_key_id(uuid());
    jwk.set_parameter("alg", None).expect("remove alg");
    jwk.set_parameter("use", None).expect("remove use");
}

/// The public half of a private JWK, keeping its `kid` (josekit's own
/// `to_public_key` drops it).
pub fn public_jwk(private: &Jwk) -> Jwk {
    let mut map = private.as_ref().clone();
    map.remove("d");
    Jwk::from_map(map).expect("public JWK")
}

/// A fresh P-256 private JWK with a UUID `kid` (a curve the store must refuse).
pub fn p256_jwk() -> Jwk {
    let pair = josekit::jws::ES256
        .generate_key_pair()
        .expect("generate P-256 key");
    let mut jwk = pair.to_jwk_key_pair();
    platform_shape(&mut jwk);
    jwk
}

/// A JWK as the JSON text the platform hands out.
pub fn jwk_json(jwk: &Jwk) -> String {
    Value::Object(jwk.as_ref().clone()).to_string()
}

/// The two key pairs of one store, as the platform generates them: both
/// private halves are known to the test (the platform's for signing and
/// opening responses, the receiver's only to configure the server).
#[derive(Clone)]
pub struct StoreKeys {
    /// The platform key pair, with `d`.
    pub platform: Jwk,
    /// The receiver key pair, with `d`.
    pub receiver: Jwk,
}

impl StoreKeys {
    /// Two fresh P-384 pairs.
    pub fn generate() -> Self {
        Self {
            platform: p384_jwk(),
            receiver: p384_jwk(),
        }
    }

    pub fn platform_kid(&self) -> String {
        self.platform.key_id().expect("platform kid").to_string()
    }

    pub fn receiver_kid(&self) -> String {
        self.receiver.key_id().expect("receiver kid").to_string()
    }

    pub fn platform_public(&self) -> Jwk {
        public_jwk(&self.platform)
    }

    pub fn receiver_public(&self) -> Jwk {
        public_jwk(&self.receiver)
    }

    /// The store's view: the platform's public key, the receiver's private key.
    pub fn store_entry(&self, name: &str) -> StoreEntry {
        StoreEntry {
            name: name.to_string(),
            platform_key: KeySource::Inline(jwk_json(&self.platform_public())),
            receiver_key: KeySource::Inline(jwk_json(&self.receiver)),
        }
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A self-signed certificate for `localhost` / 127.0.0.1.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl TestCert {
    pub fn generate() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("self-signed certificate");
        Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
            cert_der: ck.cert.der().clone(),
        }
    }

    /// Write `cert.pem` and `key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("tls dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// One certificate per test process: generating is cheap, but there is no
/// reason to do it per test.
pub fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(TestCert::generate)
}

fn client_tls(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust test cert");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

// ---------------------------------------------------------------------------
// The platform: signatures and tokens
// ---------------------------------------------------------------------------

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
    pub inner_header: Map<String, Value>,
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
        assert_eq!(
            s(&outer, "zip").as_deref(),
            Some("DEF"),
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

        // Decrypt with the platform private key, keeping the raw DEFLATE
        // stream so that this test inflates it (RFC 1951, not zlib/gzip).
        let decrypter = jwe::ECDH_ES_A192KW
            .decrypter_from_jwk(&self.keys.platform)
            .expect("decrypter");
        let (deflated, _) = identity_zip_context("DEF")
            .deserialize_compact(token, &decrypter)
            .expect("response token decrypts with the platform private key");
        let mut inner = String::new();
        flate2::read::DeflateDecoder::new(&deflated[..])
            .read_to_string(&mut inner)
            .expect("plaintext is raw DEFLATE of a UTF-8 JWS");

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
            inner_header,
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

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Set (replace) a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self = self.without(name);
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Remove a header.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Every header value, to check that an error body echoes none of them.
    fn secrets(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| {
                k.eq_ignore_ascii_case("x-manywho-signature")
                    || k.eq_ignore_ascii_case("authorization")
            })
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A response received.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
    /// Header values and tokens sent with the request (never to be echoed).
    pub sent_secrets: Vec<String>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:.500}", self.text()))
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// Assert the status, with the body in the message.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "expected HTTP {status}, got {} with body {:.500}",
            self.status,
            self.text()
        );
        self
    }

    /// Assert an error response of the contract: the status, and a JSON body
    /// `{"status": N, "message": "..."}` that echoes no token or secret.
    pub fn expect_error(&self, status: u16) -> &Self {
        self.expect_status(status);
        assert!(
            self.content_type().starts_with("application/json"),
            "error content-type is {:?}",
            self.content_type()
        );
        let v = self.json();
        assert_eq!(v["status"], json!(status), "error body status: {v}");
        let msg = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {v}"));
        assert!(!msg.trim().is_empty(), "empty error message: {v}");
        let text = self.text();
        for secret in &self.sent_secrets {
            assert_no_echo(&text, secret);
        }
        self
    }

    /// Assert the body contains none of these strings (nor a long piece).
    pub fn expect_no_echo(&self, secrets: &[&str]) -> &Self {
        let text = self.text();
        for s in secrets {
            assert_no_echo(&text, s);
        }
        self
    }
}

fn assert_no_echo(body: &str, secret: &str) {
    if secret.len() < 16 {
        return;
    }
    assert!(
        !body.contains(secret),
        "response echoes a secret: {body:.300}"
    );
    // Any segment of a compact token long enough to be meaningful.
    for seg in secret.split(['.', ' ']) {
        if seg.len() >= 24 {
            assert!(
                !body.contains(seg),
                "response echoes part of a token: {body:.300}"
            );
        }
    }
}

/// An HTTPS client for one server address, trusting only the test cert.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    tls_h1: Arc<rustls::ClientConfig>,
    tls_h2: Arc<rustls::ClientConfig>,
}

impl Http {
    pub fn new(addr: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        Self {
            addr,
            tls_h1: client_tls(cert, &[b"http/1.1"]),
            tls_h2: client_tls(cert, &[b"h2"]),
        }
    }

    /// A TLS connection offering `http/1.1` (or `h2`) by ALPN.
    pub async fn connect(&self, h2: bool) -> tokio_rustls::client::TlsStream<TcpStream> {
        let cfg = if h2 { &self.tls_h2 } else { &self.tls_h1 };
        let tcp = TcpStream::connect(self.addr).await.expect("tcp connect");
        TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the test certificate")
    }

    fn build(req: &Req) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(req.path.as_str());
        let has_host = req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            b = b.header("host", "localhost");
        }
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(Bytes::from(req.body.clone())))
            .expect("valid request")
    }

    async fn finish(resp: hyper::Response<hyper::body::Incoming>, req: &Req) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("read response body")
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
            sent_secrets: req.secrets(),
        }
    }

    /// Send over a fresh HTTP/1.1 connection.
    pub async fn send(&self, req: Req) -> Resp {
        let fut = async {
            let stream = self.connect(false).await;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("http1 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender
                .send_request(Self::build(&req))
                .await
                .unwrap_or_else(|e| panic!("{} {} failed: {e}", req.method, req.path));
            Self::finish(resp, &req).await
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, fut)
            .await
            .expect("HTTP exchange timed out")
    }

    /// Send over a fresh HTTP/2 connection (ALPN `h2`).
    pub async fn send_h2(&self, req: Req) -> Resp {
        let fut = async {
            let stream = self.connect(true).await;
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            assert_eq!(
                alpn.as_deref(),
                Some(&b"h2"[..]),
                "server did not pick h2 by ALPN"
            );
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut r = Self::build(&req);
            // HTTP/2 carries the authority in the URI, not a Host header.
            r.headers_mut().remove("host");
            *r.uri_mut() = format!("https://localhost{}", req.path).parse().unwrap();
            let resp = sender.send_request(r).await.expect("h2 request");
            Self::finish(resp, &req).await
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, fut)
            .await
            .expect("HTTP/2 exchange timed out")
    }
}

/// A raw HTTP/1.1 exchange over TLS, for what a well-behaved client library
/// will not do: send a body slowly, lie about its length, or chunk it.
pub struct RawConn {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn open(http: &Http) -> Self {
        Self {
            stream: http.connect(false).await,
            buf: Vec::new(),
        }
    }

    pub async fn write(&mut self, data: &[u8]) {
        self.stream.write_all(data).await.expect("raw write");
        self.stream.flush().await.expect("raw flush");
    }

    /// Write, but tolerate the server having closed (it may answer early).
    pub async fn try_write(&mut self, data: &[u8]) -> bool {
        self.stream.write_all(data).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Read one response: status and body (by Content-Length, or whatever
    /// arrives until the connection closes).
    pub async fn read_response(&mut self) -> (u16, Vec<u8>) {
        let fut = async {
            loop {
                if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.buf[..pos]).to_string();
                    let status: u16 = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("bad status line: {head}"));
                    let len = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    });
                    let body_start = pos + 4;
                    if let Some(len) = len {
                        while self.buf.len() < body_start + len {
                            if !self.fill().await {
                                break;
                            }
                        }
                        let end = (body_start + len).min(self.buf.len());
                        return (status, self.buf[body_start..end].to_vec());
                    }
                    return (status, self.buf[body_start..].to_vec());
                }
                if !self.fill().await {
                    panic!(
                        "connection closed before a response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
            }
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, fut)
            .await
            .expect("raw response timed out")
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Render a request head for [`RawConn`].
pub fn raw_head(method: &str, path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// The platform as an HTTP client of one store
// ---------------------------------------------------------------------------

/// Where "now" comes from for tokens: the server's manual clock, or the
/// system clock for the real binary.
#[derive(Clone)]
pub enum Now {
    Manual(Arc<AtomicI64>),
    System,
}

impl Now {
    pub fn get(&self) -> i64 {
        match self {
            Now::Manual(t) => t.load(Ordering::SeqCst),
            Now::System => system_now(),
        }
    }
}

/// The platform talking to one running store.
#[derive(Clone)]
pub struct Client {
    pub http: Http,
    pub base: String,
    pub platform: Platform,
    pub now: Now,
    /// Basic credentials to send with every non-health request.
    pub basic: Option<(String, String)>,
}

impl Client {
    pub fn now(&self) -> i64 {
        self.now.get()
    }

    /// Seconds the store's `iat` may differ from [`Client::now`].
    pub fn slack(&self) -> i64 {
        match self.now {
            Now::Manual(_) => 0,
            Now::System => 5,
        }
    }

    pub fn keys(&self) -> &StoreKeys {
        &self.platform.keys
    }

    pub fn states_path(&self, tenant: &str) -> String {
        format!("{}/states/{tenant}", self.base)
    }

    pub fn state_path(&self, tenant: &str, id: &str) -> String {
        format!("{}/states/{tenant}/{id}", self.base)
    }

    /// A request with no authentication at all.
    pub fn bare(&self, method: &str, path: &str) -> Req {
        Req::new(method, path)
    }

    /// A request with both key-ID headers, a valid signature for `path` and
    /// audience `tenant`, and Basic credentials when configured.
    pub fn signed(&self, method: &str, path: &str, tenant: &str) -> Req {
        let sig =
            self.platform
                .request_signature(tenant, path.split('?').next().unwrap(), self.now());
        self.with_sig(method, path, &sig)
    }

    /// As [`Client::signed`] but with the given signature.
    pub fn with_sig(&self, method: &str, path: &str, sig: &str) -> Req {
        let mut req = Req::new(method, path)
            .header("X-ManyWho-Platform-Key-ID", &self.keys().platform_kid())
            .header("X-ManyWho-Receiver-Key-ID", &self.keys().receiver_kid())
            .header("X-ManyWho-Signature", sig);
        if let Some((u, p)) = &self.basic {
            req = req.header(
                "Authorization",
                &format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
            );
        }
        req
    }

    pub async fn send(&self, req: Req) -> Resp {
        self.http.send(req).await
    }

    /// Claims for a state of `tenant`, valid now.
    pub fn claims(&self, tenant: &str, id: &str, content: &str, updated_at: &str) -> Value {
        state_claims(tenant, id, content, updated_at, self.now())
    }

    /// A default token (A192KW, A192CBC-HS384, no zip) for `claims`.
    pub fn token(&self, claims: &Value) -> String {
        self.platform.state_token(claims, &TokenOpts::default())
    }

    pub fn token_with(&self, claims: &Value, opts: &TokenOpts) -> String {
        self.platform.state_token(claims, opts)
    }

    /// POST these tokens.
    pub async fn save(&self, tenant: &str, tokens: &[String]) -> Resp {
        self.save_raw(tenant, save_body(tokens)).await
    }

    /// POST a raw body, properly signed.
    pub async fn save_raw(&self, tenant: &str, body: Vec<u8>) -> Resp {
        let req = self
            .signed("POST", &self.states_path(tenant), tenant)
            .header("content-type", "application/json")
            .body(body.clone());
        let mut resp = self.send(req).await;
        // A body holds tokens: none of them may come back.
        if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) {
            for item in items {
                if let Some(t) = item.get("token").and_then(Value::as_str) {
                    resp.sent_secrets.push(t.to_string());
                }
            }
        }
        resp
    }

    /// Save one state and require 204.
    pub async fn save_ok(&self, tenant: &str, id: &str, content: &str, updated_at: &str) {
        let token = self.token(&self.claims(tenant, id, content, updated_at));
        self.save(tenant, &[token]).await.expect_status(204);
    }

    pub async fn load(&self, tenant: &str, id: &str) -> Resp {
        let path = self.state_path(tenant, id);
        self.send(self.signed("GET", &path, tenant)).await
    }

    /// Load and open a state, with every check of the contract.
    pub async fn load_ok(&self, tenant: &str, id: &str) -> Loaded {
        let resp = self.load(tenant, id).await;
        resp.expect_status(200);
        assert!(
            resp.content_type().starts_with("application/json"),
            "load content-type {:?}",
            resp.content_type()
        );
        let v = resp.json();
        let obj = v.as_object().expect("load body is an object");
        let token = obj
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no token in {v}"));
        self.platform
            .open_response(token, tenant, id, self.now(), self.slack())
    }

    /// The content of a stored state.
    pub async fn content(&self, tenant: &str, id: &str) -> String {
        self.load_ok(tenant, id).await.content
    }

    pub async fn expect_absent(&self, tenant: &str, id: &str) {
        self.load(tenant, id).await.expect_error(404);
    }

    pub async fn delete(&self, tenant: &str, ids: &[&str]) -> Resp {
        let req = self
            .signed("DELETE", &self.states_path(tenant), tenant)
            .json(&json!(ids));
        self.send(req).await
    }

    pub async fn health(&self) -> Resp {
        self.send(self.bare("GET", &format!("{}/health", self.base)))
            .await
    }
}

// ---------------------------------------------------------------------------
// In-process server
// ---------------------------------------------------------------------------

/// How to start an in-process server.
pub struct Setup {
    pub now: i64,
    pub stores: Vec<StoreKeys>,
    pub max_body_bytes: Option<u64>,
    pub basic: Option<(String, String)>,
    pub clock_skew_seconds: Option<u64>,
    /// Reuse this directory (restart tests); a fresh one otherwise.
    pub dir: Option<Arc<tempfile::TempDir>>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            now: T0,
            stores: vec![StoreKeys::generate()],
            max_body_bytes: None,
            basic: None,
            clock_skew_seconds: None,
            dir: None,
        }
    }
}

impl Setup {
    pub async fn start(self) -> Server {
        let dir = self
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("tempdir")));
        let cert = test_cert();
        let (cert_path, key_path) = cert.write_to(&dir.path().join("tls"));

        let mut cfg = Config::default();
        cfg.server.listen = "127.0.0.1:0".to_string();
        cfg.server.base_path = BASE.to_string();
        if let Some(max) = self.max_body_bytes {
            cfg.server.max_body_bytes = max;
        }
        cfg.tls.enabled = true;
        cfg.tls.cert = cert_path;
        cfg.tls.key = key_path;
        cfg.storage.path = dir.path().join("data");
        if let Some(skew) = self.clock_skew_seconds {
            cfg.auth.clock_skew_seconds = skew;
        }
        if let Some((user, pass)) = &self.basic {
            let file = dir.path().join("basic-password");
            std::fs::write(&file, pass).expect("password file");
            cfg.auth.basic_username = Some(user.clone());
            cfg.auth.basic_password_file = Some(file);
        }
        cfg.stores = self
            .stores
            .iter()
            .enumerate()
            .map(|(i, k)| k.store_entry(&format!("test store {i}")))
            .collect();

        let clock = ManualClock::at_unix(self.now);
        let now = Arc::new(AtomicI64::new(self.now));
        let app = App::open(&cfg, Arc::new(clock.clone())).expect("App::open");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = rx.await;
        }));
        let http = Http::new(addr, &cert.cert_der);
        let clients = self
            .stores
            .iter()
            .map(|k| Client {
                http: http.clone(),
                base: BASE.to_string(),
                platform: Platform::new(k.clone()),
                now: Now::Manual(now.clone()),
                basic: self.basic.clone(),
            })
            .collect();
        Server {
            clients,
            clock,
            now,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }
}

/// A running in-process server. Derefs to the [`Client`] of its first store.
pub struct Server {
    /// One client per configured store, in [`Setup::stores`] order.
    pub clients: Vec<Client>,
    pub clock: ManualClock,
    now: Arc<AtomicI64>,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.clients[0]
    }
}

impl Server {
    /// Start with all defaults.
    pub async fn start() -> Server {
        Setup::default().start().await
    }

    /// Set the server's clock (and the tokens' "now").
    pub fn set_now(&self, unix: i64) {
        self.clock.set_unix(unix);
        self.now.store(unix, Ordering::SeqCst);
    }

    /// Move the server's clock forward.
    pub fn advance(&self, secs: i64) {
        self.clock.advance(Duration::from_secs(secs as u64));
        self.now.fetch_add(secs, Ordering::SeqCst);
    }

    /// Ask for shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shut down, wait for `serve` to return Ok, and hand back the data
    /// directory for a restart.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        self.trigger_shutdown();
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("serve did not return within 30 s of shutdown")
            .expect("serve task panicked");
        result.expect("serve returned an error on graceful shutdown");
        self.dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

// ---------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------

/// A directory with TLS files, key files and a config for the binary.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub keys: StoreKeys,
    pub cert: &'static TestCert,
}

impl Deployment {
    /// Certificates under `tls/`, keys under `keys/` (receiver mode 600),
    /// and `config.toml` with relative paths, listening on an ephemeral port.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = test_cert();
        cert.write_to(&dir.path().join("tls"));
        let keys = StoreKeys::generate();
        let kdir = dir.path().join("keys");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(kdir.join("platform.jwk"), jwk_json(&keys.platform_public())).unwrap();
        let receiver = kdir.join("receiver.jwk");
        std::fs::write(&receiver, jwk_json(&keys.receiver)).unwrap();
        set_mode(&receiver, 0o600);
        let d = Self { dir, keys, cert };
        d.write_config("127.0.0.1:0", "");
        d
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Edit `config.toml` in place: replace `from` (which must be there).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config_path()).expect("read config");
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(self.config_path(), text.replacen(from, to, 1)).expect("write config");
    }

    /// (Re)write `config.toml`. `extra` is appended at the end, after the
    /// `[[stores]]` table: start it with a table header.
    pub fn write_config(&self, listen: &str, extra: &str) {
        let text = format!(
            r#"[server]
listen = "{listen}"
base_path = "{BASE}"
max_body_bytes = 33554432

[tls]
enabled = true
cert = "tls/cert.pem"
key = "tls/key.pem"

[storage]
path = "data"
sweep_interval_seconds = 300

[auth]
clock_skew_seconds = 30

[log]
level = "info"

[[stores]]
name = "integration test store"
platform_key = "keys/platform.jwk"
receiver_key = "keys/receiver.jwk"
{extra}
"#
        );
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// Start `flow-store serve --config FILE` from an unrelated working
    /// directory (relative paths must resolve against the file's directory).
    /// Ok once it says `listening on`, Err if it exits first.
    pub fn spawn(&self) -> Result<Running, Failed> {
        spawn_binary(&self.config_path(), self.keys.clone(), self.cert, &[])
    }

    /// As [`Deployment::spawn`], with extra environment variables.
    pub fn spawn_with_env(&self, env: &[(&str, &str)]) -> Result<Running, Failed> {
        spawn_binary(&self.config_path(), self.keys.clone(), self.cert, env)
    }
}

impl Default for Deployment {
    fn default() -> Self {
        Self::new()
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The binary exited before it served.
#[derive(Debug)]
pub struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running `flow-store serve`. Derefs to its [`Client`].
pub struct Running {
    pub child: Child,
    pub client: Client,
    pub stderr: Arc<Mutex<String>>,
}

impl std::ops::Deref for Running {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

pub fn spawn_binary(
    config: &Path,
    keys: StoreKeys,
    cert: &TestCert,
    env: &[(&str, &str)],
) -> Result<Running, Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flow-store"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("JOURNAL_STREAM")
        .env_remove("PLATFORM_KEY")
        .env_remove("RECEIVER_KEY");
    for (k, _) in std::env::vars() {
        if k.starts_with("FLOW_STORE_")
            || k.starts_with("PLATFORM_KEY_")
            || k.starts_with("RECEIVER_KEY_")
        {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn flow-store");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<String>();
    {
        let pipe = child.stderr.take().expect("stderr pipe");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                if let Some(addr) = parse_listening(&line) {
                    let client = Client {
                        http: Http::new(addr, &cert.cert_der),
                        base: BASE.to_string(),
                        platform: Platform::new(keys),
                        now: Now::System,
                        basic: None,
                    };
                    return Ok(Running {
                        child,
                        client,
                        stderr,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            // Let the reader thread drain what is left.
            std::thread::sleep(Duration::from_millis(100));
            return Err(Failed {
                status,
                stderr: stderr.lock().unwrap().clone(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "flow-store did not say `listening on` within 30 s; stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
    }
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let rest = rest
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    token.parse().ok()
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for exit (polling), failing the test after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "flow-store did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and require a clean exit 0.
    pub async fn terminate(mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM must exit 0, got {status}; stderr:\n{}",
            self.stderr_text()
        );
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Hand-made DEFLATE (for the inflate cap)
// ---------------------------------------------------------------------------

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

/// Runs `fault-tests ARGS --binary BINARY`, prints its report and asserts
/// the suite's own verdict (it checks invariants, never speeds).
pub fn assert_fault_suite_passes(binary: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_fault-tests"))
        .args(args)
        .arg("--binary")
        .arg(binary)
        .output()
        .expect("running fault-tests");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "fault-tests {} failed against {} ({}); see the report above",
        args.join(" "),
        binary.display(),
        output.status
    );
}
