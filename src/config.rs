//! Configuration: the file schema, its layering, and the rules that span keys.
//!
//! Loading happens in three steps, and nothing downstream sees raw input:
//! figment layers the built-in defaults, the TOML file and `FLOW_STORE_*`
//! environment variables ([`Config::load`]); relative paths are resolved
//! against the file's own directory; [`Config::validate`] checks every rule
//! and names the offending key. Components then receive plain structs.
//!
//! Writing goes the other way through one door: [`Config::to_toml`] renders
//! any configuration as a file `load` reads back to the same settings.
//! Dev mode and every test harness build a [`Config`] (usually from
//! [`Config::local`]) and write it with `to_toml`; nobody hand-writes config
//! text but the two shipped files, which a test holds to this schema.
//!
//! This module imports nothing else of the crate: it is the bottom layer
//! that every component's settings come from.
//!
//! Operators migrating from Boomi's Java reference store may keep its
//! `PLATFORM_KEY`/`RECEIVER_KEY` (and `…_<kid>`) variables: each pair
//! becomes one more store with inline keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Where `serve` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flow-store/config.toml";

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "FLOW_STORE_CONFIG";

/// Prefix of environment variables that override file settings.
pub const ENV_PREFIX: &str = "FLOW_STORE_";

/// `storage.cache_capacity_bytes` by default. sled's own default (1 GiB)
/// lets a burst of large states keep hundreds of MiB resident long after
/// the burst.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The whole configuration, as the file spells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener and HTTP settings.
    pub server: ServerSettings,
    /// TLS certificate and key.
    pub tls: TlsSettings,
    /// The database: which engine, and its settings.
    pub storage: StorageSettings,
    /// Request authentication.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// The Prometheus metrics listener.
    pub metrics: MetricsSettings,
    /// The local admin channel and scheduled backups.
    pub admin: AdminSettings,
    /// One entry per store created on the platform.
    pub stores: Vec<StoreEntry>,
    /// The file this configuration was loaded from (reloads re-read it).
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
}

/// `[server]`: where to listen and how much to accept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// `address:port` to bind.
    pub listen: String,
    /// Path prefix of every endpoint.
    pub base_path: String,
    /// Largest request body accepted; larger bodies get 413 before being read whole.
    pub max_body_bytes: u64,
    /// Largest plaintext a `zip: DEF` token may inflate to.
    pub max_inflated_bytes: u64,
    /// Connections served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    pub handshake_timeout_seconds: u64,
    /// Seconds a client has to send a request's headers.
    pub header_read_timeout_seconds: u64,
    /// Seconds a connection may carry no traffic at all before it is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            base_path: "/api/storage/1".into(),
            max_body_bytes: 32 * 1024 * 1024,
            max_inflated_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            handshake_timeout_seconds: 10,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            shutdown_grace_seconds: 30,
        }
    }
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// `false` only behind a TLS-terminating proxy.
    pub enabled: bool,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: "tls/cert.pem".into(),
            key: "tls/key.pem".into(),
        }
    }
}

/// `[storage]`: which engine holds the states, and its housekeeping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// The engine: sled (one node, the default) or PostgreSQL (several).
    pub engine: StorageEngine,
    /// sled directory, created if missing (sled only).
    pub path: PathBuf,
    /// Seconds between sweeps that purge expired states.
    pub sweep_interval_seconds: u64,
    /// Bytes of sled's in-memory page cache (sled only).
    pub cache_capacity_bytes: u64,
    /// `[storage.postgres]`: the database server (PostgreSQL only).
    pub postgres: PostgresSettings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            engine: StorageEngine::Sled,
            path: "data".into(),
            sweep_interval_seconds: 300,
            cache_capacity_bytes: DEFAULT_CACHE_BYTES,
            postgres: PostgresSettings::default(),
        }
    }
}

/// `storage.engine`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    /// The embedded database on local disk: one node.
    Sled,
    /// A PostgreSQL server shared by any number of nodes.
    Postgres,
}

/// `[storage.postgres]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// libpq-style connection URL, without a password; several hosts and
    /// `target_session_attrs=read-write` find the primary after a failover.
    pub url: Option<String>,
    /// File holding the password (secret; trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to;
    /// setting it means TLS with full verification (`sslmode=verify-full`).
    pub ca: Option<PathBuf>,
    /// Connections kept open to the database, at most.
    pub pool_size: usize,
    /// Seconds a statement, a connection attempt or a whole request's
    /// database work may take before the request gets 503.
    pub statement_timeout_seconds: u64,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            ca: None,
            pool_size: 16,
            statement_timeout_seconds: 10,
        }
    }
}

/// `[auth]`: tolerances and optional HTTP Basic credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// How far the platform's clock may run ahead of ours, in seconds.
    pub clock_skew_seconds: u64,
    /// Basic-auth user name the platform must send (with `basic_password_file`).
    pub basic_username: Option<String>,
    /// File holding the Basic-auth password (secret; trailing newline ignored).
    pub basic_password_file: Option<PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            clock_skew_seconds: 30,
            basic_username: None,
            basic_password_file: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// `[metrics]`: where Prometheus scrapes `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// `address:port` of the plain-HTTP metrics listener; `""` turns it off.
    /// It is never the platform-facing listener.
    pub listen: String,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// Where `[admin] socket` is by default (systemd's RuntimeDirectory).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/flow-store/admin.sock";

/// `[admin]`: the operator commands' channel to the running store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Unix socket `status` and `backup` talk to (mode 0660, root and
    /// group flow-store only); `""` turns it off.
    pub socket: PathBuf,
    /// Scheduled backups (`flow-store-backup.timer`) keep this many of the
    /// newest files in `/var/backups/flow-store/` and delete older ones.
    pub backups_kept: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            socket: DEFAULT_ADMIN_SOCKET.into(),
            backups_kept: 7,
        }
    }
}

impl AdminSettings {
    /// The socket, `None` when turned off.
    pub fn socket(&self) -> Option<&Path> {
        (!self.socket.as_os_str().is_empty()).then_some(self.socket.as_path())
    }
}

/// `[[stores]]`: the key pair of one store created on the platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreEntry {
    /// The store's name on the platform, for operators.
    pub name: String,
    /// The platform key (a public JWK is enough).
    pub platform_key: KeySource,
    /// The receiver key (a JWK with its private part).
    pub receiver_key: KeySource,
}

/// Where a JWK comes from. In the file it is always a path.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeySource {
    /// A JWK file.
    File(PathBuf),
    /// A JWK given inline (from the Java reference store's variables).
    #[serde(skip_deserializing)]
    Inline(String),
}

impl std::fmt::Debug for KeySource {
    // Inline keys hold private material: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Inline(_) => f.write_str("an inline key from the environment"),
        }
    }
}

/// A configuration that cannot be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist.
    #[error("configuration file {0} does not exist (pass --config, or create it from config.example.toml in the flow-store documentation)")]
    Missing(PathBuf),
    /// The file or an environment variable could not be parsed.
    #[error("{0}")]
    Parse(String),
    /// A value breaks a rule; the message names the key.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (which must exist), layered over the defaults and under
    /// `FLOW_STORE_*` variables, then resolves relative paths against the
    /// file's directory and appends the Java reference store's key variables.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with an explicit environment, for tests.
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file_exact(path))
            .merge(env_provider(env));
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.resolve_paths(&base);
        config.stores.extend(reference_store_keys(env)?);
        config.source_path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text over the defaults, with no environment and no path
    /// resolution (for `check`, tests and fuzzing).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))
    }

    /// A configuration for one store laid out in a directory the way
    /// `serve --dev` and the test harnesses lay it out, with paths relative
    /// to the config file: `tls/cert.pem` and `tls/key.pem`, the store's
    /// keys in `keys/platform.jwk` and `keys/receiver.jwk`, the database in
    /// `data/`. Everything else has its default.
    pub fn local(listen: &str, store_name: &str) -> Config {
        let mut config = Config::default();
        config.server.listen = listen.to_string();
        // Several such stores run side by side (dev mode next to an
        // installed service, parallel test servers): none claims the fixed
        // metrics port unless asked to.
        config.metrics.listen = String::new();
        // Next to the configuration file, not in /run.
        config.admin.socket = "admin.sock".into();
        config.stores.push(StoreEntry {
            name: store_name.to_string(),
            platform_key: KeySource::File("keys/platform.jwk".into()),
            receiver_key: KeySource::File("keys/receiver.jwk".into()),
        });
        config
    }

    /// The configuration as a TOML file, every key spelled out, that
    /// [`Config::load`] reads back to the same settings (paths stay as they
    /// are: relative ones resolve against the file's directory when loaded).
    /// Keys given inline (from the environment) have no file form and are
    /// refused.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let inline = self.stores.iter().find(|store| {
            [&store.platform_key, &store.receiver_key]
                .iter()
                .any(|source| matches!(source, KeySource::Inline(_)))
        });
        if let Some(store) = inline {
            return Err(ConfigError::Invalid(format!(
                "store {:?} has an inline key, which a configuration file cannot hold; \
                 write the JWK to a file and name the file",
                store.name
            )));
        }
        toml::to_string_pretty(self)
            .map_err(|e| ConfigError::Invalid(format!("cannot be written as TOML: {e}")))
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.storage.path);
        for p in [
            self.storage.postgres.password_file.as_mut(),
            self.storage.postgres.ca.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if self.admin.socket().is_some() {
            fix(&mut self.admin.socket);
        }
        if let Some(p) = self.auth.basic_password_file.as_mut() {
            fix(p);
        }
        for store in &mut self.stores {
            for source in [&mut store.platform_key, &mut store.receiver_key] {
                if let KeySource::File(p) = source {
                    fix(p);
                }
            }
        }
    }

    /// Checks every rule that a type cannot express, and that at least one
    /// store is configured; each message names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_settings()?;
        self.require_stores()
    }

    /// Checks every rule that a type cannot express, stores aside (a shipped
    /// template has none until keys are imported); each message names its key.
    pub fn validate_settings(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen_addr().is_err() {
            return invalid(format!(
                "server.listen = {:?} is not an address:port such as \"0.0.0.0:8443\"",
                self.server.listen
            ));
        }
        let Ok(metrics) = self.metrics_addr() else {
            return invalid(format!(
                "metrics.listen = {:?} is not an address:port such as \"127.0.0.1:9464\", nor \"\" (off)",
                self.metrics.listen
            ));
        };
        // The metrics never share the platform-facing listener.
        let api_port = self.listen_addr().map(|a| a.port()).ok();
        if metrics.is_some_and(|m| m.port() != 0 && Some(m.port()) == api_port) {
            return invalid(format!(
                "metrics.listen = {:?} uses the port of server.listen; the metrics need a port of their own",
                self.metrics.listen
            ));
        }
        let base = &self.server.base_path;
        if !base.starts_with('/') || (base.len() > 1 && base.ends_with('/')) || base.contains('?') {
            return invalid(format!(
                "server.base_path = {base:?} must start with '/' and not end with one, e.g. \"/api/storage/1\""
            ));
        }
        let positive = [
            ("server.max_body_bytes", self.server.max_body_bytes),
            ("server.max_inflated_bytes", self.server.max_inflated_bytes),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.handshake_timeout_seconds",
                self.server.handshake_timeout_seconds,
            ),
            (
                "server.header_read_timeout_seconds",
                self.server.header_read_timeout_seconds,
            ),
            (
                "storage.sweep_interval_seconds",
                self.storage.sweep_interval_seconds,
            ),
            (
                "server.idle_timeout_seconds",
                self.server.idle_timeout_seconds,
            ),
            (
                "storage.cache_capacity_bytes",
                self.storage.cache_capacity_bytes,
            ),
            (
                "storage.postgres.pool_size",
                self.storage.postgres.pool_size as u64,
            ),
            (
                "storage.postgres.statement_timeout_seconds",
                self.storage.postgres.statement_timeout_seconds,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return invalid(format!("{key} must be greater than 0"));
            }
        }
        if self.auth.clock_skew_seconds > 300 {
            return invalid(format!(
                "auth.clock_skew_seconds = {} is more than 300; fix the clocks (NTP) instead",
                self.auth.clock_skew_seconds
            ));
        }
        if self.auth.basic_username.is_some() != self.auth.basic_password_file.is_some() {
            return invalid(
                "auth.basic_username and auth.basic_password_file must be set together".into(),
            );
        }
        if self.storage.engine == StorageEngine::Postgres
            && self
                .storage
                .postgres
                .url
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return invalid(
                "storage.engine = \"postgres\" needs storage.postgres.url, e.g. \
                 \"postgresql://flow_store@db1.example.com:5432/flow\""
                    .into(),
            );
        }
        if self.log_level().is_none() {
            return invalid(format!(
                "log.level = {:?} is not one of error, warn, info, debug, trace",
                self.log.level
            ));
        }
        Ok(())
    }

    /// Fails when no store is configured: the store could serve no one.
    pub fn require_stores(&self) -> Result<(), ConfigError> {
        if self.stores.is_empty() {
            return Err(ConfigError::Invalid(
                "no [[stores]] are configured: import the keys the platform gave you with \
                 `flow-store keys import`, or add a [[stores]] table"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The parsed `server.listen`.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.server.listen.parse()
    }

    /// The parsed `metrics.listen`; `None` when metrics are off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
        match self.metrics.listen.trim() {
            "" => Ok(None),
            addr => addr.parse().map(Some),
        }
    }

    /// The parsed `log.level`.
    pub fn log_level(&self) -> Option<log::LevelFilter> {
        self.log.level.parse().ok()
    }
}

/// The `FLOW_STORE_SECTION__KEY` variables, as a figment provider whose
/// errors say they came from the environment.
struct EnvSettings(figment::value::Dict);

impl figment::Provider for EnvSettings {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("FLOW_STORE_<SECTION>__<KEY> environment variables")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.0.clone()))
    }
}

/// `FLOW_STORE_SECTION__KEY` variables, minus the one naming the file itself.
fn env_provider(env: &[(String, String)]) -> EnvSettings {
    let mut dict = figment::value::Dict::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Only `SECTION__KEY` names are settings; others with our prefix
        // (FLOW_STORE_CONFIG, test switches such as FLOW_STORE_E2E) are not.
        if name == CONFIG_ENV || !rest.contains("__") {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        insert_env_value(&mut dict, &parts, value);
    }
    EnvSettings(dict)
}

fn insert_env_value(dict: &mut figment::value::Dict, parts: &[String], raw: &str) {
    use figment::value::Value;
    match parts {
        [] => {}
        [last] => {
            // Parse like figment's Env does: numbers and booleans become typed.
            let value: Value = raw.parse().unwrap_or_else(|_| Value::from(raw.to_string()));
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(figment::value::Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert_env_value(inner, rest, raw);
            }
        }
    }
}

fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        // Keys live in figment's "default" profile; operators never see it.
        .map(|e| e.to_string().replace("key \"default.", "key \""))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Stores from the Java reference store's variables: `PLATFORM_KEY` +
/// `RECEIVER_KEY`, and `PLATFORM_KEY_<kid>` + `RECEIVER_KEY_<kid>`.
fn reference_store_keys(env: &[(String, String)]) -> Result<Vec<StoreEntry>, ConfigError> {
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut stores = Vec::new();
    let mut suffixes: Vec<String> = env
        .iter()
        .filter_map(|(n, _)| n.strip_prefix("PLATFORM_KEY"))
        .map(str::to_string)
        .filter(|s| s.is_empty() || s.starts_with('_'))
        .collect();
    suffixes.sort();
    for suffix in suffixes {
        let platform = format!("PLATFORM_KEY{suffix}");
        let receiver = format!("RECEIVER_KEY{suffix}");
        let (Some(p), Some(r)) = (lookup(&platform), lookup(&receiver)) else {
            return Err(ConfigError::Invalid(format!(
                "{platform} is set but {receiver} is not; the Java-compatible variables come in pairs"
            )));
        };
        stores.push(StoreEntry {
            name: format!("environment {platform}"),
            platform_key: KeySource::Inline(p),
            receiver_key: KeySource::Inline(r),
        });
    }
    let orphan = env.iter().map(|(n, _)| n).find(|n| {
        n.strip_prefix("RECEIVER_KEY")
            .is_some_and(|s| s.is_empty() || s.starts_with('_'))
            && lookup(&n.replacen("RECEIVER_KEY", "PLATFORM_KEY", 1)).is_none()
    });
    if let Some(name) = orphan {
        return Err(ConfigError::Invalid(format!(
            "{name} is set without its PLATFORM_KEY counterpart"
        )));
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const MINIMAL: &str = r#"
[[stores]]
name = "a"
platform_key = "keys/p.jwk"
receiver_key = "/abs/r.jwk"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), MINIMAL);
        let cfg = Config::load_with_env(&path, &[]).unwrap();
        assert_eq!(cfg.server.listen, "127.0.0.1:8443");
        assert_eq!(cfg.server.base_path, "/api/storage/1");
        assert_eq!(cfg.storage.path, dir.path().join("data"));
        assert_eq!(cfg.tls.cert, dir.path().join("tls/cert.pem"));
        assert_eq!(
            cfg.stores[0].platform_key,
            KeySource::File(dir.path().join("keys/p.jwk"))
        );
        assert_eq!(
            cfg.stores[0].receiver_key,
            KeySource::File("/abs/r.jwk".into())
        );
        cfg.validate().unwrap();
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let mut cfg = Config::load_with_env(&path, &[]).unwrap();
        let mut expected = Config::default();
        expected.resolve_paths(path.parent().unwrap());
        cfg.source_path = None;
        assert_eq!(cfg, expected);
    }

    #[test]
    fn written_configs_read_back_the_same() {
        let mut config = Config::local("127.0.0.1:0", "round trip");
        config.auth.basic_username = Some("flow".into());
        config.auth.basic_password_file = Some("secret.txt".into());
        config.storage.sweep_interval_seconds = 7;
        let text = config.to_toml().unwrap();
        assert_eq!(Config::from_toml_str(&text).unwrap(), config);
        config.validate().unwrap();
        assert_eq!(
            Config::from_toml_str(&Config::default().to_toml().unwrap()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn inline_keys_are_not_written_to_a_file() {
        let mut config = Config::default();
        config.stores.push(StoreEntry {
            name: "from the environment".into(),
            platform_key: KeySource::Inline("{\"kty\":\"EC\"}".into()),
            receiver_key: KeySource::File("r.jwk".into()),
        });
        let err = config.to_toml().unwrap_err().to_string();
        assert!(err.contains("inline key"), "{err}");
        assert!(!err.contains("kty"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n",
        );
        let err = Config::load_with_env(&path, &[]).unwrap_err().to_string();
        assert!(err.contains("lsiten"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), MINIMAL);
        let env = vec![
            (
                "FLOW_STORE_SERVER__LISTEN".to_string(),
                "0.0.0.0:9443".to_string(),
            ),
            (
                "FLOW_STORE_STORAGE__SWEEP_INTERVAL_SECONDS".to_string(),
                "7".to_string(),
            ),
            ("FLOW_STORE_CONFIG".to_string(), "/ignored".to_string()),
            ("FLOW_STORE_E2E".to_string(), "0".to_string()),
        ];
        let cfg = Config::load_with_env(&path, &env).unwrap();
        assert_eq!(cfg.server.listen, "0.0.0.0:9443");
        assert_eq!(cfg.storage.sweep_interval_seconds, 7);
    }

    #[test]
    fn unknown_environment_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), MINIMAL);
        let env = vec![("FLOW_STORE_SERVER__LISTN".to_string(), "x".to_string())];
        let err = Config::load_with_env(&path, &env).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        assert!(err.contains("environment variables"), "{err}");
        assert!(err.contains("key \"server.listn\""), "{err}");
    }

    #[test]
    fn reference_store_variables_become_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "");
        let env = vec![
            ("PLATFORM_KEY".to_string(), "{}".to_string()),
            ("RECEIVER_KEY".to_string(), "{}".to_string()),
            ("PLATFORM_KEY_abc".to_string(), "{}".to_string()),
            ("RECEIVER_KEY_abc".to_string(), "{}".to_string()),
        ];
        let cfg = Config::load_with_env(&path, &env).unwrap();
        assert_eq!(cfg.stores.len(), 2);
        let lonely = vec![("RECEIVER_KEY_x".to_string(), "{}".to_string())];
        assert!(Config::load_with_env(&path, &lonely).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = Config::default();
        cfg.stores.push(StoreEntry {
            name: "a".into(),
            platform_key: KeySource::File("p".into()),
            receiver_key: KeySource::File("r".into()),
        });
        cfg.validate().unwrap();
        cfg.server.base_path = "api/".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.base_path"));
        cfg.server.base_path = "/api".into();
        cfg.auth.basic_username = Some("u".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("basic_password_file"));
        cfg.auth.basic_username = None;
        cfg.metrics.listen = "localhost".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("metrics.listen"));
        cfg.metrics.listen = "0.0.0.0:8443".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("a port of their own"));
        cfg.metrics.listen = String::new();
        cfg.validate().unwrap();
        cfg.stores.clear();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("keys import"));
    }
}
