//! Prometheus metrics: the instruments every layer records into, and the
//! `/metrics` endpoint ([`endpoint::MetricsEndpoint`]) that a listener of
//! its own serves (`[metrics] listen`), never the platform-facing one.
//!
//! [`Metrics`] owns one `prometheus-client` registry and offers typed
//! recording methods, so callers never spell a metric name or a label:
//! the HTTP layer records each request, the accept loop its connections
//! (through [`crate::server::ConnectionEvents`]), the sweeper its purges.
//! Values that are read rather than counted (state count, database and
//! disk size, health, certificate expiry) are sampled by the endpoint at
//! scrape time ([`Sampled`]); process figures come from `/proc`
//! ([`process`]).
//!
//! What no metric ever holds: a tenant or state id, key material, token or
//! state content. Every label value is a `&'static str` from a fixed set
//! (or a status code), so no request can create a series.
//!
//! Exposition: the classic Prometheus text format (0.0.4) by default, which
//! every `promtool` and a plain `curl` read; OpenMetrics only when the
//! scraper's `Accept` asks for it ([`Format::negotiate`]).

pub mod endpoint;
pub mod process;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::crypto::{SignatureError, TokenError};
use crate::keys::KeyRole;
use crate::server::{ConnectionEvents, HandshakeFailure};
use crate::service::ServiceError;
use crate::store::{SaveOutcome, StoreError};

/// The OpenTelemetry HTTP semantic conventions' buckets for
/// `http.server.request.duration`, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The labels of `http_server_request_duration_seconds`, as OpenTelemetry
/// names them.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    http_request_method: &'static str,
    /// The route template (`/states/{tenant}/{id}`), `""` when no route matched.
    http_route: &'static str,
    http_response_status_code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    credential: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageErrorLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    engine: &'static str,
}

type RequestHistograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// A failure worth counting, classified into bounded labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A credential was refused.
    Rejected {
        /// Which one: `signature`, `token`, `key_id` or `basic`.
        credential: &'static str,
        /// Why, from a fixed set per credential.
        reason: &'static str,
    },
    /// The database failed; the kind of [`StoreError`].
    Storage(&'static str),
}

impl Failure {
    /// Wrong or missing HTTP Basic credentials.
    pub const BASIC: Failure = Failure::Rejected {
        credential: "basic",
        reason: "wrong_credentials",
    };

    /// A database failure.
    pub fn storage(error: &StoreError) -> Failure {
        Failure::Storage(storage_kind(error))
    }

    /// What to count for `error`, if anything: rejections of credentials
    /// and storage failures. A reply that could not be sealed is a server
    /// fault, visible as a 500 in the request histogram.
    pub fn of(error: &ServiceError) -> Option<Failure> {
        let rejected = |credential, reason| Some(Failure::Rejected { credential, reason });
        match error {
            ServiceError::Signature(e) => rejected("signature", signature_reason(e)),
            ServiceError::Token { error, .. } => {
                token_reason(error).and_then(|r| rejected("token", r))
            }
            ServiceError::UnknownKey(KeyRole::Platform) => {
                rejected("key_id", "unknown_platform_key")
            }
            ServiceError::UnknownKey(KeyRole::Receiver) => {
                rejected("key_id", "unknown_receiver_key")
            }
            ServiceError::Store(e) => Some(Failure::storage(e)),
            ServiceError::Seal(_) => None,
        }
    }
}

/// Every (credential, reason) pair [`Failure::of`] and [`Failure::BASIC`]
/// produce. Their series exist at zero from the start, so that dashboards
/// and `rate()` see "none yet" rather than nothing.
pub const REJECTIONS: [(&str, &str); 17] = [
    ("signature", "missing"),
    ("signature", "malformed"),
    ("signature", "algorithm"),
    ("signature", "unknown_key"),
    ("signature", "bad_signature"),
    ("signature", "claim"),
    ("token", "malformed"),
    ("token", "algorithm"),
    ("token", "unknown_receiver_key"),
    ("token", "undecryptable"),
    ("token", "too_large"),
    ("token", "unknown_platform_key"),
    ("token", "bad_signature"),
    ("token", "claim"),
    ("key_id", "unknown_platform_key"),
    ("key_id", "unknown_receiver_key"),
    ("basic", "wrong_credentials"),
];

/// Every kind of [`StoreError`], as labelled.
pub const STORAGE_ERROR_KINDS: [&str; 7] = [
    "locked",
    "unsupported_format",
    "disk_full",
    "corrupt",
    "stuck",
    "backup_running",
    "unavailable",
];

/// Every reason of a failed TLS handshake, as labelled.
pub const HANDSHAKE_FAILURE_REASONS: [&str; 2] = ["timeout", "error"];

// The matches below list every variant (no `_`): a new error variant must
// be given its label on purpose, never fall silently into another one (and
// its label added to the lists above; a test checks they agree).

fn signature_reason(error: &SignatureError) -> &'static str {
    match error {
        SignatureError::Missing => "missing",
        SignatureError::Malformed(_) => "malformed",
        SignatureError::Algorithm => "algorithm",
        SignatureError::UnknownKey => "unknown_key",
        SignatureError::BadSignature => "bad_signature",
        SignatureError::Claim { .. } => "claim",
    }
}

fn token_reason(error: &TokenError) -> Option<&'static str> {
    Some(match error {
        TokenError::Malformed(_) => "malformed",
        TokenError::Algorithm(_) => "algorithm",
        TokenError::UnknownReceiverKey => "unknown_receiver_key",
        TokenError::Undecryptable => "undecryptable",
        TokenError::TooLarge(_) => "too_large",
        TokenError::UnknownPlatformKey => "unknown_platform_key",
        TokenError::BadSignature => "bad_signature",
        TokenError::Claim { .. } => "claim",
        TokenError::Seal => return None,
    })
}

fn storage_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Locked(_) => "locked",
        StoreError::UnsupportedFormat { .. } => "unsupported_format",
        StoreError::DiskFull => "disk_full",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::Stuck(_) => "stuck",
        StoreError::BackupRunning => "backup_running",
        StoreError::Unavailable(_) => "unavailable",
    }
}

fn handshake_reason(failure: HandshakeFailure) -> &'static str {
    match failure {
        HandshakeFailure::TimedOut => "timeout",
        HandshakeFailure::Failed => "error",
    }
}

/// The `http.request.method` label: the methods of RFC 9110 and PATCH as
/// they are, anything else `_OTHER` (a client must not mint series).
pub fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::CONNECT, "CONNECT"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::PATCH, "PATCH"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("_OTHER", |(_, label)| label)
}

/// Values read at scrape time rather than counted; `None` is not exported
/// (a store without TLS has no certificate expiry, not an expiry of 1970).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// States stored.
    pub states: Option<u64>,
    /// Bytes the database takes on disk.
    pub database_bytes: Option<u64>,
    /// Bytes free for flow-store on the database's filesystem.
    pub disk_free_bytes: Option<u64>,
    /// Size of that filesystem.
    pub disk_size_bytes: Option<u64>,
    /// Whether the last health check passed.
    pub healthy: Option<bool>,
    /// When the TLS certificate in service expires (Unix seconds).
    pub certificate_expiry: Option<i64>,
}

/// The latest [`Sample`], exported by the registry on every scrape.
#[derive(Debug, Default)]
pub struct Sampled(Mutex<Sample>);

impl Sampled {
    /// The current sample.
    pub fn get(&self) -> Sample {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the current sample.
    pub fn update(&self, change: impl FnOnce(&mut Sample)) {
        change(
            &mut self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = self.get();
        let bytes = Some(&Unit::Bytes);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let gauges: [(&str, &str, Option<&Unit>, Option<i64>); 6] = [
            (
                "flow_store_states",
                "States stored, expired ones not yet purged included",
                None,
                sample.states.map(count),
            ),
            (
                "flow_store_database_size",
                "Disk space the database takes",
                bytes,
                sample.database_bytes.map(count),
            ),
            (
                "flow_store_disk_free",
                "Disk space free for flow-store on the filesystem of the database",
                bytes,
                sample.disk_free_bytes.map(count),
            ),
            (
                "flow_store_disk_size",
                "Size of the filesystem of the database",
                bytes,
                sample.disk_size_bytes.map(count),
            ),
            (
                "flow_store_healthy",
                "1 when the last health check wrote, read back and flushed its probe; 0 when it failed",
                None,
                sample.healthy.map(i64::from),
            ),
            (
                "flow_store_tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate in service expires, in Unix seconds",
                None,
                sample.certificate_expiry,
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)?;
            }
        }
        Ok(())
    }
}

/// The instruments, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: RequestHistograms,
    active_requests: Gauge,
    open_connections: Gauge,
    handshake_failures: Family<HandshakeLabels, Counter>,
    saved: Counter,
    ignored: Counter,
    loaded: Counter,
    deleted: Counter,
    purged: Counter,
    rejections: Family<RejectionLabels, Counter>,
    storage_errors: Family<StorageErrorLabels, Counter>,
    last_backup: Gauge,
    sampled: Arc<Sampled>,
}

/// The exposition formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `accept` names it, the classic text otherwise.
    /// Prometheus itself asks for OpenMetrics first; `curl` and Debian
    /// bookworm's `promtool` (2.42), which cannot parse OpenMetrics-only
    /// lines such as `# EOF`, get the classic format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let is_openmetrics = params
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
                // `q=0` means "not this one".
                let refused = params.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                is_openmetrics && !refused
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Every instrument at zero, for flow-store `version` on `engine`.
    pub fn new(version: &'static str, engine: &'static str) -> Metrics {
        let mut registry = Registry::default();
        let requests = RequestHistograms::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP requests to the storage API, by method, route template and status code",
            Unit::Seconds,
            requests.clone(),
        );
        let active_requests = Gauge::default();
        registry.register(
            "http_server_active_requests",
            "Requests to the storage API being served now",
            active_requests.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "flow_store_open_connections",
            "Connections open on the platform-facing listener",
            open_connections.clone(),
        );
        let handshake_failures = Family::default();
        registry.register(
            "flow_store_tls_handshake_failures",
            "TLS handshakes on the platform-facing listener that did not complete (reason: timeout or error)",
            handshake_failures.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let saved = counter(
            &mut registry,
            "flow_store_states_saved",
            "States written by saves (new, or replacing an older or equal updatedAt)",
        );
        let ignored = counter(
            &mut registry,
            "flow_store_states_ignored",
            "States in saves ignored because the stored one is newer",
        );
        let loaded = counter(
            &mut registry,
            "flow_store_states_loaded",
            "States returned by loads",
        );
        let deleted = counter(
            &mut registry,
            "flow_store_states_deleted",
            "States removed by deletes (ids that existed)",
        );
        let purged = counter(
            &mut registry,
            "flow_store_states_purged",
            "Expired states removed by the sweeper",
        );
        let rejections = Family::default();
        registry.register(
            "flow_store_auth_rejections",
            "Requests refused for a credential (signature, token, key_id, basic), by reason",
            rejections.clone(),
        );
        let storage_errors = Family::default();
        registry.register(
            "flow_store_storage_errors",
            "Database failures, by kind",
            storage_errors.clone(),
        );
        let last_backup = Gauge::default();
        registry.register(
            "flow_store_last_backup_success_timestamp_seconds",
            "When the last backup this process took succeeded, in Unix seconds; 0 until one has",
            last_backup.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels { version, engine })
            .set(1);
        registry.register(
            "flow_store_build_info",
            "Always 1; the labels say which flow-store runs on which storage engine",
            build_info,
        );
        for (credential, reason) in REJECTIONS {
            let _ = rejections.get_or_create(&RejectionLabels { credential, reason });
        }
        for kind in STORAGE_ERROR_KINDS {
            let _ = storage_errors.get_or_create(&StorageErrorLabels { kind });
        }
        for reason in HANDSHAKE_FAILURE_REASONS {
            let _ = handshake_failures.get_or_create(&HandshakeLabels { reason });
        }
        let sampled = Arc::new(Sampled::default());
        registry.register_collector(Box::new(Arc::clone(&sampled)));
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Metrics {
            registry,
            requests,
            active_requests,
            open_connections,
            handshake_failures,
            saved,
            ignored,
            loaded,
            deleted,
            purged,
            rejections,
            storage_errors,
            last_backup,
            sampled,
        }
    }

    /// One answered request to the storage API.
    pub fn observe_request(
        &self,
        method: &Method,
        route: &'static str,
        status: u16,
        took: Duration,
    ) {
        let labels = RequestLabels {
            http_request_method: method_label(method),
            http_route: route,
            http_response_status_code: status,
        };
        self.requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts a request in flight until the returned guard is dropped
    /// (also when the client goes away mid-request and the future is dropped).
    pub fn request_in_flight(&self) -> InFlight {
        self.active_requests.inc();
        InFlight(self.active_requests.clone())
    }

    /// What a save did.
    pub fn saved(&self, outcome: SaveOutcome) {
        self.saved.inc_by(outcome.applied as u64);
        self.ignored.inc_by(outcome.ignored as u64);
    }

    /// A state was returned by a load.
    pub fn loaded(&self) {
        self.loaded.inc();
    }

    /// `n` states were removed by a delete.
    pub fn deleted(&self, n: usize) {
        self.deleted.inc_by(n as u64);
    }

    /// `n` expired states were removed by the sweeper.
    pub fn purged(&self, n: usize) {
        self.purged.inc_by(n as u64);
    }

    /// Counts a refused credential or a storage failure.
    pub fn failed(&self, failure: Failure) {
        match failure {
            Failure::Rejected { credential, reason } => {
                self.rejections
                    .get_or_create(&RejectionLabels { credential, reason })
                    .inc();
            }
            Failure::Storage(kind) => {
                self.storage_errors
                    .get_or_create(&StorageErrorLabels { kind })
                    .inc();
            }
        }
    }

    /// Counts `error` if it is worth counting (see [`Failure::of`]).
    pub fn service_failed(&self, error: &ServiceError) {
        if let Some(failure) = Failure::of(error) {
            self.failed(failure);
        }
    }

    /// A backup succeeded at `unix_seconds`: for the backup feature to call.
    pub fn backup_succeeded(&self, unix_seconds: i64) {
        self.last_backup.set(unix_seconds);
    }

    /// The values sampled at scrape time.
    pub fn sampled(&self) -> &Sampled {
        &self.sampled
    }

    /// Everything, in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)?
            }
        }
        Ok(text)
    }
}

/// A request in flight; see [`Metrics::request_in_flight`].
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ConnectionEvents for Metrics {
    fn opened(&self) {
        self.open_connections.inc();
    }

    fn closed(&self) {
        self.open_connections.dec();
    }

    fn handshake_failed(&self, failure: HandshakeFailure) {
        let reason = handshake_reason(failure);
        self.handshake_failures
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("1.2.3", "sled")
    }

    /// The sample lines of `text` that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "_OTHER");
    }

    #[test]
    fn classic_text_by_default_openmetrics_when_asked() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        // What Prometheus 2.42 sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn the_classic_format_has_no_openmetrics_only_lines() {
        let m = metrics();
        m.observe_request(
            &Method::POST,
            "/states/{tenant}",
            204,
            Duration::from_millis(3),
        );
        m.saved(SaveOutcome {
            applied: 2,
            ignored: 1,
        });
        let text = m.encode(Format::Prometheus).unwrap();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("# UNIT"), "{text}");
        assert!(!text.contains(" info\n"), "{text}");
        assert!(
            text.contains("# TYPE flow_store_states_saved_total counter"),
            "{text}"
        );
        assert_eq!(
            lines(&text, "flow_store_states_saved_total"),
            ["flow_store_states_saved_total 2"]
        );
        assert_eq!(
            lines(&text, "flow_store_states_ignored_total"),
            ["flow_store_states_ignored_total 1"]
        );
        assert!(
            text.contains("flow_store_build_info{version=\"1.2.3\",engine=\"sled\"} 1"),
            "{text}"
        );
        let open = m.encode(Format::OpenMetrics).unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn requests_are_labelled_by_template_with_otel_buckets() {
        let m = metrics();
        m.observe_request(
            &Method::GET,
            "/states/{tenant}/{id}",
            200,
            Duration::from_millis(30),
        );
        let text = m.encode(Format::Prometheus).unwrap();
        let labels = "http_request_method=\"GET\",http_route=\"/states/{tenant}/{id}\",http_response_status_code=\"200\"";
        let buckets = lines(&text, "http_server_request_duration_seconds_bucket");
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1, "{text}");
        assert!(
            buckets.contains(
                &format!("http_server_request_duration_seconds_bucket{{{labels},le=\"0.025\"}} 0")
                    .as_str()
            ),
            "{text}"
        );
        assert!(
            buckets.contains(
                &format!("http_server_request_duration_seconds_bucket{{{labels},le=\"0.05\"}} 1")
                    .as_str()
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "http_server_request_duration_seconds_count{{{labels}}} 1"
            )),
            "{text}"
        );
    }

    #[test]
    fn in_flight_and_connections_go_back_down() {
        let m = metrics();
        let guard = m.request_in_flight();
        m.opened();
        let text = m.encode(Format::Prometheus).unwrap();
        assert_eq!(
            lines(&text, "http_server_active_requests "),
            ["http_server_active_requests 1"]
        );
        assert_eq!(
            lines(&text, "flow_store_open_connections "),
            ["flow_store_open_connections 1"]
        );
        drop(guard);
        m.closed();
        m.handshake_failed(HandshakeFailure::TimedOut);
        let text = m.encode(Format::Prometheus).unwrap();
        assert_eq!(
            lines(&text, "http_server_active_requests "),
            ["http_server_active_requests 0"]
        );
        assert_eq!(
            lines(&text, "flow_store_open_connections "),
            ["flow_store_open_connections 0"]
        );
        let mut handshakes = lines(&text, "flow_store_tls_handshake_failures_total");
        handshakes.sort_unstable();
        assert_eq!(
            handshakes,
            [
                "flow_store_tls_handshake_failures_total{reason=\"error\"} 0",
                "flow_store_tls_handshake_failures_total{reason=\"timeout\"} 1",
            ]
        );
    }

    #[test]
    fn every_label_produced_is_listed() {
        let claim = |claim| SignatureError::Claim {
            claim,
            problem: "x",
        };
        let signature = [
            SignatureError::Missing,
            SignatureError::Malformed("x"),
            SignatureError::Algorithm,
            SignatureError::UnknownKey,
            SignatureError::BadSignature,
            claim("exp"),
        ];
        let token = [
            TokenError::Malformed("x"),
            TokenError::Algorithm("x"),
            TokenError::UnknownReceiverKey,
            TokenError::Undecryptable,
            TokenError::TooLarge(1),
            TokenError::UnknownPlatformKey,
            TokenError::BadSignature,
            TokenError::Claim {
                claim: "exp",
                problem: "x",
            },
        ];
        let mut errors: Vec<ServiceError> = signature.into_iter().map(ServiceError::from).collect();
        errors.extend(
            token
                .into_iter()
                .map(|error| ServiceError::Token { index: 0, error }),
        );
        errors.push(ServiceError::UnknownKey(KeyRole::Platform));
        errors.push(ServiceError::UnknownKey(KeyRole::Receiver));
        let mut produced: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| match Failure::of(e) {
                Some(Failure::Rejected { credential, reason }) => (credential, reason),
                other => panic!("{e:?} gave {other:?}"),
            })
            .collect();
        if let Failure::Rejected { credential, reason } = Failure::BASIC {
            produced.push((credential, reason));
        }
        assert_eq!(produced, REJECTIONS);
        let stores = [
            StoreError::Locked("/x".into()),
            StoreError::UnsupportedFormat {
                found: 9,
                supported: 1,
            },
            StoreError::DiskFull,
            StoreError::Corrupt("x".into()),
            StoreError::Stuck(Duration::from_secs(1)),
            StoreError::BackupRunning,
            StoreError::Unavailable("x".into()),
        ];
        let kinds: Vec<&str> = stores.iter().map(storage_kind).collect();
        assert_eq!(kinds, STORAGE_ERROR_KINDS);
        let reasons = [HandshakeFailure::TimedOut, HandshakeFailure::Failed].map(handshake_reason);
        assert_eq!(reasons, HANDSHAKE_FAILURE_REASONS);
    }

    #[test]
    fn failures_get_bounded_labels() {
        let m = metrics();
        m.service_failed(&ServiceError::Signature(SignatureError::BadSignature));
        m.service_failed(&ServiceError::Token {
            index: 3,
            error: TokenError::Undecryptable,
        });
        m.service_failed(&ServiceError::UnknownKey(KeyRole::Receiver));
        m.service_failed(&ServiceError::Store(StoreError::DiskFull));
        m.service_failed(&ServiceError::Seal(TokenError::Seal));
        m.failed(Failure::BASIC);
        let text = m.encode(Format::Prometheus).unwrap();
        let mut rejections: Vec<&str> = lines(&text, "flow_store_auth_rejections_total")
            .into_iter()
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        rejections.sort_unstable();
        assert_eq!(
            rejections,
            [
                "flow_store_auth_rejections_total{credential=\"basic\",reason=\"wrong_credentials\"} 1",
                "flow_store_auth_rejections_total{credential=\"key_id\",reason=\"unknown_receiver_key\"} 1",
                "flow_store_auth_rejections_total{credential=\"signature\",reason=\"bad_signature\"} 1",
                "flow_store_auth_rejections_total{credential=\"token\",reason=\"undecryptable\"} 1",
            ]
        );
        assert_eq!(
            lines(&text, "flow_store_auth_rejections_total").len(),
            REJECTIONS.len()
        );
        let storage: Vec<&str> = lines(&text, "flow_store_storage_errors_total")
            .into_iter()
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        assert_eq!(
            storage,
            ["flow_store_storage_errors_total{kind=\"disk_full\"} 1"]
        );
    }

    #[test]
    fn sampled_values_are_exported_only_once_known() {
        let m = metrics();
        let text = m.encode(Format::Prometheus).unwrap();
        assert!(
            !text.contains("flow_store_tls_certificate_expiry"),
            "{text}"
        );
        assert!(!text.contains("flow_store_states "), "{text}");
        m.sampled().update(|s| {
            s.states = Some(7);
            s.database_bytes = Some(4096);
            s.healthy = Some(false);
            s.certificate_expiry = Some(1_900_000_000);
        });
        m.backup_succeeded(1_800_000_000);
        let text = m.encode(Format::Prometheus).unwrap();
        assert_eq!(lines(&text, "flow_store_states "), ["flow_store_states 7"]);
        assert_eq!(
            lines(&text, "flow_store_database_size_bytes "),
            ["flow_store_database_size_bytes 4096"]
        );
        assert_eq!(
            lines(&text, "flow_store_healthy "),
            ["flow_store_healthy 0"]
        );
        assert_eq!(
            lines(
                &text,
                "flow_store_tls_certificate_expiry_timestamp_seconds "
            ),
            ["flow_store_tls_certificate_expiry_timestamp_seconds 1900000000"]
        );
        assert_eq!(
            lines(&text, "flow_store_last_backup_success_timestamp_seconds "),
            ["flow_store_last_backup_success_timestamp_seconds 1800000000"]
        );
    }
}
