//! The test bench: a store directory (keys, certificate, one config file
//! per server written with `Config::to_toml`), the real `flow-store` binary
//! started by [`crate::process`], and platform clients over the crate's
//! one HTTPS client ([`flow_store::client`]). Every suite builds on these.
//!
//! State versions: a state's `updatedAt` is [`Tokens::updated_at`] of its
//! version number, and its content starts with `"<version>:"`, so a load
//! says exactly which save it came from.

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use flow_store::client::{self as transport, ClientOptions, Trust};
use flow_store::config::Config;
use flow_store::http::auth::{PLATFORM_KEY_HEADER, RECEIVER_KEY_HEADER, SIGNATURE_HEADER};
use flow_store::platform::{Encryption, PlatformKeys};
use http_body_util::Full;
use hyper::{Method, Request};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use uuid::Uuid;

use crate::process::ServerProcess;

/// Path prefix of every endpoint.
pub const BASE_PATH: &str = "/api/storage/1";

/// How long any single request may take before it counts as hung.
/// (The server's own storage timeout is 20 s.)
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// Keys, certificate and a working directory shared by all suites.
pub struct Bench {
    /// Scratch directory (removed when the bench drops).
    pub dir: PathBuf,
    /// The `flow-store` binary under test.
    pub binary: PathBuf,
    /// The platform's keys.
    pub keys: Arc<PlatformKeys>,
    /// The bench's certificate, the only one its clients trust.
    trust: Trust,
    /// Builds state tokens.
    pub tokens: Tokens,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Server settings a suite may change; the rest are the defaults.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Database directory.
    pub data: PathBuf,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.handshake_timeout_seconds`.
    pub handshake_timeout: u64,
    /// `server.header_read_timeout_seconds`.
    pub header_read_timeout: u64,
    /// `server.max_body_bytes`.
    pub max_body_bytes: u64,
}

impl ServerSettings {
    /// The defaults of the shipped configuration, with `data` as database.
    pub fn defaults(data: PathBuf) -> Self {
        Self {
            data,
            max_connections: 1024,
            handshake_timeout: 10,
            header_read_timeout: 10,
            max_body_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Bench {
    /// Creates keys and a certificate in a fresh directory under `parent`.
    pub fn new(binary: PathBuf, parent: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("flow-store-faults-{}", Uuid::new_v4().simple()));
        for sub in ["keys", "tls"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let platform = flow_store::keys::generate_p384_jwk()?;
        let receiver = flow_store::keys::generate_p384_jwk()?;
        let platform_public = flow_store::keys::public_jwk(&platform)?;
        write_private(&dir.join("keys/platform.jwk"), &platform_public.to_string())?;
        write_private(&dir.join("keys/receiver.jwk"), &receiver.to_string())?;
        let (cert, key) = flow_store::server::tls::self_signed_localhost()?;
        write_private(&dir.join("tls/cert.pem"), &cert)?;
        write_private(&dir.join("tls/key.pem"), &key)?;
        let keys = PlatformKeys::from_json(&platform.to_string(), &receiver.to_string())?;
        let keys = Arc::new(keys);
        Ok(Self {
            trust: Trust::pem(cert.as_bytes())?,
            dir,
            binary,
            tokens: Tokens {
                keys: Arc::clone(&keys),
                epoch: OffsetDateTime::now_utc() - time::Duration::days(1),
            },
            keys,
        })
    }

    /// A fresh subdirectory of the bench directory.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{name}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// Writes a config file for `settings` and returns its path.
    pub fn write_config(&self, settings: &ServerSettings) -> anyhow::Result<PathBuf> {
        let mut config = Config::local("127.0.0.1:0", "fault tests");
        config.server.max_body_bytes = settings.max_body_bytes;
        config.server.max_connections = settings.max_connections;
        config.server.handshake_timeout_seconds = settings.handshake_timeout;
        config.server.header_read_timeout_seconds = settings.header_read_timeout;
        config.server.shutdown_grace_seconds = 3;
        config.storage.path = settings.data.clone();
        config.storage.sweep_interval_seconds = 3600;
        let path = self
            .dir
            .join(format!("config-{}.toml", Uuid::new_v4().simple()));
        std::fs::write(&path, config.to_toml()?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts the binary with `settings` and waits until it listens.
    pub fn start(&self, settings: &ServerSettings) -> anyhow::Result<ServerProcess> {
        let config = self.write_config(settings)?;
        Ok(ServerProcess::spawn(&self.binary, &config, &[])?)
    }

    /// The transport to `addr`: one keep-alive HTTP/1.1 connection at a
    /// time, reopened after any failure, trusting the bench's certificate.
    pub fn transport(&self, addr: SocketAddr) -> anyhow::Result<transport::Client> {
        let options = ClientOptions {
            timeout: Some(REQUEST_TIMEOUT),
            ..ClientOptions::new(self.trust.clone())
        };
        Ok(transport::Client::new(&format!("https://{addr}"), options)?)
    }

    /// A platform client of `addr`.
    pub fn client(&self, addr: SocketAddr) -> anyhow::Result<Client> {
        Ok(Client {
            transport: self.transport(addr)?,
            keys: Arc::clone(&self.keys),
        })
    }

    /// Opens a TLS connection to `addr` (no HTTP yet).
    pub async fn tls_connect(&self, addr: SocketAddr) -> anyhow::Result<TlsStream<TcpStream>> {
        Ok(self.transport(addr)?.connect_tls().await?)
    }
}

/// Builds state tokens whose `updatedAt` and content carry a version.
#[derive(Clone)]
pub struct Tokens {
    keys: Arc<PlatformKeys>,
    /// `updatedAt` of version 0.
    epoch: OffsetDateTime,
}

impl Tokens {
    /// `updatedAt` of `version`: one microsecond per version after the epoch.
    pub fn updated_at(&self, version: u64) -> OffsetDateTime {
        let micros = i64::try_from(version).unwrap_or(i64::MAX);
        self.epoch + time::Duration::microseconds(micros)
    }

    /// A state token for (tenant, id) at `version`; its content is
    /// `"<version>:"` followed by `padding`.
    pub fn token(
        &self,
        tenant: Uuid,
        id: Uuid,
        version: u64,
        padding: &str,
    ) -> anyhow::Result<String> {
        let at = self
            .updated_at(version)
            .format(&time::format_description::well_known::Rfc3339)?;
        let state = json!({
            "id": id, "tenant": tenant, "parent": null, "flow": null, "flowVersion": null,
            "currentMapElement": null, "currentUser": null, "isDone": false,
            "createdAt": at, "updatedAt": at, "expiresAt": null,
            "content": format!("{version}:{padding}"),
        });
        self.keys.state_token(
            tenant,
            &state,
            OffsetDateTime::now_utc(),
            Encryption::default(),
        )
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The JSON `message` of an error body, or the body's start.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into()
            })
    }
}

/// One platform client: one keep-alive HTTP/1.1 connection, reopened after
/// any failure.
pub struct Client {
    transport: transport::Client,
    keys: Arc<PlatformKeys>,
}

impl Client {
    /// Sends one request; signed for `tenant` when given. Fails on
    /// transport errors and after [`REQUEST_TIMEOUT`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        tenant: Option<Uuid>,
    ) -> anyhow::Result<Reply> {
        let full_path = format!("{BASE_PATH}{path}");
        let mut request = Request::builder().method(method).uri(&full_path);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        if let Some(tenant) = tenant {
            request = request
                .header(PLATFORM_KEY_HEADER, self.keys.platform_kid())
                .header(RECEIVER_KEY_HEADER, self.keys.receiver_kid())
                .header(
                    SIGNATURE_HEADER,
                    self.keys
                        .request_signature(tenant, &full_path, OffsetDateTime::now_utc())?,
                );
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let reply = self.transport.send(request).await?;
        Ok(Reply {
            status: reply.status.as_u16(),
            body: reply.body,
        })
    }

    /// Saves the given tokens in one request.
    pub async fn save_tokens(&self, tenant: Uuid, tokens: &[String]) -> anyhow::Result<Reply> {
        let items: Vec<Value> = tokens.iter().map(|t| json!({ "token": t })).collect();
        let body = serde_json::to_vec(&items)?;
        self.send(
            Method::POST,
            &format!("/states/{tenant}"),
            Some(body),
            Some(tenant),
        )
        .await
    }

    /// Deletes `ids` of `tenant` in one request.
    pub async fn delete(&self, tenant: Uuid, ids: &[Uuid]) -> anyhow::Result<Reply> {
        let body = serde_json::to_vec(ids)?;
        self.send(
            Method::DELETE,
            &format!("/states/{tenant}"),
            Some(body),
            Some(tenant),
        )
        .await
    }

    /// Loads (tenant, id): `Ok(None)` on 404, the content's version on 200.
    pub async fn load_version(&self, tenant: Uuid, id: Uuid) -> anyhow::Result<Option<u64>> {
        let reply = self
            .send(
                Method::GET,
                &format!("/states/{tenant}/{id}"),
                None,
                Some(tenant),
            )
            .await?;
        match reply.status {
            404 => Ok(None),
            200 => {
                let body: Value = serde_json::from_slice(&reply.body).context("load body")?;
                let token = body
                    .get("token")
                    .and_then(Value::as_str)
                    .context("load body has no token")?;
                let content = self
                    .keys
                    .open_reply(token, tenant, id, OffsetDateTime::now_utc())?;
                let version = content
                    .split(':')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("content has no version prefix")?;
                Ok(Some(version))
            }
            other => bail!("load answered {other}: {}", reply.message()),
        }
    }

    /// `GET /health`.
    pub async fn health(&self) -> anyhow::Result<Reply> {
        self.send(Method::GET, "/health", None, None).await
    }
}

/// A small xorshift generator, seeded from the OS via a v4 UUID, so the
/// bench needs no extra dependency; the seed is printed for reruns.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `seed` (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// A random seed.
    pub fn seed() -> u64 {
        let bits = Uuid::new_v4().as_u128();
        (bits as u64) ^ ((bits >> 64) as u64)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `len` characters of incompressible base64 text.
    pub fn text(&mut self, len: usize) -> String {
        use base64::Engine;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            bytes.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        let mut text = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
        text.truncate(len);
        text
    }
}

/// Median and 99th percentile of `samples`, in milliseconds.
pub fn percentiles(samples: &[Duration]) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
