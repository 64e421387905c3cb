//! `GET /metrics`: the [`Handler`] of the metrics listener (plain HTTP,
//! `[metrics] listen`), a listener of its own so that the platform-facing
//! port never exposes it.
//!
//! Before encoding, a scrape refreshes the sampled values: free disk and
//! certificate expiry every time (a `statvfs` and a parse of the leaf
//! certificate), the database's health and statistics at most once per
//! [`STORE_SAMPLE_INTERVAL`] and for at most [`STORE_SAMPLE_LIMIT`] (the
//! state count walks the database, and a wedged database must not hang the
//! scrape: it then reads as unhealthy, the last statistics stay).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Mutex;

use super::{Failure, Format, Metrics};
use crate::server::tls::ReloadableCert;
use crate::server::Handler;
use crate::service::Service;

/// The one path served.
pub const PATH: &str = "/metrics";

/// Scrapes closer together than this reuse the last database sample.
pub const STORE_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a scrape waits for the database's health and statistics.
pub const STORE_SAMPLE_LIMIT: Duration = Duration::from_secs(5);

/// The metrics endpoint and where its sampled values come from.
#[derive(Debug)]
pub struct MetricsEndpoint {
    metrics: Arc<Metrics>,
    service: Arc<Service>,
    /// A path on the database's filesystem, for free disk space.
    data_path: PathBuf,
    /// The certificate in service, when TLS is on.
    cert: Option<Arc<ReloadableCert>>,
    /// When the database was last sampled; held across the sampling so
    /// concurrent scrapes sample it once.
    store_sampled: Mutex<Option<Instant>>,
}

impl MetricsEndpoint {
    /// The endpoint for `metrics`, sampling `service`'s database, the
    /// filesystem holding `data_path` and `cert`.
    pub fn new(
        metrics: Arc<Metrics>,
        service: Arc<Service>,
        data_path: PathBuf,
        cert: Option<Arc<ReloadableCert>>,
    ) -> Self {
        Self {
            metrics,
            service,
            data_path,
            cert,
            store_sampled: Mutex::new(None),
        }
    }

    /// Refreshes the sampled values (see the module documentation).
    async fn sample(&self) {
        let disk_free = fs2::available_space(&self.data_path).ok();
        let disk_size = fs2::total_space(&self.data_path).ok();
        let expiry = self.cert.as_ref().and_then(|cert| cert.not_after());
        self.metrics.sampled().update(|s| {
            s.disk_free_bytes = disk_free;
            s.disk_size_bytes = disk_size;
            s.certificate_expiry = expiry;
        });
        let mut last = self.store_sampled.lock().await;
        if last.is_some_and(|at| at.elapsed() < STORE_SAMPLE_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let healthy = match tokio::time::timeout(STORE_SAMPLE_LIMIT, self.service.health()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                log::warn!("metrics: the health check failed: {e}");
                self.metrics.service_failed(&e);
                false
            }
            Err(_) => {
                log::warn!(
                    "metrics: the health check did not answer within {STORE_SAMPLE_LIMIT:?}"
                );
                false
            }
        };
        let stats = tokio::time::timeout(STORE_SAMPLE_LIMIT, self.service.store().stats()).await;
        let stats = match stats {
            Ok(Ok(stats)) => Some(stats),
            Ok(Err(e)) => {
                log::warn!("metrics: reading the database statistics failed: {e}");
                self.metrics.failed(Failure::storage(&e));
                None
            }
            Err(_) => None,
        };
        self.metrics.sampled().update(|s| {
            s.healthy = Some(healthy);
            if let Some(stats) = stats {
                s.states = Some(stats.states);
                s.database_bytes = Some(stats.bytes_on_disk);
            }
        });
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.uri().path() != PATH {
            return text(
                StatusCode::NOT_FOUND,
                "no such endpoint; metrics are at /metrics\n",
            );
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "allowed: GET, HEAD\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        let format = Format::negotiate(accept);
        self.sample().await;
        match self.metrics.encode(format) {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                let headers = response.headers_mut();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(e) => {
                log::error!("metrics: encoding failed: {e}");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the metrics could not be encoded\n",
                )
            }
        }
    }
}

impl Handler for MetricsEndpoint {
    type Body = Full<Bytes>;
    type BodyError = std::convert::Infallible;

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.respond(request).await
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
