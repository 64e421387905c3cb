//! The library server in-process: [`Setup`] starts `App` on an ephemeral
//! loopback port on either storage [`Engine`] (a temporary sled directory,
//! or a fresh database of the test PostgreSQL), with the test certificate
//! and a [`ManualClock`], and hands back a [`Server`] whose clients play
//! the platform of each configured store.
//!
//! The contract topics run once per engine (see `tests/tests.rs`); they
//! start servers with [`start_or_skip!`], which ends a PostgreSQL test
//! early, after a loud SKIP line, when PostgreSQL is not installed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use flow_store::app::{App, Listeners};
use flow_store::clock::ManualClock;
use flow_store::config::Config;

use super::client::{Client, Http, Now};
use super::gate;
use super::keys::StoreKeys;
use super::postgres::PgServer;
use super::tls::test_cert;
use super::tokens::{Platform, T0};

/// The default base path of the contract.
pub const BASE: &str = "/api/storage/1";

/// The storage engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Postgres,
}

/// Starts a [`Setup`], or returns from the calling test (which PostgreSQL
/// skips, loudly) when its engine cannot run here.
macro_rules! start_or_skip {
    ($setup:expr) => {
        match $setup.start_or_skip().await {
            Some(server) => server,
            None => return,
        }
    };
}
pub(crate) use start_or_skip;

/// Where a restarted server finds its PostgreSQL database: a file in the
/// test's directory names it.
pub const DATABASE_FILE: &str = "postgres-database";

/// How to start an in-process server.
pub struct Setup {
    pub engine: Engine,
    /// The PostgreSQL cluster (the shared one when `None`).
    pub cluster: Option<Arc<PgServer>>,
    pub now: i64,
    pub stores: Vec<StoreKeys>,
    pub max_body_bytes: Option<u64>,
    pub basic: Option<(String, String)>,
    pub clock_skew_seconds: Option<u64>,
    /// Reuse this directory (restart tests); a fresh one otherwise.
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Serve `/metrics` on a loopback port of its own ([`Server::metrics_addr`]).
    pub metrics: bool,
    /// `storage.sweep_interval_seconds`, when not the default.
    pub sweep_interval_seconds: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            engine: Engine::Sled,
            cluster: None,
            now: T0,
            stores: vec![StoreKeys::generate()],
            max_body_bytes: None,
            basic: None,
            clock_skew_seconds: None,
            dir: None,
            metrics: false,
            sweep_interval_seconds: None,
        }
    }
}

impl Setup {
    /// The defaults, on `engine`.
    pub fn on(engine: Engine) -> Setup {
        Setup {
            engine,
            ..Setup::default()
        }
    }

    /// Starts the server (tests that are not run per engine: sled).
    pub async fn start(self) -> Server {
        self.start_or_skip()
            .await
            .expect("PostgreSQL is not installed: use start_or_skip!")
    }

    /// Starts the server, or `None` when its engine is PostgreSQL and
    /// PostgreSQL is not installed (after a loud SKIP line).
    pub async fn start_or_skip(self) -> Option<Server> {
        let gate = gate::shared();
        let dir = self
            .dir
            .clone()
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
        if self.engine == Engine::Postgres {
            let cluster = match &self.cluster {
                Some(cluster) => cluster.as_ref(),
                None => PgServer::shared()?,
            };
            use_postgres(&mut cfg, cluster, dir.path()).await;
        }
        if let Some(interval) = self.sweep_interval_seconds {
            cfg.storage.sweep_interval_seconds = interval;
        }
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
        let app = App::open(&cfg, Arc::new(clock.clone()))
            .await
            .expect("App::open");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let metrics = if self.metrics {
            let bound = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback for metrics");
            Some(bound)
        } else {
            None
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|l| l.local_addr().expect("metrics local addr"));
        let listeners = Listeners {
            api: listener,
            metrics,
            admin: None,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(app.run(listeners, shutdown, None));
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
        Some(Server {
            clients,
            clock,
            now,
            dir,
            metrics_addr,
            shutdown: Some(tx),
            task: Some(task),
            _gate: gate,
        })
    }
}

/// Points `cfg` at a database of `cluster`: the one named in `dir` (a
/// restart), else a new one, named there for the next start.
pub async fn use_postgres(cfg: &mut Config, cluster: &PgServer, dir: &std::path::Path) {
    let named = dir.join(DATABASE_FILE);
    let database = match std::fs::read_to_string(&named) {
        Ok(name) => name,
        Err(_) => {
            let name = cluster.create_database().await;
            std::fs::write(&named, &name).expect("database name file");
            name
        }
    };
    cluster.configure(cfg, &database, dir);
}

/// A running in-process server. Derefs to the [`Client`] of its first store.
pub struct Server {
    /// One client per configured store, in [`Setup::stores`] order.
    pub clients: Vec<Client>,
    pub clock: ManualClock,
    now: Arc<AtomicI64>,
    pub dir: Arc<tempfile::TempDir>,
    /// Where `/metrics` is served, when [`Setup::metrics`] asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _gate: gate::Shared,
}

impl std::ops::Deref for Server {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.clients[0]
    }
}

impl Server {
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
