//! The platform as an HTTP client of one store: requests ([`Req`]) built
//! with the contract's headers and this module's own tokens, responses
//! ([`Resp`]) with the contract's error checks, sent over the crate's one
//! HTTPS client ([`Http`]) or, for what a well-behaved client will not do,
//! byte by byte ([`RawConn`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use flow_store::client::{self as transport, ClientOptions, Protocol, Trust};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::keys::StoreKeys;
use super::tokens::{save_body, state_claims, system_now, Loaded, Platform, TokenOpts};

/// How long any single HTTP exchange may take before the test fails.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// HTTPS to one server address, trusting only the test certificate, over
/// the crate's one client ([`flow_store::client`]): a fresh connection per
/// request, so that no test depends on another's connection.
#[derive(Clone)]
pub struct Http {
    pub addr: SocketAddr,
    h1: transport::Client,
    h2: transport::Client,
}

impl Http {
    pub fn new(addr: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        let client = |protocol| {
            let options = ClientOptions {
                protocol,
                keep_alive: false,
                timeout: Some(EXCHANGE_TIMEOUT),
                ..ClientOptions::new(Trust::Certificates(vec![cert.clone()]))
            };
            transport::Client::new(&format!("https://{addr}"), options).expect("test client")
        };
        Self {
            addr,
            h1: client(Protocol::Http1),
            h2: client(Protocol::Http2),
        }
    }

    /// A TLS connection offering `http/1.1` (or `h2`) by ALPN.
    pub async fn connect(&self, h2: bool) -> TlsStream<TcpStream> {
        let client = if h2 { &self.h2 } else { &self.h1 };
        client
            .connect_tls()
            .await
            .expect("TLS handshake with the test certificate")
    }

    fn build(req: &Req) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(req.method.as_str())
            .uri(req.path.as_str());
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(Bytes::from(req.body.clone())))
            .expect("valid request")
    }

    async fn exchange(client: &transport::Client, req: Req) -> Resp {
        let what = format!("{} {}", req.method, req.path);
        Self::try_exchange(client, req)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    async fn try_exchange(client: &transport::Client, req: Req) -> Result<Resp, String> {
        let reply = client
            .send(Self::build(&req))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Resp {
            status: reply.status.as_u16(),
            headers: reply.headers,
            body: reply.body.to_vec(),
            sent_secrets: req.secrets(),
        })
    }

    /// Send over a fresh HTTP/1.1 connection.
    pub async fn send(&self, req: Req) -> Resp {
        Self::exchange(&self.h1, req).await
    }

    /// [`Http::send`], with a failed exchange (server gone, connection
    /// reset) as an error instead of a panic: for servers a test kills.
    pub async fn try_send(&self, req: Req) -> Result<Resp, String> {
        Self::try_exchange(&self.h1, req).await
    }

    /// Send over a fresh HTTP/2 connection (ALPN `h2`, or the request fails).
    pub async fn send_h2(&self, req: Req) -> Resp {
        Self::exchange(&self.h2, req).await
    }
}

/// A raw HTTP/1.1 exchange over TLS, for what a well-behaved client library
/// will not do: send a body slowly, lie about its length, or chunk it.
pub struct RawConn {
    stream: TlsStream<TcpStream>,
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
