//! The assembled store: configuration in, a running server out.
//!
//! [`App::open`] does every start-up check before anything is bound (keys
//! parse and are P-384, the certificate matches its key, the database opens
//! and is not locked); [`App::run`] serves the storage API on its listener
//! and the metrics on theirs ([`Listeners`]), runs the expiry sweeper and
//! the reload handler until the shutdown future completes, then drains and
//! flushes the database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::api::{Activity, AdminApi};
use crate::admin::socket::AdminListener;
use crate::clock::Clock;
use crate::config::{Config, StorageEngine};
use crate::http::auth::BasicCredentials;
use crate::http::StorageApi;
use crate::keys::KeyRing;
use crate::metrics::endpoint::MetricsEndpoint;
use crate::metrics::Metrics;
use crate::server::tls::{self, ReloadableCert};
use crate::server::{self, ConnectionEvents, ServerOptions};
use crate::service::Service;
use crate::store::postgres::{PostgresOptions, PostgresStore};
use crate::store::sled::SledStore;
use crate::store::Store;

/// A store ready to serve.
pub struct App {
    config: Config,
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    cert: Option<Arc<ReloadableCert>>,
    basic: Option<BasicCredentials>,
}

/// The bound sockets a store serves.
#[derive(Debug)]
pub struct Listeners {
    /// The platform-facing storage API.
    pub api: TcpListener,
    /// Plain-HTTP `/metrics`, when `[metrics] listen` is set.
    pub metrics: Option<TcpListener>,
    /// The admin socket, when `[admin] socket` is set.
    pub admin: Option<AdminListener>,
}

/// Binds `addr` for `setting` (named in the error), ready for tokio.
pub fn bind(addr: std::net::SocketAddr, setting: &str) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} ({setting}): is another flow-store or another service using this port?")
    })?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("configuring the listener on {addr} ({setting})"))?;
    Ok(listener)
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service)
            .finish()
    }
}

impl App {
    /// Validates `config`, loads keys and certificate, opens the database.
    pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        config.validate()?;
        let keys = KeyRing::load(&config.stores).context("loading store keys")?;
        let cert = if config.tls.enabled {
            let key = tls::load_certified_key(&config.tls.cert, &config.tls.key)
                .context("loading the TLS certificate")?;
            Some(Arc::new(ReloadableCert::new(key)))
        } else {
            log::warn!(
                "tls.enabled = false: serving plain HTTP; only do this behind a TLS-terminating proxy on the same host"
            );
            None
        };
        let basic = load_basic_credentials(config)?;
        let store = open_store(config).await?;
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), store.engine()));
        let service = Service::new(
            store,
            keys,
            clock,
            config.auth.clock_skew_seconds,
            config.server.max_inflated_bytes,
        );
        Ok(App {
            config: config.clone(),
            service: Arc::new(service),
            metrics,
            cert,
            basic,
        })
    }

    /// The service, for in-process callers.
    pub fn service(&self) -> Arc<Service> {
        Arc::clone(&self.service)
    }

    /// The metrics, for in-process callers (the backup feature records its
    /// successes there).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves the storage API on `listener` (no metrics listener) until
    /// `shutdown` completes; then drains, stops the sweeper and flushes the
    /// database.
    pub fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let listeners = Listeners {
            api: listener,
            metrics: None,
            admin: None,
        };
        self.run(listeners, shutdown, None)
    }

    /// Serves `listeners` until `shutdown` completes, reloading keys and
    /// certificate whenever `reloads` yields (SIGHUP in production); then
    /// drains both listeners, stops the sweeper and flushes the database.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
        reloads: Option<tokio::sync::mpsc::Receiver<()>>,
    ) -> anyhow::Result<()> {
        let App {
            config,
            service,
            metrics,
            cert,
            basic,
        } = self;
        let Listeners {
            api: listener,
            metrics: metrics_listener,
            admin: admin_listener,
        } = listeners;
        let started = std::time::Instant::now();
        let activity = Arc::new(Activity::default());
        let tls = match &cert {
            Some(cert) => Some(TlsAcceptor::from(
                tls::server_config(Arc::clone(cert)).context("building the TLS configuration")?,
            )),
            None => None,
        };
        let api = Arc::new(StorageApi {
            service: Arc::clone(&service),
            base_path: config.server.base_path.clone(),
            max_body_bytes: config.server.max_body_bytes,
            basic,
            metrics: Arc::clone(&metrics),
        });
        let options = ServerOptions {
            max_connections: config.server.max_connections,
            handshake_timeout: Duration::from_secs(config.server.handshake_timeout_seconds),
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(config.server.idle_timeout_seconds),
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let sweeper = tokio::spawn(sweep(
            Arc::clone(&service),
            Arc::clone(&metrics),
            Arc::clone(&activity),
            Duration::from_secs(config.storage.sweep_interval_seconds),
            stop_rx.clone(),
        ));
        let watchdog = crate::notify::watchdog_interval()
            .map(|every| tokio::spawn(feed_watchdog(Arc::clone(&service), every, stop_rx.clone())));
        let reloader = reloads.map(|rx| {
            tokio::spawn(reload_loop(
                rx,
                config.clone(),
                Arc::clone(&service),
                cert.clone(),
                stop_rx.clone(),
            ))
        });
        let metrics_server = match metrics_listener {
            Some(listener) => {
                let addr = listener
                    .local_addr()
                    .context("reading the metrics listener's address")?;
                // Not "listening on": harnesses take that line for the API's.
                log::info!("metrics at http://{addr}/metrics");
                let endpoint = Arc::new(MetricsEndpoint::new(
                    Arc::clone(&metrics),
                    Arc::clone(&service),
                    config.storage.path.clone(),
                    cert.clone(),
                ));
                let mut stop = stop_rx.clone();
                Some(tokio::spawn(server::run(
                    listener,
                    None,
                    endpoint,
                    options,
                    Arc::new(()),
                    async move {
                        let _ = stop.changed().await;
                    },
                )))
            }
            None => None,
        };
        let admin_server = admin_listener.map(|listener| {
            log::info!("admin socket at {}", listener.path().display());
            let api = Arc::new(AdminApi {
                service: Arc::clone(&service),
                metrics: Arc::clone(&metrics),
                config: config.clone(),
                cert: cert.clone(),
                started,
                activity,
            });
            let mut stop = stop_rx.clone();
            tokio::spawn(server::run(
                listener,
                None,
                api,
                options,
                Arc::new(()),
                async move {
                    let _ = stop.changed().await;
                },
            ))
        });
        let addr = listener
            .local_addr()
            .context("reading the listener's address")?;
        log::info!(
            "listening on {addr} ({}, base path {}, {} store(s))",
            if tls.is_some() {
                "https"
            } else {
                "http, TLS disabled"
            },
            config.server.base_path,
            service.keys().store_count()
        );
        crate::notify::ready();
        let events: Arc<dyn ConnectionEvents> = metrics;
        server::run(listener, tls, api, options, events, shutdown).await;
        crate::notify::stopping();
        let _ = stop_tx.send(true);
        let _ = sweeper.await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        if let Some(admin_server) = admin_server {
            let _ = admin_server.await;
        }
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
        if let Some(watchdog) = watchdog {
            let _ = watchdog.await;
        }
        service
            .store()
            .close()
            .await
            .context("flushing the database on shutdown")?;
        log::info!("database flushed; stopped");
        Ok(())
    }
}

/// The engine `storage.engine` names, opened.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let storage = &config.storage;
    Ok(match storage.engine {
        StorageEngine::Sled => Arc::new(
            SledStore::open(&storage.path, storage.cache_capacity_bytes)
                .with_context(|| format!("opening the database at {}", storage.path.display()))?,
        ),
        StorageEngine::Postgres => {
            let options = postgres_options(config)?;
            Arc::new(
                PostgresStore::open(&options)
                    .await
                    .context("opening the PostgreSQL database (storage.postgres)")?,
            )
        }
    })
}

/// `[storage.postgres]` as the engine takes it.
pub fn postgres_options(config: &Config) -> anyhow::Result<PostgresOptions> {
    let settings = &config.storage.postgres;
    let url = settings
        .url
        .clone()
        .filter(|url| !url.is_empty())
        .context("storage.postgres.url is not set")?;
    Ok(PostgresOptions {
        url,
        password_file: settings.password_file.clone(),
        ca: settings.ca.clone(),
        pool_size: settings.pool_size,
        statement_timeout: Duration::from_secs(settings.statement_timeout_seconds),
    })
}

fn load_basic_credentials(config: &Config) -> anyhow::Result<Option<BasicCredentials>> {
    let (Some(user), Some(file)) = (
        &config.auth.basic_username,
        &config.auth.basic_password_file,
    ) else {
        return Ok(None);
    };
    let password = std::fs::read_to_string(file)
        .with_context(|| format!("reading auth.basic_password_file {}", file.display()))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("auth.basic_password_file {} is empty", file.display());
    }
    Ok(Some(BasicCredentials::new(user, password)))
}

/// Purges expired states every `interval` until told to stop.
async fn sweep(
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticker.tick() => {}
        }
        let result = service.purge_expired().await;
        if let Ok(n) = &result {
            activity.swept(service.now(), *n);
        }
        match result {
            Ok(0) => {}
            Ok(n) => {
                metrics.purged(n);
                log::info!("purged {n} expired state(s)");
            }
            Err(e) => {
                metrics.service_failed(&e);
                log::error!("purging expired states failed: {e}");
            }
        }
    }
}

/// Feeds systemd's watchdog while the database answers. When a storage call
/// is stuck (sled wedged after an I/O error, which only a restart clears)
/// the pings stop and systemd restarts the service: that is how the store
/// recovers by itself. Acknowledged writes are on disk, so nothing is lost.
async fn feed_watchdog(service: Arc<Service>, every: Duration, mut stop: watch::Receiver<bool>) {
    log::info!("systemd watchdog enabled: checking the database every {every:?}");
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let health = service.health().await;
        if Service::is_wedged(&health) {
            log::error!(
                "the database is stuck; no longer feeding the systemd watchdog so that systemd restarts flow-store"
            );
            continue;
        }
        if let Err(e) = &health {
            log::warn!("health check failed (not a reason to restart): {e}");
        }
        crate::notify::watchdog();
    }
}

/// Re-reads keys and certificate on each reload request. A broken file
/// keeps the old ones in service and says why.
async fn reload_loop(
    mut requests: tokio::sync::mpsc::Receiver<()>,
    config: Config,
    service: Arc<Service>,
    cert: Option<Arc<ReloadableCert>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            request = requests.recv() => if request.is_none() { return },
        }
        crate::notify::reloading();
        reload(&config, &service, cert.as_deref());
        crate::notify::ready();
    }
}

fn reload(config: &Config, service: &Service, cert: Option<&ReloadableCert>) {
    // Re-read the file so new [[stores]] tables are picked up too.
    let fresh = match &config.source_path {
        Some(path) => match Config::load(path).and_then(|c| c.validate().map(|_| c)) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload: {e}; keeping the current keys and certificate");
                return;
            }
        },
        None => config.clone(),
    };
    match KeyRing::load(&fresh.stores) {
        Ok(keys) => {
            let count = keys.store_count();
            service.replace_keys(keys);
            log::info!("reload: keys of {count} store(s) loaded");
        }
        Err(e) => log::error!("reload: {e}; keeping the current keys"),
    }
    if let Some(cert) = cert {
        match tls::load_certified_key(&fresh.tls.cert, &fresh.tls.key) {
            Ok(key) => {
                cert.replace(key);
                log::info!(
                    "reload: TLS certificate loaded from {}",
                    fresh.tls.cert.display()
                );
            }
            Err(e) => log::error!("reload: {e}; keeping the current certificate"),
        }
    }
}
