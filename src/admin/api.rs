//! What the running daemon answers on the admin socket ([`AdminApi`], one
//! more [`Handler`]):
//!
//! - `GET /status`: the [`Status`] report (never key material);
//! - `GET /backup` (`?include-keys` to add the configuration, TLS and key
//!   files): a backup file, streamed as it is written from a consistent
//!   snapshot (`crate::backup::stream`);
//! - `POST /backup/completed`: the `backup` command saying its file is
//!   written and verified, recorded for `status` and the metrics.
//!
//! Who may ask is settled before a request reaches this handler
//! (`super::socket`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::tls::ReloadableCert;
use crate::server::Handler;
use crate::service::Service;
use crate::store::StoreError;

/// How long `status` waits for the database's health and statistics.
const STATUS_LIMIT: Duration = Duration::from_secs(5);

/// The header carrying the number of states when a backup starts (for the
/// progress bar; the file's end record has the exact count).
pub const STATES_HEADER: &str = "x-flow-store-states";

/// The status report of a running store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Whether the database can be written, read back and flushed now.
    pub healthy: bool,
    /// Why not, when not healthy.
    pub problem: Option<String>,
    /// The flow-store release.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// The storage engine.
    pub engine: String,
    /// `server.listen`.
    pub listen: String,
    /// `server.base_path`.
    pub base_path: String,
    /// Configured stores and their key ids.
    pub stores: Vec<StoreKeys>,
    /// States stored (expired ones not yet purged included).
    pub states: Option<u64>,
    /// Bytes the database takes on disk.
    pub database_bytes: Option<u64>,
    /// Free bytes on the database's filesystem.
    pub disk_free_bytes: Option<u64>,
    /// The TLS certificate in service; `None` with TLS off.
    pub certificate: Option<Certificate>,
    /// The last sweep that ran.
    pub last_sweep: Option<Sweep>,
    /// The last backup written.
    pub last_backup: Option<BackupDone>,
}

/// A store's name and key ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreKeys {
    /// The store's name.
    pub name: String,
    /// Its platform and receiver key ids.
    pub key_ids: Vec<String>,
}

/// The TLS certificate in service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Its subject.
    pub subject: Option<String>,
    /// When it expires (RFC 3339).
    pub not_after: Option<String>,
    /// Whole days until then (negative once expired).
    pub days_left: Option<i64>,
}

/// A sweep of expired states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// When it ran (RFC 3339).
    pub at: String,
    /// States it purged.
    pub purged: u64,
}

/// A backup written and verified by the `backup` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDone {
    /// When it finished (RFC 3339; set by the daemon).
    #[serde(default)]
    pub at: String,
    /// The file written (`-` for standard output).
    pub file: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// States in it.
    pub states: u64,
}

/// What the daemon remembers for `status`: the last sweep and backup.
#[derive(Debug, Default)]
pub struct Activity {
    last_sweep: Mutex<Option<Sweep>>,
    last_backup: Mutex<Option<BackupDone>>,
}

impl Activity {
    /// A sweep purged `purged` states at `at`.
    pub fn swept(&self, at: OffsetDateTime, purged: usize) {
        let sweep = Sweep {
            at: rfc3339(at),
            purged: purged as u64,
        };
        *self
            .last_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(sweep);
    }

    fn backed_up(&self, done: BackupDone) {
        *self
            .last_backup
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(done);
    }

    fn snapshot(&self) -> (Option<Sweep>, Option<BackupDone>) {
        let sweep = self
            .last_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let backup = self
            .last_backup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (sweep, backup)
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The admin channel's handler.
#[derive(Debug)]
pub struct AdminApi {
    /// The service (its database and keys).
    pub service: Arc<Service>,
    /// Where a completed backup is recorded.
    pub metrics: Arc<Metrics>,
    /// The configuration in force.
    pub config: Config,
    /// The certificate in service, when TLS is on.
    pub cert: Option<Arc<ReloadableCert>>,
    /// When the daemon started.
    pub started: Instant,
    /// Last sweep and backup.
    pub activity: Arc<Activity>,
}

type AdminBody = BoxBody<Bytes, std::io::Error>;

impl Handler for AdminApi {
    type Body = AdminBody;
    type BodyError = std::io::Error;

    async fn handle(&self, request: Request<Incoming>) -> Response<AdminBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/status") => json(StatusCode::OK, &self.status().await),
            (&Method::GET, "/backup") => {
                let keys = request.uri().query() == Some("include-keys");
                self.backup(keys).await
            }
            (&Method::POST, "/backup/completed") => self.completed(request).await,
            _ => error(
                StatusCode::NOT_FOUND,
                "no such admin endpoint (GET /status, GET /backup, POST /backup/completed)",
            ),
        }
    }
}

impl AdminApi {
    /// The status report, now.
    pub async fn status(&self) -> Status {
        let store = self.service.store();
        let health = tokio::time::timeout(STATUS_LIMIT, self.service.health()).await;
        let problem = match health {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "the database did not answer within {STATUS_LIMIT:?}"
            )),
        };
        let stats = tokio::time::timeout(STATUS_LIMIT, store.stats())
            .await
            .ok()
            .and_then(Result::ok);
        let (last_sweep, last_backup) = self.activity.snapshot();
        let stores = self
            .service
            .keys()
            .key_ids()
            .into_iter()
            .map(|(name, key_ids)| StoreKeys { name, key_ids })
            .collect();
        Status {
            healthy: problem.is_none(),
            problem,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs(),
            engine: store.engine().to_string(),
            listen: self.config.server.listen.clone(),
            base_path: self.config.server.base_path.clone(),
            stores,
            states: stats.map(|s| s.states),
            database_bytes: stats.map(|s| s.bytes_on_disk),
            disk_free_bytes: fs2::available_space(&self.config.storage.path).ok(),
            certificate: self
                .cert
                .as_ref()
                .map(|c| certificate(c, self.service.now())),
            last_sweep,
            last_backup,
        }
    }

    async fn backup(&self, include_keys: bool) -> Response<AdminBody> {
        let files = if include_keys {
            match crate::backup::keys::collect(&self.config) {
                Ok(files) => Some(files),
                Err(e) => {
                    log::error!("backup: {e}");
                    return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
                }
            }
        } else {
            None
        };
        let store = self.service.store();
        let estimate = store.stats().await.map(|s| s.states).ok();
        let snapshot = match store.snapshot().await {
            Ok(s) => s,
            Err(e @ StoreError::BackupRunning) => {
                return error(StatusCode::CONFLICT, &e.to_string());
            }
            Err(e) => {
                log::error!("backup: cannot take a snapshot: {e}");
                return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            }
        };
        log::info!(
            "backup: started; saves and deletes paused {:?} for the cut",
            snapshot.pause()
        );
        if let Some(files) = &files {
            log::warn!(
                "backup: includes {} configuration, TLS and key files (private keys)",
                files.len()
            );
        }
        let body =
            crate::backup::stream::start(snapshot, store.engine(), self.service.now(), files);
        let mut response = Response::new(body.boxed());
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(n) = estimate {
            headers.insert(STATES_HEADER, HeaderValue::from(n));
        }
        response
    }

    async fn completed(&self, request: Request<Incoming>) -> Response<AdminBody> {
        let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the request body is unreadable"),
        };
        let Ok(mut done) = serde_json::from_slice::<BackupDone>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "expected JSON {\"file\", \"bytes\", \"states\"}",
            );
        };
        let now = self.service.now();
        done.at = rfc3339(now);
        log::info!(
            "backup: {} written ({} bytes, {} states)",
            done.file,
            done.bytes,
            done.states
        );
        self.metrics.backup_succeeded(now.unix_timestamp());
        self.activity.backed_up(done);
        json(StatusCode::OK, &serde_json::json!({"recorded": true}))
    }
}

fn certificate(cert: &ReloadableCert, now: OffsetDateTime) -> Certificate {
    let not_after = cert
        .not_after()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    Certificate {
        subject: cert.subject(),
        not_after: not_after.map(rfc3339),
        days_left: not_after.map(|t| (t - now).whole_days()),
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<AdminBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<AdminBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn full(bytes: Vec<u8>) -> AdminBody {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}
