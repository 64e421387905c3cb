//! The HTTPS client that plays the platform's transport: the one every
//! caller that talks to a store over the network uses (`simulate`, the
//! integration tests, the fault suite, benchmarks). Pooled keep-alive
//! connections, HTTP/1.1 or HTTP/2 (offered by ALPN), and three ways to
//! trust the server: the system's roots, the certificates of a PEM file
//! (pinned byte for byte, or as CAs), or anything.
//!
//! Transport only: requests come in built (headers, signature and body are
//! the caller's), replies go out as status, headers and body. It knows
//! nothing of tokens, so the tests' independent JOSE code stays theirs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::server::tls::tls_provider;

/// Why a request could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("{0}")]
    Url(String),
    /// The trusted certificates cannot be used.
    #[error("{0}")]
    Trust(String),
    /// Connecting, TLS or HTTP failed; the message holds the whole chain of causes.
    #[error("{0}")]
    Transport(String),
    /// No complete answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Which server certificates to accept.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates that chain to the system's roots.
    System,
    /// These certificates: a server certificate byte-for-byte equal to one
    /// of them is accepted as it is (pinned: its name and CA flag are not
    /// looked at, which is what a self-signed certificate made with
    /// `openssl req -x509` needs); any other must chain to one of them.
    Certificates(Vec<CertificateDer<'static>>),
    /// Any certificate (handshake signatures are still verified). Only for
    /// trying a store whose certificate is not at hand.
    Insecure,
}

impl Trust {
    /// The certificates of a PEM file (a CA, or the server's own certificate).
    pub fn pem_file(path: &Path) -> Result<Trust, ClientError> {
        let text = std::fs::read(path)
            .map_err(|e| ClientError::Trust(format!("cannot read {}: {e}", path.display())))?;
        Self::pem(&text).map_err(|e| ClientError::Trust(format!("{}: {e}", path.display())))
    }

    /// The certificates of PEM text.
    pub fn pem(text: &[u8]) -> Result<Trust, ClientError> {
        let certs = rustls_pemfile::certs(&mut &text[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Trust(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Trust("no PEM certificate in it".into()));
        }
        Ok(Trust::Certificates(certs))
    }
}

/// The HTTP version to speak (and to offer by ALPN over TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (over TLS: negotiated by ALPN; over plain TCP: prior knowledge).
    Http2,
}

impl Protocol {
    fn alpn(self) -> &'static [u8] {
        match self {
            Self::Http1 => b"http/1.1",
            Self::Http2 => b"h2",
        }
    }
}

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Which server certificates to accept.
    pub trust: Trust,
    /// The HTTP version.
    pub protocol: Protocol,
    /// Reuse connections between requests (off: one fresh connection each).
    pub keep_alive: bool,
    /// Time a request may take, answer body included (`None`: unbounded).
    pub timeout: Option<Duration>,
}

impl ClientOptions {
    /// HTTP/1.1 with keep-alive, trusting `trust`, a minute per request.
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            protocol: Protocol::Http1,
            keep_alive: true,
            timeout: Some(Duration::from_secs(60)),
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

type Pool = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client of one server (`https://host:port` or `http://host:port`).
/// Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    origin: Uri,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    pool: Pool,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("origin", &self.origin)
            .finish()
    }
}

impl Client {
    /// A client of the server at `url`; only its scheme, host and port are
    /// used (request paths are the caller's).
    pub fn new(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::Url(format!("{url:?} is not a URL")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Url(format!(
                    "{url:?} must start with https:// (or http:// for a store with TLS disabled)"
                )))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::Url(format!("{url:?} has no host")))?
            .clone();
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let origin = Uri::builder()
            .scheme(if https { "https" } else { "http" })
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| ClientError::Url(format!("{url:?}: {e}")))?;
        let tls_config = tls_config(&options.trust)?;
        let pool = pool(tls_config.clone(), &options);
        let tls = https.then(|| {
            let mut raw = tls_config;
            raw.alpn_protocols = vec![options.protocol.alpn().to_vec()];
            Arc::new(raw)
        });
        Ok(Client {
            origin,
            host,
            port,
            tls,
            pool,
            timeout: options.timeout,
        })
    }

    /// `scheme://host:port` of the server.
    pub fn origin(&self) -> String {
        self.origin.to_string().trim_end_matches('/').to_string()
    }

    /// Sends `request` (its URI is a path, with or without a query) and
    /// reads the whole answer.
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Reply, ClientError> {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *request.uri_mut() = format!("{}{path}", self.origin())
            .parse()
            .map_err(|_| ClientError::Url(format!("{path:?} is not a request path")))?;
        let exchange = async {
            let response = self
                .pool
                .request(request)
                .await
                .map_err(|e| ClientError::Transport(chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("reading the answer: {}", chain(&e))))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match self.timeout {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| ClientError::Timeout(limit))?,
            None => exchange.await,
        }
    }

    /// A new TLS connection to the server with this client's trust and ALPN,
    /// and no HTTP on it yet: for what a well-behaved HTTP client will not
    /// do (trickle a request, lie about a length, stay silent).
    pub async fn connect_tls(&self) -> Result<TlsStream<TcpStream>, ClientError> {
        let config = self
            .tls
            .clone()
            .ok_or_else(|| ClientError::Url("the server is not https://".into()))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Transport(format!("connecting to {}: {e}", self.origin())))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| ClientError::Url(format!("{:?} is not a TLS server name", self.host)))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Transport(format!("TLS handshake: {e}")))
    }
}

fn pool(mut config: rustls::ClientConfig, options: &ClientOptions) -> Pool {
    // hyper-rustls sets ALPN itself from the versions enabled below.
    config.alpn_protocols.clear();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let schemes = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let connector = match options.protocol {
        Protocol::Http1 => schemes.enable_http1().wrap_connector(http),
        Protocol::Http2 => schemes.enable_http2().wrap_connector(http),
    };
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .http2_only(options.protocol == Protocol::Http2);
    if !options.keep_alive {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = tls_provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Trust(format!("TLS setup: {e}")))?;
    let config = match trust {
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot parse is no reason to stop.
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Certificates(certs) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::pinned_or_chained(
                certs, provider,
            )?))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                acceptance: Acceptance::Any,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The whole chain of causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Which server certificates a [`Verifier`] accepts.
#[derive(Debug)]
enum Acceptance {
    /// [`Trust::Certificates`]: pinned byte for byte, else chained by webpki.
    PinnedOrChained {
        pinned: Vec<CertificateDer<'static>>,
        chained: Arc<WebPkiServerVerifier>,
    },
    /// [`Trust::Insecure`].
    Any,
}

/// Checks the server's certificate per [`Acceptance`], and the handshake
/// signatures always.
#[derive(Debug)]
struct Verifier {
    acceptance: Acceptance,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    fn pinned_or_chained(
        certs: &[CertificateDer<'static>],
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
        if added == 0 {
            return Err(ClientError::Trust(
                "none of the certificates can be used (not X.509)".into(),
            ));
        }
        let chained =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| ClientError::Trust(format!("TLS setup: {e}")))?;
        Ok(Self {
            acceptance: Acceptance::PinnedOrChained {
                pinned: certs.to_vec(),
                chained,
            },
            provider,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.acceptance {
            Acceptance::Any => Ok(ServerCertVerified::assertion()),
            Acceptance::PinnedOrChained { pinned, .. }
                if pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            Acceptance::PinnedOrChained { chained, .. } => chained.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
